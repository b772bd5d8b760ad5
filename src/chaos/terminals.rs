//! Simulated unit terminals: one WebSocket per roster unit, on api-1 or
//! api-2, subscribed to `unit:<id>`. A terminal comes on duty, works every
//! task it is given (ack, en route, on scene, cleared: the unit is then
//! available again), reports its position now and then, and when its
//! socket drops reconnects (to either api) and resumes with the last
//! cursor it saw. A command not reflected by a push within a few seconds
//! is sent again, as a patient officer would press again. It records every
//! task it got, by push or snapshot, for the terminal-miss check; it never
//! judges the system itself.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus::config::RosterUnit;
use bus::model::{Role, Task, TaskStatus};
use futures::{SinkExt as _, StreamExt as _};
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::cluster::Cluster;

/// How long a terminal waits before its next step on a task: an officer
/// reads the task, drives, looks around.
const DWELL: std::ops::Range<u64> = 150..600;
/// A command whose effect has not come back by then is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(4);
const POSITION_EVERY: Duration = Duration::from_secs(15);
/// Sends of one step before the terminal stops pressing (the router keeps
/// refusing it): the task is then left as it is, for the checks to see.
const MAX_SENDS: u32 = 15;

#[derive(Debug, Default, Clone, Serialize)]
pub struct TerminalStats {
    pub units: usize,
    pub connects: u64,
    /// Connections after the first, each resuming with its cursor.
    pub reconnects: u64,
    /// Resumes whose cursor was older than the channel's history (a
    /// snapshot followed).
    pub gaps: u64,
    /// Distinct tasks received, by push or snapshot.
    pub tasks_received: u64,
    pub task_frames: u64,
    pub snapshot_frames: u64,
    pub tasks_cleared: u64,
    pub commands_sent: u64,
    pub command_errors: u64,
    pub positions_sent: u64,
}

#[derive(Default)]
struct Shared {
    /// Unit → task ids its terminal received, any version.
    seen: Mutex<HashMap<String, HashSet<String>>>,
    stats: Mutex<TerminalStats>,
    log: Mutex<Option<std::io::BufWriter<std::fs::File>>>,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, TerminalStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Terminals {
    shared: Arc<Shared>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Terminals {
    /// Starts a terminal for every roster unit. `quiet` stops their position
    /// reports (so the system can fall silent), `stop` ends them.
    pub fn start(
        cluster: &Arc<Cluster>,
        units: &[RosterUnit],
        seed: u64,
        quiet: CancellationToken,
        stop: CancellationToken,
    ) -> anyhow::Result<Terminals> {
        let shared = Arc::new(Shared::default());
        *shared.log.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::io::BufWriter::new(std::fs::File::create(
            cluster.dir.join("terminals.ndjson"),
        )?));
        shared.stats().units = units.len();
        let mut handles = Vec::new();
        for (i, unit) in units.iter().enumerate() {
            let token = cluster.keys.mint(
                &unit.id,
                Role::Unit,
                std::slice::from_ref(&unit.jurisdiction),
                Some(&unit.id),
                Duration::from_secs(48 * 3600),
            )?;
            let terminal = Terminal {
                unit: unit.clone(),
                token,
                first_api: i % 2,
                cursor: None,
                connected: false,
                on_duty: false,
                on_duty_tried: None,
                tasks: HashMap::new(),
                sent: HashMap::new(),
                rng: rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(i as u64 * 7919)),
            };
            handles.push(tokio::spawn(terminal.run(
                cluster.clone(),
                shared.clone(),
                quiet.clone(),
                stop.clone(),
            )));
        }
        Ok(Terminals { shared, handles })
    }

    pub fn stats(&self) -> TerminalStats {
        self.shared.stats().clone()
    }

    /// Unit → every task id its terminal received.
    pub fn received(&self) -> HashMap<String, HashSet<String>> {
        self.shared.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for every terminal to end (after `stop`).
    pub async fn join(self) {
        for h in self.handles {
            let _ = h.await;
        }
        if let Some(file) = self.shared.log.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let _ = file.flush();
        }
    }
}

struct Terminal {
    unit: RosterUnit,
    token: String,
    first_api: usize,
    /// The last cursor seen on the unit's channel: a reconnect resumes here.
    cursor: Option<String>,
    /// Whether it was connected before: the next connection is a resume.
    connected: bool,
    on_duty: bool,
    on_duty_tried: Option<Instant>,
    /// Task → its newest status seen, and when.
    tasks: HashMap<String, (u64, TaskStatus, Instant)>,
    /// Task → the status a command was last sent for, when, and how many
    /// times for that status.
    sent: HashMap<String, (TaskStatus, Instant, u32)>,
    rng: rand::rngs::StdRng,
}

impl Terminal {
    async fn run(
        mut self,
        cluster: Arc<Cluster>,
        shared: Arc<Shared>,
        quiet: CancellationToken,
        stop: CancellationToken,
    ) {
        let mut attempt = 0usize;
        while !stop.is_cancelled() {
            let api = &cluster.apis[(self.first_api + attempt) % 2];
            let url = format!("ws://{}/ws?token={}", api.addr, self.token);
            if let Err(e) = self.session(&url, &shared, &quiet, &stop).await {
                tracing::debug!(unit = %self.unit.id, api = %api.name, error = %format!("{e:#}"), "terminal disconnected");
            }
            if stop.is_cancelled() {
                break;
            }
            attempt += 1;
            let pause = Duration::from_millis(self.rng.random_range(200..1000));
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn session(
        &mut self,
        url: &str,
        shared: &Shared,
        quiet: &CancellationToken,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let (mut ws, _) = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url)).await??;
        {
            let mut stats = shared.stats();
            if self.connected {
                stats.reconnects += 1;
            }
            stats.connects += 1;
        }
        self.connected = true;
        let mut subscribe = json!({"op": "subscribe", "id": "sub", "channel": self.channel()});
        if let Some(cursor) = &self.cursor {
            subscribe["since"] = Value::String(cursor.clone());
        }
        ws.send(Message::text(subscribe.to_string())).await?;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut position = tokio::time::interval_at((Instant::now() + POSITION_EVERY).into(), POSITION_EVERY);
        loop {
            let out: Vec<Value> = tokio::select! {
                _ = stop.cancelled() => {
                    let _ = ws.close(None).await;
                    return Ok(());
                }
                frame = ws.next() => {
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            self.receive(text.as_str(), shared);
                            Vec::new()
                        }
                        Some(Ok(Message::Close(_))) | None => anyhow::bail!("closed by the api"),
                        Some(Ok(_)) => Vec::new(),
                        Some(Err(e)) => return Err(e.into()),
                    }
                }
                _ = tick.tick() => self.next_steps(),
                _ = position.tick(), if !quiet.is_cancelled() => {
                    shared.stats().positions_sent += 1;
                    let [lat, lon] = self.unit.home;
                    vec![json!({
                        "op": "position",
                        "lat": lat + self.rng.random_range(-0.001..0.001),
                        "lon": lon + self.rng.random_range(-0.001..0.001),
                    })]
                }
            };
            for message in out {
                if message["op"] != "position" {
                    shared.stats().commands_sent += 1;
                }
                ws.send(Message::text(message.to_string())).await?;
            }
        }
    }

    fn channel(&self) -> String {
        format!("unit:{}", self.unit.id)
    }

    fn receive(&mut self, text: &str, shared: &Shared) {
        let Ok(msg) = serde_json::from_str::<Value>(text) else {
            return;
        };
        match msg["type"].as_str() {
            Some("subscribed") => {
                if msg["gap"] == true {
                    shared.stats().gaps += 1;
                }
                if let Some(c) = msg["cursor"].as_str().filter(|c| !c.is_empty()) {
                    self.cursor = Some(c.to_owned());
                }
            }
            Some("push") if msg["channel"] == self.channel().as_str() => {
                if let Some(c) = msg["cursor"].as_str().filter(|c| !c.is_empty()) {
                    self.cursor = Some(c.to_owned());
                }
                if msg["kind"] != "task" {
                    return;
                }
                let Ok(task) = serde_json::from_value::<Task>(msg["data"].clone()) else {
                    return;
                };
                if task.unit != self.unit.id {
                    return;
                }
                self.record(&task, msg["snapshot"] == true, shared);
            }
            Some("ok") if msg["id"] == "on" => self.on_duty = true,
            Some("error") => {
                shared.stats().command_errors += 1;
                tracing::debug!(unit = %self.unit.id, %msg, "terminal command refused");
            }
            _ => {}
        }
    }

    fn record(&mut self, task: &Task, snapshot: bool, shared: &Shared) {
        {
            let mut stats = shared.stats();
            stats.task_frames += 1;
            if snapshot {
                stats.snapshot_frames += 1;
            }
        }
        let fresh = shared
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(self.unit.id.clone())
            .or_default()
            .insert(task.id.clone());
        if fresh {
            shared.stats().tasks_received += 1;
        }
        if let Some(file) = shared.log.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let line = json!({
                "at_ms": chrono::Utc::now().timestamp_millis(),
                "unit": self.unit.id, "task": task.id, "version": task.version,
                "status": task.status.as_str(), "snapshot": snapshot,
            });
            let _ = writeln!(file, "{line}");
        }
        let newer = self.tasks.get(&task.id).is_none_or(|(v, _, _)| *v < task.version);
        if newer {
            if task.status == TaskStatus::Cleared && self.tasks.get(&task.id).is_some_and(|(_, s, _)| s.is_open()) {
                shared.stats().tasks_cleared += 1;
            }
            self.tasks
                .insert(task.id.clone(), (task.version, task.status, Instant::now()));
        }
    }

    /// The commands due now: coming on duty, and the next step of each
    /// open task whose dwell has passed and whose last command has not
    /// come back within `RESEND_AFTER`.
    fn next_steps(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        if !self.on_duty && self.on_duty_tried.is_none_or(|t| t.elapsed() > RESEND_AFTER) {
            self.on_duty_tried = Some(Instant::now());
            let [lat, lon] = self.unit.home;
            out.push(json!({"op": "status", "id": "on", "status": "available", "lat": lat, "lon": lon}));
        }
        let mut due: BTreeMap<String, TaskStatus> = BTreeMap::new();
        for (id, (_, status, since)) in &self.tasks {
            if !status.is_open() {
                continue;
            }
            let dwell = Duration::from_millis(self.rng.random_range(DWELL));
            if since.elapsed() < dwell {
                continue;
            }
            if self
                .sent
                .get(id)
                .is_some_and(|(s, at, n)| s == status && (at.elapsed() < RESEND_AFTER || *n >= MAX_SENDS))
            {
                continue;
            }
            due.insert(id.clone(), *status);
        }
        for (id, status) in due {
            let command = match status {
                TaskStatus::Issued => json!({"op": "ack", "id": "c", "task": id}),
                TaskStatus::Acknowledged => json!({"op": "status", "id": "c", "status": "en_route", "task": id}),
                TaskStatus::EnRoute => json!({"op": "status", "id": "c", "status": "on_scene", "task": id}),
                TaskStatus::OnScene => json!({"op": "status", "id": "c", "status": "cleared", "task": id}),
                TaskStatus::Cleared | TaskStatus::Cancelled => continue,
            };
            let n = match self.sent.get(&id) {
                Some((s, _, n)) if *s == status => n + 1,
                _ => 1,
            };
            if n == MAX_SENDS {
                tracing::warn!(unit = %self.unit.id, task = %id, status = status.as_str(), "terminal gives up on a task step");
            }
            self.sent.insert(id, (status, Instant::now(), n));
            out.push(command);
        }
        out
    }
}
