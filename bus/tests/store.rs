//! Runs the shared store suite (`bus::store::suite`) against both stores.
//!
//! The Redis run needs a server: `TEST_REDIS_URL=redis://127.0.0.1:6390/0`.
//! Without it the test is skipped, unless `TEST_STACK` is set (the full
//! test stack is meant to be up), when a missing or unreachable Redis fails
//! the test rather than passing it silently. Each run uses a key prefix of
//! its own and deletes its keys afterwards.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use bus::store::{MemoryStore, RedisStore, suite};
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
    let stack = std::env::var_os("TEST_STACK").is_some();
    let url = match std::env::var("TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if stack => {
            panic!("TEST_STACK is set but TEST_REDIS_URL is not: the Redis store suite cannot run")
        }
        _ => {
            println!(
                "skipped: set TEST_REDIS_URL (e.g. redis://127.0.0.1:6390/0) to run the Redis store suite"
            );
            return;
        }
    };
    let prefix = format!("qzx-test-{}:", uuid::Uuid::now_v7());
    let store = RedisStore::connect(&url, &prefix)
        .await
        .unwrap_or_else(|e| panic!("TEST_REDIS_URL is set but Redis cannot be used: {e}"));

    let started = Instant::now();
    // Clean up even when an assertion fails, then fail as the suite did.
    let outcome = AssertUnwindSafe(suite::run_all(&store))
        .catch_unwind()
        .await;
    let elapsed = started.elapsed();
    let deleted = delete_keys(&url, &prefix).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    println!("redis store suite passed in {elapsed:?}");
    let deleted =
        deleted.unwrap_or_else(|e| panic!("cannot delete the test keys under {prefix}: {e}"));
    assert!(
        deleted > 0,
        "the suite wrote keys under {prefix}, so some were deleted"
    );
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
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}
