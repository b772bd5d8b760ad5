//! The REST api with its errors: reads filtered by role and jurisdiction,
//! commands published to the actions topic keyed by jurisdiction (202 only
//! after Kafka acknowledged, 503 when it cannot), stats, coverage, info,
//! jurisdictions and the generated OpenAPI document.

mod common;

use std::time::Duration;

use bus::kafka::Consumer;
use bus::model::{
    Action, AssignMode, Command, IncidentStatus, ReportedStatus, Role, SlaState, TaskStatus, UnitStatus, new_id,
};
use bus::testing::BrokerChoice;
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

async fn post(api: &Api, token: &str, path: &str, body: &str) -> (StatusCode, Value, Option<String>) {
    let r = reqwest::Client::new()
        .post(api.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (status, r.json().await.unwrap_or(Value::Null), retry)
}

#[tokio::test]
async fn reads_show_only_what_the_caller_may_see() {
    let ctx = context("api-reads", |_| {}).await;
    let api = Api::start(&ctx).await;
    let router = FakeRouter::new(&ctx);
    let mut mine = incident(&unique("mine"), "quancheng", 1, IncidentStatus::New);
    mine.callers.push(bus::model::Caller {
        phone: Some("13812345678".into()),
        name: Some("王小明".into()),
    });
    let theirs = incident(&unique("theirs"), "daminghu", 1, IncidentStatus::New);
    let closed = incident(&unique("closed"), "quancheng", 3, IncidentStatus::Closed);
    for i in [&mine, &theirs, &closed] {
        router.incident(i).await;
    }
    let u1 = unique("u1");
    router.unit(&unit(&u1, "quancheng", UnitStatus::Available)).await;
    router
        .unit(&unit(&unique("u2"), "daminghu", UnitStatus::Available))
        .await;
    let op = api.token(Role::Operator, &["quancheng"], None);

    let (s, body) = get(&api, &op, "/api/v1/incidents").await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = body["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![mine.id.as_str()], "open incidents of my jurisdiction");
    assert_eq!(
        body["incidents"][0]["callers"][0]["phone"], "13812345678",
        "operators call back"
    );
    // An analyst reads the same incident without a number to ring.
    let analyst = api.token(Role::Analyst, &["quancheng"], None);
    let (_, body) = get(&api, &analyst, "/api/v1/incidents").await;
    assert_eq!(body["incidents"][0]["callers"][0]["phone"], "138****5678");
    let (_, body) = get(&api, &analyst, &format!("/api/v1/incidents/{}", mine.id)).await;
    assert_eq!(body["callers"][0]["name"], "王**");

    // Closed incidents come from the api's view of the incidents topic.
    let closed_id = closed.id.clone();
    eventually("the closed incident in the list", || async {
        let (_, body) = get(&api, &op, "/api/v1/incidents?status=closed").await;
        body["incidents"]
            .as_array()
            .is_some_and(|a| a.iter().any(|i| i["id"] == closed_id.as_str()))
    })
    .await;
    let (_, body) = get(&api, &op, "/api/v1/incidents?status=all&limit=1").await;
    assert_eq!(body["incidents"].as_array().unwrap().len(), 1);

    for (path, want, field) in [
        ("/api/v1/incidents?status=bogus", 400, "status"),
        ("/api/v1/incidents?limit=0", 400, "limit"),
        ("/api/v1/incidents?limit=x", 400, "limit"),
        ("/api/v1/incidents?jurisdiction=atlantis", 400, "jurisdiction"),
        ("/api/v1/incidents?jurisdiction=daminghu", 403, ""),
    ] {
        let (s, body) = get(&api, &op, path).await;
        assert_eq!(s.as_u16(), want, "{path}: {body}");
        assert!(body["message"].as_str().unwrap().starts_with(field), "{path}: {body}");
    }

    let (s, body) = get(&api, &op, &format!("/api/v1/incidents/{}", mine.id)).await;
    assert_eq!(s, 200);
    assert_eq!(body["timeline"][0]["what"], "created");
    let (s, body) = get(&api, &op, &format!("/api/v1/incidents/{}", theirs.id)).await;
    assert_eq!(s, 403, "{body}");
    let (s, body) = get(&api, &op, "/api/v1/incidents/nope").await;
    assert_eq!((s.as_u16(), body["error"].as_str()), (404, Some("not_found")));

    let (_, body) = get(&api, &op, "/api/v1/units").await;
    assert!(
        body["units"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["jurisdiction"] == "quancheng")
    );
    let unit_token = api.token(Role::Unit, &[], Some(&u1));
    let (s, body) = get(&api, &unit_token, "/api/v1/units").await;
    assert_eq!(s, 200);
    let units = body["units"].as_array().unwrap();
    assert_eq!(units.len(), 1, "a unit sees itself only: {body}");
    assert_eq!(units[0]["id"], u1.as_str());
    let (s, _) = get(&api, &unit_token, "/api/v1/incidents").await;
    assert_eq!(s, 403);
    let source = api.token(Role::Source, &["*"], None);
    for path in [
        "/api/v1/incidents",
        "/api/v1/units",
        "/api/v1/stats",
        "/api/v1/coverage",
    ] {
        assert_eq!(get(&api, &source, path).await.0, 403, "{path}");
    }
    let (s, _) = get(&api, "", "/api/v1/incidents").await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn commands_are_published_keyed_by_jurisdiction_with_their_errors() {
    let ctx = context("api-commands", |_| {}).await;
    let api = Api::start(&ctx).await;
    let router = FakeRouter::new(&ctx);
    let open = incident(&unique("open"), "quancheng", 1, IncidentStatus::Dispatched);
    let closed = incident(&unique("closed"), "quancheng", 2, IncidentStatus::Closed);
    router.incident(&open).await;
    router.incident(&closed).await;
    let u1 = unique("u1");
    router.unit(&unit(&u1, "jiefangqiao", UnitStatus::Available)).await;
    let done = task(&unique("done"), &open.id, &u1, 3, TaskStatus::Cleared);
    router.task(&done).await;
    let working = task(&unique("working"), &open.id, &u1, 2, TaskStatus::OnScene);
    router.task(&working).await;
    let channel = format!("unit:{u1}");
    eventually("the api to see both tasks", || async {
        ctx.store.history_since(&channel, None, 10).await.unwrap().entries.len() >= 2
    })
    .await;

    let group = format!("test-{}", new_id());
    let consumer = Consumer::new(
        &ctx.brokers,
        &ctx.config.kafka,
        ctx.topics.clone(),
        &group,
        &[Topic::Actions],
    )
    .unwrap();
    // The unit is borrowed from a neighbouring station: the operator
    // covers both (a station operator sends only its own units).
    let op = api.token(Role::Operator, &["quancheng", "jiefangqiao"], None);

    let (s, body, _) = post(
        &api,
        &op,
        &format!("/api/v1/incidents/{}/assign", open.id),
        &json!({"unit": u1}).to_string(),
    )
    .await;
    assert_eq!(s, 202, "{body}");
    let action_id = body["action"].as_str().unwrap().to_owned();
    let unit_token = api.token(Role::Unit, &[], Some(&u1));
    let (s, body, _) = post(
        &api,
        &unit_token,
        &format!("/api/v1/units/{u1}/status"),
        r#"{"status":"busy","note":"lunch"}"#,
    )
    .await;
    assert_eq!(s, 202, "{body}");
    let (s, body, _) = post(
        &api,
        &unit_token,
        &format!("/api/v1/units/{u1}/status"),
        &json!({"status": "cleared", "task": working.id}).to_string(),
    )
    .await;
    assert_eq!(s, 202, "{body}");

    let shutdown = CancellationToken::new();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let record = tokio::time::timeout(WAIT, consumer.next(&shutdown))
            .await
            .expect("actions arrive")
            .unwrap()
            .unwrap();
        let action: Action = record.json().unwrap();
        seen.push((record.key.clone().unwrap(), action));
    }
    let (key, assign) = seen.iter().find(|(_, a)| a.id == action_id).expect("the assign action");
    assert_eq!(key, "quancheng", "keyed by the incident's jurisdiction");
    assert_eq!(assign.by.role, Role::Operator);
    assert_eq!(
        assign.command,
        Command::Assign {
            incident: open.id.clone(),
            unit: u1.clone(),
            mode: AssignMode::Replace,
            preempt: false,
        }
    );
    let is_cleared = |a: &Action| {
        matches!(
            &a.command,
            Command::Status {
                status: ReportedStatus::Cleared,
                ..
            }
        )
    };
    let (key, status) = seen.iter().find(|(_, a)| a.id != action_id && !is_cleared(a)).unwrap();
    assert_eq!(key, "jiefangqiao", "keyed by the unit's jurisdiction");
    assert_eq!(status.by.unit.as_deref(), Some(u1.as_str()));
    let (key, _) = seen.iter().find(|(_, a)| is_cleared(a)).unwrap();
    assert_eq!(
        key, "quancheng",
        "progress on a task: keyed by its incident's jurisdiction"
    );

    let cases: Vec<(String, &str, &str, u16, &str)> = vec![
        (
            format!("/api/v1/incidents/{}/close", closed.id),
            r#"{"disposition":"done"}"#,
            "",
            409,
            "conflict",
        ),
        (
            format!("/api/v1/incidents/{}/divert", closed.id),
            r#"{"to":"12345"}"#,
            "",
            409,
            "conflict",
        ),
        (
            "/api/v1/incidents/nope/close".into(),
            r#"{"disposition":"done"}"#,
            "",
            404,
            "not_found",
        ),
        (format!("/api/v1/incidents/{}/fly", open.id), "{}", "", 404, "not_found"),
        (
            format!("/api/v1/incidents/{}/escalate", open.id),
            r#"{"desk":"bakery"}"#,
            "desk",
            400,
            "bad_request",
        ),
        (
            format!("/api/v1/incidents/{}/escalate", open.id),
            "{}",
            "desk",
            400,
            "bad_request",
        ),
        (
            format!("/api/v1/incidents/{}/assign", open.id),
            r#"{"unit":7}"#,
            "unit",
            400,
            "bad_request",
        ),
        (
            format!("/api/v1/incidents/{}/assign", open.id),
            r#"{"unit":"ghost"}"#,
            "",
            404,
            "not_found",
        ),
        (
            format!("/api/v1/incidents/{}/close", open.id),
            "{nope",
            "",
            400,
            "bad_request",
        ),
        (
            format!("/api/v1/incidents/{}/close", open.id),
            "[]",
            "",
            400,
            "bad_request",
        ),
    ];
    for (path, body, field, want, code) in cases {
        let (s, reply, _) = post(&api, &op, &path, body).await;
        assert_eq!(
            (s.as_u16(), reply["error"].as_str()),
            (want, Some(code)),
            "{path} {body}: {reply}"
        );
        assert!(reply["message"].as_str().unwrap().starts_with(field), "{path}: {reply}");
    }
    // A unit: its own finished task is a conflict, another unit is forbidden.
    let (s, _, _) = post(&api, &unit_token, &format!("/api/v1/tasks/{}/ack", done.id), "").await;
    assert_eq!(s, 409);
    let (s, _, _) = post(
        &api,
        &unit_token,
        "/api/v1/units/someone-else/status",
        r#"{"status":"busy"}"#,
    )
    .await;
    assert_eq!(s, 403);
    let (s, reply, _) = post(
        &api,
        &unit_token,
        &format!("/api/v1/units/{u1}/status"),
        r#"{"status":"asleep"}"#,
    )
    .await;
    assert_eq!(s, 400, "{reply}");
    assert!(reply["message"].as_str().unwrap().contains("status"), "{reply}");
    let analyst = api.token(Role::Analyst, &["*"], None);
    let (s, _, _) = post(
        &api,
        &analyst,
        &format!("/api/v1/incidents/{}/close", open.id),
        r#"{"disposition":"x"}"#,
    )
    .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn commands_answer_503_when_kafka_cannot_take_them() {
    let ctx = bus::testing::context("api-down", BrokerChoice::Embedded, |c| {
        c.kafka.delivery_timeout_ms = 1000
    })
    .await;
    let api = Api::start(&ctx).await;
    let open = incident(&unique("open"), "quancheng", 1, IncidentStatus::Dispatched);
    ctx.store.put_incident(&open).await.unwrap();
    let op = api.token(Role::Operator, &["quancheng"], None);
    let mut client = api.ws(&op).await;
    ctx.brokers.embedded().unwrap().broker_down(1).unwrap();

    let (s, body, retry) = post(
        &api,
        &op,
        &format!("/api/v1/incidents/{}/close", open.id),
        r#"{"disposition":"x"}"#,
    )
    .await;
    assert_eq!(s, 503, "{body}");
    assert_eq!(body["error"], "unavailable");
    assert!(retry.is_some(), "503 carries Retry-After");
    let (reply, _) = client
        .request(json!({"op": "close", "incident": open.id, "disposition": "x"}))
        .await;
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "unavailable");

    ctx.brokers.embedded().unwrap().broker_up(1).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (s, _, _) = post(
            &api,
            &op,
            &format!("/api/v1/incidents/{}/close", open.id),
            r#"{"disposition":"x"}"#,
        )
        .await;
        if s == 202 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "kafka never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn stats_coverage_info_jurisdictions_and_openapi() {
    let ctx = context("api-stats", |_| {}).await;
    let api = Api::start(&ctx).await;
    let router = FakeRouter::new(&ctx);
    let mut met = incident(&unique("met"), "quancheng", 1, IncidentStatus::OnScene);
    met.priority = 1;
    met.sla.respond = SlaState::Met;
    met.sla.arrive = SlaState::Met;
    let mut breached = incident(&unique("late"), "quancheng", 1, IncidentStatus::Dispatched);
    breached.sla.respond = SlaState::Breached;
    breached.created_at -= chrono::Duration::seconds(30);
    let old = {
        let mut i = incident(&unique("old"), "quancheng", 1, IncidentStatus::New);
        i.created_at -= chrono::Duration::hours(3);
        i
    };
    for i in [&met, &breached, &old] {
        router.incident(i).await;
    }
    // The router's repeat windows: two calls in the same cell.
    let cell = met.cell.clone().unwrap();
    let now_ms = chrono::Utc::now().timestamp_millis();
    for member in [&met.id, &breached.id] {
        ctx.store
            .window_add(&format!("hotspot:{cell}"), member, now_ms, 3_600_000)
            .await
            .unwrap();
    }
    // A task acknowledged 20 s after the incident was created.
    let mut t = task(&unique("t"), &breached.id, "u-x", 2, TaskStatus::Acknowledged);
    t.updated_at = breached.created_at + chrono::Duration::seconds(20);
    router.task(&t).await;
    router
        .unit(&unit(&unique("u"), "quancheng", UnitStatus::Available))
        .await;

    let analyst = api.token(Role::Analyst, &["quancheng"], None);
    eventually("the api to see the acknowledged task", || async {
        let (_, stats) = get(&api, &analyst, "/api/v1/stats?window=1h").await;
        stats["stages"]["respond"]["samples"] == 1
    })
    .await;
    let (s, stats) = get(&api, &analyst, "/api/v1/stats?window=1h").await;
    assert_eq!(s, 200);
    assert_eq!(
        stats["incidents"], 2,
        "the 3 h old incident is outside the window: {stats}"
    );
    assert_eq!(stats["by_priority"]["1"], 1);
    assert_eq!(stats["by_status"]["on_scene"], 1);
    assert_eq!(stats["stages"]["respond"]["met"], 1);
    assert_eq!(stats["stages"]["respond"]["breached"], 1);
    assert_eq!(stats["stages"]["respond"]["share_met"], 0.5);
    let p50 = stats["stages"]["respond"]["p50_s"].as_f64().unwrap();
    assert!((p50 - 20.0).abs() < 0.01, "{p50}");
    assert_eq!(stats["stages"]["arrive"]["pending"], 1);
    assert_eq!(stats["hotspots"][0]["cell"], cell.as_str());
    assert_eq!(stats["hotspots"][0]["count"], 2);
    let (s, body) = get(&api, &analyst, "/api/v1/stats?window=forever").await;
    assert_eq!(s, 400);
    assert!(body["message"].as_str().unwrap().starts_with("window"));

    let (s, coverage) = get(&api, &analyst, "/api/v1/coverage").await;
    assert_eq!(s, 200);
    let cells = coverage["cells"].as_array().unwrap();
    assert!(!cells.is_empty());
    assert!(cells.iter().all(|c| c["jurisdiction"] == "quancheng"));
    assert!(
        cells.iter().any(|c| c["within_300s"] == true),
        "the unit covers some cell"
    );
    let share = coverage["share_300s"].as_f64().unwrap();
    assert!(share > 0.0 && share <= 1.0);

    let (s, info) = get(&api, &analyst, "/api/v1/info").await;
    assert_eq!(s, 200);
    assert_eq!(info["topics"]["actions"], ctx.topics.name(Topic::Actions));
    assert_eq!(info["store"], ctx.store.kind());
    assert_eq!(info["kafka"]["embedded"], ctx.brokers.is_embedded());

    let (s, js) = get(&api, &analyst, "/api/v1/jurisdictions").await;
    assert_eq!(s, 200);
    let quancheng = js["jurisdictions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == "quancheng")
        .unwrap();
    assert!(quancheng["centre"]["lat"].is_f64());
    assert!(!quancheng["area"].as_array().unwrap().is_empty());

    // The OpenAPI document needs no token and lists every route.
    let r = reqwest::get(api.url("/api/v1/openapi.json")).await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    for path in [
        "/api/v1/incidents",
        "/api/v1/incidents/{id}",
        "/api/v1/incidents/{id}/{op}",
        "/api/v1/tasks/{id}/ack",
        "/api/v1/units",
        "/api/v1/units/{id}/status",
        "/api/v1/stats",
        "/api/v1/coverage",
        "/api/v1/info",
        "/api/v1/jurisdictions",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
}
