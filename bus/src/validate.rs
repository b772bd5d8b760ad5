//! Validation and normalisation of input events, the one way every channel
//! (HTTP, CAP, MQTT, Kafka-native) turns untrusted JSON into an [`Event`].
//!
//! Validation reports every problem at once, each with its field path, so a
//! source system can fix its message in one go. It never refuses a call for
//! its category (有警必接): an unknown or missing `kind` becomes `unknown`.
//! Nothing here does IO.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::config::Config;
use crate::geo::CityMap;
use crate::model::{Caller, Event, FieldError, Flag, InputEvent, Location, SensorInfo, Source, add_flag, new_id};

/// The limits and vocabulary validation checks against, from configuration.
#[derive(Debug, Clone)]
pub struct InputRules {
    pub kinds: HashSet<String>,
    pub max_source_id_chars: usize,
    pub max_text_chars: usize,
    pub max_address_chars: usize,
    pub max_attrs_bytes: usize,
    pub max_future_skew_s: i64,
}

impl InputRules {
    pub fn new(config: &Config) -> InputRules {
        InputRules {
            kinds: config.categories.iter().map(|c| c.code.clone()).collect(),
            max_source_id_chars: config.ingest.max_source_id_chars,
            max_text_chars: config.ingest.max_text_chars,
            max_address_chars: config.ingest.max_address_chars,
            max_attrs_bytes: config.ingest.max_attrs_bytes,
            max_future_skew_s: config.ingest.max_future_skew_s,
        }
    }
}

/// Short names and bounds for fields that are not configurable.
const MAX_PHONE_CHARS: usize = 32;
const MAX_SHORT_CHARS: usize = 128;
const UNKNOWN_KIND: &str = "unknown";
const KNOWN_FIELDS: [&str; 9] = [
    "source",
    "source_id",
    "kind",
    "occurred_at",
    "location",
    "text",
    "caller",
    "sensor",
    "attrs",
];

/// A malformed value is kept on the event (in `attrs.malformed`) only up
/// to this size of JSON; the dead letter has it whole.
const MAX_MALFORMED_KEPT_BYTES: usize = 1024;

/// How a content problem is met: refused with an error (sensors, alerts,
/// an item whose source is unknown), or, for a call or report, corrected
/// and flagged (有警必接、接案必登).
struct Checker {
    /// Correct and flag rather than refuse.
    lenient: bool,
    errors: Vec<FieldError>,
    flags: Vec<Flag>,
    /// Values of the wrong type, by field path, kept for a person to read.
    malformed: Map<String, Value>,
}

impl Checker {
    fn refuse(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(path, message));
    }

    fn flag(&mut self, flag: Flag) {
        add_flag(&mut self.flags, flag);
    }

    /// A value of the wrong type: refused, or dropped and kept aside.
    fn wrong_type(&mut self, path: &str, value: &Value, expected: &str) {
        if !self.lenient {
            self.refuse(path, format!("must be {expected}, not {}", type_name(value)));
            return;
        }
        self.flag(Flag::Malformed);
        let size = serde_json::to_string(value).map_or(usize::MAX, |s| s.len());
        let kept = if size <= MAX_MALFORMED_KEPT_BYTES {
            value.clone()
        } else {
            Value::String(format!(
                "{} of {size} bytes, kept on the dead-letter topic",
                type_name(value)
            ))
        };
        self.malformed.insert(path.to_owned(), kept);
    }

    /// A string over `max` characters: refused, or cut to `max`.
    fn bounded(&mut self, path: &str, s: &str, max: usize) -> Option<String> {
        let n = s.chars().count();
        if n <= max {
            return Some(s.to_owned());
        }
        if self.lenient {
            self.flag(Flag::Truncated);
            return Some(cut_chars(s, max).to_owned());
        }
        self.refuse(path, format!("{n} characters; at most {max}"));
        None
    }
}

/// Checks one input event. `default_source` fills a missing `source`
/// (MQTT sensors); `now` bounds `occurred_at`.
///
/// A `call110` or `report` is never refused for its content: each problem
/// is corrected and recorded in the event's `flags` (see [`Flag`]). It is
/// refused only when it cannot be an event at all: not an object, no
/// `source_id`, or a `source_id` over its limit (it is the idempotency key:
/// cut, it would merge two calls). Sensors and alerts are refused for any
/// problem, each reported with its field path.
pub fn validate_input(
    value: &Value,
    rules: &InputRules,
    default_source: Option<Source>,
    now: DateTime<Utc>,
) -> Result<InputEvent, Vec<FieldError>> {
    let Some(obj) = value.as_object() else {
        return Err(vec![FieldError::new(
            "",
            format!("must be a JSON object, not {}", type_name(value)),
        )]);
    };
    let mut errors = Vec::new();

    let source = match obj.get("source") {
        None | Some(Value::Null) => match default_source {
            Some(s) => Some(s),
            None => {
                errors.push(FieldError::new(
                    "source",
                    "required: one of call110, sensor, alert, report",
                ));
                None
            }
        },
        Some(Value::String(s)) => match Source::parse(s) {
            Some(s) => Some(s),
            None => {
                errors.push(FieldError::new(
                    "source",
                    format!("'{}' is not one of call110, sensor, alert, report", truncate(s)),
                ));
                None
            }
        },
        Some(other) => {
            errors.push(FieldError::new(
                "source",
                format!("must be a string, not {}", type_name(other)),
            ));
            None
        }
    };
    let mut c = Checker {
        lenient: matches!(source, Some(Source::Call110 | Source::Report)),
        errors,
        flags: Vec::new(),
        malformed: Map::new(),
    };

    let source_id = source_id(obj, rules.max_source_id_chars, c.lenient, &mut c.errors);

    let mut attrs = match obj.get("attrs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => {
            let size = serde_json::to_string(map).map(|s| s.len()).unwrap_or(usize::MAX);
            if size <= rules.max_attrs_bytes {
                map.clone()
            } else if c.lenient {
                c.flag(Flag::Truncated);
                cut_attrs(map, rules.max_attrs_bytes)
            } else {
                c.refuse(
                    "attrs",
                    format!("{size} bytes of JSON, more than the limit of {}", rules.max_attrs_bytes),
                );
                map.clone()
            }
        }
        Some(other) => {
            c.wrong_type("attrs", other, "an object");
            Map::new()
        }
    };

    // 有警必接: the category never makes us refuse an event.
    let kind = match obj.get("kind") {
        Some(Value::String(k)) if rules.kinds.contains(k.as_str()) => k.clone(),
        None | Some(Value::Null) => UNKNOWN_KIND.to_owned(),
        Some(Value::String(k)) => {
            attrs.insert("original_kind".into(), Value::String(truncate(k).to_owned()));
            UNKNOWN_KIND.to_owned()
        }
        Some(other) => {
            attrs.insert("original_kind".into(), other.clone());
            UNKNOWN_KIND.to_owned()
        }
    };

    let occurred_at = match obj.get("occurred_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => {
                let t = t.with_timezone(&Utc);
                let ahead = (t - now).num_seconds();
                if ahead <= rules.max_future_skew_s {
                    Some(t)
                } else if c.lenient {
                    // A call-taking PC with a fast clock must not lose its
                    // calls: the receive time stands, the sent one is kept.
                    c.flag(Flag::ClockSkew);
                    attrs.insert("sent_occurred_at".into(), Value::String(truncate(s).to_owned()));
                    Some(now)
                } else {
                    c.refuse(
                        "occurred_at",
                        format!(
                            "{ahead} s in the future; at most {} s is allowed",
                            rules.max_future_skew_s
                        ),
                    );
                    Some(t)
                }
            }
            Err(e) => {
                if c.lenient {
                    c.wrong_type("occurred_at", &Value::String(s.clone()), "an RFC 3339 string");
                } else {
                    c.refuse("occurred_at", format!("'{}' is not an RFC 3339 time: {e}", truncate(s)));
                }
                None
            }
        },
        Some(other) => {
            c.wrong_type("occurred_at", other, "an RFC 3339 string");
            None
        }
    };

    let location = match obj.get("location") {
        None | Some(Value::Null) => {
            if c.lenient {
                c.flag(Flag::Unlocated);
            } else if source == Some(Source::Sensor) {
                c.refuse("location", "required for source sensor");
            }
            None
        }
        Some(Value::Object(loc)) => validate_location(loc, rules, &mut c, &mut attrs),
        Some(other) => {
            c.wrong_type("location", other, "an object");
            if c.lenient {
                c.flag(Flag::Unlocated);
            }
            None
        }
    };

    let text = optional_string(obj, "text", "text", rules.max_text_chars, &mut c);

    let caller = match obj.get("caller") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(Caller {
            phone: optional_string(o, "phone", "caller.phone", MAX_PHONE_CHARS, &mut c),
            name: optional_string(o, "name", "caller.name", MAX_SHORT_CHARS, &mut c),
        }),
        Some(other) => {
            c.wrong_type("caller", other, "an object");
            None
        }
    };

    let sensor = match obj.get("sensor") {
        None | Some(Value::Null) => None,
        Some(Value::Object(s)) => {
            let confidence = match s.get("confidence") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => match n.as_f64() {
                    Some(v) if (0.0..=1.0).contains(&v) => Some(v),
                    _ if c.lenient => {
                        c.wrong_type("sensor.confidence", &Value::Number(n.clone()), "a number in [0, 1]");
                        None
                    }
                    _ => {
                        c.refuse("sensor.confidence", format!("{n} is not in [0, 1]"));
                        None
                    }
                },
                Some(other) => {
                    c.wrong_type("sensor.confidence", other, "a number");
                    None
                }
            };
            Some(SensorInfo {
                device_id: optional_string(s, "device_id", "sensor.device_id", MAX_SHORT_CHARS, &mut c),
                sensor_type: optional_string(s, "type", "sensor.type", MAX_SHORT_CHARS, &mut c),
                confidence,
            })
        }
        Some(other) => {
            c.wrong_type("sensor", other, "an object");
            None
        }
    };

    // Fields we do not know are kept, not refused: a call-taking system
    // that sends more than we expect must not lose a call.
    for (name, v) in obj {
        if !KNOWN_FIELDS.contains(&name.as_str()) && !attrs.contains_key(name) {
            attrs.insert(name.clone(), v.clone());
        }
    }

    let Checker {
        errors,
        mut flags,
        malformed,
        ..
    } = c;
    if !errors.is_empty() {
        return Err(errors);
    }
    if !malformed.is_empty() {
        attrs.insert("malformed".into(), Value::Object(malformed));
    }
    // Bad coordinates leave the call without a place.
    if flags.contains(&Flag::BadCoordinates) {
        add_flag(&mut flags, Flag::Unlocated);
    }
    match (source, source_id) {
        (Some(source), Some(source_id)) => Ok(InputEvent {
            source,
            source_id,
            kind,
            occurred_at,
            location,
            text,
            caller,
            sensor,
            attrs,
            flags,
        }),
        // Both push an error when missing, so this is unreachable; say so
        // rather than panic.
        _ => Err(vec![FieldError::new("source", "missing")]),
    }
}

/// The idempotency key's second half: never corrected, since a cut or
/// made-up id could merge two calls or split one. A call's numeric id is
/// taken as its decimal text (deterministic, so a retry keeps its key).
fn source_id(obj: &Map<String, Value>, max: usize, lenient: bool, errors: &mut Vec<FieldError>) -> Option<String> {
    let id = match obj.get("source_id") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("source_id", "required"));
            return None;
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if lenient && (n.is_u64() || n.is_i64()) => n.to_string(),
        Some(other) => {
            errors.push(FieldError::new(
                "source_id",
                format!("must be a string, not {}", type_name(other)),
            ));
            return None;
        }
    };
    let n = id.chars().count();
    if n == 0 || n > max {
        errors.push(FieldError::new(
            "source_id",
            format!("{n} characters; must be 1 to {max}"),
        ));
        return None;
    }
    Some(id)
}

fn validate_location(
    loc: &Map<String, Value>,
    rules: &InputRules,
    c: &mut Checker,
    attrs: &mut Map<String, Value>,
) -> Option<Location> {
    let address = optional_string(loc, "address", "location.address", rules.max_address_chars, c);
    let sent = |name: &str| !matches!(loc.get(name), None | Some(Value::Null));
    if c.lenient && !sent("lat") && !sent("lon") {
        // An address alone (a landline, a call-taker without positioning):
        // kept for the person who places the call, and the geocoder later.
        c.flag(Flag::Unlocated);
        if let Some(address) = address {
            attrs.insert("address".into(), Value::String(address));
        }
        return None;
    }
    let lat = coordinate(loc, "lat", 90.0, c);
    let lon = coordinate(loc, "lon", 180.0, c);
    match (lat, lon) {
        (Some(lat), Some(lon)) => Some(Location { lat, lon, address }),
        _ => {
            if c.lenient {
                c.flag(Flag::BadCoordinates);
                if let Some(address) = address {
                    attrs.insert("address".into(), Value::String(address));
                }
            }
            None
        }
    }
}

/// One coordinate within ±`bound`. For a call a bad one is not refused;
/// the caller flags the pair (`bad_coordinates`).
fn coordinate(loc: &Map<String, Value>, name: &str, bound: f64, c: &mut Checker) -> Option<f64> {
    let path = format!("location.{name}");
    match loc.get(name) {
        None | Some(Value::Null) => {
            if !c.lenient {
                c.refuse(path, "required");
            }
            None
        }
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() && (-bound..=bound).contains(&v) => Some(v),
            _ => {
                if !c.lenient {
                    c.refuse(path, format!("{n} is not in [-{bound}, {bound}]"));
                }
                None
            }
        },
        Some(other) => {
            if !c.lenient {
                c.refuse(path, format!("must be a number, not {}", type_name(other)));
            }
            None
        }
    }
}

/// An optional string field `name` of `obj`, reported as `path`. A call's
/// number is taken as its decimal text (a phone number sent as a number is
/// still the number to call back).
fn optional_string(obj: &Map<String, Value>, name: &str, path: &str, max: usize, c: &mut Checker) -> Option<String> {
    match obj.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => c.bounded(path, s, max),
        Some(Value::Number(n)) if c.lenient => c.bounded(path, &n.to_string(), max),
        Some(other) => {
            c.wrong_type(path, other, "a string");
            None
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Echoing a client's value in an error is useful; echoing a megabyte is
/// not.
fn truncate(s: &str) -> &str {
    cut_chars(s, 64)
}

/// The first `max` characters of `s` (never splitting a character).
fn cut_chars(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The entries of `map`, in order, while their JSON fits in `max` bytes;
/// an entry that does not fit is left out, a smaller later one may be kept.
fn cut_attrs(map: &Map<String, Value>, max: usize) -> Map<String, Value> {
    let mut kept = Map::new();
    // `{}` plus, per entry, `"key":value` and a comma.
    let mut size: usize = 2;
    for (k, v) in map {
        let entry = serde_json::to_string(k).map_or(usize::MAX, |s| s.len())
            + 1
            + serde_json::to_string(v).map_or(usize::MAX, |s| s.len())
            + usize::from(!kept.is_empty());
        if size.saturating_add(entry) <= max {
            size += entry;
            kept.insert(k.clone(), v.clone());
        }
    }
    kept
}

/// The attribute names only the CAP parser may set: they carry authority
/// (a CAP `Cancel` with `cap_references` closes an incident and recalls its
/// units; `cap_urgency`, `cap_severity` and `cap_certainty` raise a score).
pub const CAP_ATTR_PREFIX: &str = "cap_";

/// Takes the authority out of attributes a client sent on any channel but
/// CAP: every `cap_*` attribute moves under `attrs.client`, kept visible
/// but never read by the router. Returns whether any moved.
pub fn demote_cap_attrs(attrs: &mut Map<String, Value>) -> bool {
    let names: Vec<String> = attrs
        .keys()
        .filter(|k| k.starts_with(CAP_ATTR_PREFIX))
        .cloned()
        .collect();
    if names.is_empty() {
        return false;
    }
    let mut client = match attrs.remove("client") {
        Some(Value::Object(map)) => map,
        Some(other) => Map::from_iter([("client".to_owned(), other)]),
        None => Map::new(),
    };
    for name in names {
        if let Some(value) = attrs.remove(&name) {
            client.insert(name, value);
        }
    }
    attrs.insert("client".into(), Value::Object(client));
    true
}

/// Adds what ingest knows: an id, the receive time, the jurisdiction and
/// cell of the location (the fallback jurisdiction, marked in `attrs`, for a
/// point outside every station area or an alert without coordinates), and
/// `occurred_at` defaulting to the receive time.
///
/// A call or report without coordinates is not guessed at: it goes to the
/// city's fallback jurisdiction with no cell and says so with the
/// `unlocated` flag, so the router waits for a person to place it rather
/// than send a unit to the middle of the city.
pub fn normalise(mut input: InputEvent, city: &CityMap, received_at: DateTime<Utc>) -> Event {
    if input.occurred_at.is_none() {
        input.occurred_at = Some(received_at);
    }
    let unplaced_call = input.location.is_none() && matches!(input.source, Source::Call110 | Source::Report);
    let (jurisdiction, cell) = match &input.location {
        _ if unplaced_call => {
            add_flag(&mut input.flags, Flag::Unlocated);
            (city.fallback().to_owned(), None)
        }
        Some(loc) => placed(city.place(loc.lat, loc.lon), &mut input),
        None => {
            let area = input.attrs.get("area_desc").and_then(Value::as_str).unwrap_or_default();
            placed(city.place_by_name(area), &mut input)
        }
    };
    Event {
        id: new_id(),
        received_at,
        jurisdiction,
        cell,
        input,
    }
}

fn placed(placement: crate::geo::Placement, input: &mut InputEvent) -> (String, Option<String>) {
    if !placement.inside {
        input.attrs.insert("outside_jurisdictions".into(), Value::Bool(true));
    }
    (placement.jurisdiction, placement.cell)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> InputRules {
        InputRules::new(&Config::defaults())
    }

    fn check(v: Value) -> Result<InputEvent, Vec<FieldError>> {
        validate_input(&v, &rules(), None, Utc::now())
    }

    fn fields(v: Value) -> Vec<String> {
        check(v).unwrap_err().into_iter().map(|e| e.field).collect()
    }

    fn call() -> Value {
        json!({
            "source": "call110",
            "source_id": "110-20261122-000123",
            "kind": "robbery",
            "occurred_at": "2026-11-22T14:00:00+08:00",
            "location": {"lat": 36.6683, "lon": 117.0204, "address": "历下区泉城路1号"},
            "text": "两名男子持刀抢劫路人",
            "caller": {"phone": "13800000000"},
            "sensor": {"device_id": "cam-0231", "type": "video", "confidence": 0.93},
            "attrs": {}
        })
    }

    #[test]
    fn the_contract_example_is_valid() {
        let e = check(call()).unwrap();
        assert_eq!(e.source, Source::Call110);
        assert_eq!(e.kind, "robbery");
        assert_eq!(e.occurred_at.unwrap().to_rfc3339(), "2026-11-22T06:00:00+00:00");
        assert_eq!(e.sensor.unwrap().confidence, Some(0.93));
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let got = fields(json!({
            "source": "fax",
            "source_id": "",
            "location": {"lat": 91, "lon": "east"},
            "occurred_at": "yesterday",
            "text": 5,
            "sensor": {"confidence": 1.5},
            "caller": {"phone": 13800000000u64}
        }));
        for f in [
            "source",
            "source_id",
            "location.lat",
            "location.lon",
            "occurred_at",
            "text",
            "sensor.confidence",
            "caller.phone",
        ] {
            assert!(got.contains(&f.to_string()), "{f} missing from {got:?}");
        }
    }

    #[test]
    fn an_unknown_kind_is_accepted_as_unknown_with_the_original_kept() {
        let mut v = call();
        v["kind"] = json!("alien_landing");
        let e = check(v).unwrap();
        assert_eq!(e.kind, "unknown");
        assert_eq!(e.attrs["original_kind"], "alien_landing");

        let mut v = call();
        v.as_object_mut().unwrap().remove("kind");
        assert_eq!(check(v).unwrap().kind, "unknown");
    }

    /// A sensor alarm, which keeps the strict validation.
    fn alarm() -> Value {
        json!({
            "source": "sensor",
            "source_id": "cam-0231-77",
            "kind": "video_alarm",
            "location": {"lat": 36.6683, "lon": 117.0204},
            "sensor": {"device_id": "cam-0231", "type": "video", "confidence": 0.93}
        })
    }

    // Was `location_is_required_for_calls_and_sensors_only`: since issue
    // #20 a call without a location is accepted and flagged `unlocated`.
    #[test]
    fn location_is_required_for_sensors_only() {
        assert_eq!(fields(json!({"source": "sensor", "source_id": "x"})), vec!["location"]);
        assert!(
            check(json!({"source": "alert", "source_id": "x"}))
                .unwrap()
                .flags
                .is_empty()
        );
        for source in ["call110", "report"] {
            let e = check(json!({"source": source, "source_id": "x"})).unwrap();
            assert_eq!(e.flags, vec![Flag::Unlocated]);
            assert_eq!(e.location, None);
        }
    }

    // Was `occurred_at_may_not_be_far_in_the_future` on a call: a call is
    // now corrected (see the clock_skew test); a sensor is still refused.
    #[test]
    fn a_sensor_s_occurred_at_may_not_be_far_in_the_future() {
        let mut v = alarm();
        v["occurred_at"] = json!((Utc::now() + chrono::Duration::minutes(10)).to_rfc3339());
        assert_eq!(fields(v), vec!["occurred_at"]);
        let mut v = alarm();
        v["occurred_at"] = json!((Utc::now() + chrono::Duration::minutes(4)).to_rfc3339());
        assert!(check(v).is_ok());
    }

    // Was `lengths_are_bounded` on a call: a call's long text is now cut
    // and flagged (see the truncated test); its source_id is still refused,
    // and a sensor's long text too.
    #[test]
    fn lengths_are_bounded() {
        let mut v = call();
        v["source_id"] = json!("x".repeat(129));
        v["text"] = json!("字".repeat(4001));
        assert_eq!(fields(v), vec!["source_id"]);
        let mut v = alarm();
        v["text"] = json!("字".repeat(4001));
        v["location"]["address"] = json!("路".repeat(501));
        v["attrs"] = json!({"blob": "x".repeat(17 * 1024)});
        assert_eq!(fields(v), vec!["attrs", "location.address", "text"]);
        let mut v = call();
        v["source_id"] = json!("字".repeat(128));
        assert!(check(v).unwrap().flags.is_empty());
    }

    #[test]
    fn a_call_is_refused_only_when_it_cannot_be_an_event() {
        for (v, field) in [
            (json!({"source": "call110"}), "source_id"),
            (json!({"source": "call110", "source_id": ""}), "source_id"),
            (json!({"source": "call110", "source_id": "x".repeat(129)}), "source_id"),
            (json!({"source": "call110", "source_id": {"id": 1}}), "source_id"),
            (json!(["call110"]), ""),
        ] {
            assert_eq!(fields(v), vec![field]);
        }
        // A numeric id is its decimal text, the same on every retry.
        let e = check(json!({"source": "call110", "source_id": 110_000_123})).unwrap();
        assert_eq!(e.source_id, "110000123");
    }

    #[test]
    fn a_call_with_an_address_only_is_unlocated_and_keeps_the_address() {
        let mut v = call();
        v["location"] = json!({"address": "历下区泉城路1号"});
        let e = check(v).unwrap();
        assert_eq!(e.flags, vec![Flag::Unlocated]);
        assert_eq!(e.location, None);
        assert_eq!(e.attrs["address"], "历下区泉城路1号");
        assert_eq!(e.kind, "robbery");
    }

    #[test]
    fn a_call_with_impossible_coordinates_keeps_its_address_and_is_unlocated() {
        for loc in [
            json!({"lat": 91.0, "lon": 117.0, "address": "泉城路1号"}),
            json!({"lat": 36.6, "lon": 181.0, "address": "泉城路1号"}),
            json!({"lat": 36.6, "address": "泉城路1号"}),
            json!({"lat": "36.6", "lon": "117.0", "address": "泉城路1号"}),
        ] {
            let mut v = call();
            v["location"] = loc.clone();
            let e = check(v).unwrap();
            assert_eq!(e.flags, vec![Flag::BadCoordinates, Flag::Unlocated], "{loc}");
            assert_eq!(e.location, None);
            assert_eq!(e.attrs["address"], "泉城路1号");
        }
    }

    #[test]
    fn a_call_from_a_fast_clock_takes_the_receive_time_and_keeps_the_sent_one() {
        let now = Utc::now();
        let sent = (now + chrono::Duration::minutes(10)).to_rfc3339();
        let mut v = call();
        v["occurred_at"] = json!(sent);
        let e = validate_input(&v, &rules(), None, now).unwrap();
        assert_eq!(e.flags, vec![Flag::ClockSkew]);
        assert_eq!(e.occurred_at, Some(now));
        assert_eq!(e.attrs["sent_occurred_at"], sent.as_str());
    }

    #[test]
    fn a_call_s_oversize_fields_are_cut_on_a_character_boundary() {
        let mut v = call();
        v["text"] = json!("字".repeat(4001));
        v["location"]["address"] = json!("路".repeat(501));
        v["caller"] = json!({"phone": "1".repeat(40), "name": "名".repeat(200)});
        v["attrs"] = json!({"a": "x".repeat(10 * 1024), "b": "y".repeat(10 * 1024), "c": 1});
        let e = check(v).unwrap();
        assert_eq!(e.flags, vec![Flag::Truncated]);
        assert_eq!(e.text.as_deref(), Some("字".repeat(4000).as_str()));
        assert_eq!(e.location.unwrap().address, Some("路".repeat(500)));
        let caller = e.caller.unwrap();
        assert_eq!(caller.phone, Some("1".repeat(32)));
        assert_eq!(caller.name, Some("名".repeat(128)));
        // Entries are kept in order while they fit.
        assert!(e.attrs.contains_key("a") && !e.attrs.contains_key("b"));
        assert_eq!(e.attrs["c"], 1);
        assert!(serde_json::to_string(&e.attrs).unwrap().len() <= 16 * 1024);
    }

    // A field of the wrong type on a call is dropped from its place and
    // kept in `attrs.malformed` (small values) with the `malformed` flag:
    // refusing the call would lose it, guessing could mislead. A number
    // where a string belongs is lossless as its text, so it is taken.
    #[test]
    fn a_call_s_fields_of_the_wrong_type_are_dropped_kept_aside_and_flagged() {
        let mut v = call();
        v["text"] = json!({"said": "help"});
        v["occurred_at"] = json!("yesterday");
        v["caller"] = json!({"phone": 13_800_000_000u64, "name": ["x"]});
        v["sensor"] = json!({"confidence": 1.5});
        let e = check(v).unwrap();
        assert_eq!(e.flags, vec![Flag::Malformed]);
        assert_eq!(e.text, None);
        assert_eq!(e.occurred_at, None);
        assert_eq!(e.caller.as_ref().unwrap().phone.as_deref(), Some("13800000000"));
        let kept = &e.attrs["malformed"];
        assert_eq!(kept["text"], json!({"said": "help"}));
        assert_eq!(kept["occurred_at"], "yesterday");
        assert_eq!(kept["caller.name"], json!(["x"]));
        assert_eq!(kept["sensor.confidence"], 1.5);

        let mut v = call();
        v["location"] = json!("泉城路1号");
        v["attrs"] = json!("x".repeat(5000));
        let e = check(v).unwrap();
        assert_eq!(e.flags, vec![Flag::Malformed, Flag::Unlocated]);
        assert_eq!(e.attrs["malformed"]["location"], "泉城路1号");
        assert!(e.attrs["malformed"]["attrs"].as_str().unwrap().contains("dead-letter"));
    }

    #[test]
    fn flags_say_which_corrections_lose_content() {
        assert!(Flag::Truncated.loses_content() && Flag::Malformed.loses_content());
        assert!(Flag::BadCoordinates.loses_content());
        assert!(!Flag::Unlocated.loses_content() && !Flag::ClockSkew.loses_content());
    }

    #[test]
    fn a_missing_source_takes_the_channel_default() {
        let v = json!({"source_id": "cam-1-77", "kind": "video_alarm", "location": {"lat": 36.66, "lon": 117.02}});
        assert_eq!(fields(v.clone()), vec!["source"]);
        let e = validate_input(&v, &rules(), Some(Source::Sensor), Utc::now()).unwrap();
        assert_eq!(e.source, Source::Sensor);
    }

    #[test]
    fn unknown_top_level_fields_are_kept_in_attrs() {
        let mut v = call();
        v["priority_hint"] = json!("high");
        let e = check(v).unwrap();
        assert_eq!(e.attrs["priority_hint"], "high");
    }

    #[test]
    fn non_objects_are_refused() {
        for v in [json!([]), json!("call"), json!(1), json!(null)] {
            assert_eq!(fields(v), vec![""]);
        }
    }

    #[test]
    fn normalise_places_the_event_and_defaults_the_time() {
        let config = Config::defaults();
        let city = CityMap::new(&config);
        let mut input = check(call()).unwrap();
        input.occurred_at = None;
        let now = Utc::now();
        let e = normalise(input, &city, now);
        assert_eq!(e.jurisdiction, "quancheng");
        assert!(e.cell.is_some());
        assert_eq!(e.input.occurred_at, Some(now));
        assert!(!e.input.attrs.contains_key("outside_jurisdictions"));

        let far =
            check(json!({"source": "report", "source_id": "r1", "location": {"lat": 38.9, "lon": -77.0}})).unwrap();
        let e = normalise(far, &city, now);
        assert_eq!(e.jurisdiction, "shiju");
        assert_eq!(e.input.attrs["outside_jurisdictions"], true);
    }

    #[test]
    fn an_unlocated_call_goes_to_the_fallback_with_no_cell_and_says_so() {
        let config = Config::defaults();
        let city = CityMap::new(&config);
        let input =
            check(json!({"source": "call110", "source_id": "u1", "location": {"address": "泉城路1号"}})).unwrap();
        let e = normalise(input, &city, Utc::now());
        assert_eq!(e.jurisdiction, config.city.fallback_jurisdiction);
        assert_eq!(e.cell, None);
        assert_eq!(e.input.flags, vec![Flag::Unlocated]);
        // Not outside the city: nobody knows where it is.
        assert!(!e.input.attrs.contains_key("outside_jurisdictions"));
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["flags"], json!(["unlocated"]));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn arb_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
                any::<i64>().prop_map(|i| json!(i)),
                ".{0,40}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map(
                        prop_oneof![
                            Just("source".to_string()),
                            Just("source_id".to_string()),
                            Just("kind".to_string()),
                            Just("location".to_string()),
                            Just("lat".to_string()),
                            Just("lon".to_string()),
                            Just("occurred_at".to_string()),
                            Just("sensor".to_string()),
                            Just("confidence".to_string()),
                            ".{0,8}"
                        ],
                        inner,
                        0..8
                    )
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn validation_never_panics_on_arbitrary_json(v in arb_json()) {
                let r = rules();
                let _ = validate_input(&v, &r, None, Utc::now());
                let _ = validate_input(&v, &r, Some(Source::Sensor), Utc::now());
            }

            #[test]
            fn accepted_events_have_valid_coordinates(lat in -100.0f64..100.0, lon in -200.0f64..200.0) {
                let valid = (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon);
                let v = json!({"source": "sensor", "source_id": "p", "location": {"lat": lat, "lon": lon}});
                prop_assert_eq!(check(v).is_ok(), valid);
                // A call is always accepted; its location only when valid.
                let v = json!({"source": "call110", "source_id": "p", "location": {"lat": lat, "lon": lon}});
                let e = check(v).unwrap();
                prop_assert_eq!(e.location.is_some(), valid);
                prop_assert_eq!(e.flags.contains(&Flag::BadCoordinates), !valid);
            }

            #[test]
            fn a_call_is_accepted_whatever_its_content(v in arb_json()) {
                let mut v = v;
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("source".into(), json!("call110"));
                    obj.insert("source_id".into(), json!("p-1"));
                    prop_assert!(check(v).is_ok());
                }
            }
        }
    }

    #[test]
    fn cap_attributes_from_a_client_lose_their_authority() {
        let mut attrs =
            json!({"cap_msg_type": "Cancel", "cap_references": "x,a1,t", "cap_urgency": "Immediate", "floor": 3})
                .as_object()
                .unwrap()
                .clone();
        assert!(demote_cap_attrs(&mut attrs));
        assert!(attrs.keys().all(|k| !k.starts_with("cap_")), "{attrs:?}");
        assert_eq!(attrs["floor"], 3);
        assert_eq!(attrs["client"]["cap_msg_type"], "Cancel");
        assert_eq!(attrs["client"]["cap_urgency"], "Immediate");
        let mut plain = json!({"floor": 3}).as_object().unwrap().clone();
        assert!(!demote_cap_attrs(&mut plain));
        assert!(plain.get("client").is_none());
    }
}
