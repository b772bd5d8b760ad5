//! Scoring, desk routing, repeat linking, sensor-call fusion, diversion and
//! its danger override, CAP updates and cancels, and idempotent replays —
//! through the router's handler against the real broker and Store.

mod common;

use bus::model::{IncidentStatus, SlaState, Source, UnitType};
use common::*;

#[tokio::test]
async fn priorities_reasons_and_desks_for_a_table_of_calls() {
    let ctx = ctx("router-table").await;
    let mut r = router(&ctx);
    let table = [
        (
            "robbery",
            "两名男子持刀抢劫路人",
            1,
            vec!["command", "patrol", "criminal"],
            "weapon: knife",
        ),
        ("theft", "电动车被偷", 3, vec!["patrol", "criminal"], "category theft"),
        ("fraud", "接到冒充公检法电话被骗", 3, vec!["cyber"], "category fraud"),
        (
            "traffic_accident",
            "两车相撞有人受伤流血",
            1,
            vec!["command", "traffic"],
            "injury",
        ),
        ("fire", "居民楼起火", 1, vec!["patrol", "command"], "fire or explosion"),
        (
            "missing_person",
            "孩子走丢了",
            2,
            vec!["patrol", "video", "intelligence"],
            "child involved",
        ),
        ("unknown", "someone fired a gun", 2, vec!["command"], "weapon: firearm"),
    ];
    // Far apart, so none links to another.
    for (i, (kind, text, priority, desks, reason)) in table.into_iter().enumerate() {
        let lon = 117.0100 + 0.004 * i as f64;
        let ev = event(&ctx, Source::Call110, kind, text, 36.6545, lon, t0());
        r.on_event(ev.clone(), t0()).await.unwrap();
        let inc = r.open_incidents().find(|i| i.events[0] == ev.id).cloned().unwrap();
        assert_eq!(inc.priority, priority, "{kind}: {:#?}", inc.timeline);
        assert_eq!(inc.desks, desks, "{kind}");
        assert!(
            inc.timeline.iter().any(|t| t.what.contains(reason)),
            "{kind}: reason {reason} missing from {:#?}",
            inc.timeline
        );
        assert_eq!(inc.jurisdiction, "quancheng");
        assert_eq!(inc.version, 1);
        let stored = incident(&ctx, &inc.id).await;
        assert_eq!(
            (stored.version, stored.priority, &stored.desks),
            (1, priority, &inc.desks)
        );
    }
    assert_eq!(ctx.store.open_incidents().await.unwrap().len(), 7);
}

#[tokio::test]
async fn repeat_calls_join_one_incident_and_count_hotspots() {
    let ctx = ctx("router-repeat").await;
    let mut r = router(&ctx);
    let first = event(&ctx, Source::Call110, "theft", "包被偷了", LAT, LON, t0());
    r.on_event(first.clone(), t0()).await.unwrap();
    let second = event(
        &ctx,
        Source::Call110,
        "robbery",
        "刚才有人抢包",
        LAT + 0.0008,
        LON,
        secs(t0(), 120),
    );
    r.on_event(second.clone(), secs(t0(), 120)).await.unwrap();
    let third = event(
        &ctx,
        Source::Call110,
        "theft",
        "还是那个包",
        LAT,
        LON + 0.001,
        secs(t0(), 240),
    );
    r.on_event(third.clone(), secs(t0(), 240)).await.unwrap();
    // Same kind but 2 km away: its own incident.
    let elsewhere = event(
        &ctx,
        Source::Call110,
        "theft",
        "手机被偷",
        LAT + 0.02,
        LON,
        secs(t0(), 240),
    );
    r.on_event(elsewhere.clone(), secs(t0(), 240)).await.unwrap();

    let open = ctx.store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 2);
    let inc = open.iter().find(|i| i.events.contains(&first.id)).unwrap();
    assert_eq!(inc.events, vec![first.id.clone(), second.id.clone(), third.id.clone()]);
    assert_eq!(inc.repeat_count, 3);
    assert_eq!(inc.version, 3);
    // theft P3 (35) → a robbery call with a repeat (75+5): P1, command desk.
    assert_eq!(inc.priority, 1);
    assert!(inc.desks.contains(&"command".to_owned()));
    assert!(inc.timeline.iter().any(|t| t.what.contains("repeat call")));
    assert!(inc.timeline.iter().any(|t| t.what.contains("priority raised 3 -> 1")));

    let cell = second.cell.clone().unwrap();
    let hot = ctx
        .store
        .window_range(&format!("hotspot:{cell}"), 0, i64::MAX)
        .await
        .unwrap();
    assert!(hot.iter().any(|(m, _)| *m == second.id), "{hot:?}");
}

#[tokio::test]
async fn a_sensor_alarm_and_a_call_fuse_into_one_incident() {
    let ctx = ctx("router-fusion").await;
    let mut r = router(&ctx);
    let alarm = event(&ctx, Source::Sensor, "efence_breach", "", LAT, LON, t0());
    r.on_event(alarm.clone(), t0()).await.unwrap();
    let call = event(
        &ctx,
        Source::Call110,
        "missing_person",
        "老人翻墙走失",
        LAT + 0.001,
        LON,
        secs(t0(), 60),
    );
    r.on_event(call.clone(), secs(t0(), 60)).await.unwrap();
    let inc = only_open(&ctx).await;
    assert_eq!(inc.events, vec![alarm.id, call.id]);
    assert!(
        inc.timeline.iter().any(|t| t.what.contains("fused")),
        "{:#?}",
        inc.timeline
    );

    // Outside the fusion window: a separate incident.
    let late = event(
        &ctx,
        Source::Call110,
        "missing_person",
        "老人走失",
        LAT,
        LON,
        secs(t0(), 900),
    );
    r.on_event(late, secs(t0(), 900)).await.unwrap();
    assert_eq!(ctx.store.open_incidents().await.unwrap().len(), 2);
}

#[tokio::test]
async fn non_police_matters_are_diverted_unless_the_text_shows_danger() {
    let ctx = ctx("router-divert").await;
    unit(&ctx, "u-near", UnitType::PatrolCar, LAT + 0.0005, LON).await;
    let mut r = router(&ctx);
    let noise = event(&ctx, Source::Call110, "noise", "楼上装修太吵了", LAT, LON, t0());
    r.on_event(noise.clone(), t0()).await.unwrap();
    let diverted = r.open_incidents().count();
    assert_eq!(diverted, 0, "a diverted incident is not open");
    assert!(ctx.store.open_incidents().await.unwrap().is_empty());
    // Published, with the agency, and nobody dispatched.
    let records = read_until(
        &ctx,
        bus::topics::Topic::Incidents,
        std::time::Duration::from_secs(15),
        |rs| !rs.is_empty(),
    )
    .await;
    let inc: bus::model::Incident = records[0].json().unwrap();
    assert_eq!(inc.status, IncidentStatus::Diverted);
    assert_eq!(inc.diverted_to.as_deref(), Some("12345"));
    assert_eq!(inc.sla.respond, SlaState::NotApplicable);
    assert!(inc.units.is_empty());
    assert_eq!(
        unit_state(&ctx, "u-near").await.status,
        bus::model::UnitStatus::Available
    );

    let danger = event(
        &ctx,
        Source::Call110,
        "noise",
        "邻居吵架动了刀，有人流血",
        LAT + 0.01,
        LON,
        t0(),
    );
    r.on_event(danger, t0()).await.unwrap();
    let kept = only_open(&ctx).await;
    assert_eq!(kept.status, IncidentStatus::Dispatched);
    assert!(kept.diverted_to.is_none());
    let why = kept.timeline.iter().find(|t| t.what.contains("not diverted")).unwrap();
    assert!(
        why.what.contains("weapon: knife") && why.what.contains("injury"),
        "{}",
        why.what
    );
    assert_eq!(kept.units.len(), 1);
}

#[tokio::test]
async fn a_replayed_event_changes_nothing() {
    let ctx = ctx("router-idem").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT, LON + 0.001).await;
    let ev = event(&ctx, Source::Call110, "theft", "被偷", LAT, LON, t0());
    let mut r = router(&ctx);
    r.on_event(ev.clone(), t0()).await.unwrap();
    r.on_event(ev.clone(), t0()).await.unwrap();
    // A second router (another process) sees the applied id in the Store.
    let mut other = router(&ctx);
    other.on_event(ev.clone(), t0()).await.unwrap();
    let inc = only_open(&ctx).await;
    assert_eq!(inc.version, 1);
    assert_eq!(inc.units.len(), 1);
    let busy = [unit_state(&ctx, "u-1").await, unit_state(&ctx, "u-2").await]
        .iter()
        .filter(|u| u.task.is_some())
        .count();
    assert_eq!(busy, 1, "one task only");
}

#[tokio::test]
async fn cap_update_and_cancel_reach_the_referenced_incident() {
    let ctx = ctx("router-cap").await;
    let mut r = router(&ctx);
    let mut alert = event(&ctx, Source::Alert, "unknown", "暴雨预警", LAT, LON, t0());
    alert.input.source_id = "cap-42".into();
    r.on_event(alert.clone(), t0()).await.unwrap();
    let created = only_open(&ctx).await;

    let mut update = event(
        &ctx,
        Source::Alert,
        "unknown",
        "暴雨红色预警，有人受伤",
        LAT + 0.05,
        LON,
        secs(t0(), 60),
    );
    update.input.source_id = "cap-43".into();
    update.input.attrs.insert("cap_msg_type".into(), "Update".into());
    update.input.attrs.insert(
        "cap_references".into(),
        "qzx-test,cap-42,2026-11-22T06:00:00+00:00".into(),
    );
    r.on_event(update.clone(), secs(t0(), 60)).await.unwrap();
    let updated = only_open(&ctx).await;
    assert_eq!(updated.id, created.id);
    assert!(updated.events.contains(&update.id));
    assert!(
        updated
            .timeline
            .iter()
            .any(|t| t.what.contains("updated by alert cap-43"))
    );

    let mut cancel = event(&ctx, Source::Alert, "unknown", "解除", LAT, LON, secs(t0(), 120));
    cancel.input.source_id = "cap-44".into();
    cancel.input.attrs.insert("cap_msg_type".into(), "Cancel".into());
    cancel
        .input
        .attrs
        .insert("cap_references".into(), "qzx-test,cap-43,x".into());
    r.on_event(cancel, secs(t0(), 120)).await.unwrap();
    assert!(ctx.store.open_incidents().await.unwrap().is_empty());
    let closed = incident(&ctx, &created.id).await;
    assert_eq!(closed.status, IncidentStatus::Closed);

    // A cancel of an unknown alert makes no incident.
    let mut stray = event(&ctx, Source::Alert, "unknown", "解除", LAT, LON, secs(t0(), 130));
    stray.input.attrs.insert("cap_msg_type".into(), "Cancel".into());
    stray
        .input
        .attrs
        .insert("cap_references".into(), "qzx-test,cap-99,x".into());
    r.on_event(stray, secs(t0(), 130)).await.unwrap();
    assert!(ctx.store.open_incidents().await.unwrap().is_empty());
}

/// A call ingest could not place (issue #20): it is recorded, never sent a
/// unit in the middle of the city, and handed to people.
#[tokio::test]
async fn an_unlocated_call_waits_for_a_person_to_place_it() {
    use bus::model::{EscalationKind, Flag};
    let ctx = ctx("router-unlocated").await;
    let mut r = router(&ctx);
    // A unit at the fallback jurisdiction's centre, where a located-less
    // dispatch would send it, and one near the later located call.
    let fallback = ctx.config.city.fallback_jurisdiction.clone();
    let centre = ctx.config.jurisdiction(&fallback).unwrap().centre;
    unit(&ctx, "u-centre", UnitType::PatrolCar, centre[0], centre[1]).await;
    unit(&ctx, "u-near", UnitType::PatrolCar, LAT + 0.001, LON).await;

    let raw = serde_json::json!({
        "source": "call110", "source_id": "110-unlocated-1", "kind": "robbery",
        "location": {"address": "历下区泉城路1号"}, "text": "两名男子持刀抢劫路人"
    });
    let input = bus::validate::validate_input(&raw, &bus::validate::InputRules::new(&ctx.config), None, t0()).unwrap();
    let ev = bus::validate::normalise(input, &bus::geo::CityMap::new(&ctx.config), t0());
    r.on_event(ev.clone(), t0()).await.unwrap();

    let inc = incident(&ctx, &r.open_incidents().next().unwrap().id).await;
    assert_eq!(inc.flags, vec![Flag::Unlocated]);
    assert_eq!((inc.location.as_ref(), inc.cell.as_ref()), (None, None));
    assert_eq!(inc.jurisdiction, fallback);
    assert!(inc.desks.contains(&"command".to_owned()), "{:?}", inc.desks);
    assert!(inc.units.is_empty(), "{:#?}", inc.units);
    assert!(
        inc.timeline.iter().any(
            |t| t.what.starts_with("location unknown: dispatch waits for a location") && t.what.contains("泉城路1号")
        ),
        "{:#?}",
        inc.timeline
    );
    assert_eq!(
        unit_state(&ctx, "u-centre").await.status,
        bus::model::UnitStatus::Available
    );
    let esc = escalations(&ctx, &inc.id, &[EscalationKind::NoUnit]).await;
    assert!(esc.iter().any(|e| e.desks == vec!["supervisor"]), "{esc:#?}");

    // The clock runs (its breaches reach the supervisor) and still sends
    // nobody.
    r.tick(secs(t0(), 5)).await.unwrap();
    r.tick(secs(t0(), 400)).await.unwrap();
    let inc = incident(&ctx, &inc.id).await;
    assert!(inc.units.is_empty());
    assert_eq!(inc.sla.respond, SlaState::Breached);
    assert_eq!(
        unit_state(&ctx, "u-centre").await.status,
        bus::model::UnitStatus::Available
    );

    // A located repeat of the same call later: handled as usual, no crash.
    let located = event(
        &ctx,
        Source::Call110,
        "robbery",
        "还在泉城路持刀",
        LAT,
        LON,
        secs(t0(), 410),
    );
    r.on_event(located.clone(), secs(t0(), 410)).await.unwrap();
    let placed = r
        .open_incidents()
        .find(|i| i.events.contains(&located.id))
        .cloned()
        .unwrap();
    assert!(placed.flags.is_empty());
    assert_eq!(placed.units[0].unit, "u-near");
    assert!(incident(&ctx, &inc.id).await.units.is_empty());
}

#[tokio::test]
async fn the_same_caller_calling_again_from_elsewhere_or_without_a_position_joins_the_incident() {
    let ctx = ctx("router-caller-repeat").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    let mut r = router(&ctx);
    let with_phone = |mut e: bus::model::Event, phone: &str| {
        e.input.caller = Some(bus::model::Caller {
            phone: Some(phone.into()),
            name: None,
        });
        e
    };
    let first = with_phone(
        event(&ctx, Source::Call110, "theft", "my bag was taken", LAT, LON, t0()),
        "13800001111",
    );
    r.on_event(first, t0()).await.unwrap();
    // 1.1 km away in the same station area (too far for a repeat by
    // place), same phone: the caller is following the thief.
    let moved = with_phone(
        event(
            &ctx,
            Source::Call110,
            "theft",
            "he is running west",
            LAT,
            LON - 0.012,
            secs(t0(), 60),
        ),
        "13800001111",
    );
    r.on_event(moved, secs(t0(), 60)).await.unwrap();
    // A landline callback without a position, same number.
    let mut landline = with_phone(
        event(&ctx, Source::Call110, "theft", "still here", LAT, LON, secs(t0(), 90)),
        "13800001111",
    );
    // As ingest places it: the fallback jurisdiction, flagged unlocated.
    landline.input.location = None;
    landline.input.flags.push(bus::model::Flag::Unlocated);
    landline.cell = None;
    landline.jurisdiction = ctx.config.city.fallback_jurisdiction.clone();
    r.on_event(landline, secs(t0(), 90)).await.unwrap();
    let inc = only_open(&ctx).await;
    assert_eq!(inc.events.len(), 3, "{:#?}", inc.timeline);
    assert_eq!(inc.repeat_count, 3);
    assert_eq!(inc.callers.len(), 1, "one caller, once");
    // Another caller at the second place is a new incident.
    let other = with_phone(
        event(
            &ctx,
            Source::Call110,
            "theft",
            "bike gone",
            LAT,
            LON - 0.012,
            secs(t0(), 120),
        ),
        "13900002222",
    );
    r.on_event(other, secs(t0(), 120)).await.unwrap();
    assert_eq!(ctx.store.open_incidents().await.unwrap().len(), 2);
}
