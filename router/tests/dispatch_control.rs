//! How far the router dispatches on its own, and units that cannot go
//! (issue #21): `hold` and recommend mode (the ranking published as
//! `candidates`, an operator assigns), pre-emption of a unit on a
//! lower-priority task for a P1, a unit refusing its task or going out of
//! service (replaced at once), and stale units (never dispatched).

mod common;

use bus::config::DispatchMode;
use bus::model::{Command, EscalationKind, IncidentStatus, ReportedStatus, Source, TaskStatus, UnitStatus, UnitType};
use common::*;

fn assign(incident: &str, unit: &str, preempt: bool) -> Command {
    Command::Assign {
        incident: incident.into(),
        unit: unit.into(),
        mode: Default::default(),
        preempt,
    }
}

#[tokio::test]
async fn recommend_mode_ranks_units_and_the_operator_picks() {
    let ctx = ctx_with("ctl-recommend", |c| {
        c.dispatch.mode.insert("3".into(), DispatchMode::Recommend);
    })
    .await;
    unit(&ctx, "u-near", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-far", UnitType::PatrolCar, LAT + 0.01, LON).await;
    let mut r = router(&ctx);
    r.on_event(
        event(&ctx, Source::Call110, "theft", "bike stolen", LAT, LON, t0()),
        t0(),
    )
    .await
    .unwrap();
    let inc = only_open(&ctx).await;
    assert!(inc.units.is_empty(), "recommend mode sends nobody by itself");
    let ranked: Vec<&str> = inc.candidates.iter().map(|c| c.unit.as_str()).collect();
    assert_eq!(ranked, ["u-near", "u-far"]);
    assert!(inc.candidates[0].eta_s < inc.candidates[1].eta_s);
    assert!(inc.candidates[0].in_time);
    assert_eq!(
        unit_state(&ctx, "u-near").await.status,
        UnitStatus::Available,
        "nothing claimed"
    );

    r.on_action(
        by_operator(assign(&inc.id, "u-far", false), secs(t0(), 20)),
        secs(t0(), 20),
    )
    .await
    .unwrap();
    let inc = incident(&ctx, &inc.id).await;
    assert_eq!(inc.units.len(), 1);
    assert_eq!(inc.units[0].unit, "u-far", "the operator's pick, not the router's");
    assert!(
        inc.candidates.is_empty(),
        "the ranking goes once the incident has its unit"
    );

    // A P1 stays automatic.
    r.on_event(
        event(
            &ctx,
            Source::Call110,
            "robbery",
            "持刀抢劫",
            LAT,
            LON + 0.01,
            secs(t0(), 30),
        ),
        secs(t0(), 30),
    )
    .await
    .unwrap();
    let p1 = ctx
        .store
        .open_incidents()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.priority == 1)
        .unwrap();
    assert_eq!(p1.units.len(), 1, "{:#?}", p1.timeline);
}

#[tokio::test]
async fn hold_stops_automatic_dispatch_for_one_incident_and_release_resumes_it() {
    let ctx = ctx("ctl-hold").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    let mut r = router(&ctx);
    r.on_event(
        event(&ctx, Source::Call110, "theft", "bike stolen", LAT, LON, t0()),
        t0(),
    )
    .await
    .unwrap();
    let inc = only_open(&ctx).await;
    let hold = |hold: bool| Command::Hold {
        incident: inc.id.clone(),
        hold,
        reason: Some("caller is a known hoaxer".into()),
    };
    r.on_action(by_operator(hold(true), secs(t0(), 5)), secs(t0(), 5))
        .await
        .unwrap();
    // The unit refuses: a held incident gets a ranking, not a new unit.
    let t1 = inc.units[0].task.clone();
    let refuse = Command::Refuse {
        task: t1.clone(),
        reason: "engine trouble".into(),
    };
    r.on_action(by_unit("u-1", refuse, secs(t0(), 10)), secs(t0(), 10))
        .await
        .unwrap();
    let held = incident(&ctx, &inc.id).await;
    assert!(held.hold);
    assert!(held.units.iter().all(|u| !u.status.is_open()), "{:#?}", held.units);
    let ranked: Vec<&str> = held.candidates.iter().map(|c| c.unit.as_str()).collect();
    assert_eq!(ranked, ["u-2"], "the refusing unit is not offered again");
    // Released: the router sends what it needs.
    r.on_action(by_operator(hold(false), secs(t0(), 20)), secs(t0(), 20))
        .await
        .unwrap();
    let resumed = incident(&ctx, &inc.id).await;
    assert!(!resumed.hold && resumed.candidates.is_empty());
    assert!(
        resumed
            .units
            .iter()
            .any(|u| u.unit == "u-2" && u.status == TaskStatus::Issued)
    );
}

#[tokio::test]
async fn a_p1_takes_a_unit_off_a_p3_task_when_no_free_unit_arrives_in_time() {
    let ctx = ctx("ctl-preempt").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    // Too far for the arrive target of a P1 (about 8 km).
    unit(&ctx, "u-far", UnitType::PatrolCar, LAT + 0.075, LON).await;
    let mut r = router(&ctx);
    r.on_event(
        event(&ctx, Source::Call110, "theft", "bike stolen", LAT, LON, t0()),
        t0(),
    )
    .await
    .unwrap();
    let p3 = only_open(&ctx).await;
    assert_eq!(p3.units[0].unit, "u-1");
    let p3_task = p3.units[0].task.clone();

    // 550 m away: not a repeat of the theft.
    r.on_event(
        event(
            &ctx,
            Source::Call110,
            "robbery",
            "持刀抢劫",
            LAT + 0.005,
            LON,
            secs(t0(), 30),
        ),
        secs(t0(), 30),
    )
    .await
    .unwrap();
    let open = ctx.store.open_incidents().await.unwrap();
    let p1 = open.iter().find(|i| i.priority == 1).unwrap();
    let primary = &p1.units[0];
    assert_eq!(primary.unit, "u-1", "{:#?}", p1.timeline);
    assert!(p1.timeline.iter().any(|t| t.what.contains("taken off P3 task")));
    let left = stored_task(&ctx, &p3_task).await;
    assert_eq!(left.status, TaskStatus::Cancelled);
    assert!(
        left.reason.as_deref().unwrap().contains("taken for P1 incident"),
        "{left:?}"
    );
    let p3 = incident(&ctx, &p3.id).await;
    assert_eq!(p3.status, IncidentStatus::New, "back to waiting");
    assert!(p3.timeline.iter().any(|t| t.what.contains("waiting for another unit")));
    let u1 = unit_state(&ctx, "u-1").await;
    assert_eq!(u1.task.as_deref(), Some(primary.task.as_str()));
    let preempted = escalations(&ctx, &p3.id, &[EscalationKind::Preempted]).await;
    assert!(preempted.iter().any(|e| e.kind == EscalationKind::Preempted));
}

#[tokio::test]
async fn an_operator_may_preempt_and_a_unit_on_scene_is_never_taken() {
    let ctx = ctx_with("ctl-preempt-op", |c| c.dispatch.preempt_for.clear()).await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.075, LON).await;
    let mut r = router(&ctx);
    r.on_event(
        event(&ctx, Source::Call110, "theft", "bike stolen", LAT, LON, t0()),
        t0(),
    )
    .await
    .unwrap();
    r.on_event(
        event(
            &ctx,
            Source::Call110,
            "assault",
            "fight",
            LAT + 0.003,
            LON,
            secs(t0(), 10),
        ),
        secs(t0(), 10),
    )
    .await
    .unwrap();
    let open = ctx.store.open_incidents().await.unwrap();
    let p2 = open.iter().find(|i| i.priority == 2).unwrap().clone();
    assert_eq!(p2.units[0].unit, "u-2", "without pre-emption the far unit goes");
    // Without preempt the busy unit cannot be assigned.
    r.on_action(
        by_operator(assign(&p2.id, "u-1", false), secs(t0(), 20)),
        secs(t0(), 20),
    )
    .await
    .unwrap();
    assert!(incident(&ctx, &p2.id).await.units.iter().all(|u| u.unit != "u-1"));
    r.on_action(by_operator(assign(&p2.id, "u-1", true), secs(t0(), 25)), secs(t0(), 25))
        .await
        .unwrap();
    let p2 = incident(&ctx, &p2.id).await;
    assert!(
        p2.units
            .iter()
            .any(|u| u.unit == "u-1" && u.status == TaskStatus::Issued),
        "{:#?}",
        p2.timeline
    );
    assert!(
        p2.units
            .iter()
            .any(|u| u.unit == "u-2" && u.status == TaskStatus::Cancelled),
        "replace is the default"
    );

    // u-1 reaches the P2's scene; a P1 may not take it from there.
    r.on_action(
        by_unit("u-1", status_report(ReportedStatus::OnScene, None), secs(t0(), 60)),
        secs(t0(), 60),
    )
    .await
    .unwrap();
    r.on_event(
        event(
            &ctx,
            Source::Call110,
            "robbery",
            "持刀抢劫",
            LAT + 0.007,
            LON,
            secs(t0(), 70),
        ),
        secs(t0(), 70),
    )
    .await
    .unwrap();
    let p1 = ctx
        .store
        .open_incidents()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.priority == 1)
        .unwrap();
    r.on_action(by_operator(assign(&p1.id, "u-1", true), secs(t0(), 80)), secs(t0(), 80))
        .await
        .unwrap();
    assert!(incident(&ctx, &p1.id).await.units.iter().all(|u| u.unit != "u-1"));
    assert_eq!(unit_state(&ctx, "u-1").await.status, UnitStatus::OnScene);
}

#[tokio::test]
async fn a_refused_task_goes_to_the_next_unit_at_once() {
    let ctx = ctx("ctl-refuse").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    let mut r = router(&ctx);
    r.on_event(
        event(&ctx, Source::Call110, "theft", "bike stolen", LAT, LON, t0()),
        t0(),
    )
    .await
    .unwrap();
    let inc = only_open(&ctx).await;
    let t1 = inc.units[0].task.clone();
    // Another unit cannot refuse u-1's task.
    let refuse = |reason: &str| Command::Refuse {
        task: t1.clone(),
        reason: reason.into(),
    };
    r.on_action(by_unit("u-2", refuse("not mine"), secs(t0(), 5)), secs(t0(), 5))
        .await
        .unwrap();
    assert_eq!(stored_task(&ctx, &t1).await.status, TaskStatus::Issued);
    r.on_action(by_unit("u-1", refuse("flat tyre"), secs(t0(), 10)), secs(t0(), 10))
        .await
        .unwrap();
    let refused = stored_task(&ctx, &t1).await;
    assert_eq!(refused.status, TaskStatus::Cancelled);
    assert_eq!(refused.reason.as_deref(), Some("refused by u-1: flat tyre"));
    let inc = incident(&ctx, &inc.id).await;
    assert!(
        inc.units
            .iter()
            .any(|u| u.unit == "u-2" && u.status == TaskStatus::Issued)
    );
    assert_eq!(unit_state(&ctx, "u-1").await.status, UnitStatus::Available);
    let found = escalations(&ctx, &inc.id, &[EscalationKind::Refused]).await;
    let e = found.iter().find(|e| e.kind == EscalationKind::Refused).unwrap();
    assert_eq!(e.by, "u-1");
}

#[tokio::test]
async fn out_of_service_on_the_way_is_replaced_and_never_dispatched() {
    let ctx = ctx("ctl-oos").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    let mut r = router(&ctx);
    r.on_event(
        event(&ctx, Source::Call110, "theft", "bike stolen", LAT, LON, t0()),
        t0(),
    )
    .await
    .unwrap();
    let inc = only_open(&ctx).await;
    // No reason: rejected.
    r.on_action(
        by_unit("u-1", status_report(ReportedStatus::OutOfService, None), secs(t0(), 5)),
        secs(t0(), 5),
    )
    .await
    .unwrap();
    assert_eq!(unit_state(&ctx, "u-1").await.status, UnitStatus::Assigned);
    r.on_action(
        by_unit(
            "u-1",
            status_report(ReportedStatus::OutOfService, Some("collision")),
            secs(t0(), 10),
        ),
        secs(t0(), 10),
    )
    .await
    .unwrap();
    let u1 = unit_state(&ctx, "u-1").await;
    assert_eq!(
        (u1.status, u1.reason.as_deref()),
        (UnitStatus::OutOfService, Some("collision"))
    );
    let inc = incident(&ctx, &inc.id).await;
    assert!(
        inc.units
            .iter()
            .any(|u| u.unit == "u-2" && u.status == TaskStatus::Issued)
    );
    // A new call nearby: u-1 is out of service, nobody else is free.
    r.on_event(
        event(
            &ctx,
            Source::Call110,
            "fraud",
            "phone scam",
            LAT,
            LON + 0.001,
            secs(t0(), 20),
        ),
        secs(t0(), 20),
    )
    .await
    .unwrap();
    let fraud = ctx
        .store
        .open_incidents()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.kind == "fraud")
        .unwrap();
    assert!(fraud.units.is_empty());
    // Back in service: the reason goes.
    r.on_action(
        by_unit("u-1", status_report(ReportedStatus::Available, None), secs(t0(), 30)),
        secs(t0(), 30),
    )
    .await
    .unwrap();
    assert_eq!(unit_state(&ctx, "u-1").await.reason, None);
}

#[tokio::test]
async fn a_unit_not_heard_from_is_not_dispatched() {
    let ctx = ctx_with("ctl-stale", |c| c.dispatch.stale_after_s = 600).await;
    unit(&ctx, "u-silent", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-fresh", UnitType::PatrolCar, LAT + 0.005, LON).await;
    let mut r = router(&ctx);
    // u-fresh reports a position at t0 + 15 min; u-silent has not since t0.
    let seen = secs(t0(), 900);
    ctx.store
        .move_unit("u-fresh", LAT + 0.005, LON, None, seen)
        .await
        .unwrap();
    r.on_event(
        event(&ctx, Source::Call110, "theft", "bike stolen", LAT, LON, seen),
        seen,
    )
    .await
    .unwrap();
    let inc = only_open(&ctx).await;
    assert_eq!(inc.units[0].unit, "u-fresh", "the nearer unit is stale");
}
