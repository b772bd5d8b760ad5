//! 110 calls over ingest's HTTP interface, as a call-taking system that
//! must never lose one would send them: single posts at a steady rate and
//! NDJSON bursts, each body posted again unchanged after every 503, 408,
//! 5xx, timeout or connection error until it is accepted (the same
//! `source_id`s make the retry idempotent). Every accepted id is kept and
//! written to `accepted.ndjson` in the run's directory. It never judges
//! the system: the checks do.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus::Config;
use bus::model::Role;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::cluster::Cluster;

/// Call kinds, police matters and the two the router diverts to 12345.
const KINDS: [&str; 8] = [
    "theft",
    "assault",
    "robbery",
    "fraud",
    "traffic_accident",
    "dispute",
    "noise",
    "utility_outage",
];
/// A body still not accepted this long after the load stopped is given up
/// (counted, never silently dropped).
const GIVE_UP_AFTER_STOP: Duration = Duration::from_secs(90);
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// One accepted call as ingest answered it: every distinct id its answers
/// named (one, unless ingest made two events of it).
#[derive(Debug, Clone)]
pub struct Accepted {
    pub source_id: String,
    pub ids: Vec<String>,
}

#[derive(Debug, Default, Serialize, Clone)]
pub struct CallStats {
    /// Distinct calls (source ids) sent.
    pub calls: u64,
    /// Calls ingest accepted (a 202 naming their id).
    pub accepted: u64,
    pub single_requests: u64,
    pub bursts: u64,
    /// Requests sent in all, retries included.
    pub requests: u64,
    /// Requests sent again with the same body.
    pub retries: u64,
    /// Answers by status; `connection` for no answer at all.
    pub answers: std::collections::BTreeMap<String, u64>,
    /// Calls answered with an id other than the one an earlier answer gave
    /// for the same source id.
    pub two_ids_answered: u64,
    /// Calls refused for good (a 4xx other than 408) or given up.
    pub refused: u64,
    pub given_up: u64,
}

pub struct Load {
    cluster: Arc<Cluster>,
    token: String,
    places: Vec<[f64; 2]>,
    seed: u64,
    next: AtomicU64,
    rng: Mutex<rand::rngs::StdRng>,
    stats: Mutex<CallStats>,
    accepted: Mutex<HashMap<String, Accepted>>,
    log: Mutex<Option<std::io::BufWriter<std::fs::File>>>,
    /// Set when the load stops: retries go on until `GIVE_UP_AFTER_STOP`.
    stopped: Mutex<Option<Instant>>,
    pub delivery_timeout_ms: u64,
}

impl Load {
    pub fn new(cluster: Arc<Cluster>, config: &Config, seed: u64) -> anyhow::Result<Load> {
        let token = cluster.keys.mint(
            "chaos-call-taking",
            Role::Source,
            &["*".to_owned()],
            None,
            Duration::from_secs(48 * 3600),
        )?;
        let places = config
            .city
            .jurisdictions
            .iter()
            .filter(|j| !j.area.is_empty())
            .map(|j| j.centre)
            .collect();
        let log = std::fs::File::create(cluster.dir.join("accepted.ndjson"))?;
        Ok(Load {
            cluster,
            token,
            places,
            seed,
            next: AtomicU64::new(0),
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
            stats: Mutex::new(CallStats::default()),
            accepted: Mutex::new(HashMap::new()),
            log: Mutex::new(Some(std::io::BufWriter::new(log))),
            stopped: Mutex::new(None),
            delivery_timeout_ms: config.kafka.delivery_timeout_ms,
        })
    }

    /// Single posts at `rate` per second until `stop`; returns once every
    /// call sent is accepted or given up.
    pub async fn singles(self: Arc<Self>, rate: f64, stop: CancellationToken) {
        let mut calls = tokio::task::JoinSet::new();
        let period = Duration::from_secs_f64(1.0 / rate.max(0.01));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let load = self.clone();
            calls.spawn(async move {
                let body = load.call().to_string();
                load.stats().single_requests += 1;
                load.post(body, "application/json", 1).await;
            });
            while calls.try_join_next().is_some() {}
        }
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        while calls.join_next().await.is_some() {}
    }

    /// One NDJSON body of `n` calls, posted until accepted.
    pub async fn burst(&self, n: usize) {
        let body = (0..n).map(|_| self.call().to_string()).collect::<Vec<_>>().join("\n");
        self.stats().bursts += 1;
        self.post(body, "application/x-ndjson", n).await;
    }

    /// A new call somewhere in the city.
    fn call(&self) -> serde_json::Value {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (kind, lat, lon) = {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            let [lat, lon] = self.places[rng.random_range(0..self.places.len())];
            // About a kilometre around a station's centre: now and then a
            // repeat call (linked), mostly distinct matters.
            (
                KINDS[rng.random_range(0..KINDS.len())],
                lat + rng.random_range(-0.009..0.009),
                lon + rng.random_range(-0.011..0.011),
            )
        };
        self.stats().calls += 1;
        serde_json::json!({
            "source": "call110",
            "source_id": format!("chaos-{}-{n}", self.seed),
            "kind": kind,
            "location": {"lat": (lat * 1e6).round() / 1e6, "lon": (lon * 1e6).round() / 1e6},
            "text": format!("chaos run call {n}"),
            "caller": {"phone": format!("1380000{:04}", n % 10_000)},
        })
    }

    /// Posts `body` (`count` calls) until a 202, a refusal, or give-up.
    async fn post(&self, body: String, content_type: &str, count: usize) {
        let url = self.cluster.ingest.url("/v1/events");
        let mut backoff = RETRY_MIN;
        let mut first = true;
        loop {
            {
                let mut stats = self.stats();
                stats.requests += 1;
                if !first {
                    stats.retries += 1;
                }
            }
            first = false;
            let answer = self
                .cluster
                .http
                .post(&url)
                .bearer_auth(&self.token)
                .header("content-type", content_type)
                .body(body.clone())
                .send()
                .await;
            let status = match answer {
                Ok(response) => {
                    let status = response.status().as_u16();
                    if status == 202 || status == 400 {
                        match response.json::<serde_json::Value>().await {
                            Ok(v) => {
                                self.count_answer(&status.to_string());
                                self.take_accepted(&v);
                                if status == 400 {
                                    self.stats().refused += count as u64;
                                }
                                return;
                            }
                            // The answer broke off: as good as no answer.
                            Err(_) => "connection".to_owned(),
                        }
                    } else {
                        status.to_string()
                    }
                }
                Err(_) => "connection".to_owned(),
            };
            self.count_answer(&status);
            let retry = status == "connection" || status == "408" || status == "429" || status.starts_with('5');
            if !retry {
                tracing::warn!(status, "ingest refused a chaos call");
                self.stats().refused += count as u64;
                return;
            }
            let stopped = *self.stopped.lock().unwrap_or_else(|e| e.into_inner());
            if stopped.is_some_and(|at| at.elapsed() > GIVE_UP_AFTER_STOP) {
                tracing::warn!(count, "giving a chaos call up: not accepted after the load stopped");
                self.stats().given_up += count as u64;
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_MAX);
        }
    }

    fn count_answer(&self, status: &str) {
        *self.stats().answers.entry(status.to_owned()).or_default() += 1;
    }

    fn take_accepted(&self, answer: &serde_json::Value) {
        let entries = answer["accepted"].as_array().cloned().unwrap_or_default();
        let mut accepted = self.accepted.lock().unwrap_or_else(|e| e.into_inner());
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        for entry in entries {
            let (Some(id), Some(source_id)) = (entry["id"].as_str(), entry["source_id"].as_str()) else {
                continue;
            };
            if let Some(file) = log.as_mut() {
                let _ = writeln!(file, "{entry}");
            }
            match accepted.get_mut(source_id) {
                Some(earlier) if !earlier.ids.iter().any(|e| e == id) => {
                    self.stats().two_ids_answered += 1;
                    earlier.ids.push(id.to_owned());
                }
                Some(_) => {}
                None => {
                    self.stats().accepted += 1;
                    accepted.insert(
                        source_id.to_owned(),
                        Accepted {
                            source_id: source_id.to_owned(),
                            ids: vec![id.to_owned()],
                        },
                    );
                }
            }
        }
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, CallStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> CallStats {
        self.stats().clone()
    }

    /// Every accepted call, the log file flushed.
    pub fn accepted(&self) -> Vec<Accepted> {
        if let Some(file) = self.log.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let _ = file.flush();
        }
        self.accepted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
