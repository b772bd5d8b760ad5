//! The producer: idempotent, `acks=all`, and a send that returns only once
//! the broker has acknowledged the record (or the delivery timeout passed).
//! It never reports a record delivered that the broker did not take.

use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;
use serde::Serialize;

use super::Brokers;
use crate::cloudevents::CeAttributes;
use crate::config::KafkaConfig;
use crate::metrics;
use crate::topics::{Topic, Topics};

/// Kafka's default (murmur2) key hashing, as the Java client does it.
pub const PARTITIONER: &str = "murmur2_random";

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The broker did not take the record in time: retry later (503).
    #[error("kafka did not acknowledge {topic} within the delivery timeout: {source}")]
    Unavailable { topic: String, source: KafkaError },
    #[error("kafka refused the record on {topic}: {source}")]
    Refused { topic: String, source: KafkaError },
    #[error("could not create the kafka producer: {0}")]
    Create(KafkaError),
    #[error("could not serialise the record for {topic}: {source}")]
    Serialise { topic: String, source: serde_json::Error },
}

impl ProduceError {
    /// True when trying again later may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, ProduceError::Unavailable { .. })
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// One record to produce: already serialised, with its CloudEvents id.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub topic: Topic,
    pub key: String,
    /// `ce_id`: consumers recognise duplicates by it.
    pub id: String,
    pub subject: Option<String>,
    pub value: Vec<u8>,
}

impl OutRecord {
    pub fn json<T: Serialize>(
        topic: Topic,
        key: impl Into<String>,
        id: impl Into<String>,
        value: &T,
    ) -> Result<OutRecord, ProduceError> {
        Ok(OutRecord {
            topic,
            key: key.into(),
            id: id.into(),
            subject: None,
            value: serde_json::to_vec(value).map_err(|source| ProduceError::Serialise {
                topic: topic.suffix().to_owned(),
                source,
            })?,
        })
    }
}

/// A record's acknowledgement to come: `Sync` too, so a holder of
/// several stays shareable across `.await`s.
pub type Delivery = std::pin::Pin<Box<dyn Future<Output = Result<Delivered, ProduceError>> + Send + Sync + 'static>>;

/// A record that found the client's queue full, kept to be sent once
/// there is room.
struct WaitForRoom {
    inner: FutureProducer,
    key: String,
    value: Vec<u8>,
    headers: rdkafka::message::OwnedHeaders,
    timeout: Duration,
}

/// Shared by every task of a service (cheap to clone).
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer,
    topics: Topics,
    /// `ce_source` of everything this producer writes, e.g. `/qzx/ingest`.
    ce_source: String,
    timeout: Duration,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("ce_source", &self.ce_source).finish()
    }
}

impl Producer {
    pub fn new(
        brokers: &Brokers,
        config: &KafkaConfig,
        topics: Topics,
        ce_source: &str,
    ) -> Result<Producer, ProduceError> {
        let timeout = config.delivery_timeout();
        let inner: FutureProducer = brokers
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // The Java client's hash of the key: a source system writing to
            // the events topic with any Kafka client lands its jurisdiction
            // on the same partition as we do, so one router owns it.
            .set("partitioner", PARTITIONER)
            .set("linger.ms", config.linger_ms.to_string())
            // A record not acknowledged within this is reported failed, so
            // a caller waiting on it learns in bounded time.
            .set("message.timeout.ms", timeout.as_millis().to_string())
            .set("client.id", ce_source.trim_start_matches('/').replace('/', "-"))
            .create()
            .map_err(ProduceError::Create)?;
        Ok(Producer {
            inner,
            topics,
            ce_source: ce_source.to_owned(),
            timeout,
        })
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Produces one record and waits for the broker's acknowledgement.
    pub async fn send(&self, record: &OutRecord) -> Result<Delivered, ProduceError> {
        self.start_send(record).await
    }

    /// Hands one record to the client now and returns a future of its
    /// acknowledgement. Records started in order stay in order on their
    /// partition (idempotent producer), so a caller may start several and
    /// wait for them together. Dropping the future does not unsend the
    /// record.
    pub fn start_send(&self, record: &OutRecord) -> Delivery {
        let topic = self.topics.name(record.topic);
        let mut ce = CeAttributes::new(&record.id, &self.ce_source, record.topic.ce_type());
        ce.subject.clone_from(&record.subject);
        let headers = ce.to_headers();
        let future_record = FutureRecord::to(&topic)
            .key(record.key.as_bytes())
            .payload(&record.value)
            .headers(headers.clone());
        let started = Instant::now();
        // The local queue is full only under a large backlog: then the
        // record waits for room (bounded by the delivery timeout) instead.
        let queued = match self.inner.send_result(future_record) {
            Ok(delivery) => Ok(delivery),
            Err((e, _)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                Err(WaitForRoom {
                    inner: self.inner.clone(),
                    key: record.key.clone(),
                    value: record.value.clone(),
                    headers,
                    timeout: self.timeout,
                })
            }
            Err((e, _)) => {
                return Box::pin(std::future::ready(Err(self.failed(record.topic, topic, e))));
            }
        };
        let suffix = record.topic.suffix();
        Box::pin(async move {
            let result = match queued {
                Ok(delivery) => match delivery.await {
                    Ok(result) => result.map_err(|(e, _)| e),
                    // The client went away before it reported: not delivered.
                    Err(_cancelled) => Err(KafkaError::Canceled),
                },
                Err(wait) => {
                    let record = FutureRecord::to(&topic)
                        .key(&wait.key)
                        .payload(&wait.value)
                        .headers(wait.headers);
                    wait.inner
                        .send(record, Timeout::After(wait.timeout))
                        .await
                        .map_err(|(e, _)| e)
                }
            };
            ::metrics::histogram!(metrics::KAFKA_PRODUCE_SECONDS, "topic" => suffix)
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(delivery) => Ok(Delivered {
                    partition: delivery.partition,
                    offset: delivery.offset,
                }),
                Err(source) => {
                    ::metrics::counter!(metrics::KAFKA_PRODUCE_ERRORS_TOTAL, "topic" => suffix).increment(1);
                    Err(classify(topic, source))
                }
            }
        })
    }

    fn failed(&self, topic: Topic, name: String, source: KafkaError) -> ProduceError {
        ::metrics::counter!(metrics::KAFKA_PRODUCE_ERRORS_TOTAL, "topic" => topic.suffix()).increment(1);
        classify(name, source)
    }

    /// Serialises `value` as JSON and sends it.
    pub async fn send_json<T: Serialize>(
        &self,
        topic: Topic,
        key: &str,
        id: &str,
        value: &T,
    ) -> Result<Delivered, ProduceError> {
        self.send(&OutRecord::json(topic, key, id, value)?).await
    }

    /// Sends every record concurrently; the results are in input order.
    pub async fn send_all(&self, records: &[OutRecord]) -> Vec<Result<Delivered, ProduceError>> {
        let started: Vec<_> = records.iter().map(|r| self.start_send(r)).collect();
        futures::future::join_all(started).await
    }

    /// Waits for everything in flight (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.inner.flush(Timeout::After(timeout)) {
            tracing::error!(error = %e, "kafka producer could not flush before shutdown");
        }
    }
}

fn classify(topic: String, source: KafkaError) -> ProduceError {
    use rdkafka::types::RDKafkaErrorCode as C;
    let retriable = match source.rdkafka_error_code() {
        Some(
            C::MessageTimedOut
            | C::RequestTimedOut
            | C::AllBrokersDown
            | C::BrokerTransportFailure
            | C::QueueFull
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::NetworkException
            | C::UnknownTopicOrPartition,
        ) => true,
        Some(_) => false,
        None => true,
    };
    if retriable {
        ProduceError::Unavailable { topic, source }
    } else {
        ProduceError::Refused { topic, source }
    }
}
