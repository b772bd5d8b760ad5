//! The 1-3-5 clock: each stage met in time is never breached; each stage
//! past its deadline is breached with an escalation to the supervisor desk;
//! an unacknowledged task is re-dispatched to the next unit (the rungs after
//! the first are `ladder.rs`'s); and the clock survives a restart because
//! deadlines are data on the incident.

mod common;

use bus::model::{Command, EscalationKind, ReportedStatus, SlaState, Source, Stage, TaskStatus, UnitStatus, UnitType};
use common::*;

fn on_scene() -> Command {
    Command::Status {
        reason: None,
        status: ReportedStatus::OnScene,
        task: None,
        lat: None,
        lon: None,
        note: None,
        unit_type: None,
    }
}

#[tokio::test]
async fn respond_breach_redispatches_to_the_next_unit() {
    let ctx = ctx("router-redispatch").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.003, LON).await;
    let mut r = router(&ctx);
    r.on_event(event(&ctx, Source::Call110, "theft", "被偷", LAT, LON, t0()), t0())
        .await
        .unwrap();
    let inc = only_open(&ctx).await;
    let stale = inc.units[0].task.clone();
    assert_eq!(inc.units[0].unit, "u-1");

    // Just before the deadline (theft, urban: 120 s) nothing happens.
    r.tick(secs(t0(), 120)).await.unwrap();
    assert_eq!(only_open(&ctx).await.version, 1);

    r.tick(secs(t0(), 121)).await.unwrap();
    let inc = only_open(&ctx).await;
    assert_eq!(inc.sla.respond, SlaState::Breached);
    assert_eq!(inc.units[0].status, TaskStatus::Cancelled);
    assert_eq!(inc.units[1].unit, "u-2");
    assert_eq!(inc.units[1].status, TaskStatus::Issued);
    assert!(inc.timeline.iter().any(|t| t.what.contains("respond target breached")));
    assert!(inc.timeline.iter().any(|t| t.what.contains("re-dispatched to u-2")));
    assert_eq!(unit_state(&ctx, "u-1").await.status, UnitStatus::Available);
    assert_eq!(unit_state(&ctx, "u-2").await.status, UnitStatus::Assigned);

    let esc = escalations(&ctx, &inc.id, &[EscalationKind::SlaBreach, EscalationKind::Redispatch]).await;
    let breach = esc.iter().find(|e| e.kind == EscalationKind::SlaBreach).unwrap();
    assert_eq!(breach.stage, Some(Stage::Respond));
    assert_eq!(breach.desks, vec!["supervisor"]);
    assert!(esc.iter().any(|e| e.kind == EscalationKind::Redispatch));

    // Breached once: later ticks within the ladder's interval do not
    // breach or re-dispatch again.
    let version = inc.version;
    r.tick(secs(t0(), 125)).await.unwrap();
    assert_eq!(only_open(&ctx).await.version, version);

    // The first unit's late ack of its cancelled task is rejected.
    let late = by_unit("u-1", Command::Ack { task: stale }, secs(t0(), 130));
    r.on_action(late, secs(t0(), 130)).await.unwrap();
    assert_eq!(only_open(&ctx).await.version, version);
}

#[tokio::test]
async fn stages_met_in_time_are_never_breached() {
    let ctx = ctx("router-met").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    let mut r = router(&ctx);
    let inc = robbery_at_t0(&ctx, &mut r).await;
    let t1 = inc.units[0].task.clone();
    r.on_action(
        by_unit("u-1", Command::Ack { task: t1 }, secs(t0(), 50)),
        secs(t0(), 50),
    )
    .await
    .unwrap();
    r.on_action(by_unit("u-1", on_scene(), secs(t0(), 170)), secs(t0(), 170))
        .await
        .unwrap();
    r.on_action(by_unit("u-2", on_scene(), secs(t0(), 290)), secs(t0(), 290))
        .await
        .unwrap();
    for s in [100, 200, 400, 4000] {
        r.tick(secs(t0(), s)).await.unwrap();
    }
    let inc = only_open(&ctx).await;
    assert_eq!(
        (inc.sla.respond, inc.sla.arrive, inc.sla.reinforce),
        (SlaState::Met, SlaState::Met, SlaState::Met)
    );
    assert!(!inc.timeline.iter().any(|t| t.what.contains("breached")));
}

#[tokio::test]
async fn arrive_and_reinforce_are_breached_when_units_are_late() {
    let ctx = ctx("router-late").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    let mut r = router(&ctx);
    let inc = robbery_at_t0(&ctx, &mut r).await;
    for u in &inc.units {
        let ack = by_unit(&u.unit, Command::Ack { task: u.task.clone() }, secs(t0(), 30));
        r.on_action(ack, secs(t0(), 30)).await.unwrap();
    }
    r.tick(secs(t0(), 181)).await.unwrap();
    let mid = only_open(&ctx).await;
    assert_eq!(mid.sla.respond, SlaState::Met);
    assert_eq!(mid.sla.arrive, SlaState::Breached);
    assert_eq!(mid.sla.reinforce, SlaState::Pending);
    // On scene after the deadline: arrive stays breached.
    r.on_action(by_unit("u-1", on_scene(), secs(t0(), 200)), secs(t0(), 200))
        .await
        .unwrap();
    r.tick(secs(t0(), 301)).await.unwrap();
    let late = only_open(&ctx).await;
    assert_eq!(late.sla.arrive, SlaState::Breached);
    assert_eq!(late.sla.reinforce, SlaState::Breached);
    assert_eq!(late.units.len(), 2, "acknowledged tasks are not re-dispatched");

    assert_eq!(
        late.ladder.arrive.as_ref().map(|r| r.rung),
        Some(1),
        "the arrive ladder's first rung"
    );
    assert_eq!(late.ladder.reinforce.as_ref().map(|r| r.rung), Some(1));

    // The breaches themselves (the ladder's rungs have ids of their own).
    let records = read_until(
        &ctx,
        bus::topics::Topic::Escalations,
        std::time::Duration::from_secs(20),
        |rs| {
            rs.iter()
                .filter_map(|r| r.json::<bus::model::Escalation>().ok())
                .filter(|e| e.kind == EscalationKind::SlaBreach && !e.id.starts_with("ladder:"))
                .count()
                >= 2
        },
    )
    .await;
    let stages: Vec<Option<Stage>> = records
        .iter()
        .filter_map(|r| r.json::<bus::model::Escalation>().ok())
        .filter(|e| e.kind == EscalationKind::SlaBreach && !e.id.starts_with("ladder:"))
        .map(|e| e.stage)
        .collect();
    assert_eq!(stages, vec![Some(Stage::Arrive), Some(Stage::Reinforce)]);
}

#[tokio::test]
async fn the_clock_survives_a_restart() {
    let ctx = ctx("router-restart").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    {
        let mut first = router(&ctx);
        first
            .on_event(event(&ctx, Source::Call110, "theft", "被偷", LAT, LON, t0()), t0())
            .await
            .unwrap();
    }
    // A new process: it owns every partition and loads from the Store.
    let mut second = router(&ctx);
    second.set_owned(0..ctx.config.kafka.partitions).await.unwrap();
    assert_eq!(second.open_incidents().count(), 1);
    second.tick(secs(t0(), 121)).await.unwrap();
    let inc = only_open(&ctx).await;
    assert_eq!(inc.sla.respond, SlaState::Breached);

    // An instance that owns no partition of the jurisdiction leaves it be.
    let mut stranger = router(&ctx);
    let quancheng = router::partition::partition_of("quancheng", ctx.config.kafka.partitions);
    stranger
        .set_owned((0..ctx.config.kafka.partitions).filter(|p| *p != quancheng))
        .await
        .unwrap();
    assert_eq!(stranger.open_incidents().count(), 0);
}

/// A router killed between claiming a unit and recording the task leaves
/// the unit `assigned` to a task nobody has: the reconciler finds it on
/// two passes ten seconds apart and makes it available again, saying so.
#[tokio::test]
async fn the_reconciler_frees_a_unit_held_by_a_task_never_recorded() {
    let ctx = ctx("router-reconcile").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    let claimed = ctx.store.claim_unit("u-1", "task-of-a-dead-router").await.unwrap();
    assert!(matches!(claimed, bus::store::Claim::Claimed(_)));
    // A live claim: u-2 works on an open task.
    let mut r = router(&ctx);
    r.on_event(
        event(&ctx, Source::Call110, "theft", "被偷", LAT + 0.002, LON, t0()),
        t0(),
    )
    .await
    .unwrap();
    let inc = only_open(&ctx).await;
    assert_eq!(inc.units[0].unit, "u-2", "u-1 was not available");

    r.tick(secs(t0(), 1)).await.unwrap();
    assert_eq!(
        unit_state(&ctx, "u-1").await.status,
        UnitStatus::Assigned,
        "not on the first sight"
    );
    r.tick(secs(t0(), 12)).await.unwrap();
    let u1 = unit_state(&ctx, "u-1").await;
    assert_eq!((u1.status, u1.task), (UnitStatus::Available, None));
    let u2 = unit_state(&ctx, "u-2").await;
    assert_eq!(
        u2.task.as_deref(),
        Some(inc.units[0].task.as_str()),
        "a live claim is kept"
    );
    // About no incident: the task was never recorded.
    let freed: Vec<bus::model::Escalation> = escalations(&ctx, "", &[EscalationKind::Reconciled])
        .await
        .into_iter()
        .filter(|e| e.kind == EscalationKind::Reconciled)
        .collect();
    assert_eq!(freed.len(), 1, "{freed:#?}");
    assert!(freed[0].message.contains("u-1"), "{}", freed[0].message);
}
