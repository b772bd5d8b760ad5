/*
 * qzx operator board: the dialogs for what changes an incident's shape or
 * makes one. Update (priority with a reason, kind, text, place), merge
 * another open incident into this one, split chosen events off, a new
 * incident from a walk-in or radio report, and reopen a closed or
 * diverted one (from the recently closed, or by its id).
 *
 * One dialog at a time, not modal, so a position can be picked on the map
 * while it is open. A dialog sends only what the operator changed and
 * closes only when the server said `ok`; on an error it stays open with
 * what was typed. It must never change an incident itself.
 */
(function () {
  'use strict';
  const Q = window.QZX;
  const B = Q.board;
  const $ = (id) => document.getElementById(id);

  Q.addLabels({
    cancel: ['取消', 'Cancel'],
    send: ['发送', 'Send'],
    upd_title: ['修改警情', 'Update the incident'],
    priority: ['等级', 'Priority'],
    kind: ['警情类别', 'Kind'],
    text: ['警情内容', 'Text'],
    address: ['地址', 'Address'],
    pick_on_map: ['地图选点', 'Pick on map'],
    prio_reason: ['改等级的原因（必填）', 'Why the priority changes (required)'],
    nothing_changed: ['没有修改', 'Nothing changed'],
    need_prio_reason: ['修改等级须填写原因', 'A priority change needs a reason'],
    need_position: ['地址须有坐标：请在地图上选点或填写经纬度', 'An address needs its position: pick it on the map or enter lat and lon'],
    bad_position: ['坐标无效', 'Invalid coordinates'],
    merge_title: ['合并警情：把所选警情并入本警情', 'Merge: the chosen incident joins this one'],
    merge_hint: ['所选警情的事件、报警人、警力和时间线并入本警情，原警情以“已合并”结案', "Its events, callers, units and timeline move here; it closes as merged"],
    no_other: ['没有其他未结警情', 'No other open incident'],
    need_choice: ['请选择一项', 'Choose one'],
    split_title: ['拆分警情：所选事件另立新警情', 'Split: the ticked events become a new incident'],
    split_need: ['请勾选要拆出的事件（不能全部）', 'Tick the events to split off (not all of them)'],
    event_n: ['事件 {n}', 'Event {n}'],
    create: ['新警情', 'New incident'],
    create_title: ['新建警情（来人来电、电台报告）', 'New incident (walk-in or radio report)'],
    caller_phone: ['报警人电话', "Caller's phone"],
    caller_name: ['报警人姓名', "Caller's name"],
    closed_list: ['已结警情', 'Closed'],
    reopen_title: ['重新打开已结案或已分流的警情', 'Reopen a closed or diverted incident'],
    reopen_id: ['或输入警情编号', 'or enter the incident id'],
    reopen: ['重新打开', 'Reopen'],
    reason: ['原因', 'Reason'],
    need_reason: ['请填写原因', 'Enter a reason'],
    need_text: ['请填写内容', 'Enter the text'],
    none_closed: ['近期没有已结警情', 'Nothing closed recently'],
  });

  const F = {};
  B.forms = F;

  let onSubmit = null;

  /**
   * Opens the dialog with `title` and the form `html`; `submit()` returns
   * [op, fields] to send, or a message to show and stay open.
   */
  function open(name, title, html, submit) {
    const dlg = $('dlg');
    dlg.dataset.form = name;
    $('dlg-title').textContent = title;
    $('dlg-body').innerHTML = html;
    onSubmit = submit;
    if (!dlg.open) dlg.show();
    const first = $('dlg-body').querySelector('input, select, textarea');
    if (first) first.focus();
  }

  function close() {
    const dlg = $('dlg');
    if (dlg.open) dlg.close();
    onSubmit = null;
  }
  F.close = close;

  F.wire = function () {
    $('dlg-cancel').onclick = close;
    $('dlg-submit').onclick = async (ev) => {
      if (!onSubmit) return;
      const r = onSubmit();
      if (typeof r === 'string') { Q.toast('error', $('dlg-title').textContent + ': ' + r); return; }
      const [op, fields] = r;
      const mine = onSubmit;
      if (await B.send(ev.currentTarget, op, fields) && onSubmit === mine) close();
    };
    $('new-incident').onclick = F.create;
    $('closed-incidents').onclick = F.reopen;
  };

  // ---- shared bits ----------------------------------------------------------------

  function kindOptions(current) {
    const codes = Object.keys(Q.KINDS);
    if (current && !codes.includes(current)) codes.unshift(current);
    return codes.map((k) => '<option value="' + Q.esc(k) + '"' + (k === current ? ' selected' : '') + '>' + Q.esc(Q.kindName(k)) + '</option>').join('');
  }

  function placeHtml(loc) {
    const v = (x) => (x == null ? '' : Q.esc(x));
    return '<label>' + Q.esc(Q.t('address')) + '<input type="text" id="f-address" data-testid="f-address" value="' + v(loc && loc.address) + '"></label>' +
      '<div class="act"><input type="text" inputmode="decimal" id="f-lat" data-testid="f-lat" placeholder="lat" value="' + v(loc && loc.lat) + '">' +
      '<input type="text" inputmode="decimal" id="f-lon" data-testid="f-lon" placeholder="lon" value="' + v(loc && loc.lon) + '">' +
      '<button type="button" id="f-pick" data-testid="f-pick">' + Q.esc(Q.t('pick_on_map')) + '</button></div>';
  }

  function wirePick() {
    $('f-pick').onclick = () => B.map.pick(([lat, lon]) => {
      if (!$('f-lat')) return; // the dialog was closed meanwhile
      $('f-lat').value = lat.toFixed(6);
      $('f-lon').value = lon.toFixed(6);
    });
  }

  /** The place typed: null when empty, a message when unusable, else a Location. */
  function readPlace() {
    const address = $('f-address').value.trim();
    const latT = $('f-lat').value.trim();
    const lonT = $('f-lon').value.trim();
    if (!address && !latT && !lonT) return null;
    if (!latT || !lonT) return Q.t('need_position');
    const lat = Number(latT);
    const lon = Number(lonT);
    if (!isFinite(lat) || !isFinite(lon) || lat < -90 || lat > 90 || lon < -180 || lon > 180) return Q.t('bad_position');
    const loc = { lat, lon };
    if (address) loc.address = address;
    return loc;
  }

  // ---- update -------------------------------------------------------------------------

  F.update = function (inc) {
    if (!inc) return;
    const prios = [1, 2, 3, 4].map((p) => '<option value="' + p + '"' + (p === inc.priority ? ' selected' : '') + '>P' + p + '</option>').join('');
    open('update', Q.t('upd_title'), '<div class="form">' +
      '<div class="act"><label>' + Q.esc(Q.t('priority')) + '</label><select id="f-priority" data-testid="upd-priority">' + prios + '</select>' +
      '<input type="text" id="f-reason" data-testid="upd-reason" placeholder="' + Q.esc(Q.t('prio_reason')) + '"></div>' +
      '<label>' + Q.esc(Q.t('kind')) + '<select id="f-kind" data-testid="upd-kind">' + kindOptions(inc.kind) + '</select></label>' +
      '<label>' + Q.esc(Q.t('text')) + '<textarea id="f-text" data-testid="upd-text" rows="3">' + Q.esc(inc.text || '') + '</textarea></label>' +
      placeHtml(inc.location) + '</div>', () => {
      const now = B.incidents.get(inc.id) || inc;
      const fields = { incident: inc.id };
      const priority = Number($('f-priority').value);
      if (priority !== now.priority) {
        const reason = $('f-reason').value.trim();
        if (!reason) return Q.t('need_prio_reason');
        fields.priority = priority;
        fields.reason = reason;
      }
      if ($('f-kind').value !== now.kind) fields.kind = $('f-kind').value;
      const text = $('f-text').value.trim();
      if (text && text !== (now.text || '')) fields.text = text;
      const place = readPlace();
      if (typeof place === 'string') return place;
      const l = now.location;
      if (place && (!l || place.lat !== l.lat || place.lon !== l.lon || (place.address || '') !== (l.address || ''))) fields.location = place;
      if (Object.keys(fields).length === 1) return Q.t('nothing_changed');
      return ['update', fields];
    });
    wirePick();
  };

  // ---- merge --------------------------------------------------------------------------

  F.merge = function (inc) {
    if (!inc) return;
    const here = inc.location;
    const others = B.sorted().filter((o) => o.id !== inc.id).map((o) => ({
      o, d: here && o.location ? Q.haversineM(here.lat, here.lon, o.location.lat, o.location.lon) : null,
    })).sort((a, b) => (a.d ?? 1e12) - (b.d ?? 1e12));
    const rows = others.map(({ o, d }) => '<label class="cand" data-testid="merge-candidate" data-id="' + Q.esc(o.id) + '"><input type="radio" name="f-from" value="' +
      Q.esc(o.id) + '"><span class="prio p' + Q.prio(o.priority) + '">P' + Q.prio(o.priority) + '</span>' + Q.esc(Q.kindName(o.kind)) + ' · ' +
      Q.esc(B.addr(o)) + ' <span class="dim">' + Q.esc(Q.fmtDistance(d) + ' · ' + Q.hhmmss(new Date(Q.ms(o.created_at) || Date.now()))) + '</span></label>').join('');
    open('merge', Q.t('merge_title'), '<div class="form"><div class="dim">' + Q.esc(Q.t('merge_hint')) + '</div>' +
      '<div class="cands">' + (rows || '<div class="dim">' + Q.esc(Q.t('no_other')) + '</div>') + '</div></div>', () => {
      const r = document.querySelector('input[name=f-from]:checked');
      if (!r) return Q.t('need_choice');
      return ['merge', { incident: inc.id, from: r.value }];
    });
  };

  // ---- split --------------------------------------------------------------------------

  F.split = function (inc) {
    if (!inc) return;
    const rows = (inc.events || []).map((e, i) => '<label class="cand" data-testid="split-event" data-event="' + Q.esc(e) + '"><input type="checkbox" name="f-ev" value="' +
      Q.esc(e) + '"> ' + Q.esc(Q.t('event_n', { n: i + 1 })) + ' <span class="dim">' + Q.esc(e) + '</span></label>').join('');
    open('split', Q.t('split_title'), '<div class="form"><div class="cands">' + rows + '</div>' +
      '<label>' + Q.esc(Q.t('reason')) + '<input type="text" id="f-reason" data-testid="split-reason"></label></div>', () => {
      const events = [...document.querySelectorAll('input[name=f-ev]:checked')].map((x) => x.value);
      if (!events.length || events.length >= (inc.events || []).length) return Q.t('split_need');
      const fields = { incident: inc.id, events };
      const reason = $('f-reason').value.trim();
      if (reason) fields.reason = reason;
      return ['split', fields];
    });
  };

  // ---- create ---------------------------------------------------------------------------

  F.create = function () {
    open('create', Q.t('create_title'), '<div class="form">' +
      '<label>' + Q.esc(Q.t('kind')) + '<select id="f-kind" data-testid="new-kind">' + kindOptions('unknown') + '</select></label>' +
      '<label>' + Q.esc(Q.t('text')) + '<textarea id="f-text" data-testid="new-text" rows="3"></textarea></label>' +
      placeHtml(null) +
      '<div class="act"><input type="tel" id="f-phone" data-testid="new-phone" placeholder="' + Q.esc(Q.t('caller_phone')) + '">' +
      '<input type="text" id="f-name" data-testid="new-name" placeholder="' + Q.esc(Q.t('caller_name')) + '"></div></div>', () => {
      const text = $('f-text').value.trim();
      if (!text) return Q.t('need_text');
      const fields = { kind: $('f-kind').value, text };
      const place = readPlace();
      if (typeof place === 'string') return place;
      if (place) fields.location = place;
      const phone = $('f-phone').value.trim();
      const name = $('f-name').value.trim();
      if (phone || name) {
        fields.caller = {};
        if (phone) fields.caller.phone = phone;
        if (name) fields.caller.name = name;
      }
      return ['create', fields];
    });
    wirePick();
  };

  // ---- reopen -----------------------------------------------------------------------------

  F.reopen = async function () {
    open('reopen', Q.t('reopen_title'), '<div class="form"><div class="cands" id="f-closed" data-testid="closed-list"><div class="dim">…</div></div>' +
      '<label>' + Q.esc(Q.t('reopen_id')) + '<input type="text" id="f-id" data-testid="reopen-id" autocomplete="off"></label>' +
      '<label>' + Q.esc(Q.t('reason')) + '<input type="text" id="f-reason" data-testid="reopen-reason-dlg"></label></div>', () => {
      const typed = $('f-id').value.trim();
      const r = document.querySelector('input[name=f-closed]:checked');
      const incident = typed || (r && r.value);
      if (!incident) return Q.t('need_choice');
      const reason = $('f-reason').value.trim();
      if (!reason) return Q.t('need_reason');
      return ['reopen', { incident, reason }];
    });
    let list;
    try {
      list = await B.loadClosed();
    } catch (e) {
      B.restError(e, '/api/v1/incidents?status=closed');
      list = [];
    }
    const box = $('f-closed');
    if (!box || $('dlg').dataset.form !== 'reopen') return;
    box.innerHTML = list.length ? list.map((i) => '<label class="cand" data-testid="closed-incident" data-id="' + Q.esc(i.id) + '"><input type="radio" name="f-closed" value="' +
      Q.esc(i.id) + '"><span class="prio p' + Q.prio(i.priority) + '">P' + Q.prio(i.priority) + '</span>' + Q.esc(Q.kindName(i.kind)) + ' · ' + Q.esc(B.addr(i)) +
      ' <span class="dim">' + Q.esc(Q.pick(Q.STATUSES[i.status], i.status) + ' · ' + Q.hhmmss(new Date(Q.ms(i.updated_at) || Date.now())) +
        (i.disposition ? ' · ' + i.disposition : '') + (i.merged_into ? ' → ' + i.merged_into.slice(0, 8) : '')) + '</span></label>').join('')
      : '<div class="dim">' + Q.esc(Q.t('none_closed')) + '</div>';
  };
})();
