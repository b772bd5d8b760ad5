//! The router as the binary runs it (`router::start` under a supervisor):
//! events and actions through Kafka, Kafka-native input and poison records,
//! the clock ticking on its own, rebuilding a lost Store from the topics,
//! and two instances handing jurisdictions over without loss or double
//! dispatch.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bus::kafka::Producer;
use bus::model::{Channel, Command, DeadLetter, Event, IncidentStatus, SlaState, Source, TaskStatus, UnitType};
use bus::topics::Topic;
use bus::{ServiceContext, Supervisor};
use common::*;
use rdkafka::producer::{FutureProducer, FutureRecord};

const WAIT: Duration = Duration::from_secs(40);

async fn send_event(producer: &Producer, ev: &Event) {
    producer
        .send_json(Topic::Events, &ev.jurisdiction, &ev.id, ev)
        .await
        .unwrap();
}

async fn started(ctx: &ServiceContext) -> Supervisor {
    let mut sup = Supervisor::default();
    router::start(ctx, &mut sup).await.unwrap();
    sup
}

async fn stop(sup: Supervisor) {
    sup.token().cancel();
    sup.wait(Duration::from_secs(15)).await.unwrap();
}

fn test_producer(ctx: &ServiceContext) -> Producer {
    Producer::new(&ctx.brokers, &ctx.config.kafka, ctx.topics.clone(), "/qzx/test").unwrap()
}

/// The same brokers and topics with an empty Store namespace: what the
/// router sees after Redis was flushed.
async fn with_fresh_store(ctx: &ServiceContext) -> ServiceContext {
    let mut fresh = ctx.clone();
    fresh.store = match bus::testing::redis_url() {
        Some(url) => Arc::new(
            bus::store::RedisStore::connect(
                &url,
                &format!("{}fresh-{}:", ctx.config.redis.key_prefix, bus::model::new_id()),
            )
            .await
            .unwrap(),
        ),
        None => Arc::new(bus::store::MemoryStore::new()),
    };
    fresh
}

#[tokio::test]
async fn events_actions_kafka_native_input_and_poison_records() {
    let ctx = ctx("router-e2e").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.0095, LON).await;
    let sup = started(&ctx).await;
    let producer = test_producer(&ctx);

    // A poison record without CloudEvents headers: dead-lettered, and the
    // partition keeps moving.
    let raw: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", ctx.brokers.bootstrap())
        .create()
        .unwrap();
    let events_topic = ctx.topics.name(Topic::Events);
    raw.send(
        FutureRecord::to(&events_topic)
            .key("quancheng")
            .payload(&b"\xff{not json"[..]),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    // An input event a source system wrote directly, without id or
    // jurisdiction, and one that is invalid.
    let input = serde_json::json!({
        "source": "sensor", "source_id": "cam-7-001", "kind": "video_alarm",
        "location": {"lat": LAT + 0.01, "lon": LON}, "text": "loitering detected",
        "sensor": {"device_id": "cam-7", "type": "video", "confidence": 0.5}
    });
    producer
        .send_json(Topic::Events, "quancheng", "cam-7-001", &input)
        .await
        .unwrap();
    let invalid =
        serde_json::json!({"source": "sensor", "source_id": "cam-7-002", "location": {"lat": 123.0, "lon": LON}});
    producer
        .send_json(Topic::Events, "quancheng", "cam-7-002", &invalid)
        .await
        .unwrap();
    // A normalised event as ingest writes it.
    let ev = event(&ctx, Source::Call110, "theft", "被偷", LAT, LON, chrono::Utc::now());
    send_event(&producer, &ev).await;

    let inc = eventually(WAIT, "the call's incident", || async {
        let open = ctx.store.open_incidents().await.unwrap();
        open.into_iter()
            .find(|i| i.events.contains(&ev.id) && !i.units.is_empty())
    })
    .await;
    assert_eq!(inc.units[0].unit, "u-1");
    let native = eventually(WAIT, "the kafka-native incident", || async {
        let open = ctx.store.open_incidents().await.unwrap();
        open.into_iter().find(|i| i.kind == "video_alarm")
    })
    .await;
    // Written under the wrong key: forwarded to its jurisdiction's partition.
    assert_eq!(native.jurisdiction, "daminghu");
    assert!(native.events[0].ends_with("cam-7-001"), "{:?}", native.events);

    let letters = read_until(&ctx, Topic::DeadLetter, WAIT, |rs| rs.len() >= 2).await;
    let letters: Vec<DeadLetter> = letters.iter().map(|r| r.json().unwrap()).collect();
    assert_eq!(letters.len(), 2, "{letters:#?}");
    assert!(letters.iter().all(|d| d.channel == Channel::Kafka));
    assert!(letters.iter().any(|d| d.raw_bytes() == b"\xff{not json"));
    let invalid_letter = letters.iter().find(|d| d.raw.contains("cam-7-002")).unwrap();
    assert!(
        invalid_letter.errors.iter().any(|e| e.field == "location.lat"),
        "{invalid_letter:?}"
    );

    // A unit's ack through the actions topic, keyed by a jurisdiction on
    // another partition than the incident's: forwarded to the owner.
    let ack = by_unit(
        "u-1",
        Command::Ack {
            task: inc.units[0].task.clone(),
        },
        chrono::Utc::now(),
    );
    let n = ctx.config.kafka.partitions;
    let home = router::partition::partition_of("quancheng", n);
    let wrong_key = STATIONS
        .iter()
        .map(|s| s.0)
        .find(|j| router::partition::partition_of(j, n) != home)
        .unwrap();
    producer
        .send_json(Topic::Actions, wrong_key, &ack.id, &ack)
        .await
        .unwrap();
    eventually(WAIT, "the ack applied", || async {
        let i = ctx.store.incident(&inc.id).await.unwrap()?;
        (i.status == IncidentStatus::Acknowledged && i.sla.respond == SlaState::Met).then_some(())
    })
    .await;
    stop(sup).await;
}

#[tokio::test]
async fn the_clock_ticks_by_itself_with_short_targets() {
    let ctx = ctx_with("router-tick", |c| {
        for t in &mut c.sla {
            (t.respond_s, t.arrive_s, t.reinforce_s) = (1, 2, 3);
        }
    })
    .await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    let sup = started(&ctx).await;
    let ev = event(&ctx, Source::Call110, "theft", "被偷", LAT, LON, chrono::Utc::now());
    send_event(&test_producer(&ctx), &ev).await;
    let inc = eventually(WAIT, "respond breached and re-dispatched", || async {
        let open = ctx.store.open_incidents().await.unwrap();
        open.into_iter()
            .find(|i| i.sla.respond == SlaState::Breached && i.units.len() == 2)
    })
    .await;
    assert_eq!(inc.units[0].status, TaskStatus::Cancelled);
    assert_eq!(inc.units[1].unit, "u-2");
    eventually(WAIT, "arrive and reinforce breached", || async {
        let i = ctx.store.incident(&inc.id).await.unwrap()?;
        (i.sla.arrive == SlaState::Breached && i.sla.reinforce == SlaState::Breached).then_some(())
    })
    .await;
    stop(sup).await;
}

/// The take-over reload: an instance that gets partitions loads their open
/// incidents from the Store and runs their 1-3-5 clocks. (It never ran
/// when the loop's wait for an assignment change consumed the
/// notification the reload checks.)
#[tokio::test]
async fn a_new_owner_runs_the_clocks_of_the_incidents_it_took_over() {
    let ctx = ctx("router-takeover").await;
    // Left open by a previous owner, its respond deadline long past.
    let opened = chrono::Utc::now() - chrono::Duration::minutes(10);
    let ev = event(&ctx, Source::Call110, "theft", "被偷", LAT, LON, opened);
    let engine = router(&ctx).engine().clone();
    let mut left = engine.new_incident(&ev, &engine.scorer().score(&ev, 1), opened);
    left.version = 1;
    ctx.store.put_incident(&left).await.unwrap();

    let sup = started(&ctx).await;
    eventually(WAIT, "the taken-over incident's respond stage breached", || async {
        let i = ctx.store.incident(&left.id).await.unwrap()?;
        (i.sla.respond == SlaState::Breached).then_some(())
    })
    .await;
    stop(sup).await;
}

#[tokio::test]
async fn a_lost_store_is_rebuilt_from_the_topics() {
    let ctx = ctx("router-rebuild").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    let sup = started(&ctx).await;
    let producer = test_producer(&ctx);
    let ev = event(&ctx, Source::Call110, "theft", "被偷", LAT, LON, chrono::Utc::now());
    send_event(&producer, &ev).await;
    let noise = event(
        &ctx,
        Source::Call110,
        "noise",
        "太吵",
        LAT + 0.01,
        LON,
        chrono::Utc::now(),
    );
    send_event(&producer, &noise).await;
    let inc = eventually(WAIT, "the incident", || async {
        let open = ctx.store.open_incidents().await.unwrap();
        open.into_iter().find(|i| !i.units.is_empty())
    })
    .await;
    // Wait for the diverted one too, so both are on the topic.
    read_until(&ctx, Topic::Incidents, WAIT, |rs| rs.len() >= 2).await;
    stop(sup).await;

    let fresh = with_fresh_store(&ctx).await;
    assert!(fresh.store.open_incidents().await.unwrap().is_empty());
    let sup = started(&fresh).await;
    let rebuilt = fresh.store.incident(&inc.id).await.unwrap().expect("incident rebuilt");
    assert_eq!(rebuilt, inc);
    assert_eq!(
        fresh.store.open_incidents().await.unwrap().len(),
        1,
        "the diverted one is not open"
    );
    let u = fresh.store.unit("u-1").await.unwrap().expect("unit rebuilt");
    assert_eq!(u.task.as_deref(), Some(inc.units[0].task.as_str()));
    assert!(fresh.store.get_key(router::rebuild::MARKER).await.unwrap().is_some());

    // The rebuilt state is usable: the unit acks its task.
    let ack = by_unit(
        "u-1",
        Command::Ack {
            task: inc.units[0].task.clone(),
        },
        chrono::Utc::now(),
    );
    producer
        .send_json(Topic::Actions, "quancheng", &ack.id, &ack)
        .await
        .unwrap();
    eventually(WAIT, "the ack applied after rebuild", || async {
        let i = fresh.store.incident(&inc.id).await.unwrap()?;
        (i.status == IncidentStatus::Acknowledged).then_some(())
    })
    .await;
    stop(sup).await;
}

/// A take-over may republish an older unit record after a newer one: the
/// rebuild keeps the highest version, not the last read.
#[tokio::test]
async fn the_rebuild_keeps_a_units_highest_version() {
    let ctx = ctx("router-rebuild-units").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT, LON).await;
    let mut assigned = ctx.store.unit("u-1").await.unwrap().unwrap();
    (assigned.status, assigned.task, assigned.version) = (bus::model::UnitStatus::Assigned, Some("t-1".into()), 3);
    let mut older = assigned.clone();
    (older.status, older.task, older.version) = (bus::model::UnitStatus::Available, None, 2);
    let producer = test_producer(&ctx);
    for u in [&assigned, &older] {
        producer
            .send_json(Topic::Units, &u.id, &bus::model::new_id(), u)
            .await
            .unwrap();
    }
    let fresh = with_fresh_store(&ctx).await;
    router::rebuild::rebuild(&fresh).await.unwrap();
    assert_eq!(fresh.store.unit("u-1").await.unwrap(), Some(assigned));
}

#[tokio::test]
async fn the_rebuild_never_overwrites_a_newer_commit_with_older_topic_state() {
    let ctx = ctx("router-rebuild-newer").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT, LON).await;
    let mut on_scene = ctx.store.unit("u-1").await.unwrap().unwrap();
    (on_scene.status, on_scene.task, on_scene.version) = (bus::model::UnitStatus::OnScene, Some("t-1".into()), 4);
    let producer = test_producer(&ctx);
    producer
        .send_json(Topic::Units, &on_scene.id, &bus::model::new_id(), &on_scene)
        .await
        .unwrap();
    // Meanwhile another instance committed the unit's clearing into the
    // refilled Store, not yet on the topic when this rebuild read it.
    let fresh = with_fresh_store(&ctx).await;
    let mut cleared = on_scene.clone();
    (cleared.status, cleared.task, cleared.version) = (bus::model::UnitStatus::Available, None, 5);
    fresh.store.put_unit(&cleared).await.unwrap();
    router::rebuild::rebuild(&fresh).await.unwrap();
    assert_eq!(fresh.store.unit("u-1").await.unwrap(), Some(cleared));
}

/// Centres of the demo city's station areas.
const STATIONS: [(&str, f64, f64); 6] = [
    ("quancheng", 36.6640, 117.0220),
    ("daminghu", 36.6760, 117.0220),
    ("baotuquan", 36.6620, 116.9960),
    ("jiefangqiao", 36.6720, 117.0480),
    ("qianfoshan", 36.6450, 117.0300),
    ("dikou", 36.6780, 116.9960),
];

#[tokio::test]
async fn two_instances_hand_over_without_loss_or_double_dispatch() {
    let ctx = ctx("router-scale").await;
    for (j, lat, lon) in STATIONS {
        unit(&ctx, &format!("{j}-a"), UnitType::PatrolCar, lat + 0.0005, lon).await;
        unit(&ctx, &format!("{j}-b"), UnitType::PatrolCar, lat - 0.0005, lon).await;
    }
    let mut second_ctx = ctx.clone();
    second_ctx.instance = bus::model::new_id();
    let first = started(&ctx).await;
    let second = started(&second_ctx).await;
    let producer = test_producer(&ctx);

    let mut sent = Vec::new();
    for (_, lat, lon) in STATIONS {
        let ev = event(&ctx, Source::Call110, "theft", "被偷", lat, lon, chrono::Utc::now());
        send_event(&producer, &ev).await;
        sent.push(ev.id);
    }
    let count_dispatched = |n: usize| {
        let ctx = ctx.clone();
        move || {
            let ctx = ctx.clone();
            async move {
                let open = ctx.store.open_incidents().await.unwrap();
                (open.iter().filter(|i| !i.units.is_empty()).count() >= n).then_some(open)
            }
        }
    };
    eventually(WAIT, "the first wave dispatched", count_dispatched(6)).await;

    // One instance stops; the other takes its jurisdictions over.
    stop(first).await;
    for (_, lat, lon) in STATIONS {
        let ev = event(&ctx, Source::Call110, "fraud", "被骗", lat, lon, chrono::Utc::now());
        send_event(&producer, &ev).await;
        sent.push(ev.id);
    }
    let open = eventually(WAIT, "the second wave dispatched", count_dispatched(12)).await;
    stop(second).await;

    // Every event made exactly one incident, each with exactly one task.
    assert_eq!(open.len(), 12, "{open:#?}");
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for i in &open {
        for e in &i.events {
            *seen.entry(e.as_str()).or_default() += 1;
        }
        assert_eq!(i.units.len(), 1, "{i:#?}");
    }
    for id in &sent {
        assert_eq!(seen.get(id.as_str()), Some(&1), "event {id}");
    }
    // No unit holds two tasks, and every task's unit holds it.
    let tasks: HashSet<&str> = open.iter().map(|i| i.units[0].task.as_str()).collect();
    assert_eq!(tasks.len(), 12);
    for i in &open {
        let u = ctx.store.unit(&i.units[0].unit).await.unwrap().unwrap();
        assert_eq!(u.task.as_deref(), Some(i.units[0].task.as_str()));
    }
}
