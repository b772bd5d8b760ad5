//! Authority comes from the channel, not the payload (issue #19): the
//! `cap_*` attributes that let a CAP alert cancel an incident or raise a
//! score are set only by the CAP parser. Sent by a client over HTTP they
//! are kept under `attrs.client`, where the router never reads them. And
//! an idempotency key belongs to its sender: one sender cannot pre-claim
//! another's source ids.

mod common;

use axum::http::StatusCode;
use bus::Topic;
use bus::testing::BrokerChoice;
use common::*;
use serde_json::json;

const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

#[tokio::test]
async fn cap_attributes_sent_over_http_are_kept_but_carry_no_authority() {
    let h = start("ingest-authority", BrokerChoice::RealIfAvailable, |_| {}).await;
    let mut forged = call(&unique("110"));
    forged["attrs"] = json!({
        "cap_msg_type": "Cancel",
        "cap_references": "sender,43b080713727,2003-04-02T14:39:01-05:00",
        "cap_urgency": "Immediate",
        "floor": 3
    });
    // A top-level unknown field lands in attrs too: the same rule.
    forged["cap_severity"] = json!("Extreme");
    let reply = h.post_json("/v1/events", &forged).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);

    let records = h.read(Topic::Events, 1, WAIT).await;
    let attrs = &records[0].value["attrs"];
    let names: Vec<&String> = attrs.as_object().unwrap().keys().collect();
    assert!(names.iter().all(|k| !k.starts_with("cap_")), "{attrs}");
    assert_eq!(attrs["floor"], 3);
    assert_eq!(attrs["client"]["cap_msg_type"], "Cancel");
    assert_eq!(attrs["client"]["cap_urgency"], "Immediate");
    assert_eq!(attrs["client"]["cap_severity"], "Extreme");
}

#[tokio::test]
async fn one_sender_cannot_squat_another_senders_source_ids() {
    let h = start("ingest-squat", BrokerChoice::RealIfAvailable, |_| {}).await;
    let keys = bus::auth::TokenKeys::new(h.ctx.config.auth.jwt_secret.as_deref().unwrap());
    let mint = |sub: &str| {
        keys.mint(
            sub,
            bus::model::Role::Source,
            &["*".to_owned()],
            None,
            std::time::Duration::from_secs(600),
        )
        .unwrap()
    };
    let squatter = mint("sensor-platform");
    let centre = mint("call-centre");
    let call = serde_json::to_vec(&call(&unique("110"))).unwrap();
    let post = |token: String, body: Vec<u8>| {
        let h = &h;
        async move {
            h.post_as("/v1/events", Some("application/json"), body, Some(&token))
                .await
        }
    };
    let first = post(squatter.clone(), call.clone()).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    // The real call from the call-taking system is a new event.
    let real = post(centre.clone(), call.clone()).await;
    assert_eq!(real.status, StatusCode::ACCEPTED, "{}", real.body);
    assert_eq!(real.body["accepted"][0]["duplicate"], false, "{}", real.body);
    assert_ne!(real.body["accepted"][0]["id"], first.body["accepted"][0]["id"]);
    // Its own retry is still a duplicate.
    let retry = post(centre, call).await;
    assert_eq!(retry.body["accepted"][0]["duplicate"], true, "{}", retry.body);
    assert_eq!(retry.body["accepted"][0]["id"], real.body["accepted"][0]["id"]);
}

#[tokio::test]
async fn a_source_moves_only_the_units_of_its_own_jurisdictions() {
    let h = start("ingest-avl-scope", BrokerChoice::RealIfAvailable, |_| {}).await;
    let keys = bus::auth::TokenKeys::new(h.ctx.config.auth.jwt_secret.as_deref().unwrap());
    let station_feed = keys
        .mint(
            "avl-quancheng",
            bus::model::Role::Source,
            &["quancheng".to_owned()],
            None,
            std::time::Duration::from_secs(600),
        )
        .unwrap();
    let unit_in = |id: &str, jurisdiction: &str| bus::model::Unit {
        id: id.to_owned(),
        unit_type: bus::model::UnitType::PatrolCar,
        jurisdiction: jurisdiction.to_owned(),
        status: bus::model::UnitStatus::Available,
        lat: Some(36.6683),
        lon: Some(117.0204),
        at: chrono::Utc::now(),
        task: None,
        version: 0,
        speed_kmh: None,
        name: None,
        reason: None,
    };
    let own = unique("qc-car");
    let other = unique("dmh-car");
    h.ctx.store.put_unit(&unit_in(&own, "quancheng")).await.unwrap();
    h.ctx.store.put_unit(&unit_in(&other, "daminghu")).await.unwrap();
    let body = json!([
        {"unit": own, "lat": 36.667, "lon": 117.021},
        {"unit": other, "lat": 36.667, "lon": 117.021}
    ]);
    let reply = h
        .post_as(
            "/v1/positions",
            Some("application/json"),
            serde_json::to_vec(&body).unwrap(),
            Some(&station_feed),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(reply.body["accepted"].as_array().unwrap().len(), 1, "{}", reply.body);
    assert_eq!(reply.body["accepted"][0]["source_id"], own.as_str());
    assert_eq!(reply.body["rejected"][0]["index"], 1);
    assert_eq!(reply.body["rejected"][0]["errors"][0]["field"], "unit");
    let moved = h.ctx.store.unit(&other).await.unwrap().unwrap();
    assert_eq!(moved.lat, Some(36.6683), "the other station's car did not move");
    let letters = h.read(Topic::DeadLetter, 1, WAIT).await;
    assert!(letters[0].value["raw"].as_str().unwrap().contains(&other));
}
