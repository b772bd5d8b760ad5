//! Records handled as one batch (`Router::handle_all`): a record sees what
//! the records before it in the same batch changed, a duplicate inside a
//! batch changes nothing, a publish that fails keeps the committed decision
//! and republishes it (never recomputes), a router fenced out of a
//! partition commits nothing for it, and a Store lost at run time is
//! rebuilt before the batch is redone.

mod common;

use std::time::Duration;

use bus::cloudevents::CeAttributes;
use bus::kafka::Received;
use bus::model::{Action, Command, Event, IncidentStatus, Source, TaskStatus, UnitStatus, UnitType};
use bus::testing::BrokerChoice;
use bus::topics::Topic;
use common::*;

/// A record as the consumer hands it over, on the partition its key maps to.
fn record(ctx: &bus::ServiceContext, topic: Topic, key: &str, id: &str, payload: Vec<u8>) -> Received {
    Received {
        topic,
        partition: router::partition::partition_of(key, ctx.config.kafka.partitions),
        offset: 0,
        key: Some(key.to_owned()),
        payload,
        ce: Ok(CeAttributes::new(id, "/qzx/test", topic.ce_type())),
        timestamp_ms: None,
    }
}

fn event_record(ctx: &bus::ServiceContext, ev: &Event) -> Received {
    record(
        ctx,
        Topic::Events,
        &ev.jurisdiction,
        &ev.id,
        serde_json::to_vec(ev).unwrap(),
    )
}

fn action_record(ctx: &bus::ServiceContext, jurisdiction: &str, action: &Action) -> Received {
    record(
        ctx,
        Topic::Actions,
        jurisdiction,
        &action.id,
        serde_json::to_vec(action).unwrap(),
    )
}

#[tokio::test]
async fn a_record_sees_what_the_records_before_it_in_its_batch_changed() {
    let ctx = ctx("router-batch").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    let mut r = router(&ctx);

    // A burglary, the same caller's repeat a minute later, and a replay
    // of the first record: one batch.
    let first = event(&ctx, Source::Call110, "burglary", "有人撬门", LAT, LON, t0());
    let repeat = event(
        &ctx,
        Source::Call110,
        "burglary",
        "又有人撬门",
        LAT,
        LON,
        secs(t0(), 60),
    );
    let batch = [
        event_record(&ctx, &first),
        event_record(&ctx, &repeat),
        event_record(&ctx, &first),
    ];
    r.handle_all(&batch, secs(t0(), 60)).await.unwrap();

    let opened = only_open(&ctx).await;
    assert_eq!(
        opened.events,
        vec![first.id.clone(), repeat.id.clone()],
        "linked, replay ignored"
    );
    assert_eq!(
        opened.units.len(),
        1,
        "one task, not one per record: {:#?}",
        opened.units
    );
    let task = opened.units[0].clone();
    assert_eq!(task.status, TaskStatus::Issued);
    let claimed = unit_state(&ctx, &task.unit).await;
    assert_eq!(claimed.status, UnitStatus::Assigned);
    assert_eq!(claimed.task.as_deref(), Some(task.task.as_str()));

    // The unit's acknowledgement and its arrival in the next batch: the
    // second command needs the first one's task state.
    let ack = by_unit(
        &task.unit,
        Command::Ack {
            task: task.task.clone(),
        },
        secs(t0(), 70),
    );
    let on_scene = by_unit(
        &task.unit,
        Command::Status {
            reason: None,
            status: bus::model::ReportedStatus::OnScene,
            task: Some(task.task.clone()),
            lat: Some(LAT),
            lon: Some(LON),
            note: None,
            unit_type: None,
        },
        secs(t0(), 200),
    );
    let batch = [
        action_record(&ctx, &opened.jurisdiction, &ack),
        action_record(&ctx, &opened.jurisdiction, &on_scene),
    ];
    r.handle_all(&batch, secs(t0(), 200)).await.unwrap();
    let after = incident(&ctx, &opened.id).await;
    assert_eq!(after.units[0].status, TaskStatus::OnScene, "{:#?}", after.units);
    assert_eq!(after.status, IncidentStatus::OnScene);
    assert_eq!(
        after.version,
        opened.version + 2,
        "a version per record, the newest stored"
    );
    assert_eq!(unit_state(&ctx, &task.unit).await.status, UnitStatus::OnScene);
}

#[tokio::test]
async fn a_failed_publish_keeps_the_committed_decision_and_the_retry_republishes_it() {
    let ctx = bus::testing::context("router-batch-fail", BrokerChoice::Embedded, |c| {
        c.kafka.delivery_timeout_ms = 1500;
        c.kafka.embedded_brokers = 1;
    })
    .await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    let mut r = router(&ctx);
    let theft = event(&ctx, Source::Call110, "theft", "电动车被盗", LAT, LON, t0());
    let fight = event(&ctx, Source::Call110, "fight", "两人打架", LAT + 0.01, LON, t0());
    let batch = [event_record(&ctx, &theft), event_record(&ctx, &fight)];

    let broker = ctx.brokers.embedded().unwrap();
    broker.broker_down(1).unwrap();
    let failed = r.handle_all(&batch, t0()).await.unwrap_err();
    assert_eq!(failed.handled, 0, "nothing counts as handled: {failed}");
    // The decision was committed before publishing: it is kept, claims and
    // all, and will be republished as it is.
    let committed = ctx.store.open_incidents().await.unwrap();
    assert_eq!(committed.len(), 2, "{committed:#?}");
    for id in ["u-1", "u-2"] {
        assert_eq!(
            unit_state(&ctx, id).await.status,
            UnitStatus::Assigned,
            "{id} stays claimed"
        );
    }

    broker.broker_up(1).unwrap();
    let mut retried = r.handle_all(&batch, secs(t0(), 1)).await;
    for i in 0..20 {
        if retried.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        retried = r.handle_all(&batch, secs(t0(), 2 + i)).await;
    }
    retried.unwrap();
    let open = ctx.store.open_incidents().await.unwrap();
    assert_eq!(open, committed, "the same incidents, not recomputed ones");
    let mut units: Vec<String> = open
        .iter()
        .flat_map(|i| i.units.iter().map(|u| u.unit.clone()))
        .collect();
    units.sort();
    assert_eq!(units, ["u-1", "u-2"], "each unit tasked once");
    // What reached the topic is the committed decision.
    let ids: Vec<String> = committed.iter().map(|i| i.id.clone()).collect();
    let published = read_until(&ctx, Topic::Incidents, Duration::from_secs(10), |rs| {
        ids.iter()
            .all(|id| rs.iter().any(|r| r.key.as_deref() == Some(id.as_str())))
    })
    .await;
    let mut keys: Vec<String> = published.iter().filter_map(|r| r.key.clone()).collect();
    keys.sort();
    keys.dedup();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(keys, want, "no other incident was ever published");
    // Handling the batch again changes nothing.
    r.handle_all(&batch, secs(t0(), 30)).await.unwrap();
    assert_eq!(ctx.store.open_incidents().await.unwrap(), committed);
}

#[tokio::test]
async fn a_batch_redelivered_to_a_restarted_router_changes_nothing() {
    let ctx = ctx("router-batch-redelivered").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    let theft = event(&ctx, Source::Call110, "theft", "电动车被盗", LAT, LON, t0());
    let fight = event(&ctx, Source::Call110, "fight", "两人打架", LAT + 0.01, LON, t0());
    let batch = [event_record(&ctx, &theft), event_record(&ctx, &fight)];
    router(&ctx).handle_all(&batch, t0()).await.unwrap();
    let before = ctx.store.open_incidents().await.unwrap();
    assert_eq!(before.len(), 2);
    let tasks_before = [unit_state(&ctx, "u-1").await.task, unit_state(&ctx, "u-2").await.task];
    assert!(tasks_before.iter().all(Option::is_some), "both units tasked");

    // A new instance, remembering nothing, gets the same records again: a
    // crash after the Store write but before the offsets were committed.
    // The Store's applied markers (read for the batch at once) stop them.
    router(&ctx).handle_all(&batch, secs(t0(), 5)).await.unwrap();
    let after = ctx.store.open_incidents().await.unwrap();
    assert_eq!(after, before, "no incident created or changed again");
    let tasks_after = [unit_state(&ctx, "u-1").await.task, unit_state(&ctx, "u-2").await.task];
    assert_eq!(tasks_after, tasks_before, "each unit keeps its one task");
}

/// Two routers that both think they own a partition (the old owner has not
/// seen the rebalance yet): the one that took it over last wins, and the
/// other's batch is thrown away — nothing committed, its claims released.
#[tokio::test]
async fn a_router_fenced_out_of_a_partition_commits_nothing_for_it() {
    let ctx = ctx("router-fenced").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    let partitions: Vec<i32> = (0..ctx.config.kafka.partitions).collect();
    let mut old = router(&ctx);
    old.set_owned(partitions.clone()).await.unwrap();
    let mut new = router(&ctx);
    new.set_owned(partitions).await.unwrap();

    let theft = event(&ctx, Source::Call110, "theft", "电动车被盗", LAT, LON, t0());
    let failed = old.handle_all(&[event_record(&ctx, &theft)], t0()).await.unwrap_err();
    assert_eq!(failed.handled, 0);
    assert!(failed.to_string().contains("another router's"), "{failed}");
    assert!(ctx.store.open_incidents().await.unwrap().is_empty());
    assert_eq!(
        unit_state(&ctx, "u-1").await.status,
        UnitStatus::Available,
        "claim released"
    );

    // The owner handles the same record once.
    new.handle_all(&[event_record(&ctx, &theft)], t0()).await.unwrap();
    let open = ctx.store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].units[0].unit, "u-1");
}

/// Redis flushed while the router runs: its next commit finds its fencing
/// token gone, throws the batch away, rebuilds the Store from the topics
/// and takes its partitions over again; the retry then applies the record.
#[tokio::test]
async fn a_store_lost_at_run_time_is_rebuilt_and_the_batch_redone() {
    let ctx = ctx("router-store-lost").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    let partitions: Vec<i32> = (0..ctx.config.kafka.partitions).collect();
    let mut r = router(&ctx);
    r.set_owned(partitions.clone()).await.unwrap();
    let theft = event(&ctx, Source::Call110, "theft", "电动车被盗", LAT, LON, t0());
    r.handle_all(&[event_record(&ctx, &theft)], t0()).await.unwrap();
    let before = only_open(&ctx).await;

    // What FLUSHALL does to the router's keys.
    for p in partitions {
        ctx.store.delete_key(&format!("router:owner:{p}")).await.unwrap();
    }
    ctx.store.delete_key(router::rebuild::MARKER).await.unwrap();

    let fight = event(&ctx, Source::Call110, "fight", "两人打架", LAT + 0.01, LON, t0());
    let failed = r
        .handle_all(&[event_record(&ctx, &fight)], secs(t0(), 1))
        .await
        .unwrap_err();
    assert_eq!(failed.handled, 0, "{failed}");
    assert!(
        ctx.store.get_key(router::rebuild::MARKER).await.unwrap().is_some(),
        "rebuilt"
    );
    r.handle_all(&[event_record(&ctx, &fight)], secs(t0(), 2))
        .await
        .unwrap();
    let open = ctx.store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 2, "{open:#?}");
    assert!(open.iter().any(|i| i.id == before.id));
}
