//! The HTTP edge (issue #19): a body that trickles in is cut off at
//! `http.body_read_timeout_s` with 408, and what came is dead-lettered (a
//! partial body is not an event, but nothing sent is lost).

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bus::Topic;
use bus::testing::BrokerChoice;
use common::*;
use futures::StreamExt;
use tower::ServiceExt as _;

#[tokio::test]
async fn a_trickled_body_gets_408_and_a_dead_letter() {
    let h = start("ingest-trickle", BrokerChoice::RealIfAvailable, |c| {
        c.http.body_read_timeout_s = 1
    })
    .await;
    // The first bytes of a call, then nothing more: the connection stays
    // open and silent.
    let first: Result<Vec<u8>, std::io::Error> = Ok(br#"{"source":"call110","source_id":"slow-1","#.to_vec());
    let trickle = futures::stream::iter([first]).chain(futures::stream::pending());
    let request = Request::post("/v1/events")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", h.source_token()))
        .body(Body::from_stream(trickle))
        .unwrap();
    let started = std::time::Instant::now();
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), h.router.clone().oneshot(request))
        .await
        .expect("answered, not held")
        .unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "body_timeout");
    let letters = h.read(Topic::DeadLetter, 1, std::time::Duration::from_secs(20)).await;
    assert!(
        letters[0].value["raw"].as_str().unwrap().contains("slow-1"),
        "{}",
        letters[0].value
    );
}
