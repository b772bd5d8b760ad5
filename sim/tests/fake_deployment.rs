//! The simulator against a fake deployment: a small axum server in the test
//! with `/v1/events`, `/v1/alerts/cap`, `/ws` and `/api/v1/stats`. It pushes
//! one task to the one unit and drops the unit's socket once, right after
//! the ack; the unit must reconnect with its cursor and work the task to the
//! end over the real WebSocket protocol. No services needed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bus::Config;
use serde_json::{Value, json};
use sim::{SimOptions, UnitTokens};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const UNIT: &str = "quancheng-01";
const TASK_CURSOR: &str = "1700000000000-1";

#[derive(Clone)]
struct Fake {
    events: Arc<Mutex<Vec<Value>>>,
    caps: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    acks: Arc<AtomicUsize>,
    /// (connection number, client frame)
    frames: mpsc::UnboundedSender<(usize, Value)>,
    /// Frames from the operator desk's connection.
    board: mpsc::UnboundedSender<Value>,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

async fn events(State(fake): State<Fake>, headers: HeaderMap, body: String) -> Response {
    if bearer(&headers) != Some("source-token") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Ok(event) = serde_json::from_str::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let source_id = event["source_id"].clone();
    fake.events.lock().unwrap().push(event);
    (
        StatusCode::ACCEPTED,
        axum::Json(
            json!({"accepted": [{"index": 0, "id": "e", "source_id": source_id, "duplicate": false}], "rejected": []}),
        ),
    )
        .into_response()
}

async fn cap(State(fake): State<Fake>, headers: HeaderMap, body: String) -> Response {
    let xml_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("xml"));
    if bearer(&headers) != Some("source-token") || !xml_type || !body.contains("<alert") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    fake.caps.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::ACCEPTED,
        axum::Json(
            json!({"accepted": [{"index": 0, "id": "c", "source_id": "x", "duplicate": false}], "rejected": []}),
        ),
    )
        .into_response()
}

async fn stats(headers: HeaderMap) -> Response {
    if bearer(&headers) != Some("analyst-token") {
        return StatusCode::FORBIDDEN.into_response();
    }
    axum::Json(json!({"stages": {
        "respond": {"met": 1, "breached": 0, "pending": 0, "share_met": 1.0, "p50_s": 0.03, "p90_s": 0.03},
        "arrive": {"met": 1, "breached": 0, "pending": 0, "share_met": 1.0, "p50_s": 0.2, "p90_s": 0.2},
        "reinforce": {"met": 0, "breached": 0, "pending": 0, "share_met": null, "p50_s": null, "p90_s": null}
    }}))
    .into_response()
}

async fn ws(State(fake): State<Fake>, Query(q): Query<HashMap<String, String>>, upgrade: WebSocketUpgrade) -> Response {
    match q.get("token").map(String::as_str) {
        Some("unit-token") => upgrade.on_upgrade(move |socket| serve(fake, socket)),
        Some("operator-token") => upgrade.on_upgrade(move |socket| serve_board(fake, socket)),
        _ => StatusCode::UNAUTHORIZED.into_response(),
    }
}

/// The board: one incident that is resolved, then whatever the desk says.
async fn serve_board(fake: Fake, mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        let Message::Text(text) = message else { continue };
        let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        let _ = fake.board.send(frame.clone());
        let id = frame["id"].clone();
        let replies = if frame["op"] == "subscribe" && frame["channel"] == "board" {
            vec![
                json!({"type": "subscribed", "id": id, "channel": "board", "cursor": "0-0"}),
                json!({"type": "push", "channel": "board", "cursor": "1-1", "kind": "incident", "snapshot": true,
                       "data": {"id": "i0", "status": "resolved", "version": 7}}),
            ]
        } else {
            vec![json!({"type": "ok", "id": id})]
        };
        for reply in replies {
            if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
                return;
            }
        }
    }
}

fn task(status: &str) -> Value {
    json!({
        "id": "t1", "incident": "i1", "unit": UNIT, "version": 1, "kind": "respond", "priority": 1,
        "location": {"lat": 36.6680, "lon": 117.0300, "address": "历下区泉城路1号"},
        "summary": "抢劫", "issued_at": "2026-11-22T08:00:00Z", "deadlines": null,
        "status": status, "jurisdiction": "quancheng", "updated_at": "2026-11-22T08:00:00Z"
    })
}

async fn serve(fake: Fake, mut socket: WebSocket) {
    let n = fake.connections.fetch_add(1, Ordering::SeqCst) + 1;
    while let Some(Ok(message)) = socket.recv().await {
        let Message::Text(text) = message else { continue };
        let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        let _ = fake.frames.send((n, frame.clone()));
        let id = frame["id"].clone();
        let reply = match frame["op"].as_str() {
            Some("subscribe") => {
                let subscribed = json!({"type": "subscribed", "id": id, "channel": frame["channel"], "cursor": "0-0"});
                if socket.send(Message::Text(subscribed.to_string().into())).await.is_err() {
                    return;
                }
                if n == 1 {
                    json!({"type": "push", "channel": format!("unit:{UNIT}"), "cursor": TASK_CURSOR, "kind": "task", "data": task("issued")})
                } else {
                    continue;
                }
            }
            Some("ping") => json!({"type": "pong", "id": id}),
            // Kafka hiccup: the first ack cannot be published.
            Some("ack") if fake.acks.fetch_add(1, Ordering::SeqCst) == 0 => {
                json!({"type": "error", "id": id, "code": "unavailable", "message": "kafka busy"})
            }
            _ => json!({"type": "ok", "id": id}),
        };
        if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
            return;
        }
        // A flaky mobile link: drop the first connection right after the
        // ack went through.
        if n == 1 && frame["op"] == "ack" && fake.acks.load(Ordering::SeqCst) >= 2 {
            return;
        }
    }
}

type Frames = mpsc::UnboundedReceiver<(usize, Value)>;

struct Started {
    fake: Fake,
    frames: Frames,
    board: mpsc::UnboundedReceiver<Value>,
    addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start_fake() -> Started {
    let (tx, frames) = mpsc::unbounded_channel();
    let (board_tx, board) = mpsc::unbounded_channel();
    let fake = Fake {
        events: Arc::default(),
        caps: Arc::default(),
        connections: Arc::default(),
        acks: Arc::default(),
        frames: tx,
        board: board_tx,
    };
    let app = Router::new()
        .route("/v1/events", post(events))
        .route("/v1/alerts/cap", post(cap))
        .route("/api/v1/stats", get(stats))
        .route("/ws", get(ws))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    Started {
        fake,
        frames,
        board,
        addr,
        server,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_a_duration_ends_by_itself_and_reports_what_was_posted() {
    let Started { fake, addr, server, .. } = start_fake().await;
    let options = SimOptions {
        base_url: format!("http://{addr}"),
        ingest_url: Some(format!("http://{addr}/")),
        source_token: "source-token".into(),
        unit_tokens: UnitTokens::Fixed(HashMap::new()),
        // Not an analyst: the stats are refused and the report says so.
        stats_token: Some("wrong".into()),
        operator_token: None,
        speed: 1200.0,
        seed: 9,
        duration: Some(Duration::from_secs(1200)),
        start_hour: Some(20.0),
    };
    let mut config = Config::defaults();
    config.sim.calls_per_hour = 240.0;
    config.sim.sensor_alarms_per_hour = 60.0;
    config.sim.cap_alerts_per_hour = 2.0;
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        sim::run(Arc::new(config), options, CancellationToken::new()),
    )
    .await
    .expect("ends after the simulated duration")
    .unwrap();
    server.abort();
    assert!(
        report.simulated_s >= 1200.0 && report.simulated_s < 1500.0,
        "{}",
        report.simulated_s
    );
    // 20 evening minutes at 240 calls an hour: about 80 calls.
    assert!(report.calls_posted > 40 && report.calls_posted < 130, "{report}");
    assert_eq!(
        report.calls_posted + report.sensor_alarms_posted,
        fake.events.lock().unwrap().len() as u64
    );
    assert_eq!(report.failed, 0);
    assert_eq!(report.units, 0);
    assert!(
        report.stats_error.as_deref().is_some_and(|e| e.contains("403")),
        "{report:?}"
    );
    // The nearest-unit baseline ran on the same seed and simulated time.
    let baseline = report.baseline.as_ref().expect("a run with a duration has a baseline");
    assert!(baseline.incidents > 20, "{baseline:?}");
    assert!(report.to_string().contains("baseline respond: met"), "{report}");
    println!("{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_signs_for_drives_to_and_clears_a_task_over_websocket_and_calls_are_posted() {
    let Started {
        fake,
        frames: mut rx,
        mut board,
        addr,
        server,
    } = start_fake().await;

    let mut config = Config::defaults();
    config.units.retain(|u| u.id == UNIT);
    // Plenty of CAP alerts, so one arrives within the test.
    config.sim.cap_alerts_per_hour = 120.0;
    let options = SimOptions {
        base_url: format!("http://{addr}"),
        ingest_url: None,
        source_token: "source-token".into(),
        unit_tokens: UnitTokens::Fixed(HashMap::from([(UNIT.to_owned(), "unit-token".to_owned())])),
        stats_token: Some("analyst-token".into()),
        operator_token: Some("operator-token".into()),
        // Fast, yet slow enough that the drive outlasts the reconnect.
        speed: 300.0,
        seed: 5,
        duration: None,
        start_hour: Some(20.0),
    };
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(sim::run(Arc::new(config), options, shutdown.clone()));

    // Collect the unit's frames until it is available again after clearing.
    let mut frames: Vec<(usize, Value)> = Vec::new();
    let collected = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some((n, frame)) = rx.recv().await {
            let done = frame["op"] == "status"
                && frame["status"] == "available"
                && frames.iter().any(|(_, f)| f["status"] == "cleared");
            frames.push((n, frame));
            if done {
                break;
            }
        }
    })
    .await;
    shutdown.cancel();
    let report = tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    server.abort();
    assert!(collected.is_ok(), "the unit did not finish the task: {frames:?}");

    let ops: Vec<String> = frames
        .iter()
        .filter(|(_, f)| f["op"] != "ping")
        .map(|(_, f)| match f["op"].as_str().unwrap_or("") {
            "status" => format!("status {}", f["status"].as_str().unwrap_or("")),
            "subscribe" => format!("subscribe {}", f["since"].as_str().unwrap_or("-")),
            op => op.to_owned(),
        })
        .collect();
    // Comes on duty with its position and type.
    assert_eq!(ops[0], "subscribe -");
    assert_eq!(ops[1], "status available");
    assert_eq!(frames[1].1["type"], "patrol_car");
    assert!(frames[1].1["lat"].as_f64().is_some());
    // Resubscribes after the drop with the cursor of the task push.
    assert!(ops.contains(&format!("subscribe {TASK_CURSOR}")), "{ops:?}");
    assert_eq!(fake.connections.load(Ordering::SeqCst), 2);

    // Then, in this order (commands resent after the reconnect may repeat).
    let mut expected = [
        "ack",
        "status en_route",
        "position",
        "status on_scene",
        "status cleared",
        "status available",
    ]
    .into_iter()
    .peekable();
    for op in &ops[2..] {
        if expected.peek() == Some(&op.as_str()) {
            expected.next();
        }
    }
    assert_eq!(expected.next(), None, "{ops:?}");
    for (_, f) in &frames {
        if f["op"] == "ack"
            || (f["op"] == "status"
                && ["en_route", "on_scene", "cleared"].contains(&f["status"].as_str().unwrap_or("")))
        {
            assert_eq!(f["task"].as_str(), Some("t1"), "{f}");
        }
        assert!(f["id"].is_string(), "every command carries an id: {f}");
    }
    // The last position before on scene is on the way, and on scene is at the task.
    let on_scene = frames.iter().find(|(_, f)| f["status"] == "on_scene").unwrap();
    let d = bus::geo::haversine_m(
        on_scene.1["lat"].as_f64().unwrap(),
        on_scene.1["lon"].as_f64().unwrap(),
        36.6680,
        117.0300,
    );
    assert!(d < 1.0, "{d}");

    // The ack refused as unavailable was sent again, with the same id.
    let acks: Vec<&Value> = frames.iter().map(|(_, f)| f).filter(|f| f["op"] == "ack").collect();
    assert!(acks.len() >= 2, "{ops:?}");
    assert_eq!(acks[0]["id"], acks[1]["id"]);
    assert_eq!(report.command_errors, 0, "unavailable is retried, not an error");
    assert_eq!(report.tasks_received, 1);
    assert_eq!(report.acked, 1);
    assert_eq!(report.on_scene, 1);
    assert_eq!(report.cleared, 1);
    assert_eq!(report.units_connected, 1);
    assert_eq!(report.reconnects, 1);
    let posted = fake.events.lock().unwrap().len() as u64;
    assert!(posted > 0);
    assert_eq!(report.calls_posted + report.sensor_alarms_posted, posted);
    assert_eq!(report.accepted, posted + fake.caps.load(Ordering::SeqCst) as u64);
    assert_eq!(report.failed, 0);
    assert!(fake.caps.load(Ordering::SeqCst) > 0);
    assert_eq!(report.stages.as_ref().unwrap()["respond"].met, 1);
    assert!(report.to_string().contains("1-3-5 respond"));

    // The operator desk subscribed to the board and closed the resolved incident.
    let mut desk = Vec::new();
    while let Ok(frame) = board.try_recv() {
        desk.push(frame);
    }
    assert_eq!(desk[0]["op"], "subscribe", "{desk:?}");
    let close = desk.iter().find(|f| f["op"] == "close").expect("the desk closes");
    assert_eq!(close["incident"], "i0");
    assert!(close["disposition"].as_str().is_some_and(|d| !d.is_empty()));
    assert!(["satisfied", "unsatisfied"].contains(&close["feedback"].as_str().unwrap_or("")));
    assert_eq!(report.closed, 1);
    assert_eq!(report.units_connected, 1, "the desk is not a unit");
}
