//! The router killed at any point converges: a property test runs random
//! batches of events and commands over several jurisdictions through a
//! router that publishes to an in-memory recorder, kills it at a random
//! crash point (a panic, as SIGKILL would stop it: no cleanup runs) or
//! fails a random Store call, starts a fresh router on the same Store,
//! redelivers from the committed offset, and checks what a crash-free run
//! gives: every event in exactly one incident; no incident version
//! published twice with two contents; no unit holding two open tasks; no
//! unit assigned without an open task; every open task on its incident's
//! latest version; the Store's open incidents as last published.
//!
//! Runs on Redis (the Lua commit) under the test script, else in memory.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};

use async_trait::async_trait;
use bus::ServiceContext;
use bus::cloudevents::CeAttributes;
use bus::kafka::Received;
use bus::model::{
    Action, Command, Incident, IncidentStatus, ReportedStatus, SlaState, Source, Stage, Task, TaskStatus, Timestamp,
    Unit, UnitStatus, UnitType, new_id,
};
use bus::store::{
    Appended, Claim, Commit, Committed, HistoryLimits, HistoryRead, NearbyUnit, SharedStore, Store, StoreError,
    StoreResult,
};
use bus::testing::BrokerChoice;
use bus::topics::Topic;
use common::{by_operator, by_unit, event, t0};
use proptest::prelude::*;
use router::{CrashPoint, Engine, Recorder, Router, StraightLine};

/// Station centres the events fall around (four jurisdictions).
const PLACES: [(f64, f64); 4] = [
    (36.6640, 117.0220),
    (36.6760, 117.0220),
    (36.6620, 116.9960),
    (36.6720, 117.0480),
];
const KINDS: [(&str, &str); 4] = [
    ("theft", "电动车被盗"),
    ("fight", "两人打架"),
    ("robbery", "持刀抢劫"),
    ("noise", "楼上噪音"),
];
const UNITS: usize = 8;

#[derive(Debug, Clone)]
enum Op {
    Event { place: usize, kind: usize, jitter: u8 },
    Ack { unit: usize },
    Progress { unit: usize, status: usize },
    Close { pick: usize },
    Assign { pick: usize, unit: usize },
    Tick { secs: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..PLACES.len(), 0..KINDS.len(), any::<u8>()).prop_map(|(place, kind, jitter)| Op::Event { place, kind, jitter }),
        2 => (0..UNITS).prop_map(|unit| Op::Ack { unit }),
        2 => (0..UNITS, 0..3usize).prop_map(|(unit, status)| Op::Progress { unit, status }),
        1 => any::<usize>().prop_map(|pick| Op::Close { pick }),
        1 => (any::<usize>(), 0..UNITS).prop_map(|(pick, unit)| Op::Assign { pick, unit }),
        1 => any::<u8>().prop_map(|secs| Op::Tick { secs }),
    ]
}

const POINTS: [CrashPoint; 5] = [
    CrashPoint::AfterClaim,
    CrashPoint::AfterCommit,
    CrashPoint::AfterPublish,
    CrashPoint::AfterAcks,
    CrashPoint::AfterSettle,
];

/// Where to kill the router: before op `at`, the `nth` time it reaches
/// `point` from then on.
#[derive(Debug, Clone)]
struct Kill {
    at: usize,
    point: usize,
    nth: usize,
}

fn kill() -> impl Strategy<Value = Kill> {
    (0..40usize, 0..POINTS.len(), 0..3usize).prop_map(|(at, point, nth)| Kill { at, point, nth })
}

fn unit_id(i: usize) -> String {
    format!("u-{i}")
}

/// The newest version of each record id published (by `id` field), and
/// every (id, version) with the contents it was published with.
#[derive(Default)]
struct Published {
    incidents: BTreeMap<String, Incident>,
    /// Every version of every incident.
    history: BTreeMap<String, BTreeMap<u64, Incident>>,
    tasks: BTreeMap<String, Task>,
    versions: HashMap<(String, u64), Vec<u8>>,
    forks: Vec<String>,
}

fn published(recorder: &Recorder) -> Published {
    let mut out = Published::default();
    for record in recorder.records() {
        match record.topic {
            Topic::Incidents => {
                let i: Incident = serde_json::from_slice(&record.value).unwrap();
                let key = (i.id.clone(), i.version);
                match out.versions.get(&key) {
                    Some(seen) if *seen != record.value => out.forks.push(format!("{} v{}", i.id, i.version)),
                    _ => {
                        out.versions.insert(key, record.value.clone());
                    }
                }
                out.history
                    .entry(i.id.clone())
                    .or_default()
                    .insert(i.version, i.clone());
                if out.incidents.get(&i.id).is_none_or(|old| old.version < i.version) {
                    out.incidents.insert(i.id.clone(), i);
                }
            }
            Topic::Tasks => {
                let t: Task = serde_json::from_slice(&record.value).unwrap();
                let key = (format!("task:{}", t.id), t.version);
                match out.versions.get(&key) {
                    Some(seen) if *seen != record.value => out.forks.push(format!("task {} v{}", t.id, t.version)),
                    _ => {
                        out.versions.insert(key, record.value.clone());
                    }
                }
                if out.tasks.get(&t.id).is_none_or(|old| old.version < t.version) {
                    out.tasks.insert(t.id.clone(), t);
                }
            }
            _ => {}
        }
    }
    out
}

/// A Store that fails the calls whose numbers (from 0) are in `fail`, as
/// a Redis timeout would (a commit sometimes after it ran), and otherwise
/// is `inner`.
struct FlakyStore {
    inner: SharedStore,
    calls: AtomicUsize,
    fail: HashSet<usize>,
}

impl FlakyStore {
    fn call(&self) -> StoreResult<()> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.fail.contains(&n) {
            return Err(StoreError::Unavailable(format!("injected failure of call {n}")));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for FlakyStore {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
    async fn claim_key(&self, key: &str, value: &str, ttl: std::time::Duration) -> StoreResult<Option<String>> {
        self.call()?;
        self.inner.claim_key(key, value, ttl).await
    }
    async fn set_key(&self, key: &str, value: &str, ttl: std::time::Duration) -> StoreResult<()> {
        self.call()?;
        self.inner.set_key(key, value, ttl).await
    }
    async fn get_key(&self, key: &str) -> StoreResult<Option<String>> {
        self.call()?;
        self.inner.get_key(key).await
    }
    async fn get_keys(&self, keys: &[String]) -> StoreResult<Vec<Option<String>>> {
        self.call()?;
        self.inner.get_keys(keys).await
    }
    async fn delete_key(&self, key: &str) -> StoreResult<()> {
        self.call()?;
        self.inner.delete_key(key).await
    }
    async fn put_unit(&self, unit: &Unit) -> StoreResult<()> {
        self.call()?;
        self.inner.put_unit(unit).await
    }
    async fn unit(&self, id: &str) -> StoreResult<Option<Unit>> {
        self.call()?;
        self.inner.unit(id).await
    }
    async fn units_by_id(&self, ids: &[String]) -> StoreResult<Vec<Option<Unit>>> {
        self.call()?;
        self.inner.units_by_id(ids).await
    }
    async fn units(&self) -> StoreResult<Vec<Unit>> {
        self.call()?;
        self.inner.units().await
    }
    async fn nearest_units(&self, lat: f64, lon: f64, radius_m: f64, limit: usize) -> StoreResult<Vec<NearbyUnit>> {
        self.call()?;
        self.inner.nearest_units(lat, lon, radius_m, limit).await
    }
    async fn move_unit(
        &self,
        id: &str,
        lat: f64,
        lon: f64,
        speed_kmh: Option<f64>,
        at: Timestamp,
    ) -> StoreResult<Option<Unit>> {
        self.call()?;
        self.inner.move_unit(id, lat, lon, speed_kmh, at).await
    }
    async fn claim_unit(&self, id: &str, task: &str) -> StoreResult<Claim> {
        self.call()?;
        self.inner.claim_unit(id, task).await
    }
    async fn put_incident(&self, incident: &Incident) -> StoreResult<()> {
        self.call()?;
        self.inner.put_incident(incident).await
    }
    async fn incident(&self, id: &str) -> StoreResult<Option<Incident>> {
        self.call()?;
        self.inner.incident(id).await
    }
    async fn open_incidents(&self) -> StoreResult<Vec<Incident>> {
        self.call()?;
        self.inner.open_incidents().await
    }
    async fn window_add(&self, key: &str, member: &str, at_ms: i64, keep_ms: i64) -> StoreResult<()> {
        self.call()?;
        self.inner.window_add(key, member, at_ms, keep_ms).await
    }
    async fn window_range(&self, key: &str, from_ms: i64, to_ms: i64) -> StoreResult<Vec<(String, i64)>> {
        self.call()?;
        self.inner.window_range(key, from_ms, to_ms).await
    }
    async fn history_append(
        &self,
        channel: &str,
        dedupe: &str,
        payload: &[u8],
        limits: HistoryLimits,
    ) -> StoreResult<Appended> {
        self.inner.history_append(channel, dedupe, payload, limits).await
    }
    async fn history_since(&self, channel: &str, cursor: Option<&str>, limit: usize) -> StoreResult<HistoryRead> {
        self.inner.history_since(channel, cursor, limit).await
    }
    async fn history_head(&self, channel: &str) -> StoreResult<Option<String>> {
        self.inner.history_head(channel).await
    }
    /// A failed commit is ambiguous half the time, as a Redis timeout is:
    /// the script ran, the answer never came.
    async fn commit(&self, commit: &Commit) -> StoreResult<Committed> {
        let n = self.calls.load(Ordering::SeqCst);
        if self.fail.contains(&n) && n % 2 == 1 {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.inner.commit(commit).await?;
            return Err(StoreError::Unavailable(format!("injected failure after call {n} ran")));
        }
        self.call()?;
        self.inner.commit(commit).await
    }
}

/// The input topics as one log, and how far the router's offsets reached.
struct Log {
    records: Vec<Received>,
    committed: usize,
}

fn record(ctx: &ServiceContext, topic: Topic, key: &str, id: &str, payload: Vec<u8>, offset: usize) -> Received {
    Received {
        topic,
        partition: router::partition::partition_of(key, ctx.config.kafka.partitions),
        offset: offset as i64,
        key: Some(key.to_owned()),
        payload,
        ce: Ok(CeAttributes::new(id, "/qzx/test", topic.ce_type())),
        timestamp_ms: None,
    }
}

/// One run: what it did, for the failure message and the totals.
#[derive(Debug, Default)]
struct Run {
    kills: usize,
    store_faults: usize,
    events: Vec<String>,
}

fn fresh_router(ctx: &ServiceContext, recorder: &Recorder) -> Router {
    let travel = Arc::new(StraightLine::new(&ctx.config.router));
    let engine = Engine::new(ctx.config.clone(), travel);
    Router::with_publisher(ctx, engine, Arc::new(recorder.clone()), ctx.config.kafka.partitions)
}

/// Runs `f` on the router in a task of its own; a crash point (panic)
/// gives `None`, and the router is gone with everything it held.
async fn guarded<T: Send + 'static>(
    router: Router,
    f: impl for<'a> FnOnce(&'a mut Router) -> futures::future::BoxFuture<'a, T> + Send + 'static,
) -> Option<(Router, T)> {
    tokio::spawn(async move {
        let mut router = router;
        let out = f(&mut router).await;
        (router, out)
    })
    .await
    .ok()
}

async fn run_case(base: &ServiceContext, ops: Vec<Op>, kills: Vec<Kill>, faults: Vec<usize>) -> Result<Run, String> {
    let inner: SharedStore = match bus::testing::redis_url() {
        Some(url) => Arc::new(
            bus::store::RedisStore::connect(&url, &format!("crash-{}:", new_id()))
                .await
                .map_err(|e| e.to_string())?,
        ),
        None => Arc::new(bus::store::MemoryStore::new()),
    };
    let flaky = Arc::new(FlakyStore {
        inner: inner.clone(),
        calls: AtomicUsize::new(0),
        fail: faults.iter().copied().collect(),
    });
    let mut ctx = base.clone();
    ctx.store = inner.clone();
    for i in 0..UNITS {
        let (lat, lon) = PLACES[i % PLACES.len()];
        let lat = lat + 0.001 * (i / PLACES.len()) as f64;
        common::unit(&ctx, &unit_id(i), UnitType::PatrolCar, lat, lon).await;
    }
    ctx.store = flaky.clone();
    let recorder = Recorder::new();
    let partitions: Vec<i32> = (0..ctx.config.kafka.partitions).collect();
    let mut router = fresh_router(&ctx, &recorder);
    let mut run = Run::default();
    let mut log = Log {
        records: Vec::new(),
        committed: 0,
    };
    let mut now = t0();
    let mut started = false;
    for (i, op) in ops.iter().enumerate() {
        now += chrono::Duration::seconds(2);
        if let Some(kill) = kills.iter().find(|k| k.at == i) {
            router.crash_at(POINTS[kill.point], kill.nth);
        }
        // A router (re)started takes its partitions over first.
        if !started {
            let owned = partitions.clone();
            match guarded(router, move |r| Box::pin(r.set_owned(owned))).await {
                Some((r, result)) => {
                    router = r;
                    started = result.is_ok();
                }
                None => {
                    run.kills += 1;
                    router = fresh_router(&ctx, &recorder);
                }
            }
            if !started {
                continue;
            }
        }
        let seen = published(&recorder);
        if let Some(action) = resolve(op, &seen, now) {
            let key = action.jurisdiction.clone();
            let payload = serde_json::to_vec(&action).unwrap();
            let offset = log.records.len();
            log.records
                .push(record(&ctx, Topic::Actions, &key, &action.id, payload, offset));
        }
        if let Op::Event { place, kind, jitter } = op {
            let (lat, lon) = PLACES[*place];
            let (kind, text) = KINDS[*kind];
            let jitter = f64::from(*jitter) * 0.00002;
            let ev = event(&ctx, Source::Call110, kind, text, lat + jitter, lon - jitter, now);
            run.events.push(ev.id.clone());
            let offset = log.records.len();
            let payload = serde_json::to_vec(&ev).unwrap();
            log.records
                .push(record(&ctx, Topic::Events, &ev.jurisdiction, &ev.id, payload, offset));
        }
        let outcome = if let Op::Tick { secs } = op {
            now += chrono::Duration::seconds(i64::from(*secs));
            let at = now;
            guarded(router, move |r| {
                Box::pin(async move { r.tick(at).await.map_err(|e| e.to_string()) })
            })
            .await
            .map(|(r, result)| (r, result.map(|()| 0)))
        } else {
            deliver(router, &log, now).await
        };
        match outcome {
            Some((r, Ok(handled))) => {
                router = r;
                log.committed += handled;
            }
            Some((r, Err(_))) => router = r,
            None => {
                run.kills += 1;
                router = fresh_router(&ctx, &recorder);
                started = false;
            }
        }
    }
    // Quiet now: no more faults. Deliver what is left, let the clock and
    // the reconciler run (two passes past the grace), and settle.
    run.store_faults = faults
        .iter()
        .filter(|n| **n < flaky.calls.load(Ordering::SeqCst))
        .count();
    drop(router);
    ctx.store = inner.clone();
    let mut router = fresh_router(&ctx, &recorder);
    router.set_owned(partitions).await.map_err(|e| format!("{e:#}"))?;
    let rest = &log.records[log.committed..];
    router.handle_all(rest, now).await.map_err(|e| format!("{e:#}"))?;
    for secs in [1, 12, 24] {
        router
            .tick(now + chrono::Duration::seconds(secs))
            .await
            .map_err(|e| format!("{e:#}"))?;
    }
    check(router.engine(), &inner, &recorder, &run).await?;
    Ok(run)
}

/// Delivers every record past the committed offset as one batch.
async fn deliver(router: Router, log: &Log, now: Timestamp) -> Option<(Router, Result<usize, String>)> {
    let batch: Vec<Received> = log.records[log.committed..].to_vec();
    let total = batch.len();
    guarded(router, move |r| {
        Box::pin(async move {
            match r.handle_all(&batch, now).await {
                Ok(()) => Ok(total),
                // The records before the failure count as handled.
                Err(e) if e.handled > 0 => Ok(e.handled),
                Err(e) => Err(e.to_string()),
            }
        })
    })
    .await
}

/// The command an op stands for, on what was published so far.
fn resolve(op: &Op, seen: &Published, now: Timestamp) -> Option<Action> {
    let open_task = |unit: usize| {
        seen.tasks
            .values()
            .filter(|t| t.unit == unit_id(unit) && t.status.is_open())
            .max_by_key(|t| t.issued_at)
            .cloned()
    };
    let open: Vec<&Incident> = seen.incidents.values().filter(|i| i.status.is_open()).collect();
    let mut action = match op {
        Op::Ack { unit } => {
            let task = open_task(*unit)?;
            by_unit(&task.unit, Command::Ack { task: task.id.clone() }, now)
        }
        Op::Progress { unit, status } => {
            let task = open_task(*unit)?;
            let status = [
                ReportedStatus::EnRoute,
                ReportedStatus::OnScene,
                ReportedStatus::Cleared,
            ][*status];
            let command = Command::Status {
                reason: None,
                status,
                task: Some(task.id.clone()),
                lat: None,
                lon: None,
                note: None,
                unit_type: None,
            };
            by_unit(&task.unit, command, now)
        }
        Op::Close { pick } if !open.is_empty() => {
            let incident = open[pick % open.len()];
            let command = Command::Close {
                incident: incident.id.clone(),
                disposition: "handled".into(),
                feedback: None,
            };
            by_operator(command, now)
        }
        Op::Assign { pick, unit } if !open.is_empty() => {
            let incident = open[pick % open.len()];
            let command = Command::Assign {
                mode: Default::default(),
                preempt: false,
                incident: incident.id.clone(),
                unit: unit_id(*unit),
            };
            by_operator(command, now)
        }
        _ => return None,
    };
    // Keyed as the api keys it: by the incident's jurisdiction.
    let jurisdiction = match &action.command {
        Command::Ack { task } | Command::Status { task: Some(task), .. } => seen.tasks[task].jurisdiction.clone(),
        Command::Close { incident, .. } | Command::Assign { incident, .. } => {
            seen.incidents[incident].jurisdiction.clone()
        }
        _ => action.jurisdiction.clone(),
    };
    action.jurisdiction = jurisdiction;
    Some(action)
}

/// The invariants of a crash-free run.
async fn check(engine: &Engine, store: &SharedStore, recorder: &Recorder, run: &Run) -> Result<(), String> {
    let seen = published(recorder);
    if !seen.forks.is_empty() {
        return Err(format!("versions published twice with two contents: {:?}", seen.forks));
    }
    for versions in seen.history.values() {
        state_machine_holds(engine, versions)?;
    }
    let mut homes: HashMap<&str, Vec<&str>> = HashMap::new();
    for incident in seen.incidents.values() {
        for event in &incident.events {
            homes.entry(event.as_str()).or_default().push(incident.id.as_str());
        }
    }
    for event in &run.events {
        match homes.get(event.as_str()).map(Vec::len) {
            Some(1) => {}
            Some(n) => return Err(format!("event {event} is in {n} incidents")),
            None => return Err(format!("event {event} is in no incident")),
        }
    }
    let mut open_by_unit: HashMap<&str, Vec<&str>> = HashMap::new();
    for task in seen.tasks.values().filter(|t| t.status.is_open()) {
        open_by_unit
            .entry(task.unit.as_str())
            .or_default()
            .push(task.id.as_str());
        let incident = seen
            .incidents
            .get(&task.incident)
            .ok_or_else(|| format!("task {} of an incident never published", task.id))?;
        if !incident.units.iter().any(|u| u.task == task.id && u.status.is_open()) {
            return Err(format!(
                "open task {} ({}) is not open on its incident's latest version {}",
                task.id,
                task.status.as_str(),
                incident.version
            ));
        }
    }
    if let Some((unit, tasks)) = open_by_unit.iter().find(|(_, tasks)| tasks.len() > 1) {
        return Err(format!("unit {unit} holds {} open tasks: {tasks:?}", tasks.len()));
    }
    for unit in store.units().await.map_err(|e| e.to_string())? {
        let working = matches!(
            unit.status,
            UnitStatus::Assigned | UnitStatus::EnRoute | UnitStatus::OnScene
        );
        let task = unit.task.as_ref().and_then(|t| seen.tasks.get(t));
        if working && !task.is_some_and(|t| t.status.is_open() && t.unit == unit.id) {
            return Err(format!(
                "unit {} is {} with task {:?}, which is not open",
                unit.id,
                unit.status.as_str(),
                unit.task
            ));
        }
    }
    for stored in store.open_incidents().await.map_err(|e| e.to_string())? {
        let latest = seen.incidents.get(&stored.id);
        if latest != Some(&stored) {
            return Err(format!(
                "the store's incident {} is not its latest published version",
                stored.id
            ));
        }
    }
    let open_published = seen
        .incidents
        .values()
        .filter(|i| i.status.is_open() && i.status != IncidentStatus::Diverted)
        .count();
    let open_stored = store.open_incidents().await.map_err(|e| e.to_string())?.len();
    if open_published != open_stored {
        return Err(format!(
            "{open_published} incidents open on the topic, {open_stored} in the store"
        ));
    }
    Ok(())
}

/// The incident state machine, over every version the real handlers
/// published: an open incident's status follows its tasks, a stage once
/// met or breached never changes, and reinforce is met only with as many
/// units on scene as the target asks.
fn state_machine_holds(engine: &Engine, versions: &BTreeMap<u64, Incident>) -> Result<(), String> {
    let mut previous: Option<&Incident> = None;
    for incident in versions.values() {
        let id = format!("{} v{}", incident.id, incident.version);
        if incident.status.is_open() {
            let open = incident.units.iter().any(|u| u.status.is_open());
            let cleared = incident.units.iter().any(|u| u.status == TaskStatus::Cleared);
            if (incident.status == IncidentStatus::Resolved) != (!open && cleared)
                || (incident.status == IncidentStatus::New) != (!open && !cleared)
            {
                return Err(format!(
                    "{id} is {} with tasks {:?}",
                    incident.status.as_str(),
                    incident.units
                ));
            }
        }
        if let Some(before) = previous {
            for stage in Stage::ALL {
                let (was, now) = (before.sla.get(stage), incident.sla.get(stage));
                if was != SlaState::Pending && was != now {
                    return Err(format!("{id}: {} went from {was:?} to {now:?}", stage.as_str()));
                }
                if stage == Stage::Reinforce
                    && was == SlaState::Pending
                    && now == SlaState::Met
                    && router::incident::on_scene_count(incident)
                        < engine.reinforce_units(&incident.jurisdiction, incident.priority)
                {
                    return Err(format!("{id}: reinforce met with too few units on scene"));
                }
            }
        }
        previous = Some(incident);
    }
    Ok(())
}

fn quiet_crash_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let crash = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.starts_with("crash point"));
            if !crash {
                default(info);
            }
        }));
    });
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

#[test]
fn a_router_killed_anywhere_converges_to_a_crash_free_run() {
    quiet_crash_panics();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let base = rt.block_on(bus::testing::context("router-crash", BrokerChoice::Embedded, |_| {}));
    let totals = std::sync::Mutex::new((0usize, 0usize, 0usize, 0usize));
    let config = ProptestConfig {
        cases: cases(),
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    };
    proptest!(config, |(
        ops in proptest::collection::vec(op(), 10..40),
        kills in proptest::collection::vec(kill(), 0..4),
        faults in proptest::collection::vec(0..400usize, 0..4),
    )| {
        let run = rt.block_on(run_case(&base, ops, kills, faults));
        let run = run.map_err(TestCaseError::fail)?;
        let mut t = totals.lock().unwrap();
        t.0 += 1;
        t.1 += run.kills;
        t.2 += run.store_faults;
        t.3 += run.events.len();
    });
    let (cases, kills, faults, events) = *totals.lock().unwrap();
    eprintln!("crash property: {cases} cases, {kills} kills survived, {faults} store faults, {events} events");
    assert!(kills > 0, "the crash points were never reached");
}
