// A stand-in for `qzx all` that speaks the public contract (CONTRACT.md:
// ingest POST /v1/events, the WebSocket protocol on /ws, the REST reads) with
// canned Jinan data and a tiny, deterministic "router": nearest available
// unit gets the task, ack meets the respond stage, and so on. It serves the
// real pages from dispatch-ui-api/web/. Every command's op and fields are
// checked as the api checks them (bus/src/model/command.rs refuses unknown
// fields), so a page that sends a wrong field fails its test here; issue
// #21's commands (update, note, reopen, merge, split, hold, assign with
// mode and preempt, create, refuse) are applied roughly as the router
// does, and tasks carry incident_kind, caller, other_units, changes and
// reason.
//
// It exists so the pages can be developed and tested before, and without,
// the Rust services. It is not a reference for the router's rules: where the
// two differ, the contract and the real services win. It must never be used
// for anything but tests and page development.
//
//   node mock-server.mjs [port]      prints the board and terminal URLs
//   import { startMock } from './mock-server.mjs'

import http from 'node:http';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const WEB = path.resolve(HERE, '../../dispatch-ui-api/web');

// ---- canned city (a copy of config/qzx.toml's Jinan) -----------------------

export const JURISDICTIONS = [
  { id: 'shiju', name: '济南市公安局指挥中心', name_en: 'Jinan PSB Command Centre', centre: [36.6512, 117.1201], area: [] },
  { id: 'quancheng', name: '泉城路派出所', name_en: 'Quanchenglu Station', centre: [36.664, 117.022], area: [[36.654, 117.009], [36.654, 117.035], [36.67, 117.035], [36.67, 117.009]] },
  { id: 'daminghu', name: '大明湖派出所', name_en: 'Daminghu Station', centre: [36.676, 117.022], area: [[36.67, 117.009], [36.67, 117.035], [36.686, 117.035], [36.686, 117.009]] },
  { id: 'baotuquan', name: '趵突泉派出所', name_en: 'Baotuquan Station', centre: [36.662, 116.996], area: [[36.654, 116.983], [36.654, 117.009], [36.67, 117.009], [36.67, 116.983]] },
  { id: 'jiefangqiao', name: '解放桥派出所', name_en: 'Jiefangqiao Station', centre: [36.672, 117.048], area: [[36.654, 117.035], [36.654, 117.061], [36.686, 117.061], [36.686, 117.035]] },
  { id: 'qianfoshan', name: '千佛山派出所', name_en: 'Qianfoshan Station', centre: [36.645, 117.03], area: [[36.634, 117.009], [36.634, 117.061], [36.654, 117.061], [36.654, 117.009]] },
  { id: 'dikou', name: '堤口路派出所', name_en: 'Dikoulu Station', centre: [36.678, 116.996], area: [[36.67, 116.983], [36.67, 117.009], [36.686, 117.009], [36.686, 116.983]] },
];

const ROSTER = [
  ['quancheng-01', 'patrol_car', 'quancheng', '泉城1号车', 36.6611, 117.017],
  ['quancheng-02', 'patrol_car', 'quancheng', '泉城2号车', 36.6665, 117.029],
  ['quancheng-p1', 'post', 'quancheng', '泉城广场警务站', 36.6616, 117.0195],
  ['daminghu-01', 'patrol_car', 'daminghu', '大明湖1号车', 36.675, 117.016],
  ['daminghu-02', 'foot', 'daminghu', '大明湖步巡1组', 36.679, 117.026],
  ['baotuquan-01', 'patrol_car', 'baotuquan', '趵突泉1号车', 36.661, 116.999],
  ['baotuquan-p1', 'post', 'baotuquan', '趵突泉警务站', 36.6622, 117.005],
  ['jiefangqiao-01', 'patrol_car', 'jiefangqiao', '解放桥1号车', 36.67, 117.045],
  ['jiefangqiao-02', 'traffic', 'jiefangqiao', '解放桥交巡1号', 36.662, 117.052],
  ['qianfoshan-01', 'patrol_car', 'qianfoshan', '千佛山1号车', 36.646, 117.028],
  ['qianfoshan-02', 'patrol_car', 'qianfoshan', '千佛山2号车', 36.642, 117.048],
  ['dikou-01', 'patrol_car', 'dikou', '堤口1号车', 36.678, 116.995],
  ['shiju-s1', 'special', 'shiju', '特警机动1组', 36.66, 117.025],
  ['shiju-s2', 'special', 'shiju', '特警机动2组', 36.67, 117.0],
];

const CATEGORIES = {
  robbery: [1, ['patrol', 'criminal']], assault: [2, ['patrol', 'criminal']], theft: [3, ['patrol', 'criminal']],
  fraud: [3, ['cyber']], traffic_accident: [2, ['traffic']], fire: [1, ['patrol', 'command']],
  missing_person: [2, ['patrol', 'video', 'intelligence']], dispute: [3, ['patrol']], noise: [4, ['patrol']],
  utility_outage: [4, ['patrol']], efence_breach: [2, ['patrol', 'video']], video_alarm: [2, ['video', 'patrol']],
  smoke_alarm: [2, ['patrol']], unknown: [3, ['command']],
};
const SLA = { 1: [60, 180, 300, 2], 2: [60, 180, 300, 1], 3: [120, 600, 900, 1], 4: [300, 1800, 3600, 1] };
const SPEED_KMH = { patrol_car: 30, foot: 5, post: 5, special: 35, traffic: 30 };

// ---- tokens (HS256) -----------------------------------------------------------

const b64u = (buf) => Buffer.from(buf).toString('base64url');

export function mint(secret, claims) {
  const head = b64u(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64u(JSON.stringify(Object.assign({ exp: Math.floor(Date.now() / 1000) + 8 * 3600 }, claims)));
  const sig = crypto.createHmac('sha256', secret).update(head + '.' + body).digest('base64url');
  return head + '.' + body + '.' + sig;
}

function verify(secret, token) {
  if (!token) return null;
  const [h, b, s] = String(token).split('.');
  if (!h || !b || !s) return null;
  const want = crypto.createHmac('sha256', secret).update(h + '.' + b).digest('base64url');
  if (want.length !== s.length || !crypto.timingSafeEqual(Buffer.from(want), Buffer.from(s))) return null;
  try {
    const c = JSON.parse(Buffer.from(b, 'base64url').toString());
    if (!c.exp || c.exp * 1000 < Date.now()) return null;
    return c;
  } catch {
    return null;
  }
}

const covers = (c, j) => c.role === 'admin' || (c.jurisdictions || []).some((x) => x === '*' || x === j);

// ---- geometry -------------------------------------------------------------------

function haversine(a, b, c, d) {
  const r = Math.PI / 180;
  const x = Math.sin(((c - a) * r) / 2) ** 2 + Math.cos(a * r) * Math.cos(c * r) * Math.sin(((d - b) * r) / 2) ** 2;
  return 2 * 6371008.8 * Math.asin(Math.sqrt(x));
}

function jurisdictionOf(lat, lon) {
  for (const j of JURISDICTIONS) {
    if (!j.area.length) continue;
    const lats = j.area.map((p) => p[0]);
    const lons = j.area.map((p) => p[1]);
    if (lat >= Math.min(...lats) && lat < Math.max(...lats) && lon >= Math.min(...lons) && lon < Math.max(...lons)) return j.id;
  }
  return 'shiju';
}

function hexCells() {
  const e = 0.46; // km, about H3 resolution 8
  const kmLat = 111.2;
  const kmLon = 111.2 * Math.cos((36.66 * Math.PI) / 180);
  const cells = [];
  const w = Math.sqrt(3) * e;
  let row = 0;
  for (let y = 36.634; y <= 36.686; y += (1.5 * e) / kmLat, row++) {
    for (let x = 116.983 + (row % 2 ? w / 2 / kmLon : 0); x <= 117.061; x += w / kmLon) {
      const boundary = [];
      for (let k = 0; k < 6; k++) {
        const a = (Math.PI / 3) * k + Math.PI / 6;
        boundary.push([+(y + (e * Math.sin(a)) / kmLat).toFixed(6), +(x + (e * Math.cos(a)) / kmLon).toFixed(6)]);
      }
      cells.push({ cell: '88' + row.toString(16) + Math.round(x * 1e4).toString(16), centre: [+y.toFixed(6), +x.toFixed(6)], boundary });
    }
  }
  return cells;
}

// ---- the mock ---------------------------------------------------------------------

export async function startMock(opts = {}) {
  const secret = opts.secret || crypto.randomBytes(16).toString('hex');
  const now = () => new Date().toISOString();
  const newId = () => crypto.randomUUID();

  const units = new Map();
  for (const [id, type, jurisdiction, name, lat, lon] of ROSTER) {
    units.set(id, { id, type, jurisdiction, status: 'off_duty', lat, lon, at: now(), task: null, name });
  }
  const incidents = new Map();
  const tasks = new Map();
  const sourceIds = new Map();
  const history = new Map(); // channel -> [{cursor, msg}]
  let seq = 0;
  const clients = new Set();
  const cells = hexCells();
  const log = [];
  const subscribes = []; // {channel, since, gap} of every subscribe, for tests
  // The router's dispatch.stale_after_s: a unit not heard from for longer is sent nowhere.
  const staleAfterS = opts.staleAfterS || 900;

  const cursorOf = (n) => String(n).padStart(12, '0');
  const cellOf = (lat, lon) => {
    let best = null;
    for (const c of cells) { const d = haversine(lat, lon, c.centre[0], c.centre[1]); if (!best || d < best.d) best = { d, id: c.cell }; }
    return best && best.id;
  };

  function deliver(client, msg) {
    if (client.ws.readyState === 1) client.ws.send(JSON.stringify(msg));
  }

  function visibleTo(client, kind, data) {
    const c = client.claims;
    if (kind === 'unit') return covers(c, data.jurisdiction) || c.unit === data.id;
    return covers(c, data.jurisdiction || (incidents.get(data.incident) || {}).jurisdiction);
  }

  function publish(channel, kind, data) {
    seq += 1;
    const msg = { type: 'push', channel, cursor: cursorOf(seq), kind, data: structuredClone(data) };
    const h = history.get(channel) || [];
    h.push({ cursor: msg.cursor, msg });
    if (h.length > (opts.historyLen || 10000)) h.shift();
    history.set(channel, h);
    for (const cl of clients) if (cl.subs.has(channel) && (channel !== 'board' || visibleTo(cl, kind, data))) deliver(cl, msg);
  }

  const pubIncident = (i) => publish('board', 'incident', i);
  // As the api does: units go to the board, a unit's channel carries only its tasks.
  const pubUnit = (u) => publish('board', 'unit', u);
  const pubTask = (t) => publish('unit:' + t.unit, 'task', t);

  function timeline(inc, what, by) {
    inc.timeline.push({ at: now(), what, by: by || 'router' });
  }

  function bump(inc) {
    inc.version += 1;
    inc.updated_at = now();
    pubIncident(inc);
  }

  const isOpenTask = (t) => t && !['cleared', 'cancelled'].includes(t.status);
  const etaS = (u, loc) => Math.round((haversine(u.lat, u.lon, loc.lat, loc.lon) * 1.4) / (SPEED_KMH[u.type] / 3.6));
  const stale = (u) => Date.now() - Date.parse(u.at) > staleAfterS * 1000;

  /** The units with an open task on `inc` but `unit`. */
  function otherUnits(inc, unit) {
    return inc.units.filter((x) => x.unit !== unit && isOpenTask(tasks.get(x.task))).map((x) => x.unit);
  }

  /** A new version of an open task, as the router sends it: the incident's fields copied, `changes` naming what moved. */
  function taskVersion(t, changes, reason) {
    const inc = incidents.get(t.incident);
    t.version += 1;
    t.updated_at = now();
    if (inc) {
      Object.assign(t, { priority: inc.priority, location: inc.location, summary: inc.text || inc.kind, incident_kind: inc.kind,
        deadlines: inc.deadlines, other_units: otherUnits(inc, t.unit) });
      if (inc.callers && inc.callers[0]) t.caller = inc.callers[0];
    }
    t.changes = changes || [];
    if (reason) t.reason = reason;
    else delete t.reason;
    pubTask(t);
  }

  /** Tells every unit on `inc` (but `except`) that the incident changed. */
  function tellUnits(inc, changes, except) {
    for (const t of openTasksOf(inc)) if (t.id !== except) taskVersion(t, changes);
  }

  function cancelTask(t, reason) {
    t.status = 'cancelled';
    const inc = incidents.get(t.incident);
    const iu = inc && inc.units.find((x) => x.task === t.id);
    if (iu) iu.status = 'cancelled';
    taskVersion(t, [], reason);
    const u = units.get(t.unit);
    if (u && u.task === t.id) {
      Object.assign(u, { status: 'available', task: null, at: now() });
      pubUnit(u);
    }
  }

  function issueTask(inc, unit, role, by) {
    const t = {
      id: newId(), incident: inc.id, unit: unit.id, version: 0, kind: role === 'primary' ? 'respond' : 'reinforce',
      priority: inc.priority, location: inc.location, summary: inc.text || inc.kind, issued_at: now(),
      deadlines: inc.deadlines, status: 'issued', jurisdiction: inc.jurisdiction, updated_at: now(), incident_kind: inc.kind,
    };
    tasks.set(t.id, t);
    inc.units.push({ unit: unit.id, task: t.id, role, status: 'issued', eta_s: etaS(unit, inc.location) });
    if (inc.status === 'new') inc.status = 'dispatched';
    timeline(inc, 'task issued to ' + unit.id, by);
    Object.assign(unit, { status: 'assigned', task: t.id, at: now() });
    delete unit.reason;
    taskVersion(t, []);
    pubUnit(unit);
    // The others on it learn of the new unit.
    tellUnits(inc, ['units'], t.id);
  }

  function nearestAvailable(loc, except) {
    let best = null;
    for (const u of units.values()) {
      if (u.status !== 'available' || stale(u) || (except || []).includes(u.id)) continue;
      const s = etaS(u, loc);
      if (!best || s < best.s) best = { u, s };
    }
    return best && best.u;
  }

  /** The router's ranking for `inc`: available units, then those on a task of lower priority (pre-emption), by travel time. */
  function candidatesFor(inc) {
    // opts.noRanking: an api whose router ranks nothing (the board falls back to distance).
    if (!inc.location || opts.noRanking) return [];
    const left = (Date.parse(inc.deadlines.arrive) - Date.now()) / 1000;
    const out = [];
    for (const u of units.values()) {
      if (stale(u)) continue;
      const t = u.task && tasks.get(u.task);
      const c = { unit: u.id, type: u.type, eta_s: etaS(u, inc.location), distance_m: haversine(u.lat, u.lon, inc.location.lat, inc.location.lon) };
      c.in_time = c.eta_s <= left;
      if (u.status === 'available') out.push(c);
      else if (t && isOpenTask(t) && t.incident !== inc.id && t.priority > inc.priority) out.push(Object.assign(c, { task: t.id, task_priority: t.priority }));
    }
    return out.sort((a, b) => a.eta_s - b.eta_s).slice(0, 6);
  }

  /** Sends the nearest unit unless the incident is held: then, as the
   * router, it ranks units for an operator while the incident needs one (a
   * primary; a P1 two). */
  function dispatch(inc, except) {
    if (inc.hold) {
      const needs = openTasksOf(inc).length < (inc.priority === 1 ? 2 : 1);
      inc.candidates = needs ? candidatesFor(inc) : [];
      return;
    }
    inc.candidates = [];
    if (!inc.location || openTasksOf(inc).length) return;
    const u = nearestAvailable(inc.location, except);
    if (u) issueTask(inc, u, 'primary');
  }

  function createIncident(ev, receivedAt) {
    const kind = CATEGORIES[ev.kind] ? ev.kind : 'unknown';
    const [priority, desks] = CATEGORIES[kind];
    const t0 = Date.parse(receivedAt);
    const [r, a, f] = SLA[priority];
    const loc = ev.location || null;
    const inc = {
      id: newId(), version: 1, status: 'new', priority, score: 100 - priority * 15, kind,
      location: loc, jurisdiction: loc ? jurisdictionOf(loc.lat, loc.lon) : 'shiju', cell: loc ? cellOf(loc.lat, loc.lon) : null,
      desks: [...desks], events: [ev.id], repeat_count: 1, diverted_to: null, created_at: receivedAt, updated_at: receivedAt,
      deadlines: {
        respond: new Date(t0 + r * 1000).toISOString(), arrive: new Date(t0 + a * 1000).toISOString(),
        reinforce: new Date(t0 + f * 1000).toISOString(),
      },
      sla: { respond: 'pending', arrive: 'pending', reinforce: 'pending' }, units: [], timeline: [], text: ev.text,
      callers: ev.caller ? [ev.caller] : [], flags: loc ? [] : ['unlocated'], hold: !!ev.hold,
    };
    incidents.set(inc.id, inc);
    timeline(inc, 'incident created from ' + ev.source, 'router');
    dispatch(inc);
    pubIncident(inc);
    return inc;
  }

  function openTasksOf(inc) {
    return inc.units.map((x) => tasks.get(x.task)).filter(isOpenTask);
  }

  function endIncident(inc, status, by, reason) {
    for (const t of openTasksOf(inc)) cancelTask(t, reason || 'incident ' + status);
    inc.status = status;
    inc.candidates = [];
    for (const s of ['respond', 'arrive', 'reinforce']) if (inc.sla[s] === 'pending') inc.sla[s] = 'n/a';
    timeline(inc, status, by);
    bump(inc);
  }

  function escalation(inc, kind, message, by, extra) {
    publish('board', 'escalation', Object.assign({ id: newId(), incident: inc.id, jurisdiction: inc.jurisdiction, at: now(), kind, message, by }, extra || {}));
  }

  function taskMoved(t, status, by, note) {
    const inc = incidents.get(t.incident);
    const rank = { issued: 0, acknowledged: 1, en_route: 2, on_scene: 3, cleared: 4, cancelled: 4 };
    if (['cleared', 'cancelled'].includes(t.status) || rank[status] <= rank[t.status]) {
      return { code: 'conflict', message: 'task is ' + t.status + ', cannot become ' + status };
    }
    t.status = status;
    const u = units.get(t.unit);
    if (u) {
      u.status = status === 'cleared' ? 'available' : status === 'acknowledged' ? 'assigned' : status;
      if (status === 'cleared') u.task = null;
      u.at = now();
    }
    if (inc) {
      const iu = inc.units.find((x) => x.task === t.id);
      if (iu) iu.status = status;
      const nowMs = Date.now();
      const meet = (s) => { if (inc.sla[s] === 'pending') inc.sla[s] = nowMs <= Date.parse(inc.deadlines[s]) ? 'met' : 'breached'; };
      meet('respond');
      if (status === 'on_scene' || status === 'cleared') {
        meet('arrive');
        const onScene = inc.units.filter((x) => x.status === 'on_scene' || x.status === 'cleared').length;
        if (onScene >= SLA[inc.priority][3]) meet('reinforce');
      }
      if (status !== 'cleared') inc.status = status;
      else if (!openTasksOf(inc).length) inc.status = 'resolved';
      timeline(inc, t.unit + ' ' + status + (note ? ': ' + note : ''), by);
    }
    taskVersion(t, []);
    if (u) pubUnit(u);
    if (inc) bump(inc);
    return null;
  }

  // ---- what a command may carry (bus/src/model/command.rs, deny_unknown_fields) ----

  const FIELDS = {
    ack: { task: 'id!' },
    status: { status: ['available', 'en_route', 'on_scene', 'cleared', 'busy', 'off_duty', 'out_of_service', '!'], task: 'id', lat: 'num', lon: 'num', note: 'text', type: 'str', reason: 'text' },
    position: { lat: 'num!', lon: 'num!' },
    assign: { incident: 'id!', unit: 'id!', mode: ['add', 'replace'], preempt: 'bool' },
    divert: { incident: 'id!', to: 'id!' },
    escalate: { incident: 'id!', desk: 'str', unit_type: 'str', note: 'text' },
    close: { incident: 'id!', disposition: 'text!', feedback: ['satisfied', 'unsatisfied'] },
    update: { incident: 'id!', priority: 'prio', kind: 'str', text: 'text', location: 'loc', reason: 'text' },
    note: { incident: 'id', task: 'id', text: 'text!' },
    reopen: { incident: 'id!', reason: 'text!' },
    merge: { incident: 'id!', from: 'id!' },
    split: { incident: 'id!', events: 'ids!', reason: 'text' },
    hold: { incident: 'id!', hold: 'bool', reason: 'text' },
    refuse: { task: 'id!', reason: 'text!' },
    create: { kind: 'str!', text: 'text!', location: 'loc', caller: 'caller' },
  };

  const nonEmpty = (v) => typeof v === 'string' && v.trim() !== '';
  const TYPES = {
    id: nonEmpty, str: nonEmpty, text: (v) => typeof v === 'string', num: (v) => typeof v === 'number' && isFinite(v),
    bool: (v) => typeof v === 'boolean', prio: (v) => Number.isInteger(v) && v >= 1 && v <= 4,
    ids: (v) => Array.isArray(v) && v.length > 0 && v.every(nonEmpty),
    loc: (v) => v && typeof v === 'object' && TYPES.num(v.lat) && TYPES.num(v.lon) && Object.keys(v).every((k) => ['lat', 'lon', 'address'].includes(k)),
    caller: (v) => v && typeof v === 'object' && Object.keys(v).every((k) => ['phone', 'name'].includes(k) && typeof v[k] === 'string'),
  };

  /** null, or the bad_request the api would answer for a field of `m`. */
  function checkFields(m) {
    const spec = FIELDS[m.op];
    if (!spec) return { code: 'bad_request', message: 'unknown op ' + m.op };
    for (const k of Object.keys(m)) {
      if (k !== 'op' && !(k in spec)) return { code: 'bad_request', message: 'unknown field `' + k + '` for ' + m.op };
    }
    for (const [k, rule] of Object.entries(spec)) {
      const required = Array.isArray(rule) ? rule.includes('!') : rule.endsWith('!');
      if (m[k] === undefined) {
        if (required) return { code: 'bad_request', message: 'missing field `' + k + '`' };
        continue;
      }
      const ok = Array.isArray(rule) ? rule.includes(m[k]) && m[k] !== '!' : TYPES[rule.replace('!', '')](m[k]);
      if (!ok) return { code: 'bad_request', message: k + ': invalid value ' + JSON.stringify(m[k]) };
      if (required && rule === 'text!' && !nonEmpty(m[k])) return { code: 'bad_request', message: k + ': must not be empty' };
    }
    if (m.op === 'update') {
      if (!['priority', 'kind', 'text', 'location'].some((k) => m[k] !== undefined)) return { code: 'bad_request', message: 'update needs priority, kind, text or location' };
      if (m.priority !== undefined && !nonEmpty(m.reason)) return { code: 'bad_request', message: 'reason: required with priority' };
    }
    if (m.op === 'status' && m.status === 'out_of_service' && !nonEmpty(m.reason)) return { code: 'bad_request', message: 'reason: required for out_of_service' };
    if (m.op === 'escalate' && !m.desk && !m.unit_type) return { code: 'bad_request', message: 'desk or unit_type is required' };
    return null;
  }

  const OPERATOR_OPS = ['assign', 'divert', 'escalate', 'close', 'update', 'reopen', 'merge', 'split', 'hold', 'create'];

  // Returns null on success or {code, message}.
  function command(c, m) {
    const bad = checkFields(m);
    if (bad) return bad;
    const isOp = c.role === 'operator' || c.role === 'admin';
    const isUnit = c.role === 'unit' || c.role === 'admin';
    const by = c.sub;
    if (OPERATOR_OPS.includes(m.op) || (m.op === 'note' && m.incident)) {
      if (!isOp) return { code: 'forbidden', message: 'role ' + c.role + ' may not ' + m.op };
    }
    if (m.op === 'create') {
      const ev = { id: newId(), source: 'report', source_id: 'op-' + newId(), kind: m.kind, text: m.text, location: m.location, caller: m.caller };
      createIncident(ev, now());
      return null;
    }
    const inc = m.incident ? incidents.get(m.incident) : null;
    if (m.incident) {
      if (!inc) return { code: 'not_found', message: 'no incident ' + m.incident };
      if (!covers(c, inc.jurisdiction)) return { code: 'forbidden', message: 'not your jurisdiction' };
      const closed = ['closed', 'diverted'].includes(inc.status);
      if (m.op === 'reopen' ? !(closed || inc.status === 'resolved') : closed) return { code: 'conflict', message: 'incident is ' + inc.status };
    }
    switch (m.op) {
      case 'ack': case 'status': case 'position': {
        if (!isUnit) return { code: 'forbidden', message: 'role ' + c.role + ' may not ' + m.op };
        if (m.op === 'ack' || (m.op === 'status' && m.task)) {
          const t = tasks.get(m.task);
          if (!t) return { code: 'not_found', message: 'no task ' + m.task };
          if (c.role === 'unit' && t.unit !== c.unit) return { code: 'forbidden', message: 'not your task' };
          const want = m.op === 'ack' ? 'acknowledged' : m.status;
          if (!['acknowledged', 'en_route', 'on_scene', 'cleared'].includes(want)) return { code: 'bad_request', message: 'status ' + want + ' with a task' };
          if (isFinite(m.lat) && isFinite(m.lon)) { const u = units.get(t.unit); if (u) Object.assign(u, { lat: m.lat, lon: m.lon }); }
          return taskMoved(t, want, by, m.note);
        }
        const id = c.unit;
        if (!id) return { code: 'bad_request', message: 'no unit in the token' };
        let u = units.get(id);
        if (m.op === 'position') {
          if (!u) return { code: 'not_found', message: 'unit ' + id + ' is not on duty' };
          Object.assign(u, { lat: m.lat, lon: m.lon, at: now() });
          pubUnit(u);
          return null;
        }
        if (!['available', 'busy', 'off_duty', 'out_of_service'].includes(m.status)) return { code: 'bad_request', message: 'status ' + m.status + ' needs a task' };
        if (m.status === 'available' && (!isFinite(m.lat) || !isFinite(m.lon))) return { code: 'bad_request', message: 'available needs lat and lon' };
        if (!u) {
          u = { id, type: m.type || 'patrol_car', jurisdiction: jurisdictionOf(m.lat, m.lon), status: 'off_duty', lat: m.lat, lon: m.lon, at: now(), task: null, version: 0 };
          units.set(id, u);
        }
        if (u.task && m.status !== 'busy') return { code: 'conflict', message: 'unit has an open task' };
        Object.assign(u, { status: m.status, at: now() }, isFinite(m.lat) ? { lat: m.lat, lon: m.lon } : {});
        if (m.reason) u.reason = m.reason; else delete u.reason;
        u.version = (u.version || 0) + 1;
        pubUnit(u);
        return null;
      }
      case 'refuse': {
        if (!isUnit) return { code: 'forbidden', message: 'role ' + c.role + ' may not refuse' };
        const t = tasks.get(m.task);
        if (!t) return { code: 'not_found', message: 'no task ' + m.task };
        if (c.role === 'unit' && t.unit !== c.unit) return { code: 'forbidden', message: 'not your task' };
        if (!['issued', 'acknowledged', 'en_route'].includes(t.status)) return { code: 'conflict', message: 'task is ' + t.status };
        const ti = incidents.get(t.incident);
        cancelTask(t, 'refused: ' + m.reason);
        timeline(ti, t.unit + ' refused: ' + m.reason, by);
        escalation(ti, 'refused', t.unit + ' refused: ' + m.reason, by);
        ti.refused = (ti.refused || []).concat(t.unit);
        dispatch(ti, ti.refused);
        bump(ti);
        return null;
      }
      case 'note': {
        if (m.task || !m.incident) {
          if (!isUnit) return { code: 'forbidden', message: 'role ' + c.role + ' may not note a task' };
          const u = units.get(c.unit);
          const t = tasks.get(m.task || (u && u.task));
          if (!t) return { code: 'not_found', message: 'no task ' + (m.task || '') };
          if (c.role === 'unit' && t.unit !== c.unit) return { code: 'forbidden', message: 'not your task' };
          const ti = incidents.get(t.incident);
          timeline(ti, 'note from ' + t.unit + ': ' + m.text, by);
          bump(ti);
          return null;
        }
        timeline(inc, 'note: ' + m.text, by);
        bump(inc);
        return null;
      }
      case 'assign': {
        const u = units.get(m.unit);
        if (!u) return { code: 'not_found', message: 'no unit ' + m.unit };
        const busyWith = u.task && tasks.get(u.task);
        if (u.status !== 'available') {
          const canPreempt = m.preempt && busyWith && isOpenTask(busyWith) && busyWith.priority > inc.priority;
          if (!canPreempt) {
            // As in qzx: the api publishes the command (ok), the router
            // rejects it and says so on the escalations topic.
            escalation(inc, 'rejected', 'unit ' + m.unit + ' is ' + u.status, by, { action: newId() });
            return null;
          }
          const other = incidents.get(busyWith.incident);
          cancelTask(busyWith, 'pre-empted for a P' + inc.priority + ' incident');
          if (other) {
            timeline(other, u.id + ' pre-empted', by);
            escalation(other, 'preempted', u.id + ' taken for a P' + inc.priority, by);
            dispatch(other, [u.id]);
            bump(other);
          }
        }
        const primaries = openTasksOf(inc).filter((t) => inc.units.find((x) => x.task === t.id).role === 'primary');
        if ((m.mode || 'replace') === 'replace') for (const t of primaries) cancelTask(t, 'replaced by ' + m.unit);
        issueTask(inc, u, m.mode === 'add' && primaries.length ? 'reinforcement' : 'primary', by);
        dispatch(inc);
        bump(inc);
        return null;
      }
      case 'update': {
        const changes = [];
        if (m.priority !== undefined && m.priority !== inc.priority) { inc.priority = m.priority; changes.push('priority'); }
        if (m.kind !== undefined && m.kind !== inc.kind) { inc.kind = m.kind; changes.push('kind'); }
        if (m.text !== undefined && m.text !== inc.text) { inc.text = m.text; changes.push('text'); }
        if (m.location !== undefined) {
          inc.location = m.location;
          inc.flags = (inc.flags || []).filter((f) => f !== 'unlocated');
          changes.push('location');
        }
        timeline(inc, 'updated ' + changes.join(', ') + (m.reason ? ': ' + m.reason : ''), by);
        tellUnits(inc, changes);
        dispatch(inc);
        bump(inc);
        return null;
      }
      case 'hold':
        inc.hold = m.hold !== false;
        timeline(inc, (inc.hold ? 'dispatch held' : 'dispatch resumed') + (m.reason ? ': ' + m.reason : ''), by);
        dispatch(inc);
        bump(inc);
        return null;
      case 'reopen':
        inc.status = inc.units.some((x) => isOpenTask(tasks.get(x.task))) ? 'dispatched' : 'new';
        inc.diverted_to = null;
        delete inc.disposition;
        timeline(inc, 'reopened: ' + m.reason, by);
        dispatch(inc);
        bump(inc);
        return null;
      case 'merge': {
        const from = incidents.get(m.from);
        if (!from) return { code: 'not_found', message: 'no incident ' + m.from };
        if (from.id === inc.id) return { code: 'bad_request', message: 'from: an incident cannot merge into itself' };
        if (['closed', 'diverted'].includes(from.status)) return { code: 'conflict', message: 'incident ' + m.from + ' is ' + from.status };
        inc.events.push(...from.events);
        for (const cl of from.callers || []) if (!inc.callers.some((x) => x.phone && x.phone === cl.phone)) inc.callers.push(cl);
        inc.repeat_count += from.repeat_count;
        inc.merged = (inc.merged || []).concat(from.id);
        for (const iu of from.units) {
          const t = tasks.get(iu.task);
          inc.units.push(Object.assign({}, iu, { role: 'reinforcement' }));
          if (isOpenTask(t)) { t.incident = inc.id; taskVersion(t, ['merged']); }
        }
        from.units = [];
        from.merged_into = inc.id;
        from.disposition = 'merged into ' + inc.id;
        endIncident(from, 'closed', by);
        timeline(inc, 'merged ' + from.id, by);
        tellUnits(inc, ['units']);
        bump(inc);
        return null;
      }
      case 'split': {
        if (!m.events.every((e) => inc.events.includes(e))) return { code: 'bad_request', message: 'events: not all of them are on the incident' };
        if (m.events.length >= inc.events.length) return { code: 'bad_request', message: 'events: at least one must stay' };
        inc.events = inc.events.filter((e) => !m.events.includes(e));
        const fresh = createIncident({ id: m.events[0], source: 'split', kind: inc.kind, location: inc.location, text: inc.text }, now());
        fresh.events = [...m.events];
        fresh.split_from = inc.id;
        timeline(inc, 'split off ' + fresh.id + (m.reason ? ': ' + m.reason : ''), by);
        bump(fresh);
        bump(inc);
        return null;
      }
      case 'divert':
        inc.diverted_to = m.to || '12345';
        endIncident(inc, 'diverted', by);
        return null;
      case 'escalate':
        if (m.desk && !inc.desks.includes(m.desk)) inc.desks.push(m.desk);
        timeline(inc, 'escalated to ' + (m.desk || m.unit_type) + (m.note ? ': ' + m.note : ''), by);
        escalation(inc, 'escalate', m.note || 'escalated', by, { desks: m.desk ? [m.desk] : [], unit_type: m.unit_type });
        bump(inc);
        return null;
      case 'close':
        inc.disposition = m.disposition;
        if (m.feedback) inc.feedback = m.feedback;
        endIncident(inc, 'closed', by);
        return null;
      default:
        return { code: 'bad_request', message: 'unknown op ' + m.op };
    }
  }

  function snapshot(cl, channel) {
    const head = cursorOf(seq);
    const out = [];
    if (channel === 'board') {
      for (const i of incidents.values()) if (!['closed', 'diverted'].includes(i.status) && covers(cl.claims, i.jurisdiction)) out.push(['incident', i]);
      for (const u of units.values()) if (covers(cl.claims, u.jurisdiction)) out.push(['unit', u]);
    } else {
      const id = channel.slice(5);
      for (const t of tasks.values()) if (t.unit === id && !['cleared', 'cancelled'].includes(t.status)) out.push(['task', t]);
    }
    for (const [kind, data] of out) deliver(cl, { type: 'push', channel, cursor: head, kind, data, snapshot: true });
  }

  function onMessage(cl, text) {
    let m;
    try { m = JSON.parse(text); } catch { return deliver(cl, { type: 'error', code: 'bad_request', message: 'not JSON' }); }
    const id = m.id;
    if (m.op === 'ping') return deliver(cl, { type: 'pong', id });
    if (m.op === 'subscribe') {
      const ch = String(m.channel || '');
      const c = cl.claims;
      if (ch.startsWith('unit:')) {
        if (c.role !== 'admin' && !(c.role === 'unit' && c.unit === ch.slice(5))) return deliver(cl, { type: 'error', id, code: 'forbidden', message: 'not your unit' });
      } else if (ch === 'board') {
        if (!['operator', 'analyst', 'admin'].includes(c.role)) return deliver(cl, { type: 'error', id, code: 'forbidden', message: 'board needs operator' });
      } else return deliver(cl, { type: 'error', id, code: 'bad_request', message: 'unknown channel' });
      cl.subs.add(ch);
      const h = history.get(ch) || [];
      const head = cursorOf(seq);
      const entry = { channel: ch, since: m.since || null, gap: false };
      subscribes.push(entry);
      if (m.since) {
        const oldest = h.length ? h[0].cursor : head;
        const gap = m.since > head || (h.length && m.since < cursorOf(Number(oldest) - 1));
        if (!gap) {
          deliver(cl, { type: 'subscribed', id, channel: ch, cursor: head });
          for (const e of h) if (e.cursor > m.since && (ch !== 'board' || visibleTo(cl, e.msg.kind, e.msg.data))) deliver(cl, e.msg);
          return;
        }
        entry.gap = true;
        deliver(cl, { type: 'subscribed', id, channel: ch, cursor: head, gap: true });
        return snapshot(cl, ch);
      }
      deliver(cl, { type: 'subscribed', id, channel: ch, cursor: head });
      return snapshot(cl, ch);
    }
    if (m.op === 'unsubscribe') { cl.subs.delete(m.channel); return deliver(cl, { type: 'ok', id }); }
    const { id: _, ...cmd } = m;
    log.push({ by: cl.claims.sub, ...cmd });
    const err = command(cl.claims, cmd);
    deliver(cl, err ? { type: 'error', id, ...err } : { type: 'ok', id });
  }

  // ---- HTTP ---------------------------------------------------------------------------

  function send(res, status, body, headers) {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    res.writeHead(status, Object.assign({ 'content-type': typeof body === 'string' ? 'text/plain' : 'application/json' }, headers || {}));
    res.end(text);
  }

  function auth(req) {
    const h = req.headers.authorization || '';
    return h.startsWith('Bearer ') ? verify(secret, h.slice(7)) : null;
  }

  function coverage() {
    const avail = [...units.values()].filter((u) => u.status === 'available');
    const out = cells.map((c) => {
      let best = Infinity;
      for (const u of avail) best = Math.min(best, (haversine(u.lat, u.lon, c.centre[0], c.centre[1]) * 1.4) / (SPEED_KMH[u.type] / 3.6));
      return {
        cell: c.cell, lat: c.centre[0], lon: c.centre[1], jurisdiction: jurisdictionOf(c.centre[0], c.centre[1]),
        best_s: isFinite(best) ? Math.round(best) : null, within_60s: best <= 60, within_180s: best <= 180, within_300s: best <= 300,
      };
    });
    const share = (k) => out.filter((c) => c[k]).length / out.length;
    return { cells: out, total_cells: out.length, available_units: avail.length, share_60s: share('within_60s'), share_180s: share('within_180s'), share_300s: share('within_300s') };
  }

  function stats() {
    const all = [...incidents.values()];
    const stages = {};
    for (const s of ['respond', 'arrive', 'reinforce']) {
      const met = all.filter((i) => i.sla[s] === 'met').length;
      const breached = all.filter((i) => i.sla[s] === 'breached').length;
      stages[s] = { met, breached, pending: all.filter((i) => i.sla[s] === 'pending').length, share_met: met + breached ? met / (met + breached) : null, p50_s: { respond: 38, arrive: 142, reinforce: 251 }[s], p90_s: { respond: 71, arrive: 205, reinforce: 340 }[s] };
    }
    // Shaped like dispatch-ui-api's stats.rs: hotspots by cell, no address.
    const hot = all.filter((i) => i.repeat_count > 1).sort((a, b) => b.repeat_count - a.repeat_count).slice(0, 3)
      .map((i) => ({ cell: i.cell, count: i.repeat_count, lat: i.location.lat, lon: i.location.lon }));
    const byStatus = {};
    for (const i of all) byStatus[i.status] = (byStatus[i.status] || 0) + 1;
    return { window_s: 3600, incidents: all.length, by_status: byStatus, stages, hotspots: hot };
  }

  async function body(req) {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    return Buffer.concat(chunks).toString();
  }

  async function handle(req, res) {
    const url = new URL(req.url, 'http://x');
    const p = url.pathname;
    if (req.method === 'GET' && (p === '/' || p === '/terminal' || p.startsWith('/web/'))) {
      const file = p === '/' ? 'board.html' : p === '/terminal' ? 'terminal.html' : path.basename(p);
      const types = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8', svg: 'image/svg+xml' };
      try {
        const data = fs.readFileSync(path.join(WEB, file));
        return send(res, 200, data.toString(), { 'content-type': types[file.split('.').pop()] || 'application/octet-stream', 'cache-control': 'no-store' });
      } catch {
        return send(res, 404, { error: 'not_found', message: 'no such page' });
      }
    }
    if (p === '/healthz' || p === '/readyz') return send(res, 200, 'ok');
    const c = auth(req);
    if (!c) return send(res, 401, { error: 'unauthorized', message: 'missing or invalid token' });
    if (req.method === 'POST' && p === '/v1/events') {
      if (c.role !== 'source' && c.role !== 'admin') return send(res, 403, { error: 'forbidden', message: 'source only' });
      let items;
      try { items = JSON.parse(await body(req)); } catch { return send(res, 400, { error: 'bad_request', message: 'not JSON' }); }
      if (!Array.isArray(items)) items = [items];
      const accepted = [];
      const rejected = [];
      items.forEach((ev, index) => {
        if (!ev || !ev.location || !isFinite(ev.location.lat) || !isFinite(ev.location.lon)) {
          rejected.push({ index, errors: [{ field: 'location', message: 'location.lat and location.lon are required' }] });
          return;
        }
        const key = ev.source + '/' + ev.source_id;
        if (sourceIds.has(key)) { accepted.push({ index, id: sourceIds.get(key), source_id: ev.source_id, duplicate: true }); return; }
        const id = newId();
        sourceIds.set(key, id);
        createIncident(Object.assign({ id }, ev), now());
        accepted.push({ index, id, source_id: ev.source_id, duplicate: false });
      });
      return send(res, accepted.length ? 202 : 400, { accepted, rejected });
    }
    if (req.method !== 'GET') return send(res, 404, { error: 'not_found', message: p });
    const one = /^\/api\/v1\/incidents\/([^/]+)(\/candidates)?$/.exec(p);
    if (one) {
      const inc = incidents.get(decodeURIComponent(one[1]));
      if (!inc) return send(res, 404, { error: 'not_found', message: 'incident ' + one[1] + ' not found' });
      if (!covers(c, inc.jurisdiction)) return send(res, 403, { error: 'forbidden', message: 'not your jurisdiction' });
      if (!one[2]) return send(res, 200, inc);
      // As the api: what the router last wrote on the incident.
      return send(res, 200, { incident: inc.id, hold: !!inc.hold, mode: 'auto', candidates: inc.candidates || [] });
    }
    switch (p) {
      case '/api/v1/incidents': {
        const st = url.searchParams.get('status') || 'open';
        // As rest.rs: newest first, at most `limit` (default 100).
        const list = [...incidents.values()].filter((i) => covers(c, i.jurisdiction) &&
          (st === 'all' || (st === 'open') === !['closed', 'diverted'].includes(i.status)))
          .sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at)).slice(0, Number(url.searchParams.get('limit') || 100));
        return send(res, 200, { incidents: list });
      }
      case '/api/v1/units':
        return send(res, 200, { units: [...units.values()].filter((u) => (c.role === 'unit' ? u.id === c.unit : covers(c, u.jurisdiction))) });
      case '/api/v1/stats': return send(res, 200, stats());
      case '/api/v1/coverage': return send(res, 200, coverage());
      case '/api/v1/jurisdictions':
        return send(res, 200, { jurisdictions: JURISDICTIONS.map((j) => ({
          id: j.id, name: j.name, name_en: j.name_en, centre: { lat: j.centre[0], lon: j.centre[1] }, area: j.area.map(([lat, lon]) => ({ lat, lon })),
        })) });
      case '/api/v1/info':
        return send(res, 200, { version: 'mock', kafka: { brokers: 'none', embedded: true }, store: 'mock',
          dispatch: { stale_after_s: staleAfterS, mode: { 1: 'auto', 2: 'auto', 3: 'auto', 4: 'auto' } } });
      default: return send(res, 404, { error: 'not_found', message: p });
    }
  }

  // ---- lifecycle ------------------------------------------------------------------------

  let server = null;
  const wss = new WebSocketServer({ noServer: true });
  wss.on('connection', (ws, req, claims) => {
    const cl = { ws, claims, subs: new Set() };
    clients.add(cl);
    ws.on('message', (d) => onMessage(cl, d.toString()));
    ws.on('close', () => clients.delete(cl));
  });

  let port = opts.port || 0;
  async function listen() {
    server = http.createServer((req, res) => handle(req, res).catch((e) => send(res, 500, { error: 'internal', message: String(e) })));
    server.on('upgrade', (req, socket, head) => {
      const url = new URL(req.url, 'http://x');
      const claims = url.pathname === '/ws' ? verify(secret, url.searchParams.get('token')) : null;
      if (!claims) {
        socket.end('HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n');
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req, claims));
    });
    await new Promise((resolve, reject) => { server.once('error', reject); server.listen(port, '127.0.0.1', resolve); });
    port = server.address().port;
  }

  async function stop() {
    for (const cl of clients) cl.ws.terminate();
    clients.clear();
    if (server) {
      server.closeAllConnections();
      await new Promise((r) => server.close(() => r()));
      server = null;
    }
  }

  // The 1-3-5 clock: a pending stage past its deadline is breached.
  const clockTimer = setInterval(() => {
    const t = Date.now();
    for (const inc of incidents.values()) {
      if (['closed', 'diverted'].includes(inc.status)) continue;
      let changed = false;
      for (const s of ['respond', 'arrive', 'reinforce']) {
        if (inc.sla[s] === 'pending' && t > Date.parse(inc.deadlines[s])) {
          inc.sla[s] = 'breached';
          changed = true;
          publish('board', 'escalation', { id: newId(), incident: inc.id, jurisdiction: inc.jurisdiction, at: now(), kind: 'sla_breach', stage: s,
            desks: ['supervisor'], message: s + ' deadline passed', by: 'router' });
        }
      }
      if (changed) bump(inc);
    }
  }, 1000);
  clockTimer.unref();

  function seed() {
    // Units on duty at home, except quancheng-01 (the test's unit).
    for (const u of units.values()) if (u.id !== 'quancheng-01') u.status = 'available';
    const ago = (s) => new Date(Date.now() - s * 1000).toISOString();
    const mk = (kind, lat, lon, address, text, ageS, extra) => {
      const caller = { phone: '1380000' + String(ageS).padStart(4, '0') };
      const inc = createIncident({ id: newId(), source: 'call110', kind, location: { lat, lon, address }, text, caller }, ago(ageS));
      Object.assign(inc, extra || {});
      return inc;
    };
    const a = mk('assault', 36.6772, 117.0241, '历下区大明湖路271号', '两人在路边打架，一人受伤', 150);
    const ta = [...tasks.values()].find((t) => t.incident === a.id);
    if (ta) taskMoved(ta, 'en_route', 'daminghu-01');
    mk('traffic_accident', 36.6625, 117.0455, '历下区解放路与历山路路口', '两车相撞，无人员受伤', 40);
    const th = mk('theft', 36.6598, 117.0011, '市中区趵突泉南路3号', '电动车被盗', 400, { repeat_count: 3 });
    const tt = [...tasks.values()].find((t) => t.incident === th.id);
    if (tt) taskMoved(tt, 'on_scene', 'baotuquan-01');
    mk('noise', 36.6445, 117.0334, '历下区千佛山路12号', '楼上装修噪音', 900);
    mk('fire', 36.6801, 116.9942, '槐荫区堤口路88号', '居民楼冒烟起火', 20);
    for (const u of units.values()) pubUnit(u);
  }

  await listen();
  if (opts.seed) seed();

  const tokens = {
    operator: mint(secret, { sub: 'mock-operator', role: 'operator', jurisdictions: ['*'] }),
    source: mint(secret, { sub: 'mock-source', role: 'source', jurisdictions: ['*'] }),
    unit: (id) => mint(secret, { sub: id, role: 'unit', jurisdictions: ['*'], unit: id }),
  };

  return {
    get port() { return port; },
    get url() { return 'http://127.0.0.1:' + port; },
    secret,
    tokens,
    mint: (claims) => mint(secret, claims),
    stop,
    /** Listens again on the same port after stop(). */
    start: listen,
    /** An incident from an input event as if received `ageS` seconds ago (dispatched like any other). */
    inject(ev, ageS = 0) {
      return createIncident(Object.assign({ id: newId(), source: 'call110' }, ev), new Date(Date.now() - ageS * 1000).toISOString());
    },
    /** Runs an operator command as `sub`; returns null or {code, message}. */
    command: (cmd, claims) => command(Object.assign({ sub: 'mock-operator', role: 'operator', jurisdictions: ['*'] }, claims || {}), cmd),
    /** Stops accepting and closes every socket, like a killed process; state is kept (as Kafka and Redis would). */
    async restart(downMs = 0) {
      await stop();
      if (downMs) await new Promise((r) => setTimeout(r, downMs));
      await listen();
    },
    async close() {
      clearInterval(clockTimer);
      await stop();
    },
    state: { incidents, units, tasks, log, subscribes },
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const m = await startMock({ port: Number(process.argv[2] || 8090), seed: true });
  console.log('mock qzx on ' + m.url);
  console.log('board     ' + m.url + '/?token=' + m.tokens.operator);
  console.log('terminal  ' + m.url + '/terminal?token=' + m.tokens.unit('quancheng-01'));
  console.log('source token ' + m.tokens.source);
}
