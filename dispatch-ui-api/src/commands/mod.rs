//! Commands from operators and units, over WebSocket and REST alike:
//! parsed and validated (`validate`: a bad field is named), authorised
//! (`authorise`: role, jurisdiction, own unit and own tasks, the state the
//! command needs) and resolved to the jurisdiction that keys them, then
//! published to the actions topic. Success means Kafka acknowledged the
//! action; the router applies it and the new state arrives as pushes.
//! `create` is the exception: it becomes an event (`create`).
//!
//! The api never changes incident or unit state itself.

mod authorise;
mod create;
mod validate;

use bus::auth::Claims;
use bus::model::{Action, Actor, Command, Role, new_id};
use bus::topics::Topic;
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;

/// What a command produced, for the reply.
#[derive(Debug, Clone)]
pub struct Published {
    /// The action's id; for `create`, the event's (there is no action).
    pub action: String,
    /// The event a `create` produced.
    pub event: Option<String>,
}

/// Parses a command object (with its `op`); the error names the field.
pub fn parse(value: Value) -> Result<Command, ApiError> {
    let command: Command = match serde_json::from_value(value.clone()) {
        Ok(c) => c,
        Err(e) => {
            let message = e.to_string();
            if let Some(field) = missing_field(&message) {
                return Err(ApiError::bad_field(field, "is required"));
            }
            return Err(match culprit(&value) {
                Some(field) if !message.contains(&format!("`{field}`")) => ApiError::bad_field(&field, message),
                _ => ApiError::BadRequest(message),
            });
        }
    };
    validate::validate(&command)?;
    Ok(command)
}

/// The field of serde's "missing field `x`" message.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
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

/// Authorises `command` for `claims`, resolves its jurisdiction and
/// publishes it. `unit` is the unit the command is about for unit commands
/// (the token's unit over WebSocket, the path's over REST). Returns what
/// was published (the action, or `create`'s event) once Kafka acknowledged
/// it.
pub async fn execute(
    state: &AppState,
    claims: &Claims,
    command: Command,
    unit: Option<&str>,
) -> Result<Published, ApiError> {
    let op = command.as_str();
    let result = publish(state, claims, command, unit).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    };
    ::metrics::counter!(bus::metrics::API_COMMANDS_TOTAL, "op" => op, "outcome" => outcome).increment(1);
    result
}

async fn publish(
    state: &AppState,
    claims: &Claims,
    command: Command,
    unit: Option<&str>,
) -> Result<Published, ApiError> {
    if let Command::Create {
        kind,
        text,
        location,
        caller,
    } = &command
    {
        let report = create::Report {
            kind,
            text,
            location: location.as_ref(),
            caller: caller.as_ref(),
        };
        let event = create::publish(state, claims, report).await?;
        return Ok(Published {
            action: event.clone(),
            event: Some(event),
        });
    }
    let command = authorise::complete(state, claims, command, unit).await?;
    let jurisdiction = authorise::authorise(state, claims, &command, unit).await?;
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
        Ok(_) => Ok(Published {
            action: action.id,
            event: None,
        }),
        Err(e) if e.is_retriable() => Err(ApiError::Unavailable(format!("kafka cannot take the command now: {e}"))),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// The unit a unit command acts for when the caller names none: the
/// token's unit, or for an admin's ack or refuse the task's own unit.
pub fn acting_unit(state: &AppState, claims: &Claims, command: &Command) -> Option<String> {
    match command {
        Command::Ack { task } | Command::Refuse { task, .. } => acting_unit_for_task(state, claims, task),
        _ => claims.unit.clone(),
    }
}

/// The unit a command about `task` acts for: the token's unit, or for an
/// admin the task's own unit.
pub fn acting_unit_for_task(state: &AppState, claims: &Claims, task: &str) -> Option<String> {
    match claims.role {
        Role::Admin => state.view.task(task).map(|t| t.unit),
        _ => claims.unit.clone(),
    }
}
