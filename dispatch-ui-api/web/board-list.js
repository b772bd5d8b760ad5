/*
 * qzx operator board: the list of open incidents (priority, kind, badges,
 * address, desks, units, the three 1-3-5 clocks counting every second),
 * the desk filter, and the KPI strip.
 *
 * It draws what `QZX.board` holds. It must never change that state (but
 * for the desk filter, the operator's own choice) and never send a command.
 */
(function () {
  'use strict';
  const Q = window.QZX;
  const B = Q.board;
  const $ = (id) => document.getElementById(id);

  Q.addLabels({
    open_incidents: ['未结警情', 'Open incidents'],
    all_clear: ['警情清零：没有未结警情', 'All clear: no open incident'],
    kpi_open: ['未结警情', 'Open incidents'],
    kpi_breaches: ['近1小时超时', 'Breaches, last hour'],
    kpi_hotspots: ['重复警情热点', 'Repeat hotspots'],
    kpi_coverage: ['1-3-5 覆盖', '1-3-5 coverage'],
    met_share: ['达标率', 'met'],
    no_unit: ['未派警', 'no unit'],
    repeat: ['重复', 'repeat'],
    all_desks: ['全部席位', 'All desks'],
    badge_held: ['暂停自动派警', 'held'],
    badge_merged: ['已并入 {n} 起', '{n} merged in'],
    badge_split: ['拆分而来', 'split off'],
    badge_stale: ['失联', 'stale'],
    callers_n: ['{n} 位报警人', '{n} callers'],
    // Flags: what ingest corrected in a call it accepted (issue #20).
    flag_unlocated: ['待定位', 'needs location'],
    flag_clock_skew: ['时间已校正', 'clock corrected'],
    flag_truncated: ['内容已截断', 'truncated'],
    flag_bad_coordinates: ['坐标无效', 'bad coordinates'],
    flag_malformed: ['字段有误', 'malformed field'],
  });

  // A desk seat may watch only its desk's incidents (client-side: the
  // board channel still carries all of the operator's jurisdictions).
  B.deskFilter = Q.param('desk') || (function () { try { return sessionStorage.getItem('qzx.board.desk') || ''; } catch (_) { return ''; } })();

  const L = {};
  B.list = L;

  L.renderDeskFilter = function () {
    const sel = $('desk-filter');
    sel.innerHTML = '<option value="">' + Q.esc(Q.t('all_desks')) + '</option>' +
      Object.keys(Q.DESKS).map((d) => '<option value="' + d + '">' + Q.esc(Q.pick(Q.DESKS[d])) + '</option>').join('');
    sel.value = Q.DESKS[B.deskFilter] ? B.deskFilter : '';
  };

  L.wire = function () {
    $('desk-filter').onchange = (ev) => {
      B.deskFilter = ev.target.value;
      try { sessionStorage.setItem('qzx.board.desk', B.deskFilter); } catch (_) { /* private mode */ }
      B.changed();
    };
  };

  /** The "needs location" badge of an unplaced call, and a small label per
   * other flag; a flag this page does not know is shown by its name. */
  L.flagsHtml = function (inc) {
    return (inc.flags || []).map((f) => {
      const label = Q.esc(Q.t('flag_' + f) === 'flag_' + f ? f : Q.t('flag_' + f));
      if (f === 'unlocated' && !inc.location) {
        return ' <span class="tag unlocated" data-testid="needs-location">' + label + '</span>';
      }
      if (f === 'unlocated') return '';
      return ' <span class="tag flag" data-testid="flag" data-flag="' + Q.esc(f) + '">' + label + '</span>';
    }).join('');
  };

  /** Held, merged-in, split-off: what an operator did to the incident's shape. */
  L.badgesHtml = function (inc) {
    let h = '';
    if (inc.repeat_count > 1) h += ' <span class="tag repeat" data-testid="repeat">' + Q.esc(Q.t('repeat')) + ' ×' + inc.repeat_count + '</span>';
    if (inc.hold) h += ' <span class="tag held" data-testid="badge-held">' + Q.esc(Q.t('badge_held')) + '</span>';
    if ((inc.merged || []).length) {
      h += ' <span class="tag merged" data-testid="badge-merged">' + Q.esc(Q.t('badge_merged', { n: inc.merged.length })) + '</span>';
    }
    if (inc.split_from) h += ' <span class="tag" data-testid="badge-split">' + Q.esc(Q.t('badge_split')) + '</span>';
    return h + L.flagsHtml(inc);
  };

  L.staleHtml = (unitId) => (B.isStale(B.units.get(unitId))
    ? ' <span class="tag stale" data-testid="badge-stale">' + Q.esc(Q.t('badge_stale')) + '</span>' : '');

  function clocksHtml(inc, now) {
    return ['respond', 'arrive', 'reinforce'].map((s) => {
      const c = Q.clock(s, inc.deadlines, inc.sla, inc.created_at, now);
      return '<div class="clk ' + c.cls + '" data-stage="' + s + '" data-testid="clock-' + s + '" data-state="' + c.cls + '">' +
        '<div class="n">' + Q.esc(Q.pick(Q.STAGES[s])) + '</div><div class="c">' + Q.esc(c.text) + '</div></div>';
    }).join('');
  }
  L.clocksHtml = clocksHtml;

  function renderList() {
    const box = $('incidents');
    const rows = B.sorted();
    $('inc-count').textContent = rows.length;
    if (!rows.length) {
      box.innerHTML = '<div class="empty" data-testid="all-clear">' + Q.esc(Q.t('all_clear')) + '</div>';
      return;
    }
    const now = Q.now();
    box.innerHTML = rows.map((inc) => {
      const p = Q.prio(inc.priority);
      const us = (inc.units || []).map((u) => {
        const stale = B.isStale(B.units.get(u.unit));
        return '<span class="tag' + (stale ? ' stale' : '') + '" data-testid="inc-unit" data-unit="' + Q.esc(u.unit) + '" data-status="' + Q.esc(u.status) +
          '"' + (stale ? ' data-stale="1"' : '') + '>' + Q.esc(B.unitName(u.unit)) + ' · ' + Q.esc(Q.pick(Q.STATUSES[u.status], u.status)) +
          (stale ? ' · ' + Q.esc(Q.t('badge_stale')) : '') + '</span>';
      }).join('') || '<span class="tag dim">' + Q.esc(Q.t('no_unit')) + '</span>';
      const desks = (inc.desks || []).map((d) => Q.pick(Q.DESKS[d], d)).join('、');
      return '<div class="inc p' + p + (inc.id === B.selected ? ' selected' : '') + '" tabindex="0" role="button" data-testid="incident" data-id="' + Q.esc(inc.id) +
        '" data-status="' + Q.esc(inc.status) + '" data-kind="' + Q.esc(inc.kind) + '"' + (inc.hold ? ' data-hold="1"' : '') + '>' +
        '<div class="bar"></div>' +
        '<div class="title"><span class="prio p' + p + '">P' + p + '</span>' + Q.esc(Q.kindName(inc.kind)) +
        ' <span class="dim" style="font-weight:400;font-size:13px">' + Q.esc(Q.pick(Q.STATUSES[inc.status], inc.status)) + '</span>' +
        L.badgesHtml(inc) + '</div>' +
        '<div class="clocks">' + clocksHtml(inc, now) + '</div>' +
        '<div class="meta"><b data-testid="address">' + Q.esc(B.addr(inc)) + '</b> · ' + Q.esc(B.jurName(inc.jurisdiction)) +
        (desks ? ' · ' + Q.esc(desks) : '') + ' · ' + Q.esc(Q.hhmmss(new Date(Q.ms(inc.created_at) || now))) +
        ((inc.callers || []).length > 1 ? ' · ' + Q.esc(Q.t('callers_n', { n: inc.callers.length })) : '') + '</div>' +
        '<div class="units">' + us + '</div>' +
        '</div>';
    }).join('');
  }

  /** Every second: the clocks of the rows and of the detail panel. */
  L.tickClocks = function () {
    const now = Q.now();
    document.querySelectorAll('[data-testid=incident], #detail-info').forEach((row) => {
      const inc = B.incidents.get(row.dataset.id);
      if (!inc) return;
      row.querySelectorAll('.clk').forEach((el) => {
        const c = Q.clock(el.dataset.stage, inc.deadlines, inc.sla, inc.created_at, now);
        el.className = 'clk ' + c.cls;
        el.dataset.state = c.cls;
        el.querySelector('.c').textContent = c.text;
      });
    });
  };

  function renderKpis() {
    const s = B.stats;
    const open = B.sorted().length;
    const fmtS = (v) => (v == null ? '—' : v < 100 ? Math.round(v) + 's' : Q.mmss(v * 1000));
    const stageKpi = (st) => {
      const x = s && s.stages[st];
      const share = x && x.share != null ? Math.round(x.share * 100) + '%' : '—';
      return '<div class="kpi" data-testid="kpi-' + st + '"><div class="k">' + Q.esc(Q.pick(Q.STAGES[st])) + ' ' + Q.esc(Q.t('met_share')) +
        '</div><div class="v">' + share + '</div><div class="s">p50 ' + fmtS(x && x.p50) + ' · p90 ' + fmtS(x && x.p90) + '</div></div>';
    };
    const hot = s && s.hot.length
      ? '<ol>' + s.hot.map((h) => '<li>' + Q.esc(hotspotName(h)) + (h.count != null ? ' ×' + h.count : '') + '</li>').join('') + '</ol>'
      : '<div class="v">—</div>';
    const cov = coverageShare();
    const available = [...B.units.values()].filter((u) => u.status === 'available' && !B.isStale(u)).length;
    $('kpis').innerHTML =
      '<div class="kpi" data-testid="kpi-open"><div class="k">' + Q.esc(Q.t('kpi_open')) + '</div><div class="v">' + open + '</div></div>' +
      stageKpi('respond') + stageKpi('arrive') + stageKpi('reinforce') +
      '<div class="kpi" data-testid="kpi-breaches"><div class="k">' + Q.esc(Q.t('kpi_breaches')) + '</div><div class="v">' +
      (s ? s.breaches : '—') + '</div></div>' +
      '<div class="kpi"><div class="k">' + Q.esc(Q.t('kpi_coverage')) + '</div><div class="v" style="font-size:15px">' +
      (cov ? cov.map((x) => Math.round(x * 100) + '%').join(' / ') : '—') + '</div><div class="s">1 / 3 / 5 min · ' +
      Q.esc(Q.pick(Q.STATUSES.available)) + ' <span data-testid="kpi-available">' + available + '</span></div></div>' +
      '<div class="kpi hot" data-testid="kpi-hotspots"><div class="k">' + Q.esc(Q.t('kpi_hotspots')) + '</div>' + hot + '</div>';
  }

  /** A hotspot by the address of an incident in its cell, else its station and position. */
  function hotspotName(h) {
    const inc = h.cell && [...B.incidents.values()].find((i) => i.cell === h.cell && i.location && i.location.address);
    if (inc) return inc.location.address;
    if (h.at) {
      const j = B.jurisdictions.find((x) => x.area.length >= 3 && inside(h.at, x.area));
      return (j ? (Q.lang === 'en' ? j.name_en : j.name) + ' ' : '') + h.at[0].toFixed(4) + ', ' + h.at[1].toFixed(4);
    }
    return h.cell || '?';
  }

  function inside(p, poly) {
    let c = false;
    for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
      const [yi, xi] = poly[i];
      const [yj, xj] = poly[j];
      if ((yi > p[0]) !== (yj > p[0]) && p[1] < ((xj - xi) * (p[0] - yi)) / (yj - yi) + xi) c = !c;
    }
    return c;
  }

  function coverageShare() {
    if (!B.coverage.length) return null;
    const n = B.coverage.length;
    return [1, 3, 5].map((lv) => B.coverage.filter((c) => c.level && c.level <= lv).length / n);
  }

  B.onRender(renderList);
  B.onRender(renderKpis);
})();
