//! The at-least-once consumer. Offsets are stored only after the handler
//! has returned `Ok` for a record — and a handler returns `Ok` only once
//! its outputs are acknowledged — so a crash replays, never skips. A
//! failing handler is retried with backoff on the same record, in order;
//! records are never skipped to make progress (a handler that cannot use a
//! record sends it to the dead-letter topic and returns `Ok`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Brokers;
use super::rejoin;
use crate::cloudevents::{CeAttributes, CeError};
use crate::config::KafkaConfig;
use crate::metrics;
use crate::topics::{Topic, Topics};

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("could not create the kafka consumer for group {group}: {source}")]
    Create { group: String, source: Box<KafkaError> },
    #[error("could not subscribe group {group} to {topics}: {source}")]
    Subscribe {
        group: String,
        topics: String,
        source: Box<KafkaError>,
    },
    #[error("kafka consumer failed: {0}")]
    Kafka(Box<KafkaError>),
}

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: Topic,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    /// The CloudEvents attributes, or why they are unusable.
    pub ce: Result<CeAttributes, CeError>,
    pub timestamp_ms: Option<i64>,
}

impl Received {
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }
}

/// Handles records one at a time. `Err` means "not done, try again": the
/// record is retried, not skipped.
#[async_trait]
pub trait Handler: Send {
    async fn handle(&mut self, record: &Received) -> anyhow::Result<()>;
}

/// The partitions this consumer owns right now, per topic.
pub type Assignment = Vec<(Topic, i32)>;

struct Context {
    topics: Topics,
    assignment: watch::Sender<Assignment>,
}

impl ClientContext for Context {}

impl ConsumerContext for Context {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Error(e) => tracing::warn!(error = %e, "kafka rebalance error"),
            _ => {
                let owned: Assignment = consumer
                    .assignment()
                    .map(|tpl| {
                        tpl.elements()
                            .iter()
                            .filter_map(|e| Some((self.topics.parse(e.topic())?, e.partition())))
                            .collect()
                    })
                    .unwrap_or_default();
                tracing::info!(partitions = owned.len(), "kafka partitions assigned");
                self.assignment.send_replace(owned);
            }
        }
    }
}

pub struct Consumer {
    inner: Arc<StreamConsumer<Context>>,
    topics: Topics,
    group: String,
    assignment: watch::Receiver<Assignment>,
    /// Stops the lone-member watchdog (`rejoin`) when the consumer drops.
    _rejoin: Option<rejoin::Guard>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("group", &self.group).finish()
    }
}

const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

impl Consumer {
    /// Joins `group` and subscribes to `subscribe`. Partitions are assigned
    /// with the range strategy, so partition N of the events and actions
    /// topics land on the same member (co-partitioning).
    pub fn new(
        brokers: &Brokers,
        config: &KafkaConfig,
        topics: Topics,
        group: &str,
        subscribe: &[Topic],
    ) -> Result<Consumer, ConsumerError> {
        let (tx, rx) = watch::channel(Vec::new());
        // Unique, so the lone-member watchdog can tell this consumer among
        // the group's members (brokers name a member `<client.id>-<uuid>`).
        let client_id = format!("{group}-{}", uuid::Uuid::now_v7().simple());
        let context = Context {
            topics: topics.clone(),
            assignment: tx,
        };
        let inner: StreamConsumer<Context> = brokers
            .client_config()
            .set("group.id", group)
            .set("client.id", &client_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            // A fetch returns as soon as a record is there on Apache Kafka,
            // but a broker may hold it for this long when the partition is
            // empty (the mock cluster does): 500 ms by default, per hop. A
            // task must not wait for that.
            .set("fetch.wait.max.ms", config.fetch_wait_max_ms.to_string())
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (config.session_timeout_ms / 4).max(100).to_string(),
            )
            .create_with_context(context)
            .map_err(|source| ConsumerError::Create {
                group: group.to_owned(),
                source: Box::new(source),
            })?;
        let names: Vec<String> = subscribe.iter().map(|t| topics.name(*t)).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        inner.subscribe(&refs).map_err(|source| ConsumerError::Subscribe {
            group: group.to_owned(),
            topics: names.join(", "),
            source: Box::new(source),
        })?;
        let inner = Arc::new(inner);
        let watched = rejoin::Watched {
            group: group.to_owned(),
            client_id,
            topics: subscribe.to_vec(),
            names,
            assignment: rx.clone(),
            session_timeout_ms: config.session_timeout_ms,
        };
        Ok(Consumer {
            _rejoin: rejoin::spawn(Arc::downgrade(&inner), watched),
            inner,
            topics,
            group: group.to_owned(),
            assignment: rx,
        })
    }

    /// Watches the partitions this consumer owns.
    pub fn assignment(&self) -> watch::Receiver<Assignment> {
        self.assignment.clone()
    }

    /// Consumes until `shutdown` is cancelled, then commits what was
    /// handled and leaves the group.
    pub async fn run<H: Handler>(self, handler: &mut H, shutdown: CancellationToken) -> Result<(), ConsumerError> {
        let result = self.consume(handler, &shutdown).await;
        self.commit();
        self.inner.unsubscribe();
        result
    }

    /// The next record, or `None` once `shutdown` is cancelled. For callers
    /// that drive the loop themselves; pair each with [`Consumer::done`].
    pub async fn next(&self, shutdown: &CancellationToken) -> Result<Option<Received>, ConsumerError> {
        loop {
            let message = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(None),
                m = self.inner.recv() => m,
            };
            match message {
                Ok(m) => {
                    let Some(topic) = self.topics.parse(m.topic()) else {
                        continue;
                    };
                    ::metrics::counter!(metrics::KAFKA_RECORDS_CONSUMED_TOTAL, "topic" => topic.suffix()).increment(1);
                    return Ok(Some(Received {
                        topic,
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                        ce: m
                            .headers()
                            .map_or(Err(CeError::Missing("ce_specversion")), CeAttributes::from_headers),
                        timestamp_ms: m.timestamp().to_millis(),
                    }));
                }
                // Transient: the client reconnects by itself.
                Err(e) if is_transient(&e) => {
                    tracing::warn!(group = %self.group, error = %e, "kafka consumer error, retrying");
                    tokio::time::sleep(RETRY_MIN).await;
                }
                Err(e) => return Err(ConsumerError::Kafka(Box::new(e))),
            }
        }
    }

    /// The next record if one is already here, without waiting: lets a
    /// caller take what a fetch brought in one go.
    pub fn try_next(&self) -> Result<Option<Received>, ConsumerError> {
        use futures::FutureExt as _;
        let never = CancellationToken::new();
        // `recv` takes a record that is already queued before it first
        // returns `Pending`, and dropping it then loses nothing.
        self.next(&never).now_or_never().unwrap_or(Ok(None))
    }

    /// Marks a record handled: its offset will be committed.
    pub fn done(&self, record: &Received) {
        let name = self.topics.name(record.topic);
        if let Err(e) = self.inner.store_offset(&name, record.partition, record.offset) {
            // After a rebalance took the partition away; the new owner
            // replays from the last commit, which is what at-least-once
            // wants.
            tracing::debug!(topic = %name, partition = record.partition, error = %e, "offset not stored");
        }
    }

    /// Commits stored offsets now (shutdown, tests).
    pub fn commit(&self) {
        match self.inner.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => {}
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(group = %self.group, error = %e, "final offset commit failed"),
        }
    }

    async fn consume<H: Handler>(&self, handler: &mut H, shutdown: &CancellationToken) -> Result<(), ConsumerError> {
        while let Some(record) = self.next(shutdown).await? {
            let mut backoff = RETRY_MIN;
            loop {
                match handler.handle(&record).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(
                            topic = record.topic.suffix(),
                            partition = record.partition,
                            offset = record.offset,
                            error = %format!("{e:#}"),
                            "handler failed, retrying the record"
                        );
                        tokio::select! {
                            _ = shutdown.cancelled() => return Ok(()),
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
            }
            self.done(&record);
        }
        Ok(())
    }
}

fn is_transient(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::PartitionEOF
        )
    )
}
