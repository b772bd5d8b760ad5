// Issue #21, "operators steer incidents, units are kept informed", in
// headless Chromium against mock-server.mjs: every new action of the board
// (update, note, hold, assign from the router's ranking with add/replace
// and pre-emption, merge, split, new incident, reopen) and of the terminal
// (refuse, note, disposition, busy, out of service), checked by the exact
// command the mock received (it refuses unknown or malformed fields as the
// api does), and what the pages show of the new fields (candidates, held,
// merged, split, stale units, callers; a task's changes, caller, other
// units, and the reason it was cancelled).
//
//   cd tests/browser && node --test steer.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { launch, DESKTOP, PHONE } from './chromium.mjs';
import { startMock } from './mock-server.mjs';

async function setup(t, opts) {
  const m = await startMock(opts || { seed: false });
  const b = await launch();
  t.after(async () => {
    await b.close();
    await m.close();
  });
  return { m, b };
}

const available = (m, ...ids) => { for (const id of ids) m.state.units.get(id).status = 'available'; };

/** The last command with `op` the mock received, without who sent it. */
function last(m, op) {
  const c = m.state.log.filter((x) => x.op === op).at(-1);
  assert.ok(c, 'no ' + op + ' command received; got ' + JSON.stringify(m.state.log.map((x) => x.op)));
  const { by: _, ...rest } = c;
  return rest;
}

async function openBoard(b, m) {
  const page = await b.page('board', DESKTOP);
  await page.goto(m.url + '/?lang=en&token=' + m.tokens.operator);
  await page.locator('[data-testid=conn][data-state=connected]').waitFor({ timeout: 10000 });
  return page;
}

const row = (page, address) => page.locator('[data-testid=incident]', { has: page.locator('[data-testid=address]', { hasText: address }) });

/** Sends the open dialog; it closes only once the server said ok. */
async function submitOk(page) {
  await page.click('[data-testid=dlg-submit]');
  await page.locator('[data-testid=dialog]').waitFor({ state: 'hidden', timeout: 5000 });
}

async function expectError(page, text) {
  await page.locator('[data-testid=toast-error]', { hasText: text }).last().waitFor({ timeout: 3000 });
  await page.locator('[data-testid=toast-error] button').evaluateAll((bs) => bs.forEach((x) => x.click()));
}

/** Clicks the map at a fraction of its size (a position for a form). */
async function clickMap(page, fx, fy) {
  const box = await page.locator('#map').boundingBox();
  await page.mouse.click(box.x + box.width * fx, box.y + box.height * fy);
}

test('board: update sends only what changed; a priority change needs a reason; a place is picked on the map', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t);
  available(m, 'quancheng-02');
  const inc = m.inject({ kind: 'theft', location: { lat: 36.6651, lon: 117.0231, address: '更新测试' }, text: '被盗' }, 0);
  const page = await openBoard(b, m);
  await row(page, '更新测试').click();
  await page.click('[data-testid=open-update]');
  await page.selectOption('[data-testid=upd-priority]', '1');
  await page.click('[data-testid=dlg-submit]');
  await expectError(page, 'A priority change needs a reason');
  assert.equal(m.state.log.filter((x) => x.op === 'update').length, 0);
  await page.fill('[data-testid=upd-reason]', 'armed suspect');
  await page.selectOption('[data-testid=upd-kind]', 'robbery');
  await page.fill('[data-testid=upd-text]', 'phone snatched at knifepoint');
  await submitOk(page);
  assert.deepEqual(last(m, 'update'), { op: 'update', incident: inc.id, priority: 1, reason: 'armed suspect', kind: 'robbery', text: 'phone snatched at knifepoint' });
  await row(page, '更新测试').locator('.prio.p1').waitFor({ timeout: 3000 });
  assert.equal(await row(page, '更新测试').getAttribute('data-kind'), 'robbery');

  // Nothing changed: said so, nothing sent.
  await page.click('[data-testid=open-update]');
  await page.click('[data-testid=dlg-submit]');
  await expectError(page, 'Nothing changed');
  // A new place: an address alone is refused, the position is picked on the map.
  await page.fill('[data-testid=f-address]', '泉城路新地址');
  await page.fill('[data-testid=f-lat]', '');
  await page.click('[data-testid=dlg-submit]');
  await expectError(page, 'An address needs its position');
  await page.click('[data-testid=f-pick]');
  await clickMap(page, 0.5, 0.5);
  await page.waitForFunction(() => document.querySelector('[data-testid=f-lat]').value !== '', null, { timeout: 2000 });
  await submitOk(page);
  const u = last(m, 'update');
  assert.deepEqual(Object.keys(u).sort(), ['incident', 'location', 'op']);
  assert.equal(u.location.address, '泉城路新地址');
  assert.ok(u.location.lat > 36.6 && u.location.lat < 36.7 && u.location.lon > 116.9 && u.location.lon < 117.1, JSON.stringify(u));
  await row(page, '泉城路新地址').waitFor({ timeout: 3000 });
  assert.deepEqual(b.pageErrors, []);
});

test('board: note and hold; while held the assign list is the router\'s ranking with ETAs', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t);
  // Nobody free when the call comes in; then three units come on duty.
  const inc = m.inject({ kind: 'theft', location: { lat: 36.6651, lon: 117.0231, address: '暂停测试' }, text: '被盗' }, 0);
  assert.equal(inc.units.length, 0);
  available(m, 'quancheng-01', 'quancheng-02', 'quancheng-p1');
  const page = await openBoard(b, m);
  await row(page, '暂停测试').click();

  await page.click('[data-testid=note]');
  await expectError(page, 'Enter the text');
  await page.fill('[data-testid=note-text]', 'caller rang back: suspect went north');
  await page.click('[data-testid=note]');
  await page.locator('[data-testid=timeline]', { hasText: 'suspect went north' }).waitFor({ timeout: 3000 });
  assert.deepEqual(last(m, 'note'), { op: 'note', incident: inc.id, text: 'caller rang back: suspect went north' });
  assert.equal(await page.locator('[data-testid=note-text]').inputValue(), '');

  await page.fill('[data-testid=hold-reason]', 'wait for detectives');
  await page.click('[data-testid=hold][data-hold="0"]');
  await row(page, '暂停测试').locator('[data-testid=badge-held]').waitFor({ timeout: 3000 });
  assert.deepEqual(last(m, 'hold'), { op: 'hold', incident: inc.id, hold: true, reason: 'wait for detectives' });
  await page.locator('[data-testid=held-note]').waitFor();
  // The incident's candidates, as the router ranked them.
  await page.locator('[data-testid=assign-source][data-source=router]').waitFor({ timeout: 3000 });
  const want = m.state.incidents.get(inc.id).candidates.map((c) => c.unit);
  assert.ok(want.length >= 2, JSON.stringify(want));
  assert.deepEqual(await page.locator('[data-testid=candidate]').evaluateAll((els) => els.map((e) => e.dataset.unit)), want);
  assert.match(await page.locator('[data-testid=candidate]').first().textContent(), /ETA \d+:\d\d/);
  assert.equal(await page.locator('[data-testid=candidate]').first().getAttribute('data-in-time'), '1');
  await page.locator('[data-testid=candidate] [data-testid=in-time]').first().waitFor();
  // The best is chosen until the operator picks another.
  assert.equal(await page.locator(`[data-testid=candidate][data-unit="${want[0]}"] input`).isChecked(), true);
  await page.locator(`[data-testid=candidate][data-unit="${want[1]}"] input`).check();
  // Nobody is on it: replacing is the default (and the same as adding).
  assert.equal(await page.locator('[data-testid=assign-mode]').inputValue(), 'replace');
  await page.click('[data-testid=assign]');
  await page.locator('[data-testid=toast-ok]', { hasText: 'Assign' }).waitFor({ timeout: 3000 });
  assert.deepEqual(last(m, 'assign'), { op: 'assign', incident: inc.id, unit: want[1], mode: 'replace' });
  await row(page, '暂停测试').locator(`[data-testid=inc-unit][data-unit="${want[1]}"]`).waitFor({ timeout: 3000 });
  // Served: the router ranks no more, the list falls back to distance.
  await page.locator('[data-testid=assign-source][data-source=distance]').waitFor({ timeout: 3000 });

  // Resume: no reason needed.
  await page.click('[data-testid=hold][data-hold="1"]');
  await row(page, '暂停测试').locator('[data-testid=badge-held]').waitFor({ state: 'detached', timeout: 3000 });
  assert.deepEqual(last(m, 'hold'), { op: 'hold', incident: inc.id, hold: false });
  assert.deepEqual(b.pageErrors, []);
});

test('board: a unit on a lower-priority task is offered for pre-emption, only when ticked; its terminal says why its task went', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t);
  available(m, 'quancheng-02');
  const theft = m.inject({ kind: 'theft', location: { lat: 36.6651, lon: 117.0231, address: '低等级任务' }, text: '被盗' }, 0);
  assert.equal(theft.units[0].unit, 'quancheng-02');
  const term = await b.page('terminal', PHONE);
  await term.goto(m.url + '/terminal?lang=en&token=' + m.tokens.unit('quancheng-02'));
  await term.locator('[data-testid=task-address]', { hasText: '低等级任务' }).waitFor({ timeout: 5000 });
  // A held P1 with nobody free: the router ranks the unit on the P3.
  const robbery = m.inject({ kind: 'robbery', location: { lat: 36.6655, lon: 117.0235, address: '持刀抢劫' }, text: '抢劫', hold: true }, 0);
  assert.equal(robbery.units.length, 0);
  const page = await openBoard(b, m);
  await row(page, '持刀抢劫').click();
  const cand = page.locator('[data-testid=candidate][data-unit="quancheng-02"]');
  await cand.waitFor({ timeout: 3000 });
  assert.equal(await page.locator('[data-testid=assign-source]').getAttribute('data-source'), 'router');
  assert.equal(await cand.getAttribute('data-task'), theft.units[0].task);
  assert.match(await cand.textContent(), /on a P3 task/);
  assert.equal(await page.locator('[data-testid=assign-mode]').inputValue(), 'replace');
  assert.equal(await page.locator('[data-testid=assign-preempt]').isDisabled(), false);
  await page.click('[data-testid=assign]');
  await expectError(page, 'tick pre-empt');
  assert.equal(m.state.log.filter((x) => x.op === 'assign').length, 0);
  await page.check('[data-testid=assign-preempt]');
  await page.click('[data-testid=assign]');
  await row(page, '持刀抢劫').locator('[data-testid=inc-unit][data-unit="quancheng-02"]').waitFor({ timeout: 3000 });
  assert.deepEqual(last(m, 'assign'), { op: 'assign', incident: robbery.id, unit: 'quancheng-02', mode: 'replace', preempt: true });
  await page.locator('[data-testid=toast-info]', { hasText: 'Unit pre-empted' }).waitFor({ timeout: 3000 });
  // The terminal: the old task cancelled with the reason, the P1 now current.
  const notice = term.locator(`[data-testid=task-notice][data-task="${theft.units[0].task}"][data-status=cancelled]`);
  await notice.waitFor({ timeout: 5000 });
  assert.match(await notice.getAttribute('data-reason'), /pre-empted/);
  assert.match(await notice.textContent(), /pre-empted/);
  await term.locator('[data-testid=task-address]', { hasText: '持刀抢劫' }).waitFor({ timeout: 3000 });
  assert.deepEqual(b.pageErrors, []);
});

test('board: stale units are marked on the map and cannot be picked; without a ranking the list is by distance', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t, { seed: false, staleAfterS: 60, noRanking: true });
  available(m, 'quancheng-01', 'quancheng-02');
  // quancheng-02 is nearest but its terminal went quiet ten minutes ago.
  m.state.units.get('quancheng-02').at = new Date(Date.now() - 600000).toISOString();
  m.inject({ kind: 'theft', location: { lat: 36.6665, lon: 117.0289, address: '失联测试' }, text: '被盗', hold: true }, 0);
  const page = await openBoard(b, m);
  await page.locator('[data-testid=map-unit][data-unit="quancheng-02"][data-stale="1"]').waitFor({ timeout: 5000 });
  assert.equal(await page.locator('[data-testid=map-unit][data-unit="quancheng-01"]').getAttribute('data-stale'), null);
  await row(page, '失联测试').click();
  await page.locator('[data-testid=assign-source][data-source=distance]').waitFor({ timeout: 3000 });
  const stale = page.locator('[data-testid=candidate][data-unit="quancheng-02"]');
  assert.equal(await stale.getAttribute('data-stale'), '1');
  assert.equal(await stale.locator('input').isDisabled(), true);
  await stale.locator('[data-testid=badge-stale]').waitFor();
  // The fresh unit is first and chosen.
  assert.equal(await page.locator('[data-testid=candidate]').first().getAttribute('data-unit'), 'quancheng-01');
  assert.equal(await page.locator('[data-testid=candidate][data-unit="quancheng-01"] input').isChecked(), true);
  assert.match(await page.locator('[data-testid=assign-source]').textContent(), /straight-line distance/);
  assert.deepEqual(b.pageErrors, []);
});

test('board: merge another open incident in, then split an event off again', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t);
  available(m, 'quancheng-01', 'quancheng-02');
  const a = m.inject({ kind: 'assault', location: { lat: 36.6651, lon: 117.0231, address: '合并目标' }, text: '打架', caller: { phone: '13900000001' } }, 0);
  const other = m.inject({ kind: 'dispute', location: { lat: 36.6655, lon: 117.0236, address: '合并来源' }, text: '争吵', caller: { phone: '13900000002', name: '李先生' } }, 0);
  const page = await openBoard(b, m);
  await row(page, '合并目标').click();
  await page.click('[data-testid=open-merge]');
  await page.click('[data-testid=dlg-submit]');
  await expectError(page, 'Choose one');
  await page.locator(`[data-testid=merge-candidate][data-id="${other.id}"] input`).check();
  await submitOk(page);
  assert.deepEqual(last(m, 'merge'), { op: 'merge', incident: a.id, from: other.id });
  await row(page, '合并来源').waitFor({ state: 'detached', timeout: 3000 });
  await row(page, '合并目标').locator('[data-testid=badge-merged]').waitFor({ timeout: 3000 });
  // Both callers, each to call back.
  await page.locator('[data-testid=caller]').nth(1).waitFor({ timeout: 3000 });
  assert.deepEqual(await page.locator('[data-testid=caller]').evaluateAll((els) => els.map((e) => e.getAttribute('href'))),
    ['tel:13900000001', 'tel:13900000002']);
  assert.match(await page.locator('[data-testid=callers]').textContent(), /李先生 13900000002/);

  await page.click('[data-testid=open-split]');
  const events = m.state.incidents.get(a.id).events;
  assert.equal(events.length, 2);
  for (const e of events) await page.locator(`[data-testid=split-event][data-event="${e}"] input`).check();
  await page.click('[data-testid=dlg-submit]');
  await expectError(page, 'not all of them');
  await page.locator(`[data-testid=split-event][data-event="${events[0]}"] input`).uncheck();
  await page.fill('[data-testid=split-reason]', 'two separate fights');
  await submitOk(page);
  assert.deepEqual(last(m, 'split'), { op: 'split', incident: a.id, events: [events[1]], reason: 'two separate fights' });
  await page.locator('[data-testid=incident] [data-testid=badge-split]').waitFor({ timeout: 3000 });
  assert.equal(await page.locator('[data-testid=incident]').count(), 2);
  assert.deepEqual(b.pageErrors, []);
});

test('board: a walk-in report becomes an incident; a closed one is reopened from the recently closed', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t);
  available(m, 'quancheng-02');
  const page = await openBoard(b, m);
  await page.click('[data-testid=new-incident]');
  await page.selectOption('[data-testid=new-kind]', 'fire');
  await page.click('[data-testid=dlg-submit]');
  await expectError(page, 'Enter the text');
  await page.fill('[data-testid=new-text]', '来人报警：楼道冒烟');
  await page.fill('[data-testid=f-address]', '泉城路来人报警');
  await page.click('[data-testid=f-pick]');
  await clickMap(page, 0.45, 0.55);
  await page.fill('[data-testid=new-phone]', '13812340000');
  await submitOk(page);
  const c = last(m, 'create');
  assert.deepEqual(Object.keys(c).sort(), ['caller', 'kind', 'location', 'op', 'text']);
  assert.equal(c.kind, 'fire');
  assert.equal(c.text, '来人报警：楼道冒烟');
  assert.deepEqual(c.caller, { phone: '13812340000' });
  assert.equal(c.location.address, '泉城路来人报警');
  assert.equal(typeof c.location.lat, 'number');
  await row(page, '泉城路来人报警').waitFor({ timeout: 3000 });

  const id = await row(page, '泉城路来人报警').getAttribute('data-id');
  assert.equal(m.command({ op: 'close', incident: id, disposition: '误报' }), null);
  await row(page, '泉城路来人报警').waitFor({ state: 'detached', timeout: 3000 });
  await page.click('[data-testid=closed-incidents]');
  const closed = page.locator(`[data-testid=closed-incident][data-id="${id}"]`);
  await closed.waitFor({ timeout: 3000 });
  await closed.locator('input').check();
  await page.click('[data-testid=dlg-submit]');
  await expectError(page, 'Enter a reason');
  await page.fill('[data-testid=reopen-reason-dlg]', 'caller says the fire is back');
  await submitOk(page);
  assert.deepEqual(last(m, 'reopen'), { op: 'reopen', incident: id, reason: 'caller says the fire is back' });
  await row(page, '泉城路来人报警').waitFor({ timeout: 3000 });
  assert.deepEqual(b.pageErrors, []);
});

/** A terminal page whose beeps (oscillators) and vibrations are counted. */
async function countingTerminal(b) {
  const page = await b.page('terminal', PHONE);
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
  return page;
}

test('terminal: the incident changing under a task highlights what changed; a priority rise beeps', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t);
  available(m, 'quancheng-02');
  const page = await countingTerminal(b);
  await page.goto(m.url + '/terminal?lang=en&token=' + m.tokens.unit('quancheng-02'));
  await page.locator('[data-testid=conn][data-state=connected]').waitFor({ timeout: 10000 });
  await page.click('[data-testid=unit-status]'); // the tap that allows sound
  const inc = m.inject({ kind: 'theft', location: { lat: 36.6651, lon: 117.0231, address: '变化测试' }, text: '手机被偷',
    caller: { phone: '13912345678', name: '王女士' } }, 0);
  const card = page.locator('[data-testid=task-card]');
  await card.waitFor({ timeout: 5000 });
  assert.match(await page.locator('[data-testid=task-kind]').textContent(), /Theft/);
  assert.equal(await page.locator('[data-testid=task-caller]').getAttribute('href'), 'tel:13912345678');
  assert.match(await page.locator('[data-testid=task-caller]').textContent(), /王女士 13912345678/);
  assert.equal(await page.locator('[data-testid=task-changes]').count(), 0);
  const beeps0 = await page.evaluate(() => window.__beeps);
  assert.equal(beeps0, 3, 'the new task beeps');

  // Another unit joins: named, highlighted, silent.
  available(m, 'quancheng-01');
  assert.equal(m.command({ op: 'assign', incident: inc.id, unit: 'quancheng-01', mode: 'add' }), null);
  await page.locator('[data-testid=task-changes][data-changes=units]').waitFor({ timeout: 3000 });
  assert.equal(await page.locator('[data-testid=task-other-units]').textContent(), 'quancheng-01');
  assert.equal(await page.locator('[data-part=units][data-changed="1"]').count(), 1);
  assert.equal(await page.evaluate(() => window.__beeps), beeps0);

  // Priority up and a new place: both added to the banner, and an alarm.
  assert.equal(m.command({ op: 'update', incident: inc.id, priority: 1, reason: 'knife seen', location: { lat: 36.666, lon: 117.024, address: '变化后地址' } }), null);
  await page.locator('[data-testid=task-changes][data-changes="units,priority,location"]').waitFor({ timeout: 3000 });
  assert.match(await page.locator('[data-testid=task-changes]').textContent(), /Incident changed: units、priority、location/);
  assert.equal(await card.getAttribute('data-priority'), '1');
  assert.equal(await page.locator('[data-part=priority][data-changed="1"]').textContent(), 'P1');
  assert.equal(await page.locator('[data-part=location][data-changed="1"]').textContent(), '变化后地址');
  assert.equal(await page.locator('[data-part=kind][data-changed]').count(), 0);
  assert.equal(await page.evaluate(() => window.__beeps), beeps0 + 4);
  await page.locator('[data-testid=toast-error]', { hasText: 'Priority raised' }).waitFor({ timeout: 2000 });
  // Acknowledging keeps the banner (that version has no changes of its own).
  await page.click('[data-testid=btn-ack]');
  await page.locator('[data-testid=task-card][data-status=acknowledged]').waitFor({ timeout: 3000 });
  await page.locator('[data-testid=task-changes]').waitFor();
  // Seen: the banner and highlights go.
  await page.click('[data-testid=changes-ok]');
  await page.locator('[data-testid=task-changes]').waitFor({ state: 'detached', timeout: 2000 });
  assert.equal(await page.locator('[data-changed]').count(), 0);
  // A priority lowered, or only the text: highlighted, no alarm.
  assert.equal(m.command({ op: 'update', incident: inc.id, text: '嫌疑人已离开' }), null);
  await page.locator('[data-testid=task-changes][data-changes=text]').waitFor({ timeout: 3000 });
  assert.equal(await page.locator('[data-part=text][data-changed="1"]').textContent(), '嫌疑人已离开');
  assert.equal(await page.evaluate(() => window.__beeps), beeps0 + 4);
  // Survives a reload until seen.
  await page.reload();
  await page.locator('[data-testid=task-changes][data-changes=text]').waitFor({ timeout: 5000 });
  assert.deepEqual(b.pageErrors, []);
});

test('terminal: refuse needs a reason; the task goes to another unit and the terminal says why it left', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t);
  available(m, 'quancheng-01', 'quancheng-02');
  const inc = m.inject({ kind: 'theft', location: { lat: 36.6665, lon: 117.0289, address: '拒绝测试' }, text: '被盗' }, 0);
  const first = inc.units[0].unit;
  const second = first === 'quancheng-01' ? 'quancheng-02' : 'quancheng-01';
  const page = await b.page('terminal', PHONE);
  await page.goto(m.url + '/terminal?lang=en&token=' + m.tokens.unit(first));
  await page.locator('[data-testid=task-card][data-status=issued]').waitFor({ timeout: 5000 });
  const taskId = await page.locator('[data-testid=task-card]').getAttribute('data-task');
  assert.equal(await page.locator('[data-testid=btn-refuse]').isDisabled(), false);
  await page.click('[data-testid=btn-refuse]');
  await expectError(page, 'Enter a reason');
  await page.fill('[data-testid=refuse-reason]', 'flat tyre');
  await page.click('[data-testid=btn-refuse]');
  const notice = page.locator(`[data-testid=task-notice][data-task="${taskId}"][data-status=cancelled]`);
  await notice.waitFor({ timeout: 5000 });
  assert.deepEqual(last(m, 'refuse'), { op: 'refuse', task: taskId, reason: 'flat tyre' });
  assert.match(await notice.getAttribute('data-reason'), /flat tyre/);
  await page.locator('[data-testid=no-task]').waitFor();
  const now = m.state.incidents.get(inc.id).units.map((x) => [x.unit, x.status]);
  assert.deepEqual(now, [[first, 'cancelled'], [second, 'issued']]);
  // On scene it is too late to refuse.
  const p2 = await b.page('terminal', PHONE);
  await p2.goto(m.url + '/terminal?lang=en&token=' + m.tokens.unit(second));
  await p2.locator('[data-testid=task-card]').waitFor({ timeout: 5000 });
  await p2.click('[data-testid=btn-onscene]');
  await p2.locator('[data-testid=task-card][data-status=on_scene]').waitFor({ timeout: 3000 });
  assert.equal(await p2.locator('[data-testid=btn-refuse]').isDisabled(), true);
  assert.deepEqual(b.pageErrors, []);
});

test('terminal: a note on the task, a disposition with cleared, busy and out of service with a reason', { timeout: 60000 }, async (t) => {
  const { m, b } = await setup(t);
  available(m, 'quancheng-02');
  const page = await b.page('terminal', PHONE);
  await page.goto(m.url + '/terminal?lang=en&token=' + m.tokens.unit('quancheng-02'));
  await page.locator('[data-testid=conn][data-state=connected]').waitFor({ timeout: 10000 });
  assert.equal(await page.locator('#task-tools').isVisible(), false);
  const inc = m.inject({ kind: 'dispute', location: { lat: 36.6665, lon: 117.0289, address: '备注测试' }, text: '吵架' }, 0);
  await page.locator('[data-testid=task-card]').waitFor({ timeout: 5000 });
  const taskId = await page.locator('[data-testid=task-card]').getAttribute('data-task');
  await page.fill('[data-testid=note-text]', 'two men, calm now');
  await page.click('[data-testid=btn-note]');
  await page.locator('[data-testid=toast-ok]').first().waitFor({ timeout: 3000 });
  assert.deepEqual(last(m, 'note'), { op: 'note', task: taskId, text: 'two men, calm now' });
  assert.ok(m.state.incidents.get(inc.id).timeline.some((e) => e.what.includes('two men, calm now')));

  await page.click('[data-testid=btn-onscene]');
  await page.locator('[data-testid=task-card][data-status=on_scene]').waitFor({ timeout: 3000 });
  await page.fill('[data-testid=disposition]', 'mediated, both left');
  await page.click('[data-testid=btn-cleared]');
  await page.locator('[data-testid=no-task]').waitFor({ timeout: 3000 });
  const cleared = last(m, 'status');
  assert.equal(cleared.status, 'cleared');
  assert.equal(cleared.task, taskId);
  assert.equal(cleared.note, 'mediated, both left');
  assert.ok(m.state.incidents.get(inc.id).timeline.some((e) => e.what.includes('mediated, both left')));

  await page.fill('[data-testid=status-reason]', 'meal break');
  await page.click('[data-testid=busy]');
  await page.locator('[data-testid=unit-status][data-status=busy]').waitFor({ timeout: 3000 });
  const busy = last(m, 'status');
  assert.equal(busy.status, 'busy');
  assert.equal(busy.reason, 'meal break');
  await page.locator('[data-testid=unit-reason]', { hasText: 'meal break' }).waitFor({ timeout: 5000 });

  await page.fill('[data-testid=status-reason]', '');
  await page.click('[data-testid=out-of-service]');
  await expectError(page, 'Enter a reason');
  assert.equal(last(m, 'status').status, 'busy');
  await page.fill('[data-testid=status-reason]', 'engine failure');
  await page.click('[data-testid=out-of-service]');
  await page.locator('[data-testid=unit-status][data-status=out_of_service]').waitFor({ timeout: 3000 });
  assert.equal(last(m, 'status').reason, 'engine failure');
  assert.match(await page.locator('[data-testid=unit-status]').textContent(), /Out of service/);
  await page.locator('[data-testid=unit-reason]', { hasText: 'engine failure' }).waitFor({ timeout: 5000 });
  assert.deepEqual(b.pageErrors, []);
});

test('mock: refuses a command with an unknown or malformed field, as the api does', async (t) => {
  const { m } = await setup(t);
  const inc = m.inject({ kind: 'theft', location: { lat: 36.6665, lon: 117.0289, address: 'x' }, text: 'x' }, 0);
  assert.equal(m.command({ op: 'hold', incident: inc.id, held: true }).code, 'bad_request');
  assert.equal(m.command({ op: 'update', incident: inc.id, priority: 1 }).code, 'bad_request');
  assert.equal(m.command({ op: 'update', incident: inc.id }).code, 'bad_request');
  assert.equal(m.command({ op: 'assign', incident: inc.id, unit: 'quancheng-01', mode: 'both' }).code, 'bad_request');
  assert.equal(m.command({ op: 'split', incident: inc.id, events: [] }).code, 'bad_request');
  assert.equal(m.command({ op: 'create', kind: 'fire', text: 'x', location: { lat: 1 } }).code, 'bad_request');
  assert.equal(m.command({ op: 'hold', incident: inc.id }), null);
});
