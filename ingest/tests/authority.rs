//! Authority comes from the channel, not the payload (issue #19): the
//! `cap_*` attributes that let a CAP alert cancel an incident or raise a
//! score are set only by the CAP parser. Sent by a client over HTTP they
//! are kept under `attrs.client`, where the router never reads them.

mod common;

use bus::testing::BrokerChoice;
use axum::http::StatusCode;
use bus::Topic;
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
