//! A plain Kafka view of the run, apart from qzx's own code: the routers'
//! consumer lag (their committed offsets against the end of the events
//! and actions topics), and every record of the topics read from the
//! beginning for the checks. It only reads: it joins no group and commits
//! nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bus::{Topic, Topics};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the final read may take.
const READ_WITHIN: Duration = Duration::from_secs(180);

/// One record as the checks need it.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: Topic,
    pub partition: i32,
    /// Its CreateTime (set by the producer), ms since the epoch.
    pub timestamp_ms: i64,
    pub payload: Vec<u8>,
}

/// Every record of the topics read, and what the broker no longer had.
#[derive(Debug, Default)]
pub struct Read {
    pub records: Vec<Record>,
    /// Records per topic suffix.
    pub counts: BTreeMap<String, u64>,
    /// Partitions whose oldest records the broker already dropped (the
    /// embedded broker keeps 5 MB per partition): the checks cannot see
    /// those, so they are named in the report.
    pub truncated: Vec<String>,
}

fn client(bootstrap: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating a kafka client")
}

/// The routers' lag and the end of every topic, sampled together.
#[derive(Clone)]
pub struct Probe {
    consumer: Arc<BaseConsumer>,
    topics: Topics,
    partitions: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Records of events and actions the router group has not committed.
    pub router_lag: i64,
    /// End offsets of every topic, summed: unchanged means nothing new.
    pub ends: i64,
}

impl Probe {
    /// `group` is the routers' consumer group: this client only reads its
    /// committed offsets, it never joins it.
    pub fn new(bootstrap: &str, group: &str, prefix: &str, partitions: i32) -> anyhow::Result<Probe> {
        Ok(Probe {
            consumer: Arc::new(client(bootstrap, group)?),
            topics: Topics::new(prefix.to_owned()),
            partitions,
        })
    }

    pub async fn sample(&self) -> anyhow::Result<Sample> {
        let probe = self.clone();
        tokio::task::spawn_blocking(move || probe.sample_blocking()).await?
    }

    fn sample_blocking(&self) -> anyhow::Result<Sample> {
        let mut ends = 0;
        let mut high_of = HashMap::new();
        for topic in Topic::ALL {
            let name = self.topics.name(topic);
            for p in 0..self.partitions {
                let (_, high) = self.consumer.fetch_watermarks(&name, p, TIMEOUT)?;
                ends += high;
                high_of.insert((name.clone(), p), high);
            }
        }
        let mut tpl = TopicPartitionList::new();
        for topic in [Topic::Events, Topic::Actions] {
            for p in 0..self.partitions {
                tpl.add_partition(&self.topics.name(topic), p);
            }
        }
        let committed = self.consumer.committed_offsets(tpl, TIMEOUT)?;
        let mut router_lag = 0;
        for e in committed.elements() {
            let high = high_of
                .get(&(e.topic().to_owned(), e.partition()))
                .copied()
                .unwrap_or(0);
            router_lag += match e.offset() {
                Offset::Offset(n) => (high - n).max(0),
                // Nothing committed yet: all of it is lag.
                _ => high,
            };
        }
        Ok(Sample { router_lag, ends })
    }
}

/// Every record of `topics` under `prefix`, from the beginning to the end
/// each partition had when the read began.
pub async fn read_all(bootstrap: &str, prefix: &str, topics: &[Topic]) -> anyhow::Result<Read> {
    let bootstrap = bootstrap.to_owned();
    let topics_of = Topics::new(prefix.to_owned());
    let wanted = topics.to_vec();
    tokio::task::spawn_blocking(move || read_blocking(&bootstrap, &topics_of, &wanted)).await?
}

fn read_blocking(bootstrap: &str, topics: &Topics, wanted: &[Topic]) -> anyhow::Result<Read> {
    let consumer = client(bootstrap, &format!("chaos-reader-{}", bus::model::new_id()))?;
    let mut read = Read::default();
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for topic in wanted {
        let name = topics.name(*topic);
        let metadata = consumer.fetch_metadata(Some(&name), TIMEOUT)?;
        let partitions = metadata.topics().first().map_or(0, |t| t.partitions().len()) as i32;
        for p in 0..partitions {
            let (low, high) = consumer.fetch_watermarks(&name, p, TIMEOUT)?;
            if low > 0 {
                read.truncated
                    .push(format!("{name}/{p}: offsets 0 to {} gone", low - 1));
            }
            if high > low {
                ends.insert((name.clone(), p), high);
                tpl.add_partition_offset(&name, p, Offset::Beginning)?;
            }
        }
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + READ_WITHIN;
    while !ends.is_empty() {
        if Instant::now() > deadline {
            bail!("the topics were not read to their end within {READ_WITHIN:?}: {ends:?} left");
        }
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "reading the topics");
                continue;
            }
        };
        let key = (message.topic().to_owned(), message.partition());
        if ends.get(&key).is_some_and(|end| message.offset() + 1 >= *end) {
            ends.remove(&key);
        }
        let Some(topic) = topics.parse(message.topic()) else {
            continue;
        };
        *read.counts.entry(topic.suffix().to_owned()).or_default() += 1;
        read.records.push(Record {
            topic,
            partition: message.partition(),
            timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        });
    }
    Ok(read)
}
