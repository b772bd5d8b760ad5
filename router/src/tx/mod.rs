//! The router's transactions: the only code that writes the Store (but for
//! `rebuild`, which refills a lost one from the topics) or sends a record. A [`Tx`] covers one input record (or one clock step for one
//! incident, or one reconciled unit) and holds its reads, its claims and
//! its outputs. Handlers (`events`, `commands`, `dispatch`, `clock`) decide;
//! they read and write only through a `Tx`.
//!
//! Reads go through one order: this transaction's outputs, then the
//! outputs staged since the last settle, then the owned state
//! ([`Books`]), then the Store. A finished `Tx` is *staged* (its outputs
//! become the in-memory state at once, so the next record sees them) or
//! dropped (it wrote nothing anywhere). [`settle`] then makes the
//! staged batch durable in this order:
//!
//! 1. **commit** — one atomic Store step ([`bus::store::Store::commit`]):
//!    fencing tokens checked, and every unit it claims still available,
//!    then incidents, tasks, units,
//!    the records' applied markers and the *outbox* (every output record,
//!    serialised, per partition) written together;
//! 2. **publish** — every record handed to the broker, acknowledgements
//!    awaited;
//! 3. the outbox cleared; only then are the input offsets stored.
//!
//! So a replay repeats, it never recomputes: a router killed before the
//! commit left nothing, not even a unit claim, and one
//! killed after it left a decision that the next owner of the partition
//! republishes from the outbox before it handles anything, while the
//! applied markers make the redelivered records no-ops.

mod books;
mod publish;
mod settle;

use bus::model::{DeadLetter, Escalation, Incident, Task, Timestamp, Unit, UnitStatus};
use bus::store::NearbyUnit;

use crate::briefing;
use crate::engine::Engine;

pub(crate) use self::books::{Books, Wanted};
pub use self::publish::{Publish, Recorder};
pub use self::settle::SettleError;

/// How long applied event and action ids are remembered in the Store.
pub(crate) const APPLIED_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

pub(crate) fn applied_key(id: &str) -> String {
    format!("router:applied:{id}")
}

pub fn task_key(id: &str) -> String {
    format!("router:task:{id}")
}

pub(crate) fn capref_key(identifier: &str) -> String {
    format!("capref:{identifier}")
}

fn hotspot_key(cell: &str) -> String {
    format!("hotspot:{cell}")
}

/// Repeat hotspot counts per cell are kept for a day.
const HOTSPOT_KEEP_MS: i64 = 24 * 3600 * 1000;

/// Where a test may stop the router as SIGKILL would (feature
/// `failpoints`): the process panics there, and no cleanup runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// A unit was just claimed (in the transaction, not yet committed).
    AfterClaim,
    /// The batch was committed to the Store, nothing published.
    AfterCommit,
    /// Every record was handed to the broker, no acknowledgement awaited.
    AfterPublish,
    /// Every record was acknowledged, the outbox not cleared.
    AfterAcks,
    /// The batch is settled; its offsets are not stored yet.
    AfterSettle,
}

/// The `n`th time (from 0) the router reaches `point`, it dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashAt {
    pub point: CrashPoint,
    pub nth: usize,
}

impl Books {
    #[cfg(feature = "failpoints")]
    pub(crate) fn crash_point(&mut self, point: CrashPoint) {
        if let Some(at) = &mut self.crash
            && at.point == point
        {
            if at.nth == 0 {
                self.crash = None;
                panic!("crash point {point:?}");
            }
            at.nth -= 1;
        }
    }

    #[cfg(not(feature = "failpoints"))]
    #[inline(always)]
    pub(crate) fn crash_point(&mut self, _point: CrashPoint) {}
}

/// One transaction; see the module doc.
pub(crate) struct Tx<'b> {
    books: &'b mut Books,
    /// The events partition whose outbox holds this transaction's records.
    partition: i32,
    applied: Option<String>,
    incidents: Vec<Incident>,
    tasks: Vec<Task>,
    units: Vec<Unit>,
    escalations: Vec<Escalation>,
    dead_letters: Vec<(String, DeadLetter)>,
    caprefs: Vec<(String, String)>,
    expect_available: Vec<String>,
    expected: Vec<(String, String)>,
}

impl<'b> Tx<'b> {
    /// A transaction for the outputs of `partition`, applying the record
    /// `applied` (none for a clock step).
    pub fn begin(books: &'b mut Books, partition: i32, applied: Option<&str>) -> Tx<'b> {
        Tx {
            books,
            partition,
            applied: applied.map(str::to_owned),
            incidents: Vec::new(),
            tasks: Vec::new(),
            units: Vec::new(),
            escalations: Vec::new(),
            dead_letters: Vec::new(),
            caprefs: Vec::new(),
            expect_available: Vec::new(),
            expected: Vec::new(),
        }
    }

    pub fn books(&self) -> &Books {
        self.books
    }

    // ---------------------------------------------------------------- reads

    pub async fn incident(&self, id: &str) -> anyhow::Result<Option<Incident>> {
        if let Some(i) = self.incidents.iter().find(|i| i.id == id) {
            return Ok(Some(i.clone()));
        }
        if let Some(i) = self.books.pending.incidents.get(id) {
            return Ok(Some(i.clone()));
        }
        if let Some(i) = self.books.open.get(id) {
            return Ok(Some(i.clone()));
        }
        Ok(self.books.store.incident(id).await?)
    }

    pub async fn task(&self, id: &str) -> anyhow::Result<Option<Task>> {
        if let Some(t) = self.tasks.iter().find(|t| t.id == id) {
            return Ok(Some(t.clone()));
        }
        if let Some(t) = self.books.pending.tasks.get(id) {
            return Ok(Some(t.clone()));
        }
        if let Some(t) = self.books.tasks.get(id) {
            return Ok(Some(t.clone()));
        }
        if let Some(t) = self.books.prefetched.tasks.get(id) {
            return Ok(t.clone());
        }
        match self.books.store.get_key(&task_key(id)).await? {
            Some(json) => Ok(serde_json::from_str(&json).ok()),
            None => Ok(None),
        }
    }

    /// The unit as this transaction or a pending one left it, if either
    /// changed it: newer than the Store's copy.
    fn staged_unit(&self, id: &str) -> Option<Unit> {
        self.units
            .iter()
            .find(|u| u.id == id)
            .or_else(|| self.books.pending.units.get(id))
            .cloned()
    }

    pub async fn unit(&self, id: &str) -> anyhow::Result<Option<Unit>> {
        if let Some(unit) = self.staged_unit(id) {
            return Ok(Some(unit));
        }
        if let Some(unit) = self.books.prefetched.units.get(id) {
            return Ok(unit.clone());
        }
        Ok(self.books.store.unit(id).await?)
    }

    /// Units within `radius_m` of the point, nearest first, at most
    /// `limit`, each as this router last left it (two Store round trips
    /// for all of them).
    pub async fn units_near(
        &self,
        lat: f64,
        lon: f64,
        radius_m: f64,
        limit: usize,
    ) -> anyhow::Result<Vec<(NearbyUnit, Unit)>> {
        let prefetched = &self.books.prefetched;
        let searched = prefetched
            .near
            .get(&(lat.to_bits(), lon.to_bits()))
            .filter(|_| prefetched.near_radius_m == radius_m && prefetched.near_limit >= limit);
        let nearby = match searched {
            Some(hits) => hits.iter().take(limit).cloned().collect(),
            None => self.books.store.nearest_units(lat, lon, radius_m, limit).await?,
        };
        let unread: Vec<String> = nearby
            .iter()
            .filter(|near| !prefetched.units.contains_key(&near.unit))
            .map(|near| near.unit.clone())
            .collect();
        let mut read: std::collections::HashMap<String, Option<Unit>> = if unread.is_empty() {
            Default::default()
        } else {
            unread
                .iter()
                .cloned()
                .zip(self.books.store.units_by_id(&unread).await?)
                .collect()
        };
        let stored: Vec<Option<Unit>> = nearby
            .iter()
            .map(|near| match prefetched.units.get(&near.unit) {
                Some(unit) => unit.clone(),
                None => read.remove(&near.unit).flatten(),
            })
            .collect();
        Ok(nearby
            .into_iter()
            .zip(stored)
            .filter_map(|(near, stored)| {
                let unit = self.staged_unit(&near.unit).or(stored)?;
                Some((near, unit))
            })
            .collect())
    }

    /// The incident a CAP alert identifier made, if any.
    pub async fn capref(&self, identifier: &str) -> anyhow::Result<Option<String>> {
        let staged = self
            .caprefs
            .iter()
            .chain(&self.books.pending.caprefs)
            .rev()
            .find(|(cap, _)| cap == identifier);
        if let Some((_, id)) = staged {
            return Ok(Some(id.clone()));
        }
        Ok(self.books.store.get_key(&capref_key(identifier)).await?)
    }

    /// Open incidents this instance holds near a point (repeat linking).
    pub fn open_near(&self, lat: f64, lon: f64) -> impl Iterator<Item = &Incident> {
        self.books.index.near(lat, lon).filter_map(|id| self.books.open.get(id))
    }

    // --------------------------------------------------------------- writes

    /// Claims `unit`, as this transaction read it, for `task`: `None` when
    /// it is not available. Nothing is written until the commit, which
    /// checks that a unit read from the Store is still available there, so
    /// two routers never give one unit two tasks, and a transaction that
    /// never commits leaves no claim behind. (A unit this batch already
    /// changed is this router's to give: the Store does not offer it to
    /// anyone else meanwhile.)
    pub fn claim(&mut self, unit: &Unit, task: &str) -> Option<Unit> {
        if unit.status != UnitStatus::Available {
            return None;
        }
        if self.staged_unit(&unit.id).is_none() {
            self.expect_available.push(unit.id.clone());
        }
        self.books.crash_point(CrashPoint::AfterClaim);
        let mut claimed = unit.clone();
        claimed.status = UnitStatus::Assigned;
        claimed.task = Some(task.to_owned());
        Some(claimed)
    }

    /// Requires, at the commit, that `unit` still works on `task` (a claim
    /// this router did not make, such as one the reconciler undoes or a
    /// pre-emption takes over). A unit this batch already changed is this
    /// router's: the Store does not hold its claim yet, so nothing is
    /// checked (the check would fail the batch that makes the claim).
    pub fn expect_claim(&mut self, unit: &str, task: &str) {
        if self.staged_unit(unit).is_none() {
            self.expected.push((unit.to_owned(), task.to_owned()));
        }
    }

    pub fn put_incident(&mut self, incident: Incident) {
        upsert(&mut self.incidents, incident, |i| &i.id);
    }

    /// The incident this transaction wrote last (a note goes on it).
    pub fn last_incident(&mut self) -> Option<&mut Incident> {
        self.incidents.last_mut()
    }

    pub fn put_task(&mut self, task: Task) {
        upsert(&mut self.tasks, task, |t| &t.id);
    }

    pub fn put_unit(&mut self, unit: Unit) {
        upsert(&mut self.units, unit, |u| &u.id);
    }

    pub fn escalate(&mut self, escalation: Escalation) {
        self.escalations.push(escalation);
    }

    pub fn dead_letter(&mut self, key: String, letter: DeadLetter) {
        self.dead_letters.push((key, letter));
    }

    /// Remembers which incident a CAP alert identifier made.
    pub fn put_capref(&mut self, identifier: String, incident: String) {
        self.caprefs.push((identifier, incident));
    }

    pub fn has_outputs(&self) -> bool {
        !(self.incidents.is_empty()
            && self.tasks.is_empty()
            && self.units.is_empty()
            && self.escalations.is_empty()
            && self.dead_letters.is_empty())
    }

    /// Counts an event toward its cell's repeat hotspot. Written at once:
    /// the member is the event id, so doing it twice is doing it once.
    pub async fn count_hotspot(&self, cell: &str, event: &str, at: Timestamp) -> anyhow::Result<()> {
        let at_ms = at.timestamp_millis();
        self.books
            .store
            .window_add(&hotspot_key(cell), event, at_ms, HOTSPOT_KEEP_MS)
            .await?;
        Ok(())
    }

    // ------------------------------------------------------------ finishing

    /// Briefs again every open task of each incident this transaction
    /// wrote ([`crate::briefing`]): a task whose briefing changed is written
    /// with `changes` naming what. A task written for another reason (its
    /// status moved) names nothing: `changes` is about one version only.
    async fn brief_tasks(&mut self, engine: &Engine) -> anyhow::Result<()> {
        for task in &mut self.tasks {
            task.changes.clear();
        }
        for index in 0..self.incidents.len() {
            let incident = &self.incidents[index];
            let point = engine.dispatch_point(incident);
            let open: Vec<String> = incident
                .units
                .iter()
                .filter(|u| u.status.is_open())
                .map(|u| u.task.clone())
                .collect();
            for task_id in open {
                let Some(mut task) = self.task(&task_id).await? else {
                    continue;
                };
                if !task.status.is_open() {
                    continue;
                }
                let changes = briefing::brief(&mut task, &self.incidents[index], point);
                let written = self.tasks.iter().any(|t| t.id == task.id);
                if !changes.is_empty() || written {
                    // A task issued in this transaction is new to its unit:
                    // nothing of it changed.
                    task.changes = if task.version == 0 { Vec::new() } else { changes };
                    self.put_task(task);
                }
            }
        }
        Ok(())
    }

    /// Briefs the tasks, makes this transaction's outputs the router's
    /// state and queues them for the next settle.
    pub async fn stage(mut self, engine: &Engine, now: Timestamp) -> anyhow::Result<()> {
        self.brief_tasks(engine).await?;
        let Tx {
            books,
            partition,
            applied,
            mut incidents,
            mut tasks,
            mut units,
            escalations,
            dead_letters,
            caprefs,
            expect_available,
            expected,
        } = self;
        for incident in &mut incidents {
            incident.version += 1;
            incident.updated_at = now;
            crate::incident::trim_timeline(incident, now);
        }
        for task in &mut tasks {
            task.version += 1;
            task.updated_at = now;
        }
        for unit in &mut units {
            unit.version += 1;
        }
        let records = match settle::outputs(&incidents, &tasks, &units, &escalations, &dead_letters) {
            Ok(records) => records,
            Err(e) => return Err(anyhow::Error::new(e).context("serialising the router's outputs")),
        };
        for incident in &incidents {
            books.hold(incident);
        }
        for task in &tasks {
            books.hold_task(task);
        }
        metrics::gauge!(bus::metrics::ROUTER_INCIDENTS_OPEN).set(books.open.len() as f64);
        books.freed += units.iter().filter(|u| u.status == UnitStatus::Available).count();
        // Every partition an incident of this transaction belongs to is
        // fenced at the commit, not only the record's: a merge, a
        // pre-emption or a caller's repeat may write an incident of another
        // partition this instance owns, and must fail if it lost it.
        let written: Vec<i32> = incidents.iter().map(|i| books.partition_of(&i.jurisdiction)).collect();
        let pending = &mut books.pending;
        pending.partitions.insert(partition);
        pending.partitions.extend(written);
        pending.records.extend(records.into_iter().map(|r| (partition, r)));
        for i in incidents {
            pending.incidents.insert(i.id.clone(), i);
        }
        for t in tasks {
            pending.tasks.insert(t.id.clone(), t);
        }
        for u in units {
            pending.units.insert(u.id.clone(), u);
        }
        pending.caprefs.extend(caprefs);
        pending.expect_available.extend(expect_available);
        pending.expected.extend(expected);
        if let Some(id) = applied {
            pending.applied.push(id.clone());
            books.remember(id);
        }
        Ok(())
    }
}

fn upsert<T>(items: &mut Vec<T>, item: T, id: impl Fn(&T) -> &String) {
    match items.iter_mut().find(|i| id(i) == id(&item)) {
        Some(slot) => *slot = item,
        None => items.push(item),
    }
}
