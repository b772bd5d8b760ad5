//! Operators steer incidents and units are kept informed (issue #21): each
//! new command applied by the router without Kafka consumers, checked on
//! the Store, and the task updates a unit receives when its incident
//! changes under it.

mod common;

use bus::model::{
    AssignMode, Caller, Command, EscalationKind, IncidentStatus, Location, Source, TaskStatus, UnitRole, UnitStatus,
    UnitType,
};
use common::*;

/// An `update` of the priority alone.
fn update(incident: &str, priority: Option<u8>, reason: Option<&str>) -> Command {
    Command::Update {
        incident: incident.into(),
        priority,
        kind: None,
        text: None,
        location: None,
        reason: reason.map(str::to_owned),
    }
}

/// The latest version of each incident of `kind` on the incidents topic.
async fn published(ctx: &bus::ServiceContext, kind: &str) -> Vec<bus::model::Incident> {
    let kind = kind.to_owned();
    let wanted = kind.clone();
    let records = read_until(
        ctx,
        bus::topics::Topic::Incidents,
        std::time::Duration::from_secs(20),
        move |rs| {
            rs.iter()
                .filter_map(|r| r.json::<bus::model::Incident>().ok())
                .any(|i| i.kind == wanted)
        },
    )
    .await;
    let mut latest: std::collections::BTreeMap<String, bus::model::Incident> = Default::default();
    for i in records.iter().filter_map(|r| r.json::<bus::model::Incident>().ok()) {
        if i.kind == kind && latest.get(&i.id).is_none_or(|old| old.version < i.version) {
            latest.insert(i.id.clone(), i);
        }
    }
    latest.into_values().collect()
}

/// A bike theft (P3) at the test point at `t0`, one unit sent.
async fn theft_at_t0(ctx: &bus::ServiceContext, r: &mut router::Router) -> bus::model::Incident {
    let mut e = event(ctx, Source::Call110, "theft", "bike stolen", LAT, LON, t0());
    e.input.caller = Some(Caller {
        phone: Some("13800000001".into()),
        name: Some("王".into()),
    });
    r.on_event(e, t0()).await.unwrap();
    let inc = only_open(ctx).await;
    assert_eq!(inc.priority, 3);
    assert_eq!(inc.units.len(), 1);
    inc
}

#[tokio::test]
async fn a_repeat_call_that_raises_the_priority_reaches_the_unit_on_the_way() {
    let ctx = ctx("steer-repeat").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    let mut r = router(&ctx);
    let inc = theft_at_t0(&ctx, &mut r).await;
    let first = stored_task(&ctx, &inc.units[0].task).await;
    assert_eq!(first.incident_kind, "theft");
    assert_eq!(
        first.caller.as_ref().and_then(|c| c.phone.as_deref()),
        Some("13800000001")
    );
    assert!(first.changes.is_empty(), "a new task names no change");

    // The repeat call: a knife robbery at the same place.
    let repeat = event(
        &ctx,
        Source::Call110,
        "robbery",
        "持刀抢劫 他还在",
        LAT,
        LON,
        secs(t0(), 20),
    );
    r.on_event(repeat, secs(t0(), 20)).await.unwrap();
    let inc = only_open(&ctx).await;
    assert_eq!(inc.priority, 1);
    let updated = stored_task(&ctx, &first.id).await;
    assert!(updated.version > first.version);
    assert_eq!(updated.priority, 1);
    for change in ["priority", "deadlines", "units"] {
        assert!(
            updated.changes.iter().any(|c| c == change),
            "{change} in {:?}",
            updated.changes
        );
    }
    assert_eq!(
        updated.other_units,
        ["u-2"],
        "the P1 reinforcement is named to the first unit"
    );
    let second = stored_task(&ctx, &inc.units[1].task).await;
    assert_eq!(second.other_units, ["u-1"]);

    // The unit acknowledging moves its task: that version names no change.
    r.on_action(
        by_unit("u-1", Command::Ack { task: first.id.clone() }, secs(t0(), 30)),
        secs(t0(), 30),
    )
    .await
    .unwrap();
    assert!(stored_task(&ctx, &first.id).await.changes.is_empty());
}

#[tokio::test]
async fn an_operator_updates_priority_with_a_reason_kind_text_and_location() {
    let ctx = ctx("steer-update").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    let mut r = router(&ctx);
    let inc = theft_at_t0(&ctx, &mut r).await;
    let t1 = inc.units[0].task.clone();

    // No reason: rejected, nothing changes.
    r.on_action(
        by_operator(update(&inc.id, Some(1), None), secs(t0(), 10)),
        secs(t0(), 10),
    )
    .await
    .unwrap();
    assert_eq!(incident(&ctx, &inc.id).await.priority, 3);
    let rejected = escalations(&ctx, &inc.id, &[EscalationKind::Rejected]).await;
    assert!(
        rejected.iter().any(|e| e.message.contains("needs a reason")),
        "{rejected:?}"
    );

    let before = incident(&ctx, &inc.id).await;
    r.on_action(
        by_operator(update(&inc.id, Some(1), Some("caller says a knife")), secs(t0(), 20)),
        secs(t0(), 20),
    )
    .await
    .unwrap();
    let raised = incident(&ctx, &inc.id).await;
    assert_eq!(raised.priority, 1);
    assert!(raised.deadlines.as_ref().unwrap().arrive < before.deadlines.as_ref().unwrap().arrive);
    assert!(
        raised
            .timeline
            .iter()
            .any(|t| t.what.contains("caller says a knife") && t.by == "op-1")
    );
    assert_eq!(raised.units.len(), 2, "a P1 gets its reinforcement");
    assert!(stored_task(&ctx, &t1).await.changes.contains(&"priority".to_owned()));

    let moved = Location {
        lat: LAT + 0.003,
        lon: LON,
        address: Some("泉城路 1 号".into()),
    };
    let command = Command::Update {
        incident: inc.id.clone(),
        priority: None,
        kind: Some("robbery".into()),
        text: Some("two suspects, one with a knife".into()),
        location: Some(moved.clone()),
        reason: None,
    };
    r.on_action(by_operator(command, secs(t0(), 30)), secs(t0(), 30))
        .await
        .unwrap();
    let updated = incident(&ctx, &inc.id).await;
    assert_eq!(updated.kind, "robbery");
    assert_eq!(updated.location.as_ref(), Some(&moved));
    let t = stored_task(&ctx, &t1).await;
    assert_eq!(t.location.as_ref(), Some(&moved), "the unit follows the new location");
    assert_eq!(t.changes, ["kind", "location"]);
    assert_eq!(t.incident_kind, "robbery");
}

#[tokio::test]
async fn notes_reopen_and_undivert() {
    let ctx = ctx("steer-reopen").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    let mut r = router(&ctx);
    let inc = theft_at_t0(&ctx, &mut r).await;
    let t1 = inc.units[0].task.clone();
    let note = |incident: Option<&str>, text: &str| Command::Note {
        incident: incident.map(str::to_owned),
        task: None,
        text: text.into(),
    };
    r.on_action(
        by_operator(note(Some(&inc.id), "caller calls back at 14:30"), secs(t0(), 5)),
        secs(t0(), 5),
    )
    .await
    .unwrap();
    // A unit's note about its current task.
    r.on_action(
        by_unit("u-1", note(None, "owner not at home"), secs(t0(), 6)),
        secs(t0(), 6),
    )
    .await
    .unwrap();
    let noted = incident(&ctx, &inc.id).await;
    assert!(
        noted
            .timeline
            .iter()
            .any(|t| t.what == "note: caller calls back at 14:30" && t.by == "op-1")
    );
    assert!(
        noted
            .timeline
            .iter()
            .any(|t| t.what == "note: owner not at home" && t.by == "u-1")
    );

    let close = Command::Close {
        incident: inc.id.clone(),
        disposition: "no one there".into(),
        feedback: None,
    };
    r.on_action(by_operator(close, secs(t0(), 60)), secs(t0(), 60))
        .await
        .unwrap();
    assert_eq!(incident(&ctx, &inc.id).await.status, IncidentStatus::Closed);
    assert_eq!(stored_task(&ctx, &t1).await.status, TaskStatus::Cancelled);
    assert_eq!(unit_state(&ctx, "u-1").await.status, UnitStatus::Available);

    let reopen = |reason: &str| Command::Reopen {
        incident: inc.id.clone(),
        reason: reason.into(),
    };
    r.on_action(
        by_operator(reopen("owner home now, door forced"), secs(t0(), 600)),
        secs(t0(), 600),
    )
    .await
    .unwrap();
    let back = incident(&ctx, &inc.id).await;
    assert_eq!(back.status, IncidentStatus::Dispatched, "{:#?}", back.timeline);
    assert!(back.disposition.is_none());
    assert!(
        back.deadlines.as_ref().unwrap().respond > secs(t0(), 600),
        "fresh deadlines"
    );
    assert_eq!(back.units.len(), 1);
    assert_ne!(back.units[0].task, t1, "a new task");
    assert!(
        back.timeline
            .iter()
            .any(|t| t.what.starts_with("reopened (was closed)"))
    );
    // An open incident is not reopened.
    r.on_action(by_operator(reopen("again"), secs(t0(), 610)), secs(t0(), 610))
        .await
        .unwrap();
    let rejected = escalations(&ctx, &inc.id, &[EscalationKind::Rejected]).await;
    assert!(
        rejected.iter().any(|e| e.message.contains("incident is dispatched")),
        "{rejected:?}"
    );

    // Un-diverting: a 12345 matter comes back to the police.
    r.on_event(
        event(
            &ctx,
            Source::Call110,
            "noise",
            "loud music",
            LAT - 0.01,
            LON,
            secs(t0(), 700),
        ),
        secs(t0(), 700),
    )
    .await
    .unwrap();
    let open = ctx.store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 1, "the noise call is diverted at once");
    let diverted = published(&ctx, "noise").await.pop().expect("the noise incident");
    assert_eq!(diverted.status, IncidentStatus::Diverted);
    let undivert = Command::Reopen {
        incident: diverted.id.clone(),
        reason: "the neighbour now threatens the caller".into(),
    };
    r.on_action(by_operator(undivert, secs(t0(), 720)), secs(t0(), 720))
        .await
        .unwrap();
    let back = incident(&ctx, &diverted.id).await;
    assert!(back.status.is_open());
    assert!(back.diverted_to.is_none());
    assert!(back.deadlines.is_some());
}

#[tokio::test]
async fn merge_moves_events_callers_and_units_and_split_takes_events_out() {
    let ctx = ctx("steer-merge").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT - 0.02, LON).await;
    unit(&ctx, "u-3", UnitType::PatrolCar, LAT - 0.021, LON).await;
    let mut r = router(&ctx);
    let a = theft_at_t0(&ctx, &mut r).await;
    // The same matter called in from 2 km away (too far to be linked).
    let mut far = event(
        &ctx,
        Source::Call110,
        "theft",
        "thief ran south",
        LAT - 0.02,
        LON,
        secs(t0(), 30),
    );
    far.input.caller = Some(Caller {
        phone: Some("13800000002".into()),
        name: None,
    });
    r.on_event(far, secs(t0(), 30)).await.unwrap();
    let open = ctx.store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 2);
    let b = open.into_iter().find(|i| i.id != a.id).unwrap();
    let b_task = b.units[0].task.clone();

    let merge = Command::Merge {
        incident: a.id.clone(),
        from: b.id.clone(),
    };
    r.on_action(by_operator(merge, secs(t0(), 60)), secs(t0(), 60))
        .await
        .unwrap();
    let merged = incident(&ctx, &a.id).await;
    let closed = incident(&ctx, &b.id).await;
    assert_eq!(closed.status, IncidentStatus::Closed);
    assert_eq!(closed.merged_into.as_deref(), Some(a.id.as_str()));
    assert_eq!(
        closed.disposition.as_deref(),
        Some(format!("merged into {}", a.id).as_str())
    );
    assert_eq!(merged.merged, std::slice::from_ref(&b.id));
    assert_eq!(merged.events.len(), 2);
    assert_eq!(merged.callers.len(), 2);
    let moved = merged.units.iter().find(|u| u.task == b_task).expect("b's unit moved");
    assert_eq!(moved.role, UnitRole::Reinforcement, "a already has its primary");
    let t = stored_task(&ctx, &b_task).await;
    assert_eq!(t.incident, a.id, "the unit keeps its task, now for a");
    assert!(t.changes.contains(&"merged".to_owned()), "{:?}", t.changes);
    assert!(
        merged
            .timeline
            .iter()
            .any(|l| l.what.contains("thief ran south") || l.what.contains("created from"))
    );
    assert_eq!(ctx.store.open_incidents().await.unwrap().len(), 1);

    // Split the far call back out: a new incident, dispatched, linked.
    let far_event = merged.events[1].clone();
    let split = Command::Split {
        incident: a.id.clone(),
        events: vec![far_event.clone()],
        reason: Some("two different bikes".into()),
    };
    r.on_action(by_operator(split, secs(t0(), 90)), secs(t0(), 90))
        .await
        .unwrap();
    let open = ctx.store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 2);
    let c = open.iter().find(|i| i.id != a.id).unwrap();
    assert_eq!(c.split_from.as_deref(), Some(a.id.as_str()));
    assert_eq!(c.events, std::slice::from_ref(&far_event));
    assert_eq!(c.units.len(), 1, "the split incident is dispatched");
    assert!(!incident(&ctx, &a.id).await.events.contains(&far_event));

    // Splitting every event is refused.
    let all = Command::Split {
        incident: c.id.clone(),
        events: vec![far_event],
        reason: None,
    };
    r.on_action(by_operator(all, secs(t0(), 95)), secs(t0(), 95))
        .await
        .unwrap();
    let rejected = escalations(&ctx, &c.id, &[EscalationKind::Rejected]).await;
    assert!(
        rejected
            .iter()
            .any(|e| e.message.contains("at least one event must stay"))
    );
}

#[tokio::test]
async fn assign_with_mode_add_keeps_the_primary() {
    let ctx = ctx("steer-add").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    let mut r = router(&ctx);
    let inc = theft_at_t0(&ctx, &mut r).await;
    let add = Command::Assign {
        incident: inc.id.clone(),
        unit: "u-2".into(),
        mode: AssignMode::Add,
        preempt: false,
    };
    r.on_action(by_operator(add, secs(t0(), 10)), secs(t0(), 10))
        .await
        .unwrap();
    let inc = incident(&ctx, &inc.id).await;
    assert_eq!(inc.units.len(), 2);
    assert!(
        inc.units.iter().all(|u| u.status == TaskStatus::Issued),
        "nobody replaced"
    );
    assert_eq!(inc.units[1].role, UnitRole::Reinforcement);
    assert_eq!(stored_task(&ctx, &inc.units[0].task).await.other_units, ["u-2"]);
}
