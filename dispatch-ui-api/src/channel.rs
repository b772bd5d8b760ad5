//! Channels, push metadata and filters: which channel a record belongs to,
//! what a push says about itself (jurisdiction, priority, kind, desks) and
//! whether a subscriber may and wants to see it. Pure functions, no IO, so
//! live pushes and history replay filter exactly alike.

use bus::auth::Claims;
use bus::model::{Escalation, Event, Incident, Task, Unit};
use bus::topics::Topic;
use serde::Deserialize;
use serde_json::Value;

/// A channel a client can subscribe to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelName {
    Board,
    Unit(String),
    Topic(Topic),
}

/// Topics a client may subscribe to (`topic:<name>`).
pub const SUBSCRIBABLE_TOPICS: [Topic; 5] = [
    Topic::Events,
    Topic::Incidents,
    Topic::Tasks,
    Topic::Units,
    Topic::Escalations,
];

impl ChannelName {
    pub fn parse(text: &str) -> Result<ChannelName, String> {
        if text == "board" {
            return Ok(ChannelName::Board);
        }
        if let Some(id) = text.strip_prefix("unit:") {
            if id.is_empty() || id.len() > 128 {
                return Err("a unit channel is unit:<id>".into());
            }
            return Ok(ChannelName::Unit(id.to_owned()));
        }
        if let Some(name) = text.strip_prefix("topic:") {
            return SUBSCRIBABLE_TOPICS
                .into_iter()
                .find(|t| t.suffix() == name)
                .map(ChannelName::Topic)
                .ok_or_else(|| "topic must be one of events, incidents, tasks, units, escalations".to_owned());
        }
        Err("channel must be board, unit:<id> or topic:<name>".into())
    }

    /// The channel's name, which is also its history key in the Store.
    pub fn key(&self) -> String {
        match self {
            ChannelName::Board => "board".to_owned(),
            ChannelName::Unit(id) => format!("unit:{id}"),
            ChannelName::Topic(t) => format!("topic:{}", t.suffix()),
        }
    }

    /// Bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ChannelName::Board => "board",
            ChannelName::Unit(_) => "unit",
            ChannelName::Topic(_) => "topic",
        }
    }

    /// On the board and topic channels every push is checked against the
    /// caller's jurisdictions; a unit channel is authorised at subscribe.
    pub fn checks_jurisdiction(&self) -> bool {
        !matches!(self, ChannelName::Unit(_))
    }
}

/// `kind` of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    Incident,
    Task,
    Event,
    Unit,
    Escalation,
}

impl PushKind {
    /// The kind of a record that is pushed as itself. A position report is
    /// not: the fan-out pushes the unit it moves, as a `unit` (see
    /// `fanout`).
    pub fn of(topic: Topic) -> Option<PushKind> {
        match topic {
            Topic::Incidents => Some(PushKind::Incident),
            Topic::Tasks => Some(PushKind::Task),
            Topic::Events => Some(PushKind::Event),
            Topic::Units => Some(PushKind::Unit),
            Topic::Escalations => Some(PushKind::Escalation),
            Topic::Actions | Topic::DeadLetter | Topic::Positions => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PushKind::Incident => "incident",
            PushKind::Task => "task",
            PushKind::Event => "event",
            PushKind::Unit => "unit",
            PushKind::Escalation => "escalation",
        }
    }

    pub fn parse(text: &str) -> Option<PushKind> {
        [
            PushKind::Incident,
            PushKind::Task,
            PushKind::Event,
            PushKind::Unit,
            PushKind::Escalation,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

/// What filters and authorisation need to know about a push.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    pub kind: PushKind,
    pub id: Option<String>,
    /// Orders versions of one id: incident and task `version`, unit `at`
    /// in ms. Used to drop a live push already covered by a snapshot.
    pub version: Option<i64>,
    pub jurisdiction: Option<String>,
    /// The category (`kind` of an incident or event).
    pub category: Option<String>,
    pub priority: Option<u8>,
    pub desks: Vec<String>,
    /// The unit a task or unit record concerns.
    pub unit: Option<String>,
}

impl Meta {
    pub fn from_value(kind: PushKind, v: &Value) -> Meta {
        let text = |field: &str| v.get(field).and_then(Value::as_str).map(str::to_owned);
        let version = match kind {
            PushKind::Unit => text("at")
                .and_then(|at| chrono::DateTime::parse_from_rfc3339(&at).ok())
                .map(|at| at.timestamp_millis()),
            _ => v.get("version").and_then(Value::as_i64),
        };
        Meta {
            kind,
            id: text("id"),
            version,
            jurisdiction: text("jurisdiction"),
            category: matches!(kind, PushKind::Incident | PushKind::Event)
                .then(|| text("kind"))
                .flatten(),
            priority: v
                .get("priority")
                .and_then(Value::as_u64)
                .and_then(|p| u8::try_from(p).ok()),
            desks: v
                .get("desks")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
            unit: match kind {
                PushKind::Task => text("unit"),
                PushKind::Unit => text("id"),
                _ => None,
            },
        }
    }
}

/// A record of a pushed topic, parsed once, straight to its model type.
#[derive(Debug)]
pub enum PushRecord {
    /// Boxed: an incident snapshot is several times the size of the others.
    Incident(Box<Incident>),
    Task(Task),
    Event(Event),
    Unit(Unit),
    Escalation(Escalation),
}

impl PushRecord {
    /// Parses a record's JSON as the model its kind names; an error when it
    /// is not JSON or not of that shape.
    pub fn parse(kind: PushKind, json: &[u8]) -> Result<PushRecord, serde_json::Error> {
        Ok(match kind {
            PushKind::Incident => PushRecord::Incident(Box::new(serde_json::from_slice(json)?)),
            PushKind::Task => PushRecord::Task(serde_json::from_slice(json)?),
            PushKind::Event => PushRecord::Event(serde_json::from_slice(json)?),
            PushKind::Unit => PushRecord::Unit(serde_json::from_slice(json)?),
            PushKind::Escalation => PushRecord::Escalation(serde_json::from_slice(json)?),
        })
    }

    /// The same [`Meta`] as [`Meta::from_value`] gives for its JSON.
    pub fn meta(&self) -> Meta {
        let meta = |kind, id: &str, jurisdiction: &str| Meta {
            kind,
            id: Some(id.to_owned()),
            version: None,
            jurisdiction: Some(jurisdiction.to_owned()),
            category: None,
            priority: None,
            desks: Vec::new(),
            unit: None,
        };
        match self {
            PushRecord::Incident(i) => Meta {
                version: i64::try_from(i.version).ok(),
                category: Some(i.kind.clone()),
                priority: Some(i.priority),
                desks: i.desks.clone(),
                ..meta(PushKind::Incident, &i.id, &i.jurisdiction)
            },
            PushRecord::Task(t) => Meta {
                version: i64::try_from(t.version).ok(),
                priority: Some(t.priority),
                unit: Some(t.unit.clone()),
                ..meta(PushKind::Task, &t.id, &t.jurisdiction)
            },
            PushRecord::Event(e) => Meta {
                category: Some(e.input.kind.clone()),
                ..meta(PushKind::Event, &e.id, &e.jurisdiction)
            },
            PushRecord::Unit(u) => Meta {
                version: Some(u.at.timestamp_millis()),
                unit: Some(u.id.clone()),
                ..meta(PushKind::Unit, &u.id, &u.jurisdiction)
            },
            PushRecord::Escalation(e) => Meta {
                desks: e.desks.clone(),
                ..meta(PushKind::Escalation, &e.id, &e.jurisdiction)
            },
        }
    }
}

/// A subscriber's filter (`filter` of `subscribe`). Every part narrows; a
/// part does not apply to a push that lacks the field (a unit has no
/// category).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
    #[serde(default)]
    pub priority_max: Option<u8>,
    #[serde(default)]
    pub jurisdictions: Option<Vec<String>>,
    #[serde(default)]
    pub desks: Option<Vec<String>>,
}

impl Filter {
    pub fn accepts(&self, meta: &Meta) -> bool {
        if let (Some(kinds), Some(category)) = (&self.kinds, &meta.category)
            && !kinds.contains(category)
        {
            return false;
        }
        if let (Some(max), Some(p)) = (self.priority_max, meta.priority)
            && p > max
        {
            return false;
        }
        if let (Some(js), Some(j)) = (&self.jurisdictions, &meta.jurisdiction)
            && !js.contains(j)
        {
            return false;
        }
        if let Some(desks) = &self.desks
            && !meta.desks.is_empty()
            && !meta.desks.iter().any(|d| desks.contains(d))
        {
            return false;
        }
        true
    }
}

/// May `claims` see this push on a channel that checks jurisdictions? A
/// push without a jurisdiction is only for callers who hold them all.
pub fn visible(claims: &Claims, meta: &Meta) -> bool {
    match &meta.jurisdiction {
        Some(j) => claims.covers(j),
        None => claims.all_jurisdictions(),
    }
}

/// The channels a record of `kind` is pushed on.
pub fn channels_for(meta: &Meta) -> Vec<ChannelName> {
    let mut out = Vec::with_capacity(2);
    match meta.kind {
        PushKind::Incident | PushKind::Escalation | PushKind::Unit => out.push(ChannelName::Board),
        PushKind::Task => {
            // Only tasks go on a unit's channel: they come from one partition
            // (keyed by unit), so every api instance appends them in the
            // same order and a resuming terminal can never skip one.
            if let Some(unit) = &meta.unit {
                out.push(ChannelName::Unit(unit.clone()));
            }
        }
        PushKind::Event => {}
    }
    let topic = match meta.kind {
        PushKind::Incident => Topic::Incidents,
        PushKind::Task => Topic::Tasks,
        PushKind::Event => Topic::Events,
        PushKind::Unit => Topic::Units,
        PushKind::Escalation => Topic::Escalations,
    };
    out.push(ChannelName::Topic(topic));
    out
}

/// A history cursor as the Store hands it out: `<ms>-<seq>`. Compared as
/// numbers; the Store guarantees they increase per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Cursor(pub u64, pub u64);

impl Cursor {
    pub fn parse(text: &str) -> Option<Cursor> {
        let (ms, seq) = text.split_once('-')?;
        Some(Cursor(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// A push frame: `{"type":"push","channel":…,"cursor":…,"kind":…,"data":…}`
/// built around the record's bytes as they came from Kafka, so the data is
/// never re-serialised.
pub fn push_frame(channel: &str, cursor: &str, kind: PushKind, data: &str, snapshot: bool) -> String {
    let channel = serde_json::to_string(channel).unwrap_or_else(|_| "\"\"".to_owned());
    let cursor = serde_json::to_string(cursor).unwrap_or_else(|_| "\"\"".to_owned());
    let mut out = String::with_capacity(data.len() + channel.len() + cursor.len() + 80);
    out.push_str("{\"type\":\"push\",\"channel\":");
    out.push_str(&channel);
    out.push_str(",\"cursor\":");
    out.push_str(&cursor);
    out.push_str(",\"kind\":\"");
    out.push_str(kind.as_str());
    out.push('"');
    if snapshot {
        out.push_str(",\"snapshot\":true");
    }
    out.push_str(",\"data\":");
    out.push_str(data);
    out.push('}');
    out
}

/// What the Store keeps per history entry: `<kind>\n<record json>`.
pub fn history_payload(kind: PushKind, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend_from_slice(kind.as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(data);
    out
}

/// Splits a history entry back into kind and record text.
pub fn parse_history_payload(payload: &[u8]) -> Option<(PushKind, &str)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (kind, data) = text.split_once('\n')?;
    Some((PushKind::parse(kind)?, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn channels_parse_and_round_trip() {
        for text in ["board", "unit:u-1", "topic:events", "topic:escalations"] {
            assert_eq!(ChannelName::parse(text).unwrap().key(), text);
        }
        assert!(ChannelName::parse("topic:actions").is_err());
        assert!(ChannelName::parse("unit:").is_err());
        assert!(ChannelName::parse("boards").is_err());
    }

    /// Every pushed model's JSON as the router writes it.
    fn records() -> Vec<(PushKind, Value)> {
        use bus::model::*;
        let now = chrono::Utc::now();
        let incident = Incident {
            ladder: Default::default(),
            requested: Vec::new(),
            id: "i-1".into(),
            version: 3,
            status: IncidentStatus::Dispatched,
            priority: 1,
            score: 80,
            kind: "robbery".into(),
            location: None,
            jurisdiction: "quancheng".into(),
            cell: None,
            desks: vec!["command".into(), "criminal".into()],
            events: vec!["e-1".into()],
            repeat_count: 0,
            diverted_to: None,
            created_at: now,
            updated_at: now,
            deadlines: None,
            sla: Sla::default(),
            units: vec![],
            timeline: vec![],
            text: None,
            disposition: None,
            feedback: None,
            follow_up_of: None,
            flags: Vec::new(),
            callers: vec![Caller {
                phone: Some("13800000000".into()),
                name: None,
            }],
            hold: true,
            candidates: vec![Recommendation {
                unit: "u-1".into(),
                unit_type: UnitType::PatrolCar,
                eta_s: 90,
                in_time: true,
                distance_m: 800.0,
                task: None,
                task_priority: None,
            }],
            merged_into: None,
            merged: vec!["i-0".into()],
            split_from: None,
        };
        let task = Task {
            id: "t-1".into(),
            incident: "i-1".into(),
            unit: "u-1".into(),
            version: 2,
            kind: TaskKind::Respond,
            priority: 1,
            location: None,
            summary: "go".into(),
            issued_at: now,
            deadlines: None,
            status: TaskStatus::Issued,
            jurisdiction: "quancheng".into(),
            updated_at: now,
            incident_kind: "robbery".into(),
            caller: None,
            other_units: vec!["u-2".into()],
            changes: vec!["priority".into()],
            reason: None,
        };
        let unit = Unit {
            id: "u-1".into(),
            unit_type: UnitType::PatrolCar,
            jurisdiction: "daminghu".into(),
            status: UnitStatus::Available,
            lat: Some(36.6683),
            lon: Some(117.0204),
            at: now,
            task: None,
            version: 0,
            speed_kmh: None,
            name: None,
            reason: None,
        };
        vec![
            (PushKind::Incident, serde_json::to_value(&incident).unwrap()),
            (PushKind::Task, serde_json::to_value(&task).unwrap()),
            (PushKind::Unit, serde_json::to_value(&unit).unwrap()),
            (
                PushKind::Event,
                json!({"id": "e-1", "received_at": now, "jurisdiction": "quancheng", "cell": null,
                       "source": "call110", "source_id": "110-1", "kind": "theft"}),
            ),
            (
                PushKind::Escalation,
                json!({"id": "x-1", "incident": "i-1", "jurisdiction": "quancheng", "at": now,
                       "kind": "sla_breach", "desks": ["supervisor"], "message": "late", "by": "router"}),
            ),
        ]
    }

    #[test]
    fn a_typed_record_has_the_meta_of_its_json() {
        for (kind, json) in records() {
            let record = PushRecord::parse(kind, json.to_string().as_bytes()).unwrap();
            assert_eq!(record.meta(), Meta::from_value(kind, &json), "{json}");
        }
    }

    #[test]
    fn a_record_of_another_shape_does_not_parse() {
        let records = records();
        let (_, task) = &records[1];
        assert!(PushRecord::parse(PushKind::Incident, task.to_string().as_bytes()).is_err());
        assert!(PushRecord::parse(PushKind::Unit, b"{not json").is_err());
    }

    #[test]
    fn filters_narrow_only_on_fields_the_push_has() {
        let incident = Meta::from_value(
            PushKind::Incident,
            &json!({"id": "i", "version": 2, "kind": "robbery", "priority": 1, "jurisdiction": "quancheng", "desks": ["command"]}),
        );
        let unit = Meta::from_value(PushKind::Unit, &json!({"id": "u", "jurisdiction": "quancheng"}));
        let f = Filter {
            kinds: Some(vec!["theft".into()]),
            ..Filter::default()
        };
        assert!(!f.accepts(&incident));
        assert!(f.accepts(&unit));
        let f = Filter {
            priority_max: Some(1),
            desks: Some(vec!["command".into()]),
            ..Filter::default()
        };
        assert!(f.accepts(&incident));
        let f = Filter {
            desks: Some(vec!["traffic".into()]),
            ..Filter::default()
        };
        assert!(!f.accepts(&incident));
        assert_eq!(incident.version, Some(2));
    }

    #[test]
    fn cursors_compare_as_numbers() {
        assert!(Cursor::parse("10-0").unwrap() > Cursor::parse("9-5").unwrap());
        assert!(Cursor::parse("x").is_none());
    }

    #[test]
    fn a_push_frame_is_valid_json() {
        let frame = push_frame("unit:\"x", "1-0", PushKind::Task, r#"{"id":"t"}"#, true);
        let v: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["channel"], "unit:\"x");
        assert_eq!(v["data"]["id"], "t");
        assert_eq!(v["snapshot"], true);
        let payload = history_payload(PushKind::Task, br#"{"id":"t"}"#);
        assert_eq!(parse_history_payload(&payload), Some((PushKind::Task, r#"{"id":"t"}"#)));
    }
}
