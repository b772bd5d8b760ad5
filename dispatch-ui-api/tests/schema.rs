//! Every REST reply is described by the OpenAPI document the api serves,
//! and what it serves is exactly that. The JSON of every GET endpoint, of a
//! command's reply and of the errors is checked against the schema the
//! document names for it, by a small checker written here (no validator
//! crate): it follows `$ref` and checks `type` (with `null`), `required`,
//! `properties`, `items`, `enum`, `oneOf`/`anyOf`/`allOf`, `propertyNames`,
//! `minimum`/`maximum` and the `date-time` format. It is closed: a property
//! the schema does not name is an error unless `additionalProperties`
//! allows it, so a field added to a reply without its schema fails here.
//!
//! The seeded records set every optional field, and the tests check that
//! every property of the model's schemas was served at least once.

mod common;

use std::collections::BTreeSet;

use bus::model::{
    AssignMode, Caller, Command, Deadlines, Escalation, EscalationKind, Feedback, Flag, Incident, IncidentStatus,
    IncidentUnit, Location, Recommendation, ReportedStatus, Role, Sla, SlaState, Stage, Task, TaskKind, TaskStatus,
    TimelineEntry, UnitRole, UnitStatus, UnitType, new_id,
};
use chrono::{Duration, Utc};
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// The checker.

/// Checks JSON values against the schemas of an OpenAPI 3.1 document.
struct Checker<'d> {
    doc: &'d Value,
}

impl<'d> Checker<'d> {
    fn new(doc: &'d Value) -> Self {
        Checker { doc }
    }

    /// The named component schema, as a `$ref` to it.
    fn component(name: &str) -> Value {
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    /// Every problem of `value` against `schema`, each as `path: what`
    /// (the path from `$`, the value's root).
    fn check(&self, value: &Value, schema: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.visit(value, schema, "$", true, &mut errors);
        errors
    }

    /// Follows `$ref`s (the keywords beside a `$ref` are descriptions).
    fn resolve<'s>(&'s self, mut schema: &'s Value) -> Result<&'s Value, String> {
        for _ in 0..32 {
            let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
                return Ok(schema);
            };
            let pointer = reference
                .strip_prefix('#')
                .ok_or_else(|| format!("external $ref {reference}"))?;
            schema = self
                .doc
                .pointer(pointer)
                .ok_or_else(|| format!("unresolved $ref {reference}"))?;
        }
        Err("a $ref loop".into())
    }

    /// `closed`: properties the schema does not name are errors (false for
    /// the parts of an `allOf`, whose whole names them).
    fn visit(&self, value: &Value, schema: &Value, path: &str, closed: bool, errors: &mut Vec<String>) {
        let schema = match self.resolve(schema) {
            Ok(s) => s,
            Err(e) => return errors.push(format!("{path}: {e}")),
        };
        for part in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
            self.visit(value, part, path, false, errors);
        }
        for (keyword, exactly_one) in [("oneOf", true), ("anyOf", false)] {
            let Some(alternatives) = schema.get(keyword).and_then(Value::as_array) else {
                continue;
            };
            let results: Vec<Vec<String>> = alternatives
                .iter()
                .map(|alternative| {
                    let mut found = Vec::new();
                    self.visit(value, alternative, path, closed, &mut found);
                    found
                })
                .collect();
            let matched = results.iter().filter(|r| r.is_empty()).count();
            if matched == 0 {
                errors.push(format!("{path}: matches none of the {keyword} alternatives"));
                // The closest alternative says what is wrong: one of the
                // value's type first, then the one with the fewest errors.
                let wrong_type = format!("{path}: expected ");
                let closest = results
                    .into_iter()
                    .min_by_key(|r| (r.first().is_some_and(|e| e.starts_with(&wrong_type)), r.len()));
                errors.extend(closest.unwrap_or_default());
            } else if exactly_one && matched > 1 {
                errors.push(format!("{path}: matches {matched} of the oneOf alternatives"));
            }
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            errors.push(format!(
                "{path}: {value} is not one of {}",
                Value::from(allowed.clone())
            ));
        }
        let types = schema_types(schema);
        if !types.is_empty() {
            let nullable = schema.get("nullable") == Some(&Value::Bool(true));
            let fits = types.iter().any(|t| has_type(value, t)) || (nullable && value.is_null());
            if !fits {
                let want = types.join(" or ");
                return errors.push(format!("{path}: expected {want}, got {}", type_name(value)));
            }
        }
        match value {
            Value::Object(_) => self.visit_object(value, schema, path, closed, errors),
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter().enumerate() {
                        self.visit(item, item_schema, &format!("{path}[{i}]"), true, errors);
                    }
                }
            }
            Value::String(text) => {
                if schema.get("format").and_then(Value::as_str) == Some("date-time")
                    && chrono::DateTime::parse_from_rfc3339(text).is_err()
                {
                    errors.push(format!("{path}: {text:?} is not a date-time"));
                }
            }
            Value::Number(n) => {
                let n = n.as_f64().unwrap_or(f64::NAN);
                if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                    && n < min
                {
                    errors.push(format!("{path}: {n} is below the minimum {min}"));
                }
                if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                    && n > max
                {
                    errors.push(format!("{path}: {n} is above the maximum {max}"));
                }
            }
            Value::Bool(_) | Value::Null => {}
        }
    }

    fn visit_object(&self, value: &Value, schema: &Value, path: &str, closed: bool, errors: &mut Vec<String>) {
        let Some(map) = value.as_object() else { return };
        for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            if !map.contains_key(name) {
                errors.push(format!("{path}: missing required property `{name}`"));
            }
        }
        if let Some(names) = schema.get("propertyNames") {
            for key in map.keys() {
                self.visit(
                    &Value::String(key.clone()),
                    names,
                    &format!("{path}.{key} (name)"),
                    true,
                    errors,
                );
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        // Only a schema that describes an object closes it: `{}` or a bare
        // `oneOf` leave that to their parts.
        let describes_object = properties.is_some()
            || additional.is_some()
            || schema.get("allOf").is_some()
            || schema_types(schema).contains(&"object");
        for (key, item) in map {
            let at = format!("{path}.{key}");
            if let Some(property) = properties.and_then(|p| p.get(key)) {
                self.visit(item, property, &at, true, errors);
                continue;
            }
            match additional {
                Some(Value::Bool(true)) => {}
                Some(extra @ Value::Object(_)) => self.visit(item, extra, &at, true, errors),
                Some(Value::Bool(false)) => errors.push(format!("{at}: property not in the schema")),
                _ if !closed || !describes_object || self.all_of_names(schema, key) => {}
                _ => errors.push(format!("{at}: property not in the schema")),
            }
        }
    }

    /// Whether a part of the schema's `allOf` names `key` or takes any
    /// property (it checks the value itself).
    fn all_of_names(&self, schema: &Value, key: &str) -> bool {
        schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|part| self.resolve(part).ok())
            .any(|part| {
                part.get("properties").and_then(|p| p.get(key)).is_some()
                    || part
                        .get("additionalProperties")
                        .is_some_and(|a| *a != Value::Bool(false))
                    || self.all_of_names(part, key)
            })
    }

    /// The property names of a component schema (of its `allOf` parts too).
    fn property_names(&self, name: &str) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let mut stack = vec![Self::component(name)];
        while let Some(schema) = stack.pop() {
            let schema = self.resolve(&schema).unwrap().clone();
            if let Some(p) = schema.get("properties").and_then(Value::as_object) {
                names.extend(p.keys().cloned());
            }
            stack.extend(
                schema
                    .get("allOf")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
        names
    }

    /// The schema of the JSON reply of `method path` with `status`.
    fn reply(&self, method: &str, path: &str, status: StatusCode) -> Value {
        let responses = &self.doc["paths"][path][method]["responses"];
        let schema = &responses[status.as_str()]["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {path} has no schema for {status}: {responses}"
        );
        schema.clone()
    }
}

fn schema_types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        _ => false,
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
    }
}

/// Panics with every problem when `value` does not match.
fn assert_matches(checker: &Checker<'_>, what: &str, value: &Value, schema: &Value) {
    let errors = checker.check(value, schema);
    assert!(
        errors.is_empty(),
        "{what} does not match its schema {schema}:\n  {}\nserved: {value:#}",
        errors.join("\n  ")
    );
}

/// Collects the property names served for a component, to show every one
/// of them was exercised.
fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The checker, on its own: it must be able to fail.

fn mini_doc() -> Value {
    json!({
        "openapi": "3.1.0",
        "components": {"schemas": {
            "Thing": {
                "type": "object",
                "required": ["id", "kind", "at", "place"],
                "properties": {
                    "id": {"type": "string"},
                    "count": {"type": "integer", "format": "int64", "minimum": 0},
                    "kind": {"$ref": "#/components/schemas/Kind"},
                    "at": {"type": "string", "format": "date-time"},
                    "place": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Place"}]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "counts": {"type": "object", "additionalProperties": {"type": "integer"},
                               "propertyNames": {"type": "string", "enum": ["a", "b"]}},
                    "note": {"type": ["string", "null"]},
                    "named": {"$ref": "#/components/schemas/Named"},
                    "op": {"$ref": "#/components/schemas/Op"}
                }
            },
            "Kind": {"type": "string", "enum": ["theft", "n/a"]},
            "Place": {"type": "object", "required": ["lat", "lon"],
                      "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}}},
            "Named": {"allOf": [
                {"$ref": "#/components/schemas/Place"},
                {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
            ]},
            "Op": {"oneOf": [
                {"type": "object", "required": ["op", "task"], "additionalProperties": false,
                 "properties": {"op": {"type": "string", "enum": ["ack"]}, "task": {"type": "string"}}},
                {"type": "object", "required": ["op", "lat"], "additionalProperties": false,
                 "properties": {"op": {"type": "string", "enum": ["position"]}, "lat": {"type": "number"}}}
            ]}
        }}
    })
}

fn good_thing() -> Value {
    json!({
        "id": "t1", "count": 3, "kind": "n/a", "at": "2026-11-22T06:00:00.123Z",
        "place": {"lat": 36.6, "lon": 117.0}, "tags": ["x"], "counts": {"a": 1},
        "note": null, "named": {"lat": 1.5, "lon": 2.0, "name": "post"},
        "op": {"op": "ack", "task": "t"}
    })
}

#[test]
fn the_checker_accepts_what_the_schema_describes() {
    let doc = mini_doc();
    let checker = Checker::new(&doc);
    let thing = Checker::component("Thing");
    assert_eq!(checker.check(&good_thing(), &thing), Vec::<String>::new());
    let mut minimal = json!({"id": "t2", "kind": "theft", "at": "2026-11-22T14:00:00+08:00", "place": null});
    assert_eq!(checker.check(&minimal, &thing), Vec::<String>::new());
    minimal["op"] = json!({"op": "position", "lat": 1});
    assert_eq!(checker.check(&minimal, &thing), Vec::<String>::new());
}

/// Breaks a good document in one way.
type Breaker = Box<dyn Fn(&mut Value)>;

#[test]
fn the_checker_reports_each_mistake_with_its_path() {
    let doc = mini_doc();
    let checker = Checker::new(&doc);
    let thing = Checker::component("Thing");
    let cases: Vec<(&str, Breaker, Vec<&str>)> = vec![
        (
            "missing required field",
            Box::new(|v: &mut Value| {
                v.as_object_mut().unwrap().remove("id");
            }),
            vec!["$: missing required property `id`"],
        ),
        (
            "wrong type",
            Box::new(|v: &mut Value| v["count"] = json!("three")),
            vec!["$.count: expected integer, got string"],
        ),
        (
            "a fraction for an integer",
            Box::new(|v: &mut Value| v["count"] = json!(2.5)),
            vec!["$.count: expected integer, got number"],
        ),
        (
            "below the minimum",
            Box::new(|v: &mut Value| v["count"] = json!(-1)),
            vec!["$.count: -1 is below the minimum 0"],
        ),
        (
            "unknown property",
            Box::new(|v: &mut Value| v["colour"] = json!("red")),
            vec!["$.colour: property not in the schema"],
        ),
        (
            "bad enum",
            Box::new(|v: &mut Value| v["kind"] = json!("arson")),
            vec![r#"$.kind: "arson" is not one of ["theft","n/a"]"#],
        ),
        (
            "not a date-time",
            Box::new(|v: &mut Value| v["at"] = json!("yesterday")),
            vec![r#"$.at: "yesterday" is not a date-time"#],
        ),
        (
            "null where it is not nullable",
            Box::new(|v: &mut Value| v["id"] = Value::Null),
            vec!["$.id: expected string, got null"],
        ),
        (
            "nested in a nullable reference",
            Box::new(|v: &mut Value| v["place"]["lat"] = json!("north")),
            vec![
                "$.place: matches none of the oneOf alternatives",
                "$.place.lat: expected number, got string",
            ],
        ),
        (
            "unknown property in a referenced object",
            Box::new(|v: &mut Value| v["place"]["alt"] = json!(3)),
            vec![
                "$.place: matches none of the oneOf alternatives",
                "$.place.alt: property not in the schema",
            ],
        ),
        (
            "array item",
            Box::new(|v: &mut Value| v["tags"] = json!(["x", 7])),
            vec!["$.tags[1]: expected string, got integer"],
        ),
        (
            "map value and key",
            Box::new(|v: &mut Value| v["counts"] = json!({"a": "one", "z": 1})),
            vec![
                r#"$.counts.z (name): "z" is not one of ["a","b"]"#,
                "$.counts.a: expected integer, got string",
            ],
        ),
        (
            "allOf: a part's required field, and a property neither part names",
            Box::new(|v: &mut Value| {
                v["named"].as_object_mut().unwrap().remove("name");
                v["named"]["extra"] = json!(true);
            }),
            vec![
                "$.named: missing required property `name`",
                "$.named.extra: property not in the schema",
            ],
        ),
        (
            "oneOf: a tagged variant with another variant's field",
            Box::new(|v: &mut Value| v["op"] = json!({"op": "ack", "task": "t", "lat": 1})),
            vec![
                "$.op: matches none of the oneOf alternatives",
                "$.op.lat: property not in the schema",
            ],
        ),
        (
            "oneOf: an unknown tag",
            Box::new(|v: &mut Value| v["op"] = json!({"op": "dance", "task": "t"})),
            vec![
                "$.op: matches none of the oneOf alternatives",
                r#"$.op.op: "dance" is not one of ["ack"]"#,
            ],
        ),
    ];
    for (what, break_it, expected) in cases {
        let mut broken = good_thing();
        break_it(&mut broken);
        let errors = checker.check(&broken, &thing);
        assert_eq!(errors, expected, "{what}: {broken}");
    }
    // Several mistakes at once are all reported.
    let mut broken = good_thing();
    broken.as_object_mut().unwrap().remove("id");
    broken["count"] = json!(true);
    broken["colour"] = json!("red");
    broken["kind"] = json!("arson");
    let errors = checker.check(&broken, &thing);
    assert_eq!(errors.len(), 4, "{errors:?}");
    let unresolved = checker.check(&json!(1), &Checker::component("Nothing"));
    assert_eq!(unresolved, vec!["$: unresolved $ref #/components/schemas/Nothing"]);
}

// ---------------------------------------------------------------------------
// The api's replies.

async fn get(api: &Api, token: Option<&str>, path: &str) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().get(api.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(api: &Api, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(api.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn document(api: &Api) -> Value {
    let (status, doc) = get(api, None, "/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    doc
}

const HERE: (f64, f64) = (36.6683, 117.0204);

/// An incident with every optional field set.
fn full_incident(id: &str) -> Incident {
    let now = Utc::now();
    let mut i = incident(id, "quancheng", 7, IncidentStatus::OnScene);
    i.priority = 1;
    i.location = Some(Location {
        lat: HERE.0,
        lon: HERE.1,
        address: Some("经十路 1 号".into()),
    });
    i.repeat_count = 2;
    i.diverted_to = Some("fire".into());
    i.deadlines = Some(Deadlines {
        respond: now + Duration::seconds(60),
        arrive: now + Duration::seconds(180),
        reinforce: now + Duration::seconds(300),
    });
    i.sla = Sla {
        respond: SlaState::Met,
        arrive: SlaState::Breached,
        reinforce: SlaState::NotApplicable,
    };
    i.units = vec![
        IncidentUnit {
            unit: "u-full".into(),
            task: "t-full".into(),
            role: UnitRole::Primary,
            status: TaskStatus::OnScene,
            eta_s: 95,
        },
        IncidentUnit {
            unit: "u-2".into(),
            task: "t-2".into(),
            role: UnitRole::Reinforcement,
            status: TaskStatus::EnRoute,
            eta_s: 240,
        },
    ];
    i.timeline.push(TimelineEntry {
        at: now,
        what: "dispatched u-full".into(),
        by: "router".into(),
    });
    i.disposition = Some("handled".into());
    i.feedback = Some(Feedback::Unsatisfied);
    i.follow_up_of = Some("i-before".into());
    i.flags = vec![Flag::ClockSkew, Flag::Truncated];
    i.callers = vec![
        Caller {
            phone: Some("13800000001".into()),
            name: Some("王".into()),
        },
        Caller::default(),
    ];
    i.hold = true;
    i.candidates = vec![
        Recommendation {
            unit: "u-free".into(),
            unit_type: UnitType::PatrolCar,
            eta_s: 120,
            in_time: true,
            distance_m: 850.5,
            task: None,
            task_priority: None,
        },
        Recommendation {
            unit: "u-busy".into(),
            unit_type: UnitType::Foot,
            eta_s: 400,
            in_time: false,
            distance_m: 1200.0,
            task: Some("t-other".into()),
            task_priority: Some(4),
        },
    ];
    i.merged_into = Some("i-into".into());
    i.merged = vec!["i-a".into(), "i-b".into()];
    i.split_from = Some("i-from".into());
    i.ladder.set(
        bus::model::Stage::Respond,
        bus::model::Rung {
            rung: 2,
            at: chrono::Utc::now(),
        },
    );
    i.requested = vec![bus::model::UnitType::Special];
    i
}

/// An incident with every optional field absent (and no place).
fn bare_incident(id: &str) -> Incident {
    let mut i = incident(id, "quancheng", 1, IncidentStatus::New);
    i.location = None;
    i.cell = None;
    i.desks = Vec::new();
    i.text = None;
    i
}

fn full_task(id: &str, incident: &str, unit: &str) -> Task {
    let now = Utc::now();
    let mut t = task(id, incident, unit, 3, TaskStatus::Acknowledged);
    t.kind = TaskKind::Reinforce;
    t.location = Some(Location {
        lat: HERE.0,
        lon: HERE.1,
        address: Some("经十路 1 号".into()),
    });
    t.deadlines = Some(Deadlines {
        respond: now,
        arrive: now,
        reinforce: now,
    });
    t.updated_at = now + Duration::seconds(20);
    t.caller = Some(Caller {
        phone: Some("13800000001".into()),
        name: None,
    });
    t.other_units = vec!["u-2".into()];
    t.changes = vec!["priority".into(), "location".into()];
    t.reason = Some("pre-empted".into());
    t
}

fn full_unit(id: &str, task: &str) -> bus::model::Unit {
    let mut u = unit(id, "quancheng", UnitStatus::Available);
    u.task = Some(task.into());
    u.version = 4;
    u.speed_kmh = Some(32.5);
    u.name = Some("泉城 1 号".into());
    u.reason = Some("refuelling".into());
    u
}

/// No position, no task, nothing optional.
fn bare_unit(id: &str) -> bus::model::Unit {
    let mut u = unit(id, "quancheng", UnitStatus::OutOfService);
    u.lat = None;
    u.lon = None;
    u
}

/// Every GET endpoint, seeded with records that set every optional field
/// (and records that set none), serves JSON that matches the schema its
/// operation names; errors match the error schema.
#[tokio::test]
async fn every_get_reply_matches_its_schema() {
    let ctx = context("api-schema", |_| {}).await;
    let api = Api::start(&ctx).await;
    let router = FakeRouter::new(&ctx);

    let full = full_incident(&unique("full"));
    let bare = bare_incident(&unique("bare"));
    let closed = {
        let mut i = incident(&unique("closed"), "quancheng", 5, IncidentStatus::Closed);
        i.disposition = Some("resolved on scene".into());
        i.feedback = Some(Feedback::Satisfied);
        i
    };
    for i in [&full, &bare, &closed] {
        router.incident(i).await;
    }
    let u_full = unique("u-full");
    let u_bare = unique("u-bare");
    let t_full = full_task(&unique("t-full"), &full.id, &u_full);
    router.task(&t_full).await;
    router
        .task(&task(&unique("t-bare"), &bare.id, &u_bare, 1, TaskStatus::Issued))
        .await;
    router.unit(&full_unit(&u_full, &t_full.id)).await;
    router.unit(&bare_unit(&u_bare)).await;
    // A repeat hotspot for the stats.
    let cell = full.cell.clone().unwrap();
    let now_ms = Utc::now().timestamp_millis();
    for member in [&full.id, &closed.id] {
        ctx.store
            .window_add(&format!("hotspot:{cell}"), member, now_ms, 3_600_000)
            .await
            .unwrap();
    }

    let op_token = api.token(Role::Operator, &["quancheng"], None);
    let op = op_token.as_str();
    let me_token = api.token(Role::Unit, &["quancheng"], Some(&u_full));
    let me = me_token.as_str();
    // The closed incident and the tasks come from the api's view of the
    // topics.
    let closed_id = closed.id.clone();
    eventually("the closed incident in the list", || async {
        let (_, body) = get(&api, Some(op), "/api/v1/incidents?status=closed").await;
        body["incidents"]
            .as_array()
            .is_some_and(|a| a.iter().any(|i| i["id"] == closed_id.as_str()))
    })
    .await;
    eventually("the acknowledged task in the stats", || async {
        let (_, stats) = get(&api, Some(op), "/api/v1/stats?window=1h").await;
        stats["stages"]["respond"]["samples"].as_u64() >= Some(1)
    })
    .await;

    let doc = document(&api).await;
    let checker = Checker::new(&doc);
    let mut served_incidents = Vec::new();
    let mut served_units = Vec::new();
    let mut served_candidates = Vec::new();
    let ok = StatusCode::OK;
    let reads: Vec<(String, &str, &str)> = vec![
        ("/api/v1/incidents".into(), "/api/v1/incidents", op),
        ("/api/v1/incidents?status=closed".into(), "/api/v1/incidents", op),
        (
            "/api/v1/incidents?status=all&limit=1000".into(),
            "/api/v1/incidents",
            op,
        ),
        (format!("/api/v1/incidents/{}", full.id), "/api/v1/incidents/{id}", op),
        (format!("/api/v1/incidents/{}", bare.id), "/api/v1/incidents/{id}", op),
        (format!("/api/v1/incidents/{}", closed.id), "/api/v1/incidents/{id}", op),
        (
            format!("/api/v1/incidents/{}/candidates", full.id),
            "/api/v1/incidents/{id}/candidates",
            op,
        ),
        (
            format!("/api/v1/incidents/{}/candidates", bare.id),
            "/api/v1/incidents/{id}/candidates",
            op,
        ),
        ("/api/v1/units".into(), "/api/v1/units", op),
        ("/api/v1/units".into(), "/api/v1/units", me),
        ("/api/v1/stats?window=1h".into(), "/api/v1/stats", op),
        ("/api/v1/stats?window=7d".into(), "/api/v1/stats", op),
        ("/api/v1/coverage".into(), "/api/v1/coverage", op),
        ("/api/v1/info".into(), "/api/v1/info", op),
        ("/api/v1/info".into(), "/api/v1/info", me),
        ("/api/v1/jurisdictions".into(), "/api/v1/jurisdictions", op),
    ];
    for (url, template, token) in reads {
        let (status, body) = get(&api, Some(token), &url).await;
        assert_eq!(status, ok, "GET {url}: {body}");
        assert_matches(
            &checker,
            &format!("GET {url}"),
            &body,
            &checker.reply("get", template, ok),
        );
        match template {
            "/api/v1/incidents" => served_incidents.extend(body["incidents"].as_array().unwrap().iter().cloned()),
            "/api/v1/incidents/{id}" => served_incidents.push(body),
            "/api/v1/incidents/{id}/candidates" => {
                served_candidates.extend(body["candidates"].as_array().unwrap().iter().cloned())
            }
            "/api/v1/units" => served_units.extend(body["units"].as_array().unwrap().iter().cloned()),
            _ => {}
        }
    }

    // What was served is what was seeded.
    let ids: BTreeSet<&str> = served_incidents.iter().filter_map(|i| i["id"].as_str()).collect();
    for id in [&full.id, &bare.id, &closed.id] {
        assert!(ids.contains(id.as_str()), "{id} not served: {ids:?}");
    }
    let unit_ids: BTreeSet<&str> = served_units.iter().filter_map(|u| u["id"].as_str()).collect();
    assert!(unit_ids.contains(u_full.as_str()) && unit_ids.contains(u_bare.as_str()));
    // Every property of the model's schemas was served at least once.
    for (schema, served) in [
        ("Incident", &served_incidents),
        ("Unit", &served_units),
        ("Recommendation", &served_candidates),
    ] {
        let seen: BTreeSet<String> = served.iter().flat_map(keys).collect();
        let described = checker.property_names(schema);
        assert_eq!(seen, described, "{schema}: served properties differ from the schema's");
    }
    let served_full = served_incidents.iter().find(|i| i["id"] == full.id.as_str()).unwrap();
    assert_eq!(served_full["sla"]["reinforce"], "n/a");
    assert_eq!(served_full["units"][0]["eta_s"], 95);
    let (_, stats) = get(&api, Some(op), "/api/v1/stats?window=1h").await;
    assert_eq!(stats["hotspots"][0]["cell"], cell.as_str(), "{stats}");
    let (_, coverage) = get(&api, Some(op), "/api/v1/coverage").await;
    let best: Vec<&Value> = coverage["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["best_s"])
        .collect();
    assert!(
        best.iter().any(|b| b.is_number()),
        "a cell reachable by the available unit"
    );

    // The schema is not vacuous: a broken incident fails it, at its paths.
    let mut broken = served_full.clone();
    broken.as_object_mut().unwrap().remove("id");
    broken["version"] = json!("seven");
    broken["colour"] = json!("red");
    broken["status"] = json!("lost");
    broken["units"][1]["role"] = json!("boss");
    broken["sla"]["arrive"] = json!("late");
    broken["created_at"] = json!("yesterday");
    let errors = checker.check(&broken, &Checker::component("Incident"));
    for expected in [
        "$: missing required property `id`",
        "$.version: expected integer, got string",
        "$.colour: property not in the schema",
        r#"$.status: "lost" is not one of"#,
        r#"$.units[1].role: "boss" is not one of"#,
        r#"$.sla.arrive: "late" is not one of ["pending","met","breached","n/a"]"#,
        r#"$.created_at: "yesterday" is not a date-time"#,
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{expected} not reported: {errors:#?}"
        );
    }
    assert_eq!(errors.len(), 7, "{errors:#?}");

    // Errors, as each operation documents them.
    let errors = [
        (
            "/api/v1/incidents/nope",
            "/api/v1/incidents/{id}",
            Some(op),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v1/incidents?status=maybe",
            "/api/v1/incidents",
            Some(op),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/stats?window=forever",
            "/api/v1/stats",
            Some(op),
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v1/units", "/api/v1/units", None, StatusCode::UNAUTHORIZED),
        ("/api/v1/coverage", "/api/v1/coverage", Some(me), StatusCode::FORBIDDEN),
    ];
    for (url, template, token, expected) in errors {
        let (status, body) = get(&api, token, url).await;
        assert_eq!(status, expected, "GET {url}: {body}");
        let schema = checker.reply("get", template, status);
        assert_eq!(schema, Checker::component("ErrorBody"));
        assert_matches(&checker, &format!("GET {url}"), &body, &schema);
    }
}

/// A command's reply (202) and its refusals match their schemas.
#[tokio::test]
async fn command_replies_match_their_schemas() {
    let ctx = context("api-schema-cmd", |_| {}).await;
    let api = Api::start(&ctx).await;
    let router = FakeRouter::new(&ctx);
    let open = incident(&unique("open"), "quancheng", 1, IncidentStatus::New);
    router.incident(&open).await;
    let op = api.token(Role::Operator, &["quancheng"], None);
    let doc = document(&api).await;
    let checker = Checker::new(&doc);

    let cases = [
        (
            format!("/api/v1/incidents/{}/note", open.id),
            "/api/v1/incidents/{id}/{op}",
            json!({"text": "caller rang again"}),
            StatusCode::ACCEPTED,
        ),
        (
            "/api/v1/incidents".to_owned(),
            "/api/v1/incidents",
            json!({"kind": "theft", "text": "walk-in", "location": {"lat": HERE.0, "lon": HERE.1}}),
            StatusCode::ACCEPTED,
        ),
        (
            format!("/api/v1/incidents/{}/dance", open.id),
            "/api/v1/incidents/{id}/{op}",
            json!({}),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/api/v1/incidents/{}/note", open.id),
            "/api/v1/incidents/{id}/{op}",
            json!({"text": "x", "colour": "red"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/incidents".to_owned(),
            "/api/v1/incidents",
            json!({"kind": "bakery", "text": "x"}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (url, template, body, expected) in cases {
        let (status, reply) = post(&api, &op, &url, body).await;
        assert_eq!(status, expected, "POST {url}: {reply}");
        let schema = checker.reply("post", template, status);
        assert_matches(&checker, &format!("POST {url}"), &reply, &schema);
        if status == StatusCode::ACCEPTED && template == "/api/v1/incidents" {
            assert!(reply["event"].is_string(), "create names its event: {reply}");
        }
    }
}

/// Every operation names the schema of each of its replies, and every
/// schema it names is in the document.
#[tokio::test]
async fn every_operation_names_its_reply_schemas() {
    let ctx = context("api-schema-doc", |_| {}).await;
    let api = Api::start(&ctx).await;
    let doc = document(&api).await;
    let checker = Checker::new(&doc);
    let mut operations = 0;
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            operations += 1;
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{method} {path} has no 2xx reply"
            );
            for (status, reply) in responses {
                let schema = &reply["content"]["application/json"]["schema"];
                let reference = schema["$ref"].as_str();
                assert!(
                    reference.is_some(),
                    "{method} {path} {status}: the reply names no schema: {reply}"
                );
                checker
                    .resolve(schema)
                    .unwrap_or_else(|e| panic!("{method} {path} {status}: {e}"));
                if !status.starts_with('2') {
                    assert_eq!(
                        reference,
                        Some("#/components/schemas/ErrorBody"),
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }
    assert_eq!(operations, 14, "every route of the api is documented");
    // Every `$ref` anywhere in the document resolves.
    let mut stack = vec![&doc];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref") {
                    checker.resolve(v).unwrap_or_else(|e| panic!("{r}: {e}"));
                }
                stack.extend(m.values());
            }
            Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
}

/// What the WebSocket pushes (tasks, escalations) and the commands clients
/// send are described in the document too, exactly as serde writes them:
/// every variant of the `op`-tagged `Command`, with every field and with
/// none of the optional ones.
#[tokio::test]
async fn pushed_records_and_commands_match_their_schemas() {
    let ctx = context("api-schema-model", |_| {}).await;
    let api = Api::start(&ctx).await;
    let doc = document(&api).await;
    let checker = Checker::new(&doc);

    let full = full_task("t1", "i1", "u1");
    let bare = task("t2", "i1", "u1", 1, TaskStatus::Issued);
    let mut seen = BTreeSet::new();
    for t in [&full, &bare] {
        let value = serde_json::to_value(t).unwrap();
        seen.extend(keys(&value));
        assert_matches(&checker, "a task", &value, &Checker::component("Task"));
    }
    assert_eq!(seen, checker.property_names("Task"));

    let full = Escalation {
        id: new_id(),
        incident: "i1".into(),
        jurisdiction: "quancheng".into(),
        at: Utc::now(),
        kind: EscalationKind::Rejected,
        stage: Some(Stage::Arrive),
        desks: vec!["supervisor".into()],
        unit_type: Some(UnitType::Special),
        message: "no".into(),
        by: "router".into(),
        action: Some("assign".into()),
    };
    let bare = Escalation {
        kind: EscalationKind::SlaBreach,
        stage: None,
        desks: Vec::new(),
        unit_type: None,
        action: None,
        ..full.clone()
    };
    let mut seen = BTreeSet::new();
    for e in [&full, &bare] {
        let value = serde_json::to_value(e).unwrap();
        seen.extend(keys(&value));
        assert_matches(&checker, "an escalation", &value, &Checker::component("Escalation"));
    }
    assert_eq!(seen, checker.property_names("Escalation"));

    let place = Location {
        lat: HERE.0,
        lon: HERE.1,
        address: Some("经十路".into()),
    };
    let commands = vec![
        Command::Ack { task: "t".into() },
        Command::Status {
            status: ReportedStatus::OutOfService,
            task: Some("t".into()),
            lat: Some(HERE.0),
            lon: Some(HERE.1),
            note: Some("n".into()),
            unit_type: Some(UnitType::Traffic),
            reason: Some("flat tyre".into()),
        },
        Command::Status {
            status: ReportedStatus::Available,
            task: None,
            lat: None,
            lon: None,
            note: None,
            unit_type: None,
            reason: None,
        },
        Command::Position {
            lat: HERE.0,
            lon: HERE.1,
        },
        Command::Assign {
            incident: "i".into(),
            unit: "u".into(),
            mode: AssignMode::Add,
            preempt: true,
        },
        Command::Assign {
            incident: "i".into(),
            unit: "u".into(),
            mode: AssignMode::Replace,
            preempt: false,
        },
        Command::Divert {
            incident: "i".into(),
            to: "fire".into(),
        },
        Command::Escalate {
            incident: "i".into(),
            desk: Some("traffic".into()),
            unit_type: Some(UnitType::Special),
            note: Some("n".into()),
        },
        Command::Escalate {
            incident: "i".into(),
            desk: None,
            unit_type: None,
            note: None,
        },
        Command::Close {
            incident: "i".into(),
            disposition: "handled".into(),
            feedback: Some(Feedback::Satisfied),
        },
        Command::Close {
            incident: "i".into(),
            disposition: "handled".into(),
            feedback: None,
        },
        Command::Update {
            incident: "i".into(),
            priority: Some(1),
            kind: Some("robbery".into()),
            text: Some("knife".into()),
            location: Some(place.clone()),
            reason: Some("caller says knife".into()),
        },
        Command::Update {
            incident: "i".into(),
            priority: None,
            kind: None,
            text: Some("t".into()),
            location: None,
            reason: None,
        },
        Command::Note {
            incident: Some("i".into()),
            task: Some("t".into()),
            text: "n".into(),
        },
        Command::Note {
            incident: None,
            task: None,
            text: "n".into(),
        },
        Command::Reopen {
            incident: "i".into(),
            reason: "r".into(),
        },
        Command::Merge {
            incident: "i".into(),
            from: "j".into(),
        },
        Command::Split {
            incident: "i".into(),
            events: vec!["e1".into()],
            reason: Some("two places".into()),
        },
        Command::Split {
            incident: "i".into(),
            events: vec![],
            reason: None,
        },
        Command::Hold {
            incident: "i".into(),
            hold: false,
            reason: Some("wait".into()),
        },
        Command::Hold {
            incident: "i".into(),
            hold: true,
            reason: None,
        },
        Command::Refuse {
            task: "t".into(),
            reason: "r".into(),
        },
        Command::Create {
            kind: "theft".into(),
            text: "t".into(),
            location: Some(place),
            caller: Some(Caller {
                phone: Some("1".into()),
                name: Some("n".into()),
            }),
        },
        Command::Create {
            kind: "theft".into(),
            text: "t".into(),
            location: None,
            caller: None,
        },
    ];
    let schema = Checker::component("Command");
    let mut ops = BTreeSet::new();
    for command in &commands {
        let value = serde_json::to_value(command).unwrap();
        ops.insert(command.as_str());
        assert_matches(&checker, command.as_str(), &value, &schema);
    }
    let variants = checker.resolve(&schema).unwrap()["oneOf"].as_array().unwrap().len();
    assert_eq!(ops.len(), variants, "every command variant is checked");
    // `hold` without `hold` holds.
    let hold = checker.resolve(&schema).unwrap()["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["properties"]["op"]["enum"] == json!(["hold"]))
        .unwrap()
        .clone();
    assert_eq!(hold["properties"]["hold"]["default"], true, "{hold}");
    assert_eq!(hold["required"], json!(["incident", "op"]), "{hold}");
    // As serde refuses it, the schema refuses a field of another command.
    let errors = checker.check(&json!({"op": "ack", "task": "t", "lat": 1.0}), &schema);
    assert!(
        errors.contains(&"$.lat: property not in the schema".to_owned()),
        "{errors:?}"
    );
    assert!(serde_json::from_value::<Command>(json!({"op": "ack", "task": "t", "lat": 1.0})).is_err());
}
