/*
 * qzx operator board: what the board knows. The incidents and units as the
 * router published them, the jurisdictions, coverage, KPIs and dispatch
 * settings from REST, and the selected incident. Everything else in the
 * board reads it from `QZX.board` (loaded first, after common.js).
 *
 * Incidents and units are kept keyed by id and replaced only by a newer
 * `version`, so a replayed or reordered push never rolls one back. REST
 * answers are read in the one shape dispatch-ui-api's rest.rs and stats.rs
 * write; nothing here guesses between shapes.
 *
 * It must never touch the DOM or send a command: a change calls
 * `changed()`, and the pages' renderers (registered with `onRender`) draw
 * it on the next frame.
 */
(function () {
  'use strict';
  const Q = window.QZX;

  const B = {
    token: null,
    me: null, // the token's claims
    conn: null,
    incidents: new Map(), // id -> incident (closed ones kept as tombstones)
    units: new Map(), // id -> unit
    jurisdictions: [], // [{id, name, name_en, centre:[lat,lon], area:[[lat,lon]]}]
    coverage: [], // [{id, centre:[lat,lon], level:1|3|5|0}]
    stats: null, // {stages:{respond:{share,p50,p90,breached}}, breaches, hot:[{cell, at, count}]}
    dispatch: { stale_after_s: null, mode: null }, // from GET /api/v1/info
    selected: null, // incident id
    deskFilter: '',
    mapData: 0, // bumped when coverage or jurisdictions are (re)loaded
  };
  Q.board = B;

  // ---- rendering hook ---------------------------------------------------------

  const renderers = [];
  let scheduled = false;

  /** `fn` runs on the frame after any change. */
  B.onRender = (fn) => renderers.push(fn);

  B.changed = function () {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      for (const fn of renderers) fn();
    });
  };

  // ---- reading the state -------------------------------------------------------

  /** Open and in the operator's jurisdictions: shown on the board. */
  B.visible = function (inc) {
    if (!inc || inc.status === 'closed' || inc.status === 'diverted') return false;
    const me = B.me;
    const js = (me && me.jurisdictions) || [];
    if (!me || me.role === 'admin' || js.includes('*')) return true;
    return js.includes(inc.jurisdiction);
  };

  /** The board's incidents: visible, of the desk filter, by priority then age. */
  B.sorted = function () {
    return [...B.incidents.values()].filter((i) => B.visible(i) && (!B.deskFilter || (i.desks || []).includes(B.deskFilter))).sort((a, b) =>
      (a.priority || 9) - (b.priority || 9) || (Q.ms(a.created_at) || 0) - (Q.ms(b.created_at) || 0));
  };

  B.addr = function (inc) {
    const l = inc.location;
    return (l && l.address) || (l ? l.lat.toFixed(4) + ', ' + l.lon.toFixed(4) : '—');
  };

  B.jurName = function (id) {
    const j = B.jurisdictions.find((x) => x.id === id);
    if (!j) return id || '—';
    return Q.lang === 'en' ? j.name_en : j.name;
  };

  B.unitName = (id) => (B.units.get(id) && B.units.get(id).name) || id;

  /**
   * Not heard from for longer than the router's `dispatch.stale_after_s`:
   * its position cannot be trusted, and the router sends it nowhere. A unit
   * off duty is not stale, only off.
   */
  B.isStale = function (u) {
    const limit = B.dispatch.stale_after_s;
    if (!u || !limit || u.status === 'off_duty') return false;
    const at = Q.ms(u.at);
    return at != null && Q.now() - at > limit * 1000;
  };

  // ---- data in ----------------------------------------------------------------

  /** `onSettled(id)` runs when an incident leaves the board (closed, diverted). */
  B.onSettled = () => {};

  B.upsertIncident = function (inc) {
    if (!inc || !inc.id) return;
    const old = B.incidents.get(inc.id);
    if (old && Number(old.version || 0) > Number(inc.version || 0)) return;
    B.incidents.set(inc.id, inc);
    if (!B.visible(inc)) B.onSettled(inc.id);
    B.changed();
  };

  B.upsertUnit = function (u) {
    if (!u || !u.id) return;
    const old = B.units.get(u.id);
    if (old) {
      // The router bumps `version` on each record; a position report keeps
      // it, and is then ordered by its report time.
      const ov = Number(old.version || 0);
      const nv = Number(u.version || 0);
      if (ov > nv) return;
      if (ov === nv && Q.ms(old.at) != null && Q.ms(u.at) != null && Q.ms(old.at) > Q.ms(u.at)) return;
    }
    B.units.set(u.id, u);
    B.changed();
  };

  /**
   * A fresh subscription (first time, or history gap): what we hold may be
   * stale. Keep versions as tombstones so an older REST answer cannot bring
   * back an incident closed since; drop everything else.
   */
  B.resync = async function (onError) {
    for (const [id, inc] of B.incidents) B.incidents.set(id, Object.assign({}, inc, { status: 'closed', _stale: true }));
    B.changed();
    try {
      const raw = await Q.api(B.token, '/api/v1/incidents?status=open&limit=1000');
      for (const i of raw.incidents) {
        const old = B.incidents.get(i.id);
        if (old && old._stale && Number(old.version || 0) === Number(i.version || 0)) B.incidents.set(i.id, i);
        else B.upsertIncident(i);
      }
      B.changed();
    } catch (e) {
      onError(e, '/api/v1/incidents');
    }
  };

  /** GET /api/v1/units: {"units": [Unit]}. */
  B.loadUnits = async function (onError) {
    try {
      const raw = await Q.api(B.token, '/api/v1/units');
      for (const u of raw.units) B.upsertUnit(u);
    } catch (e) {
      onError(e, '/api/v1/units');
    }
  };

  /**
   * GET /api/v1/jurisdictions: {"jurisdictions": [{id, name, name_en,
   * centre: {lat, lon}, area_type, area: [{lat, lon}]}]}. The fallback
   * station (the city command centre) has an empty area and is not drawn.
   */
  B.loadJurisdictions = async function (onError) {
    try {
      const raw = await Q.api(B.token, '/api/v1/jurisdictions');
      B.jurisdictions = raw.jurisdictions.map((j) => ({
        id: j.id,
        name: j.name || j.id,
        name_en: j.name_en || j.name || j.id,
        centre: j.centre ? [j.centre.lat, j.centre.lon] : null,
        area: (j.area || []).map((p) => [p.lat, p.lon]),
      }));
      B.mapData += 1;
      B.changed();
      return true;
    } catch (e) {
      onError(e, '/api/v1/jurisdictions');
      return false;
    }
  };

  /**
   * GET /api/v1/coverage: {"cells": [{cell, lat, lon, jurisdiction, best_s
   * (null when no unit is available), within_60s, within_180s,
   * within_300s}], "share_60s", ...}.
   */
  B.loadCoverage = async function (onError) {
    try {
      const raw = await Q.api(B.token, '/api/v1/coverage');
      B.coverage = raw.cells.map((c) => {
        const s = c.best_s;
        const level = s == null ? 0 : s <= 60 ? 1 : s <= 180 ? 3 : s <= 300 ? 5 : 0;
        return { id: c.cell, centre: [c.lat, c.lon], level };
      });
      B.mapData += 1;
      B.changed();
    } catch (e) {
      onError(e, '/api/v1/coverage', true);
    }
  };

  /**
   * GET /api/v1/stats?window=1h: {window_s, incidents, by_status,
   * by_priority, stages: {respond: {met, breached, pending, "n/a",
   * share_met (0..1 or null), p50_s, p90_s, samples}, ...}, hotspots:
   * [{cell, count, lat, lon}]}. Breaches in the window are the stages'
   * `breached` summed.
   */
  B.loadStats = async function (onError) {
    try {
      const raw = await Q.api(B.token, '/api/v1/stats?window=1h');
      const stages = {};
      let breaches = 0;
      for (const s of ['respond', 'arrive', 'reinforce']) {
        const v = raw.stages[s] || {};
        stages[s] = { share: v.share_met ?? null, p50: v.p50_s ?? null, p90: v.p90_s ?? null };
        breaches += v.breached || 0;
      }
      const hot = (raw.hotspots || []).slice(0, 3).map((h) => ({
        cell: h.cell, count: h.count, at: h.lat != null && h.lon != null ? [h.lat, h.lon] : null,
      }));
      B.stats = { stages, breaches, hot };
      B.changed();
    } catch (e) {
      onError(e, '/api/v1/stats', true);
    }
  };

  /** GET /api/v1/info: `dispatch` {stale_after_s, mode} (absent on an older api). */
  B.loadInfo = async function (onError) {
    try {
      const raw = await Q.api(B.token, '/api/v1/info');
      if (raw.dispatch) B.dispatch = raw.dispatch;
      B.changed();
    } catch (e) {
      onError(e, '/api/v1/info', true);
    }
  };

  /** GET /api/v1/incidents?status=closed: the recently closed or diverted, newest first. */
  B.loadClosed = async function () {
    const raw = await Q.api(B.token, '/api/v1/incidents?status=closed&limit=30');
    return raw.incidents;
  };

  /**
   * A wall board runs for weeks: forget closed incidents an hour after their
   * last change. (A replay brings an incident's versions in order, so an
   * old open version can never come back after its closing one.)
   */
  B.pruneTombstones = function () {
    const cutoff = Q.now() - 3600 * 1000;
    for (const [id, inc] of B.incidents) {
      if (!B.visible(inc) && (Q.ms(inc.updated_at) || 0) < cutoff && id !== B.selected) B.incidents.delete(id);
    }
  };
})();
