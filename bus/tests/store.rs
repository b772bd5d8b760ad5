//! Runs the shared store suite (`bus::store::suite`) against both stores.
//!
//! The Redis run needs a server: `TEST_REDIS_URL=redis://127.0.0.1:6390/0`.
//! Without it the test is skipped, unless `TEST_STACK=1` (the full test
//! stack is meant to be up), when a missing or unreachable Redis fails the
//! test rather than passing it silently. Each run uses a key prefix of
//! its own and deletes its keys afterwards.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use bus::model::{Incident, IncidentStatus, Sla};
use bus::store::{Commit, MemoryStore, RedisStore, Store as _, StoreError, suite};
use chrono::{TimeZone as _, Utc};
use futures::FutureExt as _;

#[tokio::test]
async fn memory_store_passes_the_suite() {
    let store = MemoryStore::new();
    let started = Instant::now();
    suite::run_all(&store).await;
    println!("memory store suite passed in {:?}", started.elapsed());
}

#[tokio::test]
async fn redis_store_passes_the_suite() {
    let Some(url) = redis_url() else { return };
    let prefix = test_prefix();
    let store = connect(&url, &prefix).await;

    let started = Instant::now();
    // Clean up even when an assertion fails, then fail as the suite did.
    let outcome = AssertUnwindSafe(suite::run_all(&store)).catch_unwind().await;
    let elapsed = started.elapsed();
    let deleted = delete_keys(&url, &prefix).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    println!("redis store suite passed in {elapsed:?}");
    let deleted = deleted.unwrap_or_else(|e| panic!("cannot delete the test keys under {prefix}: {e}"));
    assert!(deleted > 0, "the suite wrote keys under {prefix}, so some were deleted");
}

/// What another program left under our keys is reported, naming the key,
/// and never panics.
#[tokio::test]
async fn redis_store_reports_corrupt_values() {
    let Some(url) = redis_url() else { return };
    let prefix = test_prefix();
    let store = connect(&url, &prefix).await;
    let client = redis::Client::open(url.as_str()).expect("redis url");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    for (key, value) in [
        ("unit:broken", "{not json"),
        ("incident:wrong-type", "a string, not a hash"),
        ("hist:wrong-type", "a string, not a stream"),
    ] {
        redis::cmd("SET")
            .arg(format!("{prefix}{key}"))
            .arg(value)
            .query_async::<()>(&mut raw)
            .await
            .expect("SET");
    }
    redis::cmd("HSET")
        .arg(format!("{prefix}incident:bad-version"))
        .arg("v")
        .arg("not a number")
        .arg("j")
        .arg("{}")
        .query_async::<()>(&mut raw)
        .await
        .expect("HSET");

    let outcome = AssertUnwindSafe(async {
        let corrupt_key = |result: Result<_, StoreError>| match result {
            Err(StoreError::Corrupt { key, .. }) => key,
            other => panic!("expected Corrupt, got {other:?}"),
        };
        assert_eq!(
            corrupt_key(store.unit("broken").await.map(drop)),
            format!("{prefix}unit:broken")
        );
        assert_eq!(
            corrupt_key(store.claim_unit("broken", "t").await.map(drop)),
            format!("{prefix}unit:broken")
        );
        assert_eq!(
            corrupt_key(store.incident("wrong-type").await.map(drop)),
            format!("{prefix}incident:wrong-type")
        );
        assert_eq!(
            corrupt_key(store.history_head("wrong-type").await.map(drop)),
            format!("{prefix}hist:wrong-type")
        );

        // A commit that meets corruption anywhere writes nothing at all,
        // and names the key, as put_incident and claim_unit do.
        let mut commit = Commit {
            incidents: vec![incident("bad-version")],
            set_keys: vec![("cm:never".to_owned(), "x".to_owned(), Duration::from_secs(60))],
            ..Commit::default()
        };
        assert_eq!(
            corrupt_key(store.put_incident(&incident("bad-version")).await),
            format!("{prefix}incident:bad-version")
        );
        assert_eq!(
            corrupt_key(store.commit(&commit).await.map(drop)),
            format!("{prefix}incident:bad-version")
        );
        commit.incidents = vec![incident("wrong-type")];
        assert_eq!(
            corrupt_key(store.commit(&commit).await.map(drop)),
            format!("{prefix}incident:wrong-type")
        );
        commit.incidents.clear();
        commit.expect_claims = vec![("broken".to_owned(), "t".to_owned())];
        assert_eq!(
            corrupt_key(store.commit(&commit).await.map(drop)),
            format!("{prefix}unit:broken")
        );
        assert_eq!(store.get_key("cm:never").await.unwrap(), None, "nothing written");
    })
    .catch_unwind()
    .await;
    let cleaned = delete_keys(&url, &prefix).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    cleaned.expect("delete the test keys");
}

/// The Redis to test against, or `None` to skip. `bus::testing` panics
/// instead when `TEST_STACK=1` says Redis should be there.
fn redis_url() -> Option<String> {
    let url = bus::testing::redis_url();
    if url.is_none() {
        println!("skipped: set TEST_REDIS_URL (e.g. redis://127.0.0.1:6390/0) to test the Redis store");
    }
    url
}

/// Keys of their own for each test, so tests never see each other's.
fn test_prefix() -> String {
    format!("qzx-test-{}:", uuid::Uuid::now_v7())
}

async fn connect(url: &str, prefix: &str) -> RedisStore {
    RedisStore::connect(url, prefix)
        .await
        .unwrap_or_else(|e| panic!("TEST_REDIS_URL is set but Redis cannot be used: {e}"))
}

/// Deletes every key under `prefix`; returns how many.
async fn delete_keys(url: &str, prefix: &str) -> redis::RedisResult<usize> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut cursor = 0u64;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            deleted += keys.len();
            redis::cmd("DEL").arg(&keys).query_async::<()>(&mut conn).await?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// An open incident at version 1, whatever its content.
fn incident(id: &str) -> Incident {
    let at = Utc.with_ymd_and_hms(2025, 3, 1, 8, 0, 0).single().expect("valid time");
    Incident {
        ladder: Default::default(),
        requested: Vec::new(),
        callers: Vec::new(),
        hold: false,
        candidates: Vec::new(),
        merged_into: None,
        merged: Vec::new(),
        split_from: None,
        id: id.to_owned(),
        version: 1,
        status: IncidentStatus::New,
        priority: 2,
        score: 60,
        kind: "theft".to_owned(),
        location: None,
        jurisdiction: "lixia".to_owned(),
        cell: None,
        desks: Vec::new(),
        events: Vec::new(),
        repeat_count: 0,
        diverted_to: None,
        created_at: at,
        updated_at: at,
        deadlines: None,
        sla: Sla::default(),
        units: Vec::new(),
        timeline: Vec::new(),
        text: None,
        disposition: None,
        feedback: None,
        follow_up_of: None,
        flags: Vec::new(),
    }
}
