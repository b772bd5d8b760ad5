/*
 * qzx operator board (GET /): the page's start. Logs in with the token,
 * keeps the one WebSocket (pushes into QZX.board's state, escalations as
 * alerts), sends the operator's commands and says how each one went,
 * refreshes the REST reads on timers, and wires the page's controls.
 *
 * The board's parts, each in its own file and loaded before this one:
 * board-state.js (what the board knows), board-list.js (incident list and
 * KPIs), board-map.js (the map), board-detail.js (the selected incident
 * and its actions), board-assign.js (the router's ranking of units),
 * board-forms.js (update, merge, split, new incident, reopen).
 *
 * This page must never change an incident by itself: it shows what the
 * router published and sends commands; every error reply is shown to the
 * operator.
 */
(function () {
  'use strict';
  const Q = window.QZX;
  const B = Q.board;
  const $ = (id) => document.getElementById(id);

  Q.addLabels({
    board_title: ['指挥大屏', 'Operator board'],
    escalation: ['超时/吹哨', 'Escalation'],
    load_failed: ['加载失败', 'Loading failed'],
  });

  let timers = [];

  // ---- commands ------------------------------------------------------------------

  /**
   * Sends a command, the button disabled until the reply; says ok or shows
   * the error. Resolves true on `ok`.
   */
  B.send = async function (btn, op, fields) {
    const what = (btn && btn.textContent) || op;
    if (btn) btn.disabled = true;
    try {
      if (!B.conn) throw { code: 'unavailable', message: Q.t('not_connected') };
      await B.conn.command(op, fields);
      Q.toast('ok', Q.t('sent_ok') + ': ' + what);
      return true;
    } catch (e) {
      Q.toast('error', what + ': ' + Q.errorText(e));
      return false;
    } finally {
      if (btn) btn.disabled = false;
      B.changed();
    }
  };

  B.select = function (id) {
    B.selected = id;
    B.detail.reset();
    B.changed();
    // On a phone the actions are below the map: bring them into view.
    if (window.innerWidth < 900) requestAnimationFrame(() => $('detail').scrollIntoView({ behavior: 'smooth', block: 'start' }));
  };

  const lastRestError = {};
  /** A failed REST read: 401 logs out; others are said once a minute per endpoint. */
  B.restError = function (e, path, quietWhenDown) {
    if (e.status === 401) { authFailed(); return; }
    // While the socket is down the banner already says so.
    if (quietWhenDown && B.conn && !B.conn.connected) return;
    const now = Q.now();
    if (lastRestError[path] && now - lastRestError[path] < 60000) return;
    lastRestError[path] = now;
    Q.toast('error', Q.t('load_failed') + ' ' + path + ': ' + Q.errorText(e));
  };

  // ---- pushes and escalations ------------------------------------------------------

  function onPush(msg) {
    const d = msg.data;
    switch (msg.kind) {
      case 'incident': B.upsertIncident(d); break;
      case 'unit': B.upsertUnit(d); break;
      case 'escalation': onEscalation(d); break;
      default: break; // events and tasks: the incident snapshot carries what the board shows
    }
  }

  // Closed or diverted: its alerts are settled.
  B.onSettled = (id) => {
    document.querySelectorAll('.toast[data-incident]').forEach((el) => { if (el.dataset.incident === id) el.remove(); });
  };

  const ESC_KINDS = {
    sla_breach: ['超时告警', 'SLA breach'],
    escalate: ['吹哨报到', 'Escalation'],
    redispatch: ['改派', 'Re-dispatched'],
    rejected: ['指令被拒绝', 'Command rejected'],
    no_unit: ['无可派警力', 'No unit available'],
    reconciled: ['警力状态已纠正', 'Unit freed (reconciled)'],
    refused: ['警力拒绝任务', 'Task refused'],
    preempted: ['警力被抢占', 'Unit pre-empted'],
  };
  const seen = new Set();
  const lastShown = new Map();

  /*
   * Escalations (bus::model::Escalation: kind sla_breach | escalate |
   * redispatch | rejected | no_unit | reconciled | refused | preempted,
   * stage, desks, unit_type, message, by). A command the router rejected
   * after the api accepted it arrives here (`by` is who sent it), so a
   * rejection of ours and `no_unit` are errors the operator must see.
   */
  function onEscalation(d, retried) {
    if (!d) return;
    const inc = B.incidents.get(d.incident);
    // Escalations and incidents come from different topics: give the
    // incident a moment to arrive so the alert can name it.
    if (!inc && !retried) { setTimeout(() => onEscalation(d, true), 1000); return; }
    // An alert about an incident closed or diverted since is settled; a
    // rejected command never is (the operator must learn it did not apply).
    if (inc && !B.visible(inc) && d.kind !== 'rejected') return;
    if (seen.has(d.id)) return; // replayed on resume
    if (d.id) { seen.add(d.id); if (seen.size > 500) seen.delete(seen.values().next().value); }
    const where = inc ? Q.kindName(inc.kind) + ' · ' + B.addr(inc) : d.incident || '';
    const label = Q.pick(ESC_KINDS[d.kind], d.kind || Q.t('escalation'));
    const extra = [d.stage && Q.pick(Q.STAGES[d.stage], d.stage), (d.desks || []).map((x) => Q.pick(Q.DESKS[x], x)).join('、'),
      d.unit_type && Q.pick(Q.UNIT_TYPES[d.unit_type], d.unit_type), d.message].filter(Boolean).join(' · ');
    // The router retries what it cannot do (no unit) and says so each
    // time: tell the operator once per incident, kind and stage a minute.
    const key = [d.incident, d.kind, d.stage].join('|');
    const last = lastShown.get(key) || 0;
    if (d.kind !== 'rejected' && Date.now() - last < 60000) return;
    lastShown.set(key, Date.now());
    if (lastShown.size > 500) lastShown.delete(lastShown.keys().next().value);
    // A rejection of this operator's own command is an error they must
    // see; someone else's (a unit's late ack) is only news.
    const mine = d.kind === 'rejected' && B.me && d.by === B.me.sub;
    const severe = mine || d.kind === 'no_unit';
    const el = Q.toast(severe ? 'error' : 'info', label + ': ' + where + (extra ? ' — ' + extra : ''));
    el.dataset.kind = d.kind || '';
    if (d.incident && d.kind !== 'rejected') el.dataset.incident = d.incident;
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
    if (B.conn) B.conn.stop();
    B.conn = null;
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
    B.token = tok;
    B.me = Q.claims(tok);
    const me = B.me;
    if (!me) { showLogin(Q.t('token_invalid')); return; }
    $('login').classList.add('hidden');
    $('board').classList.remove('hidden');
    $('who').textContent = (me.sub || '') + ' · ' + (me.role || '') + ' · ' + ((me.jurisdictions || []).join(',') || '—');
    Q.applyLabels();
    B.map.renderLegend();
    B.list.renderDeskFilter();
    onState({ connected: false, since: null });
    const err = B.restError;
    B.conn = new Q.Connection(tok, {
      onState,
      onPush,
      onSubscribed: (msg, resumed) => { if (!resumed) B.resync(err); B.loadUnits(err); },
      onError: (e) => Q.toast('error', Q.errorText(e)),
      onAuthFailed: authFailed,
    });
    B.conn.subscribe('board');
    B.conn.start();
    B.loadJurisdictions(err).then((ok) => {
      if (!ok) {
        const id = setInterval(async () => { if (await B.loadJurisdictions(err)) clearInterval(id); }, 10000);
        timers.push(id);
      }
    });
    B.loadInfo(err);
    B.loadCoverage(err);
    B.loadStats(err);
    timers.push(setInterval(B.list.tickClocks, 1000));
    timers.push(setInterval(() => B.loadStats(err), 10000));
    timers.push(setInterval(() => B.loadCoverage(err), 10000));
    timers.push(setInterval(() => B.loadUnits(err), 30000));
    // Units turn stale by the clock alone: redraw now and then.
    timers.push(setInterval(B.changed, 15000));
    timers.push(setInterval(B.pruneTombstones, 60000));
  }

  function init() {
    document.querySelectorAll('.lang-btn').forEach((b) => {
      b.onclick = () => {
        Q.setLang(Q.lang === 'en' ? 'zh' : 'en');
        Q.applyLabels();
        B.detail.reset();
        B.forms.close();
        B.map.renderLegend();
        B.list.renderDeskFilter();
        if (B.conn) onState({ connected: B.conn.connected, since: B.conn.downSince });
        B.map.render(true);
        B.changed();
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
      if (B.conn) B.conn.stop();
      Q.storeToken('board', null);
      location.reload();
    };
    $('incidents').addEventListener('click', (ev) => {
      const row = ev.target.closest('[data-testid=incident]');
      if (row) B.select(row.dataset.id);
    });
    $('incidents').addEventListener('keydown', (ev) => {
      const row = ev.target.closest('[data-testid=incident]');
      if (row && (ev.key === 'Enter' || ev.key === ' ')) { ev.preventDefault(); B.select(row.dataset.id); }
    });
    B.list.wire();
    B.map.wire(B.select);
    B.detail.wire();
    B.forms.wire();
    Q.applyLabels();
    const tok = Q.takeToken('board');
    if (tok) start(tok); else showLogin('');
  }

  init();
})();
