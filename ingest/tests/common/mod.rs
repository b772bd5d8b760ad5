//! Shared helpers of the ingest integration tests: start ingest on a fresh
//! context, post through the router without a socket, and read topics back
//! with a plain rdkafka consumer (what any Kafka client would see).

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use bus::auth::TokenKeys;
use bus::config::Config;
use bus::model::Role;
use bus::testing::{self, BrokerChoice};
use bus::{ServiceContext, Supervisor, Topic};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use tower::ServiceExt as _;

pub struct Harness {
    pub ctx: ServiceContext,
    pub router: Router,
    pub sup: Supervisor,
}

pub async fn start(name: &str, choice: BrokerChoice, tweak: impl FnOnce(&mut Config)) -> Harness {
    let ctx = testing::context(name, choice, tweak).await;
    let mut sup = Supervisor::default();
    let router = ingest::start(&ctx, &mut sup).await.expect("ingest starts");
    Harness { ctx, router, sup }
}

pub fn token(ctx: &ServiceContext, role: Role) -> String {
    let keys = TokenKeys::new(ctx.config.auth.jwt_secret.as_deref().unwrap());
    let unit = (role == Role::Unit).then_some("u-1");
    keys.mint("test-source", role, &["*".to_owned()], unit, Duration::from_secs(600))
        .unwrap()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Harness {
    pub fn source_token(&self) -> String {
        token(&self.ctx, Role::Source)
    }

    pub async fn post(&self, path: &str, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Reply {
        let token = self.source_token();
        self.post_as(path, content_type, body, Some(&token)).await
    }

    pub async fn post_as(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Vec<u8>>,
        token: Option<&str>,
    ) -> Reply {
        let mut request = Request::post(path);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::from(body.into())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 16 << 20).await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, headers, body }
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.post(path, Some("application/json"), serde_json::to_vec(body).unwrap())
            .await
    }

    /// Every record of `topic`, waiting until at least `want` arrived (or
    /// `wait` passed).
    pub async fn read(&self, topic: Topic, want: usize, wait: Duration) -> Vec<Record> {
        let bootstrap = self.ctx.brokers.bootstrap().to_owned();
        let name = self.ctx.topics.name(topic);
        let partitions = self.ctx.config.kafka.partitions;
        tokio::task::spawn_blocking(move || read_plain(&bootstrap, &name, partitions, want, wait))
            .await
            .unwrap()
    }
}

#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<String>,
    pub value: Value,
    pub headers: HashMap<String, String>,
}

fn read_plain(bootstrap: &str, topic: &str, partitions: i32, want: usize, wait: Duration) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("ingest-test-{}", bus::model::new_id()))
        .set("enable.auto.commit", "false")
        .set("log_level", "3")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            got.push(Record {
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or(Value::Null),
                headers,
            });
        }
    }
    got
}

/// A 110 call as the contract shows it, with its own source_id.
pub fn call(source_id: &str) -> Value {
    serde_json::json!({
        "source": "call110",
        "source_id": source_id,
        "kind": "robbery",
        "occurred_at": "2026-11-22T14:00:00+08:00",
        "location": {"lat": 36.6683, "lon": 117.0204, "address": "历下区泉城路1号"},
        "text": "两名男子持刀抢劫路人",
        "caller": {"phone": "13800000000"},
        "attrs": {}
    })
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", bus::model::new_id())
}
