//! Test support shared by every crate's integration tests: a
//! [`ServiceContext`] on the brokers and store the test script started, with
//! a random topic and key prefix per test so tests never see each other.
//!
//! `scripts/test.sh` sets `TEST_KAFKA_BROKERS` (the real Kafka-protocol
//! broker), `TEST_REDIS_URL` and `TEST_MQTT_URL`, and `TEST_STACK=1`. With
//! `TEST_STACK=1`, a missing or unreachable service fails the test; without
//! it (a plain `cargo test`), tests fall back to the embedded broker and the
//! in-memory store. Never used by the services themselves.

use std::sync::Arc;

use crate::config::Config;
use crate::kafka::{Brokers, ensure_topics};
use crate::service::ServiceContext;
use crate::store::SharedStore;
use crate::topics::Topic;

/// True when the test script set the stack up: tests must not skip.
pub fn stack_required() -> bool {
    std::env::var("TEST_STACK").is_ok_and(|v| v == "1")
}

/// The real broker's address from the test script, if any.
pub fn real_brokers() -> Option<String> {
    env_or_required("TEST_KAFKA_BROKERS")
}

pub fn redis_url() -> Option<String> {
    env_or_required("TEST_REDIS_URL")
}

pub fn mqtt_url() -> Option<String> {
    env_or_required("TEST_MQTT_URL")
}

fn env_or_required(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if stack_required() => panic!("TEST_STACK=1 but {name} is not set: run the tests through scripts/test.sh"),
        _ => None,
    }
}

/// A unique prefix for topics, groups and keys: `t<uuid>.`.
pub fn unique_prefix(name: &str) -> String {
    format!("t-{name}-{}.", uuid::Uuid::now_v7().simple())
}

/// Which broker a test wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerChoice {
    /// The real broker when the script started one, else embedded.
    RealIfAvailable,
    /// Always a fresh embedded broker (fault injection).
    Embedded,
}

/// A context with fresh topics (all of them created) and a fresh store
/// namespace. `tweak` may change the configuration first.
pub async fn context(name: &str, choice: BrokerChoice, tweak: impl FnOnce(&mut Config)) -> ServiceContext {
    let mut config = Config::defaults();
    let prefix = unique_prefix(name);
    config.kafka.topic_prefix = prefix.clone();
    config.redis.key_prefix = format!("{prefix}:");
    // Tests use fewer partitions: faster to create and to rebalance.
    config.kafka.partitions = 3;
    config.auth.jwt_secret = Some("test-secret".into());
    tweak(&mut config);

    let brokers = match (choice, real_brokers()) {
        (BrokerChoice::RealIfAvailable, Some(b)) => Brokers::External(b),
        _ => Brokers::start_embedded(&config.kafka).expect("embedded broker starts"),
    };
    let store: SharedStore = match redis_url() {
        Some(url) => Arc::new(
            crate::store::RedisStore::connect(&url, &config.redis.key_prefix)
                .await
                .unwrap_or_else(|e| panic!("redis at {url} is unreachable: {e}")),
        ),
        None => Arc::new(crate::store::MemoryStore::new()),
    };
    config.kafka.brokers = match &brokers {
        Brokers::External(b) => Some(b.clone()),
        Brokers::Embedded(_) => None,
    };
    config.redis.url = store_url(&store);
    let ctx = ServiceContext::new(config, brokers, store);
    ensure_topics(&ctx.brokers, &ctx.config.kafka, &ctx.topics, &Topic::ALL)
        .await
        .unwrap_or_else(|e| panic!("topics for {prefix}: {e}"));
    ctx
}

fn store_url(store: &SharedStore) -> Option<String> {
    (store.kind() == "redis").then(|| redis_url().unwrap_or_default())
}
