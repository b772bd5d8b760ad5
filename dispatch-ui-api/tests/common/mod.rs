//! Shared test support: an api served on a real listener, real WebSocket
//! clients, tokens, and a stand-in for the router that puts incidents,
//! tasks and units into the Store and produces them to Kafka.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bus::auth::TokenKeys;
use bus::config::Config;
use bus::kafka::Producer;
use bus::model::{
    Incident, IncidentStatus, Location, Role, Sla, Task, TaskKind, TaskStatus, Unit, UnitStatus, UnitType, new_id,
};
use bus::testing::BrokerChoice;
use bus::topics::Topic;
use bus::{ServiceContext, Supervisor};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(20);

pub async fn context(name: &str, tweak: impl FnOnce(&mut Config)) -> ServiceContext {
    bus::testing::context(name, BrokerChoice::RealIfAvailable, tweak).await
}

/// One running api instance.
pub struct Api {
    pub addr: SocketAddr,
    pub token: CancellationToken,
    pub keys: TokenKeys,
}

impl Api {
    pub async fn start(ctx: &ServiceContext) -> Api {
        let mut sup = Supervisor::default();
        let token = sup.token();
        let router = dispatch_ui_api::start(ctx, &mut sup).await.expect("api starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = token.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
                .unwrap();
        });
        tokio::spawn(async move {
            let _ = sup.wait(Duration::from_secs(5)).await;
        });
        Api {
            addr,
            token,
            keys: TokenKeys::new("test-secret"),
        }
    }

    pub fn token(&self, role: Role, jurisdictions: &[&str], unit: Option<&str>) -> String {
        let js: Vec<String> = jurisdictions.iter().map(|s| s.to_string()).collect();
        self.keys
            .mint("tester", role, &js, unit, Duration::from_secs(600))
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn ws(&self, token: &str) -> Client {
        let url = format!("ws://{}/ws?token={token}", self.addr);
        let (socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("websocket connects in time")
            .expect("websocket connects");
        Client { socket }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

pub struct Client {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn send(&mut self, value: Value) {
        tokio::time::timeout(WAIT, self.socket.send(Message::Text(value.to_string().into())))
            .await
            .expect("the server reads in time")
            .unwrap();
    }

    /// The next JSON message (pings are skipped); panics after WAIT.
    pub async fn recv(&mut self) -> Value {
        self.try_recv(WAIT).await.expect("a message within the wait")
    }

    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next()).await.ok()??;
            match next {
                Ok(Message::Text(t)) => return Some(serde_json::from_str(t.as_str()).unwrap()),
                Ok(Message::Close(frame)) => panic!("closed: {frame:?}"),
                Ok(_) => continue,
                Err(e) => panic!("websocket error: {e}"),
            }
        }
    }

    /// Sends a message with `id` and returns the reply echoing it (pushes in
    /// between are returned too, in order, as the second value).
    pub async fn request(&mut self, mut value: Value) -> (Value, Vec<Value>) {
        let id = new_id();
        value["id"] = json!(id);
        self.send(value).await;
        let mut others = Vec::new();
        loop {
            let m = self.recv().await;
            if m["id"] == json!(id) {
                return (m, others);
            }
            others.push(m);
        }
    }

    /// Subscribes; returns the `subscribed` reply and the snapshot or
    /// replay pushes that follow until `quiet` passes without a message.
    pub async fn subscribe(&mut self, msg: Value, quiet: Duration) -> (Value, Vec<Value>) {
        let (reply, before) = self.request(msg).await;
        assert!(before.is_empty(), "messages before subscribed: {before:?}");
        let mut pushes = Vec::new();
        while let Some(m) = self.try_recv(quiet).await {
            pushes.push(m);
        }
        (reply, pushes)
    }

    /// Pushes until `done` says enough; panics after WAIT.
    pub async fn pushes_until(&mut self, mut done: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while !done(&got) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.try_recv(left).await {
                Some(m) => got.push(m),
                None => panic!(
                    "timed out; got {} messages: {:?}",
                    got.len(),
                    got.iter().take(5).collect::<Vec<_>>()
                ),
            }
        }
        got
    }
}

/// Stands in for the router: the Store first, then Kafka.
pub struct FakeRouter {
    pub ctx: ServiceContext,
    pub producer: Producer,
}

impl FakeRouter {
    pub fn new(ctx: &ServiceContext) -> FakeRouter {
        let producer = Producer::new(&ctx.brokers, &ctx.config.kafka, ctx.topics.clone(), "/qzx/router").unwrap();
        FakeRouter {
            ctx: ctx.clone(),
            producer,
        }
    }

    pub async fn incident(&self, incident: &Incident) {
        self.ctx.store.put_incident(incident).await.unwrap();
        self.producer
            .send_json(Topic::Incidents, &incident.id, &new_id(), incident)
            .await
            .unwrap();
    }

    pub async fn task(&self, task: &Task) {
        self.producer
            .send_json(Topic::Tasks, &task.unit, &new_id(), task)
            .await
            .unwrap();
    }

    pub async fn unit(&self, unit: &Unit) {
        self.ctx.store.put_unit(unit).await.unwrap();
        self.producer
            .send_json(Topic::Units, &unit.id, &new_id(), unit)
            .await
            .unwrap();
    }
}

pub fn incident(id: &str, jurisdiction: &str, version: u64, status: IncidentStatus) -> Incident {
    let now = chrono::Utc::now();
    Incident {
        ladder: Default::default(),
        requested: Vec::new(),
        id: id.into(),
        version,
        status,
        priority: 2,
        score: 60,
        kind: "theft".into(),
        location: Some(Location {
            lat: 36.6683,
            lon: 117.0204,
            address: None,
        }),
        jurisdiction: jurisdiction.into(),
        cell: bus::geo::cell_of(36.6683, 117.0204, 8),
        desks: vec!["command".into()],
        events: vec![new_id()],
        repeat_count: 0,
        diverted_to: None,
        created_at: now,
        updated_at: now,
        deadlines: None,
        sla: Sla::default(),
        units: vec![],
        timeline: vec![bus::model::TimelineEntry {
            at: now,
            what: "created".into(),
            by: "router".into(),
        }],
        text: Some("bike stolen".into()),
        disposition: None,
        feedback: None,
        follow_up_of: None,
        flags: Vec::new(),
        callers: Vec::new(),
        hold: false,
        candidates: Vec::new(),
        merged_into: None,
        merged: Vec::new(),
        split_from: None,
    }
}

pub fn task(id: &str, incident: &str, unit: &str, version: u64, status: TaskStatus) -> Task {
    let now = chrono::Utc::now();
    Task {
        id: id.into(),
        incident: incident.into(),
        unit: unit.into(),
        version,
        kind: TaskKind::Respond,
        priority: 2,
        location: None,
        summary: "go".into(),
        issued_at: now,
        deadlines: None,
        status,
        jurisdiction: "quancheng".into(),
        updated_at: now,
        incident_kind: "theft".into(),
        caller: None,
        other_units: Vec::new(),
        changes: Vec::new(),
        reason: None,
    }
}

pub fn unit(id: &str, jurisdiction: &str, status: UnitStatus) -> Unit {
    Unit {
        id: id.into(),
        unit_type: UnitType::PatrolCar,
        jurisdiction: jurisdiction.into(),
        status,
        lat: Some(36.6683),
        lon: Some(117.0204),
        at: chrono::Utc::now(),
        task: None,
        version: 0,
        speed_kmh: None,
        name: None,
        reason: None,
    }
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", new_id())
}

/// Polls `check` until it is true; panics after WAIT.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
