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

/** `qzx all` as a child process that can be killed and started again on the same port. */
async function startQzx() {
  const bin = path.resolve(process.env.QZX_BIN);
  const brokers = process.env.TEST_KAFKA_BROKERS;
  const redis = process.env.TEST_REDIS_URL;
  if (!brokers || !redis) {
    throw new Error('set TEST_KAFKA_BROKERS and TEST_REDIS_URL: step 5 restarts qzx, which needs state outside the process');
  }
  const port = await freePort();
  // qzx reads every QZX_* variable as configuration and refuses unknown
  // ones, so the test's own (QZX_BIN, QZX_MOCK, QZX_SERVE_PAGES) and any
  // left in the shell must not reach it.
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('QZX_')));
  const env = Object.assign(inherited, {
    QZX_LISTEN: '127.0.0.1:' + port,
    QZX_KAFKA_BROKERS: brokers,
    QZX_REDIS_URL: redis,
    QZX_TOPIC_PREFIX: 'e2e' + rand + '.',
    QZX_JWT_SECRET: crypto.randomBytes(24).toString('hex'),
    // Redis is shared with other runs: keep this run's keys apart.
    QZX_REDIS__KEY_PREFIX: 'e2e' + rand + ':',
    QZX_KAFKA__GROUP_PREFIX: 'e2e' + rand,
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

async function startTarget() {
  if (MOCK) {
    const m = await startMock({ seed: true });
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
    caller: { phone: '13800000000' },
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
