/*
 * qzx web pages: what the operator board and the unit terminal share.
 *
 * - the token: read from `?token=` (then removed from the address bar) or
 *   sessionStorage; it is never written to the console or anywhere else;
 * - labels in Chinese and English (`?lang=zh|en` and a switch);
 * - the names of the 14 contract kinds, desks, unit types and statuses;
 * - REST reads with `Authorization: Bearer`;
 * - one WebSocket connection that reconnects by itself with backoff and
 *   resumes every channel from its last cursor (CONTRACT.md, "WebSocket").
 *
 * It must never: load anything from another origin, keep a command that
 * was not answered as if it had succeeded, or hide an error from the user.
 * Plain browser JavaScript, no build step: the files are served as they are.
 */
(function () {
  'use strict';

  const TOKEN_KEY = 'qzx.token';
  const LANG_KEY = 'qzx.lang';

  // The contract's 14 category codes (config/qzx.toml holds the same names;
  // a code missing here is shown as itself).
  const KINDS = {
    robbery: ['抢劫', 'Robbery'],
    assault: ['殴打他人', 'Assault'],
    theft: ['盗窃', 'Theft'],
    fraud: ['诈骗', 'Fraud'],
    traffic_accident: ['交通事故', 'Traffic accident'],
    fire: ['火情', 'Fire'],
    missing_person: ['人员走失', 'Missing person'],
    dispute: ['纠纷', 'Dispute'],
    noise: ['噪音扰民', 'Noise'],
    utility_outage: ['水电气故障', 'Utility outage'],
    efence_breach: ['电子围栏报警', 'E-fence breach'],
    video_alarm: ['视频智能报警', 'Video analytics alarm'],
    smoke_alarm: ['烟感报警', 'Smoke alarm'],
    unknown: ['其他警情', 'Other'],
  };

  const DESKS = {
    command: ['指挥调度席', 'Command'],
    patrol: ['巡特警席', 'Patrol'],
    criminal: ['刑侦席', 'Criminal investigation'],
    traffic: ['交警席', 'Traffic'],
    cyber: ['网安反诈席', 'Cyber and anti-fraud'],
    intelligence: ['情报研判席', 'Intelligence'],
    video: ['视频侦查席', 'Video'],
    supervisor: ['值班长席', 'Duty supervisor'],
  };

  const UNIT_TYPES = {
    patrol_car: ['巡逻车', 'Patrol car'],
    foot: ['步巡', 'Foot patrol'],
    post: ['警务站', 'Police post'],
    special: ['特警', 'Special unit'],
    traffic: ['交巡警', 'Traffic unit'],
  };

  // Incident, task and unit statuses share one table: the words overlap.
  const STATUSES = {
    new: ['新警情', 'New'],
    dispatched: ['已派警', 'Dispatched'],
    issued: ['已下达', 'Issued'],
    acknowledged: ['已签收', 'Acknowledged'],
    en_route: ['出发', 'En route'],
    on_scene: ['到场', 'On scene'],
    resolved: ['已处置', 'Resolved'],
    closed: ['已结案', 'Closed'],
    diverted: ['已分流', 'Diverted'],
    cleared: ['处置完毕', 'Cleared'],
    cancelled: ['已撤销', 'Cancelled'],
    available: ['待命', 'Available'],
    assigned: ['已派', 'Assigned'],
    busy: ['忙碌', 'Busy'],
    off_duty: ['下岗', 'Off duty'],
    out_of_service: ['暂停执勤', 'Out of service'],
  };

  const STAGES = {
    respond: ['1分钟响应', '1 min respond'],
    arrive: ['3分钟到场', '3 min arrive'],
    reinforce: ['5分钟增援', '5 min reinforce'],
  };

  const SLA_STATES = {
    pending: ['计时中', 'pending'],
    met: ['达标', 'met'],
    breached: ['超时', 'breached'],
    'n/a': ['不适用', 'n/a'],
    done: ['已完成', 'done'],
  };

  // Page labels; each page adds its own with addLabels().
  const LABELS = {
    connected: ['已连接', 'Connected'],
    connecting: ['连接中…', 'Connecting…'],
    disconnected_since: ['连接中断，自 {t} 起，正在重连…', 'Disconnected since {t}, reconnecting…'],
    token_invalid: ['令牌无效或已过期，请重新登录', 'Token invalid or expired, please log in again'],
    not_connected: ['未连接，指令未发送，请稍后重试', 'Not connected: the command was not sent, retry when connected'],
    no_reply: ['服务器未回复，指令可能未生效', 'No reply from the server: the command may not have been applied'],
    sent_ok: ['指令已发出', 'Command published'],
    dismiss: ['关闭', 'Dismiss'],
    login: ['登录', 'Log in'],
    logout: ['退出', 'Log out'],
    paste_token: ['粘贴令牌 (JWT)', 'Paste your token (JWT)'],
    lang_switch: ['English', '中文'],
    error: ['错误', 'Error'],
    status: ['状态', 'Status'],
  };

  function param(name) {
    return new URLSearchParams(location.search).get(name);
  }

  let lang = (function () {
    const p = param('lang');
    if (p === 'zh' || p === 'en') {
      try { sessionStorage.setItem(LANG_KEY, p); } catch (_) { /* private mode */ }
      return p;
    }
    let s = null;
    try { s = sessionStorage.getItem(LANG_KEY); } catch (_) { /* private mode */ }
    return s === 'en' ? 'en' : 'zh';
  })();

  function pick(pair, fallback) {
    if (!pair) return fallback;
    return lang === 'en' ? pair[1] : pair[0];
  }

  function t(key, vars) {
    let s = pick(LABELS[key], key);
    if (vars) for (const k of Object.keys(vars)) s = s.replace('{' + k + '}', vars[k]);
    return s;
  }

  function addLabels(more) {
    Object.assign(LABELS, more);
  }

  function setLang(l) {
    lang = l === 'en' ? 'en' : 'zh';
    try { sessionStorage.setItem(LANG_KEY, lang); } catch (_) { /* private mode */ }
    const u = new URL(location.href);
    u.searchParams.set('lang', lang);
    history.replaceState(null, '', u.toString());
    document.documentElement.lang = lang === 'en' ? 'en' : 'zh-CN';
  }

  /** Applies the labels to every element with data-l (text) or data-lp (placeholder). */
  function applyLabels(root) {
    (root || document).querySelectorAll('[data-l]').forEach((el) => { el.textContent = t(el.dataset.l); });
    (root || document).querySelectorAll('[data-lp]').forEach((el) => { el.placeholder = t(el.dataset.lp); });
    document.documentElement.lang = lang === 'en' ? 'en' : 'zh-CN';
  }

  /** Kind label in both languages, the current one first: "抢劫 Robbery". */
  function kindName(code) {
    const k = KINDS[code];
    if (!k) return String(code || '?');
    return lang === 'en' ? k[1] + ' ' + k[0] : k[0] + ' ' + k[1];
  }

  // ---- token ----------------------------------------------------------

  /**
   * The token from `?token=` (stored, then removed from the address bar so
   * it is not bookmarked, shared or sent as a referrer) or from
   * sessionStorage. Null when there is none.
   */
  function takeToken(slot) {
    const key = TOKEN_KEY + '.' + slot;
    const fromUrl = param('token');
    if (fromUrl) {
      try { sessionStorage.setItem(key, fromUrl); } catch (_) { /* private mode: keep it in memory only */ }
      const u = new URL(location.href);
      u.searchParams.delete('token');
      history.replaceState(null, '', u.toString());
      return fromUrl;
    }
    try { return sessionStorage.getItem(key); } catch (_) { return null; }
  }

  function storeToken(slot, token) {
    try {
      if (token) sessionStorage.setItem(TOKEN_KEY + '.' + slot, token);
      else sessionStorage.removeItem(TOKEN_KEY + '.' + slot);
    } catch (_) { /* private mode */ }
  }

  /** The JWT's claims, not verified (the server does that). Null if unreadable. */
  function claims(token) {
    try {
      const part = String(token).split('.')[1];
      const b64 = part.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((part.length + 3) % 4);
      const bin = atob(b64);
      const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
      return JSON.parse(new TextDecoder().decode(bytes));
    } catch (_) {
      return null;
    }
  }

  // ---- REST -------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(token, path, opts) {
    const init = Object.assign({ headers: {} }, opts || {});
    init.headers = Object.assign({ Authorization: 'Bearer ' + token, Accept: 'application/json' }, init.headers);
    let res;
    const sentAt = Date.now();
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'unavailable', String(e && e.message ? e.message : e));
    }
    learnClock(res.headers.get('date'), sentAt);
    let body = null;
    const text = await res.text();
    if (text) {
      try { body = JSON.parse(text); } catch (_) { body = null; }
    }
    if (!res.ok) {
      const code = body && body.error ? body.error : 'http_' + res.status;
      const message = body && body.message ? body.message : res.statusText || 'HTTP ' + res.status;
      throw new ApiError(res.status, code, message);
    }
    return body;
  }

  // ---- the server's clock -------------------------------------------------

  /*
   * The 1-3-5 clocks count against deadlines the router set with the
   * server's clock. A desk PC whose clock is a minute off would show every
   * countdown a minute wrong, so the pages count with the server's time,
   * learnt from the `Date` header of REST answers (1 s resolution: offsets
   * under 2 s are ignored as noise).
   */
  let clockOffset = 0;
  const offsets = [];

  function learnClock(dateHeader, sentAt) {
    const server = Date.parse(dateHeader || '');
    if (isNaN(server)) return;
    const local = (sentAt + Date.now()) / 2;
    // The header is truncated to the second: +500 ms is its expected middle.
    offsets.push(server + 500 - local);
    if (offsets.length > 7) offsets.shift();
    const sorted = [...offsets].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)];
    clockOffset = Math.abs(median) >= 2000 ? median : 0;
  }

  /** Now on the server's clock (ms since the epoch). */
  function now() {
    return Date.now() + clockOffset;
  }

  // ---- WebSocket --------------------------------------------------------

  /**
   * One WebSocket to `/ws` that stays up: reconnects with exponential
   * backoff (0.5 s doubling to 10 s, with jitter) and resubscribes every
   * channel with `since` = the last cursor seen on it, so no push is missed.
   *
   * handlers: onState({connected, since, everConnected}), onSubscribed(msg, resumed),
   * onPush(msg), onAuthFailed().
   */
  class Connection {
    constructor(token, handlers) {
      this.token = token;
      this.h = handlers;
      this.channels = new Map(); // channel -> {cursor, filter}
      this.pending = new Map(); // id -> {resolve, reject, timer}
      this.ws = null;
      this.connected = false;
      this.downSince = null;
      this.attempt = 0;
      this.seq = 0;
      this.stopped = false;
      this.pingTimer = null;
      this.lastHeard = 0;
    }

    start() {
      this.stopped = false;
      this.open();
    }

    stop() {
      this.stopped = true;
      if (this.ws) this.ws.close(1000);
    }

    subscribe(channel, filter) {
      if (!this.channels.has(channel)) this.channels.set(channel, { cursor: null, filter: filter || null });
      if (this.connected) this.sendSubscribe(channel);
    }

    cursor(channel) {
      const c = this.channels.get(channel);
      return c ? c.cursor : null;
    }

    nextId() {
      this.seq += 1;
      return 'c' + Date.now().toString(36) + '-' + this.seq;
    }

    open() {
      const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
      const url = proto + '//' + location.host + '/ws?token=' + encodeURIComponent(this.token);
      let ws;
      try {
        ws = new WebSocket(url);
      } catch (_) {
        this.scheduleReconnect(false);
        return;
      }
      this.ws = ws;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this.connected = true;
        this.attempt = 0;
        this.downSince = null;
        this.lastHeard = Date.now();
        this.emitState();
        for (const ch of this.channels.keys()) this.sendSubscribe(ch);
        clearInterval(this.pingTimer);
        this.pingTimer = setInterval(() => this.keepAlive(), 15000);
      };
      ws.onmessage = (ev) => {
        this.lastHeard = Date.now();
        let msg;
        try { msg = JSON.parse(ev.data); } catch (_) { return; }
        this.dispatch(msg);
      };
      ws.onclose = () => {
        if (this.ws !== ws) return;
        this.ws = null;
        clearInterval(this.pingTimer);
        const wasConnected = this.connected;
        this.connected = false;
        if (!this.downSince) this.downSince = new Date();
        // An unanswered command may or may not have been applied: say so.
        for (const [id, p] of this.pending) {
          clearTimeout(p.timer);
          p.reject({ code: 'unavailable', message: t('no_reply'), id });
        }
        this.pending.clear();
        this.emitState();
        if (!this.stopped) this.scheduleReconnect(opened || wasConnected);
      };
      ws.onerror = () => { /* onclose follows and handles it */ };
    }

    async scheduleReconnect(hadOpened) {
      this.attempt += 1;
      // A refused upgrade looks like any other failure to the browser: ask
      // REST whether the token is the reason before retrying forever.
      if (!hadOpened && this.attempt >= 2 && this.h.onAuthFailed) {
        try {
          await api(this.token, '/api/v1/info');
        } catch (e) {
          if (e.status === 401) {
            this.stopped = true;
            this.h.onAuthFailed();
            return;
          }
        }
      }
      const base = Math.min(10000, 500 * Math.pow(2, Math.min(this.attempt - 1, 5)));
      const delay = base / 2 + Math.random() * base / 2;
      setTimeout(() => { if (!this.stopped) this.open(); }, delay);
    }

    keepAlive() {
      if (!this.ws || !this.connected) return;
      // Nothing heard for 45 s (three pings): the link is dead even if the
      // socket has not noticed; close it so we reconnect with the cursor.
      if (Date.now() - this.lastHeard > 45000) {
        this.ws.close(4000);
        return;
      }
      this.raw({ op: 'ping', id: this.nextId() });
    }

    emitState() {
      if (this.h.onState) this.h.onState({ connected: this.connected, since: this.downSince });
    }

    raw(obj) {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
      this.ws.send(JSON.stringify(obj));
      return true;
    }

    sendSubscribe(channel) {
      const c = this.channels.get(channel);
      const msg = { op: 'subscribe', id: this.nextId(), channel };
      if (c.cursor) msg.since = c.cursor;
      if (c.filter) msg.filter = c.filter;
      c.resuming = !!c.cursor;
      this.raw(msg);
    }

    /**
     * Sends a command; resolves on `ok`, rejects with {code, message} on
     * `error`, on no reply within 10 s, or at once when not connected.
     */
    command(op, fields) {
      const id = this.nextId();
      const msg = Object.assign({ op, id }, fields);
      return new Promise((resolve, reject) => {
        if (!this.connected || !this.raw(msg)) {
          reject({ code: 'unavailable', message: t('not_connected'), id });
          return;
        }
        const timer = setTimeout(() => {
          this.pending.delete(id);
          reject({ code: 'unavailable', message: t('no_reply'), id });
        }, 10000);
        this.pending.set(id, { resolve, reject, timer });
      });
    }

    dispatch(msg) {
      const p = msg.id != null ? this.pending.get(msg.id) : null;
      switch (msg.type) {
        case 'push': {
          const c = this.channels.get(msg.channel);
          if (c && msg.cursor) c.cursor = msg.cursor;
          if (this.h.onPush) this.h.onPush(msg);
          break;
        }
        case 'subscribed': {
          const c = this.channels.get(msg.channel);
          let resumed = false;
          if (c) {
            resumed = c.resuming && !msg.gap;
            c.resuming = false;
            if (msg.cursor && (!c.cursor || msg.gap)) c.cursor = msg.cursor;
          }
          if (this.h.onSubscribed) this.h.onSubscribed(msg, resumed);
          break;
        }
        case 'ok':
          if (p) { clearTimeout(p.timer); this.pending.delete(msg.id); p.resolve(msg); }
          break;
        case 'error':
          if (p) {
            clearTimeout(p.timer);
            this.pending.delete(msg.id);
            p.reject({ code: msg.code || 'error', message: msg.message || '', id: msg.id });
          } else if (this.h.onError) {
            // An error to no command of ours (e.g. a refused subscribe).
            this.h.onError({ code: msg.code || 'error', message: msg.message || '', id: msg.id });
          }
          break;
        default:
          break; // pong and anything newer
      }
    }
  }

  // ---- small helpers ----------------------------------------------------

  /** A priority as a number 1..4 (it goes into class names and text). */
  function prio(p) {
    const n = Math.round(Number(p));
    return n >= 1 && n <= 4 ? n : 4;
  }

  function esc(s) {
    return String(s == null ? '' : s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  }

  function hhmmss(d) {
    const p = (n) => String(n).padStart(2, '0');
    return p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());
  }

  /** "m:ss" of a duration in ms (absolute). */
  function mmss(ms) {
    const s = Math.floor(Math.abs(ms) / 1000);
    return Math.floor(s / 60) + ':' + String(s % 60).padStart(2, '0');
  }

  function haversineM(lat1, lon1, lat2, lon2) {
    const r = 6371008.8;
    const rad = Math.PI / 180;
    const dlat = (lat2 - lat1) * rad;
    const dlon = (lon2 - lon1) * rad;
    const a = Math.sin(dlat / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dlon / 2) ** 2;
    return 2 * r * Math.asin(Math.min(1, Math.sqrt(a)));
  }

  function fmtDistance(m) {
    if (m == null || !isFinite(m)) return '—';
    return m < 1000 ? Math.round(m) + ' m' : (m / 1000).toFixed(1) + ' km';
  }

  function ms(ts) {
    const v = Date.parse(ts);
    return isNaN(v) ? null : v;
  }

  /**
   * The state of one 1-3-5 stage at `now`: {cls, text}. Green when met, red
   * on breach (reported, or the deadline has passed), amber when less than
   * 20 % of the target remains, grey when not applicable or not dispatched.
   */
  function clock(stage, deadlines, sla, startTs, now) {
    const state = sla && sla[stage] ? sla[stage] : 'pending';
    const due = deadlines ? ms(deadlines[stage]) : null;
    if (state === 'met') return { cls: 'met', text: '✓ ' + pick(SLA_STATES.met) };
    if (state === 'done') return { cls: 'met', text: '✓ ' + pick(SLA_STATES.done) };
    if (state === 'n/a') return { cls: 'na', text: pick(SLA_STATES['n/a']) };
    if (due == null) return { cls: 'na', text: '—' };
    const left = due - now;
    if (state === 'breached' || left < 0) return { cls: 'breached', text: '+' + mmss(Math.min(left, 0)) };
    const start = ms(startTs);
    const target = start != null && due > start ? due - start : null;
    const cls = target != null && left <= 0.2 * target ? 'warn' : 'pending';
    return { cls, text: mmss(left) };
  }

  /** A toast in `#toasts`; errors stay until dismissed, the rest fade after 4 s. */
  function toast(kind, text) {
    let box = document.getElementById('toasts');
    if (!box) {
      box = document.createElement('div');
      box.id = 'toasts';
      document.body.appendChild(box);
    }
    const el = document.createElement('div');
    el.className = 'toast ' + kind;
    el.setAttribute('role', kind === 'error' ? 'alert' : 'status');
    el.dataset.testid = 'toast-' + kind;
    const span = document.createElement('span');
    span.textContent = text;
    const btn = document.createElement('button');
    btn.textContent = '×';
    btn.title = t('dismiss');
    btn.onclick = () => el.remove();
    el.appendChild(span);
    el.appendChild(btn);
    box.appendChild(el);
    if (kind !== 'error') setTimeout(() => el.remove(), 4000);
    while (box.children.length > 6) box.firstChild.remove();
    return el;
  }

  function errorText(e) {
    if (!e) return t('error');
    return (e.code ? '[' + e.code + '] ' : '') + (e.message || String(e));
  }

  window.QZX = {
    KINDS, DESKS, UNIT_TYPES, STATUSES, STAGES, SLA_STATES,
    get lang() { return lang; },
    param, pick, t, addLabels, setLang, applyLabels, kindName,
    takeToken, storeToken, claims, api, ApiError, Connection, now,
    get clockOffset() { return clockOffset; },
    esc, prio, hhmmss, mmss, haversineM, fmtDistance, ms, clock, toast, errorText,
  };
})();
