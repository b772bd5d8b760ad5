//! Rebuilds the Store from Kafka when the Store has lost the router's state
//! (Redis flushed or replaced, or an in-memory store at process start): the
//! latest version of every incident, unit and task is read from the
//! compacted incidents and units topics and the tasks topic, from the
//! beginning up to their end offsets at start, and written back.
//!
//! Reads only; it never produces. A marker key records that the Store is
//! complete, so a restart with a healthy Store skips the read.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bus::ServiceContext;
use bus::model::{Incident, Task, Unit};
use bus::topics::Topic;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::tx::task_key;

/// Present while the Store holds everything the topics hold.
pub const MARKER: &str = "router:rebuilt";
const MARKER_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
const TASK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
/// A rebuild that cannot reach the end offsets in this long fails the
/// start rather than run on a half-filled Store.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the rebuild keeps reading past the end offsets for records the
/// broker's watermarks did not count.
const TAIL_QUIET: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("store: {0}")]
    Store(#[from] bus::store::StoreError),
    #[error("reading {topic} did not reach its end offsets within {seconds} s")]
    Timeout { topic: String, seconds: u64 },
    #[error("the rebuild reader failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What a rebuild restored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rebuilt {
    pub incidents: usize,
    pub open_incidents: usize,
    pub units: usize,
    pub tasks: usize,
}

/// Rebuilds unless the marker says the Store is complete. `None` when
/// nothing had to be done.
pub async fn rebuild_if_needed(ctx: &ServiceContext) -> Result<Option<Rebuilt>, RebuildError> {
    if ctx.store.get_key(MARKER).await?.is_some() {
        return Ok(None);
    }
    let rebuilt = rebuild(ctx).await?;
    ctx.store.set_key(MARKER, "1", MARKER_TTL).await?;
    tracing::info!(
        incidents = rebuilt.incidents,
        open = rebuilt.open_incidents,
        units = rebuilt.units,
        tasks = rebuilt.tasks,
        "store rebuilt from kafka"
    );
    Ok(Some(rebuilt))
}

/// Reads the topics and writes the latest of everything to the Store.
pub async fn rebuild(ctx: &ServiceContext) -> Result<Rebuilt, RebuildError> {
    let bootstrap = ctx.brokers.bootstrap().to_owned();
    let names: Vec<(Topic, String)> = [Topic::Incidents, Topic::Units, Topic::Tasks]
        .into_iter()
        .map(|t| (t, ctx.topics.name(t)))
        .collect();
    let records = tokio::task::spawn_blocking(move || read_to_end(&bootstrap, &names)).await??;

    let mut incidents: HashMap<String, Incident> = HashMap::new();
    let mut units: HashMap<String, Unit> = HashMap::new();
    let mut tasks: HashMap<String, Task> = HashMap::new();
    for (topic, payload) in records {
        match topic {
            Topic::Incidents => {
                if let Ok(i) = serde_json::from_slice::<Incident>(&payload)
                    && incidents.get(&i.id).is_none_or(|old| old.version < i.version)
                {
                    incidents.insert(i.id.clone(), i);
                }
            }
            // The highest version, and of equal ones the last read (one
            // partition holds a unit's records in order): a take-over may
            // republish an older record after a newer one.
            Topic::Units => {
                if let Ok(u) = serde_json::from_slice::<Unit>(&payload)
                    && units.get(&u.id).is_none_or(|old| old.version <= u.version)
                {
                    units.insert(u.id.clone(), u);
                }
            }
            Topic::Tasks => {
                if let Ok(t) = serde_json::from_slice::<Task>(&payload)
                    && tasks.get(&t.id).is_none_or(|old| old.version < t.version)
                {
                    tasks.insert(t.id.clone(), t);
                }
            }
            _ => {}
        }
    }
    let mut out = Rebuilt {
        incidents: incidents.len(),
        units: units.len(),
        tasks: tasks.len(),
        ..Rebuilt::default()
    };
    // Another router instance may have committed newer state into the
    // refilled Store while this one read the topics: what the Store holds
    // at a version at least as high is kept, never overwritten with what
    // the topics said earlier (a unit brought back on scene for a task it
    // cleared meanwhile would never be dispatched again). The check and
    // the write are two steps; the window between them is one round trip.
    for incident in incidents.values() {
        if incident.status.is_open() {
            out.open_incidents += 1;
        }
        let stored = ctx.store.incident(&incident.id).await?;
        if stored.is_none_or(|s| s.version < incident.version) {
            ctx.store.put_incident(incident).await?;
        }
    }
    let ids: Vec<String> = units.keys().cloned().collect();
    let stored_units = ctx.store.units_by_id(&ids).await?;
    for (id, stored) in ids.iter().zip(stored_units) {
        let unit = &units[id];
        if stored.is_none_or(|s| s.version < unit.version) {
            ctx.store.put_unit(unit).await?;
        }
    }
    let keys: Vec<String> = tasks.keys().map(|id| task_key(id)).collect();
    let stored_tasks = ctx.store.get_keys(&keys).await?;
    for ((id, task), stored) in tasks.iter().zip(stored_tasks) {
        let newer = stored
            .and_then(|json| serde_json::from_str::<Task>(&json).ok())
            .is_some_and(|s| s.version >= task.version);
        if newer {
            continue;
        }
        if let Ok(json) = serde_json::to_string(task) {
            ctx.store.set_key(&task_key(id), &json, TASK_TTL).await?;
        }
    }
    Ok(out)
}

/// Every record of the topics from the beginning to the end offsets found
/// at the start, by assignment (no consumer group is joined).
fn read_to_end(bootstrap: &str, topics: &[(Topic, String)]) -> Result<Vec<(Topic, Vec<u8>)>, RebuildError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("qzx-router-rebuild-{}", bus::model::new_id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("log_level", "3")
        .create()?;
    let mut out = Vec::new();
    for (topic, name) in topics {
        let metadata = consumer.fetch_metadata(Some(name), METADATA_TIMEOUT)?;
        let mut assignment = TopicPartitionList::new();
        let mut ends: HashMap<i32, i64> = HashMap::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                assignment.add_partition_offset(name, p.id(), Offset::Beginning)?;
                let (low, high) = consumer.fetch_watermarks(name, p.id(), METADATA_TIMEOUT)?;
                if high > low {
                    ends.insert(p.id(), high);
                }
            }
        }
        if assignment.count() == 0 {
            continue;
        }
        consumer.assign(&assignment)?;
        let started = Instant::now();
        // Past the end offsets, until nothing more comes for a while: a
        // broker whose watermark lags its log (tansu 0.6 left an
        // incident's only record out of a rebuild) cannot hide a record.
        let mut quiet_since: Option<Instant> = None;
        while !ends.is_empty() || quiet_since.is_none_or(|q| q.elapsed() < TAIL_QUIET) {
            if started.elapsed() > READ_TIMEOUT {
                return Err(RebuildError::Timeout {
                    topic: name.clone(),
                    seconds: READ_TIMEOUT.as_secs(),
                });
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    quiet_since = None;
                    if let Some(payload) = m.payload() {
                        out.push((*topic, payload.to_vec()));
                    }
                    if ends.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
                        ends.remove(&m.partition());
                    }
                }
                Some(Err(e)) => tracing::warn!(topic = %name, error = %e, "rebuild read error, retrying"),
                None => {
                    quiet_since.get_or_insert_with(Instant::now);
                }
            }
        }
        consumer.unassign()?;
    }
    Ok(out)
}

/// The partition count of a topic, from the broker's metadata.
pub async fn partition_count(ctx: &ServiceContext, topic: Topic) -> Result<Option<i32>, RebuildError> {
    let bootstrap = ctx.brokers.bootstrap().to_owned();
    let name = ctx.topics.name(topic);
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("log_level", "3")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(&name), METADATA_TIMEOUT)?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .map(|t| t.partitions().len() as i32)
            .filter(|n| *n > 0))
    })
    .await?
}
