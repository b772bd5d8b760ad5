//! Operators steer incidents, units are kept informed (issue #21), the
//! api's half: each new command is published to the actions topic with its
//! fields, who sent it and the jurisdiction that keys it, or refused with
//! the field, the role, the jurisdiction or the state named; `create`
//! becomes a `report` event; the candidates and the dispatch settings are
//! served as the router and the configuration have them.

mod common;

use std::collections::HashMap;

use bus::kafka::Consumer;
use bus::model::{
    Action, AssignMode, Caller, Command, Event, IncidentStatus, Location, Recommendation, ReportedStatus, Role, Source,
    TaskStatus, UnitStatus, UnitType, new_id,
};
use bus::topics::Topic;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

async fn get(api: &Api, token: &str, path: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .get(api.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(api: &Api, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(api.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Posts and expects 202; returns the action id.
async fn accepted(api: &Api, token: &str, path: &str, body: Value) -> String {
    let (s, reply) = post(api, token, path, body.clone()).await;
    assert_eq!(s, 202, "POST {path} {body}: {reply}");
    assert_eq!(reply["ok"], true);
    reply["action"].as_str().unwrap().to_owned()
}

/// Posts and expects the error: status, code and the start of the message
/// (the field it names, or "" for any).
async fn refused(api: &Api, token: &str, path: &str, body: Value, want: u16, starts: &str) {
    let (s, reply) = post(api, token, path, body.clone()).await;
    assert_eq!(s.as_u16(), want, "POST {path} {body}: {reply}");
    let message = reply["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(starts),
        "POST {path} {body}: want {starts:?} first, got {reply}"
    );
}

fn consumer(ctx: &bus::ServiceContext, topic: Topic) -> Consumer {
    Consumer::new(
        &ctx.brokers,
        &ctx.config.kafka,
        ctx.topics.clone(),
        &format!("test-{}", new_id()),
        &[topic],
    )
    .unwrap()
}

/// Reads `consumer` until every id in `ids` was seen; returns each record's
/// key and value by id.
async fn read_ids<T: serde::de::DeserializeOwned>(
    consumer: &Consumer,
    ids: &[&str],
    id_of: impl Fn(&T) -> String,
) -> HashMap<String, (String, T)> {
    let shutdown = CancellationToken::new();
    let mut seen = HashMap::new();
    while ids.iter().any(|id| !seen.contains_key(*id)) {
        let record = tokio::time::timeout(WAIT, consumer.next(&shutdown))
            .await
            .unwrap_or_else(|_| panic!("records arrive; still missing some of {ids:?}"))
            .unwrap()
            .unwrap();
        let value: T = record.json().unwrap();
        seen.insert(id_of(&value), (record.key.clone().unwrap(), value));
    }
    seen
}

async fn actions(consumer: &Consumer, ids: &[&str]) -> HashMap<String, (String, Action)> {
    read_ids(consumer, ids, |a: &Action| a.id.clone()).await
}

/// Waits until the api's view holds `n` task versions of `unit`.
async fn api_sees_tasks(ctx: &bus::ServiceContext, unit: &str, n: usize) {
    let channel = format!("unit:{unit}");
    eventually("the api to see the tasks", || async {
        ctx.store
            .history_since(&channel, None, 100)
            .await
            .unwrap()
            .entries
            .len()
            >= n
    })
    .await;
}

#[tokio::test]
async fn operator_commands_are_published_with_their_fields_or_refused_naming_why() {
    let ctx = context("api-steer-op", |_| {}).await;
    let api = Api::start(&ctx).await;
    let router = FakeRouter::new(&ctx);
    let mut a = incident(&unique("a"), "quancheng", 2, IncidentStatus::Dispatched);
    a.events = vec![new_id(), new_id()];
    let b = incident(&unique("b"), "quancheng", 1, IncidentStatus::New);
    let closed = incident(&unique("closed"), "quancheng", 4, IncidentStatus::Closed);
    let resolved = incident(&unique("resolved"), "quancheng", 4, IncidentStatus::Resolved);
    let mut merged = incident(&unique("merged"), "quancheng", 5, IncidentStatus::Closed);
    merged.merged_into = Some(a.id.clone());
    let theirs = incident(&unique("theirs"), "daminghu", 1, IncidentStatus::New);
    for i in [&a, &b, &closed, &resolved, &merged, &theirs] {
        router.incident(i).await;
    }
    // Busy on another task: `preempt` leaves that to the router.
    let busy = unique("busy");
    router.unit(&unit(&busy, "quancheng", UnitStatus::OnScene)).await;
    let actions_topic = consumer(&ctx, Topic::Actions);
    let op = api.token(Role::Operator, &["quancheng"], None);
    let on = |i: &str, command: &str| format!("/api/v1/incidents/{i}/{command}");
    let location = json!({"lat": 36.6650, "lon": 117.0230, "address": "泉城路10号"});

    let update = accepted(
        &api,
        &op,
        &on(&a.id, "update"),
        json!({"priority": 1, "reason": "a knife was seen", "kind": "robbery", "location": location}),
    )
    .await;
    let note = accepted(&api, &op, &on(&a.id, "note"), json!({"text": "caller called back"})).await;
    let hold = accepted(
        &api,
        &op,
        &on(&a.id, "hold"),
        json!({"reason": "waiting for the video desk"}),
    )
    .await;
    let merge = accepted(&api, &op, &on(&a.id, "merge"), json!({"from": b.id})).await;
    let split = accepted(
        &api,
        &op,
        &on(&a.id, "split"),
        json!({"events": [a.events[1]], "reason": "another address"}),
    )
    .await;
    let reopen = accepted(
        &api,
        &op,
        &on(&closed.id, "reopen"),
        json!({"reason": "the suspect came back"}),
    )
    .await;
    let reopen_resolved = accepted(&api, &op, &on(&resolved.id, "reopen"), json!({"reason": "not over"})).await;
    let assign = accepted(
        &api,
        &op,
        &on(&a.id, "assign"),
        json!({"unit": busy, "mode": "add", "preempt": true}),
    )
    .await;

    let ids = [
        update.as_str(),
        note.as_str(),
        hold.as_str(),
        merge.as_str(),
        split.as_str(),
        reopen.as_str(),
        reopen_resolved.as_str(),
        assign.as_str(),
    ];
    let seen = actions(&actions_topic, &ids).await;
    for id in ids {
        let (key, action) = &seen[id];
        assert_eq!(key, "quancheng", "keyed by the incident's jurisdiction: {action:?}");
        assert_eq!(action.jurisdiction, "quancheng");
        assert_eq!(action.by.sub, "tester");
        assert_eq!(action.by.role, Role::Operator);
        assert_eq!(action.by.unit, None);
    }
    assert_eq!(
        seen[&update].1.command,
        Command::Update {
            incident: a.id.clone(),
            priority: Some(1),
            kind: Some("robbery".into()),
            text: None,
            location: Some(Location {
                lat: 36.6650,
                lon: 117.0230,
                address: Some("泉城路10号".into()),
            }),
            reason: Some("a knife was seen".into()),
        }
    );
    assert_eq!(
        seen[&note].1.command,
        Command::Note {
            incident: Some(a.id.clone()),
            task: None,
            text: "caller called back".into()
        }
    );
    assert_eq!(
        seen[&hold].1.command,
        Command::Hold {
            incident: a.id.clone(),
            hold: true,
            reason: Some("waiting for the video desk".into())
        }
    );
    assert_eq!(
        seen[&merge].1.command,
        Command::Merge {
            incident: a.id.clone(),
            from: b.id.clone()
        }
    );
    assert_eq!(
        seen[&split].1.command,
        Command::Split {
            incident: a.id.clone(),
            events: vec![a.events[1].clone()],
            reason: Some("another address".into())
        }
    );
    assert_eq!(
        seen[&reopen].1.command,
        Command::Reopen {
            incident: closed.id.clone(),
            reason: "the suspect came back".into()
        }
    );
    assert_eq!(
        seen[&assign].1.command,
        Command::Assign {
            incident: a.id.clone(),
            unit: busy.clone(),
            mode: AssignMode::Add,
            preempt: true
        }
    );

    // Bad fields, named.
    refused(&api, &op, &on(&a.id, "update"), json!({"priority": 1}), 400, "reason").await;
    refused(
        &api,
        &op,
        &on(&a.id, "update"),
        json!({"priority": 9, "reason": "x"}),
        400,
        "priority",
    )
    .await;
    refused(&api, &op, &on(&a.id, "update"), json!({}), 400, "priority").await;
    refused(&api, &op, &on(&a.id, "update"), json!({"kind": "bakery"}), 400, "kind").await;
    refused(
        &api,
        &op,
        &on(&a.id, "update"),
        json!({"location": {"lat": 36.6, "lon": 200.0}}),
        400,
        "location.lon",
    )
    .await;
    refused(&api, &op, &on(&a.id, "note"), json!({"text": " "}), 400, "text").await;
    refused(&api, &op, &on(&closed.id, "reopen"), json!({}), 400, "reason").await;
    refused(&api, &op, &on(&a.id, "merge"), json!({"from": a.id}), 400, "from").await;
    refused(&api, &op, &on(&a.id, "split"), json!({"events": []}), 400, "events").await;
    refused(
        &api,
        &op,
        &on(&a.id, "split"),
        json!({"events": ["not-mine"]}),
        400,
        "events[0]",
    )
    .await;
    refused(
        &api,
        &op,
        &on(&a.id, "split"),
        json!({"events": a.events}),
        400,
        "events",
    )
    .await;
    refused(&api, &op, &on(&a.id, "hold"), json!({"hold": "yes"}), 400, "hold").await;
    // The state the command needs.
    for command in ["update", "note", "hold", "split"] {
        let body = match command {
            "update" => json!({"text": "x"}),
            "note" => json!({"text": "x"}),
            "hold" => json!({}),
            _ => json!({"events": [closed.events[0]]}),
        };
        refused(&api, &op, &on(&closed.id, command), body, 409, "").await;
    }
    refused(&api, &op, &on(&a.id, "reopen"), json!({"reason": "x"}), 409, "").await;
    refused(&api, &op, &on(&merged.id, "reopen"), json!({"reason": "x"}), 409, "").await;
    refused(&api, &op, &on(&a.id, "merge"), json!({"from": closed.id}), 409, "").await;
    refused(&api, &op, &on(&closed.id, "merge"), json!({"from": a.id}), 409, "").await;
    refused(&api, &op, &on("nope", "hold"), json!({}), 404, "").await;
    // Another jurisdiction: the incident, or the one merged from.
    refused(&api, &op, &on(&theirs.id, "update"), json!({"text": "x"}), 403, "").await;
    refused(&api, &op, &on(&theirs.id, "note"), json!({"text": "x"}), 403, "").await;
    refused(&api, &op, &on(&theirs.id, "hold"), json!({}), 403, "").await;
    refused(&api, &op, &on(&a.id, "merge"), json!({"from": theirs.id}), 403, "").await;
    refused(&api, &op, &on(&theirs.id, "merge"), json!({"from": a.id}), 403, "").await;
    // The wrong role.
    let analyst = api.token(Role::Analyst, &["*"], None);
    let a_unit = api.token(Role::Unit, &[], Some(&busy));
    for token in [&analyst, &a_unit] {
        for (command, body) in [
            ("update", json!({"text": "x"})),
            ("hold", json!({})),
            ("merge", json!({"from": b.id})),
            ("split", json!({"events": [a.events[1]]})),
            ("reopen", json!({"reason": "x"})),
        ] {
            let target = if command == "reopen" { &closed.id } else { &a.id };
            refused(&api, token, &on(target, command), body, 403, "").await;
        }
    }
    refused(&api, &a_unit, &on(&a.id, "note"), json!({"text": "x"}), 403, "").await;
}

#[tokio::test]
async fn units_refuse_and_note_their_own_open_tasks() {
    let ctx = context("api-steer-unit", |_| {}).await;
    let api = Api::start(&ctx).await;
    let router = FakeRouter::new(&ctx);
    let inc = incident(&unique("inc"), "quancheng", 2, IncidentStatus::Dispatched);
    router.incident(&inc).await;
    let u1 = unique("u1");
    let u2 = unique("u2");
    let current = task(&unique("current"), &inc.id, &u1, 2, TaskStatus::Acknowledged);
    let on_scene = task(&unique("scene"), &inc.id, &u1, 3, TaskStatus::OnScene);
    let done = task(&unique("done"), &inc.id, &u1, 4, TaskStatus::Cleared);
    let others = task(&unique("others"), &inc.id, &u2, 1, TaskStatus::Issued);
    // The unit is on its current task, from another station's area: its
    // task commands are keyed by the task's (incident's) jurisdiction.
    let mut me = unit(&u1, "jiefangqiao", UnitStatus::EnRoute);
    me.task = Some(current.id.clone());
    router.unit(&me).await;
    router.unit(&unit(&u2, "quancheng", UnitStatus::Assigned)).await;
    for t in [&current, &on_scene, &done] {
        router.task(t).await;
    }
    router.task(&others).await;
    api_sees_tasks(&ctx, &u1, 3).await;
    api_sees_tasks(&ctx, &u2, 1).await;
    let actions_topic = consumer(&ctx, Topic::Actions);
    let token = api.token(Role::Unit, &[], Some(&u1));
    let op = api.token(Role::Operator, &["quancheng"], None);
    let task_path = |t: &str, command: &str| format!("/api/v1/tasks/{t}/{command}");

    let refuse = accepted(
        &api,
        &token,
        &task_path(&current.id, "refuse"),
        json!({"reason": "tyre burst"}),
    )
    .await;
    let rest_note = accepted(
        &api,
        &token,
        &task_path(&current.id, "note"),
        json!({"text": "gate locked"}),
    )
    .await;
    let op_note = accepted(
        &api,
        &op,
        &task_path(&current.id, "note"),
        json!({"text": "key holder on the way"}),
    )
    .await;
    // Over WebSocket a unit's note names no task: its current one.
    let mut client = api.ws(&token).await;
    let (reply, _) = client
        .request(json!({"op": "note", "text": "no answer at the door"}))
        .await;
    assert_eq!(reply["type"], "ok", "{reply}");
    let ws_note = reply["action"].as_str().unwrap().to_owned();
    let (reply, _) = client
        .request(json!({"op": "note", "incident": inc.id, "text": "x"}))
        .await;
    assert_eq!(
        reply["code"], "forbidden",
        "a unit notes its task, not an incident: {reply}"
    );
    let out = accepted(
        &api,
        &token,
        &format!("/api/v1/units/{u1}/status"),
        json!({"status": "out_of_service", "reason": "engine failure"}),
    )
    .await;

    let ids = [
        refuse.as_str(),
        rest_note.as_str(),
        op_note.as_str(),
        ws_note.as_str(),
        out.as_str(),
    ];
    let seen = actions(&actions_topic, &ids).await;
    for id in [&refuse, &rest_note, &ws_note] {
        let (key, action) = &seen[id];
        assert_eq!(key, "quancheng", "keyed by the task's jurisdiction: {action:?}");
        assert_eq!(action.by.role, Role::Unit);
        assert_eq!(action.by.unit.as_deref(), Some(u1.as_str()));
    }
    assert_eq!(
        seen[&refuse].1.command,
        Command::Refuse {
            task: current.id.clone(),
            reason: "tyre burst".into()
        }
    );
    assert_eq!(
        seen[&ws_note].1.command,
        Command::Note {
            incident: None,
            task: Some(current.id.clone()),
            text: "no answer at the door".into()
        },
        "the api names the unit's current task"
    );
    let (key, action) = &seen[&op_note];
    assert_eq!((key.as_str(), action.by.role), ("quancheng", Role::Operator));
    let (key, action) = &seen[&out];
    assert_eq!(key, "quancheng", "out of service cancels the task: keyed like it");
    assert!(matches!(
        &action.command,
        Command::Status { status: ReportedStatus::OutOfService, reason: Some(r), .. } if r == "engine failure"
    ));

    refused(
        &api,
        &token,
        &task_path(&current.id, "refuse"),
        json!({}),
        400,
        "reason",
    )
    .await;
    refused(
        &api,
        &token,
        &task_path(&current.id, "refuse"),
        json!({"reason": " "}),
        400,
        "reason",
    )
    .await;
    refused(
        &api,
        &token,
        &task_path(&others.id, "refuse"),
        json!({"reason": "x"}),
        403,
        "",
    )
    .await;
    refused(
        &api,
        &token,
        &task_path(&done.id, "refuse"),
        json!({"reason": "x"}),
        409,
        "",
    )
    .await;
    refused(
        &api,
        &token,
        &task_path(&on_scene.id, "refuse"),
        json!({"reason": "x"}),
        409,
        "",
    )
    .await;
    refused(
        &api,
        &token,
        &task_path("nope", "refuse"),
        json!({"reason": "x"}),
        404,
        "",
    )
    .await;
    refused(
        &api,
        &op,
        &task_path(&current.id, "refuse"),
        json!({"reason": "x"}),
        403,
        "",
    )
    .await;
    refused(&api, &token, &task_path(&current.id, "note"), json!({}), 400, "text").await;
    refused(
        &api,
        &token,
        &task_path(&others.id, "note"),
        json!({"text": "x"}),
        403,
        "",
    )
    .await;
    refused(
        &api,
        &token,
        &task_path(&done.id, "note"),
        json!({"text": "x"}),
        409,
        "",
    )
    .await;
    refused(
        &api,
        &token,
        &format!("/api/v1/units/{u1}/status"),
        json!({"status": "out_of_service"}),
        400,
        "reason",
    )
    .await;
    let elsewhere = api.token(Role::Operator, &["daminghu"], None);
    refused(
        &api,
        &elsewhere,
        &task_path(&current.id, "note"),
        json!({"text": "x"}),
        403,
        "",
    )
    .await;
    // A unit with no open task has nothing to note without naming one.
    let idle = api.token(Role::Unit, &[], Some(&u2));
    let mut idle_client = api.ws(&idle).await;
    router
        .task(&task(&others.id, &inc.id, &u2, 2, TaskStatus::Cancelled))
        .await;
    api_sees_tasks(&ctx, &u2, 2).await;
    let (reply, _) = idle_client.request(json!({"op": "note", "text": "x"})).await;
    assert_eq!(reply["code"], "conflict", "{reply}");
}

#[tokio::test]
async fn create_puts_a_report_event_on_the_events_topic_with_the_reporter() {
    let ctx = context("api-steer-create", |_| {}).await;
    let api = Api::start(&ctx).await;
    let events_topic = consumer(&ctx, Topic::Events);
    let op = api.token(Role::Operator, &["quancheng"], None);
    // The centre of quancheng's area, as the configuration has it.
    let here = json!({"lat": 36.6640, "lon": 117.0220, "address": "泉城路1号"});
    let (s, reply) = post(
        &api,
        &op,
        "/api/v1/incidents",
        json!({"kind": "theft", "text": "walk-in: bicycle stolen", "location": here,
               "caller": {"phone": "13800000001", "name": "王"}}),
    )
    .await;
    assert_eq!(s, 202, "{reply}");
    let event_id = reply["event"].as_str().unwrap().to_owned();
    assert_eq!(reply["action"], event_id.as_str(), "the action-style id is the event's");
    let mut client = api.ws(&op).await;
    let (reply, _) = client
        .request(
            json!({"op": "create", "kind": "assault", "text": "radio: fight at the station square",
                        "location": {"lat": 36.6640, "lon": 117.0220}}),
        )
        .await;
    assert_eq!(reply["type"], "ok", "{reply}");
    let ws_event = reply["event"].as_str().unwrap().to_owned();
    // An admin may create without a location: the report is unlocated, at
    // the fallback jurisdiction, for a person to place.
    let admin = api.token(Role::Admin, &[], None);
    let (s, reply) = post(
        &api,
        &admin,
        "/api/v1/incidents",
        json!({"kind": "fraud", "text": "phoned in"}),
    )
    .await;
    assert_eq!(s, 202, "{reply}");
    let unlocated = reply["event"].as_str().unwrap().to_owned();

    let ids = [event_id.as_str(), ws_event.as_str(), unlocated.as_str()];
    let seen = read_ids(&events_topic, &ids, |e: &Event| e.id.clone()).await;
    let (key, event) = &seen[&event_id];
    assert_eq!(key, "quancheng");
    assert_eq!(event.jurisdiction, "quancheng");
    assert!(event.cell.is_some(), "placed in a grid cell");
    assert_eq!(event.input.source, Source::Report);
    assert_eq!(event.input.kind, "theft");
    assert_eq!(event.input.text.as_deref(), Some("walk-in: bicycle stolen"));
    assert_eq!(event.input.attrs["reporter"], "tester");
    assert_eq!(
        event.input.caller,
        Some(Caller {
            phone: Some("13800000001".into()),
            name: Some("王".into())
        })
    );
    assert!(event.input.occurred_at.is_some());
    assert!(!event.input.source_id.is_empty());
    let (_, other) = &seen[&ws_event];
    assert_ne!(
        other.input.source_id, event.input.source_id,
        "each report has its own source_id"
    );
    assert_eq!(other.input.kind, "assault");
    let (key, event) = &seen[&unlocated];
    assert_eq!(key, &ctx.config.city.fallback_jurisdiction);
    assert_eq!(event.input.flags, vec![bus::model::Flag::Unlocated]);

    // Daminghu's centre: not this operator's.
    refused(
        &api,
        &op,
        "/api/v1/incidents",
        json!({"kind": "theft", "text": "x", "location": {"lat": 36.6760, "lon": 117.0220}}),
        403,
        "",
    )
    .await;
    // Without a location the fallback jurisdiction is not theirs either.
    refused(
        &api,
        &op,
        "/api/v1/incidents",
        json!({"kind": "theft", "text": "x"}),
        403,
        "location",
    )
    .await;
    refused(
        &api,
        &op,
        "/api/v1/incidents",
        json!({"kind": "bakery", "text": "x"}),
        400,
        "kind",
    )
    .await;
    refused(&api, &op, "/api/v1/incidents", json!({"kind": "theft"}), 400, "text").await;
    refused(&api, &op, "/api/v1/incidents", json!({"text": "x"}), 400, "kind").await;
    refused(
        &api,
        &op,
        "/api/v1/incidents",
        json!({"kind": "theft", "text": "x", "location": {"lat": 99.0, "lon": 117.0}}),
        400,
        "location.lat",
    )
    .await;
    let analyst = api.token(Role::Analyst, &["*"], None);
    refused(
        &api,
        &analyst,
        "/api/v1/incidents",
        json!({"kind": "theft", "text": "x", "location": here}),
        403,
        "",
    )
    .await;
    let a_unit = api.token(Role::Unit, &[], Some("u-x"));
    refused(
        &api,
        &a_unit,
        "/api/v1/incidents",
        json!({"kind": "theft", "text": "x", "location": here}),
        403,
        "",
    )
    .await;
}

#[tokio::test]
async fn candidates_and_dispatch_settings_are_served_as_router_and_configuration_have_them() {
    let ctx = context("api-steer-candidates", |c| {
        c.dispatch.mode.insert("2".into(), bus::config::DispatchMode::Recommend);
        c.dispatch.stale_after_s = 321;
    })
    .await;
    let api = Api::start(&ctx).await;
    let router = FakeRouter::new(&ctx);
    let mut held = incident(&unique("held"), "quancheng", 3, IncidentStatus::New);
    held.priority = 2;
    held.hold = true;
    held.candidates = vec![
        Recommendation {
            unit: "patrol-1".into(),
            unit_type: UnitType::PatrolCar,
            eta_s: 120,
            in_time: true,
            distance_m: 1500.0,
            task: None,
            task_priority: None,
        },
        Recommendation {
            unit: "patrol-2".into(),
            unit_type: UnitType::Foot,
            eta_s: 400,
            in_time: false,
            distance_m: 900.0,
            task: Some("t-low".into()),
            task_priority: Some(4),
        },
    ];
    let mut plain = incident(&unique("plain"), "quancheng", 1, IncidentStatus::Dispatched);
    plain.priority = 1;
    let theirs = incident(&unique("theirs"), "daminghu", 1, IncidentStatus::New);
    for i in [&held, &plain, &theirs] {
        router.incident(i).await;
    }
    let op = api.token(Role::Operator, &["quancheng"], None);

    let (s, body) = get(&api, &op, &format!("/api/v1/incidents/{}/candidates", held.id)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["incident"], held.id.as_str());
    assert_eq!(body["hold"], true);
    assert_eq!(body["mode"], "recommend");
    assert_eq!(body["candidates"], serde_json::to_value(&held.candidates).unwrap());
    assert_eq!(body["candidates"][1]["task"], "t-low");
    let (s, body) = get(&api, &op, &format!("/api/v1/incidents/{}/candidates", plain.id)).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body,
        json!({"incident": plain.id, "hold": false, "mode": "auto", "candidates": []})
    );
    let (s, _) = get(&api, &op, &format!("/api/v1/incidents/{}/candidates", theirs.id)).await;
    assert_eq!(s, 403);
    let (s, _) = get(&api, &op, "/api/v1/incidents/nope/candidates").await;
    assert_eq!(s, 404);
    let a_unit = api.token(Role::Unit, &[], Some("u-x"));
    let (s, _) = get(&api, &a_unit, &format!("/api/v1/incidents/{}/candidates", held.id)).await;
    assert_eq!(s, 403);

    let (s, info) = get(&api, &a_unit, "/api/v1/info").await;
    assert_eq!(s, 200);
    assert_eq!(info["dispatch"]["stale_after_s"], 321);
    assert_eq!(
        info["dispatch"]["mode"],
        json!({"1": "auto", "2": "recommend", "3": "auto", "4": "auto"})
    );
    assert_eq!(info["dispatch"]["preempt_from"], ctx.config.dispatch.preempt_from);

    // Every new route is in the OpenAPI document, with its reply's schema.
    let doc: Value = reqwest::get(api.url("/api/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, method) in [
        ("/api/v1/incidents", "post"),
        ("/api/v1/incidents/{id}/candidates", "get"),
        ("/api/v1/tasks/{id}/refuse", "post"),
        ("/api/v1/tasks/{id}/note", "post"),
        ("/api/v1/incidents/{id}/{op}", "post"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    let ops = doc["paths"]["/api/v1/incidents/{id}/{op}"]["post"]["parameters"].to_string();
    for op in ["update", "note", "reopen", "merge", "split", "hold"] {
        assert!(ops.contains(op), "{op} not documented: {ops}");
    }
    for schema in ["AcceptedBody", "CandidatesBody"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema} missing");
    }
}
