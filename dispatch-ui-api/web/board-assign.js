/*
 * qzx operator board: the assign section of the selected incident. It lists
 * the router's ranking of units (the incident's `candidates`, written while
 * it is held or waits for an operator; GET /api/v1/incidents/{id}/candidates
 * serves the same list, so the pushed incident is enough) with each unit's
 * predicted travel time and whether it arrives in time; a unit busy on a
 * task of lower priority is offered for pre-emption. Only when the router
 * has no ranking does it fall back to the available units sorted by
 * straight-line distance from the browser. Stale units (not heard
 * from for `dispatch.stale_after_s`) are greyed and cannot be picked.
 *
 * It must never rank units itself while the router has a ranking, and
 * never pre-empt a unit's task without the operator ticking "pre-empt".
 */
(function () {
  'use strict';
  const Q = window.QZX;
  const B = Q.board;
  const $ = (id) => document.getElementById(id);

  Q.addLabels({
    assign: ['派警', 'Assign'],
    assign_title: ['派警/改派', 'Assign a unit'],
    rank_router: ['路由推荐（按预计到达时间）', "Router's ranking (by predicted travel time)"],
    rank_distance: ['无路由推荐：按直线距离排列的待命警力', 'No ranking from the router: available units by straight-line distance'],
    in_time: ['可按时到场', 'in time'],
    late: ['无法按时到场', 'late'],
    eta: ['预计', 'ETA'],
    on_task: ['执行P{p}任务中', 'on a P{p} task'],
    mode_replace: ['改派（替换主办警力）', 'Replace (becomes primary)'],
    mode_add: ['增派（增援，不撤原警力）', 'Add (reinforce, keep the others)'],
    preempt: ['抢占：撤销其当前任务', "Pre-empt: cancel its current task"],
    need_preempt: ['该警力正在执行其他任务，请勾选“抢占”', 'That unit is on another task: tick pre-empt'],
    no_available: ['无待命警力', 'no available unit'],
    pick_unit: ['请选择警力', 'Choose a unit'],
  });

  const A = {};
  B.assign = A;
  // The unit the operator picked; until they pick, the choice follows the
  // ranking's best (the first answer may be the distance fallback).
  let chosen = null;

  A.html = function () {
    return '<div class="assign" data-testid="assign-box">' +
      '<div class="act"><b>' + Q.esc(Q.t('assign_title')) + '</b><span class="dim" id="a-source" data-testid="assign-source"></span>' +
      '</div>' +
      '<div id="a-list" class="cands" data-testid="assign-list"></div>' +
      '<div class="act"><select id="a-mode" data-testid="assign-mode"><option value="replace">' + Q.esc(Q.t('mode_replace')) +
      '</option><option value="add">' + Q.esc(Q.t('mode_add')) + '</option></select>' +
      '<label class="chk"><input type="checkbox" id="a-preempt" data-testid="assign-preempt" disabled> ' + Q.esc(Q.t('preempt')) + '</label>' +
      '<span class="spacer"></span><button class="primary" id="a-assign" data-testid="assign">' + Q.esc(Q.t('assign')) + '</button></div></div>';
  };

  /** The ranking to show: the router's if it has one, else by distance. */
  function ranking(inc) {
    if ((inc.candidates || []).length) return { source: 'router', list: inc.candidates };
    const loc = inc.location;
    const list = [...B.units.values()].filter((u) => u.status === 'available').map((u) => ({
      unit: u.id, type: u.type,
      distance_m: loc && u.lat != null && u.lon != null ? Q.haversineM(loc.lat, loc.lon, u.lat, u.lon) : null,
    })).sort((a, b) => (a.distance_m ?? 1e12) - (b.distance_m ?? 1e12));
    return { source: 'distance', list };
  }

  function rowHtml(c) {
    const stale = B.isStale(B.units.get(c.unit));
    const bits = [Q.pick(Q.UNIT_TYPES[c.type], c.type || '')];
    if (c.eta_s != null) bits.push(Q.t('eta') + ' ' + Q.mmss(c.eta_s * 1000));
    bits.push(Q.fmtDistance(c.distance_m));
    let mark = '';
    if (c.in_time === true) mark = '<span class="tag ok" data-testid="in-time">✓ ' + Q.esc(Q.t('in_time')) + '</span>';
    if (c.in_time === false) mark = '<span class="tag late" data-testid="late">⚠ ' + Q.esc(Q.t('late')) + '</span>';
    const busy = c.task ? '<span class="tag preempt" data-testid="on-task">' + Q.esc(Q.t('on_task', { p: c.task_priority || '?' })) + '</span>' : '';
    return '<label class="cand' + (stale ? ' stale' : '') + '" data-testid="candidate" data-unit="' + Q.esc(c.unit) + '"' +
      (c.in_time != null ? ' data-in-time="' + (c.in_time ? 1 : 0) + '"' : '') + (c.task ? ' data-task="' + Q.esc(c.task) + '"' : '') +
      (stale ? ' data-stale="1"' : '') + '>' +
      '<input type="radio" name="a-unit" value="' + Q.esc(c.unit) + '"' + (c.task ? ' data-task="' + Q.esc(c.task) + '"' : '') + (stale ? ' disabled' : '') + '>' +
      '<b>' + Q.esc(B.unitName(c.unit)) + '</b> <span class="dim">' + Q.esc(bits.join(' · ')) + '</span> ' + mark + busy +
      (stale ? ' <span class="tag stale" data-testid="badge-stale">' + Q.esc(Q.t('badge_stale')) + '</span>' : '') + '</label>';
  }

  /** Redraws the list for `inc`, keeping the operator's own choice. */
  A.refresh = function (inc) {
    const box = $('a-list');
    if (!box) return;
    const { source, list } = ranking(inc);
    const src = $('a-source');
    src.dataset.source = source;
    src.textContent = Q.t(source === 'router' ? 'rank_router' : 'rank_distance');
    // Stale units last: they stay visible (the operator should know why the
    // nearest unit is not offered) but cannot be picked.
    const rows = list.filter((c) => !B.isStale(B.units.get(c.unit))).concat(list.filter((c) => B.isStale(B.units.get(c.unit))));
    const html = rows.length ? rows.map(rowHtml).join('') : '<div class="dim" data-testid="no-candidate">' + Q.esc(Q.t('no_available')) + '</div>';
    if (box.dataset.html === html) return;
    box.innerHTML = html;
    box.dataset.html = html;
    const radios = [...box.querySelectorAll('input[name=a-unit]')];
    const again = radios.find((r) => r.value === chosen && !r.disabled) || radios.find((r) => !r.disabled);
    if (again) again.checked = true;
    syncPreempt();
  };

  function syncPreempt() {
    const r = document.querySelector('input[name=a-unit]:checked');
    const box = $('a-preempt');
    box.disabled = !(r && r.dataset.task);
    if (box.disabled) box.checked = false;
  }

  /** Called when the form is built for incident `inc`. */
  A.wire = function (inc) {
    // With a unit still on it, the safe default adds; replacing cancels
    // the primary's task.
    const open = (inc.units || []).some((u) => !['cleared', 'cancelled'].includes(u.status));
    $('a-mode').value = open ? 'add' : 'replace';
    chosen = null;
    $('a-list').addEventListener('change', (ev) => {
      if (ev.target.name === 'a-unit') chosen = ev.target.value;
      syncPreempt();
    });
    $('a-assign').onclick = (ev) => {
      const r = document.querySelector('input[name=a-unit]:checked');
      if (!r) { Q.toast('error', Q.t('assign') + ': ' + Q.t('pick_unit')); return; }
      const fields = { incident: inc.id, unit: r.value, mode: $('a-mode').value };
      if (r.dataset.task) {
        if (!$('a-preempt').checked) { Q.toast('error', Q.t('assign') + ': ' + Q.t('need_preempt')); return; }
        fields.preempt = true;
      }
      B.send(ev.currentTarget, 'assign', fields);
    };
  };
})();
