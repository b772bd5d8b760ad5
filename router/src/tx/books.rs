//! The router's books: the open incidents and tasks of the jurisdictions
//! this instance owns (it is their only writer, so this copy is
//! authoritative), the ids it has applied, and the outputs staged since the
//! last settle ([`Pending`]). A [`super::Tx`] reads through them in one
//! order — its own outputs, then the pending ones, then the owned state,
//! then the Store — and [`super::settle`] makes them durable.
//!
//! Nothing here writes the Store or sends a record; that is `settle.rs`.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bus::kafka::OutRecord;
use bus::model::{Incident, Task, Unit};
use bus::store::{NearbyUnit, SharedStore};

use super::Publish;
use crate::index::SpatialIndex;
use crate::partition::partition_of;

/// Applied ids remembered in memory (the Store remembers the rest).
const RECENT_APPLIED: usize = 20_000;

/// Outputs staged since the last settle: already the router's in-memory
/// state, not yet committed to the Store (`committed == false`) or not yet
/// acknowledged by the broker.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// By id: the newest staged version of each.
    pub incidents: HashMap<String, Incident>,
    pub tasks: HashMap<String, Task>,
    pub units: HashMap<String, Unit>,
    pub caprefs: Vec<(String, String)>,
    /// Ids of the records these outputs apply.
    pub applied: Vec<String>,
    /// Units these outputs claim: they must still be available in the
    /// Store at the commit.
    pub expect_available: Vec<String>,
    /// Claims made by someone else that must still hold at the commit (a
    /// unit the reconciler frees).
    pub expected: Vec<(String, String)>,
    /// Every record to publish, in the order staged, with the partition of
    /// the events topic it belongs to (its outbox).
    pub records: Vec<(i32, OutRecord)>,
    /// The partitions these outputs were staged for: their fencing tokens
    /// must hold at the commit.
    pub partitions: BTreeSet<i32>,
    /// Whether the Store holds all of this (state, markers, outbox): from
    /// then on it is only ever republished, never recomputed.
    pub committed: bool,
    /// Names this batch's commit in the Store once it was tried, so a retry
    /// after an ambiguous failure (a timeout after the script ran) finds
    /// out whether it landed rather than commit twice.
    pub token: Option<String>,
    /// A commit was tried and failed without saying whether it ran.
    pub uncertain: bool,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
            && self.incidents.is_empty()
            && self.tasks.is_empty()
            && self.units.is_empty()
            && self.caprefs.is_empty()
            && self.applied.is_empty()
    }
}

/// The ids a batch's records will look up.
#[derive(Debug, Default)]
pub(crate) struct Wanted {
    /// Record ids, for their applied markers.
    pub applied: Vec<String>,
    pub units: Vec<String>,
    pub tasks: Vec<String>,
    /// Where its events are: dispatch searches for units near each.
    pub near: Vec<(f64, f64)>,
    /// The search dispatch makes: radius and how many units.
    pub near_radius_m: f64,
    pub near_limit: usize,
}

/// The Store's answers for a batch's [`Wanted`] ids, as they were when the
/// batch started (`None`: not there). Later reads of the batch go through
/// its staged outputs first, so these are never staler than the Store.
#[derive(Debug, Default)]
pub(crate) struct Prefetched {
    pub applied: HashMap<String, bool>,
    pub units: HashMap<String, Option<Unit>>,
    pub tasks: HashMap<String, Option<Task>>,
    /// Units near each event's point (by the bits of lat and lon), as
    /// `nearest_units` answered with `near_radius_m` and `near_limit`.
    pub near: HashMap<(u64, u64), Vec<NearbyUnit>>,
    pub near_radius_m: f64,
    pub near_limit: usize,
}

/// Ids applied lately, oldest forgotten first.
#[derive(Debug, Default)]
struct Recent {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

/// The router's state; see the module doc.
pub(crate) struct Books {
    pub store: SharedStore,
    pub publisher: Arc<dyn Publish>,
    /// Partitions of the events topic (jurisdictions hash onto them).
    pub partitions: i32,
    /// The partitions this instance owns, once it was first assigned any.
    pub owned: HashSet<i32>,
    /// Whether partitions were ever assigned: a router driven directly by a
    /// test never is, and writes for every jurisdiction. An assigned router
    /// that owns none (between a rebalance's revocation and its assignment)
    /// writes for none.
    pub assigned: bool,
    /// This instance's fencing token: written for each partition it takes
    /// over, and required by each of its commits for that partition.
    pub token: String,
    pub open: HashMap<String, Incident>,
    /// `open` by place, for repeat linking.
    pub index: SpatialIndex,
    /// Open tasks of those incidents.
    pub tasks: HashMap<String, Task>,
    recent: Recent,
    /// What the Store held at the start of the batch, read for all of its
    /// records at once and dropped when the batch is staged.
    pub prefetched: Prefetched,
    /// Units this instance made available since the last tick.
    pub freed: usize,
    pub pending: Pending,
    #[cfg(feature = "failpoints")]
    pub crash: Option<super::CrashAt>,
}

impl Books {
    pub fn new(store: SharedStore, publisher: Arc<dyn Publish>, partitions: i32, link_reach_m: f64) -> Books {
        Books {
            store,
            publisher,
            partitions: partitions.max(1),
            owned: HashSet::new(),
            assigned: false,
            token: bus::model::new_id(),
            open: HashMap::new(),
            index: SpatialIndex::new(link_reach_m),
            tasks: HashMap::new(),
            recent: Recent::default(),
            prefetched: Prefetched::default(),
            freed: 0,
            pending: Pending::default(),
            #[cfg(feature = "failpoints")]
            crash: None,
        }
    }

    pub fn partition_of(&self, jurisdiction: &str) -> i32 {
        partition_of(jurisdiction, self.partitions)
    }

    /// Hands a record to the partition (and router) that owns it, at once
    /// and acknowledged. The record keeps its id, so forwarding it twice is
    /// recognised by the owner.
    pub async fn forward(&self, record: &OutRecord) -> anyhow::Result<()> {
        self.publisher.publish(record).await
    }

    /// Whether this instance writes for `partition`: it owns it, or was
    /// never assigned any (a router driven directly by a test).
    pub fn owns(&self, partition: i32) -> bool {
        !self.assigned || self.owned.contains(&partition)
    }

    /// Whether the record id was applied: in memory, in the batch's
    /// prefetch, else asked of the Store.
    pub async fn applied(&self, id: &str) -> anyhow::Result<bool> {
        if self.recent.ids.contains(id) {
            return Ok(true);
        }
        if let Some(&applied) = self.prefetched.applied.get(id) {
            return Ok(applied);
        }
        Ok(self.store.get_key(&super::applied_key(id)).await?.is_some())
    }

    /// Reads what a batch's records will ask the Store — their applied
    /// markers, and the units and tasks their commands name — in one round
    /// trip (three reads pipelined on one connection), instead of one or
    /// two round trips per record. Best effort: on a Store error each
    /// record asks again.
    pub async fn prefetch(&mut self, wanted: Wanted) {
        let applied: Vec<String> = wanted
            .applied
            .into_iter()
            .filter(|id| !self.recent.ids.contains(id))
            .collect();
        let applied_keys: Vec<String> = applied.iter().map(|id| super::applied_key(id)).collect();
        let task_keys: Vec<String> = wanted.tasks.iter().map(|id| super::task_key(id)).collect();
        let (markers, units, tasks) = futures::join!(
            self.store.get_keys(&applied_keys),
            self.store.units_by_id(&wanted.units),
            self.store.get_keys(&task_keys),
        );
        let mut prefetched = Prefetched::default();
        if let Ok(markers) = markers {
            prefetched.applied = applied
                .into_iter()
                .zip(markers)
                .map(|(id, v)| (id, v.is_some()))
                .collect();
        }
        if let Ok(units) = units {
            prefetched.units = wanted.units.into_iter().zip(units).collect();
        }
        if let Ok(tasks) = tasks {
            prefetched.tasks = wanted
                .tasks
                .into_iter()
                .zip(tasks)
                .map(|(id, json)| (id, json.and_then(|j| serde_json::from_str(&j).ok())))
                .collect();
        }
        // Dispatch's searches, all at once, then every unit they found
        // that is not read yet: two round trips for the batch instead of
        // two per event.
        let searches = wanted.near.iter().map(|(lat, lon)| {
            self.store
                .nearest_units(*lat, *lon, wanted.near_radius_m, wanted.near_limit)
        });
        let found = futures::future::join_all(searches).await;
        let mut ids: Vec<String> = Vec::new();
        for ((lat, lon), hits) in wanted.near.iter().zip(found) {
            let Ok(hits) = hits else { continue };
            ids.extend(
                hits.iter()
                    .filter(|h| !prefetched.units.contains_key(&h.unit))
                    .map(|h| h.unit.clone()),
            );
            prefetched.near.insert((lat.to_bits(), lon.to_bits()), hits);
        }
        ids.sort_unstable();
        ids.dedup();
        if let Ok(units) = self.store.units_by_id(&ids).await {
            prefetched.units.extend(ids.into_iter().zip(units));
        } else {
            prefetched.near.clear();
        }
        prefetched.near_radius_m = wanted.near_radius_m;
        prefetched.near_limit = wanted.near_limit;
        self.prefetched = prefetched;
    }

    pub fn remember(&mut self, id: String) {
        if self.recent.ids.insert(id.clone()) {
            self.recent.order.push_back(id);
            while self.recent.order.len() > RECENT_APPLIED {
                if let Some(old) = self.recent.order.pop_front() {
                    self.recent.ids.remove(&old);
                }
            }
        }
    }

    /// Forgets ids whose outputs were thrown away, so their records are
    /// applied when handled again.
    pub fn forget(&mut self, ids: &[String]) {
        for id in ids {
            self.recent.ids.remove(id);
        }
        let recent = &self.recent.ids;
        self.recent.order.retain(|id| recent.contains(id));
    }

    /// Makes a staged incident the in-memory state: open and owned ones
    /// are held (and indexed), the rest let go.
    pub fn hold(&mut self, incident: &Incident) {
        if incident.status.is_open() && self.owns(self.partition_of(&incident.jurisdiction)) {
            self.index.insert(incident);
            self.open.insert(incident.id.clone(), incident.clone());
        } else {
            self.index.remove(&incident.id);
            self.open.remove(&incident.id);
        }
    }

    pub fn hold_task(&mut self, task: &Task) {
        if task.status.is_open() {
            self.tasks.insert(task.id.clone(), task.clone());
        } else {
            self.tasks.remove(&task.id);
        }
    }

    /// Replaces the in-memory state of the owned jurisdictions with the
    /// Store's, which holds exactly what was committed.
    pub async fn reload(&mut self) -> anyhow::Result<()> {
        let all = self.store.open_incidents().await?;
        self.open = all
            .into_iter()
            .filter(|i| self.owns(self.partition_of(&i.jurisdiction)))
            .map(|i| (i.id.clone(), i))
            .collect();
        self.index.clear();
        for incident in self.open.values() {
            self.index.insert(incident);
        }
        self.tasks.clear();
        metrics::gauge!(bus::metrics::ROUTER_INCIDENTS_OPEN).set(self.open.len() as f64);
        Ok(())
    }
}
