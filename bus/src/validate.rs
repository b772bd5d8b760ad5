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
use crate::model::{Caller, Event, FieldError, InputEvent, Location, SensorInfo, Source, new_id};

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

/// Checks one input event. `default_source` fills a missing `source`
/// (MQTT sensors); `now` bounds `occurred_at`.
pub fn validate_input(
    value: &Value,
    rules: &InputRules,
    default_source: Option<Source>,
    now: DateTime<Utc>,
) -> Result<InputEvent, Vec<FieldError>> {
    let mut errors = Vec::new();
    let Some(obj) = value.as_object() else {
        return Err(vec![FieldError::new(
            "",
            format!("must be a JSON object, not {}", type_name(value)),
        )]);
    };

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

    let source_id = required_string(obj, "source_id", 1, rules.max_source_id_chars, &mut errors);

    let mut attrs = match obj.get("attrs") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => {
            let size = serde_json::to_string(map).map(|s| s.len()).unwrap_or(usize::MAX);
            if size > rules.max_attrs_bytes {
                errors.push(FieldError::new(
                    "attrs",
                    format!("{size} bytes of JSON, more than the limit of {}", rules.max_attrs_bytes),
                ));
            }
            map.clone()
        }
        Some(other) => {
            errors.push(FieldError::new(
                "attrs",
                format!("must be an object, not {}", type_name(other)),
            ));
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
                if ahead > rules.max_future_skew_s {
                    errors.push(FieldError::new(
                        "occurred_at",
                        format!(
                            "{ahead} s in the future; at most {} s is allowed",
                            rules.max_future_skew_s
                        ),
                    ));
                }
                Some(t)
            }
            Err(e) => {
                errors.push(FieldError::new(
                    "occurred_at",
                    format!("'{}' is not an RFC 3339 time: {e}", truncate(s)),
                ));
                None
            }
        },
        Some(other) => {
            errors.push(FieldError::new(
                "occurred_at",
                format!("must be an RFC 3339 string, not {}", type_name(other)),
            ));
            None
        }
    };

    let location = match obj.get("location") {
        None | Some(Value::Null) => {
            if matches!(source, Some(Source::Call110 | Source::Sensor)) {
                errors.push(FieldError::new(
                    "location",
                    format!("required for source {}", source.map(Source::as_str).unwrap_or_default()),
                ));
            }
            None
        }
        Some(Value::Object(loc)) => validate_location(loc, rules, &mut errors),
        Some(other) => {
            errors.push(FieldError::new(
                "location",
                format!("must be an object, not {}", type_name(other)),
            ));
            None
        }
    };

    let text = optional_string(obj, "text", rules.max_text_chars, &mut errors);

    let caller = match obj.get("caller") {
        None | Some(Value::Null) => None,
        Some(Value::Object(c)) => Some(Caller {
            phone: optional_string_at(c, "phone", "caller.phone", MAX_PHONE_CHARS, &mut errors),
            name: optional_string_at(c, "name", "caller.name", MAX_SHORT_CHARS, &mut errors),
        }),
        Some(other) => {
            errors.push(FieldError::new(
                "caller",
                format!("must be an object, not {}", type_name(other)),
            ));
            None
        }
    };

    let sensor = match obj.get("sensor") {
        None | Some(Value::Null) => None,
        Some(Value::Object(s)) => {
            let confidence = match s.get("confidence") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => match n.as_f64() {
                    Some(c) if (0.0..=1.0).contains(&c) => Some(c),
                    _ => {
                        errors.push(FieldError::new("sensor.confidence", format!("{n} is not in [0, 1]")));
                        None
                    }
                },
                Some(other) => {
                    errors.push(FieldError::new(
                        "sensor.confidence",
                        format!("must be a number, not {}", type_name(other)),
                    ));
                    None
                }
            };
            Some(SensorInfo {
                device_id: optional_string_at(s, "device_id", "sensor.device_id", MAX_SHORT_CHARS, &mut errors),
                sensor_type: optional_string_at(s, "type", "sensor.type", MAX_SHORT_CHARS, &mut errors),
                confidence,
            })
        }
        Some(other) => {
            errors.push(FieldError::new(
                "sensor",
                format!("must be an object, not {}", type_name(other)),
            ));
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

    if !errors.is_empty() {
        return Err(errors);
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
        }),
        // Both push an error when missing, so this is unreachable; say so
        // rather than panic.
        _ => Err(vec![FieldError::new("source", "missing")]),
    }
}

fn validate_location(loc: &Map<String, Value>, rules: &InputRules, errors: &mut Vec<FieldError>) -> Option<Location> {
    let lat = coordinate(loc, "lat", 90.0, errors);
    let lon = coordinate(loc, "lon", 180.0, errors);
    let address = optional_string_at(loc, "address", "location.address", rules.max_address_chars, errors);
    Some(Location {
        lat: lat?,
        lon: lon?,
        address,
    })
}

fn coordinate(loc: &Map<String, Value>, name: &str, bound: f64, errors: &mut Vec<FieldError>) -> Option<f64> {
    let path = format!("location.{name}");
    match loc.get(name) {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(path, "required"));
            None
        }
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() && (-bound..=bound).contains(&v) => Some(v),
            _ => {
                errors.push(FieldError::new(path, format!("{n} is not in [-{bound}, {bound}]")));
                None
            }
        },
        Some(other) => {
            errors.push(FieldError::new(
                path,
                format!("must be a number, not {}", type_name(other)),
            ));
            None
        }
    }
}

fn required_string(
    obj: &Map<String, Value>,
    name: &str,
    min: usize,
    max: usize,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match obj.get(name) {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(name, "required"));
            None
        }
        Some(Value::String(s)) => {
            let n = s.chars().count();
            if n < min || n > max {
                errors.push(FieldError::new(name, format!("{n} characters; must be {min} to {max}")));
                None
            } else {
                Some(s.clone())
            }
        }
        Some(other) => {
            errors.push(FieldError::new(
                name,
                format!("must be a string, not {}", type_name(other)),
            ));
            None
        }
    }
}

fn optional_string(obj: &Map<String, Value>, name: &str, max: usize, errors: &mut Vec<FieldError>) -> Option<String> {
    optional_string_at(obj, name, name, max, errors)
}

fn optional_string_at(
    obj: &Map<String, Value>,
    name: &str,
    path: &str,
    max: usize,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match obj.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let n = s.chars().count();
            if n > max {
                errors.push(FieldError::new(path, format!("{n} characters; at most {max}")));
                None
            } else {
                Some(s.clone())
            }
        }
        Some(other) => {
            errors.push(FieldError::new(
                path,
                format!("must be a string, not {}", type_name(other)),
            ));
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
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Adds what ingest knows: an id, the receive time, the jurisdiction and
/// cell of the location (the fallback jurisdiction, marked in `attrs`, for a
/// point outside every station area or an event without coordinates), and
/// `occurred_at` defaulting to the receive time.
pub fn normalise(mut input: InputEvent, city: &CityMap, received_at: DateTime<Utc>) -> Event {
    if input.occurred_at.is_none() {
        input.occurred_at = Some(received_at);
    }
    let placement = match &input.location {
        Some(loc) => city.place(loc.lat, loc.lon),
        None => {
            let area = input.attrs.get("area_desc").and_then(Value::as_str).unwrap_or_default();
            city.place_by_name(area)
        }
    };
    if !placement.inside {
        input.attrs.insert("outside_jurisdictions".into(), Value::Bool(true));
    }
    Event {
        id: new_id(),
        received_at,
        jurisdiction: placement.jurisdiction,
        cell: placement.cell,
        input,
    }
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

    #[test]
    fn location_is_required_for_calls_and_sensors_only() {
        for source in ["call110", "sensor"] {
            let got = fields(json!({"source": source, "source_id": "x"}));
            assert_eq!(got, vec!["location"]);
        }
        for source in ["alert", "report"] {
            assert!(check(json!({"source": source, "source_id": "x"})).is_ok());
        }
    }

    #[test]
    fn occurred_at_may_not_be_far_in_the_future() {
        let mut v = call();
        v["occurred_at"] = json!((Utc::now() + chrono::Duration::minutes(10)).to_rfc3339());
        assert_eq!(fields(v), vec!["occurred_at"]);
        let mut v = call();
        v["occurred_at"] = json!((Utc::now() + chrono::Duration::minutes(4)).to_rfc3339());
        assert!(check(v).is_ok());
    }

    #[test]
    fn lengths_are_bounded() {
        let mut v = call();
        v["source_id"] = json!("x".repeat(129));
        v["text"] = json!("字".repeat(4001));
        assert_eq!(fields(v), vec!["source_id", "text"]);
        let mut v = call();
        v["source_id"] = json!("字".repeat(128));
        assert!(check(v).is_ok());
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
                let v = json!({"source": "call110", "source_id": "p", "location": {"lat": lat, "lon": lon}});
                let ok = check(v).is_ok();
                prop_assert_eq!(ok, (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon));
            }
        }
    }
}
