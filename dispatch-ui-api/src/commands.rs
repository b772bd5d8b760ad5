//! Commands from operators and units, over WebSocket and REST alike:
//! validated (a bad field is named), authorised (role, jurisdiction, own
//! unit and own tasks), resolved to the jurisdiction that keys them, and
//! published to the actions topic. Success means Kafka acknowledged the
//! action; the router applies it and the new state arrives as pushes.
//!
//! The api never changes incident or unit state itself.

use bus::auth::Claims;
use bus::model::{Action, Actor, Command, Incident, IncidentStatus, ReportedStatus, Role, new_id};
use bus::topics::Topic;
use serde_json::Value;

use crate::AppState;
use crate::auth::{may_act_for_unit, may_command_incidents};
use crate::error::ApiError;

/// Parses a command object (with its `op`); the error names the field.
pub fn parse(value: Value) -> Result<Command, ApiError> {
    let command: Command = match serde_json::from_value(value.clone()) {
        Ok(c) => c,
        Err(e) => {
            let message = e.to_string();
            return Err(match culprit(&value) {
                Some(field) if !message.contains(&format!("`{field}`")) => ApiError::bad_field(&field, message),
                _ => ApiError::BadRequest(message),
            });
        }
    };
    validate(&command)?;
    Ok(command)
}

/// The field whose value is of the wrong type. `Command` is internally
/// tagged, so serde's error has no path; a field is the culprit when the
/// object parses, or only misses that field, without it.
fn culprit(value: &Value) -> Option<String> {
    let map = value.as_object()?;
    map.keys().filter(|k| *k != "op").find_map(|field| {
        let mut without = map.clone();
        without.remove(field);
        match serde_json::from_value::<Command>(Value::Object(without)) {
            Ok(_) => Some(field.clone()),
            Err(e) if e.to_string().contains(&format!("missing field `{field}`")) => Some(field.clone()),
            Err(_) => None,
        }
    })
}

const MAX_ID: usize = 128;
const MAX_TEXT: usize = 2000;

fn id_field(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.len() > MAX_ID {
        return Err(ApiError::bad_field(field, "must be 1 to 128 characters"));
    }
    Ok(())
}

fn text_field(field: &str, value: &str, required: bool) -> Result<(), ApiError> {
    if required && value.trim().is_empty() {
        return Err(ApiError::bad_field(field, "must not be empty"));
    }
    if value.chars().count() > MAX_TEXT {
        return Err(ApiError::bad_field(field, "is too long"));
    }
    Ok(())
}

fn position(lat: f64, lon: f64) -> Result<(), ApiError> {
    if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
        return Err(ApiError::bad_field("lat", "must be in [-90, 90]"));
    }
    if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
        return Err(ApiError::bad_field("lon", "must be in [-180, 180]"));
    }
    Ok(())
}

fn validate(command: &Command) -> Result<(), ApiError> {
    match command {
        Command::Ack { task } => id_field("task", task),
        Command::Status {
            task, lat, lon, note, ..
        } => {
            if let Some(task) = task {
                id_field("task", task)?;
            }
            match (lat, lon) {
                (Some(lat), Some(lon)) => position(*lat, *lon)?,
                (None, None) => {}
                (Some(_), None) => return Err(ApiError::bad_field("lon", "is required with lat")),
                (None, Some(_)) => return Err(ApiError::bad_field("lat", "is required with lon")),
            }
            if let Some(note) = note {
                text_field("note", note, false)?;
            }
            Ok(())
        }
        Command::Position { lat, lon } => position(*lat, *lon),
        Command::Assign { incident, unit } => {
            id_field("incident", incident)?;
            id_field("unit", unit)
        }
        Command::Divert { incident, to } => {
            id_field("incident", incident)?;
            id_field("to", to)
        }
        Command::Escalate {
            incident,
            desk,
            unit_type,
            note,
        } => {
            id_field("incident", incident)?;
            if desk.is_none() && unit_type.is_none() {
                return Err(ApiError::bad_field("desk", "desk or unit_type is required"));
            }
            if let Some(note) = note {
                text_field("note", note, false)?;
            }
            Ok(())
        }
        Command::Close {
            incident, disposition, ..
        } => {
            id_field("incident", incident)?;
            text_field("disposition", disposition, true)
        }
    }
}

/// Authorises `command` for `claims`, resolves its jurisdiction and
/// publishes it. `unit` is the unit the command is about for unit commands
/// (the token's unit over WebSocket, the path's over REST). Returns the
/// action id once Kafka acknowledged it.
pub async fn execute(
    state: &AppState,
    claims: &Claims,
    command: Command,
    unit: Option<&str>,
) -> Result<String, ApiError> {
    let op = command.as_str();
    let result = publish(state, claims, command, unit).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    ::metrics::counter!(bus::metrics::API_COMMANDS_TOTAL, "op" => op, "outcome" => outcome).increment(1);
    result
}

async fn publish(state: &AppState, claims: &Claims, command: Command, unit: Option<&str>) -> Result<String, ApiError> {
    let jurisdiction = authorise(state, claims, &command, unit).await?;
    let action = Action {
        id: new_id(),
        at: chrono::Utc::now(),
        by: Actor {
            sub: claims.sub.clone(),
            role: claims.role,
            // Unit commands name their unit here, also when an admin sends
            // them for a unit over REST.
            unit: unit.map(str::to_owned).or_else(|| claims.unit.clone()),
        },
        jurisdiction: jurisdiction.clone(),
        command,
    };
    match state
        .producer
        .send_json(Topic::Actions, &jurisdiction, &action.id, &action)
        .await
    {
        Ok(_) => Ok(action.id),
        Err(e) if e.is_retriable() => Err(ApiError::Unavailable(format!("kafka cannot take the command now: {e}"))),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// The jurisdiction the action is keyed by, once the caller may send it.
async fn authorise(
    state: &AppState,
    claims: &Claims,
    command: &Command,
    unit: Option<&str>,
) -> Result<String, ApiError> {
    match command {
        Command::Ack { task } => {
            let unit = unit_subject(claims, unit)?;
            let task = state
                .view
                .task(task)
                .ok_or_else(|| ApiError::NotFound(format!("task {task} not found")))?;
            if task.unit != unit {
                return Err(ApiError::Forbidden("the task belongs to another unit".into()));
            }
            if !task.status.is_open() {
                return Err(ApiError::Conflict(
                    format!("the task is {:?}", task.status).to_lowercase(),
                ));
            }
            if task.status != bus::model::TaskStatus::Issued {
                return Err(ApiError::Conflict("the task is already acknowledged".into()));
            }
            Ok(task.jurisdiction)
        }
        Command::Status {
            status, task, lat, lon, ..
        } => {
            let unit = unit_subject(claims, unit)?;
            if let Some(task) = task {
                let task = state
                    .view
                    .task(task)
                    .ok_or_else(|| ApiError::NotFound(format!("task {task} not found")))?;
                if task.unit != unit {
                    return Err(ApiError::Forbidden("the task belongs to another unit".into()));
                }
                if !task.status.is_open() {
                    return Err(ApiError::Conflict("the task is already finished".into()));
                }
                // Progress on a task changes its incident: keyed by the
                // incident's jurisdiction, so the router that owns it reads
                // the command first hand (the router's `action_owner`).
                if matches!(
                    status,
                    ReportedStatus::EnRoute | ReportedStatus::OnScene | ReportedStatus::Cleared
                ) {
                    return Ok(task.jurisdiction);
                }
            }
            match state.store.unit(&unit).await? {
                Some(known) => Ok(known.jurisdiction),
                // A unit not in the roster comes on duty by reporting
                // `available` with its position; the router registers it.
                None => match (status, lat, lon) {
                    (ReportedStatus::Available, Some(lat), Some(lon)) => Ok(state.city.place(*lat, *lon).jurisdiction),
                    _ => Err(ApiError::NotFound(format!(
                        "unit {unit} is not registered: report status available with lat and lon first"
                    ))),
                },
            }
        }
        Command::Position { .. } => {
            let unit = unit_subject(claims, unit)?;
            match state.store.unit(&unit).await? {
                Some(known) => Ok(known.jurisdiction),
                None => Err(ApiError::NotFound(format!("unit {unit} is not registered"))),
            }
        }
        Command::Assign { incident, unit } => {
            let incident = commandable_incident(state, claims, incident).await?;
            if state.store.unit(unit).await?.is_none() {
                return Err(ApiError::NotFound(format!("unit {unit} not found")));
            }
            open_or_conflict(&incident)?;
            Ok(incident.jurisdiction)
        }
        Command::Divert { incident, .. } => {
            let incident = commandable_incident(state, claims, incident).await?;
            open_or_conflict(&incident)?;
            Ok(incident.jurisdiction)
        }
        Command::Escalate { incident, desk, .. } => {
            if let Some(desk) = desk
                && !state.config.desks.iter().any(|d| d.id == *desk)
            {
                return Err(ApiError::bad_field("desk", format!("unknown desk {desk}")));
            }
            let incident = commandable_incident(state, claims, incident).await?;
            open_or_conflict(&incident)?;
            Ok(incident.jurisdiction)
        }
        Command::Close { incident, .. } => {
            let incident = commandable_incident(state, claims, incident).await?;
            if incident.status == IncidentStatus::Closed {
                return Err(ApiError::Conflict("the incident is already closed".into()));
            }
            Ok(incident.jurisdiction)
        }
    }
}

/// The unit a unit command is about, when the caller may act for it.
fn unit_subject(claims: &Claims, unit: Option<&str>) -> Result<String, ApiError> {
    if !matches!(claims.role, Role::Unit | Role::Admin) {
        return Err(ApiError::Forbidden("only a unit may send this command".into()));
    }
    let Some(unit) = unit.or(claims.unit.as_deref()) else {
        // An admin token names no unit: over REST the path does.
        return Err(ApiError::bad_field(
            "unit",
            "this command acts for the token's unit; use POST /api/v1/units/{id}/status",
        ));
    };
    if !may_act_for_unit(claims, unit) {
        return Err(ApiError::Forbidden("a unit may only act for itself".into()));
    }
    Ok(unit.to_owned())
}

async fn commandable_incident(state: &AppState, claims: &Claims, id: &str) -> Result<Incident, ApiError> {
    if !may_command_incidents(claims) {
        return Err(ApiError::Forbidden("only an operator may command incidents".into()));
    }
    let incident = crate::rest::find_incident(state, id).await?;
    if !claims.covers(&incident.jurisdiction) {
        return Err(ApiError::Forbidden(format!(
            "incident {id} is in jurisdiction {}, not yours",
            incident.jurisdiction
        )));
    }
    Ok(incident)
}

fn open_or_conflict(incident: &Incident) -> Result<(), ApiError> {
    if incident.status.is_open() {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "the incident is {}",
            incident.status.as_str()
        )))
    }
}

/// The unit a unit command acts for when the caller names none: the
/// token's unit, or for an admin's ack the task's own unit.
pub fn acting_unit(state: &AppState, claims: &Claims, command: &Command) -> Option<String> {
    match (claims.role, command) {
        (Role::Admin, Command::Ack { task }) => state.view.task(task).map(|t| t.unit),
        _ => claims.unit.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bad_fields_are_named() {
        let e = parse(json!({"op": "position", "lat": "x", "lon": 1.0})).unwrap_err();
        assert!(e.to_string().starts_with("lat"), "{e}");
        let e = parse(json!({"op": "position", "lat": 91.0, "lon": 1.0})).unwrap_err();
        assert!(e.to_string().starts_with("lat"), "{e}");
        let e = parse(json!({"op": "close", "incident": "i", "disposition": " "})).unwrap_err();
        assert!(e.to_string().starts_with("disposition"), "{e}");
        let e = parse(json!({"op": "escalate", "incident": "i"})).unwrap_err();
        assert!(e.to_string().starts_with("desk"), "{e}");
        let e = parse(json!({"op": "ack"})).unwrap_err();
        assert!(e.to_string().contains("task"), "{e}");
        let e = parse(json!({"op": "status", "status": "available", "lat": 36.6})).unwrap_err();
        assert!(e.to_string().starts_with("lon"), "{e}");
        assert!(parse(json!({"op": "status", "status": "available", "lat": 36.6, "lon": 117.0})).is_ok());
    }
}
