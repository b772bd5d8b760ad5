//! Ingest over HTTP against the real broker and Redis when the test script
//! provides them (TEST_KAFKA_BROKERS, TEST_REDIS_URL), else the embedded
//! broker and the in-memory store: what lands on Kafka, idempotency, the
//! table of malformed inputs with their dead letters, CAP, AVL and auth.

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use bus::Topic;
use bus::model::{DeadLetter, Role, UnitStatus};
use bus::testing::BrokerChoice;
use common::{Harness, call, start, token, unique};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
/// Long enough for a stray record to show up, short enough for the suite.
const QUIET: Duration = Duration::from_secs(2);

fn ids(reply: &Value) -> Vec<(u64, String, bool)> {
    reply["accepted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["index"].as_u64().unwrap(),
                a["id"].as_str().unwrap().to_owned(),
                a["duplicate"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_call_lands_on_the_events_topic_with_cloudevents_headers() {
    let h = start("ingest-call", BrokerChoice::RealIfAvailable, |_| {}).await;
    let source_id = unique("110");
    let reply = h.post_json("/v1/events", &call(&source_id)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let accepted = ids(&reply.body);
    assert_eq!(accepted.len(), 1);
    assert_eq!(reply.body["accepted"][0]["source_id"], source_id.as_str());
    assert_eq!(reply.body["rejected"], json!([]));
    let (_, id, duplicate) = &accepted[0];
    assert!(!duplicate);

    let records = h.read(Topic::Events, 1, WAIT).await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.key.as_deref(), Some("quancheng"));
    assert_eq!(r.value["id"], id.as_str());
    assert_eq!(r.value["jurisdiction"], "quancheng");
    assert_eq!(r.value["source_id"], source_id.as_str());
    assert_eq!(r.value["kind"], "robbery");
    assert!(r.value["cell"].as_str().is_some_and(|c| c.len() == 15), "{}", r.value);
    assert!(r.value["received_at"].is_string());
    assert_eq!(r.headers["ce_specversion"], "1.0");
    assert_eq!(r.headers["ce_id"], *id);
    assert_eq!(r.headers["ce_source"], "/qzx/ingest");
    assert_eq!(r.headers["ce_type"], "qzx.event.v1");
    assert!(chrono::DateTime::parse_from_rfc3339(&r.headers["ce_time"]).is_ok());
    assert_eq!(r.headers["content-type"], "application/json");
}

#[tokio::test]
async fn a_repeat_source_id_is_a_duplicate_and_produces_nothing() {
    let h = start("ingest-dup", BrokerChoice::RealIfAvailable, |_| {}).await;
    let source_id = unique("110");
    let first = h.post_json("/v1/events", &call(&source_id)).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let (_, id, _) = ids(&first.body)[0].clone();

    let again = h.post_json("/v1/events", &call(&source_id)).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    assert_eq!(ids(&again.body), vec![(0, id.clone(), true)]);

    // Twice in one NDJSON request, next to a new one: one new event.
    let other = unique("110");
    let ndjson = format!("{}\n{}\n{}\n", call(&source_id), call(&other), call(&other));
    let batch = h.post("/v1/events", Some("application/x-ndjson"), ndjson).await;
    assert_eq!(batch.status, StatusCode::ACCEPTED, "{}", batch.body);
    let got = ids(&batch.body);
    assert_eq!(got[0], (0, id.clone(), true));
    assert!(!got[1].2);
    assert_eq!(got[2], (2, got[1].1.clone(), true));

    let records = h.read(Topic::Events, 3, QUIET).await;
    assert_eq!(records.len(), 2, "only two events were new");
    // The same source_id from another source is another event.
    let mut report = call(&source_id);
    report["source"] = json!("report");
    let fresh = h.post_json("/v1/events", &report).await;
    assert!(!ids(&fresh.body)[0].2);
}

#[tokio::test]
async fn a_mixed_batch_accepts_the_valid_and_dead_letters_the_rest() {
    let h = start("ingest-mixed", BrokerChoice::RealIfAvailable, |_| {}).await;
    // A sensor: a call with these coordinates is accepted and flagged.
    let bad = r#"{"source":"sensor","source_id":"bad-1","location":{"lat":91,"lon":117}}"#;
    let body = format!("[{}, {bad}, {}]", call(&unique("a")), call(&unique("b")));
    let reply = h
        .post("/v1/events", Some("application/json; charset=utf-8"), body)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let got: Vec<u64> = ids(&reply.body).iter().map(|a| a.0).collect();
    assert_eq!(got, vec![0, 2]);
    assert_eq!(reply.body["rejected"][0]["index"], 1);
    assert_eq!(reply.body["rejected"][0]["errors"][0]["field"], "location.lat");

    let dead = h.read(Topic::DeadLetter, 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    let dl: DeadLetter = serde_json::from_value(dead[0].value.clone()).unwrap();
    assert_eq!(dl.raw_bytes(), bad.as_bytes(), "the item's own bytes");
    assert_eq!(dl.errors[0].field, "location.lat");
    assert_eq!(dl.source.as_deref(), Some("sensor"));
    assert_eq!(dead[0].key.as_deref(), Some("sensor"));
    assert_eq!(dead[0].headers["ce_type"], "qzx.deadletter.v1");
    assert_eq!(h.read(Topic::Events, 2, WAIT).await.len(), 2);
}

#[tokio::test]
async fn an_unknown_kind_and_a_far_away_call_are_kept() {
    let h = start("ingest-keep", BrokerChoice::RealIfAvailable, |_| {}).await;
    let mut v = call(&unique("k"));
    v["kind"] = json!("alien_landing");
    v["location"] = json!({"lat": 38.9, "lon": -77.0});
    let reply = h.post_json("/v1/events", &v).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    let e = &h.read(Topic::Events, 1, WAIT).await[0].value;
    assert_eq!(e["kind"], "unknown");
    assert_eq!(e["attrs"]["original_kind"], "alien_landing");
    assert_eq!(e["jurisdiction"], "shiju");
    assert_eq!(e["attrs"]["outside_jurisdictions"], true);
}

/// 有警必接、接案必登 (issue #20): a call is never refused for its
/// content. Each case is accepted with its flags in the reply and on the
/// event; where the event does not hold everything sent, the original is
/// on the dead-letter topic with the event's id.
#[tokio::test]
async fn a_call_is_never_refused_for_its_content_but_accepted_and_flagged() {
    let h = start("ingest-flags", BrokerChoice::RealIfAvailable, |_| {}).await;
    let set = |field: &str, value: Value| -> Value { serde_json::from_slice(&with(field, value)).unwrap() };
    let long_text = "字".repeat(4001);
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "address only",
            set("location", json!({"address": "历下区泉城路1号"})),
            vec!["unlocated"],
        ),
        ("no location", set("location", Value::Null), vec!["unlocated"]),
        (
            "impossible coordinates",
            set(
                "location",
                json!({"lat": 91, "lon": 117.02, "address": "历下区泉城路1号"}),
            ),
            vec!["bad_coordinates", "unlocated"],
        ),
        (
            "fast clock",
            set("occurred_at", json!("2999-01-01T00:00:00Z")),
            vec!["clock_skew"],
        ),
        ("long text", set("text", json!(long_text)), vec!["truncated"]),
        (
            "long phone",
            set("caller", json!({"phone": "1".repeat(40)})),
            vec!["truncated"],
        ),
        (
            "big attrs",
            set("attrs", json!({"a": "x".repeat(17 * 1024)})),
            vec!["truncated"],
        ),
        (
            "text as an object",
            set("text", json!({"said": "救命"})),
            vec!["malformed"],
        ),
    ];
    let ndjson: String = cases.iter().map(|(_, v, _)| format!("{v}\n")).collect();
    let reply = h.post("/v1/events", Some("application/x-ndjson"), ndjson).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(reply.body["rejected"], json!([]));
    let accepted = reply.body["accepted"].as_array().unwrap();
    assert_eq!(accepted.len(), cases.len());
    for ((name, _, flags), a) in cases.iter().zip(accepted) {
        assert_eq!(a["flags"], json!(flags), "{name}: {a}");
    }

    let events = h.read(Topic::Events, cases.len(), WAIT).await;
    assert_eq!(events.len(), cases.len());
    let event = |i: usize| {
        let id = accepted[i]["id"].as_str().unwrap();
        &events.iter().find(|r| r.value["id"] == id).unwrap().value
    };
    for (i, (name, _, flags)) in cases.iter().enumerate() {
        assert_eq!(event(i)["flags"], json!(flags), "{name}");
    }
    let fallback = &h.ctx.config.city.fallback_jurisdiction;
    for i in [0, 1, 2] {
        assert_eq!(event(i)["jurisdiction"], fallback.as_str(), "{}", cases[i].0);
        assert_eq!(event(i)["cell"], Value::Null, "{}", cases[i].0);
    }
    assert_eq!(event(0)["attrs"]["address"], "历下区泉城路1号");
    assert_eq!(event(2)["attrs"]["address"], "历下区泉城路1号");
    assert_eq!(event(3)["attrs"]["sent_occurred_at"], "2999-01-01T00:00:00Z");
    assert_eq!(event(4)["text"].as_str().unwrap().chars().count(), 4000);
    assert_eq!(event(7)["attrs"]["malformed"]["text"], json!({"said": "救命"}));

    // The originals of what lost content, each linked to its event.
    let lost: Vec<usize> = (0..cases.len())
        .filter(|i| {
            cases[*i]
                .2
                .iter()
                .any(|f| ["truncated", "bad_coordinates", "malformed"].contains(f))
        })
        .collect();
    let dead: Vec<DeadLetter> = h
        .read(Topic::DeadLetter, lost.len() + 1, QUIET.max(Duration::from_secs(5)))
        .await
        .into_iter()
        .map(|r| serde_json::from_value(r.value).unwrap())
        .collect();
    assert_eq!(dead.len(), lost.len(), "one original per call that lost content");
    let originals = lost.len();
    for i in lost {
        let id = accepted[i]["id"].as_str().unwrap();
        let d = dead
            .iter()
            .find(|d| d.event_id.as_deref() == Some(id))
            .unwrap_or_else(|| panic!("{}: no original", cases[i].0));
        let sent: Value = serde_json::from_slice(&d.raw_bytes()).unwrap();
        assert_eq!(sent, cases[i].1, "{}: the original, whole", cases[i].0);
        assert_eq!(d.source.as_deref(), Some("call110"));
    }

    // Posted again: a duplicate, with no second original.
    let again = h.post_json("/v1/events", &cases[4].1).await;
    assert_eq!(again.body["accepted"][0]["duplicate"], true, "{}", again.body);
    assert_eq!(h.read(Topic::DeadLetter, originals + 1, QUIET).await.len(), originals);

    // Still refused: what cannot be an event at all.
    let reply = h.post_json("/v1/events", &set("source_id", json!(""))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.body);
}

#[tokio::test]
async fn only_sources_and_admins_may_post_and_auth_failures_are_not_dead_lettered() {
    let h = start("ingest-auth", BrokerChoice::RealIfAvailable, |_| {}).await;
    let body = serde_json::to_vec(&call(&unique("auth"))).unwrap();
    let ct = Some("application/json");
    let none = h.post_as("/v1/events", ct, body.clone(), None).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.body["error"], "unauthorized");
    let forged = bus::auth::TokenKeys::new("another-secret")
        .mint("x", Role::Source, &[], None, Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        h.post_as("/v1/events", ct, body.clone(), Some(&forged)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.post_as("/v1/events", ct, body.clone(), Some("garbage")).await.status,
        StatusCode::UNAUTHORIZED
    );
    for role in [Role::Operator, Role::Analyst, Role::Unit] {
        let t = token(&h.ctx, role);
        for path in ["/v1/events", "/v1/alerts/cap", "/v1/positions"] {
            let reply = h.post_as(path, ct, body.clone(), Some(&t)).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{role:?} {path}");
            assert_eq!(reply.body["error"], "forbidden");
        }
    }
    let admin = token(&h.ctx, Role::Admin);
    assert_eq!(
        h.post_as("/v1/events", ct, body, Some(&admin)).await.status,
        StatusCode::ACCEPTED
    );
    assert!(h.read(Topic::DeadLetter, 1, QUIET).await.is_empty());
}

/// What a malformed input must produce.
enum Expect {
    /// The whole body is refused with this status and error code (and,
    /// where given, a field error naming this path).
    Whole(u16, &'static str, Option<&'static str>),
    /// The body parses but its one item is rejected (400) naming this
    /// field.
    Item(&'static str),
}

struct Case {
    name: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    expect: Expect,
    /// The raw bytes of the dead letter, where not the whole body.
    dead_raw: Option<Vec<u8>>,
}

fn case(
    name: &'static str,
    path: &'static str,
    ct: Option<&'static str>,
    body: impl Into<Vec<u8>>,
    expect: Expect,
) -> Case {
    Case {
        name,
        path,
        content_type: ct,
        body: body.into(),
        expect,
        dead_raw: None,
    }
}

const MAX_BODY: usize = 16 * 1024;
const MAX_BATCH: usize = 5;
const JSON: Option<&str> = Some("application/json");
const CAP: Option<&str> = Some("application/cap+xml");
const CAP_NS: &str = "urn:oasis:names:tc:emergency:cap:1.2";

fn with(field: &str, value: Value) -> Vec<u8> {
    edit(call(&unique("bad")), field, value)
}

/// A sensor alarm with `field` set (or removed, for null): since issue #20
/// a call is corrected and flagged rather than refused for its content,
/// so a field's refusal is shown on a sensor, which keeps the strict rules.
fn sensor_with(field: &str, value: Value) -> Vec<u8> {
    let mut v = call(&unique("bad"));
    v["source"] = json!("sensor");
    edit(v, field, value)
}

fn edit(mut v: Value, field: &str, value: Value) -> Vec<u8> {
    if value.is_null() {
        v.as_object_mut().unwrap().remove(field);
    } else {
        v[field] = value;
    }
    serde_json::to_vec(&v).unwrap()
}

fn cap_alert(header: &str, info: &str) -> String {
    format!(r#"<?xml version="1.0"?><alert xmlns="{CAP_NS}">{header}{info}</alert>"#)
}

const CAP_HEADER: &str = "<identifier>c1</identifier><sender>s</sender><sent>2026-11-22T10:00:00+08:00</sent><status>Actual</status><msgType>Alert</msgType><scope>Public</scope>";
const CAP_INFO: &str = "<info><category>Fire</category><event>Fire</event><urgency>Immediate</urgency><severity>Severe</severity><certainty>Observed</certainty></info>";

fn cases() -> Vec<Case> {
    use Expect::*;
    let ev = "/v1/events";
    let mut location = serde_json::from_slice::<Value>(&sensor_with("x", Value::Null)).unwrap();
    location["location"]["lat"] = json!(91.5);
    let bad_element = serde_json::to_vec(&location).unwrap();
    let mut array_body = b"[".to_vec();
    array_body.extend_from_slice(&bad_element);
    array_body.push(b']');
    let oversize = format!(r#"{{"source":"call110","text":"{}"}}"#, "x".repeat(MAX_BODY + 100));
    let six = serde_json::to_vec(&(0..6).map(|i| call(&format!("six-{i}"))).collect::<Vec<_>>()).unwrap();
    let bad_line = br#"{"source": "call110", "source_id": oops}"#.to_vec();
    let deep = "[".repeat(300) + &"]".repeat(300);

    vec![
        case(
            "unterminated json",
            ev,
            JSON,
            r#"{"source":"call110","source_id":"t1""#,
            Whole(400, "invalid_json", Some("")),
        ),
        case(
            "trailing garbage",
            ev,
            JSON,
            r#"{"source":"call110"} and more"#,
            Whole(400, "invalid_json", None),
        ),
        case(
            "single quotes",
            ev,
            JSON,
            "{'source':'call110'}",
            Whole(400, "invalid_json", None),
        ),
        case("json too deep", ev, JSON, deep, Whole(400, "invalid_json", None)),
        case(
            "invalid utf-8",
            ev,
            JSON,
            b"{\"source\":\"call110\",\"text\":\"\xff\xfe\"}".to_vec(),
            Whole(400, "invalid_utf8", None),
        ),
        case("empty body", ev, JSON, "", Whole(400, "empty_body", None)),
        case("blank body", ev, JSON, " \n\t ", Whole(400, "empty_body", None)),
        case("empty array", ev, JSON, "[ ]", Whole(400, "empty_batch", None)),
        case(
            "batch over the limit",
            ev,
            JSON,
            six,
            Whole(413, "batch_too_large", None),
        ),
        Case {
            dead_raw: Some(oversize.as_bytes()[..MAX_BODY].to_vec()),
            ..case(
                "body over the limit",
                ev,
                JSON,
                oversize.clone(),
                Whole(413, "body_too_large", None),
            )
        },
        case(
            "text/plain",
            ev,
            Some("text/plain"),
            with("kind", json!("theft")),
            Whole(415, "unsupported_media_type", None),
        ),
        case(
            "xml to events",
            ev,
            Some("application/xml"),
            "<a/>",
            Whole(415, "unsupported_media_type", None),
        ),
        case(
            "form post",
            ev,
            Some("application/x-www-form-urlencoded"),
            "source=call110",
            Whole(415, "unsupported_media_type", None),
        ),
        case("missing source", ev, JSON, with("source", Value::Null), Item("source")),
        case("unknown source", ev, JSON, with("source", json!("fax")), Item("source")),
        case(
            "missing source_id",
            ev,
            JSON,
            with("source_id", Value::Null),
            Item("source_id"),
        ),
        case(
            "empty source_id",
            ev,
            JSON,
            with("source_id", json!("")),
            Item("source_id"),
        ),
        case(
            "long source_id",
            ev,
            JSON,
            with("source_id", json!("x".repeat(129))),
            Item("source_id"),
        ),
        case(
            "numeric source_id",
            ev,
            JSON,
            sensor_with("source_id", json!(110)),
            Item("source_id"),
        ),
        case(
            "sensor without location",
            ev,
            JSON,
            sensor_with("location", Value::Null),
            Item("location"),
        ),
        case(
            "latitude out of range",
            ev,
            JSON,
            sensor_with("location", json!({"lat": 91, "lon": 117})),
            Item("location.lat"),
        ),
        case(
            "longitude out of range",
            ev,
            JSON,
            sensor_with("location", json!({"lat": 36, "lon": -181})),
            Item("location.lon"),
        ),
        case(
            "latitude as text",
            ev,
            JSON,
            sensor_with("location", json!({"lat": "36.6", "lon": 117})),
            Item("location.lat"),
        ),
        case(
            "location as text",
            ev,
            JSON,
            sensor_with("location", json!("泉城路1号")),
            Item("location"),
        ),
        case(
            "occurred_at not rfc3339",
            ev,
            JSON,
            sensor_with("occurred_at", json!("yesterday")),
            Item("occurred_at"),
        ),
        case(
            "occurred_at in the future",
            ev,
            JSON,
            sensor_with("occurred_at", json!("2999-01-01T00:00:00Z")),
            Item("occurred_at"),
        ),
        case(
            "text too long",
            ev,
            JSON,
            sensor_with("text", json!("字".repeat(4001))),
            Item("text"),
        ),
        case("text as number", ev, JSON, sensor_with("text", json!(5)), Item("text")),
        case(
            "confidence over 1",
            ev,
            JSON,
            sensor_with("sensor", json!({"confidence": 1.5})),
            Item("sensor.confidence"),
        ),
        case(
            "caller as text",
            ev,
            JSON,
            sensor_with("caller", json!("13800000000")),
            Item("caller"),
        ),
        case(
            "attrs as list",
            ev,
            JSON,
            sensor_with("attrs", json!([1])),
            Item("attrs"),
        ),
        case("a bare string", ev, JSON, r#""robbery at the station""#, Item("")),
        case("a bare number", ev, JSON, "110", Item("")),
        Case {
            dead_raw: Some(bad_line.clone()),
            ..case(
                "ndjson bad line",
                ev,
                Some("application/x-ndjson"),
                [b"\n".to_vec(), bad_line.clone(), b"\n".to_vec()].concat(),
                Item(""),
            )
        },
        Case {
            dead_raw: Some(bad_element),
            ..case("bad array element", ev, JSON, array_body, Item("location.lat"))
        },
        case(
            "not xml",
            "/v1/alerts/cap",
            CAP,
            "this is not xml",
            Whole(400, "invalid_xml", None),
        ),
        case(
            "unbalanced xml",
            "/v1/alerts/cap",
            CAP,
            format!(r#"<alert xmlns="{CAP_NS}"><identifier>x</sender></alert>"#),
            Whole(400, "invalid_xml", None),
        ),
        case(
            "xml in latin-1 bytes",
            "/v1/alerts/cap",
            CAP,
            b"<alert>\xe9\xff</alert>".to_vec(),
            Whole(400, "invalid_xml", None),
        ),
        case(
            "not cap",
            "/v1/alerts/cap",
            CAP,
            "<rss><channel/></rss>",
            Whole(400, "not_cap", None),
        ),
        case(
            "cap 1.1 namespace",
            "/v1/alerts/cap",
            CAP,
            cap_alert(CAP_HEADER, CAP_INFO).replace("cap:1.2", "cap:1.1"),
            Whole(400, "not_cap", Some("alert")),
        ),
        case(
            "cap without identifier",
            "/v1/alerts/cap",
            CAP,
            cap_alert(&CAP_HEADER.replace("<identifier>c1</identifier>", ""), CAP_INFO),
            Whole(400, "not_cap", Some("alert.identifier")),
        ),
        case(
            "cap info without urgency",
            "/v1/alerts/cap",
            CAP,
            cap_alert(CAP_HEADER, &CAP_INFO.replace("<urgency>Immediate</urgency>", "")),
            Whole(400, "not_cap", Some("alert.info[0].urgency")),
        ),
        case(
            "cap with more infos than max_cap_infos",
            "/v1/alerts/cap",
            CAP,
            cap_alert(CAP_HEADER, &CAP_INFO.repeat(33)),
            Whole(413, "too_many_infos", Some("info")),
        ),
        case(
            "billion laughs",
            "/v1/alerts/cap",
            CAP,
            r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">]><alert>&lol2;</alert>"#,
            Whole(400, "xml_doctype_forbidden", None),
        ),
        case(
            "external entity",
            "/v1/alerts/cap",
            CAP,
            r#"<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><alert>&xxe;</alert>"#,
            Whole(400, "xml_doctype_forbidden", None),
        ),
        case(
            "undeclared entity",
            "/v1/alerts/cap",
            CAP,
            cap_alert(CAP_HEADER, "<note>&xxe;</note>"),
            Whole(400, "xml_entity_forbidden", None),
        ),
        case(
            "json to cap",
            "/v1/alerts/cap",
            JSON,
            r#"{"alert": 1}"#,
            Whole(415, "unsupported_media_type", None),
        ),
        Case {
            dead_raw: Some(br#"{"unit":"p-1","lat":95,"lon":117}"#.to_vec()),
            ..case(
                "position off the globe",
                "/v1/positions",
                JSON,
                r#"[{"unit":"p-1","lat":95,"lon":117}]"#,
                Item("lat"),
            )
        },
        case(
            "position without unit",
            "/v1/positions",
            JSON,
            r#"{"lat":36.6,"lon":117}"#,
            Item("unit"),
        ),
    ]
}

#[tokio::test]
async fn every_malformed_input_gets_its_status_its_errors_and_a_dead_letter() {
    let h = start("ingest-table", BrokerChoice::RealIfAvailable, |c| {
        c.ingest.max_body_bytes = MAX_BODY;
        c.ingest.max_batch = MAX_BATCH;
    })
    .await;
    let cases = cases();
    assert!(cases.len() >= 30);
    for c in &cases {
        let reply = h.post(c.path, c.content_type, c.body.clone()).await;
        match c.expect {
            Expect::Whole(status, code, field) => {
                assert_eq!(reply.status.as_u16(), status, "{}: {}", c.name, reply.body);
                assert_eq!(reply.body["error"], code, "{}: {}", c.name, reply.body);
                assert!(
                    reply.body["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{}",
                    c.name
                );
                if let Some(field) = field {
                    let fields: Vec<&str> = reply.body["errors"]
                        .as_array()
                        .unwrap_or_else(|| panic!("{}: no errors in {}", c.name, reply.body))
                        .iter()
                        .filter_map(|e| e["field"].as_str())
                        .collect();
                    assert!(fields.contains(&field), "{}: {field} not in {fields:?}", c.name);
                }
            }
            Expect::Item(field) => {
                assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}: {}", c.name, reply.body);
                assert_eq!(reply.body["accepted"], json!([]), "{}", c.name);
                let rejected = &reply.body["rejected"][0];
                assert_eq!(rejected["index"], 0, "{}", c.name);
                let fields: Vec<&str> = rejected["errors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|e| e["field"].as_str())
                    .collect();
                assert!(fields.contains(&field), "{}: {field} not in {fields:?}", c.name);
            }
        }
    }

    let mut dead: Vec<DeadLetter> = h
        .read(Topic::DeadLetter, cases.len(), WAIT)
        .await
        .into_iter()
        .map(|r| serde_json::from_value(r.value).unwrap())
        .collect();
    assert_eq!(dead.len(), cases.len(), "one dead letter per case");
    for c in &cases {
        let raw = c.dead_raw.clone().unwrap_or_else(|| c.body.clone());
        let channel = if c.path == "/v1/alerts/cap" { "cap" } else { "http" };
        let found = dead
            .iter()
            .position(|d| d.raw_bytes() == raw && d.channel.as_str() == channel)
            .unwrap_or_else(|| panic!("{}: no dead letter with its bytes", c.name));
        let d = dead.swap_remove(found);
        assert!(!d.errors.is_empty(), "{}", c.name);
        assert_eq!(d.content_type.as_deref(), c.content_type, "{}", c.name);
    }
    assert!(
        h.read(Topic::Events, 1, QUIET).await.is_empty(),
        "no malformed input became an event"
    );
}

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/cap");

#[tokio::test]
async fn the_four_cap_fixtures_are_accepted() {
    let h = start("ingest-cap", BrokerChoice::RealIfAvailable, |_| {}).await;
    let fixtures = [
        ("v1dot2_appendix_a1_homeland_security.xml", 1),
        ("v1dot2_appendix_a2_thunderstorm.xml", 1),
        ("v1dot2_appendix_a3_earthquake_update.xml", 1),
        ("v1dot2_appendix_a4_amber_alert.xml", 2),
    ];
    for (name, count) in fixtures {
        let xml = std::fs::read(format!("{FIXTURES}/{name}")).unwrap();
        let ct = if count == 2 {
            "application/xml"
        } else {
            "application/cap+xml"
        };
        let reply = h.post("/v1/alerts/cap", Some(ct), xml).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{name}: {}", reply.body);
        assert_eq!(ids(&reply.body).len(), count, "{name}");
    }
    let events = h.read(Topic::Events, 5, WAIT).await;
    assert_eq!(events.len(), 5);
    let by = |id: &str| -> Vec<Value> {
        events
            .iter()
            .map(|r| r.value.clone())
            .filter(|e| e["attrs"]["cap_identifier"] == id)
            .collect()
    };
    for e in events.iter().map(|r| &r.value) {
        assert_eq!(e["source"], "alert");
        assert!(e["attrs"]["cap_urgency"].is_string() && e["attrs"]["cap_certainty"].is_string());
    }

    let homeland = &by("43b080713727")[0];
    assert!(homeland.get("location").is_none());
    assert_eq!(
        homeland["jurisdiction"], "shiju",
        "routed by area description to the fallback"
    );
    assert_eq!(
        homeland["attrs"]["area_desc"],
        "U.S. nationwide and interests worldwide"
    );
    assert_eq!(homeland["cell"], Value::Null);

    let storm = &by("KSTO1055887203")[0];
    let (lat, lon) = (
        storm["location"]["lat"].as_f64().unwrap(),
        storm["location"]["lon"].as_f64().unwrap(),
    );
    assert!(
        (38.40..38.55).contains(&lat) && (-120.0..-119.85).contains(&lon),
        "centroid {lat},{lon}"
    );
    assert!(storm["cell"].is_string());

    let quake = &by("TRI13970876.2")[0];
    assert_eq!(quake["location"], json!({"lat": 32.9525, "lon": -115.5527}));
    assert_eq!(quake["attrs"]["cap_msg_type"], "Update");
    assert_eq!(quake["attrs"]["cap_references"], json!(["TRI13970876.1"]));

    let mut amber = by("KAR0-0306112239-SW");
    amber.sort_by_key(|e| e["source_id"].as_str().unwrap().to_owned());
    assert_eq!(amber.len(), 2);
    assert_eq!(amber[0]["source_id"], "KAR0-0306112239-SW#0");
    assert_eq!(amber[1]["attrs"]["language"], "es-US");
    for e in &amber {
        assert_eq!(e["kind"], "missing_person");
        assert!(e.get("location").is_none());
    }

    // The same alert again is a duplicate, per info.
    let xml = std::fs::read(format!("{FIXTURES}/v1dot2_appendix_a4_amber_alert.xml")).unwrap();
    let again = h.post("/v1/alerts/cap", Some("application/cap+xml"), xml).await;
    assert!(ids(&again.body).iter().all(|a| a.2), "{}", again.body);
}

#[tokio::test]
async fn positions_move_units_without_changing_what_they_do() {
    let h: Harness = start("ingest-avl", BrokerChoice::RealIfAvailable, |_| {}).await;
    let roster = h.ctx.config.units[0].clone();
    let stranger = unique("new-car");
    // A roster unit the router already dispatched.
    let busy = bus::model::Unit {
        reason: None,
        id: roster.id.clone(),
        unit_type: roster.unit_type,
        jurisdiction: roster.jurisdiction.clone(),
        status: UnitStatus::EnRoute,
        lat: Some(roster.home[0]),
        lon: Some(roster.home[1]),
        at: chrono::Utc::now(),
        task: Some("task-1".into()),
        version: 0,
        speed_kmh: None,
        name: None,
    };
    h.ctx.store.put_unit(&busy).await.unwrap();

    // A roster unit the store has not seen yet: far from home, still its
    // roster type and jurisdiction.
    let listed = h.ctx.config.units[1].clone();
    let reported = (busy.at + chrono::Duration::seconds(1)).to_rfc3339();
    let body = json!([
        {"unit": roster.id, "lat": 36.67, "lon": 117.03, "at": reported, "speed_kmh": 40.0},
        {"unit": stranger, "lat": 36.6683, "lon": 117.0204},
        {"unit": "x", "lat": 36.6, "lon": 200},
        {"unit": listed.id, "lat": 38.9, "lon": -77.0}
    ]);
    let reply = h.post_json("/v1/positions", &body).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(reply.body["accepted"].as_array().unwrap().len(), 3);
    assert_eq!(reply.body["accepted"][0]["source_id"], roster.id.as_str());
    assert_eq!(reply.body["rejected"][0]["index"], 2);
    assert_eq!(reply.body["rejected"][0]["errors"][0]["field"], "lon");

    let stored = h.ctx.store.unit(&roster.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.task.as_deref()),
        (UnitStatus::EnRoute, Some("task-1"))
    );
    assert_eq!(
        (stored.lat, stored.lon, stored.speed_kmh),
        (Some(36.67), Some(117.03), Some(40.0))
    );

    // A report older than what the store has (GPS fixes arrive out of
    // order) does not move the unit back.
    let stale = json!([{"unit": roster.id, "lat": 36.60, "lon": 117.00, "at": busy.at.to_rfc3339()}]);
    assert_eq!(h.post_json("/v1/positions", &stale).await.status, StatusCode::ACCEPTED);
    let stored = h.ctx.store.unit(&roster.id).await.unwrap().unwrap();
    assert_eq!((stored.lat, stored.lon), (Some(36.67), Some(117.03)));

    let new = h.ctx.store.unit(&stranger).await.unwrap().unwrap();
    assert_eq!(new.status, UnitStatus::OffDuty);
    assert_eq!(new.unit_type, bus::model::UnitType::PatrolCar);
    assert_eq!(new.jurisdiction, "quancheng");

    let listed_now = h.ctx.store.unit(&listed.id).await.unwrap().unwrap();
    assert_eq!(
        (
            listed_now.unit_type,
            listed_now.jurisdiction.as_str(),
            listed_now.status
        ),
        (listed.unit_type, listed.jurisdiction.as_str(), UnitStatus::OffDuty)
    );
    assert_eq!(listed_now.name.as_deref(), Some(listed.name.as_str()));

    // Every accepted report, the stale one too, is on the positions topic:
    // where the unit was, nothing of what it does.
    let positions = h.read(Topic::Positions, 4, WAIT).await;
    assert_eq!(positions.len(), 4);
    let keys: Vec<_> = positions.iter().filter_map(|r| r.key.clone()).collect();
    assert!(keys.contains(&roster.id) && keys.contains(&stranger), "{keys:?}");
    assert!(positions.iter().all(|r| r.headers["ce_type"] == "qzx.position.v1"));
    let first = positions
        .iter()
        .map(|r| &r.value)
        .find(|v| v["unit"] == roster.id.as_str() && v["lat"] == 36.67)
        .expect("the roster unit's report");
    assert_eq!(
        (first["lon"].as_f64(), first["speed_kmh"].as_f64()),
        (Some(117.03), Some(40.0))
    );
    assert!(first.get("status").is_none() && first.get("task").is_none(), "{first}");
    // Only the router writes the units topic: nothing of ingest's is there
    // (the reports above were acknowledged before the 202, so a short wait
    // is enough).
    assert!(h.read(Topic::Units, 1, Duration::from_secs(2)).await.is_empty());
    assert_eq!(h.read(Topic::DeadLetter, 1, WAIT).await.len(), 1);
}
