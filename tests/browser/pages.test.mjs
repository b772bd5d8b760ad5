// Page behaviour that is hard to arrange against the real services, checked
// in headless Chromium against mock-server.mjs: login and a refused token,
// the colours of the 1-3-5 clocks, a terminal that gets the task issued
// while it was offline (resume with its cursor), a terminal whose cursor
// fell out of history (gap: snapshot, stale task dropped), and errors shown
// on the terminal.
//
//   cd tests/browser && node --test pages.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, DESKTOP, PHONE } from './chromium.mjs';
import { startMock, mint } from './mock-server.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function setup(t, opts) {
  const m = await startMock(opts || { seed: true });
  const b = await launch();
  t.after(async () => {
    await b.close();
    await m.close();
  });
  return { m, b };
}

test('board: login by pasting a token; a token the server refuses returns to the login', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t);
  const page = await b.page('board', DESKTOP);
  await page.goto(m.url + '/?lang=en');
  await page.locator('[data-testid=login]').waitFor();
  assert.match(await page.locator('#login-btn').textContent(), /Log in/);

  // Signed with another secret: the WebSocket upgrade is refused with 401.
  await page.fill('#token-input', mint('not-the-secret', { sub: 'x', role: 'operator', jurisdictions: ['*'] }));
  await page.click('#login-btn');
  await page.locator('[data-testid=login-msg]', { hasText: 'Token invalid or expired' }).waitFor({ timeout: 15000 });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('qzx.token.board')), null, 'a refused token stays stored');

  await page.fill('#token-input', m.tokens.operator);
  await page.click('#login-btn');
  await page.locator('[data-testid=conn][data-state=connected]').waitFor({ timeout: 10000 });
  await page.locator('[data-testid=incident]').first().waitFor();
  // Kept for this tab: a reload logs in again without the token in the URL.
  await page.reload();
  await page.locator('[data-testid=conn][data-state=connected]').waitFor({ timeout: 10000 });
  assert.equal(await page.locator('[data-testid=login]').isVisible(), false);
  assert.deepEqual(b.pageErrors, []);
});

test('board: the 1-3-5 clocks are amber near the deadline, red on breach, green when met; rows sorted', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t, { seed: false });
  // quancheng-02 on duty so the incidents get a unit.
  m.state.units.get('quancheng-02').status = 'available';
  m.state.units.get('quancheng-p1').status = 'available';
  // P1 urban: respond 60 s. 50 s old: 10 s left, under 20 % of 60 s.
  const near = m.inject({ kind: 'robbery', location: { lat: 36.6651, lon: 117.0231, address: '近截止' }, text: '抢劫' }, 50);
  // 75 s old: respond breached (the mock's clock marks it within a second).
  m.inject({ kind: 'assault', location: { lat: 36.6601, lon: 117.0151, address: '已超时' }, text: '打人' }, 75);
  // P3 theft, fresh: everything pending; sorted after the P1 and P2.
  m.inject({ kind: 'theft', location: { lat: 36.6621, lon: 117.0181, address: '新警情' }, text: '被盗' }, 0);
  const page = await b.page('board', DESKTOP);
  await page.goto(m.url + '/?token=' + m.tokens.operator);
  const row = (a) => page.locator('[data-testid=incident]', { has: page.locator('[data-testid=address]', { hasText: a }) });
  await row('近截止').locator('[data-testid=clock-respond][data-state=warn]').waitFor({ timeout: 3000 });
  await row('已超时').locator('[data-testid=clock-respond][data-state=breached]').waitFor({ timeout: 3000 });
  assert.match(await row('已超时').locator('[data-testid=clock-respond]').textContent(), /\+\d+:\d\d/);
  await row('新警情').locator('[data-testid=clock-respond][data-state=pending]').waitFor({ timeout: 3000 });
  const order = await page.locator('[data-testid=incident] [data-testid=address]').allTextContents();
  assert.deepEqual(order, ['近截止', '已超时', '新警情']);

  // A desk seat filters the list to its desk.
  await page.selectOption('[data-testid=desk-filter]', 'traffic');
  await page.locator('[data-testid=all-clear]').waitFor({ timeout: 2000 });
  await page.selectOption('[data-testid=desk-filter]', 'criminal');
  await page.locator('[data-testid=incident]').nth(2).waitFor({ timeout: 2000 });
  await page.selectOption('[data-testid=desk-filter]', '');

  // The unit signs for it: respond met, green.
  const task = [...m.state.tasks.values()].find((x) => x.incident === near.id);
  assert.equal(m.command({ op: 'ack', task: task.id }, { sub: task.unit, role: 'unit', unit: task.unit }), null);
  await row('近截止').locator('[data-testid=clock-respond][data-state=met]').waitFor({ timeout: 3000 });
  // Waiting past the deadline does not turn a met stage red.
  await sleep(1500);
  assert.equal(await row('近截止').locator('[data-testid=clock-respond]').getAttribute('data-state'), 'met');
  assert.deepEqual(b.pageErrors, []);
});

test('terminal: a task issued while the terminal was offline arrives when it reconnects', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t, { seed: false });
  const unit = 'quancheng-02';
  m.state.units.get(unit).status = 'available';
  const page = await b.page('terminal', PHONE);
  await page.goto(m.url + '/terminal?token=' + m.tokens.unit(unit));
  await page.locator('[data-testid=conn][data-state=connected]').waitFor({ timeout: 10000 });
  await page.locator('[data-testid=no-task]').waitFor();

  await m.stop();
  await page.locator('[data-testid=banner]').waitFor({ state: 'visible', timeout: 10000 });
  assert.match(await page.locator('[data-testid=banner]').textContent(), /连接中断.*\d\d:\d\d:\d\d/);
  // Issued while the terminal cannot hear it.
  m.inject({ kind: 'fire', location: { lat: 36.6662, lon: 117.0288, address: '离线期间的火情' }, text: '起火' }, 0);
  await m.start();
  const card = page.locator('[data-testid=task-card]');
  await card.waitFor({ timeout: 15000 });
  assert.equal(await page.locator('[data-testid=task-address]').textContent(), '离线期间的火情');
  await page.locator('[data-testid=banner]').waitFor({ state: 'hidden' });
  // It came by resuming from the cursor, not as a fresh snapshot.
  const last = m.state.subscribes.filter((x) => x.channel === 'unit:' + unit).pop();
  assert.ok(last.since, 'the terminal resubscribed without its cursor');
  assert.equal(last.gap, false);
  await page.click('[data-testid=btn-ack]');
  await page.locator('[data-testid=task-card][data-status=acknowledged]').waitFor({ timeout: 5000 });
  assert.deepEqual(b.pageErrors, []);
});

test('terminal: after a history gap the snapshot wins and a task cancelled meanwhile is dropped', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t, { seed: false, historyLen: 3 });
  const unit = 'quancheng-02';
  m.state.units.get(unit).status = 'available';
  const old = m.inject({ kind: 'theft', location: { lat: 36.6662, lon: 117.0288, address: '将被撤销的任务' }, text: '被盗' }, 0);
  const page = await b.page('terminal', PHONE);
  await page.goto(m.url + '/terminal?token=' + m.tokens.unit(unit));
  await page.locator('[data-testid=task-address]', { hasText: '将被撤销的任务' }).waitFor({ timeout: 10000 });

  await m.stop();
  // Cancelled, then more than the history holds on this unit's channel.
  assert.equal(m.command({ op: 'close', incident: old.id, disposition: '误报' }), null);
  for (let i = 0; i < 3; i++) {
    const inc = m.inject({ kind: 'dispute', location: { lat: 36.6662, lon: 117.0288, address: '纠纷' + i }, text: '吵架' }, 0);
    assert.equal(m.command({ op: 'close', incident: inc.id, disposition: '已调解' }), null);
  }
  m.inject({ kind: 'fire', location: { lat: 36.6662, lon: 117.0288, address: '新的任务' }, text: '起火' }, 0);
  await m.start();
  await page.locator('[data-testid=task-address]', { hasText: '新的任务' }).waitFor({ timeout: 15000 });
  // The cancelled task is gone (after the 5 s the page gives the snapshot).
  const last = m.state.subscribes.filter((x) => x.channel === 'unit:' + unit).pop();
  assert.equal(last.gap, true, 'the cursor should have fallen out of the 3-entry history');
  await page.locator('[data-testid=other-task]').waitFor({ state: 'detached', timeout: 8000 });
  const texts = (await page.locator('#task-box, #others-box').allTextContents()).join(' ');
  assert.ok(!texts.includes('将被撤销的任务'), texts);
  // ... and the unit is told so.
  await page.locator(`[data-testid=task-notice][data-status=cancelled]`, { hasText: '将被撤销的任务' }).waitFor({ timeout: 2000 });
  assert.deepEqual(b.pageErrors, []);
});

test('terminal: errors from the server and bad input are shown, buttons follow the task', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t, { seed: false });
  const page = await b.page('terminal', PHONE);
  // Record the alert on a new task: vibration and the beep's oscillators.
  await page.addInitScript(() => {
    window.__vibrations = [];
    window.__beeps = 0;
    navigator.vibrate = (p) => { window.__vibrations.push(p); return true; };
    window.AudioContext = class {
      constructor() { this.state = 'running'; this.currentTime = 0; this.destination = {}; }
      resume() { return Promise.resolve(); }
      createOscillator() { window.__beeps += 1; return { frequency: {}, connect: (g) => g, start() {}, stop() {} }; }
      createGain() { return { gain: { setValueAtTime() {}, exponentialRampToValueAtTime() {} }, connect: (d) => d }; }
    };
  });
  // A unit that is not in the roster and not on duty yet.
  await page.goto(m.url + '/terminal?lang=en&token=' + m.tokens.unit('newcar-7'));
  await page.locator('[data-testid=conn][data-state=connected]').waitFor({ timeout: 10000 });
  // Until the first tap the browser keeps sounds off, and the page says so.
  assert.equal(await page.locator('[data-testid=sound-hint]').isVisible(), true);
  for (const b of ['btn-ack', 'btn-enroute', 'btn-onscene', 'btn-cleared']) {
    assert.equal(await page.locator(`[data-testid=${b}]`).isDisabled(), true, b + ' enabled without a task');
  }
  await page.fill('[data-testid=lat]', '36.66');
  await page.fill('[data-testid=lon]', '117.02');
  await page.click('[data-testid=send-pos]');
  const err = page.locator('[data-testid=toast-error]', { hasText: '[not_found]' });
  await err.waitFor({ timeout: 5000 });
  await page.locator('[data-testid=sound-hint]').waitFor({ state: 'hidden', timeout: 2000 });
  await page.fill('[data-testid=lat]', '95');
  await page.click('[data-testid=send-pos]');
  await page.locator('[data-testid=toast-error]', { hasText: 'Invalid coordinates' }).waitFor({ timeout: 5000 });
  // Coming on duty registers it; then a task enables the buttons in order.
  await page.fill('[data-testid=lat]', '36.6640');
  await page.click('[data-testid=on-duty]');
  await page.locator('[data-testid=unit-status][data-status=available]').waitFor({ timeout: 5000 });
  m.inject({ kind: 'robbery', location: { lat: 36.665, lon: 117.023, address: 'Quancheng Rd 1' }, text: 'robbery' }, 0);
  await page.locator('[data-testid=task-card][data-status=issued]').waitFor({ timeout: 5000 });
  assert.equal(await page.locator('[data-testid=btn-ack]').isDisabled(), false);
  // The new task beeped (the page was tapped before, so sound is allowed) and vibrated.
  assert.equal(await page.evaluate(() => window.__vibrations.length), 1);
  assert.equal(await page.evaluate(() => window.__beeps), 3);
  await page.click('[data-testid=btn-onscene]');
  await page.locator('[data-testid=task-card][data-status=on_scene]').waitFor({ timeout: 5000 });
  assert.equal(await page.locator('[data-testid=btn-ack]').isDisabled(), true);
  assert.equal(await page.locator('[data-testid=btn-enroute]').isDisabled(), true);
  await page.click('[data-testid=btn-cleared]');
  await page.locator('[data-testid=no-task]').waitFor({ timeout: 5000 });
  await page.locator('[data-testid=task-notice][data-status=cleared]').waitFor({ timeout: 5000 });
  assert.deepEqual(b.pageErrors, []);
});

test('terminal: browser geolocation fills the position and reports it once on duty', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t, { seed: false });
  await b.ctx.grantPermissions(['geolocation'], { origin: m.url });
  await b.ctx.setGeolocation({ latitude: 36.6641, longitude: 117.0221 });
  const page = await b.page('terminal', PHONE);
  await page.goto(m.url + '/terminal?token=' + m.tokens.unit('quancheng-01'));
  await page.locator('[data-testid=conn][data-state=connected]').waitFor({ timeout: 10000 });
  await page.click('[data-testid=geo]');
  await page.waitForFunction(() => document.querySelector('[data-testid=lat]').value.startsWith('36.6641'), null, { timeout: 5000 });
  assert.match(await page.locator('[data-testid=lon]').inputValue(), /^117\.0221/);
  // Off duty: the position is not reported by itself.
  await sleep(500);
  assert.equal(m.state.log.filter((c) => c.op === 'position').length, 0);
  await page.click('[data-testid=on-duty]');
  await page.locator('[data-testid=unit-status][data-status=available]').waitFor({ timeout: 5000 });
  const u = m.state.units.get('quancheng-01');
  assert.equal(u.status, 'available');
  assert.ok(Math.abs(u.lat - 36.6641) < 1e-6 && Math.abs(u.lon - 117.0221) < 1e-6, JSON.stringify(u));
  // Moving 100 m on duty sends a position report.
  await b.ctx.setGeolocation({ latitude: 36.6650, longitude: 117.0221 });
  for (let i = 0; i < 50 && !m.state.log.some((c) => c.op === 'position'); i++) await sleep(100);
  const sent = m.state.log.filter((c) => c.op === 'position');
  assert.ok(sent.length >= 1, 'no position report after moving');
  assert.ok(Math.abs(sent.at(-1).lat - 36.665) < 1e-6);
  assert.deepEqual(b.pageErrors, []);
});

test('board: the clocks count on the server\'s time when the desk PC clock is wrong', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t, { seed: false });
  m.state.units.get('quancheng-02').status = 'available';
  m.inject({ kind: 'robbery', location: { lat: 36.6651, lon: 117.0231, address: '时钟' }, text: '抢劫' }, 0);
  const page = await b.page('board', DESKTOP);
  // This PC's clock is two minutes slow.
  await page.clock.setSystemTime(new Date(Date.now() - 120000));
  await page.goto(m.url + '/?token=' + m.tokens.operator);
  const clk = page.locator('[data-testid=incident] [data-testid=clock-respond] .c');
  await clk.waitFor({ timeout: 5000 });
  // Once the offset is learnt (first REST answers), respond shows under a
  // minute left, not the three a slow clock would show.
  await page.waitForFunction(() => {
    const el = document.querySelector('[data-testid=incident] [data-testid=clock-respond] .c');
    const mm = el && /^(\d+):(\d\d)$/.exec(el.textContent);
    return mm && Number(mm[1]) * 60 + Number(mm[2]) <= 60;
  }, null, { timeout: 5000 });
  const offset = await page.evaluate(() => window.QZX.clockOffset);
  assert.ok(offset > 110000 && offset < 130000, 'learnt offset ' + offset);
  assert.deepEqual(b.pageErrors, []);
});

test('board: escalate reaches the board; a command the router rejects later is shown as an error', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t, { seed: false });
  m.state.units.get('quancheng-02').status = 'available';
  m.state.units.get('daminghu-01').status = 'busy';
  m.inject({ kind: 'fire', location: { lat: 36.6651, lon: 117.0231, address: '吹哨测试' }, text: '起火' }, 0);
  const page = await b.page('board', DESKTOP);
  await page.goto(m.url + '/?lang=en&token=' + m.tokens.operator);
  await page.locator('[data-testid=incident]').first().click();
  await page.selectOption('[data-testid=escalate-to]', 'desk:criminal');
  await page.fill('[data-testid=escalate-note]', 'need detectives');
  await page.click('[data-testid=escalate]');
  await page.locator('[data-testid=toast-info]', { hasText: 'need detectives' }).waitFor({ timeout: 5000 });
  assert.deepEqual(m.state.log.at(-1), { by: 'mock-operator', op: 'escalate', incident: m.state.log.at(-1).incident, desk: 'criminal', note: 'need detectives' });
  await page.locator('[data-testid=incident] [data-testid=address]', { hasText: '吹哨测试' }).waitFor();
  assert.match(await page.locator('[data-testid=incident]').first().textContent(), /Criminal investigation/);

  // The api accepts an assign of a busy unit (ok); the router rejects it.
  // (Not in the ranking: the router ranks only units it could send.)
  await page.locator('[data-testid=assign-source][data-source]').waitFor();
  // Inserted and clicked at once: a push may redraw the list.
  await page.evaluate(() => {
    document.querySelector('[data-testid=assign-list]').insertAdjacentHTML('afterbegin',
      '<label data-testid="candidate"><input type="radio" name="a-unit" value="daminghu-01" checked></label>');
    document.querySelector('[data-testid=assign]').click();
  });
  await page.locator('[data-testid=toast-error]', { hasText: 'Command rejected' }).waitFor({ timeout: 5000 });
  assert.match(await page.locator('[data-testid=toast-error]', { hasText: 'Command rejected' }).textContent(), /daminghu-01 is busy/);
  // Divert: the incident leaves the board.
  await page.fill('[data-testid=divert-to]', '119');
  await page.click('[data-testid=divert]');
  await page.locator('[data-testid=all-clear]').waitFor({ timeout: 5000 });
  assert.equal(m.state.log.at(-1).to, '119');
  // The rejection stays on screen after the incident left: it was never applied.
  assert.equal(await page.locator('[data-testid=toast-error]', { hasText: 'Command rejected' }).count(), 1);
  assert.deepEqual(b.pageErrors, []);
});

test('board map: stations, coverage cells, incidents, and unit markers that move on pushes', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t, { seed: true });
  const page = await b.page('board', DESKTOP);
  await page.goto(m.url + '/?token=' + m.tokens.operator);
  const marker = page.locator('[data-testid=map-unit][data-unit="quancheng-02"]');
  await marker.waitFor({ timeout: 5000 });
  assert.equal(await page.locator('#m-jur polygon').count(), 6, 'six station areas (the fallback has none)');
  await page.waitForFunction(() => document.querySelectorAll('#m-cov circle, #m-cov polygon').length > 50, null, { timeout: 15000 });
  assert.ok((await page.locator('.m-incident').count()) >= 5);
  const before = await marker.getAttribute('transform');
  assert.equal(m.command({ op: 'position', lat: 36.6600, lon: 117.0300 }, { sub: 'quancheng-02', role: 'unit', unit: 'quancheng-02' }), null);
  await page.waitForFunction((b4) => {
    const el = document.querySelector('[data-testid=map-unit][data-unit="quancheng-02"]');
    return el && el.getAttribute('transform') !== b4;
  }, before, { timeout: 3000 });
  // Further south and east: y grows, x grows.
  const xy = (tr) => tr.match(/translate\(([-\d.]+),([-\d.]+)\)/).slice(1).map(Number);
  const [x0, y0] = xy(before);
  const [x1, y1] = xy(await marker.getAttribute('transform'));
  assert.ok(x1 > x0 && y1 > y0, `${before} -> ${x1},${y1}`);
  // Clicking an incident marker selects it.
  await page.locator('.m-incident').first().click();
  await page.locator('[data-testid=close]').waitFor({ timeout: 3000 });
  assert.deepEqual(b.pageErrors, []);
});

test('board and terminal show caller-supplied text as text, never as markup', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t, { seed: false });
  m.state.units.get('quancheng-02').status = 'available';
  const evil = '<img src=x onerror="window.__xss=1">路<b>口</b>';
  m.inject({ kind: '<script>x</script>', location: { lat: 36.6651, lon: 117.0231, address: evil }, text: '<i>hi</i>' }, 0);
  const board = await b.page('board', DESKTOP);
  await board.goto(m.url + '/?token=' + m.tokens.operator);
  await board.locator('[data-testid=incident] [data-testid=address]').waitFor();
  assert.equal(await board.locator('[data-testid=incident] [data-testid=address]').textContent(), evil);
  await board.locator('[data-testid=incident]').click();
  const term = await b.page('terminal', PHONE);
  await term.goto(m.url + '/terminal?token=' + m.tokens.unit('quancheng-02'));
  await term.locator('[data-testid=task-address]').waitFor();
  assert.equal(await term.locator('[data-testid=task-address]').textContent(), evil);
  await sleep(300);
  assert.equal(await board.evaluate(() => window.__xss), undefined);
  assert.equal(await term.evaluate(() => window.__xss), undefined);
  assert.equal(await board.locator('img').count(), 0);
  assert.deepEqual(b.pageErrors, []);
});
