// End-to-end test of the operator board and the unit terminal in headless
// Chromium (playwright-core driving Debian's /usr/bin/chromium).
//
// Real mode (the "done when"): QZX_BIN=path/to/qzx with
// TEST_KAFKA_BROKERS and TEST_REDIS_URL set. Starts `qzx all` on a free port
// with a random topic prefix, Redis key prefix and JWT secret, mints tokens
// with `qzx token`, and drives both pages through:
//   1. a unit comes on duty from the terminal page;
//   2. an event posted to ingest appears on the board with its clocks within 2 s;
//   3. acknowledging on the terminal changes the board;
//   4. an operator's close on the board reaches the terminal (and an api error
//      is shown to the operator, not swallowed);
//   5. the board recovers after the api is killed and restarted on the same port.
// Screenshots of both pages at 1440x900 and 390x844 go to ./screenshots/.
//
// A second scenario (issue #21, operators steer incidents and units are
// kept informed), on a qzx of its own: a unit refuses and another gets the
// task; the incident is held and a repeat call raises it to P1, which
// reaches that unit's terminal as a change banner (and a beep), as does the
// operator's correction of the text; the reinforcement
// the held P1 needs is picked from the router's ranking; a unit's note
// reaches the board's timeline; a walk-in report is created, closed and
// reopened, merged in, and split off again.
//
// Mock mode (QZX_MOCK=1, or QZX_BIN unset): the same steps against
// mock-server.mjs, for developing the pages without the Rust services; its
// screenshots are named mock-*.png.
//
// QZX_SERVE_PAGES=1 puts a front before qzx that serves the pages from
// dispatch-ui-api/web/ on disk (for a binary that does not serve them yet,
// or to try page changes without rebuilding); everything else goes to qzx.
//
//   cd tests/browser && npm ci
//   QZX_BIN=../../target/debug/qzx TEST_KAFKA_BROKERS=127.0.0.1:19092 \
//     TEST_REDIS_URL=redis://127.0.0.1:6390/0 npm run test:e2e

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch, DESKTOP, PHONE } from './chromium.mjs';
import { startMock } from './mock-server.mjs';
import { pagesFront } from './pages-front.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SHOTS = path.join(HERE, 'screenshots');
const MOCK = process.env.QZX_MOCK === '1' || !process.env.QZX_BIN;
const PREFIX = MOCK ? 'mock-' : '';
const UNIT = 'quancheng-01';
const rand = crypto.randomBytes(4).toString('hex');


// ---- the system under test ------------------------------------------------------

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let starts = 0;

/** `qzx all` as a child process that can be killed and started again on the same port. */
async function startQzx() {
  const bin = path.resolve(process.env.QZX_BIN);
  const brokers = process.env.TEST_KAFKA_BROKERS;
  const redis = process.env.TEST_REDIS_URL;
  if (!brokers || !redis) {
    throw new Error('set TEST_KAFKA_BROKERS and TEST_REDIS_URL: step 5 restarts qzx, which needs state outside the process');
  }
  const port = await freePort();
  // Each start its own topics, keys and groups: the tests do not share state.
  const run = 'e2e' + rand + (++starts);
  // qzx reads every QZX_* variable as configuration and refuses unknown
  // ones, so the test's own (QZX_BIN, QZX_MOCK, QZX_SERVE_PAGES) and any
  // left in the shell must not reach it.
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('QZX_')));
  const env = Object.assign(inherited, {
    QZX_LISTEN: '127.0.0.1:' + port,
    QZX_KAFKA_BROKERS: brokers,
    QZX_REDIS_URL: redis,
    QZX_TOPIC_PREFIX: run + '.',
    QZX_JWT_SECRET: crypto.randomBytes(24).toString('hex'),
    // Redis is shared with other runs: keep this run's keys apart.
    QZX_REDIS__KEY_PREFIX: run + ':',
    QZX_KAFKA__GROUP_PREFIX: run,
    RUST_LOG: process.env.RUST_LOG || 'info',
  });
  const token = (...args) => execFileSync(bin, ['token', ...args], { env, encoding: 'utf8' }).trim();
  const tokens = {
    operator: token('--role', 'operator', '--jurisdiction', '*', '--sub', 'e2e-operator'),
    source: token('--role', 'source', '--jurisdiction', '*', '--sub', 'e2e-source'),
    unit: (id) => token('--role', 'unit', '--jurisdiction', '*', '--unit', id),
  };
  const logs = [];
  let child = null;
  let exited = null;
  const url = 'http://127.0.0.1:' + port;

  async function up() {
    child = spawn(bin, ['all'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    exited = new Promise((r) => child.once('exit', (code, sig) => r({ code, sig })));
    const keep = (d) => { logs.push(d.toString()); if (logs.length > 4000) logs.shift(); };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const deadline = Date.now() + 90000;
    for (;;) {
      const done = await Promise.race([exited, sleep(0).then(() => null)]);
      if (done) throw new Error('qzx exited (' + JSON.stringify(done) + ') before ready:\n' + tail(logs));
      try {
        const r = await fetch(url + '/readyz');
        if (r.status === 200) return;
      } catch { /* not listening yet */ }
      if (Date.now() > deadline) throw new Error('qzx not ready after 90 s:\n' + tail(logs));
      await sleep(250);
    }
  }

  async function down() {
    if (!child) return;
    child.kill('SIGTERM');
    const r = await Promise.race([exited, sleep(20000).then(() => null)]);
    if (!r) {
      child.kill('SIGKILL');
      await exited;
    }
    child = null;
  }

  await up();
  let front = null;
  if (process.env.QZX_SERVE_PAGES === '1') {
    front = await pagesFront(port);
  } else {
    for (const page of ['/', '/terminal', '/web/common.js']) {
      const r = await fetch(url + page);
      if (r.status !== 200) {
        await down();
        throw new Error(`qzx answers GET ${page} with ${r.status}: it does not serve dispatch-ui-api/web/ (yet); ` +
          'set QZX_SERVE_PAGES=1 to serve them from disk in front of it');
      }
    }
  }
  return {
    url: front ? 'http://127.0.0.1:' + front.address().port : url,
    tokens,
    logs,
    async restart(downMs) { await down(); await sleep(downMs); await up(); },
    async close() {
      await down();
      if (front) { front.closeAllConnections(); front.close(); }
    },
  };
}

function tail(logs) {
  return logs.join('').split('\n').slice(-60).join('\n');
}

async function startTarget(mockOpts) {
  if (MOCK) {
    const m = await startMock(mockOpts || { seed: true });
    return {
      url: m.url,
      tokens: m.tokens,
      logs: [],
      restart: (downMs) => m.restart(downMs),
      close: () => m.close(),
    };
  }
  return startQzx();
}

async function postEvent(target, ev) {
  const r = await fetch(target.url + '/v1/events', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer ' + target.tokens.source },
    body: JSON.stringify(ev),
  });
  const body = await r.json().catch(() => null);
  assert.equal(r.status, 202, 'ingest answered ' + r.status + ' ' + JSON.stringify(body));
  assert.equal(body.accepted.length, 1, JSON.stringify(body));
  return body.accepted[0].id;
}

function event(kind, lat, lon, address, text) {
  return {
    source: 'call110',
    source_id: 'e2e-' + rand + '-' + crypto.randomBytes(3).toString('hex'),
    kind,
    location: { lat, lon, address },
    text,
    // A caller of their own: the router links a caller's calls by phone.
    caller: { phone: '138' + String(crypto.randomInt(10000000, 99999999)) },
  };
}

// ---- the test ---------------------------------------------------------------------------

test('operator board and unit terminal, end to end in headless Chromium', { timeout: 240000 }, async (t) => {
  fs.mkdirSync(SHOTS, { recursive: true });
  const browser = await launch();
  const target = await startTarget().catch(async (e) => { await browser.close(); throw e; });
  const pageErrors = browser.pageErrors;
  t.after(async () => {
    await browser.close();
    await target.close().catch(() => {});
  });
  const board = await browser.page('board', DESKTOP);
  const terminal = await browser.page('terminal', PHONE);

  const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, PREFIX + name + '.png') });
  const row = (address) => board.locator('[data-testid=incident]', { has: board.locator('[data-testid=address]', { hasText: address }) });

  await t.test('pages load, keep the token out of the address bar, and connect', async () => {
    await board.goto(target.url + '/?lang=zh&token=' + encodeURIComponent(target.tokens.operator));
    await board.locator('[data-testid=conn][data-state=connected]').waitFor({ timeout: 15000 });
    assert.ok(!board.url().includes('token='), 'the token stays in the address bar: ' + board.url().replace(/token=[^&]+/, 'token=…'));
    await terminal.goto(target.url + '/terminal?token=' + encodeURIComponent(target.tokens.unit(UNIT)));
    await terminal.locator('[data-testid=conn][data-state=connected]').waitFor({ timeout: 15000 });
    assert.ok(!terminal.url().includes('token='));
    assert.equal((await terminal.locator('[data-testid=unit-name]').textContent()).length > 0, true);
  });

  await t.test('1. the unit comes on duty from the terminal', async () => {
    await terminal.fill('[data-testid=lat]', '36.6640');
    await terminal.fill('[data-testid=lon]', '117.0220');
    await terminal.click('[data-testid=on-duty]');
    await terminal.locator('[data-testid=toast-ok]').first().waitFor({ timeout: 10000 });
    assert.equal(await terminal.locator('[data-testid=toast-error]').count(), 0, await errorsOf(terminal));
    await terminal.locator('[data-testid=unit-status][data-status=available]').waitFor({ timeout: 10000 });
    // The router applied it: the unit shows on the board's map, available.
    await board.locator(`[data-testid=map-unit][data-unit="${UNIT}"][data-status=available]`).waitFor({ timeout: 35000 });
  });

  const address = '历下区泉城路' + rand + '号';
  let taskId = null;

  await t.test('2. an event posted to ingest appears on the board with its clocks within 2 s', async () => {
    await postEvent(target, event('robbery', 36.665, 117.023, address, '两名男子持刀抢劫路人'));
    const r = row(address);
    await r.waitFor({ timeout: 2000 });
    await r.locator('[data-testid=clock-respond][data-state=pending], [data-testid=clock-respond][data-state=warn]').waitFor({ timeout: 2000 });
    assert.equal(await r.getAttribute('data-kind'), 'robbery');
    assert.match(await r.textContent(), /抢劫 Robbery/);
    assert.equal(await r.locator('.clk').count(), 3);
    // The clock counts down: the text changes within two seconds.
    const before = await r.locator('[data-testid=clock-respond] .c').textContent();
    await board.waitForFunction(([sel, text]) => {
      const el = document.querySelector(sel);
      return el && el.textContent !== text;
    }, [`[data-id="${await r.getAttribute('data-id')}"] [data-testid=clock-respond] .c`, before], { timeout: 2500 });
    // The task reaches the terminal.
    const card = terminal.locator('[data-testid=task-card]');
    await card.waitFor({ timeout: 10000 });
    assert.equal(await terminal.locator('[data-testid=task-address]').textContent(), address);
    assert.equal(await card.getAttribute('data-status'), 'issued');
    taskId = await card.getAttribute('data-task');
    await r.locator(`[data-testid=inc-unit][data-unit="${UNIT}"]`).waitFor({ timeout: 10000 });
    await shot(board, 'board-desktop');
    await shot(terminal, 'terminal-phone-task');
  });

  await t.test('3. acknowledging on the terminal changes the board', async () => {
    await terminal.click('[data-testid=btn-ack]');
    await terminal.locator('[data-testid=task-card][data-status=acknowledged]').waitFor({ timeout: 10000 });
    const r = row(address);
    await r.locator(`[data-testid=inc-unit][data-unit="${UNIT}"][data-status=acknowledged]`).waitFor({ timeout: 10000 });
    await r.locator('[data-testid=clock-respond][data-state=met]').waitFor({ timeout: 10000 });
    await terminal.click('[data-testid=btn-enroute]');
    await terminal.locator('[data-testid=task-card][data-status=en_route]').waitFor({ timeout: 10000 });
    await r.locator(`[data-testid=inc-unit][data-unit="${UNIT}"][data-status=en_route]`).waitFor({ timeout: 10000 });
    await shot(terminal, 'terminal-phone');
  });

  await t.test('4. an operator action from the board reaches the terminal; api errors are shown', async () => {
    const r = row(address);
    await r.click();
    await board.locator('[data-testid=close]').waitFor();
    // An error from the api is shown, not swallowed: assign a unit that does not exist.
    await board.locator('[data-testid=assign-source][data-source]').waitFor();
    // Inserted and clicked at once: a push may redraw the list.
    await board.evaluate(() => {
      document.querySelector('[data-testid=assign-list]').insertAdjacentHTML('afterbegin',
        '<label data-testid="candidate"><input type="radio" name="a-unit" value="no-such-unit-e2e" checked></label>');
      document.querySelector('[data-testid=assign]').click();
    });
    // (Other error toasts may be up: the router's "no unit available" for a
    // P1 that needs two units. Find the one about this command.)
    const err = board.locator('[data-testid=toast-error]', { hasText: /\[(not_found|bad_request|conflict|forbidden)\]/ });
    await err.first().waitFor({ timeout: 10000 });
    await shot(board, 'board-desktop-error');
    await err.first().locator('button').click();

    await board.fill('[data-testid=disposition]', 'e2e：嫌疑人已控制，现场处置完毕');
    await board.selectOption('[data-testid=feedback]', 'satisfied');
    await board.click('[data-testid=close]');
    await board.locator('[data-testid=toast-ok]').first().waitFor({ timeout: 10000 });
    await r.waitFor({ state: 'detached', timeout: 10000 });
    const notice = terminal.locator(`[data-testid=task-notice][data-task="${taskId}"]`);
    await notice.waitFor({ timeout: 10000 });
    assert.match(await notice.getAttribute('data-status'), /^(cancelled|cleared)$/);
    assert.equal(await terminal.locator(`[data-testid=task-card][data-task="${taskId}"]`).count(), 0);
    await shot(terminal, 'terminal-phone-closed');
  });

  await t.test('5. the board recovers after the api restarts', async () => {
    const second = '历下区泉城路' + rand + '号附近商场';
    await postEvent(target, event('assault', 36.6622, 117.0188, second, '有人在商场门口殴打他人'));
    await row(second).waitFor({ timeout: 5000 });
    const restarting = target.restart(1500);
    const banner = board.locator('[data-testid=banner]');
    await banner.waitFor({ state: 'visible', timeout: 15000 });
    assert.match(await banner.textContent(), /\d\d:\d\d:\d\d/);
    await board.locator('[data-testid=conn][data-state=down]').waitFor();
    await shot(board, 'board-desktop-disconnected');
    await restarting;
    await board.locator('[data-testid=conn][data-state=connected]').waitFor({ timeout: 30000 });
    await banner.waitFor({ state: 'hidden', timeout: 5000 });
    await row(second).waitFor({ timeout: 10000 });
    // Live again: a new event arrives over the new connection.
    const third = '历下区泉城路' + rand + '号北门';
    await postEvent(target, event('theft', 36.6668, 117.0205, third, '手机被偷'));
    await row(third).waitFor({ timeout: 5000 });
    await terminal.locator('[data-testid=conn][data-state=connected]').waitFor({ timeout: 30000 });
  });

  await t.test('screenshots at desktop and phone sizes; English labels', async () => {
    await board.click('[data-testid=lang]');
    await board.locator('[data-testid=kpi-open]', { hasText: 'Open incidents' }).waitFor();
    await shot(board, 'board-desktop-en');
    await board.click('[data-testid=lang]');
    await board.setViewportSize(PHONE);
    await sleep(300);
    await shot(board, 'board-phone');
    await board.screenshot({ path: path.join(SHOTS, PREFIX + 'board-phone-full.png'), fullPage: true });
    await terminal.setViewportSize(DESKTOP);
    await sleep(300);
    await shot(terminal, 'terminal-desktop');
    await terminal.setViewportSize(PHONE);
    await shot(terminal, 'terminal-phone-end');
  });

  await t.test('no uncaught page errors, no token in the service logs', () => {
    assert.deepEqual(pageErrors, []);
    const logs = target.logs.join('');
    for (const [name, tok] of [['operator', target.tokens.operator], ['source', target.tokens.source]]) {
      assert.ok(!logs.includes(tok), name + ' token written to the qzx logs');
    }
  });
});

async function errorsOf(page) {
  return (await page.locator('[data-testid=toast-error]').allTextContents()).join(' | ');
}

// ---- issue #21: operators steer incidents, units are kept informed -----------------

/** A terminal page whose beeps (WebAudio oscillators) are counted. */
async function countingTerminal(browser) {
  const page = await browser.page('terminal', PHONE);
  await page.addInitScript(() => {
    window.__beeps = 0;
    window.AudioContext = class {
      constructor() { this.state = 'running'; this.currentTime = 0; this.destination = {}; }
      resume() { return Promise.resolve(); }
      createOscillator() { window.__beeps += 1; return { frequency: {}, connect: (g) => g, start() {}, stop() {} }; }
      createGain() { return { gain: { setValueAtTime() {}, exponentialRampToValueAtTime() {} }, connect: (d) => d }; }
    };
  });
  return page;
}

test('operators steer incidents, units are kept informed (issue #21), end to end', { timeout: 300000 }, async (t) => {
  const browser = await launch();
  const target = await startTarget({ seed: false }).catch(async (e) => { await browser.close(); throw e; });
  t.after(async () => {
    await browser.close();
    await target.close().catch(() => {});
  });
  const board = await browser.page('board', DESKTOP);
  const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, PREFIX + name + '.png') });
  const row = (address) => board.locator('[data-testid=incident]', { has: board.locator('[data-testid=address]', { hasText: address }) });
  // A dialog closes only once the server said ok (it stays open on an error).
  const submit = async () => {
    await board.click('[data-testid=dlg-submit]');
    await board.locator('[data-testid=dialog]').waitFor({ state: 'hidden', timeout: 10000 });
  };
  // Units that are not in the roster: they register by coming on duty.
  const ids = { a: 's21a-' + rand, b: 's21b-' + rand, c: 's21c-' + rand };
  const term = {};
  const address = '历下区泉城路' + rand + '号商场';
  let incId = null;

  await t.test('three units come on duty near the scene, at three distances', async () => {
    await board.goto(target.url + '/?lang=en&token=' + encodeURIComponent(target.tokens.operator));
    await board.locator('[data-testid=conn][data-state=connected]').waitFor({ timeout: 15000 });
    const at = { a: [36.6652, 117.0232], b: [36.6662, 117.0247], c: [36.6685, 117.0275] };
    for (const k of ['a', 'b', 'c']) {
      const p = await countingTerminal(browser);
      await p.goto(target.url + '/terminal?lang=en&token=' + encodeURIComponent(target.tokens.unit(ids[k])));
      await p.locator('[data-testid=conn][data-state=connected]').waitFor({ timeout: 15000 });
      await p.fill('[data-testid=lat]', String(at[k][0]));
      await p.fill('[data-testid=lon]', String(at[k][1]));
      await p.click('[data-testid=on-duty]'); // also the tap that allows sound
      await p.locator('[data-testid=unit-status][data-status=available]').waitFor({ timeout: 10000 });
      await board.locator(`[data-testid=map-unit][data-unit="${ids[k]}"][data-status=available]`).waitFor({ timeout: 35000 });
      term[k] = p;
    }
  });

  await t.test('a unit refuses its task with a reason; another unit gets it at once', async () => {
    await postEvent(target, event('theft', 36.665, 117.023, address, '商场内手机被盗，嫌疑人未走远'));
    await row(address).waitFor({ timeout: 5000 });
    incId = await row(address).getAttribute('data-id');
    const card = term.a.locator('[data-testid=task-card]');
    await card.waitFor({ timeout: 10000 });
    assert.equal(await term.a.locator('[data-testid=task-address]').textContent(), address);
    assert.match(await term.a.locator('[data-testid=task-kind]').textContent(), /Theft/);
    const taskA = await card.getAttribute('data-task');
    await term.a.fill('[data-testid=refuse-reason]', 'e2e: flat tyre');
    await term.a.click('[data-testid=btn-refuse]');
    const notice = term.a.locator(`[data-testid=task-notice][data-task="${taskA}"][data-status=cancelled]`);
    await notice.waitFor({ timeout: 10000 });
    assert.notEqual(await notice.getAttribute('data-reason'), '', 'the cancelled task does not say why');
    await term.b.locator('[data-testid=task-address]', { hasText: address }).waitFor({ timeout: 10000 });
    await row(address).locator(`[data-testid=inc-unit][data-unit="${ids.b}"]`).waitFor({ timeout: 10000 });
    await shot(term.a, 'issue21-terminal-refused');
  });

  await t.test('held, a repeat call turns the theft into a P1: the terminal of the unit on it shows the change and beeps; the operator\'s correction reaches it too', async () => {
    await row(address).click();
    // Held first: the reinforcement a P1 needs is then the operator's pick.
    await board.fill('[data-testid=hold-reason]', 'e2e: detectives decide');
    await board.click('[data-testid=hold][data-hold="0"]');
    await row(address).locator('[data-testid=badge-held]').waitFor({ timeout: 10000 });
    await board.locator('[data-testid=held-note]').waitFor();
    const beeps = await term.b.evaluate(() => window.__beeps);
    // The repeat call: the same place, a knife and a gun now.
    await postEvent(target, event('theft', 36.665, 117.023, address, '嫌疑人持刀，腰间有枪'));
    await row(address).locator('.prio.p1').waitFor({ timeout: 10000 });
    const banner = term.b.locator('[data-testid=task-changes]');
    await banner.waitFor({ timeout: 10000 });
    assert.match(await banner.getAttribute('data-changes'), /(^|,)priority(,|$)/);
    assert.equal(await term.b.locator('[data-testid=task-card]').getAttribute('data-priority'), '1');
    await term.b.locator('[data-part=priority][data-changed="1"]').waitFor();
    await term.b.waitForFunction((n) => window.__beeps > n, beeps, { timeout: 3000 });
    await shot(term.b, 'issue21-terminal-changed');
    await term.b.click('[data-testid=changes-ok]');
    await banner.waitFor({ state: 'detached', timeout: 3000 });
    // The operator corrects the text (update): the unit is told that too.
    await board.click('[data-testid=open-update]');
    await board.fill('[data-testid=upd-text]', 'e2e: two suspects, one with a knife, one with a gun');
    await submit();
    await banner.waitFor({ timeout: 10000 });
    assert.match(await banner.getAttribute('data-changes'), /(^|,)text(,|$)/);
    await term.b.click('[data-testid=changes-ok]');
    await banner.waitFor({ state: 'detached', timeout: 3000 });
  });

  await t.test('the held P1\'s assign list is the router\'s ranking; an operator adds a unit from it', async () => {
    await board.locator('[data-testid=assign-source][data-source=router]').waitFor({ timeout: 15000 });
    const c = board.locator(`[data-testid=candidate][data-unit="${ids.c}"]`);
    await c.waitFor({ timeout: 10000 });
    assert.match(await c.textContent(), /ETA \d+:\d\d/);
    assert.ok(['0', '1'].includes(await c.getAttribute('data-in-time')));
    await shot(board, 'issue21-board-held-ranking');
    await c.locator('input').check();
    await board.selectOption('[data-testid=assign-mode]', 'add');
    await board.click('[data-testid=assign]');
    await term.c.locator('[data-testid=task-address]', { hasText: address }).waitFor({ timeout: 10000 });
    await row(address).locator(`[data-testid=inc-unit][data-unit="${ids.c}"]`).waitFor({ timeout: 10000 });
    // The unit already on it learns who joined.
    await term.b.locator('[data-testid=task-other-units]', { hasText: ids.c }).waitFor({ timeout: 10000 });
  });

  await t.test('a unit\'s note reaches the board\'s timeline', async () => {
    await term.b.fill('[data-testid=note-text]', 'e2e: shop owner has CCTV');
    await term.b.click('[data-testid=btn-note]');
    await board.locator('[data-testid=timeline]', { hasText: 'shop owner has CCTV' }).waitFor({ timeout: 10000 });
  });

  const walkIn = '历下区泉城路' + rand + '号来人报警';
  await t.test('a walk-in report becomes an incident; closed, it is reopened from the recently closed', async () => {
    await board.click('[data-testid=new-incident]');
    await board.selectOption('[data-testid=new-kind]', 'dispute');
    await board.fill('[data-testid=new-text]', 'e2e: 来人报警，两人在店门口争吵');
    await board.fill('[data-testid=f-address]', walkIn);
    await board.fill('[data-testid=f-lat]', '36.6601');
    await board.fill('[data-testid=f-lon]', '117.0152');
    await board.fill('[data-testid=new-phone]', '13700000021');
    await submit();
    await row(walkIn).waitFor({ timeout: 10000 });
    await row(walkIn).click();
    await board.locator('[data-testid=caller][href="tel:13700000021"]').waitFor({ timeout: 10000 });
    await board.fill('[data-testid=disposition]', 'e2e: 已调解');
    await board.click('[data-testid=close]');
    await row(walkIn).waitFor({ state: 'detached', timeout: 10000 });
    await board.click('[data-testid=closed-incidents]');
    const closed = board.locator('[data-testid=closed-incident]', { hasText: walkIn });
    await closed.waitFor({ timeout: 10000 });
    await closed.locator('input').check();
    await board.fill('[data-testid=reopen-reason-dlg]', 'e2e: they are at it again');
    await submit();
    await row(walkIn).waitFor({ timeout: 10000 });
  });

  await t.test('merged into the first incident, then split off again', async () => {
    await row(address).click();
    const from = await row(walkIn).getAttribute('data-id');
    await board.click('[data-testid=open-merge]');
    await board.locator(`[data-testid=merge-candidate][data-id="${from}"] input`).check();
    await submit();
    await row(walkIn).waitFor({ state: 'detached', timeout: 10000 });
    await row(address).locator('[data-testid=badge-merged]').waitFor({ timeout: 10000 });
    await board.locator('[data-testid=caller][href="tel:13700000021"]').waitFor({ timeout: 10000 });
    await board.locator('[data-testid=open-split]:not([disabled])').waitFor({ timeout: 10000 });
    await board.click('[data-testid=open-split]');
    await board.locator('[data-testid=split-event] input').last().check();
    await board.fill('[data-testid=split-reason]', 'e2e: a separate matter');
    await submit();
    await board.locator('[data-testid=incident] [data-testid=badge-split]').waitFor({ timeout: 10000 });
    await shot(board, 'issue21-board-split');
    // The first incident stays, with the theft's event.
    await board.locator(`[data-testid=incident][data-id="${incId}"]`).waitFor({ timeout: 2000 });
  });

  await t.test('no uncaught page errors', () => {
    assert.deepEqual(browser.pageErrors, []);
  });
});
