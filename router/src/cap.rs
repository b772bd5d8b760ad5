//! What a CAP alert becomes (OASIS CAP 1.2, §3.2.1), read from the `cap_*`
//! attributes only ingest's CAP parser sets. Pure: no IO.
//!
//! - `status` System or Draft: not for the public, not for the police —
//!   recorded on the events topic, no incident.
//! - `status` Exercise or Test: an incident flagged `exercise`, recorded
//!   and closed at once, never dispatched.
//! - `expires` already past when it arrived: an incident flagged
//!   `expired`, recorded and closed at once, never dispatched.
//! - `msgType` Ack or Error: a line on the referenced alert's incident,
//!   nothing new. Update and Cancel change the referenced incident
//!   (`events`).
//! - One `<info>` per language of one alert: one incident, each language's
//!   text on it (`Translation`).

use bus::model::{Event, Source};
use serde_json::Value;

/// What the router does with an alert's event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapHandling {
    /// Not a CAP alert, or an actual alert in force: as any event.
    Normal,
    /// System or Draft: no incident.
    NoIncident { status: String },
    /// Exercise or Test: recorded, never dispatched.
    Exercise { status: String },
    /// Expired before it arrived: recorded, not dispatched.
    Expired { expires: String },
}

fn attr<'e>(event: &'e Event, name: &str) -> Option<&'e str> {
    event.input.attrs.get(name).and_then(Value::as_str)
}

/// How to handle `event`.
pub fn handling(event: &Event) -> CapHandling {
    if event.input.source != Source::Alert || attr(event, "cap_identifier").is_none() {
        return CapHandling::Normal;
    }
    let status = attr(event, "cap_status").unwrap_or("Actual");
    match status.to_ascii_lowercase().as_str() {
        "system" | "draft" => {
            return CapHandling::NoIncident {
                status: status.to_owned(),
            };
        }
        "exercise" | "test" => {
            return CapHandling::Exercise {
                status: status.to_owned(),
            };
        }
        _ => {}
    }
    if let Some(expires) = attr(event, "cap_expires")
        && let Ok(at) = chrono::DateTime::parse_from_rfc3339(expires)
        && at.with_timezone(&chrono::Utc) < event.received_at
    {
        return CapHandling::Expired {
            expires: expires.to_owned(),
        };
    }
    CapHandling::Normal
}

/// The alert's message type, when it answers or changes an earlier alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Referring {
    Update,
    Cancel,
    /// Ack or Error: acknowledges or reports on an earlier alert.
    Response,
}

pub fn referring(event: &Event) -> Option<Referring> {
    if event.input.source != Source::Alert {
        return None;
    }
    match attr(event, "cap_msg_type")?.to_ascii_lowercase().as_str() {
        "update" => Some(Referring::Update),
        "cancel" => Some(Referring::Cancel),
        "ack" | "error" => Some(Referring::Response),
        _ => None,
    }
}

/// For one `<info>` of an alert with several: the alert's identifier and
/// the info's language, under which the router remembers the incident it
/// made, so the info in another language joins it as a translation.
pub fn language_key(event: &Event) -> Option<(String, String)> {
    let count = event.input.attrs.get("cap_info_count").and_then(Value::as_u64)?;
    if count < 2 {
        return None;
    }
    let identifier = attr(event, "cap_identifier")?.to_owned();
    let language = attr(event, "language").unwrap_or("en-US").to_owned();
    Some((identifier, language))
}

/// The capref key of an alert's incident in one language.
pub fn language_ref(identifier: &str, language: &str) -> String {
    format!("{identifier}@{language}")
}
