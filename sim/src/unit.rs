//! A simulated actor as a real WebSocket client of the api: one connection
//! per unit with its own unit token, subscribed to `unit:<id>` (or the
//! operator desk on `board`), feeding pushes to its [`Actor`] and sending
//! the actor's commands. When the socket drops it reconnects with the last
//! cursor, so no task is missed, and sends again every command the server
//! had not confirmed (positions excepted: a newer one follows anyway).
//!
//! It only speaks the public WebSocket contract and must never log the
//! token (it is in the URL, so the URL is never logged either).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bus::model::Command;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::agent::{Agent, Note, Output, TaskUpdate};
use crate::clock::SimClock;
use crate::desk::Desk;

/// Unconfirmed commands kept for resending; beyond this the oldest go (a
/// server that confirms nothing for this long is not listening anyway).
const MAX_UNCONFIRMED: usize = 256;
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Application-level ping, so an idle unit is never closed as idle.
const PING_EVERY: Duration = Duration::from_secs(20);
/// How long a unit tries to say it goes off duty at shutdown.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(2);
/// Wait before sending again a command the api refused as `unavailable`.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Counters of the unit side, shared with the report.
#[derive(Debug, Default)]
pub struct UnitCounters {
    pub connected: AtomicU64,
    pub reconnects: AtomicU64,
    pub tasks_received: AtomicU64,
    pub acked: AtomicU64,
    pub late_acks: AtomicU64,
    pub on_scene: AtomicU64,
    pub cleared: AtomicU64,
    pub cancelled: AtomicU64,
    pub dropped_tasks: AtomicU64,
    pub commands_sent: AtomicU64,
    pub command_errors: AtomicU64,
    /// Incidents the simulated operator closed.
    pub closed: AtomicU64,
}

impl UnitCounters {
    fn note(&self, note: Note) {
        let counter = match note {
            Note::TaskReceived => &self.tasks_received,
            Note::Acked { late } => {
                if late {
                    self.late_acks.fetch_add(1, Ordering::Relaxed);
                }
                &self.acked
            }
            Note::OnScene => &self.on_scene,
            Note::Cleared => &self.cleared,
            Note::Cancelled => &self.cancelled,
            Note::Dropped => &self.dropped_tasks,
            Note::Closed => &self.closed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A command waiting for the server's `ok`.
#[derive(Debug)]
struct Pending {
    id: String,
    frame: String,
    /// Sent again after a reconnect (everything but positions).
    resend: bool,
    /// Refused as `unavailable`: sent again at this time.
    retry_due: Option<tokio::time::Instant>,
}

/// Something simulated behind one WebSocket connection: a unit or the
/// operator desk. Pure: times are simulated time since the start.
pub trait Actor: Send + 'static {
    /// For logs (never a token).
    fn name(&self) -> &str;
    /// The channel to subscribe to.
    fn channel(&self) -> String;
    /// First connection.
    fn start(&mut self, now: Duration) -> Output;
    /// Every later connection.
    fn hello(&mut self, now: Duration) -> Output;
    /// Shutdown.
    fn stop(&mut self, now: Duration) -> Output;
    /// A push on the channel: its `kind` and `data`.
    fn on_push(&mut self, now: Duration, kind: &str, data: &Value) -> Output;
    fn next_wake(&self) -> Option<Duration>;
    fn tick(&mut self, now: Duration) -> Output;
}

impl Actor for Agent {
    fn name(&self) -> &str {
        &self.id
    }

    fn channel(&self) -> String {
        format!("unit:{}", self.id)
    }

    fn start(&mut self, now: Duration) -> Output {
        Agent::start(self, now)
    }

    fn hello(&mut self, now: Duration) -> Output {
        Agent::hello(self, now)
    }

    fn stop(&mut self, now: Duration) -> Output {
        Agent::stop(self, now)
    }

    fn on_push(&mut self, now: Duration, kind: &str, data: &Value) -> Output {
        if kind != "task" {
            return Output::default();
        }
        // Only our own tasks; the channel should carry nothing else.
        if data.get("unit").and_then(Value::as_str).is_some_and(|u| u != self.id) {
            return Output::default();
        }
        match serde_json::from_value::<TaskUpdate>(data.clone()) {
            Ok(task) => self.on_task(now, task),
            Err(e) => {
                warn!(unit = %self.id, error = %e, "unit got a task push it cannot read");
                Output::default()
            }
        }
    }

    fn next_wake(&self) -> Option<Duration> {
        Agent::next_wake(self)
    }

    fn tick(&mut self, now: Duration) -> Output {
        Agent::tick(self, now)
    }
}

impl Actor for Desk {
    fn name(&self) -> &str {
        "operator-desk"
    }

    fn channel(&self) -> String {
        "board".to_owned()
    }

    fn start(&mut self, _now: Duration) -> Output {
        Output::default()
    }

    fn hello(&mut self, _now: Duration) -> Output {
        Output::default()
    }

    fn stop(&mut self, _now: Duration) -> Output {
        Output::default()
    }

    fn on_push(&mut self, now: Duration, kind: &str, data: &Value) -> Output {
        if kind == "incident" {
            self.on_incident(now, data);
        }
        Output::default()
    }

    fn next_wake(&self) -> Option<Duration> {
        Desk::next_wake(self)
    }

    fn tick(&mut self, now: Duration) -> Output {
        Desk::tick(self, now)
    }
}

/// A simulated unit on its WebSocket.
pub type UnitClient = Client<Agent>;

/// Drives one actor until `shutdown`.
pub struct Client<A: Actor> {
    pub agent: A,
    /// `ws://host:port/ws` (no token).
    pub ws_url: String,
    pub token: String,
    pub clock: SimClock,
    pub counters: Arc<UnitCounters>,
}

impl std::fmt::Debug for UnitClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnitClient")
            .field("unit", &self.agent.id)
            .finish_non_exhaustive()
    }
}

/// Waits `wait` unless shut down first; false on shutdown.
async fn pause(shutdown: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

enum SessionEnd {
    Shutdown,
    Dropped(String),
}

impl<A: Actor> Client<A> {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let unit = self.agent.name().to_owned();
        let mut cursor: Option<String> = None;
        let mut unconfirmed: VecDeque<Pending> = VecDeque::new();
        let mut next_id: u64 = 0;
        let mut started = false;
        let mut backoff = Duration::from_millis(250);
        let mut failures: u32 = 0;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let url = format!("{}?token={}", self.ws_url, self.token);
            let config = WebSocketConfig::default()
                .read_buffer_size(8 * 1024)
                .max_message_size(Some(1 << 20));
            let connected = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = tokio_tungstenite::connect_async_with_config(url, Some(config), true) => c,
            };
            let mut ws = match connected {
                Ok((ws, _)) => ws,
                Err(e) => {
                    failures += 1;
                    // The first failures are expected while a demo starts.
                    if failures == 5 {
                        warn!(%unit, error = %e, "unit cannot connect to the api, still trying");
                    } else {
                        debug!(%unit, error = %e, "unit connect failed");
                    }
                    if !pause(&shutdown, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            if started {
                self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            } else {
                self.counters.connected.fetch_add(1, Ordering::Relaxed);
            }
            failures = 0;
            backoff = Duration::from_millis(250);

            let mut subscribe = json!({"op": "subscribe", "id": "subscribe", "channel": self.agent.channel()});
            if let Some(c) = &cursor {
                subscribe["since"] = json!(c);
            }
            let mut first = vec![subscribe.to_string()];
            // Unconfirmed commands from the last connection go again, in order.
            unconfirmed.retain(|p| p.resend);
            first.extend(unconfirmed.iter().map(|p| p.frame.clone()));
            let mut send_failed = false;
            for frame in first {
                if ws.send(Message::Text(frame.into())).await.is_err() {
                    send_failed = true;
                    break;
                }
            }
            if send_failed {
                if !pause(&shutdown, backoff).await {
                    return;
                }
                continue;
            }
            let out = if started {
                self.agent.hello(self.clock.now())
            } else {
                started = true;
                info!(%unit, "unit on duty");
                self.agent.start(self.clock.now())
            };
            if let Err(e) = self.apply(&mut ws, out, &mut unconfirmed, &mut next_id).await {
                debug!(%unit, error = %e, "unit send failed");
                if !pause(&shutdown, backoff).await {
                    return;
                }
                continue;
            }
            match self
                .session(&mut ws, &shutdown, &mut cursor, &mut unconfirmed, &mut next_id)
                .await
            {
                SessionEnd::Shutdown => {
                    let out = self.agent.stop(self.clock.now());
                    let goodbye = self.apply(&mut ws, out, &mut unconfirmed, &mut next_id);
                    let _ = tokio::time::timeout(GOODBYE_TIMEOUT, goodbye).await;
                    let _ = tokio::time::timeout(GOODBYE_TIMEOUT, ws.close(None)).await;
                    return;
                }
                SessionEnd::Dropped(why) => {
                    debug!(%unit, why, "unit connection dropped, reconnecting");
                    if !pause(&shutdown, backoff).await {
                        return;
                    }
                }
            }
        }
    }

    async fn session(
        &mut self,
        ws: &mut Socket,
        shutdown: &CancellationToken,
        cursor: &mut Option<String>,
        unconfirmed: &mut VecDeque<Pending>,
        next_id: &mut u64,
    ) -> SessionEnd {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            let wake = self.agent.next_wake().map(|at| self.clock.instant_of(at));
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let retry_at = unconfirmed.iter().filter_map(|p| p.retry_due).min();
            let retry = async {
                match retry_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let out = tokio::select! {
                _ = shutdown.cancelled() => return SessionEnd::Shutdown,
                _ = retry => {
                    let now = tokio::time::Instant::now();
                    let due: Vec<String> = unconfirmed
                        .iter_mut()
                        .filter(|p| p.retry_due.is_some_and(|t| t <= now))
                        .map(|p| {
                            p.retry_due = None;
                            p.frame.clone()
                        })
                        .collect();
                    for frame in due {
                        if ws.send(Message::Text(frame.into())).await.is_err() {
                            return SessionEnd::Dropped("resend failed".into());
                        }
                    }
                    continue;
                }
                _ = sleep => self.agent.tick(self.clock.now()),
                _ = ping.tick() => {
                    if ws.send(Message::Text(r#"{"op":"ping","id":"ping"}"#.into())).await.is_err() {
                        return SessionEnd::Dropped("ping failed".into());
                    }
                    continue;
                }
                frame = ws.next() => match frame {
                    None => return SessionEnd::Dropped("closed".into()),
                    Some(Err(e)) => return SessionEnd::Dropped(e.to_string()),
                    Some(Ok(Message::Close(frame))) => {
                        return SessionEnd::Dropped(format!("closed by server: {frame:?}"));
                    }
                    Some(Ok(Message::Text(text))) => self.on_frame(text.as_str(), cursor, unconfirmed),
                    Some(Ok(_)) => continue,
                },
            };
            if let Err(e) = self.apply(ws, out, unconfirmed, next_id).await {
                return SessionEnd::Dropped(e);
            }
        }
    }

    /// One server frame; returns what the agent does about it.
    fn on_frame(&mut self, text: &str, cursor: &mut Option<String>, unconfirmed: &mut VecDeque<Pending>) -> Output {
        let unit = self.agent.name().to_owned();
        let Ok(frame) = serde_json::from_str::<Value>(text) else {
            debug!(%unit, "unit got a frame that is not JSON");
            return Output::default();
        };
        let id = frame.get("id").and_then(Value::as_str);
        match frame.get("type").and_then(Value::as_str) {
            Some("push") => {
                if let Some(c) = frame.get("cursor").and_then(Value::as_str) {
                    *cursor = Some(c.to_owned());
                }
                let kind = frame.get("kind").and_then(Value::as_str).unwrap_or("");
                match frame.get("data") {
                    Some(data) => self.agent.on_push(self.clock.now(), kind, data),
                    None => Output::default(),
                }
            }
            Some("subscribed") => {
                if cursor.is_none()
                    && let Some(c) = frame.get("cursor").and_then(Value::as_str)
                {
                    *cursor = Some(c.to_owned());
                }
                Output::default()
            }
            Some("ok") => {
                if let Some(id) = id {
                    unconfirmed.retain(|p| p.id != id);
                }
                Output::default()
            }
            Some("error") => {
                let code = frame.get("code").and_then(Value::as_str).unwrap_or("");
                let message = frame.get("message").and_then(Value::as_str).unwrap_or("");
                let retry = code == "unavailable";
                if let Some(id) = id {
                    if retry {
                        // The api could not publish it (Kafka busy): again in a second.
                        if let Some(p) = unconfirmed.iter_mut().find(|p| p.id == id) {
                            p.retry_due = Some(tokio::time::Instant::now() + RETRY_AFTER);
                        }
                    } else {
                        unconfirmed.retain(|p| p.id != id);
                    }
                }
                if !retry {
                    self.counters.command_errors.fetch_add(1, Ordering::Relaxed);
                }
                // conflict/not_found are normal in a busy city (a task was
                // re-dispatched while we drove); the rest is worth a look.
                if matches!(code, "conflict" | "not_found" | "unavailable") {
                    debug!(%unit, code, message, "unit command refused");
                } else {
                    warn!(%unit, code, message, "unit command refused");
                }
                Output::default()
            }
            _ => Output::default(),
        }
    }

    async fn apply(
        &mut self,
        ws: &mut Socket,
        out: Output,
        unconfirmed: &mut VecDeque<Pending>,
        next_id: &mut u64,
    ) -> Result<(), String> {
        for note in out.notes {
            self.counters.note(note);
        }
        for command in out.commands {
            *next_id += 1;
            let id = format!("c{next_id}");
            let mut value = serde_json::to_value(&command).map_err(|e| e.to_string())?;
            value["id"] = json!(id);
            let frame = value.to_string();
            unconfirmed.push_back(Pending {
                id,
                frame: frame.clone(),
                resend: !matches!(command, Command::Position { .. }),
                retry_due: None,
            });
            while unconfirmed.len() > MAX_UNCONFIRMED {
                unconfirmed.pop_front();
            }
            self.counters.commands_sent.fetch_add(1, Ordering::Relaxed);
            ws.send(Message::Text(frame.into())).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
