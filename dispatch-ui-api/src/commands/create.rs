//! `create`: an operator opens an incident for a walk-in or radio report.
//!
//! Not an action: the router makes incidents from events, so the api turns
//! the command into an input event of source `report` and puts it on the
//! events topic, through the one validation and placement every channel's
//! events take (`bus::validate::validate_input` and `normalise`, as in
//! ingest). The router then scores, links and dispatches it like any call.
//!
//! It must never write an incident itself, nor place an event anywhere
//! else than `normalise` does.

use bus::auth::Claims;
use bus::model::{Caller, Event, Location, new_id};
use bus::topics::Topic;
use bus::validate::{normalise, validate_input};
use serde_json::{Value, json};

use super::authorise::known_kind;
use crate::AppState;
use crate::auth::may_command_incidents;
use crate::error::ApiError;

/// What the command carries, borrowed from it.
pub(super) struct Report<'a> {
    pub kind: &'a str,
    pub text: &'a str,
    pub location: Option<&'a Location>,
    pub caller: Option<&'a Caller>,
}

/// Checks the caller's rights, builds the event and produces it. Returns
/// the event's id once Kafka acknowledged it.
pub(super) async fn publish(state: &AppState, claims: &Claims, report: Report<'_>) -> Result<String, ApiError> {
    if !may_command_incidents(claims) {
        return Err(ApiError::Forbidden("only an operator may create incidents".into()));
    }
    known_kind(state, report.kind)?;
    let event = event(state, claims, &report)?;
    if !claims.covers(&event.jurisdiction) {
        let message = if report.location.is_none() {
            format!(
                "location: without one the report goes to jurisdiction {}, which is not yours; give its location",
                event.jurisdiction
            )
        } else {
            format!("the location is in jurisdiction {}, not yours", event.jurisdiction)
        };
        return Err(ApiError::Forbidden(message));
    }
    // Keyed and identified as ingest does, so the router cannot tell the
    // two apart.
    match state
        .producer
        .send_json(Topic::Events, &event.jurisdiction, &event.id, &event)
        .await
    {
        Ok(_) => Ok(event.id),
        Err(e) if e.is_retriable() => Err(ApiError::Unavailable(format!("kafka cannot take the report now: {e}"))),
        Err(e) => Err(ApiError::Internal(e.to_string())),
    }
}

/// The normalised event of a report. Its `source_id` is new, so it is never
/// a duplicate of anything (no idempotency key is needed); `attrs.reporter`
/// says which operator took it.
fn event(state: &AppState, claims: &Claims, report: &Report<'_>) -> Result<Event, ApiError> {
    let mut input = json!({
        "source": "report",
        "source_id": new_id(),
        "kind": report.kind,
        "text": report.text,
        "attrs": {"reporter": claims.sub},
    });
    if let Some(location) = report.location {
        input["location"] = to_value(location)?;
    }
    if let Some(caller) = report.caller {
        input["caller"] = to_value(caller)?;
    }
    let now = chrono::Utc::now();
    // The command's own validation is stricter than ingest's for a report
    // (which corrects rather than refuses), so this only fails if the two
    // drift apart: then the client hears which field.
    let input = validate_input(&input, &state.rules, None, now).map_err(|errors| match errors.first() {
        Some(e) => ApiError::bad_field(&e.field, &e.message),
        None => ApiError::BadRequest("the report is not a valid event".into()),
    })?;
    // Ingest keeps a cut call's original on the dead-letter topic; an
    // operator is asked to send it within the limits instead.
    if let Some(flag) = input.flags.iter().find(|f| f.loses_content()) {
        return Err(ApiError::BadRequest(format!(
            "the report exceeds the configured ingest limits (it would be {})",
            flag.as_str()
        )));
    }
    Ok(normalise(input, &state.city, now))
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::Internal(e.to_string()))
}
