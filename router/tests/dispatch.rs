//! Dispatch: the nearest available unit by predicted travel time, P1
//! reinforcements, no double assignment when two incidents race for one
//! unit, and the no-unit escalation retried by the clock.

mod common;

use bus::model::{EscalationKind, IncidentStatus, Source, TaskStatus, UnitRole, UnitStatus, UnitType};
use common::*;

#[tokio::test]
async fn the_nearest_available_unit_gets_the_task() {
    let ctx = ctx("router-nearest").await;
    unit(&ctx, "u-busy", UnitType::PatrolCar, LAT + 0.0003, LON).await;
    let mut busy = unit_state(&ctx, "u-busy").await;
    busy.status = UnitStatus::Busy;
    ctx.store.put_unit(&busy).await.unwrap();
    unit(&ctx, "u-foot", UnitType::Foot, LAT + 0.0020, LON).await; // 220 m, on foot: ~222 s
    unit(&ctx, "u-car", UnitType::PatrolCar, LAT + 0.0060, LON).await; // 670 m by car: ~113 s
    unit(&ctx, "u-far", UnitType::PatrolCar, LAT + 0.0100, LON).await;

    let mut r = router(&ctx);
    let ev = event(&ctx, Source::Call110, "theft", "钱包被偷", LAT, LON, t0());
    r.on_event(ev, t0()).await.unwrap();
    let inc = only_open(&ctx).await;
    assert_eq!(inc.status, IncidentStatus::Dispatched);
    assert_eq!(inc.units.len(), 1);
    let primary = &inc.units[0];
    assert_eq!(primary.unit, "u-car");
    assert_eq!(primary.role, UnitRole::Primary);
    assert!((100..130).contains(&primary.eta_s), "{}", primary.eta_s);
    let car = unit_state(&ctx, "u-car").await;
    assert_eq!(car.status, UnitStatus::Assigned);
    assert_eq!(car.task.as_deref(), Some(primary.task.as_str()));
    assert_eq!(unit_state(&ctx, "u-busy").await.status, UnitStatus::Busy);
    assert_eq!(unit_state(&ctx, "u-foot").await.status, UnitStatus::Available);

    // The task is on the tasks topic, keyed by the unit.
    let records = read_until(
        &ctx,
        bus::topics::Topic::Tasks,
        std::time::Duration::from_secs(15),
        |rs| !rs.is_empty(),
    )
    .await;
    let task: bus::model::Task = records[0].json().unwrap();
    assert_eq!(records[0].key.as_deref(), Some("u-car"));
    assert_eq!(task.id, primary.task);
    assert_eq!(task.kind, bus::model::TaskKind::Respond);
    assert_eq!(task.status, TaskStatus::Issued);
    assert_eq!(task.deadlines, inc.deadlines);
    // Deadlines count from the first event's receipt (theft, urban: 120 s).
    assert_eq!(inc.deadlines.unwrap().respond, secs(t0(), 120));
}

#[tokio::test]
async fn p1_incidents_get_reinforcements_up_to_the_target() {
    let ctx = ctx("router-p1").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    unit(&ctx, "u-3", UnitType::PatrolCar, LAT + 0.003, LON).await;
    let mut r = router(&ctx);
    let inc = robbery_at_t0(&ctx, &mut r).await;
    let roles: Vec<(&str, UnitRole)> = inc.units.iter().map(|u| (u.unit.as_str(), u.role)).collect();
    assert_eq!(
        roles,
        vec![("u-1", UnitRole::Primary), ("u-2", UnitRole::Reinforcement)]
    );
    assert_eq!(unit_state(&ctx, "u-3").await.status, UnitStatus::Available);
}

#[tokio::test]
async fn two_incidents_racing_for_one_unit_never_share_it() {
    let ctx = ctx("router-race").await;
    unit(&ctx, "u-only", UnitType::PatrolCar, LAT, LON).await;
    // Two router instances (as two processes would) on one Store.
    let mut a = router(&ctx);
    let mut b = router(&ctx);
    let ea = event(&ctx, Source::Call110, "theft", "被偷", LAT + 0.001, LON, t0());
    let eb = event(&ctx, Source::Call110, "fraud", "被骗", LAT - 0.001, LON, t0());
    let (ra, rb) = tokio::join!(a.on_event(ea.clone(), t0()), b.on_event(eb.clone(), t0()));
    // The unit is claimed by the commit: when both decided on it, the
    // second commit finds it taken, throws its batch away and the event is
    // handled again (as the consumer hands it again), without the unit.
    for (result, router, ev) in [(ra, &mut a, ea), (rb, &mut b, eb)] {
        if let Err(e) = result {
            assert!(e.to_string().contains("unit u-only works on"), "{e:#}");
            router.on_event(ev, t0()).await.unwrap();
        }
    }
    let open = ctx.store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 2);
    let with_unit: Vec<_> = open.iter().filter(|i| !i.units.is_empty()).collect();
    assert_eq!(with_unit.len(), 1, "{open:#?}");
    let without = open.iter().find(|i| i.units.is_empty()).unwrap();
    assert_eq!(without.status, IncidentStatus::New);
    assert!(without.timeline.iter().any(|t| t.what.starts_with("no available unit")));
    let u = unit_state(&ctx, "u-only").await;
    assert_eq!(u.task.as_deref(), Some(with_unit[0].units[0].task.as_str()));
}

#[tokio::test]
async fn without_a_unit_the_incident_waits_escalated_and_the_clock_retries() {
    let ctx = ctx("router-nounit").await;
    let mut r = router(&ctx);
    r.on_event(event(&ctx, Source::Call110, "theft", "被偷", LAT, LON, t0()), t0())
        .await
        .unwrap();
    let inc = only_open(&ctx).await;
    assert_eq!(inc.status, IncidentStatus::New);
    let esc = escalations(&ctx, &inc.id, &[EscalationKind::NoUnit]).await;
    assert_eq!(esc.iter().filter(|e| e.kind == EscalationKind::NoUnit).count(), 1);
    assert_eq!(esc[0].desks, vec!["supervisor"]);

    // A tick with still nothing changes nothing (no escalation storm).
    r.tick(secs(t0(), 5)).await.unwrap();
    assert_eq!(only_open(&ctx).await.version, 1);

    unit(&ctx, "u-late", UnitType::PatrolCar, LAT + 0.001, LON).await;
    r.tick(secs(t0(), 10)).await.unwrap();
    let inc = only_open(&ctx).await;
    assert_eq!(inc.status, IncidentStatus::Dispatched);
    assert_eq!(inc.units[0].unit, "u-late");
    assert_eq!(inc.version, 2);
}

#[tokio::test]
async fn units_outside_the_search_radius_are_not_sent() {
    let ctx = ctx_with("router-radius", |c| c.router.search_radius_m = 500.0).await;
    unit(&ctx, "u-far", UnitType::PatrolCar, LAT + 0.01, LON).await;
    let mut r = router(&ctx);
    r.on_event(event(&ctx, Source::Call110, "theft", "被偷", LAT, LON, t0()), t0())
        .await
        .unwrap();
    assert!(only_open(&ctx).await.units.is_empty());
}

#[tokio::test]
async fn a_p1_short_of_reinforcements_gets_them_when_a_unit_frees_up() {
    let ctx = ctx("router-p1-short").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    let mut r = router(&ctx);
    let inc = robbery_at_t0(&ctx, &mut r).await;
    assert_eq!(inc.units.len(), 1);
    assert!(
        inc.timeline.iter().any(|t| t.what.contains("only 1 of 2 units")),
        "{:#?}",
        inc.timeline
    );
    r.tick(secs(t0(), 5)).await.unwrap();
    assert_eq!(only_open(&ctx).await.version, 1, "nothing new to do yet");

    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.004, LON).await;
    r.tick(secs(t0(), 10)).await.unwrap();
    let inc = only_open(&ctx).await;
    let roles: Vec<(&str, UnitRole)> = inc.units.iter().map(|u| (u.unit.as_str(), u.role)).collect();
    assert_eq!(
        roles,
        vec![("u-1", UnitRole::Primary), ("u-2", UnitRole::Reinforcement)]
    );
}

#[tokio::test]
async fn a_freed_unit_goes_to_the_most_urgent_waiting_incident_and_an_idle_tick_changes_nothing() {
    let ctx = ctx("router-backlog").await;
    let mut r = router(&ctx);
    // Ten thefts, then a robbery, all waiting: no unit is on duty.
    for i in 0..10 {
        // 400 m apart: ten matters, not repeats of one.
        let lat = LAT + 0.0036 * f64::from(i);
        r.on_event(
            event(
                &ctx,
                Source::Call110,
                "theft",
                "被偷",
                lat,
                LON + 0.01,
                secs(t0(), i.into()),
            ),
            secs(t0(), i.into()),
        )
        .await
        .unwrap();
    }
    r.on_event(
        event(&ctx, Source::Call110, "robbery", "持刀抢劫", LAT, LON, secs(t0(), 20)),
        secs(t0(), 20),
    )
    .await
    .unwrap();
    let open = ctx.store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 11);
    assert!(open.iter().all(|i| i.units.is_empty()));

    // A unit comes on duty next to the first theft, not the robbery.
    let freed = by_unit(
        "u-1",
        bus::model::Command::Status {
            reason: None,
            status: bus::model::ReportedStatus::Available,
            task: None,
            lat: Some(LAT),
            lon: Some(LON + 0.01),
            note: None,
            unit_type: Some(UnitType::PatrolCar),
        },
        secs(t0(), 30),
    );
    r.on_action(freed, secs(t0(), 30)).await.unwrap();
    r.tick(secs(t0(), 31)).await.unwrap();
    let open = ctx.store.open_incidents().await.unwrap();
    let served: Vec<&bus::model::Incident> = open.iter().filter(|i| !i.units.is_empty()).collect();
    assert_eq!(served.len(), 1, "one unit, one incident");
    assert_eq!(
        served[0].priority, 1,
        "the robbery first, though it came last: {:#?}",
        served[0]
    );
    assert_eq!(unit_state(&ctx, "u-1").await.status, UnitStatus::Assigned);

    // With no unit freed, a tick finds nothing to give and changes nothing.
    let versions = |open: &[bus::model::Incident]| open.iter().map(|i| (i.id.clone(), i.version)).collect::<Vec<_>>();
    let before = versions(&ctx.store.open_incidents().await.unwrap());
    r.tick(secs(t0(), 32)).await.unwrap();
    assert_eq!(
        versions(&ctx.store.open_incidents().await.unwrap()),
        before,
        "nothing to give, nothing changed"
    );
}
