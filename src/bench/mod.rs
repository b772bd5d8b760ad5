//! `qzx bench`: drives a real qzx deployment through its public interfaces
//! and reports figures next to ceilings measured in the same run on the
//! same machine.
//!
//! The system under test runs as child processes of this binary (`qzx all`,
//! or `ingest`, `router` and `api` when `QZX_REDIS_URL` is set), so its CPU
//! time and memory are measured apart from the load generator. The broker is
//! the embedded one, owned by this process, unless `QZX_KAFKA_BROKERS` is
//! set. Load is open-loop: each request is sent at its scheduled time and
//! latency counts from that time, so queueing delay is not hidden.
//!
//! This module measures; it asserts nothing. Targets live in the README.

mod ceilings;
mod system;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bus::Config;
use bus::geo::{CityMap, point_in_polygon};
use bus::model::Role;
use futures::{SinkExt as _, StreamExt as _};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use self::ceilings::{RoundTrips, Throughput};
use self::system::System;

/// What `qzx bench` is asked to do.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub rate: u32,
    pub seconds: u64,
    pub connections: usize,
    pub units: usize,
    pub seed: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub broker: String,
    pub store: String,
    pub ceilings: Ceilings,
    pub latency: LatencyReport,
    pub max_sustained_rate: MaxRate,
    pub ingest: IngestReport,
    pub websocket: WsReport,
    pub cpu_seconds_per_1000_events: HashMap<String, f64>,
    /// The router's own mean time per record, by topic, from its metrics:
    /// where the pipeline's time goes.
    pub router_ms_per_record: HashMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory_gib: f64,
}

#[derive(Debug, Serialize)]
pub struct Ceilings {
    pub raw_produce: Throughput,
    pub raw_consume: Throughput,
    /// A bare HTTP-to-Kafka relay under the ingest figures' loads.
    pub http_relay_single_event_requests: Throughput,
    pub http_relay_ndjson_batches_of_500: Throughput,
    pub redis: Option<RoundTrips>,
    pub ws_broadcast: Throughput,
    pub payload_bytes: usize,
    pub kafka_moves: KafkaMoves,
}

/// How many records the pipeline moves through Kafka for each ingested
/// event (counted on the services' `/metrics` over the ingest phases and
/// the drain after them), and the rate those moves alone allow at the raw
/// produce and consume ceilings: a bound no pipeline passes on this broker,
/// whatever its own work costs.
#[derive(Debug, Serialize)]
pub struct KafkaMoves {
    pub produced_per_event: f64,
    pub consumed_per_event: f64,
    /// `1 / (produced / raw produce + consumed / raw consume)`.
    pub bound_events_per_second: f64,
    pub bound_share_of_raw_produce: f64,
}

impl KafkaMoves {
    fn new(moved: system::KafkaRecords, events: u64, raw_produce: f64, raw_consume: f64) -> KafkaMoves {
        let events = events.max(1) as f64;
        let produced_per_event = moved.produced / events;
        let consumed_per_event = moved.consumed / events;
        let seconds_per_event = produced_per_event / raw_produce.max(1.0) + consumed_per_event / raw_consume.max(1.0);
        let bound = if seconds_per_event > 0.0 {
            1.0 / seconds_per_event
        } else {
            0.0
        };
        KafkaMoves {
            produced_per_event,
            consumed_per_event,
            bound_events_per_second: bound,
            bound_share_of_raw_produce: bound / raw_produce.max(1.0),
        }
    }
}

/// Ingest request to the unit terminal's receipt of the task.
#[derive(Debug, Serialize, Default, Clone)]
pub struct LatencyReport {
    pub rate: u32,
    pub seconds: u64,
    pub sent: u64,
    pub accepted: u64,
    pub tasks_received: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct MaxRate {
    /// The highest rate whose p99 stayed within 100 ms with every task
    /// delivered.
    pub events_per_second: u32,
    pub steps: Vec<LatencyReport>,
    pub share_of_raw_produce: f64,
}

#[derive(Debug, Serialize)]
pub struct IngestReport {
    pub single_event_requests: Throughput,
    pub ndjson_batches_of_500: Throughput,
    pub single_share_of_raw_produce: f64,
    pub batch_share_of_raw_produce: f64,
    pub single_share_of_http_relay: f64,
    pub batch_share_of_http_relay: f64,
    pub batch_share_of_kafka_bound: f64,
}

#[derive(Debug, Serialize)]
pub struct WsReport {
    pub connections: usize,
    pub connected: usize,
    pub rss_per_connection_kib: f64,
    pub pushes: Throughput,
    pub share_of_bare_broadcast: f64,
}

const P99_LIMIT_MS: f64 = 100.0;
const STEP_SECONDS: u64 = 3;
const INGEST_SECONDS: Duration = Duration::from_secs(5);

/// A closed-loop ingest load: `workers` connections, each posting `batch`
/// events per request and sending the next request when the answer comes.
#[derive(Debug, Clone, Copy)]
struct ClosedLoop {
    batch: usize,
    workers: usize,
}

/// One event per request: many sources at once, as a command centre's
/// call intake, sensor gateways and partner systems are.
const SINGLE: ClosedLoop = ClosedLoop { batch: 1, workers: 128 };
/// NDJSON batches of 500 from a few bulk senders.
const BATCHED: ClosedLoop = ClosedLoop { batch: 500, workers: 4 };

pub async fn run(config: Config, options: BenchOptions, progress: bool) -> anyhow::Result<Report> {
    let bar = if progress {
        ProgressBar::new(7)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    raise_fd_limit();

    bar.set_message("starting the system under test");
    let system = System::start(&config).await?;
    bar.inc(1);

    bar.set_message("measuring ceilings");
    let city = City::new(&config, options.seed);
    let payload = sample_payload(&config);
    let ceiling_topic = system.ceiling_topic().await?;
    // Best of three: one run takes a tenth of a second, so a single hiccup
    // of the machine would halve it. 60,000 records of ~430 bytes over six
    // partitions stay within what the embedded broker keeps (5 MB each) for
    // the consume ceiling to read back.
    let produce_count = 20_000;
    let mut raw_produce = ceilings::Throughput::new(0, Duration::ZERO);
    for _ in 0..3 {
        let run = ceilings::raw_produce(
            &system.bootstrap,
            &ceiling_topic,
            &payload,
            produce_count,
            config.kafka.linger_ms,
        )
        .await?;
        if run.per_second > raw_produce.per_second {
            raw_produce = run;
        }
    }
    let raw_consume = ceilings::raw_consume(
        &system.bootstrap,
        &ceiling_topic,
        config.kafka.partitions,
        produce_count,
    )
    .await?;
    let redis = match &config.redis.url {
        Some(url) => Some(ceilings::redis_round_trips(url, 5_000).await?),
        None => None,
    };
    let relay = ceilings::HttpRelay::start(&system.bootstrap, &ceiling_topic, config.kafka.linger_ms).await?;
    let relay_single = ingest_throughput(&system.http, relay.url.clone(), &system.source_token, &city, SINGLE).await?;
    let relay_batched =
        ingest_throughput(&system.http, relay.url.clone(), &system.source_token, &city, BATCHED).await?;
    drop(relay);
    let push_sample = String::from_utf8_lossy(&payload).into_owned();
    let ws_broadcast = ceilings::ws_broadcast(200, 200, &push_sample).await?;
    bar.inc(1);

    bar.set_message("connecting units");
    let units = Units::connect(&system, &city, options.units).await?;
    bar.inc(1);

    // The latency figure first, on an idle system. The rate search ends
    // by overloading it, so only ingest (which waits for the backlog to
    // drain) comes after it.
    units.settle(&system, &city).await;
    bar.set_message(format!("latency at {} events/s", options.rate));
    let cpu_before = system.cpu_seconds();
    let latency = units.run_at_rate(&system, &city, options.rate, options.seconds).await?;
    let cpu_after = system.cpu_seconds();
    let cpu_seconds_per_1000_events = cpu_after
        .iter()
        .map(|(name, after)| {
            let before = cpu_before.get(name).copied().unwrap_or(0.0);
            (name.clone(), (after - before) * 1000.0 / latency.sent.max(1) as f64)
        })
        .collect();
    bar.inc(1);

    units.settle(&system, &city).await;
    bar.set_message(format!("{} websocket connections", options.connections));
    let websocket = websocket_fan_out(&system, &city, options.connections, ws_broadcast.per_second).await?;
    bar.inc(1);

    units.settle(&system, &city).await;
    bar.set_message("searching the highest sustained rate");
    let mut steps = Vec::new();
    let mut best = 0;
    for rate in [100, 250, 500, 750, 1000, 1250, 1500, 2000, 3000, 4000, 6000, 8000] {
        bar.set_message(format!("sustained rate: trying {rate} events/s"));
        units.settle(&system, &city).await;
        let step = units.run_at_rate(&system, &city, rate, STEP_SECONDS).await?;
        let complete = step.tasks_received >= step.sent;
        let ok = complete && step.p99_ms <= P99_LIMIT_MS;
        steps.push(step);
        if !ok {
            break;
        }
        best = rate;
    }
    bar.inc(1);

    units.settle(&system, &city).await;
    bar.set_message("ingest throughput");
    let ingest_url = system.ingest_url("/v1/events");
    let token = &system.source_token;
    let moved_before = system.kafka_records().await;
    let single = ingest_throughput(&system.http, ingest_url.clone(), token, &city, SINGLE).await?;
    let batched = ingest_throughput(&system.http, ingest_url, token, &city, BATCHED).await?;
    units.settle(&system, &city).await;
    let moved_after = system.kafka_records().await;
    let kafka_moves = KafkaMoves::new(
        moved_after.since(moved_before),
        single.messages + batched.messages,
        raw_produce.per_second,
        raw_consume.per_second,
    );
    let kafka_bound = kafka_moves.bound_events_per_second;
    bar.inc(1);
    bar.finish_and_clear();

    let produce = raw_produce.per_second;
    let report = Report {
        machine: machine(),
        broker: system.broker_description(),
        store: config.redis.url.as_ref().map_or("memory".into(), |_| "redis".into()),
        ceilings: Ceilings {
            raw_produce,
            raw_consume,
            http_relay_single_event_requests: relay_single.clone(),
            http_relay_ndjson_batches_of_500: relay_batched.clone(),
            redis,
            ws_broadcast,
            payload_bytes: payload.len(),
            kafka_moves,
        },
        latency,
        max_sustained_rate: MaxRate {
            events_per_second: best,
            steps,
            share_of_raw_produce: best as f64 / produce,
        },
        ingest: IngestReport {
            single_share_of_raw_produce: single.per_second / produce,
            batch_share_of_raw_produce: batched.per_second / produce,
            single_share_of_http_relay: single.per_second / relay_single.per_second.max(1.0),
            batch_share_of_http_relay: batched.per_second / relay_batched.per_second.max(1.0),
            batch_share_of_kafka_bound: batched.per_second / kafka_bound.max(1.0),
            single_event_requests: single,
            ndjson_batches_of_500: batched,
        },
        websocket,
        cpu_seconds_per_1000_events,
        router_ms_per_record: system.router_ms_per_record().await,
    };
    drop(units);
    system.stop().await;
    Ok(report)
}

/// The normalised-event JSON the pipeline carries, for the ceilings.
fn sample_payload(config: &Config) -> Vec<u8> {
    let city = CityMap::new(config);
    let input = serde_json::json!({
        "source": "call110", "source_id": "110-20261122-000123", "kind": "theft",
        "location": {"lat": 36.6650, "lon": 117.0230, "address": "历下区泉城路1号"},
        "text": "电动车被盗，车主在现场等候", "caller": {"phone": "13800000000"}, "attrs": {}
    });
    let rules = bus::validate::InputRules::new(config);
    match bus::validate::validate_input(&input, &rules, None, chrono::Utc::now()) {
        Ok(event) => {
            serde_json::to_vec(&bus::validate::normalise(event, &city, chrono::Utc::now())).unwrap_or_default()
        }
        Err(_) => input.to_string().into_bytes(),
    }
}

/// Random points inside the station areas.
struct City {
    areas: Vec<Vec<[f64; 2]>>,
    rng: Mutex<rand::rngs::StdRng>,
}

impl City {
    fn new(config: &Config, seed: u64) -> City {
        City {
            areas: config
                .city
                .jurisdictions
                .iter()
                .filter(|j| !j.area.is_empty())
                .map(|j| j.area.clone())
                .collect(),
            rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(seed)),
        }
    }

    fn point(&self) -> (f64, f64) {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        let area = &self.areas[rng.random_range(0..self.areas.len())];
        let (lat0, lat1) = bounds(area.iter().map(|p| p[0]));
        let (lon0, lon1) = bounds(area.iter().map(|p| p[1]));
        loop {
            let lat = rng.random_range(lat0..lat1);
            let lon = rng.random_range(lon0..lon1);
            if point_in_polygon(lat, lon, area) {
                // Six decimals: the task's location identifies the event.
                return ((lat * 1e6).round() / 1e6, (lon * 1e6).round() / 1e6);
            }
        }
    }
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

fn location_key(lat: f64, lon: f64) -> String {
    format!("{lat:.6},{lon:.6}")
}

type Pending = Arc<Mutex<HashMap<String, Instant>>>;

/// Simulated unit terminals: they receive tasks, record when, and free
/// themselves at once so dispatch never runs dry.
struct Units {
    pending: Pending,
    latencies: Arc<Mutex<Vec<f64>>>,
    /// Tasks any unit received so far, old or new: still moving while a
    /// backlog drains.
    tasks_seen: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Units {
    /// The terminals go off duty before the system stops, so its shutdown
    /// is not reported as a dropped connection.
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Units {
    async fn connect(system: &System, city: &City, count: usize) -> anyhow::Result<Units> {
        let pending: Pending = Arc::default();
        let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
        let tasks_seen: Arc<AtomicU64> = Arc::default();
        let mut tasks = Vec::with_capacity(count);
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(count.max(1));
        for i in 0..count {
            let id = format!("bench-u{i:04}");
            let token = system.token(Role::Unit, Some(&id))?;
            let url = format!("{}/ws?token={token}", system.ws_base());
            let (lat, lon) = city.point();
            let pending = pending.clone();
            let latencies = latencies.clone();
            let seen = tasks_seen.clone();
            let ready = ready_tx.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = unit_loop(&url, &id, (lat, lon), pending, latencies, seen, ready).await {
                    tracing::warn!(unit = %id, error = %format!("{e:#}"), "bench unit stopped");
                }
            }));
        }
        drop(ready_tx);
        for _ in 0..count {
            tokio::time::timeout(Duration::from_secs(30), ready_rx.recv())
                .await
                .context("bench units come on duty")?
                .context("a bench unit failed to connect")?;
        }
        // Let the router register the units before the load starts.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(Units {
            pending,
            latencies,
            tasks_seen,
            tasks,
        })
    }

    /// Posts single events at `rate` for `seconds`, open-loop, and waits for
    /// their tasks to reach the units.
    async fn run_at_rate(
        &self,
        system: &System,
        city: &City,
        rate: u32,
        seconds: u64,
    ) -> anyhow::Result<LatencyReport> {
        self.latencies.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let total = rate as u64 * seconds;
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let start = tokio::time::Instant::now();
        let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut posts = Vec::with_capacity(total as usize);
        for i in 0..total {
            let at = start + interval.mul_f64(i as f64);
            tokio::time::sleep_until(at).await;
            let (lat, lon) = city.point();
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(location_key(lat, lon), at.into_std());
            let body = event_json("theft", lat, lon);
            let client = system.http.clone();
            let url = system.ingest_url("/v1/events");
            let token = system.source_token.clone();
            let accepted = accepted.clone();
            posts.push(tokio::spawn(async move {
                if let Ok(r) = client
                    .post(url)
                    .bearer_auth(token)
                    .body(body)
                    .header("content-type", "application/json")
                    .send()
                    .await
                    && r.status().as_u16() == 202
                {
                    accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }));
        }
        for p in posts {
            let _ = p.await;
        }
        // Give the stragglers a bounded time to arrive.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && (self.latencies.lock().unwrap_or_else(|e| e.into_inner()).len() as u64) < total
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let mut l = std::mem::take(&mut *self.latencies.lock().unwrap_or_else(|e| e.into_inner()));
        l.sort_by(f64::total_cmp);
        Ok(LatencyReport {
            rate,
            seconds,
            sent: total,
            accepted: accepted.load(std::sync::atomic::Ordering::Relaxed),
            tasks_received: l.len() as u64,
            p50_ms: percentile(&l, 0.50),
            p99_ms: percentile(&l, 0.99),
            p999_ms: percentile(&l, 0.999),
            max_ms: l.last().copied().unwrap_or(0.0),
        })
    }
}

impl Units {
    /// Waits until the pipeline has caught up: a probe event's task reaches
    /// a unit, and then no task at all arrives for a second (incidents
    /// still waiting for a unit after an overload get theirs first). Each
    /// phase then starts on an idle system, not on the backlog of the one
    /// before. At most 30 s.
    async fn settle(&self, system: &System, city: &City) -> bool {
        let (lat, lon) = city.point();
        let key = location_key(lat, lon);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), Instant::now());
        let _ = system
            .http
            .post(system.ingest_url("/v1/events"))
            .bearer_auth(&system.source_token)
            .header("content-type", "application/json")
            .body(event_json("theft", lat, lon))
            .send()
            .await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&key)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut seen = self.tasks_seen.load(Ordering::Relaxed);
        let drained = loop {
            if Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now_seen = self.tasks_seen.load(Ordering::Relaxed);
            if now_seen == seen {
                break true;
            }
            seen = now_seen;
        };
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.latencies.lock().unwrap_or_else(|e| e.into_inner()).clear();
        drained
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    bus::stats::percentile(sorted, q * 100.0).unwrap_or(0.0)
}

fn event_json(kind: &str, lat: f64, lon: f64) -> String {
    serde_json::json!({
        "source": "call110",
        "source_id": bus::model::new_id(),
        "kind": kind,
        "location": {"lat": lat, "lon": lon, "address": "历下区泉城路"},
        "text": "bench",
    })
    .to_string()
}

async fn unit_loop(
    url: &str,
    id: &str,
    (lat, lon): (f64, f64),
    pending: Pending,
    latencies: Arc<Mutex<Vec<f64>>>,
    seen: Arc<AtomicU64>,
    ready: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<()> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let send = |v: serde_json::Value| Message::text(v.to_string());
    ws.send(send(
        serde_json::json!({"op": "subscribe", "id": "s", "channel": format!("unit:{id}")}),
    ))
    .await?;
    ws.send(send(serde_json::json!({"op": "status", "id": "on", "status": "available", "lat": lat, "lon": lon, "type": "patrol_car"})))
        .await?;
    let _ = ready.send(()).await;
    while let Some(frame) = ws.next().await {
        let Message::Text(text) = frame? else { continue };
        let received = Instant::now();
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        if msg["type"] != "push" || msg["kind"] != "task" || msg["data"]["status"] != "issued" {
            continue;
        }
        seen.fetch_add(1, Ordering::Relaxed);
        let data = &msg["data"];
        if let (Some(tlat), Some(tlon)) = (data["location"]["lat"].as_f64(), data["location"]["lon"].as_f64())
            && let Some(sent) = pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&location_key(tlat, tlon))
        {
            latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(received.duration_since(sent).as_secs_f64() * 1000.0);
        }
        let task = data["id"].clone();
        ws.send(send(serde_json::json!({"op": "ack", "task": task}))).await?;
        ws.send(send(
            serde_json::json!({"op": "status", "status": "cleared", "task": task}),
        ))
        .await?;
        ws.send(send(
            serde_json::json!({"op": "status", "status": "available", "lat": lat, "lon": lon}),
        ))
        .await?;
    }
    Ok(())
}

/// Closed-loop ingest throughput: `workers` keep-alive connections posting
/// `batch` non-police events per request (diverted by the router, so no
/// dispatch work is mixed in) to `url` for `INGEST_SECONDS`.
async fn ingest_throughput(
    http: &reqwest::Client,
    url: String,
    token: &str,
    city: &City,
    load: ClosedLoop,
) -> anyhow::Result<Throughput> {
    let ClosedLoop { batch, workers } = load;
    let stop_at = Instant::now() + INGEST_SECONDS;
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..workers {
        let client = http.clone();
        let url = url.clone();
        let token = token.to_owned();
        let places: Vec<(f64, f64)> = (0..8).map(|_| city.point()).collect();
        handles.push(tokio::spawn(async move {
            let mut accepted = 0u64;
            let mut i = 0usize;
            while Instant::now() < stop_at {
                // Fresh source ids each time (duplicates would be free),
                // built cheaply: the load generator shares the two cores.
                let (lat, lon) = places[i % places.len()];
                let body = (0..batch)
                    .map(|_| event_json("noise", lat, lon))
                    .collect::<Vec<_>>()
                    .join("\n");
                i += 1;
                let content_type = if batch > 1 {
                    "application/x-ndjson"
                } else {
                    "application/json"
                };
                if let Ok(r) = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", content_type)
                    .body(body)
                    .send()
                    .await
                    && r.status().as_u16() == 202
                {
                    accepted += batch as u64;
                }
            }
            accepted
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap_or(0);
    }
    Ok(Throughput::new(total, started.elapsed()))
}

/// Holds `n` idle connections (analysts subscribed to the events topic),
/// measures the api's RSS per connection, then the push rate to all of them.
async fn websocket_fan_out(system: &System, city: &City, n: usize, bare_per_second: f64) -> anyhow::Result<WsReport> {
    let rss_before = system.api_rss_kib();
    let token = system.token(Role::Analyst, None)?;
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<bool>(1024);
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let url = format!("{}/ws?token={token}", system.ws_base());
        let addr = system.api_addr;
        let received = received.clone();
        let ready = ready_tx.clone();
        clients.push(tokio::spawn(async move {
            // Spread over source addresses so one never runs out of ports.
            let source = std::net::Ipv4Addr::new(127, 0, 0, 1 + (i % 8) as u8);
            let connected = async {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind((source, 0).into())?;
                let stream = socket.connect(addr).await?;
                let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
                ws.send(Message::text(r#"{"op":"subscribe","id":"s","channel":"topic:events"}"#))
                    .await?;
                anyhow::Ok(ws)
            }
            .await;
            let Ok(mut ws) = connected else {
                let _ = ready.send(false).await;
                return;
            };
            let _ = ready.send(true).await;
            while let Some(Ok(frame)) = ws.next().await {
                if let Message::Text(t) = frame
                    && t.contains(r#""type":"push""#)
                {
                    received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
        // Pace the handshakes: the api accepts them on 2 cores too.
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(ready_tx);
    let mut connected = 0usize;
    while let Ok(Some(ok)) = tokio::time::timeout(Duration::from_secs(60), ready_rx.recv()).await {
        connected += usize::from(ok);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = system.api_rss_kib();
    let rss_per_connection_kib = (rss_after - rss_before).max(0.0) / connected.max(1) as f64;

    // Push: K events, each pushed to every connected client.
    let k = 20usize;
    received.store(0, std::sync::atomic::Ordering::Relaxed);
    let (lat, lon) = city.point();
    let body = (0..k)
        .map(|_| event_json("noise", lat, lon))
        .collect::<Vec<_>>()
        .join("\n");
    let started = Instant::now();
    system
        .http
        .post(system.ingest_url("/v1/events"))
        .bearer_auth(&system.source_token)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await?;
    let want = (k * connected) as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while received.load(std::sync::atomic::Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let delivered = received.load(std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.abort();
    }
    let pushes = Throughput::new(delivered, elapsed);
    Ok(WsReport {
        connections: n,
        connected,
        rss_per_connection_kib,
        share_of_bare_broadcast: pushes.per_second / bare_per_second.max(1.0),
        pushes,
    })
}

fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the file descriptor limit"),
    }
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".to_owned(), |s| s.trim().to_owned());
    let memory_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu,
        memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
    }
}

/// The human-readable table.
pub fn print_table(r: &Report) {
    let ms = |v: f64| format!("{v:.1} ms");
    let rate = |v: f64| format!("{v:.0}/s");
    let share = |v: f64| format!("{:.0} %", v * 100.0);
    println!(
        "qzx bench — {} cores, {}, {} GiB; broker {}, store {}",
        r.machine.cores, r.machine.cpu, r.machine.memory_gib, r.broker, r.store
    );
    println!();
    println!("{:<52} {:>14} {:>14}", "figure", "value", "of ceiling");
    let row = |name: &str, value: String, ceiling: String| println!("{name:<52} {value:>14} {ceiling:>14}");
    row(
        "ceiling: raw produce (bare rdkafka, acks=all)",
        rate(r.ceilings.raw_produce.per_second),
        String::new(),
    );
    row(
        "ceiling: raw consume (bare rdkafka)",
        rate(r.ceilings.raw_consume.per_second),
        String::new(),
    );
    row(
        "ceiling: bare HTTP→Kafka relay, one event per request",
        rate(r.ceilings.http_relay_single_event_requests.per_second),
        share(r.ceilings.http_relay_single_event_requests.per_second / r.ceilings.raw_produce.per_second),
    );
    row(
        "ceiling: bare HTTP→Kafka relay, NDJSON batches of 500",
        rate(r.ceilings.http_relay_ndjson_batches_of_500.per_second),
        share(r.ceilings.http_relay_ndjson_batches_of_500.per_second / r.ceilings.raw_produce.per_second),
    );
    let moves = &r.ceilings.kafka_moves;
    row(
        &format!(
            "ceiling: Kafka moves only ({:.1} out + {:.1} in /event)",
            moves.produced_per_event, moves.consumed_per_event
        ),
        rate(moves.bound_events_per_second),
        share(moves.bound_share_of_raw_produce),
    );
    if let Some(redis) = &r.ceilings.redis {
        row(
            "ceiling: redis round trips (PING)",
            rate(redis.per_second),
            format!("{:.0} µs", redis.mean_us),
        );
    }
    row(
        "ceiling: bare websocket broadcast",
        rate(r.ceilings.ws_broadcast.per_second),
        String::new(),
    );
    let l = &r.latency;
    row(
        &format!("ingest→terminal p50 at {}/s", l.rate),
        ms(l.p50_ms),
        String::new(),
    );
    row(
        &format!("ingest→terminal p99 at {}/s", l.rate),
        ms(l.p99_ms),
        String::new(),
    );
    row(
        &format!("ingest→terminal p99.9 at {}/s", l.rate),
        ms(l.p999_ms),
        String::new(),
    );
    row(
        "tasks received / events sent",
        format!("{}/{}", l.tasks_received, l.sent),
        String::new(),
    );
    row(
        "highest sustained rate with p99 ≤ 100 ms",
        rate(r.max_sustained_rate.events_per_second as f64),
        share(r.max_sustained_rate.share_of_raw_produce),
    );
    row(
        "ingest, one event per request",
        rate(r.ingest.single_event_requests.per_second),
        share(r.ingest.single_share_of_raw_produce),
    );
    row(
        "  the same, as a share of the bare relay",
        String::new(),
        share(r.ingest.single_share_of_http_relay),
    );
    row(
        "ingest, NDJSON batches of 500",
        rate(r.ingest.ndjson_batches_of_500.per_second),
        share(r.ingest.batch_share_of_raw_produce),
    );
    row(
        "  the same, as a share of the bare relay",
        String::new(),
        share(r.ingest.batch_share_of_http_relay),
    );
    row(
        "  the same, as a share of the Kafka moves only",
        String::new(),
        share(r.ingest.batch_share_of_kafka_bound),
    );
    row(
        &format!("websocket: idle connections held ({} asked)", r.websocket.connections),
        r.websocket.connected.to_string(),
        String::new(),
    );
    row(
        "websocket: api RSS per connection",
        format!("{:.1} KiB", r.websocket.rss_per_connection_kib),
        String::new(),
    );
    row(
        "websocket: pushes to all clients",
        rate(r.websocket.pushes.per_second),
        share(r.websocket.share_of_bare_broadcast),
    );
    let mut per_record: Vec<_> = r.router_ms_per_record.iter().collect();
    per_record.sort_by(|a, b| a.0.cmp(b.0));
    for (topic, ms) in per_record {
        row(
            &format!("router: mean time per {topic} record"),
            format!("{ms:.2} ms"),
            String::new(),
        );
    }
    let mut cpu: Vec<_> = r.cpu_seconds_per_1000_events.iter().collect();
    cpu.sort_by(|a, b| a.0.cmp(b.0));
    for (service, secs) in cpu {
        row(
            &format!("cpu seconds per 1,000 events: {service}"),
            format!("{secs:.3} s"),
            String::new(),
        );
    }
}
