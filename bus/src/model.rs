//! The records qzx puts on Kafka, named exactly as `CONTRACT.md` names their
//! JSON fields. Every service reads and writes these types and no others, so
//! a field renamed here is a contract change.
//!
//! This module holds data and the small pure rules that belong to the data
//! (which status is open, which transition is legal). It must never do IO.
//!
//! With the `openapi` feature the types served over REST derive
//! `utoipa::ToSchema` for dispatch-ui-api's OpenAPI document. The schema
//! says what serde writes: a field serialised even when empty (an `Option`
//! without `skip_serializing_if`, or only `#[serde(default)]`) is required,
//! one skipped when empty is not, and a [`Timestamp`] is a date-time string.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

mod command;

pub use command::{Action, Actor, AssignMode, Command, ReportedStatus, Role};

/// Timestamps on every record are UTC; inputs may carry any offset.
pub type Timestamp = DateTime<Utc>;

/// Where an input event came from (`source` in the contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Call110,
    Sensor,
    Alert,
    Report,
}

impl Source {
    pub const ALL: [Source; 4] = [Source::Call110, Source::Sensor, Source::Alert, Source::Report];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Call110 => "call110",
            Source::Sensor => "sensor",
            Source::Alert => "alert",
            Source::Report => "report",
        }
    }

    pub fn parse(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Caller {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SensorInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub sensor_type: Option<String>,
    /// Detector confidence in [0, 1]; scoring weighs false-alarm-prone
    /// sensors by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

/// What ingest corrected in a call it accepted rather than refused
/// (有警必接、接案必登: a `call110` or `report` is never refused for its
/// content). Carried by the event and by its incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// No usable coordinates: placed in the fallback jurisdiction with no
    /// cell; an address sent alone is kept in `attrs.address`.
    Unlocated,
    /// `occurred_at` was too far ahead of the receive time: set to the
    /// receive time, the sent value kept in `attrs.sent_occurred_at`.
    ClockSkew,
    /// A field over its limit was cut (on a character boundary); the full
    /// original is on the dead-letter topic with the event's id.
    Truncated,
    /// Coordinates out of range, not numbers, or only one of the two: they
    /// were dropped (the address kept); always with `unlocated`.
    BadCoordinates,
    /// Contract extension: a field of the wrong type (text an object,
    /// caller a string, an unreadable `occurred_at`) was dropped, its value
    /// kept in `attrs.malformed` when small; the full original is on the
    /// dead-letter topic with the event's id.
    Malformed,
    /// Extension: a CAP alert with `status` Exercise or Test: recorded as
    /// an incident, never dispatched.
    Exercise,
    /// Extension: a CAP alert whose `expires` was already past when it
    /// arrived: recorded as an incident, not dispatched.
    Expired,
}

impl Flag {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::Unlocated => "unlocated",
            Flag::ClockSkew => "clock_skew",
            Flag::Truncated => "truncated",
            Flag::BadCoordinates => "bad_coordinates",
            Flag::Malformed => "malformed",
            Flag::Exercise => "exercise",
            Flag::Expired => "expired",
        }
    }

    /// The event no longer holds everything the sender sent: the original
    /// goes to the dead-letter topic, linked by the event id.
    pub fn loses_content(self) -> bool {
        matches!(self, Flag::Truncated | Flag::BadCoordinates | Flag::Malformed)
    }
}

/// Adds `flag` unless it is there already: flags are a set, in the order
/// first seen.
pub fn add_flag(flags: &mut Vec<Flag>, flag: Flag) {
    if !flags.contains(&flag) {
        flags.push(flag);
    }
}

/// An input event as a source system sends it, after validation
/// (see [`crate::validate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputEvent {
    pub source: Source,
    pub source_id: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<Caller>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensor: Option<SensorInfo>,
    #[serde(default)]
    pub attrs: Map<String, Value>,
    /// What validation corrected instead of refusing the call. Here, not on
    /// [`Event`], because validation is what corrects the fields and every
    /// channel's input passes through it; the event flattens it, so on the
    /// wire it is the event's `flags`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
}

/// A normalised event: the input plus what ingest adds. Value of the
/// `events` topic, keyed by `jurisdiction`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub received_at: Timestamp,
    pub jurisdiction: String,
    /// Grid cell (H3 index as hex) of the location; absent for an alert
    /// without coordinates.
    pub cell: Option<String>,
    #[serde(flatten)]
    pub input: InputEvent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    New,
    Dispatched,
    Acknowledged,
    EnRoute,
    OnScene,
    Resolved,
    Closed,
    Diverted,
}

impl IncidentStatus {
    /// Open means somebody still owes the incident something: it shows on
    /// the board until it is closed or handed to another agency.
    pub fn is_open(self) -> bool {
        !matches!(self, IncidentStatus::Closed | IncidentStatus::Diverted)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::New => "new",
            IncidentStatus::Dispatched => "dispatched",
            IncidentStatus::Acknowledged => "acknowledged",
            IncidentStatus::EnRoute => "en_route",
            IncidentStatus::OnScene => "on_scene",
            IncidentStatus::Resolved => "resolved",
            IncidentStatus::Closed => "closed",
            IncidentStatus::Diverted => "diverted",
        }
    }
}

/// The three stages of the 1-3-5 clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Respond,
    Arrive,
    Reinforce,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Respond, Stage::Arrive, Stage::Reinforce];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Respond => "respond",
            Stage::Arrive => "arrive",
            Stage::Reinforce => "reinforce",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SlaState {
    #[default]
    #[serde(rename = "pending")]
    Pending,
    #[serde(rename = "met")]
    Met,
    #[serde(rename = "breached")]
    Breached,
    /// The stage does not apply (a diverted incident, or a priority that
    /// needs no reinforcement).
    #[serde(rename = "n/a")]
    NotApplicable,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deadlines {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub respond: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub arrive: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub reinforce: Timestamp,
}

impl Deadlines {
    pub fn get(&self, stage: Stage) -> Timestamp {
        match stage {
            Stage::Respond => self.respond,
            Stage::Arrive => self.arrive,
            Stage::Reinforce => self.reinforce,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Sla {
    pub respond: SlaState,
    pub arrive: SlaState,
    pub reinforce: SlaState,
}

impl Sla {
    pub fn get(&self, stage: Stage) -> SlaState {
        match stage {
            Stage::Respond => self.respond,
            Stage::Arrive => self.arrive,
            Stage::Reinforce => self.reinforce,
        }
    }

    pub fn set(&mut self, stage: Stage, state: SlaState) {
        match stage {
            Stage::Respond => self.respond = state,
            Stage::Arrive => self.arrive = state,
            Stage::Reinforce => self.reinforce = state,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UnitRole {
    Primary,
    Reinforcement,
    Specialist,
}

/// A unit's part in an incident, as the board shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IncidentUnit {
    pub unit: String,
    pub task: String,
    pub role: UnitRole,
    pub status: TaskStatus,
    /// Predicted travel time when the task was issued.
    pub eta_s: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimelineEntry {
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
    pub what: String,
    pub by: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Feedback {
    Satisfied,
    Unsatisfied,
}

/// Value of the `incidents` topic: the full snapshot at each version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Incident {
    pub id: String,
    pub version: u64,
    pub status: IncidentStatus,
    /// 1 (highest) to 4.
    pub priority: u8,
    /// 0 to 100; the reasons are on the timeline.
    pub score: u8,
    pub kind: String,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub location: Option<Location>,
    pub jurisdiction: String,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub cell: Option<String>,
    pub desks: Vec<String>,
    pub events: Vec<String>,
    pub repeat_count: u32,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub diverted_to: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
    /// Set once the incident is dispatched; counted from the first event's
    /// receipt.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub deadlines: Option<Deadlines>,
    pub sla: Sla,
    pub units: Vec<IncidentUnit>,
    pub timeline: Vec<TimelineEntry>,
    /// Text of the first event, for the board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<Feedback>,
    /// The incident this one follows up (不满意回访 after `unsatisfied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_up_of: Option<String>,
    /// Every flag of its events (`unlocated`: a person must place it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
    /// Extension: everyone who called about it, first caller first, each
    /// phone once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callers: Vec<Caller>,
    /// Extension: automatic dispatch is held (by `hold`, or the priority's
    /// dispatch mode is `recommend`): the router ranks units in
    /// `candidates` and an operator assigns.
    #[serde(default, skip_serializing_if = "is_false")]
    pub hold: bool,
    /// Extension: the router's ranking of units for the incident, best
    /// first, while it waits for an operator to pick (held, or no unit in
    /// time); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Recommendation>,
    /// Extension: this incident was merged into that one (and is closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// Extension: incidents merged into this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged: Vec<String>,
    /// Extension: the incident this one was split from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_from: Option<String>,
    /// Extension: the escalation ladder's progress on each breached stage.
    #[serde(default, skip_serializing_if = "Ladder::is_empty")]
    pub ladder: Ladder,
    /// Extension: unit types an operator asked for (`escalate`) that no
    /// available unit could serve yet: retried as units free up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requested: Vec<UnitType>,
}

/// How far the escalation ladder went on each stage of an incident that
/// breached it: the clock climbs a rung each `ladder.interval_s` while the
/// stage's condition does not hold (nobody acknowledged, nobody on scene,
/// too few on scene).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ladder {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respond: Option<Rung>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrive: Option<Rung>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reinforce: Option<Rung>,
}

impl Ladder {
    pub fn is_empty(&self) -> bool {
        self.respond.is_none() && self.arrive.is_none() && self.reinforce.is_none()
    }

    pub fn get(&self, stage: Stage) -> Option<&Rung> {
        match stage {
            Stage::Respond => self.respond.as_ref(),
            Stage::Arrive => self.arrive.as_ref(),
            Stage::Reinforce => self.reinforce.as_ref(),
        }
    }

    pub fn set(&mut self, stage: Stage, rung: Rung) {
        match stage {
            Stage::Respond => self.respond = Some(rung),
            Stage::Arrive => self.arrive = Some(rung),
            Stage::Reinforce => self.reinforce = Some(rung),
        }
    }
}

/// The last rung climbed on one stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rung {
    /// 1 at the deadline, then one more each interval.
    pub rung: u32,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One unit the router would send, as it ranks them for an operator
/// (recommend mode, `GET /api/v1/incidents/{id}/candidates`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Recommendation {
    pub unit: String,
    #[serde(rename = "type")]
    pub unit_type: UnitType,
    /// Predicted travel time to the incident.
    pub eta_s: u32,
    /// Predicted to arrive before the arrive deadline.
    pub in_time: bool,
    pub distance_m: f64,
    /// The task it would be taken off (pre-emption), when it is busy with
    /// one of lower priority; absent for an available unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// That task's priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_priority: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    Respond,
    Reinforce,
    Investigate,
}

impl TaskKind {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Respond => "respond",
            TaskKind::Reinforce => "reinforce",
            TaskKind::Investigate => "investigate",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Issued,
    Acknowledged,
    EnRoute,
    OnScene,
    Cleared,
    Cancelled,
}

impl TaskStatus {
    /// The JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Issued => "issued",
            TaskStatus::Acknowledged => "acknowledged",
            TaskStatus::EnRoute => "en_route",
            TaskStatus::OnScene => "on_scene",
            TaskStatus::Cleared => "cleared",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_open(self) -> bool {
        !matches!(self, TaskStatus::Cleared | TaskStatus::Cancelled)
    }

    /// The legal forward moves of a task. Skipping ahead is allowed (a unit
    /// that forgot to press "en route" may report "on scene"); going back or
    /// leaving a finished task is not.
    pub fn can_become(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        let rank = |s: TaskStatus| match s {
            Issued => 0,
            Acknowledged => 1,
            EnRoute => 2,
            OnScene => 3,
            Cleared | Cancelled => 4,
        };
        self.is_open() && (rank(next) > rank(self) || next == Cancelled)
    }
}

/// Value of the `tasks` topic, keyed by unit: the full snapshot at each
/// version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Task {
    pub id: String,
    pub incident: String,
    pub unit: String,
    pub version: u64,
    pub kind: TaskKind,
    pub priority: u8,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub location: Option<Location>,
    pub summary: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub issued_at: Timestamp,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub deadlines: Option<Deadlines>,
    pub status: TaskStatus,
    /// Jurisdiction of the incident: commands about this task are keyed by
    /// it so they reach the router that owns the incident.
    pub jurisdiction: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: Timestamp,
    /// Extension: the incident's kind.
    /// Always served; the default is for reading older records.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    #[serde(default)]
    pub incident_kind: String,
    /// Extension: the first caller, to call back on the way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<Caller>,
    /// Extension: the other units with an open task on the incident.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_units: Vec<String>,
    /// Extension: what of the incident changed since the unit's previous
    /// version of this task (`priority`, `kind`, `text`, `location`,
    /// `deadlines`, `caller`, `units`, `merged`); empty when the task
    /// itself moved, or is new.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// Extension: why the task was cancelled or refused, for the unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UnitType {
    PatrolCar,
    Foot,
    Post,
    Special,
    Traffic,
}

impl UnitType {
    pub const ALL: [UnitType; 5] = [
        UnitType::PatrolCar,
        UnitType::Foot,
        UnitType::Post,
        UnitType::Special,
        UnitType::Traffic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UnitType::PatrolCar => "patrol_car",
            UnitType::Foot => "foot",
            UnitType::Post => "post",
            UnitType::Special => "special",
            UnitType::Traffic => "traffic",
        }
    }

    pub fn parse(s: &str) -> Option<UnitType> {
        UnitType::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UnitStatus {
    Available,
    Assigned,
    EnRoute,
    OnScene,
    Busy,
    OffDuty,
    /// Extension: cannot take tasks, with the unit's `reason`.
    OutOfService,
}

impl UnitStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitStatus::Available => "available",
            UnitStatus::Assigned => "assigned",
            UnitStatus::EnRoute => "en_route",
            UnitStatus::OnScene => "on_scene",
            UnitStatus::Busy => "busy",
            UnitStatus::OffDuty => "off_duty",
            UnitStatus::OutOfService => "out_of_service",
        }
    }
}

/// Value of the `units` topic (compacted by unit id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Unit {
    pub id: String,
    #[serde(rename = "type")]
    pub unit_type: UnitType,
    pub jurisdiction: String,
    pub status: UnitStatus,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub lat: Option<f64>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub lon: Option<f64>,
    /// When the position or status was last reported.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
    /// The task the unit is working on, if any.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub task: Option<String>,
    /// Bumped by the router, the only writer of status and task, on each
    /// record it publishes: a consumer (or a rebuild) that reads two
    /// records of a unit keeps the higher. Position reports keep it.
    /// Always served; the default is for reading older records.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    #[serde(default)]
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_kmh: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Extension: why the unit is `busy` or `out_of_service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EscalationKind {
    /// A 1-3-5 stage passed its deadline.
    SlaBreach,
    /// An operator pulled in a desk or unit type (吹哨报到).
    Escalate,
    /// A task went to another unit (not acknowledged in time, or refused).
    Redispatch,
    /// A command could not be applied (illegal transition, unknown id).
    Rejected,
    /// No available unit could be found for a task.
    NoUnit,
    /// A unit was found held by a task that is not open (its claim outlived
    /// a router killed before it recorded the task) and was made available
    /// again.
    Reconciled,
    /// Extension: a unit refused its task (with its reason).
    Refused,
    /// Extension: a unit was taken off this incident's task for an incident
    /// of higher priority.
    Preempted,
}

/// Value of the `escalations` topic, keyed by incident id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Escalation {
    pub id: String,
    pub incident: String,
    pub jurisdiction: String,
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: Timestamp,
    pub kind: EscalationKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// Desks alerted (the supervisor desk on a breach).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub desks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_type: Option<UnitType>,
    pub message: String,
    pub by: String,
    /// The command that was rejected, when `kind` is `rejected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// One problem with one field of an input, named by its path
/// (`location.lat`, `[3].kind`, `info[0].area[0].circle`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Http,
    Cap,
    Mqtt,
    Kafka,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Http => "http",
            Channel::Cap => "cap",
            Channel::Mqtt => "mqtt",
            Channel::Kafka => "kafka",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawEncoding {
    Utf8,
    Base64,
}

/// Value of the `deadletter` topic: what was rejected, byte for byte, and
/// why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The rejected bytes: as text when they are UTF-8, else base64.
    pub raw: String,
    pub raw_encoding: RawEncoding,
    pub errors: Vec<FieldError>,
    pub received_at: Timestamp,
    pub channel: Channel,
    /// The source system, where it is known (also the record key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Set when the item was accepted after all (a call corrected and
    /// flagged): the event that stands for it. Such a dead letter is the
    /// full original, not a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

impl DeadLetter {
    /// Keeps `raw` exactly: UTF-8 as it is, anything else as base64.
    pub fn new(raw: &[u8], errors: Vec<FieldError>, channel: Channel, received_at: Timestamp) -> Self {
        use base64::Engine as _;
        let (raw, raw_encoding) = match std::str::from_utf8(raw) {
            Ok(text) => (text.to_owned(), RawEncoding::Utf8),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(raw),
                RawEncoding::Base64,
            ),
        };
        DeadLetter {
            raw,
            raw_encoding,
            errors,
            received_at,
            channel,
            source: None,
            content_type: None,
            event_id: None,
        }
    }

    /// The bytes that were rejected, decoded back from `raw`.
    pub fn raw_bytes(&self) -> Vec<u8> {
        use base64::Engine as _;
        match self.raw_encoding {
            RawEncoding::Utf8 => self.raw.as_bytes().to_vec(),
            RawEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(&self.raw)
                .unwrap_or_default(),
        }
    }
}

/// A new unique id: UUIDv7, so ids sort by creation time.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Value of the `positions` topic (keyed by unit id): where a unit was at
/// `at`, as an AVL report (`POST /v1/positions`) gave it. It says nothing
/// of what the unit is doing: status and task are the router's, on the
/// `units` topic, which only the router writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionReport {
    pub unit: String,
    pub lat: f64,
    pub lon: f64,
    /// When the unit was there (the receive time when the report had none).
    pub at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_kmh: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sla_not_applicable_is_spelled_as_the_contract_says() {
        let sla = Sla {
            respond: SlaState::Met,
            arrive: SlaState::Pending,
            reinforce: SlaState::NotApplicable,
        };
        let json = serde_json::to_value(&sla).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"respond": "met", "arrive": "pending", "reinforce": "n/a"})
        );
    }

    #[test]
    fn command_is_tagged_by_op() {
        let cmd: Command = serde_json::from_value(serde_json::json!({
            "op": "close", "incident": "i1", "disposition": "handled", "feedback": "unsatisfied"
        }))
        .unwrap();
        assert_eq!(
            cmd,
            Command::Close {
                incident: "i1".into(),
                disposition: "handled".into(),
                feedback: Some(Feedback::Unsatisfied)
            }
        );
        let unknown = serde_json::from_value::<Command>(serde_json::json!({"op": "ack", "task": "t", "x": 1}));
        assert!(unknown.is_err());
    }

    #[test]
    fn action_round_trips_with_flattened_command() {
        let action = Action {
            id: "a1".into(),
            at: Utc::now(),
            by: Actor {
                sub: "u-7".into(),
                role: Role::Unit,
                unit: Some("u-7".into()),
            },
            jurisdiction: "quancheng".into(),
            command: Command::Ack { task: "t1".into() },
        };
        let json = serde_json::to_value(&action).unwrap();
        assert_eq!(json["op"], "ack");
        assert_eq!(json["task"], "t1");
        let back: Action = serde_json::from_value(json).unwrap();
        assert_eq!(back, action);
    }

    #[test]
    fn task_transitions_only_move_forward() {
        use TaskStatus::*;
        assert!(Issued.can_become(Acknowledged));
        assert!(Issued.can_become(OnScene));
        assert!(Acknowledged.can_become(Cancelled));
        assert!(!OnScene.can_become(EnRoute));
        assert!(!Cleared.can_become(OnScene));
        assert!(!Cancelled.can_become(Cancelled));
        assert!(!Acknowledged.can_become(Acknowledged));
    }

    #[test]
    fn dead_letter_keeps_non_utf8_bytes_as_base64() {
        let raw = [0xff, 0xfe, b'{'];
        let dl = DeadLetter::new(&raw, vec![], Channel::Http, Utc::now());
        assert_eq!(dl.raw_encoding, RawEncoding::Base64);
        assert_eq!(dl.raw_bytes(), raw);
        let text = DeadLetter::new("{\"a\":".as_bytes(), vec![], Channel::Http, Utc::now());
        assert_eq!(text.raw, "{\"a\":");
    }

    #[test]
    fn records_without_flags_still_parse_and_flags_are_omitted_when_empty() {
        let mut json = serde_json::json!({
            "id": "i1", "version": 1, "status": "new", "priority": 2, "score": 50, "kind": "theft",
            "location": null, "jurisdiction": "shiju", "cell": null, "desks": [], "events": ["e1"],
            "repeat_count": 1, "diverted_to": null, "created_at": "2026-11-22T06:00:00Z",
            "updated_at": "2026-11-22T06:00:00Z", "deadlines": null,
            "sla": {"respond": "pending", "arrive": "pending", "reinforce": "pending"},
            "units": [], "timeline": []
        });
        let incident: Incident = serde_json::from_value(json.clone()).unwrap();
        assert!(incident.flags.is_empty());
        assert!(serde_json::to_value(&incident).unwrap().get("flags").is_none());
        json["flags"] = serde_json::json!(["unlocated", "bad_coordinates"]);
        let incident: Incident = serde_json::from_value(json).unwrap();
        assert_eq!(incident.flags, vec![Flag::Unlocated, Flag::BadCoordinates]);
    }

    #[test]
    fn event_flattens_input_fields() {
        let event = Event {
            id: "e1".into(),
            received_at: Utc::now(),
            jurisdiction: "quancheng".into(),
            cell: Some("88309a4b2bfffff".into()),
            input: InputEvent {
                source: Source::Call110,
                source_id: "110-1".into(),
                kind: "robbery".into(),
                occurred_at: None,
                location: Some(Location {
                    lat: 36.66,
                    lon: 117.02,
                    address: None,
                }),
                text: Some("持刀抢劫".into()),
                caller: None,
                sensor: None,
                attrs: Map::new(),
                flags: vec![Flag::ClockSkew],
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["flags"], serde_json::json!(["clock_skew"]));
        assert_eq!(json["source"], "call110");
        assert_eq!(json["jurisdiction"], "quancheng");
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
