//! Topic creation: each service creates the topics it uses when they are
//! missing, with the configured partition count (events and actions always
//! equal) and compaction for incidents and units, and stops with an error
//! naming the topic when it cannot.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::Brokers;
use crate::config::KafkaConfig;
use crate::topics::{Topic, Topics};

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("could not create topic {topic}: {message}")]
    Create { topic: String, message: String },
    #[error(
        "topic {topic} has {found} partitions but {other} has {expected}; events and actions must be co-partitioned"
    )]
    Partitions {
        topic: String,
        found: usize,
        other: String,
        expected: usize,
    },
    #[error("could not read the metadata of topic {topic}: {source}")]
    Metadata { topic: String, source: KafkaError },
}

const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Creates the missing topics among `wanted`, then checks co-partitioning.
pub async fn ensure_topics(
    brokers: &Brokers,
    config: &KafkaConfig,
    topics: &Topics,
    wanted: &[Topic],
) -> Result<(), TopicError> {
    match brokers {
        Brokers::Embedded(broker) => {
            for topic in wanted {
                let name = topics.name(*topic);
                broker
                    .create_topic(&name, config.partitions)
                    .map_err(|e| TopicError::Create {
                        topic: name.clone(),
                        message: e.to_string(),
                    })?;
            }
        }
        Brokers::External(_) => create_external(brokers, config, topics, wanted).await?,
    }
    check_co_partitioning(brokers, topics, wanted).await
}

async fn create_external(
    brokers: &Brokers,
    config: &KafkaConfig,
    topics: &Topics,
    wanted: &[Topic],
) -> Result<(), TopicError> {
    // Only what is missing: a cluster that manages its topics itself (or
    // has no CreateTopics API, like the mock cluster) is left alone.
    let existing = existing_topics(brokers).await?;
    let wanted: Vec<Topic> = wanted
        .iter()
        .copied()
        .filter(|t| !existing.contains(&topics.name(*t)))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> =
        brokers.client_config().create().map_err(|e| TopicError::Create {
            topic: topics.prefix().to_owned() + "*",
            message: e.to_string(),
        })?;
    let names: Vec<String> = wanted.iter().map(|t| topics.name(*t)).collect();
    let new_topics: Vec<NewTopic<'_>> = wanted
        .iter()
        .zip(&names)
        .map(|(topic, name)| {
            let t = NewTopic::new(name, config.partitions, TopicReplication::Fixed(config.replication));
            if topic.compacted() {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|e| TopicError::Create {
            topic: names.join(", "),
            message: e.to_string(),
        })?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, partitions = config.partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(TopicError::Create {
                    topic: name,
                    message: code.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Names of the topics the cluster has.
async fn existing_topics(brokers: &Brokers) -> Result<std::collections::HashSet<String>, TopicError> {
    let consumer: BaseConsumer = brokers
        .client_config()
        .create()
        .map_err(|source| TopicError::Metadata {
            topic: "*".to_owned(),
            source,
        })?;
    tokio::task::spawn_blocking(move || {
        consumer
            .fetch_metadata(None, ADMIN_TIMEOUT)
            .map(|md| md.topics().iter().map(|t| t.name().to_owned()).collect())
            .map_err(|source| TopicError::Metadata {
                topic: "*".to_owned(),
                source,
            })
    })
    .await
    .unwrap_or_else(|e| {
        Err(TopicError::Create {
            topic: "*".to_owned(),
            message: e.to_string(),
        })
    })
}

/// Partition count of each topic, read from the cluster metadata.
async fn partition_count(brokers: &Brokers, name: &str) -> Result<usize, TopicError> {
    let consumer: BaseConsumer = brokers
        .client_config()
        .create()
        .map_err(|source| TopicError::Metadata {
            topic: name.to_owned(),
            source,
        })?;
    let name = name.to_owned();
    // Metadata calls block: keep them off the async workers.
    tokio::task::spawn_blocking(move || {
        let mut last = None;
        // A topic just created may take a moment to show its partitions.
        for _ in 0..50 {
            match consumer.fetch_metadata(Some(&name), ADMIN_TIMEOUT) {
                Ok(md) => {
                    if let Some(t) = md.topics().iter().find(|t| t.name() == name)
                        && t.error().is_none()
                        && !t.partitions().is_empty()
                    {
                        return Ok(t.partitions().len());
                    }
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(TopicError::Metadata {
            topic: name.clone(),
            source: last.unwrap_or(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition)),
        })
    })
    .await
    .unwrap_or_else(|e| {
        Err(TopicError::Create {
            topic: String::new(),
            message: e.to_string(),
        })
    })
}

async fn check_co_partitioning(brokers: &Brokers, topics: &Topics, wanted: &[Topic]) -> Result<(), TopicError> {
    if !(wanted.contains(&Topic::Events) && wanted.contains(&Topic::Actions)) {
        return Ok(());
    }
    let events = topics.name(Topic::Events);
    let actions = topics.name(Topic::Actions);
    let expected = partition_count(brokers, &events).await?;
    let found = partition_count(brokers, &actions).await?;
    if found != expected {
        return Err(TopicError::Partitions {
            topic: actions,
            found,
            other: events,
            expected,
        });
    }
    Ok(())
}

/// Reads cluster metadata once: is any broker answering?
pub async fn check_reachable(brokers: &Brokers, timeout: Duration) -> Result<(), KafkaError> {
    let consumer: BaseConsumer = brokers.client_config().create()?;
    tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, timeout).map(|_| ()))
        .await
        .unwrap_or(Err(KafkaError::Canceled))
}
