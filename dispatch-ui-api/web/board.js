/*
 * qzx operator board (GET /).
 *
 * Shows the open incidents of the operator's jurisdictions sorted by
 * priority then age, with their 1-3-5 clocks counting down every second; a
 * map drawn in SVG from the api's jurisdictions, coverage, units and
 * incidents (no tile server); the KPI strip from /api/v1/stats; and the
 * operator's commands (assign, divert, escalate, close) over the WebSocket.
 *
 * State is kept keyed by id and replaced only by a newer `version`, so a
 * replayed or reordered push never rolls an incident back. This page must
 * never change an incident by itself: it shows what the router published
 * and sends commands; every error reply is shown to the operator.
 */
(function () {
  'use strict';
  const Q = window.QZX;

  Q.addLabels({
    board_title: ['指挥大屏', 'Operator board'],
    open_incidents: ['未结警情', 'Open incidents'],
    map: ['态势图', 'Map'],
    actions: ['警情处置', 'Incident actions'],
    select_incident: ['点击左侧警情进行派警、分流、吹哨或结案', 'Select an incident to assign, divert, escalate or close it'],
    all_clear: ['警情清零：没有未结警情', 'All clear: no open incident'],
    kpi_open: ['未结警情', 'Open incidents'],
    kpi_breaches: ['近1小时超时', 'Breaches, last hour'],
    kpi_hotspots: ['重复警情热点', 'Repeat hotspots'],
    kpi_coverage: ['1-3-5 覆盖', '1-3-5 coverage'],
    met_share: ['达标率', 'met'],
    no_unit: ['未派警', 'no unit'],
    repeat: ['重复', 'repeat'],
    score: ['评分', 'score'],
    assign: ['派警/改派', 'Assign'],
    assign_unit: ['派警单元', 'Unit'],
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
    no_available: ['无待命警力', 'no available unit'],
    need_disposition: ['请填写处置结果', 'Enter the disposition'],
    timeline: ['时间线', 'Timeline'],
    desks_group: ['席位', 'Desks'],
    types_group: ['警种', 'Unit types'],
    escalation: ['超时/吹哨', 'Escalation'],
    cov_1: ['1分钟可达', '≤1 min'],
    cov_3: ['3分钟可达', '≤3 min'],
    cov_5: ['5分钟可达', '≤5 min'],
    cov_none: ['5分钟外', '>5 min'],
    incident: ['警情', 'incident'],
    all_desks: ['全部席位', 'All desks'],
    load_failed: ['加载失败', 'Loading failed'],
    // Flags: what ingest corrected in a call it accepted (issue #20).
    flag_unlocated: ['待定位', 'needs location'],
    flag_clock_skew: ['时间已校正', 'clock corrected'],
    flag_truncated: ['内容已截断', 'truncated'],
    flag_bad_coordinates: ['坐标无效', 'bad coordinates'],
    flag_malformed: ['字段有误', 'malformed field'],
  });

  let token = null;
  let me = null;
  let conn = null;
  const incidents = new Map(); // id -> incident (closed ones kept as tombstones)
  const units = new Map(); // id -> unit
  let jurisdictions = []; // [{id, name, name_en, centre:[lat,lon]|null, area:[[lat,lon]]}]
  let coverage = []; // [{id, boundary:[[lat,lon]]|null, centre:[lat,lon]|null, level:1|3|5|0}]
  let stats = null;
  let selected = null;
  let timers = [];

  const $ = (id) => document.getElementById(id);

  // ---- adapters: the only places that know the REST JSON shapes ----------

  function list(raw, ...keys) {
    if (Array.isArray(raw)) return raw;
    if (raw && typeof raw === 'object') {
      for (const k of keys) if (Array.isArray(raw[k])) return raw[k];
    }
    return [];
  }

  function latlon(v, obj) {
    if (Array.isArray(v) && v.length >= 2 && isFinite(v[0]) && isFinite(v[1])) return [Number(v[0]), Number(v[1])];
    if (v && typeof v === 'object' && isFinite(v.lat) && isFinite(v.lon)) return [Number(v.lat), Number(v.lon)];
    if (obj && isFinite(obj.lat) && isFinite(obj.lon)) return [Number(obj.lat), Number(obj.lon)];
    return null;
  }

  function ring(v) {
    if (!Array.isArray(v)) return [];
    // GeoJSON-like nesting [[[...]]]: take the outer ring.
    if (v.length && Array.isArray(v[0]) && Array.isArray(v[0][0])) v = v[0];
    return v.map((p) => latlon(p)).filter(Boolean);
  }

  /*
   * GET /api/v1/jurisdictions. The api writes {"jurisdictions": [{id, name,
   * name_en, centre: {lat, lon}, area_type, area: [{lat, lon}, ...]}]}; also
   * tolerated: a bare array, [lat, lon] pairs, "polygon"/"boundary" for
   * "area". The fallback station (the city command centre) has an empty
   * area and is not drawn.
   */
  function adaptJurisdictions(raw) {
    return list(raw, 'jurisdictions', 'items').map((j) => ({
      id: String(j.id),
      name: j.name || j.id,
      name_en: j.name_en || j.name || j.id,
      centre: latlon(j.centre || j.center, j),
      area: ring(j.area || j.polygon || j.boundary),
    }));
  }

  /*
   * GET /api/v1/coverage. As dispatch-ui-api's stats.rs writes it today:
   * {"cells": [{"cell", "lat", "lon", "jurisdiction", "best_s" (null when
   * no unit is available), "within_60s", "within_180s", "within_300s"}],
   * "share_60s", ...}. Also tolerated: a bare array; "id" for "cell"; a
   * "boundary" [[lat, lon]...] (drawn as is; without one a disc at the
   * centre, see renderMap); "centre" as [lat, lon] or
   * {lat, lon}; seconds as "within_s"/"reach_s"/"eta_s"; minutes as
   * "minutes"; booleans whose key names 60/180/300 s or 1/3/5 min, possibly
   * nested under "reachable"/"within"/"reach"/"covered". The shares are
   * computed here from the cells.
   */
  function adaptCoverage(raw) {
    return list(raw, 'cells', 'items').map((c) => {
      let level = 0;
      const secs = firstNum(c, ['best_s', 'within_s', 'reach_s', 'eta_s', 'travel_s', 'seconds']);
      const mins = firstNum(c, ['minutes', 'within_min', 'level']);
      if (secs != null) level = secs <= 60 ? 1 : secs <= 180 ? 3 : secs <= 300 ? 5 : 0;
      else if (mins != null) level = mins <= 1 ? 1 : mins <= 3 ? 3 : mins <= 5 ? 5 : 0;
      else {
        const flags = Object.assign({}, c, objOr(c.reachable), objOr(c.within), objOr(c.reach), objOr(c.covered));
        const on = (re) => Object.keys(flags).some((k) => flags[k] === true && re.test(k));
        if (on(/(^|\D)(60|1)(s|m|min|_s|_min)?$|(^|\D)60(\D|$)|1_?min/)) level = 1;
        else if (on(/(^|\D)(180|3)(s|m|min|_s|_min)?$|(^|\D)180(\D|$)|3_?min/)) level = 3;
        else if (on(/(^|\D)(300|5)(s|m|min|_s|_min)?$|(^|\D)300(\D|$)|5_?min/)) level = 5;
      }
      return {
        id: String(c.cell || c.id || ''),
        boundary: ring(c.boundary || c.polygon),
        centre: latlon(c.centre || c.center, c),
        level,
      };
    });
  }

  function objOr(v) {
    return v && typeof v === 'object' && !Array.isArray(v) ? v : {};
  }

  function firstNum(o, keys) {
    for (const k of keys) if (typeof o[k] === 'number' && isFinite(o[k])) return o[k];
    return null;
  }

  /*
   * GET /api/v1/stats?window=1h. dispatch-ui-api's stats.rs today writes
   * {"window_s", "incidents", "by_status", "by_priority", "stages":
   * {"respond": {"met", "breached", "pending", "n/a", "share_met" (0..1 or
   * null), "p50_s", "p90_s", "samples"}, ...}, "hotspots": [{"cell",
   * "count", "lat", "lon"}]}: breaches in the window are the stages'
   * "breached" summed; a hotspot is named by an open incident's address in
   * its cell. Also tolerated: per stage an object under
   * "stages" (or "sla", or the stage name at the top level) with "met",
   * "breached", "pending", a share met ("share_met" / "met_share" /
   * "share", as 0..1 or a percentage) and "p50_s"/"p90_s" (or "p50"/"p90",
   * seconds); breaches in the window as "breaches_last_hour", "breaches"
   * or "breached" (a number, or an object per stage to be summed);
   * hotspots as "hotspots" / "repeat_hotspots": [{address|cell|name, kind,
   * count|repeat_count|repeats}]. Anything missing shows as "—".
   */
  function adaptStats(raw) {
    if (!raw || typeof raw !== 'object') return null;
    const stageSrc = objOr(raw.stages || raw.sla || raw.stage);
    const stages = {};
    let breachSum = 0;
    for (const s of ['respond', 'arrive', 'reinforce']) {
      const v = objOr(stageSrc[s] || raw[s]);
      let share = firstNum(v, ['share_met', 'met_share', 'share', 'met_ratio']);
      if (share == null && typeof v.met === 'number') {
        const total = (v.met || 0) + (v.breached || 0);
        share = total ? v.met / total : null;
      }
      if (share != null && share > 1) share /= 100;
      const pct = objOr(v.percentiles || v.response_s);
      stages[s] = {
        share,
        p50: firstNum(v, ['p50_s', 'p50', 'median_s']) ?? firstNum(pct, ['p50', 'p50_s']),
        p90: firstNum(v, ['p90_s', 'p90']) ?? firstNum(pct, ['p90', 'p90_s']),
        met: typeof v.met === 'number' ? v.met : null,
        breached: typeof v.breached === 'number' ? v.breached : null,
      };
      if (typeof v.breached === 'number') breachSum += v.breached;
    }
    let breaches = null;
    for (const k of ['breaches_last_hour', 'breaches_1h', 'breaches', 'breached']) {
      const b = raw[k];
      if (typeof b === 'number') { breaches = b; break; }
      if (b && typeof b === 'object') { breaches = Object.values(b).reduce((a, x) => a + (Number(x) || 0), 0); break; }
    }
    if (breaches == null && Object.values(stages).some((s) => s.breached != null)) breaches = breachSum;
    const hot = list(raw.hotspots || raw.repeat_hotspots || raw.repeats, 'items', 'cells').slice(0, 3).map((h) => ({
      where: h.address || h.name || null,
      cell: h.cell || null,
      at: latlon(h.centre, h),
      kind: h.kind || null,
      count: firstNum(h, ['count', 'repeat_count', 'repeats', 'incidents']),
    }));
    const open = firstNum(raw, ['open', 'open_incidents']) ?? firstNum(objOr(raw.counts), ['open']);
    return { stages, breaches, hot, open };
  }

  // ---- data in ------------------------------------------------------------

  function visible(inc) {
    if (!inc || inc.status === 'closed' || inc.status === 'diverted') return false;
    const js = (me && me.jurisdictions) || [];
    if (!me || me.role === 'admin' || js.includes('*')) return true;
    return js.includes(inc.jurisdiction);
  }

  function upsertIncident(inc) {
    if (!inc || !inc.id) return;
    const old = incidents.get(inc.id);
    if (old && Number(old.version || 0) > Number(inc.version || 0)) return;
    incidents.set(inc.id, inc);
    if (!visible(inc)) {
      // Closed or diverted: its alerts are settled.
      document.querySelectorAll('.toast[data-incident]').forEach((el) => { if (el.dataset.incident === inc.id) el.remove(); });
    }
    schedule();
  }

  function upsertUnit(u) {
    if (!u || !u.id) return;
    const old = units.get(u.id);
    // Units carry no version: the report time orders them.
    if (old && Q.ms(old.at) != null && Q.ms(u.at) != null && Q.ms(old.at) > Q.ms(u.at)) return;
    units.set(u.id, Object.assign({}, old || {}, u));
    schedule();
  }

  function onPush(msg) {
    const d = msg.data;
    switch (msg.kind) {
      case 'incident': upsertIncident(d); break;
      case 'unit': upsertUnit(d); break;
      case 'escalation': onEscalation(d); break;
      default: break; // events and tasks: the incident snapshot carries what the board shows
    }
  }

  /*
   * Escalations (bus::model::Escalation: kind sla_breach | escalate |
   * redispatch | rejected | no_unit | reconciled, stage, desks, unit_type, message, by).
   * A command the router rejected after the api accepted it arrives here
   * (`by` is who sent it), so a rejection of ours and `no_unit` are errors
   * the operator must see.
   */
  function onEscalation(d, retried) {
    if (!d) return;
    let inc = incidents.get(d.incident);
    // Escalations and incidents come from different topics: give the
    // incident a moment to arrive so the alert can name it.
    if (!inc && !retried) { setTimeout(() => onEscalation(d, true), 1000); return; }
    // An alert about an incident closed or diverted since is settled; a
    // rejected command never is (the operator must learn it did not apply).
    if (inc && !visible(inc) && d.kind !== 'rejected') return;
    if (msg_seen.has(d.id)) return; // replayed on resume
    if (d.id) { msg_seen.add(d.id); if (msg_seen.size > 500) msg_seen.delete(msg_seen.values().next().value); }
    const where = inc ? Q.kindName(inc.kind) + ' · ' + addr(inc) : d.incident || '';
    const label = Q.pick(ESC_KINDS[d.kind], d.kind || Q.t('escalation'));
    const extra = [d.stage && Q.pick(Q.STAGES[d.stage], d.stage), (d.desks || []).map((x) => Q.pick(Q.DESKS[x], x)).join('、'),
      d.unit_type && Q.pick(Q.UNIT_TYPES[d.unit_type], d.unit_type), d.message || d.note].filter(Boolean).join(' · ');
    // The router retries what it cannot do (no unit) and says so each
    // time: tell the operator once per incident, kind and stage a minute.
    const key = [d.incident, d.kind, d.stage].join('|');
    const last = lastShown.get(key) || 0;
    if (d.kind !== 'rejected' && Date.now() - last < 60000) return;
    lastShown.set(key, Date.now());
    if (lastShown.size > 500) lastShown.delete(lastShown.keys().next().value);
    // A rejection of this operator's own command is an error they must
    // see; someone else's (a unit's late ack) is only news.
    const mine = d.kind === 'rejected' && me && d.by === me.sub;
    const severe = mine || d.kind === 'no_unit';
    const el = Q.toast(severe ? 'error' : 'info', label + ': ' + where + (extra ? ' — ' + extra : ''));
    if (d.incident && d.kind !== 'rejected') el.dataset.incident = d.incident;
  }
  const msg_seen = new Set();
  const lastShown = new Map();
  const ESC_KINDS = {
    sla_breach: ['超时告警', 'SLA breach'],
    escalate: ['吹哨报到', 'Escalation'],
    redispatch: ['改派', 'Re-dispatched'],
    rejected: ['指令被拒绝', 'Command rejected'],
    no_unit: ['无可派警力', 'No unit available'],
    reconciled: ['警力状态已纠正', 'Unit freed (reconciled)'],
  };

  function onSnapshot(msg) {
    for (const i of list(msg.incidents)) upsertIncident(i);
    for (const u of list(msg.units)) upsertUnit(u);
  }

  async function resync() {
    // A fresh subscription (first time, or history gap): what we hold may be
    // stale. Keep versions as tombstones so an older REST answer cannot
    // bring back an incident closed since; drop everything else.
    for (const [id, inc] of incidents) incidents.set(id, Object.assign({}, inc, { status: 'closed', _stale: true }));
    schedule();
    try {
      const raw = await Q.api(token, '/api/v1/incidents?status=open&limit=1000');
      for (const i of list(raw, 'incidents', 'items', 'data')) {
        const old = incidents.get(i.id);
        if (old && old._stale && Number(old.version || 0) === Number(i.version || 0)) incidents.set(i.id, i);
        else upsertIncident(i);
      }
      schedule();
    } catch (e) {
      handleRestError(e, '/api/v1/incidents');
    }
    loadUnits();
  }

  async function loadUnits() {
    try {
      const raw = await Q.api(token, '/api/v1/units');
      for (const u of list(raw, 'units', 'items', 'data')) upsertUnit(u);
    } catch (e) {
      handleRestError(e, '/api/v1/units');
    }
  }

  async function loadJurisdictions() {
    try {
      jurisdictions = adaptJurisdictions(await Q.api(token, '/api/v1/jurisdictions'));
      mapData += 1;
      renderMap(true);
      schedule();
      return true;
    } catch (e) {
      handleRestError(e, '/api/v1/jurisdictions');
      return false;
    }
  }

  let cellRadiusM = 400;

  /** Half the median distance from a cell to its nearest neighbour (on a sample). */
  function cellRadius(cells) {
    const pts = cells.filter((c) => c.centre).map((c) => c.centre);
    if (pts.length < 2) return 400;
    const step = Math.max(1, Math.floor(pts.length / 60));
    const nearest = [];
    for (let i = 0; i < pts.length; i += step) {
      let best = Infinity;
      for (let j = 0; j < pts.length; j++) {
        if (j !== i) best = Math.min(best, Q.haversineM(pts[i][0], pts[i][1], pts[j][0], pts[j][1]));
      }
      if (isFinite(best) && best > 0) nearest.push(best);
    }
    nearest.sort((a, b) => a - b);
    return nearest.length ? nearest[Math.floor(nearest.length / 2)] / 2 : 400;
  }

  async function loadCoverage() {
    try {
      coverage = adaptCoverage(await Q.api(token, '/api/v1/coverage'));
      cellRadiusM = cellRadius(coverage);
      mapData += 1;
      renderMap(false);
    } catch (e) {
      handleRestError(e, '/api/v1/coverage', true);
    }
  }

  async function loadStats() {
    try {
      stats = adaptStats(await Q.api(token, '/api/v1/stats?window=1h'));
      renderKpis();
    } catch (e) {
      handleRestError(e, '/api/v1/stats', true);
    }
  }

  let lastRestError = {};
  function handleRestError(e, path, quietWhenDown) {
    if (e.status === 401) { authFailed(); return; }
    // While the socket is down the banner already says so; once up, say it
    // once per endpoint per minute rather than every refresh.
    if (quietWhenDown && conn && !conn.connected) return;
    const now = Q.now();
    if (lastRestError[path] && now - lastRestError[path] < 60000) return;
    lastRestError[path] = now;
    Q.toast('error', Q.t('load_failed') + ' ' + path + ': ' + Q.errorText(e));
  }

  // ---- rendering ------------------------------------------------------------

  let scheduled = false;
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      renderList();
      renderMap(false);
      renderDetail();
      renderKpis();
    });
  }

  function addr(inc) {
    return (inc.location && inc.location.address) || (inc.location ? inc.location.lat.toFixed(4) + ', ' + inc.location.lon.toFixed(4) : '—');
  }

  /** The "needs location" badge of an unplaced call, and a small label per
   * other flag; a flag this page does not know is shown by its name. */
  function flagsHtml(inc) {
    return (inc.flags || []).map((f) => {
      const label = Q.esc(Q.t('flag_' + f) === 'flag_' + f ? f : Q.t('flag_' + f));
      if (f === 'unlocated' && !inc.location) {
        return ' <span class="tag unlocated" data-testid="needs-location">' + label + '</span>';
      }
      if (f === 'unlocated') return '';
      return ' <span class="tag flag" data-testid="flag" data-flag="' + Q.esc(f) + '">' + label + '</span>';
    }).join('');
  }

  function jurName(id) {
    const j = jurisdictions.find((x) => x.id === id);
    if (!j) return id || '—';
    return Q.lang === 'en' ? j.name_en : j.name;
  }

  // A desk seat may watch only its desk's incidents (client-side: the
  // board channel still carries all of the operator's jurisdictions).
  let deskFilter = Q.param('desk') || (function () { try { return sessionStorage.getItem('qzx.board.desk') || ''; } catch (_) { return ''; } })();

  function renderDeskFilter() {
    const sel = $('desk-filter');
    sel.innerHTML = '<option value="">' + Q.esc(Q.t('all_desks')) + '</option>' +
      Object.keys(Q.DESKS).map((d) => '<option value="' + d + '">' + Q.esc(Q.pick(Q.DESKS[d])) + '</option>').join('');
    sel.value = Q.DESKS[deskFilter] ? deskFilter : '';
  }

  function sorted() {
    return [...incidents.values()].filter((i) => visible(i) && (!deskFilter || (i.desks || []).includes(deskFilter))).sort((a, b) =>
      (a.priority || 9) - (b.priority || 9) || (Q.ms(a.created_at) || 0) - (Q.ms(b.created_at) || 0));
  }

  function clocksHtml(inc, now) {
    return ['respond', 'arrive', 'reinforce'].map((s) => {
      const c = Q.clock(s, inc.deadlines, inc.sla, inc.created_at, now);
      return '<div class="clk ' + c.cls + '" data-stage="' + s + '" data-testid="clock-' + s + '" data-state="' + c.cls + '">' +
        '<div class="n">' + Q.esc(Q.pick(Q.STAGES[s])) + '</div><div class="c">' + Q.esc(c.text) + '</div></div>';
    }).join('');
  }

  function renderList() {
    const box = $('incidents');
    const rows = sorted();
    $('inc-count').textContent = rows.length;
    if (!rows.length) {
      box.innerHTML = '<div class="empty" data-testid="all-clear">' + Q.esc(Q.t('all_clear')) + '</div>';
      return;
    }
    const now = Q.now();
    box.innerHTML = rows.map((inc) => {
      const p = Q.prio(inc.priority);
      const us = (inc.units || []).map((u) => {
        const name = (units.get(u.unit) && units.get(u.unit).name) || u.unit;
        return '<span class="tag" data-testid="inc-unit" data-unit="' + Q.esc(u.unit) + '" data-status="' + Q.esc(u.status) + '">' +
          Q.esc(name) + ' · ' + Q.esc(Q.pick(Q.STATUSES[u.status], u.status)) + '</span>';
      }).join('') || '<span class="tag dim">' + Q.esc(Q.t('no_unit')) + '</span>';
      const desks = (inc.desks || []).map((d) => Q.pick(Q.DESKS[d], d)).join('、');
      return '<div class="inc p' + p + (inc.id === selected ? ' selected' : '') + '" tabindex="0" role="button" data-testid="incident" data-id="' + Q.esc(inc.id) +
        '" data-status="' + Q.esc(inc.status) + '" data-kind="' + Q.esc(inc.kind) + '">' +
        '<div class="bar"></div>' +
        '<div class="title"><span class="prio p' + p + '">P' + p + '</span>' + Q.esc(Q.kindName(inc.kind)) +
        ' <span class="dim" style="font-weight:400;font-size:13px">' + Q.esc(Q.pick(Q.STATUSES[inc.status], inc.status)) + '</span>' +
        (inc.repeat_count > 1 ? ' <span class="tag repeat" data-testid="repeat">' + Q.esc(Q.t('repeat')) + ' ×' + inc.repeat_count + '</span>' : '') +
        flagsHtml(inc) + '</div>' +
        '<div class="clocks">' + clocksHtml(inc, now) + '</div>' +
        '<div class="meta"><b data-testid="address">' + Q.esc(addr(inc)) + '</b> · ' + Q.esc(jurName(inc.jurisdiction)) +
        (desks ? ' · ' + Q.esc(desks) : '') + ' · ' + Q.esc(Q.hhmmss(new Date(Q.ms(inc.created_at) || now))) + '</div>' +
        '<div class="units">' + us + '</div>' +
        '</div>';
    }).join('');
  }

  function tickClocks() {
    const now = Q.now();
    document.querySelectorAll('[data-testid=incident], #detail-info').forEach((row) => {
      const inc = incidents.get(row.dataset.id);
      if (!inc) return;
      row.querySelectorAll('.clk').forEach((el) => {
        const c = Q.clock(el.dataset.stage, inc.deadlines, inc.sla, inc.created_at, now);
        el.className = 'clk ' + c.cls;
        el.dataset.state = c.cls;
        el.querySelector('.c').textContent = c.text;
      });
    });
  }

  function renderKpis() {
    const s = stats;
    const open = sorted().length;
    const fmtS = (v) => (v == null ? '—' : v < 100 ? Math.round(v) + 's' : Q.mmss(v * 1000));
    const stageKpi = (st) => {
      const x = s && s.stages[st];
      const share = x && x.share != null ? Math.round(x.share * 100) + '%' : '—';
      return '<div class="kpi" data-testid="kpi-' + st + '"><div class="k">' + Q.esc(Q.pick(Q.STAGES[st])) + ' ' + Q.esc(Q.t('met_share')) +
        '</div><div class="v">' + share + '</div><div class="s">p50 ' + fmtS(x && x.p50) + ' · p90 ' + fmtS(x && x.p90) + '</div></div>';
    };
    const hot = s && s.hot.length
      ? '<ol>' + s.hot.map((h) => '<li>' + Q.esc(hotspotName(h)) + (h.kind ? ' · ' + Q.esc(Q.pick(Q.KINDS[h.kind], h.kind)) : '') +
        (h.count != null ? ' ×' + h.count : '') + '</li>').join('') + '</ol>'
      : '<div class="v">—</div>';
    const cov = coverageShare();
    $('kpis').innerHTML =
      '<div class="kpi" data-testid="kpi-open"><div class="k">' + Q.esc(Q.t('kpi_open')) + '</div><div class="v">' + open + '</div></div>' +
      stageKpi('respond') + stageKpi('arrive') + stageKpi('reinforce') +
      '<div class="kpi" data-testid="kpi-breaches"><div class="k">' + Q.esc(Q.t('kpi_breaches')) + '</div><div class="v">' +
      (s && s.breaches != null ? s.breaches : '—') + '</div></div>' +
      '<div class="kpi"><div class="k">' + Q.esc(Q.t('kpi_coverage')) + '</div><div class="v" style="font-size:15px">' +
      (cov ? cov.map((x) => Math.round(x * 100) + '%').join(' / ') : '—') + '</div><div class="s">1 / 3 / 5 min · ' +
      Q.esc(Q.pick(Q.STATUSES.available)) + ' <span data-testid="kpi-available">' + [...units.values()].filter((u) => u.status === 'available').length +
      '</span></div></div>' +
      '<div class="kpi hot" data-testid="kpi-hotspots"><div class="k">' + Q.esc(Q.t('kpi_hotspots')) + '</div>' + hot + '</div>';
  }

  /** A hotspot by the address of an incident in its cell, else its station and position. */
  function hotspotName(h) {
    if (h.where) return h.where;
    const inc = h.cell && [...incidents.values()].find((i) => i.cell === h.cell && i.location && i.location.address);
    if (inc) return inc.location.address;
    if (h.at) {
      const j = jurisdictions.find((x) => x.area.length >= 3 && inside(h.at, x.area));
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
    if (!coverage.length) return null;
    const n = coverage.length;
    return [1, 3, 5].map((lv) => coverage.filter((c) => c.level && c.level <= lv).length / n);
  }

  // ---- map: equirectangular projection into an SVG ----------------------

  let proj = null;
  function project(lat, lon) {
    return [proj.ox + (lon - proj.lon0) * proj.kx, proj.oy - (lat - proj.lat0) * proj.ky];
  }

  function computeProjection(w, h) {
    const pts = [];
    for (const j of jurisdictions) for (const p of j.area) pts.push(p);
    if (!pts.length) {
      for (const u of units.values()) if (isFinite(u.lat) && isFinite(u.lon)) pts.push([u.lat, u.lon]);
      for (const i of incidents.values()) if (i.location) pts.push([i.location.lat, i.location.lon]);
    }
    if (!pts.length) pts.push([36.634, 116.983], [36.686, 117.061]); // Jinan old town
    let minLat = Infinity, maxLat = -Infinity, minLon = Infinity, maxLon = -Infinity;
    for (const [la, lo] of pts) {
      minLat = Math.min(minLat, la); maxLat = Math.max(maxLat, la);
      minLon = Math.min(minLon, lo); maxLon = Math.max(maxLon, lo);
    }
    const padLat = (maxLat - minLat) * 0.06 || 0.01;
    const padLon = (maxLon - minLon) * 0.06 || 0.01;
    minLat -= padLat; maxLat += padLat; minLon -= padLon; maxLon += padLon;
    const lat0 = (minLat + maxLat) / 2;
    const lon0 = (minLon + maxLon) / 2;
    const cos = Math.cos((lat0 * Math.PI) / 180);
    // One scale for both axes (in metres-ish), so shapes keep their form.
    const k = Math.min(w / ((maxLon - minLon) * cos), h / (maxLat - minLat));
    proj = { lat0, lon0, kx: k * cos, ky: k, ox: w / 2, oy: h / 2, w, h };
  }

  function pointsAttr(ringPts) {
    return ringPts.map(([la, lo]) => project(la, lo).map((v) => v.toFixed(1)).join(',')).join(' ');
  }

  const COV_FILL = { 1: 'rgba(47,179,68,.45)', 3: 'rgba(170,200,40,.30)', 5: 'rgba(240,140,0,.30)', 0: 'rgba(229,72,77,.24)' };
  const PRIO_FILL = { 1: '#e5484d', 2: '#f08c00', 3: '#e2c20e', 4: '#4c9aff' };

  let staticKey = null;
  let staticSvg = '';
  let mapData = 0; // bumped when coverage or jurisdictions are (re)loaded

  function renderStatic() {
    const parts = [];
    // Coverage cells. Without a boundary from the api, a disc of half the
    // distance to the nearest neighbouring cell: discs of neighbours touch
    // but never overlap, whatever the grid's orientation, so no cell is
    // drawn darker than another.
    const cellR = Math.max(2, (cellRadiusM / 111320) * proj.ky);
    parts.push('<g id="m-cov">');
    for (const c of coverage) {
      if (c.boundary.length >= 3) {
        parts.push('<polygon points="' + pointsAttr(c.boundary) + '" fill="' + COV_FILL[c.level || 0] + '" stroke="rgba(255,255,255,.06)"/>');
      } else if (c.centre) {
        const [x, y] = project(c.centre[0], c.centre[1]);
        parts.push('<circle cx="' + x.toFixed(1) + '" cy="' + y.toFixed(1) + '" r="' + cellR.toFixed(1) + '" fill="' + COV_FILL[c.level || 0] + '"/>');
      }
    }
    parts.push('</g><g id="m-jur">');
    for (const j of jurisdictions) {
      if (j.area.length >= 3) {
        parts.push('<polygon points="' + pointsAttr(j.area) + '" fill="none" stroke="#6f8cab" stroke-width="1.5" stroke-dasharray="5 3"/>');
      }
      const c = j.centre || (j.area.length ? j.area.reduce((a, p) => [a[0] + p[0] / j.area.length, a[1] + p[1] / j.area.length], [0, 0]) : null);
      if (c && j.area.length >= 3) {
        const [x, y] = project(c[0], c[1]);
        parts.push('<text x="' + x.toFixed(1) + '" y="' + y.toFixed(1) + '" fill="#9fb3c8" font-size="12" text-anchor="middle" opacity=".8">' +
          Q.esc(Q.lang === 'en' ? j.name_en : j.name) + '</text>');
      }
    }
    parts.push('</g>');
    return parts.join('');
  }

  function renderMap(full) {
    const svg = $('map');
    const w = svg.clientWidth || 600;
    const h = svg.clientHeight || 400;
    if (full || !proj || proj.w !== w || proj.h !== h) computeProjection(w, h);
    svg.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
    // The cells and stations change every 10 s at most; units and incidents
    // with every push. Rebuild the first only when they or the view change.
    const key = [w, h, proj.lat0, proj.lon0, proj.ky, mapData, Q.lang].join('|');
    if (key !== staticKey) {
      staticKey = key;
      staticSvg = renderStatic();
    }
    const parts = [staticSvg];
    parts.push('<g id="m-inc">');
    for (const inc of sorted()) {
      if (!inc.location) continue;
      const [x, y] = project(inc.location.lat, inc.location.lon);
      const p = Q.prio(inc.priority);
      const r = inc.id === selected ? 10 : 7;
      parts.push('<g class="m-incident" data-id="' + Q.esc(inc.id) + '" transform="translate(' + x.toFixed(1) + ',' + y.toFixed(1) + ')" style="cursor:pointer">' +
        '<rect x="' + -r + '" y="' + -r + '" width="' + 2 * r + '" height="' + 2 * r + '" transform="rotate(45)" fill="' + PRIO_FILL[p] +
        '" stroke="#fff" stroke-width="' + (inc.id === selected ? 2.5 : 1) + '"/>' +
        '<title>' + Q.esc(Q.kindName(inc.kind) + ' · ' + addr(inc)) + '</title></g>');
    }
    parts.push('</g><g id="m-units">');
    for (const u of units.values()) {
      if (!isFinite(u.lat) || !isFinite(u.lon) || u.lat == null || u.status === 'off_duty') continue;
      const [x, y] = project(u.lat, u.lon);
      parts.push('<g class="m-unit" data-testid="map-unit" data-unit="' + Q.esc(u.id) + '" data-status="' + Q.esc(u.status) + '" transform="translate(' +
        x.toFixed(1) + ',' + y.toFixed(1) + ')"><circle r="6" class="st-' + Q.esc(u.status) + '" stroke="#0b1218" stroke-width="1.5"/>' +
        '<text x="8" y="4" font-size="10" fill="#cfd9e3">' + Q.esc(shortUnit(u)) + '</text><title>' + Q.esc((u.name || u.id) + ' · ' +
        Q.pick(Q.STATUSES[u.status], u.status)) + '</title></g>');
    }
    parts.push('</g>');
    svg.innerHTML = parts.join('');
  }

  function shortUnit(u) {
    return u.id.length > 14 ? u.id.slice(-8) : u.id;
  }

  function renderLegend() {
    const covs = [[1, 'cov_1'], [3, 'cov_3'], [5, 'cov_5'], [0, 'cov_none']]
      .map(([lv, k]) => '<span><i style="background:' + COV_FILL[lv] + '"></i>' + Q.esc(Q.t(k)) + '</span>');
    const sts = ['available', 'assigned', 'en_route', 'on_scene', 'busy']
      .map((s) => '<span><i class="st-' + s + '" style="border-radius:50%"></i>' + Q.esc(Q.pick(Q.STATUSES[s])) + '</span>');
    $('legend').innerHTML = covs.join('') + sts.join('') + '<span><i style="background:#e5484d;transform:rotate(45deg)"></i>' + Q.esc(Q.t('incident')) + '</span>';
  }

  // ---- detail and actions ----------------------------------------------------

  let detailFor = null; // the incident id whose action form is built

  function renderDetail() {
    const body = $('detail-body');
    const inc = selected ? incidents.get(selected) : null;
    if (!inc || !visible(inc)) {
      if (detailFor !== null || !body.dataset.empty) {
        body.innerHTML = '<div class="dim">' + Q.esc(Q.t('select_incident')) + '</div>';
        body.dataset.empty = '1';
        detailFor = null;
      }
      if (inc && !visible(inc)) selected = null;
      return;
    }
    if (detailFor !== inc.id) {
      detailFor = inc.id;
      delete body.dataset.empty;
      body.innerHTML = '<div id="detail-info"></div>' + actionsHtml();
      wireActions();
    }
    const info = $('detail-info');
    info.dataset.id = inc.id;
    const tl = (inc.timeline || []).slice(-4).reverse()
      .map((e) => '<li>' + Q.esc(Q.hhmmss(new Date(Q.ms(e.at) || Date.now()))) + ' ' + Q.esc(e.what) + (e.by ? ' · ' + Q.esc(e.by) : '') + '</li>').join('');
    const p = Q.prio(inc.priority);
    info.innerHTML = '<div><span class="prio p' + p + '">P' + p + '</span><b>' + Q.esc(Q.kindName(inc.kind)) + '</b> · ' +
      Q.esc(addr(inc)) + ' · ' + Q.esc(Q.t('score')) + ' ' + Q.esc(inc.score) + ' · ' + Q.esc(Q.pick(Q.STATUSES[inc.status], inc.status)) + '</div>' +
      (inc.text ? '<div class="dim">' + Q.esc(inc.text) + '</div>' : '') +
      (tl ? '<ol class="timeline" reversed>' + tl + '</ol>' : '');
    refreshUnitOptions(inc);
  }

  function actionsHtml() {
    const deskOpts = Object.keys(Q.DESKS).map((d) => '<option value="desk:' + d + '">' + Q.esc(Q.pick(Q.DESKS[d])) + '</option>').join('');
    const typeOpts = Object.keys(Q.UNIT_TYPES).map((u) => '<option value="type:' + u + '">' + Q.esc(Q.pick(Q.UNIT_TYPES[u])) + '</option>').join('');
    return '<div class="act"><label>' + Q.esc(Q.t('assign_unit')) + '</label><select id="a-unit" data-testid="assign-unit" style="flex:1"></select>' +
      '<button class="primary" id="a-assign" data-testid="assign">' + Q.esc(Q.t('assign')) + '</button></div>' +
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

  function refreshUnitOptions(inc) {
    const sel = $('a-unit');
    if (!sel) return;
    const keep = sel.value;
    const loc = inc.location;
    const avail = [...units.values()].filter((u) => u.status === 'available').map((u) => ({
      u, d: loc && isFinite(u.lat) && isFinite(u.lon) && u.lat != null ? Q.haversineM(loc.lat, loc.lon, u.lat, u.lon) : null,
    })).sort((a, b) => (a.d ?? 1e12) - (b.d ?? 1e12));
    const html = avail.length
      ? avail.map(({ u, d }) => '<option value="' + Q.esc(u.id) + '">' + Q.esc((u.name || u.id) + ' · ' + Q.pick(Q.UNIT_TYPES[u.type], u.type || '') +
        ' · ' + Q.fmtDistance(d)) + '</option>').join('')
      : '<option value="">' + Q.esc(Q.t('no_available')) + '</option>';
    if (sel.dataset.html !== html) {
      sel.innerHTML = html;
      sel.dataset.html = html;
      if ([...sel.options].some((o) => o.value === keep)) sel.value = keep;
    }
  }

  function wireActions() {
    const send = async (btn, op, fields) => {
      btn.disabled = true;
      try {
        await conn.command(op, fields);
        Q.toast('ok', Q.t('sent_ok') + ': ' + btn.textContent);
      } catch (e) {
        Q.toast('error', btn.textContent + ': ' + Q.errorText(e));
      } finally {
        btn.disabled = false;
      }
    };
    $('a-assign').onclick = (ev) => {
      const unit = $('a-unit').value;
      if (!unit) { Q.toast('error', Q.t('assign') + ': ' + Q.t('no_available')); return; }
      send(ev.currentTarget, 'assign', { incident: detailFor, unit });
    };
    $('a-divert').onclick = (ev) => {
      send(ev.currentTarget, 'divert', { incident: detailFor, to: $('a-agency').value.trim() || '12345' });
    };
    $('a-escalate').onclick = (ev) => {
      const [what, v] = $('a-esc').value.split(':');
      const fields = { incident: detailFor };
      if (what === 'desk') fields.desk = v; else fields.unit_type = v;
      const note = $('a-note').value.trim();
      if (note) fields.note = note;
      send(ev.currentTarget, 'escalate', fields);
    };
    $('a-close').onclick = (ev) => {
      const disposition = $('a-disp').value.trim();
      if (!disposition) { Q.toast('error', Q.t('close') + ': ' + Q.t('need_disposition')); $('a-disp').focus(); return; }
      const fields = { incident: detailFor, disposition };
      if ($('a-fb').value) fields.feedback = $('a-fb').value;
      send(ev.currentTarget, 'close', fields);
    };
  }

  function select(id) {
    selected = id;
    detailFor = null;
    schedule();
    // On a phone the actions are below the map: bring them into view.
    if (window.innerWidth < 900) requestAnimationFrame(() => $('detail').scrollIntoView({ behavior: 'smooth', block: 'start' }));
  }

  // ---- connection state, login --------------------------------------------------

  function onState(s) {
    const pill = $('conn');
    const banner = $('banner');
    if (s.connected) {
      pill.className = 'pill ok';
      pill.textContent = Q.t('connected');
      pill.dataset.state = 'connected';
      banner.classList.add('hidden');
      banner.textContent = '';
    } else {
      pill.className = 'pill down';
      pill.textContent = Q.t('connecting');
      pill.dataset.state = 'down';
      if (s.since) {
        banner.textContent = Q.t('disconnected_since', { t: Q.hhmmss(s.since) });
        banner.classList.remove('hidden');
      }
    }
  }

  function authFailed() {
    if (conn) conn.stop();
    conn = null;
    for (const id of timers) clearInterval(id);
    timers = [];
    Q.storeToken('board', null);
    showLogin(Q.t('token_invalid'));
  }

  function showLogin(msg) {
    $('board').classList.add('hidden');
    $('login').classList.remove('hidden');
    $('login-msg').textContent = msg || '';
    Q.applyLabels();
  }

  function start(tok) {
    token = tok;
    me = Q.claims(tok);
    if (!me) { showLogin(Q.t('token_invalid')); return; }
    $('login').classList.add('hidden');
    $('board').classList.remove('hidden');
    $('who').textContent = (me.sub || '') + ' · ' + (me.role || '') + ' · ' + ((me.jurisdictions || []).join(',') || '—');
    Q.applyLabels();
    renderLegend();
    renderDeskFilter();
    onState({ connected: false, since: null });
    conn = new Q.Connection(tok, {
      onState,
      onPush,
      onSnapshot,
      onSubscribed: (msg, resumed) => { if (!resumed) resync(); else loadUnits(); },
      onError: (e) => Q.toast('error', Q.errorText(e)),
      onAuthFailed: authFailed,
    });
    conn.subscribe('board');
    conn.start();
    loadJurisdictions().then((ok) => {
      if (!ok) {
        const id = setInterval(async () => { if (await loadJurisdictions()) clearInterval(id); }, 10000);
        timers.push(id);
      }
    });
    loadCoverage();
    loadStats();
    timers.push(setInterval(tickClocks, 1000));
    timers.push(setInterval(loadStats, 10000));
    timers.push(setInterval(loadCoverage, 10000));
    timers.push(setInterval(loadUnits, 30000));
    timers.push(setInterval(pruneTombstones, 60000));
  }

  /**
   * A wall board runs for weeks: forget closed incidents an hour after their
   * last change. (A replay brings an incident's versions in order, so an
   * old open version can never come back after its closing one.)
   */
  function pruneTombstones() {
    const cutoff = Q.now() - 3600 * 1000;
    for (const [id, inc] of incidents) {
      if (!visible(inc) && (Q.ms(inc.updated_at) || 0) < cutoff && id !== selected) incidents.delete(id);
    }
  }

  function init() {
    document.querySelectorAll('.lang-btn').forEach((b) => {
      b.onclick = () => {
        Q.setLang(Q.lang === 'en' ? 'zh' : 'en');
        Q.applyLabels();
        detailFor = null;
        delete $('detail-body').dataset.empty;
        renderLegend();
        renderDeskFilter();
        if (conn) onState({ connected: conn.connected, since: conn.downSince });
        renderMap(true);
        schedule();
      };
    });
    $('login-btn').onclick = () => {
      const tok = $('token-input').value.trim();
      if (!tok) return;
      $('token-input').value = '';
      Q.storeToken('board', tok);
      start(tok);
    };
    $('logout').onclick = () => {
      if (conn) conn.stop();
      Q.storeToken('board', null);
      location.reload();
    };
    $('incidents').addEventListener('click', (ev) => {
      const row = ev.target.closest('[data-testid=incident]');
      if (row) select(row.dataset.id);
    });
    $('incidents').addEventListener('keydown', (ev) => {
      const row = ev.target.closest('[data-testid=incident]');
      if (row && (ev.key === 'Enter' || ev.key === ' ')) { ev.preventDefault(); select(row.dataset.id); }
    });
    $('desk-filter').onchange = (ev) => {
      deskFilter = ev.target.value;
      try { sessionStorage.setItem('qzx.board.desk', deskFilter); } catch (_) { /* private mode */ }
      schedule();
    };
    $('map').addEventListener('click', (ev) => {
      const g = ev.target.closest('.m-incident');
      if (g) select(g.dataset.id);
    });
    window.addEventListener('resize', () => renderMap(true));
    Q.applyLabels();
    const tok = Q.takeToken('board');
    if (tok) start(tok); else showLogin('');
  }

  init();
})();
