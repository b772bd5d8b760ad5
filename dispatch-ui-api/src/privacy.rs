//! Callers' contact details are for the people who call back and drive
//! there — operators on the board, the unit on its task — not for
//! analysts reading the raw topics (`topic:events`, `topic:incidents`):
//! there a phone keeps its first 3 and last 4 digits and a name its first
//! character, enough to tell callers apart, not to ring them.
//!
//! Pure; must never be applied to the board's or a unit's pushes, nor to
//! what an operator reads over REST.

use serde_json::Value;

use crate::channel::PushKind;

/// `13812345678` → `138****5678`; short numbers keep only their last two.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    let n = chars.len();
    if n >= 8 {
        let head: String = chars[..3].iter().collect();
        let tail: String = chars[n - 4..].iter().collect();
        format!("{head}{}{tail}", "*".repeat(n - 7))
    } else {
        let keep = n.min(2);
        format!(
            "{}{}",
            "*".repeat(n - keep),
            chars[n - keep..].iter().collect::<String>()
        )
    }
}

/// `王小明` → `王**`.
pub fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => format!("{first}{}", "*".repeat(chars.count())),
        None => String::new(),
    }
}

fn mask_caller(caller: &mut Value) -> bool {
    let mut masked = false;
    if let Some(phone) = caller.get_mut("phone")
        && let Some(text) = phone.as_str()
    {
        *phone = Value::String(mask_phone(text));
        masked = true;
    }
    if let Some(name) = caller.get_mut("name")
        && let Some(text) = name.as_str()
    {
        *name = Value::String(mask_name(text));
        masked = true;
    }
    masked
}

/// The incident as an analyst may read it over REST: callers masked.
pub fn for_analyst(incident: &mut bus::model::Incident) {
    for caller in &mut incident.callers {
        caller.phone = caller.phone.as_deref().map(mask_phone);
        caller.name = caller.name.as_deref().map(mask_name);
    }
}

/// The record's JSON with its callers masked, for a topic channel; `None`
/// when it names no caller (the record goes out as it is).
pub fn for_topics(kind: PushKind, data: &str) -> Option<String> {
    if !matches!(kind, PushKind::Event | PushKind::Incident)
        || !data.contains("\"phone\"") && !data.contains("\"name\"")
    {
        return None;
    }
    let mut value: Value = serde_json::from_str(data).ok()?;
    let mut masked = false;
    if let Some(caller) = value.get_mut("caller") {
        masked |= mask_caller(caller);
    }
    if let Some(Value::Array(callers)) = value.get_mut("callers") {
        for caller in callers {
            masked |= mask_caller(caller);
        }
    }
    masked.then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_and_names_are_masked() {
        assert_eq!(mask_phone("13812345678"), "138****5678");
        assert_eq!(mask_phone("110"), "*10");
        assert_eq!(mask_name("王小明"), "王**");
        let event = r#"{"id":"e1","caller":{"phone":"13812345678","name":"王小明"},"text":"x"}"#;
        let masked: Value = serde_json::from_str(&for_topics(PushKind::Event, event).unwrap()).unwrap();
        assert_eq!(masked["caller"]["phone"], "138****5678");
        assert_eq!(masked["caller"]["name"], "王**");
        assert_eq!(masked["text"], "x");
        let incident = r#"{"id":"i1","callers":[{"phone":"13812345678"},{"phone":"13900000000"}]}"#;
        let masked: Value = serde_json::from_str(&for_topics(PushKind::Incident, incident).unwrap()).unwrap();
        assert_eq!(masked["callers"][1]["phone"], "139****0000");
        assert!(for_topics(PushKind::Event, r#"{"id":"e2"}"#).is_none());
        assert!(for_topics(PushKind::Task, r#"{"caller":{"phone":"13812345678"}}"#).is_none());
    }
}
