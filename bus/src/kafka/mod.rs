//! Kafka plumbing through rdkafka: the producer every service writes with,
//! the at-least-once consumer every service reads with, and topic creation.
//! The same code runs against the embedded broker and a real cluster.

mod admin;
mod consumer;
mod producer;
mod rejoin;

use std::sync::Arc;

use rdkafka::ClientConfig;

pub use self::admin::{TopicError, check_reachable, ensure_topics};
pub use self::consumer::{Assignment, Consumer, ConsumerError, Handler, Received};
pub use self::producer::{Delivered, Delivery, OutRecord, PARTITIONER, ProduceError, Producer};

use crate::config::KafkaConfig;
use crate::embedded::{EmbeddedBroker, EmbeddedError};

/// Where the brokers are: a configured cluster, or the embedded broker of
/// this process.
#[derive(Clone, Debug)]
pub enum Brokers {
    External(String),
    Embedded(Arc<EmbeddedBroker>),
}

impl Brokers {
    /// The configured brokers, or `None` when none are configured (only
    /// `demo` and `all` may then start the embedded one).
    pub fn configured(config: &KafkaConfig) -> Option<Brokers> {
        config
            .brokers
            .as_deref()
            .filter(|b| !b.trim().is_empty())
            .map(|b| Brokers::External(b.to_owned()))
    }

    pub fn start_embedded(config: &KafkaConfig) -> Result<Brokers, EmbeddedError> {
        Ok(Brokers::Embedded(Arc::new(EmbeddedBroker::start(
            config.embedded_brokers,
        )?)))
    }

    pub fn bootstrap(&self) -> &str {
        match self {
            Brokers::External(b) => b,
            Brokers::Embedded(e) => e.bootstrap_servers(),
        }
    }

    pub fn is_embedded(&self) -> bool {
        matches!(self, Brokers::Embedded(_))
    }

    pub fn embedded(&self) -> Option<&EmbeddedBroker> {
        match self {
            Brokers::Embedded(e) => Some(e),
            Brokers::External(_) => None,
        }
    }

    /// A client configuration bootstrapping from these brokers.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap())
            // librdkafka logs through `log`; keep its noise out unless asked.
            .set("log_level", "3");
        c
    }
}
