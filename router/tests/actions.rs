//! Commands from units and operators: every task and incident transition,
//! assign/reassign, divert, escalate, close with feedback, unit
//! registration and positions — and the rejected ones, which are recorded
//! as escalations and never applied.

mod common;

use bus::model::{
    Command, EscalationKind, Feedback, IncidentStatus, ReportedStatus, SlaState, Source, TaskStatus, UnitRole,
    UnitStatus, UnitType,
};
use common::*;

fn ack(task: &str) -> Command {
    Command::Ack { task: task.into() }
}

#[tokio::test]
async fn a_task_goes_from_ack_to_resolved_and_the_operator_closes_it() {
    let ctx = ctx("router-flow").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.002, LON).await;
    let mut r = router(&ctx);
    let inc = robbery_at_t0(&ctx, &mut r).await;
    let t1 = inc.units[0].task.clone();

    r.on_action(by_unit("u-1", ack(&t1), secs(t0(), 30)), secs(t0(), 30))
        .await
        .unwrap();
    let inc = only_open(&ctx).await;
    assert_eq!(inc.status, IncidentStatus::Acknowledged);
    assert_eq!(inc.sla.respond, SlaState::Met);
    assert_eq!(inc.units[0].status, TaskStatus::Acknowledged);

    r.on_action(
        by_unit("u-1", status_report(ReportedStatus::EnRoute, None), secs(t0(), 40)),
        secs(t0(), 40),
    )
    .await
    .unwrap();
    assert_eq!(only_open(&ctx).await.status, IncidentStatus::EnRoute);
    assert_eq!(unit_state(&ctx, "u-1").await.status, UnitStatus::EnRoute);

    r.on_action(
        by_unit("u-1", status_report(ReportedStatus::OnScene, None), secs(t0(), 100)),
        secs(t0(), 100),
    )
    .await
    .unwrap();
    let inc = only_open(&ctx).await;
    assert_eq!(inc.status, IncidentStatus::OnScene);
    assert_eq!(inc.sla.arrive, SlaState::Met);
    assert_eq!(inc.sla.reinforce, SlaState::Pending, "P1 needs two units on scene");

    // The reinforcement skips ahead straight to on scene.
    r.on_action(
        by_unit("u-2", status_report(ReportedStatus::OnScene, None), secs(t0(), 200)),
        secs(t0(), 200),
    )
    .await
    .unwrap();
    assert_eq!(only_open(&ctx).await.sla.reinforce, SlaState::Met);

    r.on_action(
        by_unit("u-1", status_report(ReportedStatus::Cleared, None), secs(t0(), 900)),
        secs(t0(), 900),
    )
    .await
    .unwrap();
    let u1 = unit_state(&ctx, "u-1").await;
    assert_eq!((u1.status, u1.task), (UnitStatus::Available, None));
    assert_eq!(only_open(&ctx).await.status, IncidentStatus::OnScene);
    r.on_action(
        by_unit("u-2", status_report(ReportedStatus::Cleared, None), secs(t0(), 950)),
        secs(t0(), 950),
    )
    .await
    .unwrap();
    let inc = only_open(&ctx).await;
    assert_eq!(
        inc.status,
        IncidentStatus::Resolved,
        "resolved is still open until closed"
    );

    let close = Command::Close {
        incident: inc.id.clone(),
        disposition: "suspect detained".into(),
        feedback: Some(Feedback::Unsatisfied),
    };
    r.on_action(by_operator(close, secs(t0(), 1000)), secs(t0(), 1000))
        .await
        .unwrap();
    let closed = incident(&ctx, &inc.id).await;
    assert_eq!(closed.status, IncidentStatus::Closed);
    assert_eq!(closed.disposition.as_deref(), Some("suspect detained"));
    assert_eq!(closed.feedback, Some(Feedback::Unsatisfied));
    let follow_up = only_open(&ctx).await;
    assert_eq!(follow_up.follow_up_of.as_deref(), Some(inc.id.as_str()));
    assert_eq!(follow_up.status, IncidentStatus::New);

    // The incidents topic has every version, in order.
    let records = read_until(
        &ctx,
        bus::topics::Topic::Incidents,
        std::time::Duration::from_secs(15),
        |rs| rs.len() >= 9,
    )
    .await;
    let versions: Vec<u64> = records
        .iter()
        .filter_map(|r| r.json::<bus::model::Incident>().ok())
        .filter(|i| i.id == inc.id)
        .map(|i| i.version)
        .collect();
    assert_eq!(versions, (1..=8).collect::<Vec<u64>>());
}

#[tokio::test]
async fn invalid_commands_are_rejected_with_an_escalation_and_never_applied() {
    let ctx = ctx("router-reject").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.01, LON).await;
    let mut busy = unit_state(&ctx, "u-2").await;
    busy.status = UnitStatus::Busy;
    ctx.store.put_unit(&busy).await.unwrap();
    let mut r = router(&ctx);
    r.on_event(event(&ctx, Source::Call110, "theft", "被偷", LAT, LON, t0()), t0())
        .await
        .unwrap();
    let inc = only_open(&ctx).await;
    let t1 = inc.units[0].task.clone();
    let at = secs(t0(), 10);
    r.on_action(by_unit("u-1", status_report(ReportedStatus::OnScene, None), at), at)
        .await
        .unwrap();
    let before = only_open(&ctx).await;

    let bad = vec![
        by_unit("u-1", ack("no-such-task"), at),
        by_unit("u-2", ack(&t1), at),
        by_unit("u-1", ack(&t1), at),
        by_unit("u-1", status_report(ReportedStatus::EnRoute, None), at),
        by_unit("u-1", status_report(ReportedStatus::OffDuty, None), at),
        by_operator(
            Command::Assign {
                mode: Default::default(),
                preempt: false,
                incident: inc.id.clone(),
                unit: "u-2".into(),
            },
            at,
        ),
        by_operator(
            Command::Assign {
                mode: Default::default(),
                preempt: false,
                incident: "no-such-incident".into(),
                unit: "u-2".into(),
            },
            at,
        ),
        by_operator(
            Command::Escalate {
                incident: inc.id.clone(),
                desk: Some("astrology".into()),
                unit_type: None,
                note: None,
            },
            at,
        ),
        by_operator(
            Command::Close {
                incident: inc.id.clone(),
                disposition: " ".into(),
                feedback: None,
            },
            at,
        ),
    ];
    for action in &bad {
        r.on_action(action.clone(), at).await.unwrap();
    }
    let after = only_open(&ctx).await;
    assert_eq!(after, before, "nothing was applied");
    assert_eq!(unit_state(&ctx, "u-2").await.status, UnitStatus::Busy);

    let ids: Vec<String> = bad.iter().map(|a| a.id.clone()).collect();
    let records = read_until(
        &ctx,
        bus::topics::Topic::Escalations,
        std::time::Duration::from_secs(20),
        |rs| {
            rs.iter()
                .filter_map(|r| r.json::<bus::model::Escalation>().ok())
                .filter(|e| e.kind == EscalationKind::Rejected)
                .count()
                >= ids.len()
        },
    )
    .await;
    let rejected: Vec<bus::model::Escalation> = records
        .iter()
        .filter_map(|r| r.json::<bus::model::Escalation>().ok())
        .filter(|e| e.kind == EscalationKind::Rejected)
        .collect();
    for id in &ids {
        let e = rejected
            .iter()
            .find(|e| e.action.as_deref() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("no rejection for {id}: {rejected:#?}"));
        assert!(!e.message.is_empty());
    }
    let off_duty = rejected
        .iter()
        .find(|e| e.action.as_deref() == Some(ids[4].as_str()))
        .unwrap();
    assert!(off_duty.message.contains("clear it first"), "{}", off_duty.message);
    assert_eq!(off_duty.incident, inc.id);

    // Closing twice: the second is rejected.
    let close = Command::Close {
        incident: inc.id.clone(),
        disposition: "done".into(),
        feedback: Some(Feedback::Satisfied),
    };
    r.on_action(by_operator(close.clone(), at), at).await.unwrap();
    assert!(ctx.store.open_incidents().await.unwrap().is_empty());
    let again = by_operator(close, at);
    r.on_action(again.clone(), at).await.unwrap();
    let again_id = again.id.clone();
    let records = read_until(
        &ctx,
        bus::topics::Topic::Escalations,
        std::time::Duration::from_secs(20),
        |rs| {
            rs.iter()
                .filter_map(|r| r.json::<bus::model::Escalation>().ok())
                .any(|e| e.action.as_deref() == Some(again_id.as_str()))
        },
    )
    .await;
    let second = records
        .iter()
        .filter_map(|r| r.json::<bus::model::Escalation>().ok())
        .find(|e| e.action.as_deref() == Some(again.id.as_str()))
        .expect("the second close is rejected");
    assert!(second.message.contains("closed"), "{}", second.message);
    assert_eq!(incident(&ctx, &inc.id).await.version, before.version + 1);
    // Closing freed the unit and cancelled its task.
    assert_eq!(unit_state(&ctx, "u-1").await.status, UnitStatus::Available);
}

#[tokio::test]
async fn operators_reassign_escalate_and_divert() {
    let ctx = ctx("router-operator").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT + 0.001, LON).await;
    unit(&ctx, "u-2", UnitType::PatrolCar, LAT + 0.004, LON).await;
    unit(&ctx, "s-1", UnitType::Special, LAT + 0.006, LON).await;
    let mut r = router(&ctx);
    r.on_event(
        event(&ctx, Source::Call110, "dispute", "邻里纠纷", LAT, LON, t0()),
        t0(),
    )
    .await
    .unwrap();
    let inc = only_open(&ctx).await;
    assert_eq!(inc.units[0].unit, "u-1");

    let at = secs(t0(), 20);
    let assign = Command::Assign {
        mode: Default::default(),
        preempt: false,
        incident: inc.id.clone(),
        unit: "u-2".into(),
    };
    r.on_action(by_operator(assign, at), at).await.unwrap();
    let inc = only_open(&ctx).await;
    assert_eq!(inc.units[0].status, TaskStatus::Cancelled);
    assert_eq!(
        (inc.units[1].unit.as_str(), inc.units[1].role),
        ("u-2", UnitRole::Primary)
    );
    assert!(
        inc.timeline
            .iter()
            .any(|t| t.what == "reassigned from u-1 to u-2" && t.by == "op-1")
    );
    assert_eq!(unit_state(&ctx, "u-1").await.status, UnitStatus::Available);
    assert_eq!(unit_state(&ctx, "u-2").await.status, UnitStatus::Assigned);

    let escalate = Command::Escalate {
        incident: inc.id.clone(),
        desk: Some("video".into()),
        unit_type: Some(UnitType::Special),
        note: Some("吹哨报到".into()),
    };
    let action = by_operator(escalate, at);
    r.on_action(action.clone(), at).await.unwrap();
    let inc = only_open(&ctx).await;
    assert!(inc.desks.contains(&"video".to_owned()));
    let special = inc.units.iter().find(|u| u.unit == "s-1").unwrap();
    assert_eq!(special.role, UnitRole::Specialist);
    assert_eq!(unit_state(&ctx, "s-1").await.status, UnitStatus::Assigned);
    let esc = escalations(&ctx, &inc.id, &[EscalationKind::Escalate]).await;
    let e = esc.iter().find(|e| e.kind == EscalationKind::Escalate).unwrap();
    assert_eq!(e.desks, vec!["video"]);
    assert_eq!(e.unit_type, Some(UnitType::Special));
    assert_eq!(e.action.as_deref(), Some(action.id.as_str()));

    let divert = Command::Divert {
        incident: inc.id.clone(),
        to: "12345".into(),
    };
    r.on_action(by_operator(divert, at), at).await.unwrap();
    assert!(ctx.store.open_incidents().await.unwrap().is_empty());
    let inc = incident(&ctx, &inc.id).await;
    assert_eq!(inc.status, IncidentStatus::Diverted);
    assert_eq!(inc.diverted_to.as_deref(), Some("12345"));
    assert!(inc.units.iter().all(|u| u.status == TaskStatus::Cancelled));
    for id in ["u-1", "u-2", "s-1"] {
        assert_eq!(unit_state(&ctx, id).await.status, UnitStatus::Available, "{id}");
    }
}

#[tokio::test]
async fn units_register_on_duty_report_positions_and_status() {
    let ctx = ctx("router-units").await;
    let mut r = router(&ctx);
    let at = t0();
    let on_duty = |unit_type| Command::Status {
        reason: None,
        status: ReportedStatus::Available,
        task: None,
        lat: Some(36.6760),
        lon: Some(117.0200),
        note: None,
        unit_type,
    };
    // Not in the roster: its own type, the jurisdiction of its position.
    r.on_action(by_unit("new-7", on_duty(Some(UnitType::Foot)), at), at)
        .await
        .unwrap();
    let u = unit_state(&ctx, "new-7").await;
    assert_eq!(
        (u.unit_type, u.jurisdiction.as_str(), u.status),
        (UnitType::Foot, "daminghu", UnitStatus::Available)
    );
    // In the roster: the roster's type, jurisdiction and name win.
    r.on_action(by_unit("quancheng-p1", on_duty(Some(UnitType::Special)), at), at)
        .await
        .unwrap();
    let p = unit_state(&ctx, "quancheng-p1").await;
    assert_eq!((p.unit_type, p.jurisdiction.as_str()), (UnitType::Post, "quancheng"));
    assert_eq!(p.name.as_deref(), Some("泉城广场警务站"));

    // Unknown unit without a position, and a position for an unknown unit.
    let nowhere = by_unit("ghost", status_report(ReportedStatus::Available, None), at);
    r.on_action(nowhere.clone(), at).await.unwrap();
    let stray = by_unit(
        "ghost",
        Command::Position {
            lat: 36.66,
            lon: 117.02,
        },
        at,
    );
    r.on_action(stray.clone(), at).await.unwrap();
    assert!(ctx.store.unit("ghost").await.unwrap().is_none());
    let records = read_until(
        &ctx,
        bus::topics::Topic::Escalations,
        std::time::Duration::from_secs(20),
        |rs| rs.len() >= 2,
    )
    .await;
    let rejected: Vec<String> = records
        .iter()
        .filter_map(|r| r.json::<bus::model::Escalation>().ok())
        .filter_map(|e| e.action)
        .collect();
    assert!(
        rejected.contains(&nowhere.id) && rejected.contains(&stray.id),
        "{rejected:?}"
    );

    r.on_action(
        by_unit(
            "new-7",
            Command::Position {
                lat: 36.6770,
                lon: 117.0210,
            },
            at,
        ),
        at,
    )
    .await
    .unwrap();
    let u = unit_state(&ctx, "new-7").await;
    assert_eq!((u.lat, u.lon), (Some(36.6770), Some(117.0210)));
    r.on_action(by_unit("new-7", status_report(ReportedStatus::Busy, None), at), at)
        .await
        .unwrap();
    assert_eq!(unit_state(&ctx, "new-7").await.status, UnitStatus::Busy);
    r.on_action(by_unit("new-7", status_report(ReportedStatus::OffDuty, None), at), at)
        .await
        .unwrap();
    assert_eq!(unit_state(&ctx, "new-7").await.status, UnitStatus::OffDuty);
}

#[tokio::test]
async fn a_replayed_command_changes_nothing() {
    let ctx = ctx("router-action-idem").await;
    unit(&ctx, "u-1", UnitType::PatrolCar, LAT, LON).await;
    let mut r = router(&ctx);
    r.on_event(event(&ctx, Source::Call110, "theft", "被偷", LAT, LON, t0()), t0())
        .await
        .unwrap();
    let task = only_open(&ctx).await.units[0].task.clone();
    let action = by_unit("u-1", ack(&task), secs(t0(), 5));
    r.on_action(action.clone(), secs(t0(), 5)).await.unwrap();
    let once = only_open(&ctx).await;
    r.on_action(action.clone(), secs(t0(), 6)).await.unwrap();
    let mut other = router(&ctx);
    other.on_action(action, secs(t0(), 7)).await.unwrap();
    assert_eq!(only_open(&ctx).await, once);
}
