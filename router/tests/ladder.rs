//! The escalation ladder (issue #22): a breached stage climbs a rung at
//! its deadline and one more every `ladder.interval_s` while it is still
//! not met — respond re-dispatches (again, when the second unit does not
//! sign either), arrive sends a backup, reinforce requests units — each
//! rung an escalation to the supervisor; an operator's `hold` stops it.
//! (The reinforce rungs are shown in `clock.rs`.)
//! Also: `reinforce_units` for every priority, and a unit type asked for
//! with none free is sent when one frees up.

mod common;

use bus::model::{Command, EscalationKind, ReportedStatus, Source, Stage, TaskStatus, UnitType};
use common::*;

/// Rungs every 30 s for every priority; two rungs send units.
async fn ladder_ctx(name: &str) -> bus::ServiceContext {
    ctx_with(name, |c| {
        c.ladder.interval_s = ["1", "2", "3", "4"].iter().map(|p| ((*p).to_owned(), 30)).collect();
        c.ladder.dispatching_rungs = 2;
    })
    .await
}

#[tokio::test]
async fn respond_climbs_until_a_unit_signs_even_when_the_second_does_not() {
    let ctx = ladder_ctx("ladder-respond").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    unit(&ctx, "u-3", UnitType::PatrolCar, LAT + 0.003, LON).await;
    let mut r = router(&ctx);
    // A theft (P3, urban): respond within 120 s.
    r.on_event(
        event(&ctx, Source::Call110, "theft", "bike stolen", LAT, LON, t0()),
        t0(),
    )
    .await
    .unwrap();
    let id = only_open(&ctx).await.id;
    let on = |i: &bus::model::Incident, unit: &str| i.units.iter().find(|u| u.unit == unit).map(|u| u.status);

    r.tick(secs(t0(), 121)).await.unwrap();
    let inc = incident(&ctx, &id).await;
    assert_eq!(on(&inc, "u-1"), Some(TaskStatus::Cancelled));
    assert_eq!(on(&inc, "u-2"), Some(TaskStatus::Issued), "rung 1 at the deadline");
    assert_eq!(inc.ladder.respond.as_ref().unwrap().rung, 1);

    // Within the interval: nothing.
    r.tick(secs(t0(), 140)).await.unwrap();
    assert_eq!(incident(&ctx, &id).await.version, inc.version);

    // u-2 does not sign either: rung 2 sends u-3.
    r.tick(secs(t0(), 152)).await.unwrap();
    let inc = incident(&ctx, &id).await;
    assert_eq!(on(&inc, "u-2"), Some(TaskStatus::Cancelled));
    assert_eq!(on(&inc, "u-3"), Some(TaskStatus::Issued));
    assert!(
        inc.timeline
            .iter()
            .any(|t| t.what == "respond still not met: rung 2, re-dispatched to u-3")
    );

    // Rung 3 is past the sending rungs: the supervisor is alarmed, u-3 kept.
    r.tick(secs(t0(), 183)).await.unwrap();
    let inc = incident(&ctx, &id).await;
    assert_eq!(on(&inc, "u-3"), Some(TaskStatus::Issued));
    assert!(
        inc.timeline
            .iter()
            .any(|t| t.what == "respond still not met: rung 3, supervisor alarmed")
    );

    // u-3 signs: the ladder stops.
    let task = inc.units.iter().find(|u| u.unit == "u-3").unwrap().task.clone();
    r.on_action(by_unit("u-3", Command::Ack { task }, secs(t0(), 190)), secs(t0(), 190))
        .await
        .unwrap();
    r.tick(secs(t0(), 260)).await.unwrap();
    assert_eq!(incident(&ctx, &id).await.ladder.respond.as_ref().unwrap().rung, 3);

    let rung_records = |rs: &[bus::kafka::Received]| -> Vec<bus::model::Escalation> {
        rs.iter()
            .filter_map(|r| r.json::<bus::model::Escalation>().ok())
            .filter(|e| e.kind == EscalationKind::SlaBreach && e.id.starts_with("ladder:"))
            .collect()
    };
    let records = read_until(
        &ctx,
        bus::topics::Topic::Escalations,
        std::time::Duration::from_secs(20),
        |rs| rung_records(rs).len() >= 3,
    )
    .await;
    let found = rung_records(&records);
    let rungs: Vec<&str> = found.iter().map(|e| e.id.rsplit(':').next().unwrap()).collect();
    assert_eq!(rungs, ["1", "2", "3"]);
    assert!(
        found
            .iter()
            .all(|e| e.desks == ["supervisor"] && e.stage == Some(Stage::Respond))
    );
}

#[tokio::test]
async fn arrive_sends_a_backup_until_a_unit_is_on_scene() {
    let ctx = ladder_ctx("ladder-arrive").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    unit(&ctx, "u-3", UnitType::PatrolCar, LAT + 0.003, LON).await;
    let mut r = router(&ctx);
    // An assault (P2, urban): arrive within 180 s.
    r.on_event(event(&ctx, Source::Call110, "assault", "fight", LAT, LON, t0()), t0())
        .await
        .unwrap();
    let inc = only_open(&ctx).await;
    let task = inc.units[0].task.clone();
    r.on_action(by_unit("u-1", Command::Ack { task }, secs(t0(), 10)), secs(t0(), 10))
        .await
        .unwrap();
    // u-1 signed but never arrives: at the arrive deadline a backup goes.
    r.tick(secs(t0(), 181)).await.unwrap();
    let inc = incident(&ctx, &inc.id).await;
    assert!(
        inc.units
            .iter()
            .any(|u| u.unit == "u-2" && u.status == TaskStatus::Issued)
    );
    assert!(
        inc.timeline
            .iter()
            .any(|t| t.what == "arrive still not met: rung 1, backup sent: u-2")
    );
    assert_eq!(inc.ladder.arrive.as_ref().unwrap().rung, 1);

    // On scene: the arrive ladder stops (its next rung is not climbed).
    r.on_action(
        by_unit("u-1", status_report(ReportedStatus::OnScene, None), secs(t0(), 200)),
        secs(t0(), 200),
    )
    .await
    .unwrap();
    r.tick(secs(t0(), 215)).await.unwrap();
    assert_eq!(incident(&ctx, &inc.id).await.ladder.arrive.as_ref().unwrap().rung, 1);
}

#[tokio::test]
async fn a_p2_configured_with_two_units_gets_two_and_a_requested_type_is_sent_when_free() {
    let ctx = ctx_with("ladder-p2", |c| {
        for target in c.sla.iter_mut().filter(|t| t.priority == 2) {
            target.reinforce_units = 2;
        }
    })
    .await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    let mut r = router(&ctx);
    r.on_event(event(&ctx, Source::Call110, "assault", "fight", LAT, LON, t0()), t0())
        .await
        .unwrap();
    let inc = only_open(&ctx).await;
    assert_eq!(inc.priority, 2);
    assert_eq!(inc.units.len(), 2, "reinforce_units is honoured for a P2");

    // A special unit asked for, none on duty: the request is kept ...
    let escalate = Command::Escalate {
        incident: inc.id.clone(),
        desk: None,
        unit_type: Some(UnitType::Special),
        note: Some("armed".into()),
    };
    r.on_action(by_operator(escalate, secs(t0(), 20)), secs(t0(), 20))
        .await
        .unwrap();
    let inc = incident(&ctx, &inc.id).await;
    assert_eq!(inc.requested, [UnitType::Special]);
    // ... and served when a special unit comes on duty.
    unit(&ctx, "sp-1", UnitType::Special, LAT + 0.004, LON).await;
    r.tick(secs(t0(), 30)).await.unwrap();
    let inc = incident(&ctx, &inc.id).await;
    assert!(inc.requested.is_empty(), "{:#?}", inc.timeline);
    assert!(
        inc.units
            .iter()
            .any(|u| u.unit == "sp-1" && u.status == TaskStatus::Issued)
    );
    assert!(
        inc.timeline
            .iter()
            .any(|t| t.what == "requested special unit sent: sp-1")
    );
}

#[tokio::test]
async fn an_operator_hold_stops_the_ladder() {
    let ctx = ladder_ctx("ladder-hold").await;
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
    let hold = Command::Hold {
        incident: inc.id.clone(),
        hold: true,
        reason: Some("talking to the caller".into()),
    };
    r.on_action(by_operator(hold, secs(t0(), 30)), secs(t0(), 30))
        .await
        .unwrap();
    r.tick(secs(t0(), 121)).await.unwrap();
    r.tick(secs(t0(), 200)).await.unwrap();
    let inc = incident(&ctx, &inc.id).await;
    assert!(inc.ladder.is_empty(), "{:?}", inc.ladder);
    assert_eq!(inc.units[0].status, TaskStatus::Issued, "nobody re-dispatched");
}
