//! The api's work per record, without Kafka, the Store or sockets: parse a
//! consumed incident and read its push metadata, serialise the frame once,
//! and deliver it through the hub to 10,000 operator boards, each matched
//! on jurisdiction and filter (and the push taken off each queue, as each
//! connection's task does).

use std::hint::black_box;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use bus::auth::Claims;
use bus::model::{Incident, IncidentStatus, IncidentUnit, Location, Role, Sla, TaskStatus, TimelineEntry, UnitRole};
use criterion::{Criterion, criterion_group, criterion_main};
use dispatch_ui_api::channel::{ChannelName, Cursor, Filter, PushKind, PushRecord, push_frame, visible};
use dispatch_ui_api::hub::{Hub, Push, Subscriber};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const JURISDICTIONS: [&str; 6] = [
    "quancheng",
    "daminghu",
    "baotuquan",
    "jiefangqiao",
    "qianfoshan",
    "dikou",
];
const BOARDS: usize = 10_000;

/// A dispatched incident as the router writes it: two units, a timeline.
fn incident_json() -> Vec<u8> {
    let now = chrono::Utc::now();
    let entry = |what: &str| TimelineEntry {
        at: now,
        what: what.into(),
        by: "router".into(),
    };
    let unit = |id: &str| IncidentUnit {
        unit: id.into(),
        task: format!("task-{id}"),
        role: UnitRole::Primary,
        status: TaskStatus::Issued,
        eta_s: 240,
    };
    let incident = Incident {
        ladder: Default::default(),
        requested: Vec::new(),
        id: bus::model::new_id(),
        version: 4,
        status: IncidentStatus::Dispatched,
        priority: 1,
        score: 85,
        kind: "robbery".into(),
        location: Some(Location {
            lat: 36.6683,
            lon: 117.0204,
            address: Some("历下区泉城路1号".into()),
        }),
        jurisdiction: "quancheng".into(),
        cell: bus::geo::cell_of(36.6683, 117.0204, 8),
        desks: vec!["command".into(), "criminal".into()],
        events: vec![bus::model::new_id()],
        repeat_count: 0,
        diverted_to: None,
        created_at: now,
        updated_at: now,
        deadlines: None,
        sla: Sla::default(),
        units: vec![unit("patrol-017"), unit("patrol-031")],
        timeline: vec![
            entry("created"),
            entry("respond task issued to patrol-017 (patrol_car, eta 240 s)"),
            entry("respond task issued to patrol-031 (patrol_car, eta 300 s)"),
        ],
        text: Some("两名男子持刀抢劫路人，向东逃窜".into()),
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
    };
    serde_json::to_vec(&incident).expect("an incident serialises")
}

/// Operator boards over the city's stations, with the filters boards use:
/// none, urgent only, or some kinds.
fn boards(hub: &Hub) -> Vec<mpsc::Receiver<Arc<Push>>> {
    let mut queues = Vec::with_capacity(BOARDS);
    for conn in 0..BOARDS {
        let (tx, rx) = mpsc::channel(8);
        let filter = match conn % 3 {
            0 => Filter::default(),
            1 => Filter {
                priority_max: Some(2),
                ..Filter::default()
            },
            _ => Filter {
                kinds: Some(vec!["robbery".into(), "assault".into()]),
                ..Filter::default()
            },
        };
        let claims = Claims {
            sub: format!("op-{conn}"),
            role: Role::Operator,
            jurisdictions: vec![JURISDICTIONS[conn % JURISDICTIONS.len()].into()],
            unit: None,
            exp: i64::MAX,
        };
        hub.subscribe(
            &ChannelName::Board,
            Subscriber {
                conn: conn as u64,
                tx,
                lagged: CancellationToken::new(),
                claims: Arc::new(claims),
                filter: Arc::new(filter),
                check_jurisdiction: true,
            },
        );
        queues.push(rx);
    }
    queues
}

fn bench(c: &mut Criterion) {
    let json = incident_json();
    let record = PushRecord::parse(PushKind::Incident, &json).expect("the sample is an incident");
    let meta = record.meta();
    let data = std::str::from_utf8(&json).expect("JSON is UTF-8");

    c.bench_function("record: parse an incident and read its push metadata", |b| {
        b.iter(|| {
            let record = PushRecord::parse(PushKind::Incident, black_box(&json)).expect("parses");
            black_box(record.meta())
        })
    });
    c.bench_function("frame: serialise one push", |b| {
        b.iter(|| push_frame("board", "1718000000000-0", PushKind::Incident, black_box(data), false))
    });
    let claims = Claims {
        sub: "op".into(),
        role: Role::Operator,
        jurisdictions: vec!["quancheng".into()],
        unit: None,
        exp: i64::MAX,
    };
    let filter = Filter {
        kinds: Some(vec!["theft".into(), "robbery".into()]),
        priority_max: Some(2),
        ..Filter::default()
    };
    c.bench_function("filter: jurisdiction and filter of one subscriber", |b| {
        b.iter(|| visible(black_box(&claims), black_box(&meta)) && filter.accepts(black_box(&meta)))
    });

    let hub = Hub::default();
    let mut queues = boards(&hub);
    let push = Arc::new(Push {
        channel: "board".into(),
        cursor: Cursor(1_718_000_000_000, 0),
        meta,
        text: Utf8Bytes::from(push_frame("board", "1718000000000-0", PushKind::Incident, data, false)),
    });
    c.bench_function("hub: one push matched against 10,000 boards and queued", |b| {
        b.iter(|| {
            let delivered = hub.deliver(black_box(&push));
            for queue in &mut queues {
                while queue.try_recv().is_ok() {}
            }
            delivered
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
