//! WebSocket fan-out against a real listener, real clients, and the broker
//! and store of the test stack: snapshot then live, resume, gap, slow
//! clients, several instances, shutdown.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bus::model::{IncidentStatus, Role, TaskStatus, new_id};
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const QUIET: Duration = Duration::from_millis(300);

fn incident_versions(pushes: &[Value]) -> Vec<(String, u64)> {
    pushes
        .iter()
        .filter(|p| p["type"] == "push" && p["kind"] == "incident")
        .map(|p| {
            (
                p["data"]["id"].as_str().unwrap().to_owned(),
                p["data"]["version"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn snapshot_then_live_has_no_gap_and_no_duplicate() {
    let ctx = context("api-snapshot", |_| {}).await;
    let api = Api::start(&ctx).await;
    let router = FakeRouter::new(&ctx);
    // Before anyone subscribes: three open incidents, one closed.
    let mut before = Vec::new();
    for n in 0..3 {
        let i = incident(&unique(&format!("pre{n}")), "quancheng", 1, IncidentStatus::New);
        router.incident(&i).await;
        before.push(i);
    }
    let closed = incident(&unique("closed"), "quancheng", 2, IncidentStatus::Closed);
    router.incident(&closed).await;
    let foreign = incident(&unique("foreign"), "daminghu", 1, IncidentStatus::New);
    router.incident(&foreign).await;

    // While the operator subscribes, the router keeps publishing.
    let live_router = FakeRouter::new(&ctx);
    let first = before[0].clone();
    let publisher = tokio::spawn(async move {
        let mut published = Vec::new();
        for n in 0..20u64 {
            let i = incident(&unique(&format!("live{n}")), "quancheng", 1, IncidentStatus::New);
            live_router.incident(&i).await;
            published.push(i.id.clone());
            if n == 10 {
                let mut updated = first.clone();
                updated.version = 2;
                updated.status = IncidentStatus::Dispatched;
                live_router.incident(&updated).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        published
    });

    let mut client = api.ws(&api.token(Role::Operator, &["quancheng"], None)).await;
    let (reply, _) = client.request(json!({"op": "subscribe", "channel": "board"})).await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["channel"], "board");
    let published = publisher.await.unwrap();

    let mut wanted: HashSet<String> = published.iter().cloned().collect();
    wanted.extend(before.iter().map(|i| i.id.clone()));
    let pushes = client
        .pushes_until(|got| {
            let versions = incident_versions(got);
            let ids: HashSet<&String> = versions.iter().map(|(id, _)| id).collect();
            wanted.iter().all(|w| ids.contains(w)) && versions.contains(&(before[0].id.clone(), 2))
        })
        .await;
    // Anything still in flight arrives now.
    let mut all = pushes;
    while let Some(m) = client.try_recv(QUIET).await {
        all.push(m);
    }
    let versions = incident_versions(&all);
    let unique_versions: HashSet<&(String, u64)> = versions.iter().collect();
    assert_eq!(unique_versions.len(), versions.len(), "duplicates in {versions:?}");
    let ids: HashSet<&str> = versions.iter().map(|(id, _)| id.as_str()).collect();
    assert!(!ids.contains(foreign.id.as_str()), "another jurisdiction leaked");
    // A closed incident is not open state: it may only arrive live (the
    // api may not have seen it yet when the snapshot was taken).
    for p in all.iter().filter(|p| p["data"]["id"] == closed.id.as_str()) {
        assert!(p.get("snapshot").is_none(), "closed incident in the snapshot: {p}");
        assert_eq!(p["data"]["status"], "closed");
    }
    // Versions of one incident never go backwards.
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (id, v) in &versions {
        let prev = last.insert(id.as_str(), *v);
        assert!(prev.is_none_or(|p| p < *v), "{id} went from {prev:?} to {v}");
    }
}

#[tokio::test]
async fn a_unit_resuming_with_its_cursor_misses_no_task() {
    let ctx = context("api-resume", |_| {}).await;
    let api = Api::start(&ctx).await;
    let router = FakeRouter::new(&ctx);
    let unit_id = unique("u");
    let token = api.token(Role::Unit, &[], Some(&unit_id));

    let mut terminal = api.ws(&token).await;
    let (reply, snapshot) = terminal
        .subscribe(json!({"op": "subscribe", "channel": format!("unit:{unit_id}")}), QUIET)
        .await;
    assert_eq!(reply["type"], "subscribed");
    assert!(snapshot.is_empty(), "{snapshot:?}");
    let t1 = task(&unique("t1"), "i1", &unit_id, 1, TaskStatus::Issued);
    router.task(&t1).await;
    let got = terminal.pushes_until(|g| !g.is_empty()).await;
    assert_eq!(got[0]["data"]["id"], t1.id.as_str());
    let cursor = got[0]["cursor"].as_str().unwrap().to_owned();

    // The link drops; tasks keep coming, for this unit and another.
    drop(terminal);
    let t2 = task(&unique("t2"), "i2", &unit_id, 1, TaskStatus::Issued);
    let other = task(&unique("other"), "i3", "someone-else", 1, TaskStatus::Issued);
    let t3 = task(&unique("t3"), "i4", &unit_id, 1, TaskStatus::Issued);
    router.task(&t2).await;
    router.task(&other).await;
    router.task(&t3).await;
    let channel = format!("unit:{unit_id}");
    eventually("the api to record t3", || async {
        let read = ctx.store.history_since(&channel, None, 100).await.unwrap();
        read.entries.len() >= 3
    })
    .await;

    let mut terminal = api.ws(&token).await;
    let (reply, replay) = terminal
        .subscribe(json!({"op": "subscribe", "channel": channel, "since": cursor}), QUIET)
        .await;
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert!(reply.get("gap").is_none(), "{reply}");
    let ids: Vec<&str> = replay.iter().map(|p| p["data"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![t2.id.as_str(), t3.id.as_str()]);
    assert!(replay.iter().all(|p| p.get("snapshot").is_none()));

    // And live again after the replay.
    let t4 = task(&unique("t4"), "i5", &unit_id, 1, TaskStatus::Issued);
    router.task(&t4).await;
    let got = terminal.pushes_until(|g| !g.is_empty()).await;
    assert_eq!(got[0]["data"]["id"], t4.id.as_str());
}

#[tokio::test]
async fn a_cursor_older_than_history_gets_gap_and_a_snapshot() {
    let ctx = context("api-gap", |c| c.api.history_max_len = 3).await;
    let api = Api::start(&ctx).await;
    let router = FakeRouter::new(&ctx);
    let unit_id = unique("u");
    let token = api.token(Role::Unit, &[], Some(&unit_id));
    let channel = format!("unit:{unit_id}");

    let mut terminal = api.ws(&token).await;
    terminal
        .subscribe(json!({"op": "subscribe", "channel": channel}), QUIET)
        .await;
    let first = task(&unique("t0"), "i0", &unit_id, 1, TaskStatus::Issued);
    router.task(&first).await;
    let got = terminal.pushes_until(|g| !g.is_empty()).await;
    let cursor = got[0]["cursor"].as_str().unwrap().to_owned();
    drop(terminal);

    let mut ids = vec![first.id.clone()];
    for n in 1..6 {
        let t = task(&unique(&format!("t{n}")), "i", &unit_id, 1, TaskStatus::Issued);
        router.task(&t).await;
        ids.push(t.id.clone());
    }
    let last = ids.last().unwrap().clone();
    eventually("the api to record the last task", || async {
        let read = ctx.store.history_since(&channel, None, 100).await.unwrap();
        read.entries
            .iter()
            .any(|e| String::from_utf8_lossy(&e.payload).contains(&last))
    })
    .await;

    let mut terminal = api.ws(&token).await;
    let (reply, snapshot) = terminal
        .subscribe(json!({"op": "subscribe", "channel": channel, "since": cursor}), QUIET)
        .await;
    assert_eq!(reply["gap"], true, "{reply}");
    assert!(snapshot.iter().all(|p| p["snapshot"] == true));
    let got: HashSet<String> = snapshot
        .iter()
        .map(|p| p["data"]["id"].as_str().unwrap().to_owned())
        .collect();
    let want: HashSet<String> = ids.into_iter().collect();
    assert_eq!(got, want, "the snapshot holds every open task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_closed_with_1013_and_others_keep_receiving() {
    let ctx = context("api-slow", |c| {
        c.api.ws_queue = 64;
        c.api.history_max_len = 20;
    })
    .await;
    let api = Api::start(&ctx).await;
    let router = FakeRouter::new(&ctx);
    let token = api.token(Role::Operator, &["quancheng"], None);

    let mut stalled = api.ws(&token).await;
    stalled.send(json!({"op": "subscribe", "channel": "board"})).await;
    let mut normal = api.ws(&token).await;
    normal
        .subscribe(json!({"op": "subscribe", "channel": "board"}), QUIET)
        .await;

    // Once the api's consumer is assigned (a marker arrives), records come
    // paced, not in one catch-up burst.
    let marker = incident(&unique("marker"), "quancheng", 1, IncidentStatus::New);
    router.incident(&marker).await;
    normal
        .pushes_until(|g| g.iter().any(|p| p["data"]["id"] == marker.id.as_str()))
        .await;

    // Big records fill the stalled client's socket buffers, then its queue.
    let text = "x".repeat(100_000);
    let count = 200;
    let mut records = Vec::new();
    for n in 0..count {
        let mut i = incident(&unique(&format!("big{n}")), "quancheng", 1, IncidentStatus::New);
        i.text = Some(text.clone());
        records.push(i);
    }
    // The reading client only counts frames: parsing 100 KB of JSON in a
    // debug build would make it the slow one.
    let reader = tokio::spawn(async move {
        let mut got = 0;
        while got < count {
            match tokio::time::timeout(WAIT, normal.socket.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.as_str().starts_with("{\"type\":\"push\"") => got += 1,
                Ok(Some(Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)))) => {}
                other => panic!("the normal client stopped after {got} pushes: {other:?}"),
            }
        }
        got
    });
    // Paced, so a client that reads keeps up with a queue of 16.
    for i in &records {
        router.incident(i).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reader.await.unwrap(), count, "the normal client got every push");

    let mut pushes = 0;
    let close = loop {
        match tokio::time::timeout(WAIT, stalled.socket.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => pushes += 1,
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => {}
            other => panic!("expected a close frame, got {other:?} after {pushes} pushes"),
        }
    };
    let frame = close.expect("a close frame with a code");
    assert_eq!(frame.code, CloseCode::Again);
    assert!(pushes < count + 1, "the stalled client got everything ({pushes})");
}

#[tokio::test]
async fn two_api_instances_both_deliver() {
    let ctx = context("api-two", |_| {}).await;
    let mut ctx_b = ctx.clone();
    ctx_b.instance = new_id();
    let a = Api::start(&ctx).await;
    let b = Api::start(&ctx_b).await;
    let router = FakeRouter::new(&ctx);
    let token = a.token(Role::Operator, &["quancheng"], None);
    let mut on_a = a.ws(&token).await;
    let mut on_b = b.ws(&token).await;
    on_a.subscribe(json!({"op": "subscribe", "channel": "board"}), QUIET)
        .await;
    on_b.subscribe(json!({"op": "subscribe", "channel": "board"}), QUIET)
        .await;

    let i = incident(&unique("both"), "quancheng", 1, IncidentStatus::New);
    router.incident(&i).await;
    let find = |g: &[Value]| g.iter().find(|p| p["data"]["id"] == i.id.as_str()).cloned();
    let got_a = on_a.pushes_until(|g| find(g).is_some()).await;
    let got_b = on_b.pushes_until(|g| find(g).is_some()).await;
    let (pa, pb) = (find(&got_a).unwrap(), find(&got_b).unwrap());
    assert_eq!(pa["cursor"], pb["cursor"], "both instances agree on one cursor");

    // A client of instance a resumes on instance b with a's cursor.
    drop(on_a);
    let next = incident(&unique("next"), "quancheng", 1, IncidentStatus::New);
    router.incident(&next).await;
    on_b.pushes_until(|g| g.iter().any(|p| p["data"]["id"] == next.id.as_str()))
        .await;
    let mut moved = b.ws(&token).await;
    let (reply, replay) = moved
        .subscribe(
            json!({"op": "subscribe", "channel": "board", "since": pa["cursor"]}),
            QUIET,
        )
        .await;
    assert!(reply.get("gap").is_none(), "{reply}");
    let ids: Vec<&str> = replay.iter().filter_map(|p| p["data"]["id"].as_str()).collect();
    assert_eq!(ids, vec![next.id.as_str()], "exactly what it missed");
}

#[tokio::test]
async fn ping_gets_pong_and_shutdown_closes_with_1001() {
    let ctx = context("api-shutdown", |c| c.api.close_grace_ms = 50).await;
    let api = Api::start(&ctx).await;
    let mut client = api.ws(&api.token(Role::Analyst, &["*"], None)).await;
    let (pong, _) = client.request(json!({"op": "ping"})).await;
    assert_eq!(pong["type"], "pong");
    let (error, _) = client.request(json!({"op": "dance"})).await;
    assert_eq!(error["code"], "bad_request");
    let (error, _) = client
        .request(json!({"op": "subscribe", "channel": "topic:actions"}))
        .await;
    assert_eq!(error["code"], "bad_request");
    assert!(error["message"].as_str().unwrap().contains("channel"));

    api.token.cancel();
    let frame = loop {
        match tokio::time::timeout(WAIT, client.socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(frame.unwrap().code, CloseCode::Away);
}

#[tokio::test]
async fn an_analyst_topic_subscription_is_filtered() {
    let ctx = context("api-filter", |_| {}).await;
    let api = Api::start(&ctx).await;
    let router = FakeRouter::new(&ctx);
    let mut client = api.ws(&api.token(Role::Analyst, &["quancheng"], None)).await;
    client
        .subscribe(
            json!({"op": "subscribe", "channel": "topic:incidents", "filter": {"kinds": ["robbery"], "priority_max": 1}}),
            QUIET,
        )
        .await;
    let mut theft = incident(&unique("theft"), "quancheng", 1, IncidentStatus::New);
    theft.priority = 1;
    let mut low = incident(&unique("low"), "quancheng", 1, IncidentStatus::New);
    low.kind = "robbery".into();
    low.priority = 3;
    let mut elsewhere = incident(&unique("else"), "daminghu", 1, IncidentStatus::New);
    elsewhere.kind = "robbery".into();
    elsewhere.priority = 1;
    let mut wanted = incident(&unique("want"), "quancheng", 1, IncidentStatus::New);
    wanted.kind = "robbery".into();
    wanted.priority = 1;
    wanted.callers.push(bus::model::Caller {
        phone: Some("13900001111".into()),
        name: None,
    });
    for i in [&theft, &low, &elsewhere, &wanted] {
        router.incident(i).await;
    }
    let got = client.pushes_until(|g| !g.is_empty()).await;
    assert_eq!(got[0]["data"]["id"], wanted.id.as_str(), "{got:?}");
    assert_eq!(got[0]["channel"], "topic:incidents");
    assert_eq!(
        got[0]["data"]["callers"][0]["phone"], "139****1111",
        "masked for analysts"
    );
    assert!(client.try_recv(QUIET).await.is_none());
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let ctx = context("api-idle", |c| {
        c.api.ws_ping_interval_s = 1;
        c.api.ws_idle_timeout_s = 1;
    })
    .await;
    let api = Api::start(&ctx).await;
    let mut client = api.ws(&api.token(Role::Analyst, &["*"], None)).await;
    // Not reading means not answering pings either.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let frame = loop {
        match tokio::time::timeout(WAIT, client.socket.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame,
            Ok(Some(Ok(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let frame = frame.unwrap();
    assert_eq!(frame.code, CloseCode::Away);
    assert_eq!(frame.reason.as_str(), "idle");
}

#[tokio::test]
async fn escalations_units_and_events_reach_their_channels() {
    use bus::model::{Escalation, EscalationKind, Event, InputEvent, Source, UnitStatus};
    use bus::topics::Topic;
    let ctx = context("api-kinds", |_| {}).await;
    let api = Api::start(&ctx).await;
    let router = FakeRouter::new(&ctx);
    let mut board = api.ws(&api.token(Role::Operator, &["quancheng"], None)).await;
    board
        .subscribe(json!({"op": "subscribe", "channel": "board"}), QUIET)
        .await;
    let mut events = api.ws(&api.token(Role::Analyst, &["quancheng"], None)).await;
    events
        .subscribe(json!({"op": "subscribe", "channel": "topic:events"}), QUIET)
        .await;

    let escalation = Escalation {
        id: new_id(),
        incident: "i1".into(),
        jurisdiction: "quancheng".into(),
        at: chrono::Utc::now(),
        kind: EscalationKind::SlaBreach,
        stage: Some(bus::model::Stage::Respond),
        desks: vec!["supervisor".into()],
        unit_type: None,
        message: "respond breached".into(),
        by: "router".into(),
        action: None,
    };
    router
        .producer
        .send_json(Topic::Escalations, "i1", &escalation.id, &escalation)
        .await
        .unwrap();
    let u = unit(&unique("u"), "quancheng", UnitStatus::Available);
    router.unit(&u).await;
    let event = Event {
        id: new_id(),
        received_at: chrono::Utc::now(),
        jurisdiction: "quancheng".into(),
        cell: None,
        input: InputEvent {
            source: Source::Call110,
            source_id: unique("110"),
            kind: "theft".into(),
            occurred_at: None,
            location: None,
            text: None,
            caller: Some(bus::model::Caller {
                phone: Some("13812345678".into()),
                name: Some("王小明".into()),
            }),
            sensor: None,
            attrs: Default::default(),
            flags: Vec::new(),
        },
    };
    router
        .producer
        .send_json(Topic::Events, "quancheng", &event.id, &event)
        .await
        .unwrap();

    let got = board
        .pushes_until(|g| g.iter().any(|p| p["kind"] == "escalation") && g.iter().any(|p| p["kind"] == "unit"))
        .await;
    assert!(got.iter().all(|p| p["kind"] != "event"), "events are not on the board");
    let esc = got.iter().find(|p| p["kind"] == "escalation").unwrap();
    assert_eq!(esc["data"]["id"], escalation.id.as_str());
    let got = events.pushes_until(|g| !g.is_empty()).await;
    assert_eq!(got[0]["kind"], "event");
    assert_eq!(got[0]["data"]["id"], event.id.as_str());
    assert_eq!(got[0]["data"]["source"], "call110");
    // Analysts see that someone called, not who: no number to ring.
    assert_eq!(got[0]["data"]["caller"]["phone"], "138****5678");
    assert_eq!(got[0]["data"]["caller"]["name"], "王**");
}

#[tokio::test]
async fn a_position_report_moves_its_unit_on_the_board_and_topic_units() {
    use bus::kafka::Producer;
    use bus::model::{PositionReport, UnitStatus};
    use bus::topics::Topic;
    let ctx = context("api-positions", |_| {}).await;
    let api = Api::start(&ctx).await;
    let router = FakeRouter::new(&ctx);
    let ingest = Producer::new(&ctx.brokers, &ctx.config.kafka, ctx.topics.clone(), "/qzx/ingest").unwrap();
    let mut board = api.ws(&api.token(Role::Operator, &["quancheng"], None)).await;
    board
        .subscribe(json!({"op": "subscribe", "channel": "board"}), QUIET)
        .await;
    let mut units = api.ws(&api.token(Role::Analyst, &["quancheng"], None)).await;
    units
        .subscribe(json!({"op": "subscribe", "channel": "topic:units"}), QUIET)
        .await;

    // The router registers a busy unit; the api learns it from the units topic.
    let mut u = unit(&unique("u"), "quancheng", UnitStatus::EnRoute);
    u.task = Some("t1".into());
    router.unit(&u).await;
    let is_unit = |p: &Value| p["kind"] == "unit" && p["data"]["id"] == u.id.as_str();
    for client in [&mut board, &mut units] {
        client.pushes_until(|g| g.iter().any(is_unit)).await;
    }

    let report = |unit: &str, seconds: i64, lat: f64| PositionReport {
        unit: unit.to_owned(),
        lat,
        lon: 117.05,
        at: u.at + chrono::Duration::seconds(seconds),
        speed_kmh: Some(35.0),
    };
    let send = |r: PositionReport| {
        let ingest = &ingest;
        async move {
            ingest
                .send_json(Topic::Positions, &r.unit.clone(), &new_id(), &r)
                .await
                .unwrap();
        }
    };
    send(report(&u.id, 5, 36.70)).await;
    // Older than the unit's `at` now: ignored. A unit the api does not know:
    // dropped. Then a newer report, which must arrive after them.
    send(report(&u.id, 1, 36.50)).await;
    send(report(&unique("stranger"), 6, 36.60)).await;
    send(report(&u.id, 10, 36.80)).await;

    for (name, client) in [("board", &mut board), ("topic:units", &mut units)] {
        let got = client
            .pushes_until(|g| g.iter().any(|p| is_unit(p) && p["data"]["lat"] == 36.80))
            .await;
        let moves: Vec<&Value> = got.iter().filter(|p| p["kind"] == "unit").collect();
        assert_eq!(
            moves.len(),
            2,
            "{name}: one push per report that moved the unit: {moves:?}"
        );
        let first = moves[0];
        assert_eq!(first["type"], "push");
        assert_eq!(first["channel"], name);
        assert!(first["cursor"].is_string(), "{first}");
        let data = &first["data"];
        assert_eq!(
            (data["id"].as_str(), data["lat"].as_f64()),
            (Some(u.id.as_str()), Some(36.70))
        );
        assert_eq!(
            (data["lon"].as_f64(), data["speed_kmh"].as_f64()),
            (Some(117.05), Some(35.0))
        );
        let at = chrono::DateTime::parse_from_rfc3339(data["at"].as_str().unwrap()).unwrap();
        assert_eq!(at, u.at + chrono::Duration::seconds(5));
        // What the unit does is the router's: unchanged by a report.
        assert_eq!(
            (data["status"].as_str(), data["task"].as_str()),
            (Some("en_route"), Some("t1"))
        );
        assert_eq!(
            (data["type"].as_str(), data["jurisdiction"].as_str()),
            (Some("patrol_car"), Some("quancheng"))
        );
        assert_eq!(moves[1]["data"]["status"], "en_route");
    }
}
