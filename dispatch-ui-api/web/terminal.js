/*
 * qzx unit terminal (GET /terminal): the phone page of one patrol unit.
 *
 * Subscribes to `unit:<id>` (the id comes from the unit token's claims),
 * shows the current task with its deadlines counting down, the distance
 * from the unit, the incident's kind, the caller to call back and the
 * other units on it, and sends the unit's commands: ack, status (en route,
 * on scene, cleared with a disposition note, available, busy, out of
 * service with a reason, off duty), refuse with a reason, a note on the
 * task, and position.
 *
 * When the incident changes under a task (its `changes`), the parts that
 * changed stay highlighted under a banner naming them until the unit taps
 * "got it"; a priority rise beeps. A cancelled task says why (`reason`).
 *
 * It must never lose a task: tasks are kept keyed by id and replaced only by
 * a newer version, the list and the channel cursor survive a reload
 * (sessionStorage), and every reconnect resumes from the cursor. It must
 * never show a command as done before the server said `ok`.
 */
(function () {
  'use strict';
  const Q = window.QZX;

  Q.addLabels({
    term_title: ['警务终端', 'Unit terminal'],
    my_status: ['本单元状态', 'My status'],
    my_position: ['位置', 'Position'],
    no_task: ['暂无任务，保持待命', 'No task: stand by'],
    new_task: ['新任务！', 'New task!'],
    task_cancelled: ['任务已撤销', 'Task cancelled'],
    task_cleared: ['任务已完成', 'Task cleared'],
    incident_closed: ['警情已结案', 'incident closed'],
    position_title: ['上报位置（定位或手动输入）', 'Report position (GPS or manual)'],
    use_gps: ['使用定位', 'Use GPS'],
    send_pos: ['上报位置', 'Send position'],
    on_duty: ['上岗待命', 'Go on duty'],
    off_duty: ['下岗', 'Off duty'],
    need_position: ['请先输入或获取位置', 'Enter or get a position first'],
    bad_position: ['坐标无效', 'Invalid coordinates'],
    gps_denied: ['无法获取定位，请手动输入', 'Location unavailable, enter it by hand'],
    distance: ['距离', 'Distance'],
    priority: ['等级', 'Priority'],
    issued_at: ['下达', 'Issued'],
    other_tasks: ['其他任务', 'Other tasks'],
    reported: ['已上报', 'reported'],
    sound_hint: ['轻触屏幕以开启新任务提示音', 'Tap the screen to allow the new-task sound'],
    task_kind_respond: ['处警', 'Respond'],
    task_kind_reinforce: ['增援', 'Reinforce'],
    task_kind_investigate: ['调查', 'Investigate'],
    caller: ['报警人', 'Caller'],
    other_units: ['同警情警力', 'Other units'],
    changed_banner: ['警情有变化：{what}', 'Incident changed: {what}'],
    changed_ok: ['知道了', 'Got it'],
    priority_up: ['等级提高！', 'Priority raised!'],
    chg_priority: ['等级', 'priority'],
    chg_kind: ['警情类别', 'kind'],
    chg_text: ['警情内容', 'text'],
    chg_location: ['地址', 'location'],
    chg_deadlines: ['时限', 'deadlines'],
    chg_caller: ['报警人', 'caller'],
    chg_units: ['出警警力', 'units'],
    chg_merged: ['已合并警情', 'merged'],
    disposition_ph: ['处置结果（处置完毕时一并上报）', 'Disposition (sent with Cleared)'],
    note_ph: ['现场情况（写入警情时间线）', 'Note for the incident timeline'],
    send_note: ['发送备注', 'Send note'],
    refuse_ph: ['拒绝原因（必填）', 'Why you refuse (required)'],
    refuse: ['拒绝任务', 'Refuse task'],
    need_reason: ['请填写原因', 'Enter a reason'],
    need_text: ['请填写内容', 'Enter the text'],
    status_reason_ph: ['忙碌/暂停执勤原因', 'Reason for busy / out of service'],
    busy_btn: ['忙碌', 'Busy'],
    oos_btn: ['暂停执勤', 'Out of service'],
  });

  let token = null;
  let me = null;
  let unitId = null;
  let conn = null;
  let tasks = new Map(); // id -> task
  let unit = null; // our unit record from pushes
  let reported = null; // the last status the server accepted from us
  let reportedAt = 0;
  let pos = null; // [lat, lon] we know ourselves by
  let currentId = null;
  let alerted = new Set(); // task ids we have beeped for
  let changed = new Map(); // task id -> [names of what changed] until the unit taps "got it"
  let audio = null;
  let watchId = null;
  let lastSentPos = null;
  let lastPosError = 0;
  let subEpoch = 0; // counts non-resumed subscriptions
  const seenIn = new Map(); // task id -> the subEpoch its last push came in

  const $ = (id) => document.getElementById(id);
  const OPEN = ['issued', 'acknowledged', 'en_route', 'on_scene'];
  const storeKey = () => 'qzx.terminal.' + unitId;

  // ---- persistence across reloads ----------------------------------------------

  function save() {
    try {
      sessionStorage.setItem(storeKey(), JSON.stringify({
        cursor: conn ? conn.cursor('unit:' + unitId) : null,
        tasks: [...tasks.values()].filter((t) => OPEN.includes(t.status)),
        alerted: [...alerted].slice(-200),
        changed: [...changed].filter(([id]) => tasks.has(id)),
        pos,
      }));
    } catch (_) { /* storage full or private mode: the server still has it */ }
  }

  function restore() {
    try {
      const s = JSON.parse(sessionStorage.getItem(storeKey()) || 'null');
      if (!s) return null;
      for (const t of s.tasks || []) tasks.set(t.id, t);
      alerted = new Set(s.alerted || []);
      changed = new Map(s.changed || []);
      if (Array.isArray(s.pos)) pos = s.pos;
      return s.cursor || null;
    } catch (_) {
      return null;
    }
  }

  // ---- data in ------------------------------------------------------------------

  function upsertTask(t) {
    if (!t || !t.id) return;
    if (t.unit && unitId && t.unit !== unitId) return;
    const old = tasks.get(t.id);
    if (old && Number(old.version || 0) > Number(t.version || 0)) return;
    tasks.set(t.id, t);
    seenIn.set(t.id, subEpoch);
    if (t.status === 'issued' && !alerted.has(t.id)) {
      alerted.add(t.id);
      alertNewTask(t);
    }
    if ((t.changes || []).length && OPEN.includes(t.status)) {
      // Kept until the unit says it has seen them: the next version (an
      // ack, say) carries no changes of its own.
      changed.set(t.id, [...new Set((changed.get(t.id) || []).concat(t.changes))]);
      if (t.changes.includes('priority') && old && Number(t.priority) < Number(old.priority)) alertPriorityRise(t);
    }
    if (!OPEN.includes(t.status)) changed.delete(t.id);
    if (old && OPEN.includes(old.status) && (t.status === 'cancelled' || t.status === 'cleared')) {
      showNotice(t);
      // The router has freed the unit; read its new status back.
      setTimeout(refreshUnit, 1000);
    }
    save();
    render();
  }

  function onPush(msg) {
    const d = msg.data;
    if (msg.kind === 'task') upsertTask(d);
    else if (msg.kind === 'unit' && d && (d.id === unitId || !d.id)) {
      unit = Object.assign({}, unit || {}, d);
      if (isFinite(d.lat) && isFinite(d.lon) && d.lat != null) pos = [Number(d.lat), Number(d.lon)];
      render();
    } else if (msg.kind === 'incident' && d) {
      // Some servers tell the unit about its incident; a closed one ends our task.
      for (const t of tasks.values()) {
        if (t.incident === d.id && OPEN.includes(t.status) && (d.status === 'closed' || d.status === 'diverted')) {
          showNotice(Object.assign({}, t, { status: 'cancelled' }), Q.t('incident_closed'));
        }
      }
    }
    save();
  }

  /*
   * GET /api/v1/units: {"units": [Unit]}, where a unit token sees only
   * itself (rest.rs). The unit channel carries tasks only, so this is where
   * our status and position come from.
   */
  async function refreshUnit() {
    if (!token || !unitId) return;
    try {
      const raw = await Q.api(token, '/api/v1/units');
      const mine = raw.units.find((u) => u.id === unitId);
      if (mine) onPush({ kind: 'unit', data: mine });
    } catch (e) {
      if (e.status === 401) { Q.storeToken('terminal', null); showLogin(Q.t('token_invalid')); }
      // Otherwise: the banner already shows a connection problem; the
      // status shown is what we reported.
    }
  }

  function showNotice(t, extra) {
    const box = $('notice');
    box.dataset.task = t.id;
    box.dataset.status = t.status;
    // The router says why a task was taken away (pre-empted, refused, closed).
    box.dataset.reason = t.reason || '';
    box.textContent = (t.status === 'cancelled' ? Q.t('task_cancelled') : Q.t('task_cleared')) + ': ' + Q.kindName(kindOf(t)) + ' · ' +
      addr(t) + (extra ? ' (' + extra + ')' : '') + (t.reason ? ' — ' + t.reason : '');
    box.classList.remove('hidden');
  }

  // ---- alert on a new task ------------------------------------------------------

  function unlockAudio() {
    // Browsers allow sound only after a user gesture: create the context on
    // the first tap and keep it.
    if (!audio) {
      const AC = window.AudioContext || window.webkitAudioContext;
      if (AC) { try { audio = new AC(); } catch (_) { audio = null; } }
    }
    if (audio && audio.state === 'suspended') audio.resume().then(soundHint, () => {});
    soundHint();
  }

  /** Says so while the browser would keep a new task silent. */
  function soundHint() {
    const el = $('sound-hint');
    if (el) el.classList.toggle('hidden', !!audio && audio.state === 'running');
  }

  /** `freqs.length` beeps `gap` seconds apart, with WebAudio (no audio files). */
  function beep(freqs, gap) {
    try {
      if (!audio || audio.state !== 'running') return;
      const now = audio.currentTime;
      freqs.forEach((f, i) => {
        const o = audio.createOscillator();
        const g = audio.createGain();
        o.frequency.value = f;
        g.gain.setValueAtTime(0.0001, now + i * gap);
        g.gain.exponentialRampToValueAtTime(0.4, now + i * gap + 0.02);
        g.gain.exponentialRampToValueAtTime(0.0001, now + i * gap + gap * 0.8);
        o.connect(g).connect(audio.destination);
        o.start(now + i * gap);
        o.stop(now + i * gap + gap * 0.85);
      });
    } catch (_) { /* no sound: the card still flashes */ }
  }

  function alertNewTask(t) {
    beep([880, 660, 880], 0.3);
    try { if (navigator.vibrate) navigator.vibrate([300, 120, 300, 120, 300]); } catch (_) { /* not allowed */ }
    Q.toast('info', Q.t('new_task') + ' ' + Q.kindName(kindOf(t)) + ' · ' + addr(t));
    newFlash = t.id;
  }

  /** A task's incident became more urgent: a rising, faster alarm than a new task's. */
  function alertPriorityRise(t) {
    beep([660, 880, 1100, 1320], 0.18);
    try { if (navigator.vibrate) navigator.vibrate([150, 60, 150, 60, 150, 60, 150]); } catch (_) { /* not allowed */ }
    Q.toast('error', Q.t('priority_up') + ' P' + Q.prio(t.priority) + ' ' + Q.kindName(kindOf(t)) + ' · ' + addr(t));
    newFlash = t.id;
  }
  let newFlash = null;

  // ---- rendering ------------------------------------------------------------------

  /** The incident's kind (a task from an older router has none). */
  function kindOf(t) {
    return t.incident_kind || 'unknown';
  }

  function addr(t) {
    const l = t.location;
    return (l && l.address) || (l ? Number(l.lat).toFixed(4) + ', ' + Number(l.lon).toFixed(4) : '—');
  }

  /** The current task's card; the parts named in `changed` are highlighted. */
  function cardHtml(cur) {
    const chg = changed.get(cur.id) || [];
    const part = (name) => ' data-part="' + name + '"' + (chg.includes(name) ? ' data-changed="1"' : '');
    const hl = (name) => (chg.includes(name) ? ' chg' : '');
    const p = Q.prio(cur.priority);
    const dist = pos && cur.location ? Q.haversineM(pos[0], pos[1], cur.location.lat, cur.location.lon) : null;
    const c = cur.caller;
    const who = c ? [c.name, c.phone].filter(Boolean).join(' ') : '';
    const banner = chg.length
      ? '<div class="changes" data-testid="task-changes" data-changes="' + Q.esc(chg.join(',')) + '"><span>' +
        Q.esc(Q.t('changed_banner', { what: chg.map((x) => (Q.t('chg_' + x) === 'chg_' + x ? x : Q.t('chg_' + x))).join('、') })) +
        '</span><button data-testid="changes-ok" id="changes-ok">' + Q.esc(Q.t('changed_ok')) + '</button></div>'
      : '';
    return '<div class="card p' + p + (newFlash === cur.id ? ' new' : '') + (chg.length ? ' changed' : '') + '" data-testid="task-card" data-task="' +
      Q.esc(cur.id) + '" data-status="' + Q.esc(cur.status) + '" data-priority="' + p + '">' + banner +
      '<h2><span class="prio p' + p + hl('priority') + '"' + part('priority') + ' data-testid="task-priority">P' + p + '</span>' +
      '<span class="' + hl('kind') + '"' + part('kind') + ' data-testid="task-kind">' + Q.esc(Q.kindName(kindOf(cur))) + '</span></h2>' +
      '<div class="addr' + hl('location') + '"' + part('location') + ' data-testid="task-address">' + Q.esc(addr(cur)) + '</div>' +
      (cur.summary ? '<div class="sum' + hl('text') + '"' + part('text') + ' data-testid="task-summary">' + Q.esc(cur.summary) + '</div>' : '') +
      (who ? '<div class="row' + hl('caller') + '"' + part('caller') + '><span>' + Q.esc(Q.t('caller')) + '</span>' +
        (c.phone ? '<a class="call" data-testid="task-caller" href="tel:' + Q.esc(c.phone) + '">' + Q.esc(who) + '</a>'
          : '<b data-testid="task-caller">' + Q.esc(who) + '</b>') + '</div>' : '') +
      ((cur.other_units || []).length || chg.includes('units')
        ? '<div class="row' + hl('units') + '"' + part('units') + '><span>' + Q.esc(Q.t('other_units')) + '</span><b data-testid="task-other-units">' +
          Q.esc((cur.other_units || []).join('、') || '—') + '</b></div>' : '') +
      '<div class="row"><span>' + Q.esc(Q.t('status')) + '</span><b data-testid="task-status">' + Q.esc(Q.pick(Q.STATUSES[cur.status], cur.status)) + '</b></div>' +
      '<div class="row"><span>' + Q.esc(Q.t('distance')) + '</span><b data-testid="task-distance">' + Q.esc(Q.fmtDistance(dist)) + '</b></div>' +
      '<div class="row"><span>' + Q.esc(Q.t('issued_at')) + '</span><b>' + Q.esc(Q.hhmmss(new Date(Q.ms(cur.issued_at) || Date.now()))) + ' · ' +
      Q.esc(Q.t('task_kind_' + cur.kind) !== 'task_kind_' + cur.kind ? Q.t('task_kind_' + cur.kind) : cur.kind || '') + '</b></div>' +
      '<div class="clocks' + hl('deadlines') + '"' + part('deadlines') + '>' + ['respond', 'arrive', 'reinforce'].map((s) =>
        '<div class="clk" data-stage="' + s + '"><div class="n">' + Q.esc(Q.pick(Q.STAGES[s])) + '</div><div class="c"></div></div>').join('') + '</div>' +
      '</div>';
  }

  function openTasks() {
    return [...tasks.values()].filter((t) => OPEN.includes(t.status))
      .sort((a, b) => (a.priority || 9) - (b.priority || 9) || (Q.ms(a.issued_at) || 0) - (Q.ms(b.issued_at) || 0));
  }

  function render() {
    const list = openTasks();
    const cur = list[0] || null;
    currentId = cur ? cur.id : null;
    const box = $('task-box');
    if (!cur) {
      box.innerHTML = '<div class="card" data-testid="no-task"><div class="dim">' + Q.esc(Q.t('no_task')) + '</div></div>';
    } else {
      box.innerHTML = cardHtml(cur);
      tick();
    }
    const st = cur ? cur.status : null;
    $('b-ack').disabled = st !== 'issued';
    $('b-enroute').disabled = !(st === 'issued' || st === 'acknowledged');
    $('b-onscene').disabled = !(st === 'issued' || st === 'acknowledged' || st === 'en_route');
    $('b-cleared').disabled = !st;
    // A unit may refuse a task it has not reached.
    $('b-refuse').disabled = !(st === 'issued' || st === 'acknowledged' || st === 'en_route');
    $('task-tools').classList.toggle('hidden', !cur);

    const others = list.slice(1);
    $('others-box').innerHTML = others.length
      ? '<div class="panel" style="padding:8px 12px"><div class="dim">' + Q.esc(Q.t('other_tasks')) + '</div><ul class="others">' +
        others.map((t) => '<li data-testid="other-task" data-task="' + Q.esc(t.id) + '"><span class="prio p' + Q.prio(t.priority) + '">P' + Q.prio(t.priority) + '</span>' +
          Q.esc(Q.kindName(kindOf(t)) + ' · ' + addr(t) + ' · ' + Q.pick(Q.STATUSES[t.status], t.status)) + '</li>').join('') + '</ul></div>'
      : '';

    const { status: us, confirmed } = myStatus(cur);
    const el = $('unit-status');
    el.textContent = us ? Q.pick(Q.STATUSES[us], us) + (confirmed ? '' : ' (' + Q.t('reported') + ')') : '—';
    el.dataset.status = us || '';
    // Why we are busy or out of service, as the router recorded it.
    $('unit-reason').textContent = unit && unit.reason && (us === 'busy' || us === 'out_of_service') ? unit.reason : '';
    $('unit-pos').textContent = pos ? pos[0].toFixed(5) + ', ' + pos[1].toFixed(5) : '—';
    $('unit-name').textContent = (unit && unit.name) || unitId;
  }

  /**
   * What the unit is doing: with an open task, the task's state (the
   * freshest word); else the server's record once it is at least as new as
   * our last accepted report; else what we reported.
   */
  function myStatus(cur) {
    const fromTask = cur ? { issued: 'assigned', acknowledged: 'assigned', en_route: 'en_route', on_scene: 'on_scene' }[cur.status] : null;
    if (fromTask) return { status: fromTask, confirmed: true };
    const serverFresh = unit && unit.status && (!reportedAt || (Q.ms(unit.at) || 0) >= reportedAt - 1000);
    if (serverFresh) return { status: unit.status, confirmed: true };
    if (reported) return { status: reported, confirmed: false };
    return { status: (unit && unit.status) || null, confirmed: true };
  }

  function tick() {
    const cur = currentId ? tasks.get(currentId) : null;
    if (!cur) return;
    const now = Q.now();
    document.querySelectorAll('#task-box .clk').forEach((el) => {
      // A task carries deadlines but not the incident's sla: a stage this
      // unit has done shows as done, the others count down.
      const c = Q.clock(el.dataset.stage, cur.deadlines, unitStages(cur), cur.issued_at, now);
      el.className = 'clk ' + c.cls;
      el.querySelector('.c').textContent = c.text;
    });
  }

  function unitStages(t) {
    const rank = { issued: 0, acknowledged: 1, en_route: 2, on_scene: 3, cleared: 4, cancelled: 4 }[t.status] || 0;
    return {
      respond: rank >= 1 ? 'done' : 'pending',
      arrive: rank >= 3 ? 'done' : 'pending',
      // Reinforcement is the incident's count of units, not this unit's own
      // stage, except on a reinforce task.
      reinforce: t.kind === 'reinforce' ? (rank >= 3 ? 'done' : 'pending') : 'n/a',
    };
  }

  // ---- commands ------------------------------------------------------------------------

  async function send(btn, op, fields) {
    unlockAudio();
    if (btn) btn.disabled = true;
    try {
      await conn.command(op, fields);
      if (op === 'status') { reported = fields.status === 'cleared' ? 'available' : fields.status; reportedAt = Q.now(); }
      if (op === 'ack') { reported = 'assigned'; reportedAt = Q.now(); }
      // The router applies it shortly: read our unit back.
      setTimeout(refreshUnit, 1000);
      setTimeout(refreshUnit, 4000);
      Q.toast('ok', Q.t('sent_ok'));
      return true;
    } catch (e) {
      Q.toast('error', (btn ? btn.textContent + ': ' : '') + Q.errorText(e));
      return false;
    } finally {
      // render() sets the task buttons from the task's state; the others
      // are free again.
      if (btn) btn.disabled = false;
      render();
    }
  }

  function withPos(fields) {
    if (pos) { fields.lat = pos[0]; fields.lon = pos[1]; }
    return fields;
  }

  function readManualPos() {
    const lat = parseFloat($('lat').value);
    const lon = parseFloat($('lon').value);
    if ($('lat').value.trim() === '' && $('lon').value.trim() === '') return null;
    if (!isFinite(lat) || !isFinite(lon) || lat < -90 || lat > 90 || lon < -180 || lon > 180) return 'bad';
    return [lat, lon];
  }

  function useGps(then) {
    if (!navigator.geolocation) { Q.toast('error', Q.t('gps_denied')); return; }
    navigator.geolocation.getCurrentPosition((p) => {
      pos = [p.coords.latitude, p.coords.longitude];
      $('lat').value = pos[0].toFixed(6);
      $('lon').value = pos[1].toFixed(6);
      render();
      if (then) then();
      startWatch();
    }, () => Q.toast('error', Q.t('gps_denied')), { enableHighAccuracy: true, timeout: 8000, maximumAge: 10000 });
  }

  function startWatch() {
    if (watchId != null || !navigator.geolocation) return;
    watchId = navigator.geolocation.watchPosition((p) => {
      pos = [p.coords.latitude, p.coords.longitude];
      // Report when moved 30 m or every 15 s, not on every fix.
      const now = Date.now();
      const moved = !lastSentPos || Q.haversineM(lastSentPos.p[0], lastSentPos.p[1], pos[0], pos[1]) > 30;
      // Only a unit on duty reports where it is; off duty it is nobody's business.
      const { status } = myStatus(currentId ? tasks.get(currentId) : null);
      const onDuty = status && status !== 'off_duty';
      if (onDuty && conn && conn.connected && (moved || now - lastSentPos.at > 15000)) {
        lastSentPos = { p: pos, at: now };
        conn.command('position', { lat: pos[0], lon: pos[1] }).catch((e) => {
          // A failing automatic report says so once a minute, not every fix.
          if (now - lastPosError > 60000) {
            lastPosError = now;
            Q.toast('error', Q.t('send_pos') + ': ' + Q.errorText(e));
          }
        });
      }
      render();
    }, () => { /* denied: the manual field stays */ }, { enableHighAccuracy: true, maximumAge: 5000 });
  }

  function wire() {
    $('b-ack').onclick = (ev) => currentId && send(ev.currentTarget, 'ack', { task: currentId });
    $('b-enroute').onclick = (ev) => currentId && send(ev.currentTarget, 'status', withPos({ status: 'en_route', task: currentId }));
    $('b-onscene').onclick = (ev) => currentId && send(ev.currentTarget, 'status', withPos({ status: 'on_scene', task: currentId }));
    $('b-cleared').onclick = async (ev) => {
      if (!currentId) return;
      // The disposition goes with the report as its note.
      const note = $('disp').value.trim();
      const fields = withPos({ status: 'cleared', task: currentId });
      if (note) fields.note = note;
      if (await send(ev.currentTarget, 'status', fields)) $('disp').value = '';
    };
    $('b-note').onclick = async (ev) => {
      const text = $('note-text').value.trim();
      if (!currentId) return;
      if (!text) { Q.toast('error', Q.t('send_note') + ': ' + Q.t('need_text')); return; }
      if (await send(ev.currentTarget, 'note', { task: currentId, text })) $('note-text').value = '';
    };
    $('b-refuse').onclick = async (ev) => {
      const reason = $('refuse-reason').value.trim();
      if (!currentId) return;
      if (!reason) { Q.toast('error', Q.t('refuse') + ': ' + Q.t('need_reason')); $('refuse-reason').focus(); return; }
      if (await send(ev.currentTarget, 'refuse', { task: currentId, reason })) $('refuse-reason').value = '';
    };
    $('busy').onclick = (ev) => {
      const reason = $('status-reason').value.trim();
      const fields = withPos({ status: 'busy' });
      if (reason) fields.reason = reason;
      send(ev.currentTarget, 'status', fields);
    };
    $('oos').onclick = (ev) => {
      const reason = $('status-reason').value.trim();
      if (!reason) { Q.toast('error', Q.t('oos_btn') + ': ' + Q.t('need_reason')); $('status-reason').focus(); return; }
      send(ev.currentTarget, 'status', withPos({ status: 'out_of_service', reason }));
    };
    // "Got it" on the changes banner: the unit has seen what changed.
    $('task-box').addEventListener('click', (ev) => {
      if (!ev.target.closest('#changes-ok') || !currentId) return;
      changed.delete(currentId);
      save();
      render();
    });
    $('geo').onclick = () => { unlockAudio(); useGps(); };
    $('send-pos').onclick = (ev) => {
      const m = readManualPos();
      if (m === 'bad') { Q.toast('error', Q.t('bad_position')); return; }
      if (!m && !pos) { Q.toast('error', Q.t('need_position')); return; }
      if (m) pos = m;
      lastSentPos = { p: pos, at: Date.now() };
      send(ev.currentTarget, 'position', { lat: pos[0], lon: pos[1] });
    };
    $('on-duty').onclick = (ev) => {
      const m = readManualPos();
      if (m === 'bad') { Q.toast('error', Q.t('bad_position')); return; }
      if (m) pos = m;
      if (!pos) {
        // Try the browser's location; without it the unit must type one.
        useGps(() => send($('on-duty'), 'status', withPos({ status: 'available' })));
        Q.toast('info', Q.t('need_position'));
        return;
      }
      send(ev.currentTarget, 'status', withPos({ status: 'available' }));
    };
    $('off-duty').onclick = (ev) => send(ev.currentTarget, 'status', withPos({ status: 'off_duty' }));
    document.addEventListener('click', unlockAudio, { capture: true });
    document.querySelectorAll('.lang-btn').forEach((b) => {
      b.onclick = () => {
        Q.setLang(Q.lang === 'en' ? 'zh' : 'en');
        Q.applyLabels();
        if (conn) onState({ connected: conn.connected, since: conn.downSince });
        render();
      };
    });
    $('login-btn').onclick = () => {
      const tok = $('token-input').value.trim();
      if (!tok) return;
      $('token-input').value = '';
      Q.storeToken('terminal', tok);
      start(tok);
    };
  }

  function onState(s) {
    const pill = $('conn');
    const banner = $('banner');
    pill.className = 'pill ' + (s.connected ? 'ok' : 'down');
    pill.textContent = s.connected ? Q.t('connected') : Q.t('connecting');
    pill.dataset.state = s.connected ? 'connected' : 'down';
    if (s.connected || !s.since) {
      banner.classList.add('hidden');
    } else {
      banner.textContent = Q.t('disconnected_since', { t: Q.hhmmss(s.since) });
      banner.classList.remove('hidden');
    }
  }

  function showLogin(msg) {
    $('terminal').classList.add('hidden');
    $('login').classList.remove('hidden');
    $('login-msg').textContent = msg || '';
    Q.applyLabels();
  }

  function start(tok) {
    token = tok;
    me = Q.claims(tok);
    unitId = me && (me.unit || me.sub);
    if (!me || !unitId) { showLogin(Q.t('token_invalid')); return; }
    $('login').classList.add('hidden');
    $('terminal').classList.remove('hidden');
    Q.applyLabels();
    const cursor = restore();
    conn = new Q.Connection(tok, {
      onState,
      onPush,
      onSubscribed: (msg, resumed) => {
        refreshUnit();
        if (resumed) return;
        // Not resumed (first subscribe, or a history gap): the snapshot that
        // follows is the server's whole list of our open tasks. A task we
        // held from before that the snapshot does not repeat within 5 s is
        // no longer ours (cancelled while we could not hear it). It is only
        // hidden: a later push for it brings it back.
        const epoch = ++subEpoch;
        setTimeout(() => {
          if (epoch !== subEpoch || !conn || !conn.connected) return;
          for (const t of [...tasks.values()]) {
            if (OPEN.includes(t.status) && seenIn.get(t.id) !== epoch) {
              tasks.delete(t.id);
              showNotice(Object.assign({}, t, { status: 'cancelled' }));
            }
          }
          save();
          render();
        }, 5000);
      },
      onError: (e) => Q.toast('error', Q.errorText(e)),
      onAuthFailed: () => {
        Q.storeToken('terminal', null);
        showLogin(Q.t('token_invalid'));
      },
    });
    conn.subscribe('unit:' + unitId);
    if (cursor) conn.channels.get('unit:' + unitId).cursor = cursor;
    onState({ connected: false, since: null });
    conn.start();
    if (pos) { $('lat').value = pos[0].toFixed(6); $('lon').value = pos[1].toFixed(6); }
    render();
    setInterval(tick, 1000);
    setInterval(refreshUnit, 15000);
  }

  wire();
  Q.applyLabels();
  const tok = Q.takeToken('terminal');
  if (tok) start(tok); else showLogin('');
})();
