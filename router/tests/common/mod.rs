//! Shared helpers for the router's integration tests: a context on the real
//! broker and Redis when the test script provides them (else embedded and
//! in-memory), a router driven directly with an explicit `now`, and
//! builders for events, units and commands.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bus::ServiceContext;
use bus::kafka::{Consumer, Producer, Received};
use bus::model::{
    Action, Actor, Command, Escalation, EscalationKind, Event, Incident, InputEvent, Location, Role, Source, Timestamp,
    Unit, UnitStatus, UnitType, new_id,
};
use bus::testing::{BrokerChoice, context};
use bus::topics::Topic;
use router::{Engine, Router, StraightLine};
use serde_json::Map;
use tokio_util::sync::CancellationToken;

/// A fresh context; the consumer group is unique to the test too.
/// The test point: inside the quancheng station area.
pub const LAT: f64 = 36.6650;
pub const LON: f64 = 117.0250;

pub async fn ctx(name: &str) -> ServiceContext {
    ctx_with(name, |_| {}).await
}

pub async fn ctx_with(name: &str, tweak: impl FnOnce(&mut bus::Config)) -> ServiceContext {
    context(name, BrokerChoice::RealIfAvailable, |c| {
        c.kafka.group_prefix = c.kafka.topic_prefix.trim_end_matches('.').to_owned();
        c.kafka.session_timeout_ms = 6000;
        c.kafka.drain_timeout_ms = 2000;
        c.router.clock_tick_ms = 100;
        tweak(c);
    })
    .await
}

/// A router over `ctx`, driven by the test (no consumer, no clock task).
pub fn router(ctx: &ServiceContext) -> Router {
    let travel = Arc::new(StraightLine::new(&ctx.config.router));
    let engine = Engine::new(ctx.config.clone(), travel);
    let producer = Producer::new(&ctx.brokers, &ctx.config.kafka, ctx.topics.clone(), "/qzx/router-test").unwrap();
    Router::new(ctx, engine, producer, ctx.config.kafka.partitions)
}

/// A normalised event received at `at`, placed by the city map.
pub fn event(ctx: &ServiceContext, source: Source, kind: &str, text: &str, lat: f64, lon: f64, at: Timestamp) -> Event {
    let input = InputEvent {
        source,
        source_id: new_id(),
        kind: kind.into(),
        occurred_at: None,
        location: Some(Location {
            lat,
            lon,
            address: None,
        }),
        text: Some(text.into()),
        caller: None,
        sensor: None,
        attrs: Map::new(),
        flags: Vec::new(),
    };
    bus::validate::normalise(input, &bus::geo::CityMap::new(&ctx.config), at)
}

/// A call at a fixed daytime hour (14:00 local), so the night rule never
/// changes a priority under test.
pub fn t0() -> Timestamp {
    let today = chrono::Utc::now().date_naive();
    today.and_hms_opt(6, 0, 0).unwrap().and_utc()
}

pub fn secs(t: Timestamp, s: i64) -> Timestamp {
    t + chrono::Duration::seconds(s)
}

/// An available unit at a position.
pub async fn unit(ctx: &ServiceContext, id: &str, unit_type: UnitType, lat: f64, lon: f64) {
    let place = bus::geo::CityMap::new(&ctx.config).place(lat, lon);
    ctx.store
        .put_unit(&Unit {
            id: id.into(),
            unit_type,
            jurisdiction: place.jurisdiction,
            status: UnitStatus::Available,
            lat: Some(lat),
            lon: Some(lon),
            at: t0(),
            task: None,
            version: 0,
            speed_kmh: None,
            name: None,
            reason: None,
        })
        .await
        .unwrap();
}

pub async fn unit_state(ctx: &ServiceContext, id: &str) -> Unit {
    ctx.store.unit(id).await.unwrap().unwrap()
}

pub async fn incident(ctx: &ServiceContext, id: &str) -> Incident {
    ctx.store.incident(id).await.unwrap().unwrap()
}

/// The only open incident of the store.
pub async fn only_open(ctx: &ServiceContext) -> Incident {
    let open = ctx.store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 1, "{open:#?}");
    open.into_iter().next().unwrap()
}

pub fn by_unit(unit: &str, command: Command, at: Timestamp) -> Action {
    Action {
        id: new_id(),
        at,
        by: Actor {
            sub: unit.into(),
            role: Role::Unit,
            unit: Some(unit.into()),
        },
        jurisdiction: "quancheng".into(),
        command,
    }
}

pub fn by_operator(command: Command, at: Timestamp) -> Action {
    Action {
        id: new_id(),
        at,
        by: Actor {
            sub: "op-1".into(),
            role: Role::Operator,
            unit: None,
        },
        jurisdiction: "quancheng".into(),
        command,
    }
}

/// Reads `topic` from the beginning until `done` holds or `timeout` passes.
pub async fn read_until(
    ctx: &ServiceContext,
    topic: Topic,
    timeout: Duration,
    done: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    let group = format!("reader-{}", new_id());
    let consumer = Consumer::new(&ctx.brokers, &ctx.config.kafka, ctx.topics.clone(), &group, &[topic]).unwrap();
    let token = CancellationToken::new();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while !done(&got) {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, consumer.next(&token)).await {
            Ok(Ok(Some(r))) => got.push(r),
            _ => break,
        }
    }
    got
}

/// Escalations published for an incident, read from the topic.
pub async fn escalations(ctx: &ServiceContext, incident: &str, want: &[EscalationKind]) -> Vec<Escalation> {
    let incident = incident.to_owned();
    let want = want.to_vec();
    let parse = move |rs: &[Received]| -> Vec<Escalation> {
        rs.iter()
            .filter_map(|r| r.json::<Escalation>().ok())
            .filter(|e| e.incident == incident)
            .collect()
    };
    let p = parse.clone();
    let records = read_until(ctx, Topic::Escalations, Duration::from_secs(20), move |rs| {
        let got = p(rs);
        want.iter().all(|k| got.iter().any(|e| e.kind == *k))
    })
    .await;
    parse(&records)
}

/// Polls until `check` holds, or fails the test after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The scenario most tests start from: a knife robbery called in at `t0`
/// at the test point; returns the incident it opened.
pub async fn robbery_at_t0(ctx: &ServiceContext, r: &mut Router) -> Incident {
    r.on_event(event(ctx, Source::Call110, "robbery", "持刀抢劫", LAT, LON, t0()), t0())
        .await
        .unwrap();
    only_open(ctx).await
}

/// A unit's `status` report, with a reason (`busy`, `out_of_service`) or
/// none.
pub fn status_report(status: bus::model::ReportedStatus, reason: Option<&str>) -> Command {
    Command::Status {
        status,
        task: None,
        lat: None,
        lon: None,
        note: None,
        unit_type: None,
        reason: reason.map(str::to_owned),
    }
}

/// A task as the Store holds it.
pub async fn stored_task(ctx: &ServiceContext, id: &str) -> bus::model::Task {
    let json = ctx.store.get_key(&router::tx::task_key(id)).await.unwrap().unwrap();
    serde_json::from_str(&json).unwrap()
}
