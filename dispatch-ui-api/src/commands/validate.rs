//! What a command must look like on its own, before anybody is asked
//! whether it may be sent: ids, lengths, ranges, and which fields go
//! together. Every error names the field (`field: message`), so a client
//! can point at it.
//!
//! Pure: no Store, no configuration, no token. What depends on them (a
//! known kind, an open incident, the caller's rights) is `authorise`'s.

use std::collections::HashSet;

use bus::model::{Caller, Command, Location, ReportedStatus};

use crate::error::ApiError;

const MAX_ID: usize = 128;
/// Free text: notes, reasons, dispositions, an incident's text. Below
/// ingest's `max_text_chars` (4000), so a created report is never cut.
const MAX_TEXT: usize = 2000;
/// A category code is an id-like word from the configuration.
const MAX_KIND: usize = 64;
/// As ingest's default `max_address_chars`.
const MAX_ADDRESS: usize = 500;
/// As ingest's bounds for a caller.
const MAX_PHONE: usize = 32;
const MAX_NAME: usize = 128;
/// A split names events of one incident; more than this is a mistake.
const MAX_SPLIT_EVENTS: usize = 1000;

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
        return Err(ApiError::bad_field(
            field,
            format!("is too long (at most {MAX_TEXT} characters)"),
        ));
    }
    Ok(())
}

fn optional_text(field: &str, value: &Option<String>) -> Result<(), ApiError> {
    match value {
        Some(v) => text_field(field, v, false),
        None => Ok(()),
    }
}

/// A reason a person reads later: present and not blank.
fn reason_field(value: Option<&str>, why: &str) -> Result<(), ApiError> {
    match value {
        Some(v) => text_field("reason", v, true),
        None => Err(ApiError::bad_field("reason", format!("is required {why}"))),
    }
}

fn kind_field(value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.len() > MAX_KIND {
        return Err(ApiError::bad_field("kind", "must be 1 to 64 characters"));
    }
    Ok(())
}

/// `prefix` is `""` for the top-level `lat`/`lon` of a unit's report and
/// `"location."` inside a location object.
fn position(prefix: &str, lat: f64, lon: f64) -> Result<(), ApiError> {
    if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
        return Err(ApiError::bad_field(&format!("{prefix}lat"), "must be in [-90, 90]"));
    }
    if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
        return Err(ApiError::bad_field(&format!("{prefix}lon"), "must be in [-180, 180]"));
    }
    Ok(())
}

fn location(location: &Location) -> Result<(), ApiError> {
    position("location.", location.lat, location.lon)?;
    if let Some(address) = &location.address
        && address.chars().count() > MAX_ADDRESS
    {
        return Err(ApiError::bad_field(
            "location.address",
            format!("is too long (at most {MAX_ADDRESS} characters)"),
        ));
    }
    Ok(())
}

fn caller(caller: &Caller) -> Result<(), ApiError> {
    if let Some(phone) = &caller.phone
        && phone.chars().count() > MAX_PHONE
    {
        return Err(ApiError::bad_field(
            "caller.phone",
            format!("is too long (at most {MAX_PHONE} characters)"),
        ));
    }
    if let Some(name) = &caller.name
        && name.chars().count() > MAX_NAME
    {
        return Err(ApiError::bad_field(
            "caller.name",
            format!("is too long (at most {MAX_NAME} characters)"),
        ));
    }
    Ok(())
}

/// Checks one parsed command; see the module doc.
pub(super) fn validate(command: &Command) -> Result<(), ApiError> {
    match command {
        Command::Ack { task } => id_field("task", task),
        Command::Status {
            status,
            task,
            lat,
            lon,
            note,
            reason,
            ..
        } => {
            if let Some(task) = task {
                id_field("task", task)?;
            }
            match (lat, lon) {
                (Some(lat), Some(lon)) => position("", *lat, *lon)?,
                (None, None) => {}
                (Some(_), None) => return Err(ApiError::bad_field("lon", "is required with lat")),
                (None, Some(_)) => return Err(ApiError::bad_field("lat", "is required with lon")),
            }
            optional_text("note", note)?;
            // Dispatch skips an out-of-service unit until it reports again:
            // the board must say why.
            if *status == ReportedStatus::OutOfService {
                reason_field(reason.as_deref(), "for out_of_service")?;
            }
            optional_text("reason", reason)
        }
        Command::Position { lat, lon } => position("", *lat, *lon),
        Command::Assign { incident, unit, .. } => {
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
            optional_text("note", note)
        }
        Command::Close {
            incident, disposition, ..
        } => {
            id_field("incident", incident)?;
            text_field("disposition", disposition, true)
        }
        Command::Update {
            incident,
            priority,
            kind,
            text,
            location: place,
            reason,
        } => {
            id_field("incident", incident)?;
            if priority.is_none() && kind.is_none() && text.is_none() && place.is_none() {
                return Err(ApiError::bad_field(
                    "priority",
                    "at least one of priority, kind, text or location is required",
                ));
            }
            if let Some(p) = priority {
                if !(1..=4).contains(p) {
                    return Err(ApiError::bad_field("priority", "must be 1 to 4"));
                }
                // A priority changes the deadlines and who is sent: the
                // timeline must say why.
                reason_field(reason.as_deref(), "to change the priority")?;
            }
            if let Some(kind) = kind {
                kind_field(kind)?;
            }
            if let Some(text) = text {
                text_field("text", text, true)?;
            }
            if let Some(place) = place {
                location(place)?;
            }
            optional_text("reason", reason)
        }
        Command::Note { incident, task, text } => {
            if incident.is_some() && task.is_some() {
                return Err(ApiError::bad_field("task", "give incident or task, not both"));
            }
            if let Some(incident) = incident {
                id_field("incident", incident)?;
            }
            if let Some(task) = task {
                id_field("task", task)?;
            }
            // Neither is allowed here: a unit's note is about its current
            // task. For an operator, `authorise` asks for one.
            text_field("text", text, true)
        }
        Command::Reopen { incident, reason } => {
            id_field("incident", incident)?;
            reason_field(Some(reason), "to reopen")
        }
        Command::Merge { incident, from } => {
            id_field("incident", incident)?;
            id_field("from", from)?;
            if incident == from {
                return Err(ApiError::bad_field("from", "must be another incident than incident"));
            }
            Ok(())
        }
        Command::Split {
            incident,
            events,
            reason,
        } => {
            id_field("incident", incident)?;
            if events.is_empty() {
                return Err(ApiError::bad_field("events", "must name at least one event"));
            }
            if events.len() > MAX_SPLIT_EVENTS {
                return Err(ApiError::bad_field("events", format!("at most {MAX_SPLIT_EVENTS}")));
            }
            let mut seen = HashSet::new();
            for (i, event) in events.iter().enumerate() {
                id_field(&format!("events[{i}]"), event)?;
                if !seen.insert(event.as_str()) {
                    return Err(ApiError::bad_field(
                        &format!("events[{i}]"),
                        format!("{event} is named twice"),
                    ));
                }
            }
            optional_text("reason", reason)
        }
        Command::Hold { incident, reason, .. } => {
            id_field("incident", incident)?;
            optional_text("reason", reason)
        }
        Command::Refuse { task, reason } => {
            id_field("task", task)?;
            reason_field(Some(reason), "to refuse a task")
        }
        Command::Create {
            kind,
            text,
            location: place,
            caller: who,
        } => {
            kind_field(kind)?;
            text_field("text", text, true)?;
            if let Some(place) = place {
                location(place)?;
            }
            if let Some(who) = who {
                caller(who)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::parse;

    /// The message of the error `command` is refused with.
    fn refused(command: Value) -> String {
        parse(command.clone())
            .map(|c| panic!("{command} was accepted as {c:?}"))
            .unwrap_err()
            .to_string()
    }

    fn names(command: Value, field: &str) {
        let message = refused(command.clone());
        assert!(
            message.starts_with(&format!("{field}:")),
            "{command}: want the message to name {field}, got {message}"
        );
    }

    #[test]
    fn bad_fields_are_named() {
        names(json!({"op": "position", "lat": "x", "lon": 1.0}), "lat");
        names(json!({"op": "position", "lat": 91.0, "lon": 1.0}), "lat");
        names(
            json!({"op": "close", "incident": "i", "disposition": " "}),
            "disposition",
        );
        names(json!({"op": "escalate", "incident": "i"}), "desk");
        assert!(refused(json!({"op": "ack"})).contains("task"));
        names(json!({"op": "status", "status": "available", "lat": 36.6}), "lon");
        assert!(parse(json!({"op": "status", "status": "available", "lat": 36.6, "lon": 117.0})).is_ok());
    }

    #[test]
    fn update_needs_a_change_a_priority_in_range_and_a_reason_for_it() {
        names(json!({"op": "update", "incident": "i"}), "priority");
        names(
            json!({"op": "update", "incident": "i", "priority": 5, "reason": "r"}),
            "priority",
        );
        names(
            json!({"op": "update", "incident": "i", "priority": 0, "reason": "r"}),
            "priority",
        );
        names(json!({"op": "update", "incident": "i", "priority": 1}), "reason");
        names(
            json!({"op": "update", "incident": "i", "priority": 1, "reason": "  "}),
            "reason",
        );
        names(json!({"op": "update", "incident": "i", "kind": ""}), "kind");
        names(json!({"op": "update", "incident": "i", "kind": "k".repeat(65)}), "kind");
        names(json!({"op": "update", "incident": "i", "text": ""}), "text");
        names(
            json!({"op": "update", "incident": "i", "text": "x".repeat(2001)}),
            "text",
        );
        names(
            json!({"op": "update", "incident": "i", "location": {"lat": 36.6, "lon": 181.0}}),
            "location.lon",
        );
        names(
            json!({"op": "update", "incident": "i", "location": {"lat": -91.0, "lon": 1.0}}),
            "location.lat",
        );
        names(json!({"op": "update", "incident": "", "text": "x"}), "incident");
        assert!(parse(json!({"op": "update", "incident": "i", "priority": 1, "reason": "weapon seen"})).is_ok());
        assert!(parse(json!({"op": "update", "incident": "i", "location": {"lat": 36.6, "lon": 117.0}})).is_ok());
    }

    #[test]
    fn note_needs_text_and_at_most_one_subject() {
        names(json!({"op": "note", "incident": "i", "text": " "}), "text");
        names(json!({"op": "note", "incident": "i"}), "text");
        names(json!({"op": "note", "incident": "i", "task": "t", "text": "x"}), "task");
        // A unit's note about its current task names neither.
        assert!(parse(json!({"op": "note", "text": "caller not at the address"})).is_ok());
    }

    #[test]
    fn reopen_refuse_and_out_of_service_need_a_reason() {
        names(json!({"op": "reopen", "incident": "i", "reason": ""}), "reason");
        names(json!({"op": "reopen", "incident": "i"}), "reason");
        names(json!({"op": "refuse", "task": "t", "reason": " "}), "reason");
        names(json!({"op": "refuse", "task": "t"}), "reason");
        names(json!({"op": "status", "status": "out_of_service"}), "reason");
        assert!(parse(json!({"op": "status", "status": "out_of_service", "reason": "flat tyre"})).is_ok());
        assert!(parse(json!({"op": "refuse", "task": "t", "reason": "already on a robbery"})).is_ok());
    }

    #[test]
    fn merge_and_split_name_what_is_wrong() {
        names(json!({"op": "merge", "incident": "a", "from": "a"}), "from");
        names(json!({"op": "merge", "incident": "a"}), "from");
        names(json!({"op": "split", "incident": "a", "events": []}), "events");
        names(
            json!({"op": "split", "incident": "a", "events": ["e1", ""]}),
            "events[1]",
        );
        names(
            json!({"op": "split", "incident": "a", "events": ["e1", "e2", "e1"]}),
            "events[2]",
        );
        names(json!({"op": "split", "incident": "a", "events": "e1"}), "events");
        assert!(parse(json!({"op": "merge", "incident": "a", "from": "b"})).is_ok());
        assert!(parse(json!({"op": "split", "incident": "a", "events": ["e1"]})).is_ok());
    }

    #[test]
    fn create_needs_kind_and_text_and_a_location_in_range() {
        names(json!({"op": "create", "text": "walk-in"}), "kind");
        names(json!({"op": "create", "kind": "theft"}), "text");
        names(json!({"op": "create", "kind": "theft", "text": " "}), "text");
        names(
            json!({"op": "create", "kind": "theft", "text": "x", "location": {"lat": 100.0, "lon": 1.0}}),
            "location.lat",
        );
        names(
            json!({"op": "create", "kind": "theft", "text": "x", "caller": {"phone": "1".repeat(33)}}),
            "caller.phone",
        );
        assert!(parse(json!({"op": "create", "kind": "theft", "text": "bike taken"})).is_ok());
    }

    #[test]
    fn assign_takes_mode_and_preempt() {
        names(
            json!({"op": "assign", "incident": "i", "unit": "u", "mode": "swap"}),
            "mode",
        );
        names(
            json!({"op": "assign", "incident": "i", "unit": "u", "preempt": "yes"}),
            "preempt",
        );
        assert!(parse(json!({"op": "assign", "incident": "i", "unit": "u", "mode": "add", "preempt": true})).is_ok());
    }
}
