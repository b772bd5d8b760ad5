//! Settling: the staged batch made durable (commit, publish, clear the
//! outbox; see [`super`]), the take-over of partitions (fencing token,
//! outbox republished). Every Store write and
//! every record the router sends goes through here or [`super::Tx`].

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use bus::kafka::{OutRecord, ProduceError};
use bus::model::{DeadLetter, Escalation, Incident, Task, Unit, new_id};
use bus::store::{Commit, Committed};
use bus::topics::Topic;
use serde::{Deserialize, Serialize};

use super::{APPLIED_TTL, Books, CrashPoint, capref_key, task_key};

/// Task snapshots are kept this long (acks may come late; rebuild refills).
const TASK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const CAPREF_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// An outbox outlives any router that could still republish it.
const OUTBOX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// A batch is retried within seconds; its token need not outlive that long.
const BATCH_TTL: Duration = Duration::from_secs(3600);
/// Fencing tokens are rewritten at every take-over.
const OWNER_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The fencing token of a partition: the instance that last took it over.
pub(crate) fn owner_key(partition: i32) -> String {
    format!("router:owner:{partition}")
}

/// Present when the batch with this token was committed.
fn batch_key(token: &str) -> String {
    format!("router:batch:{token}")
}

/// The committed, not yet acknowledged records of a partition.
pub(crate) fn outbox_key(partition: i32) -> String {
    format!("router:outbox:{partition}")
}

/// Why a settle failed, which decides what the caller does.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The Store could not be written, or did not say whether it was: the
    /// batch is kept, and the next settle commits it unless its token shows
    /// the commit landed.
    #[error("writing the router's state to the store: {0:#}")]
    Unstored(anyhow::Error),
    /// Committed but not all acknowledged: the batch is kept and
    /// republished by the next settle, never recomputed.
    #[error("publishing the router's outputs: {0:#}")]
    Unpublished(anyhow::Error),
    /// Another router took a partition over: the batch was thrown away
    /// (state reloaded) and its records must be handled again.
    #[error("the batch was thrown away: {0} is another router's now")]
    Fenced(String),
    /// A unit this batch claims was taken meanwhile (unit, what it works on
    /// now): the batch was thrown away and its records must be handled
    /// again.
    #[error("the batch was thrown away: unit {0} works on {1} now")]
    ClaimLost(String, String),
    /// The Store lost the router's state (a fencing token vanished): the
    /// batch was thrown away and the Store must be rebuilt.
    #[error("the store lost the router's state ({0} is gone)")]
    StoreLost(String),
}

/// One record as the outbox keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct Boxed {
    topic: String,
    key: String,
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    value: String,
}

fn boxed(record: &OutRecord) -> Boxed {
    Boxed {
        topic: record.topic.suffix().to_owned(),
        key: record.key.clone(),
        id: record.id.clone(),
        subject: record.subject.clone(),
        // Every output is JSON.
        value: String::from_utf8_lossy(&record.value).into_owned(),
    }
}

fn unboxed(boxed: Boxed) -> Option<OutRecord> {
    Some(OutRecord {
        topic: Topic::ALL.into_iter().find(|t| t.suffix() == boxed.topic)?,
        key: boxed.key,
        id: boxed.id,
        subject: boxed.subject,
        value: boxed.value.into_bytes(),
    })
}

impl Books {
    /// The fencing tokens a commit for these partitions requires.
    fn fences(&self, partitions: &BTreeSet<i32>) -> Vec<(String, String)> {
        partitions
            .iter()
            .filter(|p| self.owned.contains(p))
            .map(|p| (owner_key(*p), self.token.clone()))
            .collect()
    }

    /// Commits, publishes and clears what was staged since the last
    /// settle; see [`SettleError`] for what a failure leaves.
    pub async fn settle(&mut self) -> Result<(), SettleError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let partitions: BTreeSet<i32> = self.pending.partitions.clone();
        if self.pending.uncertain && !self.pending.committed {
            let token = self.pending.token.clone().unwrap_or_default();
            let landed = self.store.get_key(&batch_key(&token)).await;
            self.pending.committed = landed.map_err(|e| SettleError::Unstored(e.into()))?.is_some();
        }
        if !self.pending.committed {
            let commit = self.pending_commit(&partitions).map_err(SettleError::Unstored)?;
            match self.store.commit(&commit).await {
                Ok(Committed::Done) => self.pending.committed = true,
                Ok(Committed::KeyChanged { key, found: None }) => {
                    self.throw_away().await;
                    return Err(SettleError::StoreLost(key));
                }
                Ok(Committed::KeyChanged { key, found: Some(_) }) => {
                    self.throw_away().await;
                    return Err(SettleError::Fenced(key));
                }
                Ok(Committed::ClaimLost { unit, task }) => {
                    self.throw_away().await;
                    let holder = task.unwrap_or_else(|| "nothing".to_owned());
                    return Err(SettleError::ClaimLost(unit, holder));
                }
                Err(e) => {
                    self.pending.uncertain = true;
                    return Err(SettleError::Unstored(e.into()));
                }
            }
            self.crash_point(CrashPoint::AfterCommit);
        }
        let acks: Vec<_> = self
            .pending
            .records
            .iter()
            .map(|(_, record)| self.publisher.publish(record))
            .collect();
        self.crash_point(CrashPoint::AfterPublish);
        if let Some(e) = futures::future::join_all(acks).await.into_iter().find_map(Result::err) {
            return Err(SettleError::Unpublished(e));
        }
        self.crash_point(CrashPoint::AfterAcks);
        self.clear_outboxes(&partitions).await;
        self.pending = super::books::Pending::default();
        metrics::histogram!(bus::metrics::ROUTER_SETTLE_SECONDS).record(started.elapsed().as_secs_f64());
        self.crash_point(CrashPoint::AfterSettle);
        Ok(())
    }

    /// The one atomic Store step of the pending batch.
    fn pending_commit(&mut self, partitions: &BTreeSet<i32>) -> anyhow::Result<Commit> {
        let token = self.pending.token.get_or_insert_with(new_id).clone();
        let pending = &self.pending;
        let mut set_keys = vec![(batch_key(&token), "1".to_owned(), BATCH_TTL)];
        for task in pending.tasks.values() {
            set_keys.push((task_key(&task.id), serde_json::to_string(task)?, TASK_TTL));
        }
        for (identifier, incident) in &pending.caprefs {
            set_keys.push((capref_key(identifier), incident.clone(), CAPREF_TTL));
        }
        for id in &pending.applied {
            set_keys.push((super::applied_key(id), "1".to_owned(), APPLIED_TTL));
        }
        let mut outboxes: BTreeMap<i32, Vec<Boxed>> = BTreeMap::new();
        for (partition, record) in &pending.records {
            outboxes.entry(*partition).or_default().push(boxed(record));
        }
        for (partition, records) in &outboxes {
            set_keys.push((outbox_key(*partition), serde_json::to_string(records)?, OUTBOX_TTL));
        }
        Ok(Commit {
            expect_keys: self.fences(partitions),
            expect_claims: pending.expected.clone(),
            expect_available: pending.expect_available.clone(),
            incidents: pending.incidents.values().cloned().collect(),
            units: pending.units.values().cloned().collect(),
            set_keys,
            delete_keys: Vec::new(),
        })
    }

    /// Deletes the outboxes of a published batch, unless another router
    /// owns the partition by now (its outbox is not ours to clear). Best
    /// effort: a stale outbox is republished once more, which consumers
    /// recognise by the records' ids.
    async fn clear_outboxes(&self, partitions: &BTreeSet<i32>) {
        let commit = Commit {
            expect_keys: self.fences(partitions),
            delete_keys: partitions.iter().map(|p| outbox_key(*p)).collect(),
            ..Commit::default()
        };
        if let Err(e) = self.store.commit(&commit).await {
            tracing::debug!(error = %e, "could not clear the outbox; it will be republished once more");
        }
    }

    /// Undoes the staged, uncommitted batch: records forgotten, in-memory
    /// state reloaded from the Store (which holds none of it).
    pub async fn throw_away(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        self.forget(&pending.applied);
        if let Err(e) = self.reload().await {
            tracing::warn!(error = %format!("{e:#}"), "could not reload the router's state");
        }
    }

    /// Takes over `partitions`: writes this instance's fencing token for
    /// each one it did not own (from then on the previous owner's commits
    /// for it fail), republishes what the previous owner committed but may
    /// not have published, and loads their open incidents, so their 1-3-5
    /// clocks run here before any new record is handled.
    pub async fn take_over(&mut self, partitions: HashSet<i32>) -> anyhow::Result<()> {
        let new: BTreeSet<i32> = partitions.difference(&self.owned).copied().collect();
        if !new.is_empty() {
            let tokens = Commit {
                set_keys: new
                    .iter()
                    .map(|p| (owner_key(*p), self.token.clone(), OWNER_TTL))
                    .collect(),
                ..Commit::default()
            };
            self.store.commit(&tokens).await?;
            // Owned while republishing, so the outboxes are cleared under
            // this instance's fence; owned as before if that fails, so the
            // retry republishes them.
            let before = std::mem::replace(&mut self.owned, partitions.clone());
            if let Err(e) = self.republish_outboxes(&new).await {
                self.owned = before;
                return Err(e);
            }
        }
        self.owned = partitions;
        self.assigned = true;
        self.reload().await?;
        tracing::info!(
            partitions = ?self.owned,
            open = self.open.len(),
            "router took over its jurisdictions"
        );
        Ok(())
    }

    /// Publishes the outboxes of these partitions again and clears them.
    async fn republish_outboxes(&mut self, partitions: &BTreeSet<i32>) -> anyhow::Result<()> {
        let keys: Vec<String> = partitions.iter().map(|p| outbox_key(*p)).collect();
        let values = self.store.get_keys(&keys).await?;
        let mut records = Vec::new();
        for (key, value) in keys.iter().zip(values) {
            let Some(json) = value else { continue };
            match serde_json::from_str::<Vec<Boxed>>(&json) {
                Ok(boxed) => records.extend(boxed.into_iter().filter_map(unboxed)),
                Err(e) => tracing::error!(key = %key, error = %e, "unreadable outbox; skipped"),
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        let acks: Vec<_> = records.iter().map(|r| self.publisher.publish(r)).collect();
        for ack in futures::future::join_all(acks).await {
            ack?;
        }
        metrics::counter!(bus::metrics::ROUTER_REPUBLISHED_TOTAL).increment(records.len() as u64);
        tracing::info!(
            records = records.len(),
            "republished a previous owner's committed outputs"
        );
        self.clear_outboxes(partitions).await;
        Ok(())
    }
}

/// The records a transaction publishes. Ids are fixed here, once: a
/// republished record keeps them.
pub(crate) fn outputs(
    incidents: &[Incident],
    tasks: &[Task],
    units: &[Unit],
    escalations: &[Escalation],
    dead_letters: &[(String, DeadLetter)],
) -> Result<Vec<OutRecord>, ProduceError> {
    let mut records = Vec::new();
    for i in incidents {
        records.push(OutRecord::json(
            Topic::Incidents,
            &i.id,
            format!("{}:{}", i.id, i.version),
            i,
        )?);
    }
    for t in tasks {
        records.push(OutRecord::json(
            Topic::Tasks,
            &t.unit,
            format!("{}:{}", t.id, t.version),
            t,
        )?);
    }
    for u in units {
        records.push(OutRecord::json(Topic::Units, &u.id, new_id(), u)?);
    }
    for e in escalations {
        let key = if e.incident.is_empty() {
            &e.jurisdiction
        } else {
            &e.incident
        };
        records.push(OutRecord::json(Topic::Escalations, key, &e.id, e)?);
    }
    for (key, d) in dead_letters {
        records.push(OutRecord::json(Topic::DeadLetter, key, new_id(), d)?);
    }
    Ok(records)
}
