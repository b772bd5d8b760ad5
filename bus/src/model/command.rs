//! Commands as clients send them (over WebSocket and REST, the `op` field
//! naming each) and as the `actions` topic carries them, with who sent
//! them. The api validates and authorises a command; only the router
//! applies it.

use serde::{Deserialize, Serialize};

use super::{Caller, Feedback, Location, Timestamp, UnitType, is_false};

/// What a unit may report with the `status` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReportedStatus {
    Available,
    EnRoute,
    OnScene,
    Cleared,
    Busy,
    OffDuty,
    /// Extension: the unit cannot take tasks (breakdown, injury), with a
    /// `reason`.
    OutOfService,
}

/// How `assign` adds its unit to the incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AssignMode {
    /// The unit becomes the primary: the open primary tasks are cancelled.
    #[default]
    Replace,
    /// The unit is added as a reinforcement; nobody is taken off.
    Add,
}

impl AssignMode {
    fn is_replace(&self) -> bool {
        *self == AssignMode::Replace
    }
}

fn yes() -> bool {
    true
}

/// A command as a client sends it over WebSocket or REST (the `op` field
/// names it). The api validates and authorises it; the router applies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    Ack {
        task: String,
    },
    Status {
        status: ReportedStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lat: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lon: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
        unit_type: Option<UnitType>,
        /// Extension: why the unit is `busy` or `out_of_service` (required
        /// for `out_of_service`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Position {
        lat: f64,
        lon: f64,
    },
    Assign {
        incident: String,
        unit: String,
        /// Extension: `add` sends the unit as well as those already on it.
        #[serde(default, skip_serializing_if = "AssignMode::is_replace")]
        mode: AssignMode,
        /// Extension: the unit may be taken off a task of lower priority
        /// (that task is cancelled with the reason).
        #[serde(default, skip_serializing_if = "is_false")]
        preempt: bool,
    },
    Divert {
        incident: String,
        to: String,
    },
    Escalate {
        incident: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        desk: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit_type: Option<UnitType>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    Close {
        incident: String,
        disposition: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        feedback: Option<Feedback>,
    },
    /// Extension: an operator corrects an incident. At least one of
    /// priority, kind, text, location; a priority change needs a reason.
    Update {
        incident: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        priority: Option<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location: Option<Location>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Extension: a line on an incident's timeline, from an operator (about
    /// `incident`) or a unit (about its `task`, or its current one).
    Note {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        incident: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<String>,
        text: String,
    },
    /// Extension: a closed, resolved or diverted incident comes back open
    /// with its history (un-diverting is a reopen).
    Reopen {
        incident: String,
        reason: String,
    },
    /// Extension: incident `from` is merged into `incident`: its events,
    /// callers, units and timeline move; it is closed as merged.
    Merge {
        incident: String,
        from: String,
    },
    /// Extension: the chosen `events` leave `incident` for a new incident.
    Split {
        incident: String,
        events: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Extension: `hold: true` stops automatic dispatch for an incident
    /// (the router recommends, an operator assigns); `false` resumes it.
    Hold {
        incident: String,
        #[serde(default = "yes")]
        #[cfg_attr(feature = "openapi", schema(default = true))]
        hold: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Extension: a unit refuses a task it has not reached, with a reason;
    /// the router sends another unit at once.
    Refuse {
        task: String,
        reason: String,
    },
    /// Extension: an operator opens an incident for a walk-in or radio
    /// report. Not an action: the api turns it into a `report` event on the
    /// events topic (the operator as reporter), so it goes through the same
    /// pipeline as any event.
    Create {
        kind: String,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        location: Option<Location>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caller: Option<Caller>,
    },
}

impl Command {
    /// The command's `op` name, as clients send it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Command::Ack { .. } => "ack",
            Command::Status { .. } => "status",
            Command::Position { .. } => "position",
            Command::Assign { .. } => "assign",
            Command::Divert { .. } => "divert",
            Command::Escalate { .. } => "escalate",
            Command::Close { .. } => "close",
            Command::Update { .. } => "update",
            Command::Note { .. } => "note",
            Command::Reopen { .. } => "reopen",
            Command::Merge { .. } => "merge",
            Command::Split { .. } => "split",
            Command::Hold { .. } => "hold",
            Command::Refuse { .. } => "refuse",
            Command::Create { .. } => "create",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Source,
    Unit,
    Operator,
    Analyst,
    Admin,
}

impl Role {
    /// The JSON name, as in a token's `role` claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Unit => "unit",
            Role::Operator => "operator",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }
}

/// Who issued a command, from their token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// Value of the `actions` topic, keyed by the jurisdiction of the incident
/// (or unit) it concerns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Unique per command; the router ignores an id it has applied.
    pub id: String,
    pub at: Timestamp,
    pub by: Actor,
    pub jurisdiction: String,
    #[serde(flatten)]
    pub command: Command,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_fields_are_optional_and_omitted_at_their_default() {
        let assign: Command =
            serde_json::from_value(serde_json::json!({"op": "assign", "incident": "i", "unit": "u"})).unwrap();
        assert_eq!(
            assign,
            Command::Assign {
                incident: "i".into(),
                unit: "u".into(),
                mode: AssignMode::Replace,
                preempt: false
            }
        );
        assert_eq!(
            serde_json::to_value(&assign).unwrap(),
            serde_json::json!({"op": "assign", "incident": "i", "unit": "u"})
        );
        let hold: Command = serde_json::from_value(serde_json::json!({"op": "hold", "incident": "i"})).unwrap();
        assert!(matches!(hold, Command::Hold { hold: true, .. }));
    }
}
