/*
 * qzx operator board: the panel of the selected incident. What it is
 * (priority, kind, place, status, badges, the callers to call back, merged
 * and split links, the timeline) and the operator's actions on it: assign
 * (board-assign.js), note, hold or resume automatic dispatch, divert,
 * escalate, close, reopen a resolved one, and the buttons that open the
 * update, merge and split dialogs (board-forms.js).
 *
 * The forms are built once per selected incident so what the operator
 * types survives pushes; only the read-only parts are redrawn. It must
 * never change an incident itself: it sends commands and shows every error.
 */
(function () {
  'use strict';
  const Q = window.QZX;
  const B = Q.board;
  const $ = (id) => document.getElementById(id);

  Q.addLabels({
    actions: ['警情处置', 'Incident actions'],
    select_incident: ['点击左侧警情进行派警、分流、吹哨或结案', 'Select an incident to assign, divert, escalate or close it'],
    score: ['评分', 'score'],
    divert: ['分流', 'Divert'],
    agency: ['分流至', 'To agency'],
    escalate: ['吹哨报到', 'Escalate'],
    escalate_to: ['警种/席位', 'Desk or unit type'],
    note: ['说明', 'Note'],
    close: ['结案', 'Close'],
    disposition: ['处置结果', 'Disposition'],
    feedback: ['回访', 'Feedback'],
    fb_none: ['未回访', 'none'],
    satisfied: ['满意', 'satisfied'],
    unsatisfied: ['不满意', 'unsatisfied'],
    need_disposition: ['请填写处置结果', 'Enter the disposition'],
    desks_group: ['席位', 'Desks'],
    types_group: ['警种', 'Unit types'],
    callers: ['报警人', 'Callers'],
    add_note: ['记录', 'Add note'],
    note_text: ['处置记录（写入时间线）', 'A line for the timeline'],
    need_text: ['请填写内容', 'Enter the text'],
    hold_on: ['暂停自动派警', 'Hold dispatch'],
    hold_off: ['恢复自动派警', 'Resume dispatch'],
    hold_reason: ['暂停原因', 'Hold reason'],
    held_note: ['自动派警已暂停：由指挥员从推荐中派警', 'Dispatch held: an operator assigns from the ranking'],
    reopen: ['重新打开', 'Reopen'],
    reason: ['原因', 'Reason'],
    need_reason: ['请填写原因', 'Enter a reason'],
    update: ['修改警情…', 'Update…'],
    merge: ['合并…', 'Merge…'],
    split: ['拆分…', 'Split…'],
    merged_from: ['已并入', 'Merged in'],
    split_from: ['拆分自', 'Split from'],
    events_n: ['{n} 条警情事件', '{n} events'],
  });

  const D = {};
  B.detail = D;
  let detailFor = null; // the incident id whose forms are built

  /** Forget the built forms (language switch, another incident). */
  D.reset = function () {
    detailFor = null;
    delete $('detail-body').dataset.empty;
  };

  function callersHtml(inc) {
    const cs = inc.callers || [];
    if (!cs.length) return '';
    return '<div class="callers" data-testid="callers"><span class="dim">' + Q.esc(Q.t('callers')) + ':</span> ' + cs.map((c) => {
      const who = [c.name, c.phone].filter(Boolean).join(' ');
      return c.phone
        ? '<a class="tag" data-testid="caller" href="tel:' + Q.esc(c.phone) + '">' + Q.esc(who) + '</a>'
        : '<span class="tag" data-testid="caller">' + Q.esc(who || '?') + '</span>';
    }).join(' ') + '</div>';
  }

  /** Links to the incidents merged in, and to the one it was split from. */
  function linksHtml(inc) {
    const link = (id) => {
      const other = B.incidents.get(id);
      return '<a href="#" class="tag" data-goto="' + Q.esc(id) + '">' + Q.esc(other ? Q.kindName(other.kind) + ' · ' + B.addr(other) : id.slice(0, 8)) + '</a>';
    };
    let h = '';
    if ((inc.merged || []).length) h += '<div class="dim">' + Q.esc(Q.t('merged_from')) + ': ' + inc.merged.map(link).join(' ') + '</div>';
    if (inc.split_from) h += '<div class="dim">' + Q.esc(Q.t('split_from')) + ': ' + link(inc.split_from) + '</div>';
    return h;
  }

  function infoHtml(inc) {
    const tl = (inc.timeline || []).slice(-6).reverse()
      .map((e) => '<li>' + Q.esc(Q.hhmmss(new Date(Q.ms(e.at) || Date.now()))) + ' ' + Q.esc(e.what) + (e.by ? ' · ' + Q.esc(e.by) : '') + '</li>').join('');
    const p = Q.prio(inc.priority);
    return '<div><span class="prio p' + p + '" data-testid="detail-priority">P' + p + '</span><b data-testid="detail-kind">' + Q.esc(Q.kindName(inc.kind)) + '</b> · ' +
      '<span data-testid="detail-address">' + Q.esc(B.addr(inc)) + '</span> · ' + Q.esc(Q.t('score')) + ' ' + Q.esc(inc.score) + ' · ' +
      Q.esc(Q.pick(Q.STATUSES[inc.status], inc.status)) + B.list.badgesHtml(inc) + '</div>' +
      (inc.text ? '<div class="dim" data-testid="detail-text">' + Q.esc(inc.text) + '</div>' : '') +
      callersHtml(inc) + linksHtml(inc) +
      (inc.hold ? '<div class="notice" data-testid="held-note">' + Q.esc(Q.t('held_note')) + '</div>' : '') +
      '<div class="clocks">' + B.list.clocksHtml(inc, Q.now()) + '</div>' +
      (tl ? '<ol class="timeline" reversed data-testid="timeline">' + tl + '</ol>' : '');
  }

  function formsHtml() {
    const deskOpts = Object.keys(Q.DESKS).map((d) => '<option value="desk:' + d + '">' + Q.esc(Q.pick(Q.DESKS[d])) + '</option>').join('');
    const typeOpts = Object.keys(Q.UNIT_TYPES).map((u) => '<option value="type:' + u + '">' + Q.esc(Q.pick(Q.UNIT_TYPES[u])) + '</option>').join('');
    return B.assign.html() +
      '<div class="act tools"><button id="a-update" data-testid="open-update">' + Q.esc(Q.t('update')) + '</button>' +
      '<button id="a-merge" data-testid="open-merge">' + Q.esc(Q.t('merge')) + '</button>' +
      '<button id="a-split" data-testid="open-split">' + Q.esc(Q.t('split')) + '</button></div>' +
      '<div class="act"><label>' + Q.esc(Q.t('note')) + '</label><input type="text" id="a-note-text" data-testid="note-text" placeholder="' +
      Q.esc(Q.t('note_text')) + '"><button id="a-note-btn" data-testid="note">' + Q.esc(Q.t('add_note')) + '</button></div>' +
      '<div class="act"><label>' + Q.esc(Q.t('hold_reason')) + '</label><input type="text" id="a-hold-reason" data-testid="hold-reason">' +
      '<button id="a-hold" data-testid="hold"></button></div>' +
      '<div class="act hidden" id="a-reopen-row"><label>' + Q.esc(Q.t('reason')) + '</label><input type="text" id="a-reopen-reason" data-testid="reopen-reason">' +
      '<button id="a-reopen" data-testid="reopen">' + Q.esc(Q.t('reopen')) + '</button></div>' +
      '<div class="act"><label>' + Q.esc(Q.t('agency')) + '</label><input type="text" id="a-agency" data-testid="divert-to" value="12345">' +
      '<button id="a-divert" data-testid="divert">' + Q.esc(Q.t('divert')) + '</button></div>' +
      '<div class="act"><label>' + Q.esc(Q.t('escalate_to')) + '</label><select id="a-esc" data-testid="escalate-to"><optgroup label="' +
      Q.esc(Q.t('desks_group')) + '">' + deskOpts + '</optgroup><optgroup label="' + Q.esc(Q.t('types_group')) + '">' + typeOpts + '</optgroup></select>' +
      '<input type="text" id="a-note" data-testid="escalate-note" placeholder="' + Q.esc(Q.t('note')) + '">' +
      '<button id="a-escalate" data-testid="escalate">' + Q.esc(Q.t('escalate')) + '</button></div>' +
      '<div class="act"><label>' + Q.esc(Q.t('disposition')) + '</label><input type="text" id="a-disp" data-testid="disposition">' +
      '<select id="a-fb" data-testid="feedback"><option value="">' + Q.esc(Q.t('fb_none')) + '</option><option value="satisfied">' +
      Q.esc(Q.t('satisfied')) + '</option><option value="unsatisfied">' + Q.esc(Q.t('unsatisfied')) + '</option></select>' +
      '<button class="danger" id="a-close" data-testid="close">' + Q.esc(Q.t('close')) + '</button></div>';
  }

  function wire(inc) {
    const id = inc.id;
    const current = () => B.incidents.get(id);
    B.assign.wire(inc);
    $('a-update').onclick = () => B.forms.update(current());
    $('a-merge').onclick = () => B.forms.merge(current());
    $('a-split').onclick = () => B.forms.split(current());
    $('a-note-btn').onclick = async (ev) => {
      const text = $('a-note-text').value.trim();
      if (!text) { Q.toast('error', Q.t('add_note') + ': ' + Q.t('need_text')); return; }
      if (await B.send(ev.currentTarget, 'note', { incident: id, text })) $('a-note-text').value = '';
    };
    $('a-hold').onclick = async (ev) => {
      const fields = { incident: id, hold: !current().hold };
      const reason = $('a-hold-reason').value.trim();
      if (reason) fields.reason = reason;
      if (await B.send(ev.currentTarget, 'hold', fields)) $('a-hold-reason').value = '';
    };
    $('a-reopen').onclick = (ev) => {
      const reason = $('a-reopen-reason').value.trim();
      if (!reason) { Q.toast('error', Q.t('reopen') + ': ' + Q.t('need_reason')); return; }
      B.send(ev.currentTarget, 'reopen', { incident: id, reason });
    };
    $('a-divert').onclick = (ev) => {
      B.send(ev.currentTarget, 'divert', { incident: id, to: $('a-agency').value.trim() || '12345' });
    };
    $('a-escalate').onclick = (ev) => {
      const [what, v] = $('a-esc').value.split(':');
      const fields = { incident: id };
      if (what === 'desk') fields.desk = v; else fields.unit_type = v;
      const note = $('a-note').value.trim();
      if (note) fields.note = note;
      B.send(ev.currentTarget, 'escalate', fields);
    };
    $('a-close').onclick = (ev) => {
      const disposition = $('a-disp').value.trim();
      if (!disposition) { Q.toast('error', Q.t('close') + ': ' + Q.t('need_disposition')); $('a-disp').focus(); return; }
      const fields = { incident: id, disposition };
      if ($('a-fb').value) fields.feedback = $('a-fb').value;
      B.send(ev.currentTarget, 'close', fields);
    };
  }

  function render() {
    const body = $('detail-body');
    const inc = B.selected ? B.incidents.get(B.selected) : null;
    if (!inc || !B.visible(inc)) {
      if (detailFor !== null || !body.dataset.empty) {
        body.innerHTML = '<div class="dim">' + Q.esc(Q.t('select_incident')) + '</div>';
        body.dataset.empty = '1';
        detailFor = null;
      }
      if (inc && !B.visible(inc)) B.selected = null;
      return;
    }
    if (detailFor !== inc.id) {
      detailFor = inc.id;
      delete body.dataset.empty;
      body.innerHTML = '<div id="detail-info"></div>' + formsHtml();
      wire(inc);
    }
    const info = $('detail-info');
    info.dataset.id = inc.id;
    info.dataset.version = inc.version;
    info.innerHTML = infoHtml(inc);
    const hold = $('a-hold');
    hold.textContent = Q.t(inc.hold ? 'hold_off' : 'hold_on');
    hold.dataset.hold = inc.hold ? '1' : '0';
    $('a-reopen-row').classList.toggle('hidden', inc.status !== 'resolved');
    $('a-split').disabled = (inc.events || []).length < 2;
    B.assign.refresh(inc);
  }

  D.wire = function () {
    // Links to a merged or split incident select it (or name it when gone).
    $('detail-body').addEventListener('click', (ev) => {
      const a = ev.target.closest('[data-goto]');
      if (!a) return;
      ev.preventDefault();
      const other = B.incidents.get(a.dataset.goto);
      if (other && B.visible(other)) B.select(other.id);
      else Q.toast('info', Q.t('incident') + ' ' + a.dataset.goto + ': ' + Q.pick(Q.STATUSES[(other || {}).status], (other || {}).status || '?'));
    });
  };

  B.onRender(render);
})();
