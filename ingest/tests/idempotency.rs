//! The idempotency key protocol across requests (and so across ingest
//! processes, which share only the Store): concurrent requests with one
//! source_id produce one event; a request still in flight elsewhere makes a
//! repeat wait, then 503, never a false duplicate; a dead owner's marker is
//! taken over.

mod common;

use std::time::Duration;

use axum::http::{StatusCode, header};
use bus::Topic;
use bus::model::Source;
use bus::testing::BrokerChoice;
use common::{Harness, call, start, unique};
use ingest::pipeline::idempotency_key;

/// Claims `source_id`'s key as a live request elsewhere would (pending,
/// expiring in ten minutes): the key and the marker.
async fn held_by_another_request(h: &Harness, source_id: &str) -> (String, String) {
    let key = idempotency_key("test-source", Source::Call110, source_id);
    let live = format!("pending:other-id:{}", chrono::Utc::now().timestamp_millis() + 600_000);
    let claimed = h
        .ctx
        .store
        .claim_key(&key, &live, Duration::from_secs(600))
        .await
        .unwrap();
    assert!(claimed.is_none(), "the key was free");
    (key, live)
}

#[tokio::test]
async fn concurrent_requests_with_one_source_id_produce_one_event() {
    let h = start("ingest-race", BrokerChoice::RealIfAvailable, |_| {}).await;
    let sid = unique("race");
    let body = call(&sid);
    let (a, b, c) = tokio::join!(
        h.post_json("/v1/events", &body),
        h.post_json("/v1/events", &body),
        h.post_json("/v1/events", &body)
    );
    let replies = [a, b, c];
    let mut ids = Vec::new();
    let mut fresh = 0;
    for r in &replies {
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        ids.push(r.body["accepted"][0]["id"].as_str().unwrap().to_owned());
        if r.body["accepted"][0]["duplicate"] == false {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1, "exactly one request produced the event");
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let events = h.read(Topic::Events, 2, Duration::from_secs(3)).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].value["id"], ids[0].as_str());
}

#[tokio::test]
async fn a_request_in_flight_elsewhere_gives_503_not_a_false_duplicate() {
    let h = start("ingest-pending", BrokerChoice::RealIfAvailable, |c| {
        c.kafka.delivery_timeout_ms = 500;
    })
    .await;
    let sid = unique("pending");
    let (key, live) = held_by_another_request(&h, &sid).await;

    let reply = h.post_json("/v1/events", &call(&sid)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.body);
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
    assert_eq!(
        h.ctx.store.get_key(&key).await.unwrap(),
        Some(live),
        "the other request's key is untouched"
    );

    // The other request finishes: now it is a duplicate of its event.
    h.ctx
        .store
        .set_key(&key, "other-id", Duration::from_secs(600))
        .await
        .unwrap();
    let reply = h.post_json("/v1/events", &call(&sid)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert_eq!(reply.body["accepted"][0]["id"], "other-id");
    assert_eq!(reply.body["accepted"][0]["duplicate"], true);
    assert!(h.read(Topic::Events, 1, Duration::from_secs(2)).await.is_empty());
}

#[tokio::test]
async fn a_dead_owners_pending_marker_is_taken_over() {
    let h = start("ingest-stale", BrokerChoice::RealIfAvailable, |_| {}).await;
    let sid = unique("stale");
    let key = idempotency_key("test-source", Source::Call110, &sid);
    h.ctx
        .store
        .claim_key(&key, "pending:dead-id:1", Duration::from_secs(600))
        .await
        .unwrap();
    let reply = h.post_json("/v1/events", &call(&sid)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
    assert_eq!(reply.body["accepted"][0]["duplicate"], false);
    let id = reply.body["accepted"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(h.ctx.store.get_key(&key).await.unwrap(), Some(id));
}

#[tokio::test]
async fn a_batch_refused_for_one_busy_key_releases_the_others() {
    let h = start("ingest-pending-batch", BrokerChoice::RealIfAvailable, |c| {
        c.kafka.delivery_timeout_ms = 500;
    })
    .await;
    let busy = unique("pending");
    let fresh = unique("fresh");
    held_by_another_request(&h, &busy).await;

    // Both keys are claimed together; the busy one refuses the request.
    let ndjson = format!("{}\n{}\n", call(&fresh), call(&busy));
    let reply = h.post("/v1/events", Some("application/x-ndjson"), ndjson).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{}", reply.body);
    let fresh_key = idempotency_key("test-source", Source::Call110, &fresh);
    assert_eq!(
        h.ctx.store.get_key(&fresh_key).await.unwrap(),
        None,
        "the fresh event's claim was released, so its retry is not a duplicate"
    );

    let retry = h.post_json("/v1/events", &call(&fresh)).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED, "{}", retry.body);
    assert_eq!(retry.body["accepted"][0]["duplicate"], false);
    assert_eq!(h.read(Topic::Events, 2, Duration::from_secs(2)).await.len(), 1);
}
