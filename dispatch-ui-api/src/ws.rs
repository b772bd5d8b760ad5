//! `GET /ws`: one task per connection speaking the protocol of CONTRACT.md
//! (subscribe, unsubscribe, commands, ping; subscribed, push, ok, error,
//! pong). It owns the socket and a bounded queue the [`Hub`] fills.
//!
//! Subscribing registers for live pushes first, then reads the snapshot or
//! the history, and drops queued pushes that the snapshot or history
//! already covered (by cursor, and by id and version for snapshot items):
//! no gap, no duplicate. A connection never blocks the fan-out: when its
//! queue overflows it is closed with 1013 and the client resumes with its
//! cursor. The token is never logged.
//!
//! [`Hub`]: crate::hub::Hub

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use bus::auth::Claims;
use bus::store::HistoryRead;
use futures::SinkExt as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::auth::{Principal, may_subscribe};
use crate::channel::{ChannelName, Cursor, Filter, Meta, PushKind, parse_history_payload, push_frame, visible};
use crate::error::ApiError;
use crate::hub::{Push, Subscriber};

/// Close codes (RFC 6455 and the IANA registry).
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// Application code (4000-4999): the token expired; reconnect with a new
/// one.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;
/// History entries read per Store round trip on resume.
const PAGE: usize = 500;
/// The ops that are commands (`crate::commands`), as opposed to the
/// connection's own (subscribe, unsubscribe, ping).
const COMMAND_OPS: [&str; 15] = [
    "ack", "status", "position", "assign", "divert", "escalate", "close", "update", "note", "reopen", "merge", "split",
    "hold", "refuse", "create",
];
/// Commands one connection may have waiting for Kafka at once.
const MAX_INFLIGHT: usize = 8;
/// Channels one connection may hold.
const MAX_SUBSCRIPTIONS: usize = 32;
/// Queued pushes written per flush.
const BATCH: usize = 64;

pub async fn upgrade(
    State(state): State<AppState>,
    principal: Principal,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // The token was checked first (extractor order): no upgrade without it.
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let api = &state.config.api;
    ws.read_buffer_size(api.ws_read_buffer_bytes)
        .write_buffer_size(api.ws_read_buffer_bytes)
        .max_message_size(api.ws_max_message_bytes)
        .max_frame_size(api.ws_max_message_bytes)
        .on_upgrade(move |socket| Connection::new(state, principal.0).run(socket))
}

/// Why a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The client went away or the socket failed.
    Closed,
    /// The queue overflowed or a write stalled: 1013.
    Lagged,
    Shutdown,
    /// Nothing heard from the client for the idle timeout.
    Idle,
    /// The token's `exp` passed: a connection is never worth more than
    /// the token that opened it (4001).
    Expired,
}

/// What this connection remembers per channel.
#[derive(Debug)]
struct LocalSub {
    /// Pushes at or before this cursor were in the snapshot or history.
    boundary: Cursor,
    /// id → version of what the snapshot sent.
    seen: HashMap<String, i64>,
}

struct Connection {
    state: AppState,
    claims: Arc<Claims>,
    id: u64,
    tx: mpsc::Sender<Arc<Push>>,
    rx: mpsc::Receiver<Arc<Push>>,
    lagged: CancellationToken,
    subs: HashMap<String, LocalSub>,
    replies_tx: mpsc::Sender<String>,
    replies_rx: mpsc::Receiver<String>,
    inflight: Arc<AtomicUsize>,
    write_timeout: Duration,
}

impl Connection {
    fn new(state: AppState, claims: Arc<Claims>) -> Connection {
        let (tx, rx) = mpsc::channel(state.config.api.ws_queue.max(1));
        let (replies_tx, replies_rx) = mpsc::channel(MAX_INFLIGHT);
        let id = state.next_conn.fetch_add(1, Ordering::Relaxed);
        let write_timeout = Duration::from_secs(state.config.api.ws_ping_interval_s.max(1));
        Connection {
            state,
            claims,
            id,
            tx,
            rx,
            lagged: CancellationToken::new(),
            subs: HashMap::new(),
            replies_tx,
            replies_rx,
            inflight: Arc::new(AtomicUsize::new(0)),
            write_timeout,
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        ::metrics::gauge!(bus::metrics::API_WS_CONNECTIONS).increment(1.0);
        tracing::debug!(conn = self.id, sub = %self.claims.sub, role = ?self.claims.role, "websocket connected");
        let stop = self.serve(&mut socket).await;
        for channel in self.subs.keys() {
            self.state.hub.unsubscribe(channel, self.id);
        }
        match stop {
            Stop::Lagged => {
                ::metrics::counter!(bus::metrics::API_WS_CLOSED_LAG_TOTAL).increment(1);
                tracing::info!(conn = self.id, sub = %self.claims.sub, "websocket client too slow, closing with 1013");
                self.close(&mut socket, CLOSE_TRY_AGAIN_LATER, "too slow: resume with your cursor")
                    .await;
            }
            Stop::Shutdown => {
                // Deliver what is already queued during the grace, then close.
                let grace = tokio::time::sleep(Duration::from_millis(self.state.config.api.close_grace_ms));
                tokio::pin!(grace);
                loop {
                    tokio::select! {
                        _ = &mut grace => break,
                        push = self.rx.recv() => match push {
                            Some(push) => if self.deliver(&mut socket, &push).await.is_err() { break },
                            None => break,
                        },
                    }
                }
                self.close(&mut socket, CLOSE_GOING_AWAY, "server shutting down").await;
            }
            Stop::Idle => self.close(&mut socket, CLOSE_GOING_AWAY, "idle").await,
            Stop::Expired => {
                tracing::info!(conn = self.id, sub = %self.claims.sub, "token expired, closing with 4001");
                self.close(
                    &mut socket,
                    CLOSE_TOKEN_EXPIRED,
                    "token expired: reconnect with a new token",
                )
                .await;
            }
            Stop::Closed => {}
        }
        ::metrics::gauge!(bus::metrics::API_WS_CONNECTIONS).decrement(1.0);
        tracing::debug!(conn = self.id, ?stop, "websocket closed");
    }

    async fn close(&self, socket: &mut WebSocket, code: u16, reason: &'static str) {
        let frame = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        }));
        // A client that does not read may never take the frame: bounded.
        let _ = tokio::time::timeout(self.write_timeout, socket.send(frame)).await;
    }

    async fn serve(&mut self, socket: &mut WebSocket) -> Stop {
        let api = &self.state.config.api;
        let idle = Duration::from_secs(api.ws_idle_timeout_s.max(1));
        let mut ping = tokio::time::interval(Duration::from_secs(api.ws_ping_interval_s.max(1)));
        ping.tick().await;
        let mut last_heard = Instant::now();
        let shutdown = self.state.shutdown.clone();
        let left_s = self.claims.exp.saturating_sub(chrono::Utc::now().timestamp()).max(0);
        let expiry = tokio::time::sleep(Duration::from_secs(u64::try_from(left_s).unwrap_or(0)));
        tokio::pin!(expiry);
        loop {
            let result = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Stop::Shutdown,
                _ = &mut expiry => return Stop::Expired,
                _ = self.lagged.cancelled() => return Stop::Lagged,
                Some(reply) = self.replies_rx.recv() => self.send(socket, Message::Text(reply.into())).await,
                Some(push) = self.rx.recv() => self.deliver_batch(socket, push).await,
                message = socket.recv() => {
                    last_heard = Instant::now();
                    match message {
                        None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Stop::Closed,
                        Some(Ok(Message::Text(text))) => self.on_text(socket, text.as_str()).await,
                        Some(Ok(Message::Binary(_))) => {
                            let reply = error_reply(None, "bad_request", "send text frames with JSON");
                            self.send(socket, Message::Text(reply.into())).await
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                    }
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > idle {
                        return Stop::Idle;
                    }
                    self.send(socket, Message::Ping(Default::default())).await
                }
            };
            if let Err(stop) = result {
                return stop;
            }
        }
    }

    /// Sends one frame; a write that stalls past the timeout or a queue
    /// overflow meanwhile ends the connection as lagging.
    async fn send(&self, socket: &mut WebSocket, message: Message) -> Result<(), Stop> {
        self.io(socket.send(message)).await
    }

    /// The frame of a queued push, unless the snapshot or history this
    /// connection already sent covers it.
    fn admit(&mut self, push: &Push) -> Option<Utf8Bytes> {
        let sub = self.subs.get_mut(&push.channel)?;
        if push.cursor <= sub.boundary {
            return None;
        }
        if let (Some(id), Some(version)) = (&push.meta.id, push.meta.version)
            && let Some(seen) = sub.seen.get(id)
        {
            if version <= *seen {
                return None;
            }
            sub.seen.remove(id);
        }
        Some(push.text.clone())
    }

    async fn deliver(&mut self, socket: &mut WebSocket, push: &Push) -> Result<(), Stop> {
        match self.admit(push) {
            Some(text) => self.send(socket, Message::Text(text)).await,
            None => Ok(()),
        }
    }

    /// Writes `first` and whatever else is queued (up to a batch) with one
    /// flush: one syscall for many pushes when the fan-out is busy.
    async fn deliver_batch(&mut self, socket: &mut WebSocket, first: Arc<Push>) -> Result<(), Stop> {
        let mut written = 0;
        let mut next = Some(first);
        while let Some(push) = next.take() {
            if let Some(text) = self.admit(&push) {
                self.io(socket.feed(Message::Text(text))).await?;
                written += 1;
            }
            if written >= BATCH {
                break;
            }
            next = self.rx.try_recv().ok();
        }
        if written > 0 {
            self.io(socket.flush()).await?;
        }
        Ok(())
    }

    /// One socket operation, bounded like [`Connection::send`].
    async fn io(&self, op: impl std::future::Future<Output = Result<(), axum::Error>>) -> Result<(), Stop> {
        tokio::select! {
            result = op => result.map_err(|_| Stop::Closed),
            _ = self.lagged.cancelled() => Err(Stop::Lagged),
            _ = tokio::time::sleep(self.write_timeout) => Err(Stop::Lagged),
        }
    }

    async fn send_json(&self, socket: &mut WebSocket, value: &Value) -> Result<(), Stop> {
        self.send(socket, Message::Text(value.to_string().into())).await
    }

    async fn on_text(&mut self, socket: &mut WebSocket, text: &str) -> Result<(), Stop> {
        let mut map = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
                return self
                    .refuse(socket, None, &ApiError::BadRequest("a message is a JSON object".into()))
                    .await;
            }
            Err(e) => {
                return self
                    .refuse(socket, None, &ApiError::BadRequest(format!("not JSON: {e}")))
                    .await;
            }
        };
        let id = map.remove("id");
        let op = map.get("op").and_then(Value::as_str).map(str::to_owned);
        match op.as_deref() {
            Some("ping") => self.send_json(socket, &with_id(json!({"type": "pong"}), &id)).await,
            Some("subscribe") => self.subscribe(socket, id, map).await,
            Some("unsubscribe") => {
                let channel = map
                    .get("channel")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                if self.subs.remove(&channel).is_some() {
                    self.state.hub.unsubscribe(&channel, self.id);
                }
                self.send_json(socket, &with_id(json!({"type": "ok"}), &id)).await
            }
            Some(op) if COMMAND_OPS.contains(&op) => self.command(socket, id, map).await,
            Some(other) => {
                let e = ApiError::bad_field("op", format!("unknown op {other}"));
                self.refuse(socket, id, &e).await
            }
            None => self.refuse(socket, id, &ApiError::bad_field("op", "is required")).await,
        }
    }

    async fn refuse(&self, socket: &mut WebSocket, id: Option<Value>, e: &ApiError) -> Result<(), Stop> {
        let reply = error_reply(id.as_ref(), ws_code(e), &e.public_message());
        self.send(socket, Message::Text(reply.into())).await
    }

    /// Commands wait for Kafka in their own task, so pushes keep flowing;
    /// the reply comes back through `replies`.
    async fn command(
        &mut self,
        socket: &mut WebSocket,
        id: Option<Value>,
        map: Map<String, Value>,
    ) -> Result<(), Stop> {
        let command = match crate::commands::parse(Value::Object(map)) {
            Ok(c) => c,
            Err(e) => return self.refuse(socket, id, &e).await,
        };
        if self.inflight.load(Ordering::Acquire) >= MAX_INFLIGHT {
            let e = ApiError::Unavailable("too many commands waiting; wait for their replies".into());
            return self.refuse(socket, id, &e).await;
        }
        self.inflight.fetch_add(1, Ordering::AcqRel);
        let state = self.state.clone();
        let claims = Arc::clone(&self.claims);
        let replies = self.replies_tx.clone();
        let inflight = Arc::clone(&self.inflight);
        tokio::spawn(async move {
            let unit = crate::commands::acting_unit(&state, &claims, &command);
            let reply = match crate::commands::execute(&state, &claims, command, unit.as_deref()).await {
                Ok(published) => {
                    // `action` (and `event` for `create`) let a client find
                    // what it caused among the pushes.
                    let mut ok = json!({"type": "ok", "action": published.action});
                    if let Some(event) = published.event {
                        ok["event"] = json!(event);
                    }
                    with_id(ok, &id).to_string()
                }
                Err(e) => error_reply(id.as_ref(), ws_code(&e), &e.public_message()),
            };
            // Capacity equals MAX_INFLIGHT, so this never waits for long;
            // a closed connection just drops the reply.
            let _ = replies.send(reply).await;
            inflight.fetch_sub(1, Ordering::AcqRel);
        });
        Ok(())
    }

    async fn subscribe(
        &mut self,
        socket: &mut WebSocket,
        id: Option<Value>,
        map: Map<String, Value>,
    ) -> Result<(), Stop> {
        let request: SubscribeRequest = match serde_path_to_error::deserialize(Value::Object(map)) {
            Ok(r) => r,
            Err(e) => {
                let field = e.path().to_string();
                let e = ApiError::bad_field(&field, e.into_inner());
                return self.refuse(socket, id, &e).await;
            }
        };
        let channel = match ChannelName::parse(&request.channel) {
            Ok(c) => c,
            Err(m) => return self.refuse(socket, id, &ApiError::bad_field("channel", m)).await,
        };
        if !may_subscribe(&self.claims, &channel) {
            let e = ApiError::Forbidden(format!("your role may not subscribe to {}", request.channel));
            return self.refuse(socket, id, &e).await;
        }
        let key = channel.key();
        if self.subs.len() >= MAX_SUBSCRIPTIONS && !self.subs.contains_key(&key) {
            let e = ApiError::BadRequest(format!("at most {MAX_SUBSCRIPTIONS} channels per connection"));
            return self.refuse(socket, id, &e).await;
        }
        let filter = Arc::new(request.filter.unwrap_or_default());
        // Live first: from here on pushes queue up behind this handler, and
        // the boundary set below drops the ones the read already covers.
        self.state.hub.subscribe(
            &channel,
            Subscriber {
                conn: self.id,
                tx: self.tx.clone(),
                lagged: self.lagged.clone(),
                claims: Arc::clone(&self.claims),
                filter: Arc::clone(&filter),
                check_jurisdiction: channel.checks_jurisdiction(),
            },
        );
        self.subs.insert(
            key.clone(),
            LocalSub {
                boundary: Cursor(u64::MAX, u64::MAX),
                seen: HashMap::new(),
            },
        );
        let loaded = self
            .load(socket, &id, &channel, &key, request.since.as_deref(), &filter)
            .await;
        match loaded {
            Ok(Ok(sub)) => {
                self.subs.insert(key, sub);
                Ok(())
            }
            Ok(Err(e)) => {
                self.state.hub.unsubscribe(&key, self.id);
                self.subs.remove(&key);
                self.refuse(socket, id, &e).await
            }
            Err(stop) => Err(stop),
        }
    }

    /// Sends `subscribed`, then the history after `since` or a snapshot.
    async fn load(
        &self,
        socket: &mut WebSocket,
        id: &Option<Value>,
        channel: &ChannelName,
        key: &str,
        since: Option<&str>,
        filter: &Filter,
    ) -> Result<Result<LocalSub, ApiError>, Stop> {
        let store = &self.state.store;
        let check = channel.checks_jurisdiction();
        let wants = |meta: &Meta| (!check || visible(&self.claims, meta)) && filter.accepts(meta);
        let mut gap = false;
        if let Some(since) = since {
            let first = match store.history_since(key, Some(since), PAGE).await {
                Ok(read) => read,
                Err(e) => return Ok(Err(e.into())),
            };
            if first.gap {
                gap = true;
            } else {
                let subscribed = json!({"type": "subscribed", "channel": key, "cursor": since});
                self.send_json(socket, &with_id(subscribed, id)).await?;
                let mut boundary = Cursor::parse(since).unwrap_or_default();
                let mut page: HistoryRead = first;
                loop {
                    let count = page.entries.len();
                    for entry in page.entries {
                        if let Some(c) = Cursor::parse(&entry.cursor) {
                            boundary = boundary.max(c);
                        }
                        let Some((kind, data)) = parse_history_payload(&entry.payload) else {
                            continue;
                        };
                        let Ok(value) = serde_json::from_str::<Value>(data) else {
                            continue;
                        };
                        if wants(&Meta::from_value(kind, &value)) {
                            let frame = push_frame(key, &entry.cursor, kind, data, false);
                            self.send(socket, Message::Text(frame.into())).await?;
                        }
                    }
                    if count < PAGE {
                        break;
                    }
                    page = match store.history_since(key, Some(&boundary.to_string()), PAGE).await {
                        Ok(read) => read,
                        Err(e) => return Ok(Err(e.into())),
                    };
                }
                return Ok(Ok(LocalSub {
                    boundary,
                    seen: HashMap::new(),
                }));
            }
        }
        // A fresh subscription, or a cursor older than history: the current
        // state as of the newest history entry.
        let head = match store.history_head(key).await {
            Ok(h) => h,
            Err(e) => return Ok(Err(e.into())),
        };
        let boundary = head.as_deref().and_then(Cursor::parse).unwrap_or_default();
        let cursor = boundary.to_string();
        let items = match self.snapshot(channel, key).await {
            Ok(items) => items,
            Err(e) => return Ok(Err(e)),
        };
        let mut subscribed = json!({"type": "subscribed", "channel": key, "cursor": cursor});
        if gap {
            subscribed["gap"] = Value::Bool(true);
        }
        self.send_json(socket, &with_id(subscribed, id)).await?;
        let mut seen = HashMap::new();
        for (kind, value) in items {
            let meta = Meta::from_value(kind, &value);
            if !wants(&meta) {
                continue;
            }
            if let (Some(id), Some(version)) = (meta.id, meta.version) {
                seen.insert(id, version);
            }
            let frame = push_frame(key, &cursor, kind, &value.to_string(), true);
            self.send(socket, Message::Text(frame.into())).await?;
        }
        Ok(Ok(LocalSub { boundary, seen }))
    }

    /// The open state of a channel: the board's open incidents and units,
    /// a unit's open tasks; topic channels have none.
    async fn snapshot(&self, channel: &ChannelName, key: &str) -> Result<Vec<(PushKind, Value)>, ApiError> {
        let store = &self.state.store;
        let mut out = Vec::new();
        match channel {
            ChannelName::Board => {
                let mut incidents = crate::rest::all_incidents(&self.state, false).await?;
                incidents.sort_by_key(|i| i.created_at);
                for i in incidents {
                    out.push((PushKind::Incident, to_value(&i)?));
                }
                for u in store.units().await? {
                    out.push((PushKind::Unit, to_value(&u)?));
                }
            }
            ChannelName::Unit(unit) => {
                // The view holds every task since start; the channel's
                // history covers the moments after a restart before the
                // view has caught up. The newest version of each wins.
                let mut tasks: HashMap<String, bus::model::Task> = HashMap::new();
                let history = store
                    .history_since(key, None, self.state.config.api.history_max_len)
                    .await?;
                let from_history = history.entries.iter().filter_map(|e| {
                    let (kind, data) = parse_history_payload(&e.payload)?;
                    (kind == PushKind::Task).then(|| serde_json::from_str::<bus::model::Task>(data).ok())?
                });
                for task in self.state.view.open_tasks_of(unit).into_iter().chain(from_history) {
                    if tasks.get(&task.id).is_none_or(|t| t.version < task.version) {
                        tasks.insert(task.id.clone(), task);
                    }
                }
                let mut open: Vec<_> = tasks
                    .into_values()
                    .filter(|t| t.status.is_open() && t.unit == *unit)
                    .collect();
                open.sort_by_key(|t| t.issued_at);
                for t in open {
                    out.push((PushKind::Task, to_value(&t)?));
                }
            }
            ChannelName::Topic(_) => {}
        }
        Ok(out)
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::Internal(e.to_string()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeRequest {
    #[allow(dead_code)]
    op: String,
    channel: String,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    filter: Option<Filter>,
}

/// The WebSocket has no `internal` code: the client can only retry.
fn ws_code(e: &ApiError) -> &'static str {
    match e {
        ApiError::Internal(_) | ApiError::Unauthorized(_) => "unavailable",
        other => other.code(),
    }
}

fn with_id(mut value: Value, id: &Option<Value>) -> Value {
    if let Some(id) = id {
        value["id"] = id.clone();
    }
    value
}

fn error_reply(id: Option<&Value>, code: &str, message: &str) -> String {
    let mut v = json!({"type": "error", "code": code, "message": message});
    if let Some(id) = id {
        v["id"] = id.clone();
    }
    v.to_string()
}
