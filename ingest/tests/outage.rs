//! A broker outage on the embedded broker (fault injection): the client
//! gets 503 with Retry-After and never a false 202, and the same request
//! retried once the broker is back is accepted, not answered as a
//! duplicate — under the id of the attempt that timed out, which may have
//! reached Kafka after all: one call is never two events.

mod common;

use std::time::Duration;

use axum::http::{StatusCode, header};
use bus::Topic;
use bus::testing::BrokerChoice;
use common::{call, start, unique};

#[tokio::test]
async fn a_broker_outage_gives_503_and_the_retry_is_accepted_as_new() {
    let h = start("ingest-outage", BrokerChoice::Embedded, |c| {
        c.kafka.delivery_timeout_ms = 1500;
        c.kafka.embedded_brokers = 1;
        c.ingest.retry_after_s = 3;
    })
    .await;
    let before = h.post_json("/v1/events", &call(&unique("warm"))).await;
    assert_eq!(before.status, StatusCode::ACCEPTED, "{}", before.body);

    let broker = h.ctx.brokers.embedded().unwrap();
    broker.broker_down(1).unwrap();
    let during = unique("outage");
    let batch = serde_json::json!([call(&during), call(&unique("outage-b"))]);
    let refused = h.post_json("/v1/events", &batch).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refused.body);
    assert_eq!(refused.headers[header::RETRY_AFTER], "3");
    assert_eq!(refused.body["error"], "unavailable");
    assert!(
        refused.body.get("accepted").is_none(),
        "no event reported accepted: {}",
        refused.body
    );

    // The timed-out attempt may have landed: its key remembers its id.
    let key = ingest::pipeline::idempotency_key("test-source", bus::model::Source::Call110, &during);
    let marker = h.ctx.store.get_key(&key).await.unwrap().expect("a marker");
    let first_id = marker.strip_prefix("maybe:").expect("maybe:<event id>").to_owned();

    broker.broker_up(1).unwrap();
    // The client honours Retry-After; the producer needs a moment to
    // reconnect, and each refused attempt must again leave no key behind.
    let mut retry = h.post_json("/v1/events", &serde_json::json!([call(&during)])).await;
    for _ in 0..20 {
        if retry.status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        retry = h.post_json("/v1/events", &serde_json::json!([call(&during)])).await;
    }
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{}", retry.body);
    assert_eq!(
        retry.body["accepted"][0]["duplicate"], false,
        "the failed request is not taken for a duplicate"
    );
    let id = retry.body["accepted"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(id, first_id, "sent again under the first attempt's id");

    let events = h.read(Topic::Events, 3, Duration::from_secs(5)).await;
    let during_ids: Vec<_> = events
        .iter()
        .filter(|r| r.value["source_id"] == during.as_str())
        .map(|r| r.value["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(!during_ids.is_empty());
    assert!(
        during_ids.iter().all(|i| *i == id),
        "one event id for the call: {during_ids:?}"
    );
}
