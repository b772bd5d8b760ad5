//! The IO edge of the router: turns consumed records into calls on the
//! [`Engine`], claims units in the Store, and publishes every outcome —
//! incident versions, tasks, unit states, escalations, dead letters — with
//! the broker's acknowledgement before the record counts as handled.
//!
//! Records are *staged* one after another (outputs handed to the producer,
//! in-memory state updated at once) and then *settled* together: every
//! acknowledgement awaited, then the Store written. Only then are their
//! offsets stored. Until a settle, lookups read through the unsettled
//! outputs, so a record sees what the records before it changed; if a
//! publish fails, the unsettled state is thrown away and reloaded from the
//! Store, and the records are handled again.
//!
//! Invariants: an event or action id applied once changes nothing the
//! second time (in-memory set, then a Store key); a unit is only ever given
//! a task through `Store::claim_unit`, so two incidents never share it; a
//! rejected command is recorded as an escalation and never applied. This
//! module must never skip a record to make progress: a record it cannot
//! use goes to the dead-letter topic.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bus::ServiceContext;
use bus::kafka::{Delivery, OutRecord, ProduceError, Producer, Received};
use bus::model::{
    Action, Channel, Command, DeadLetter, Escalation, EscalationKind, Event, FieldError, Incident, IncidentStatus,
    IncidentUnit, ReportedStatus, SlaState, Source, Stage, Task, TaskKind, TaskStatus, Timestamp, Unit, UnitRole,
    UnitStatus, UnitType, new_id,
};
use bus::store::{Claim, SharedStore, StoreError};
use bus::topics::Topic;
use bus::validate::{InputRules, normalise, validate_input};
use serde_json::Value;

use crate::engine::{BY_ROUTER, Candidate, Engine, SpatialIndex, add_desk, derive_status, entry, not_applicable};
use crate::partition::partition_of;

/// `ce_source` of everything the router writes.
pub const CE_SOURCE: &str = "/qzx/router";

/// How long applied event and action ids are remembered in the Store.
const APPLIED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Task snapshots are kept this long (acks may come late; rebuild refills).
const TASK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
const CAPREF_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Repeat hotspot counts per cell are kept for a day.
const HOTSPOT_KEEP_MS: i64 = 24 * 3600 * 1000;
/// Applied ids remembered in memory (the Store remembers the rest).
const RECENT_APPLIED: usize = 20_000;
/// Waiting incidents the clock retries each tick besides one per unit
/// freed since the last tick.
const WAITING_RETRIES_PER_TICK: usize = 4;
/// Raw bytes kept in a dead letter (base64 may grow them by a third; the
/// broker's default limit is 1 MiB).
const MAX_DEAD_LETTER_BYTES: usize = 512 * 1024;
/// Timeline entries kept on an incident: a matter with endless repeat calls
/// must not grow its snapshot past what the broker accepts. The first
/// entries (creation, score, desks) are always kept.
const MAX_TIMELINE: usize = 300;
const TIMELINE_HEAD: usize = 10;

pub(crate) fn applied_key(id: &str) -> String {
    format!("router:applied:{id}")
}

pub(crate) fn task_key(id: &str) -> String {
    format!("router:task:{id}")
}

fn capref_key(identifier: &str) -> String {
    format!("capref:{identifier}")
}

fn hotspot_key(cell: &str) -> String {
    format!("hotspot:{cell}")
}

/// Why a command was not applied; becomes a `rejected` escalation.
#[derive(Debug)]
enum Fail {
    Reject { incident: Option<String>, reason: String },
    Io(anyhow::Error),
}

impl From<anyhow::Error> for Fail {
    fn from(e: anyhow::Error) -> Fail {
        Fail::Io(e)
    }
}

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Fail {
        Fail::Io(e.into())
    }
}

fn reject(incident: Option<&str>, reason: impl Into<String>) -> Fail {
    Fail::Reject {
        incident: incident.map(str::to_owned),
        reason: reason.into(),
    }
}

/// Everything one record (or one clock step for one incident) changes,
/// published together before the record counts as handled.
#[derive(Debug, Default)]
struct Batch {
    incidents: Vec<Incident>,
    tasks: Vec<Task>,
    units: Vec<Unit>,
    escalations: Vec<Escalation>,
    dead_letters: Vec<(String, DeadLetter)>,
    /// Units claimed while building the batch: released again if the
    /// batch cannot be published.
    claimed: Vec<(String, String)>,
    /// The event or action id this batch applies.
    applied: Option<String>,
    caprefs: Vec<(String, String)>,
}

impl Batch {
    fn applying(id: &str) -> Batch {
        Batch {
            applied: Some(id.to_owned()),
            ..Batch::default()
        }
    }

    fn put_incident(&mut self, incident: Incident) {
        upsert(&mut self.incidents, incident, |i| i.id.clone());
    }

    fn put_task(&mut self, task: Task) {
        upsert(&mut self.tasks, task, |t| t.id.clone());
    }

    fn put_unit(&mut self, unit: Unit) {
        upsert(&mut self.units, unit, |u| u.id.clone());
    }

    fn is_empty(&self) -> bool {
        self.incidents.is_empty()
            && self.tasks.is_empty()
            && self.units.is_empty()
            && self.escalations.is_empty()
            && self.dead_letters.is_empty()
    }
}

fn upsert<T>(items: &mut Vec<T>, item: T, id: impl Fn(&T) -> String) {
    let key = id(&item);
    match items.iter_mut().find(|i| id(i) == key) {
        Some(slot) => *slot = item,
        None => items.push(item),
    }
}

/// Outputs staged since the last settle: handed to the producer and made
/// the router's in-memory state, but not yet acknowledged (while
/// `deliveries` is not empty) or not yet written to the Store.
#[derive(Default)]
struct Unsettled {
    deliveries: Vec<Delivery>,
    /// By id: the newest staged version of each.
    incidents: HashMap<String, Incident>,
    tasks: HashMap<String, Task>,
    units: HashMap<String, Unit>,
    caprefs: Vec<(String, String)>,
    applied: Vec<String>,
    /// Units claimed for these outputs: released if they are not published.
    claimed: Vec<(String, String)>,
}

impl Unsettled {
    fn is_empty(&self) -> bool {
        self.deliveries.is_empty()
            && self.incidents.is_empty()
            && self.tasks.is_empty()
            && self.units.is_empty()
            && self.caprefs.is_empty()
            && self.applied.is_empty()
    }

    /// Adds a staged batch; a later version of the same thing replaces the
    /// earlier one (the Store only needs the newest, in any order).
    fn add(&mut self, batch: Batch) {
        for i in batch.incidents {
            self.incidents.insert(i.id.clone(), i);
        }
        for t in batch.tasks {
            self.tasks.insert(t.id.clone(), t);
        }
        for u in batch.units {
            self.units.insert(u.id.clone(), u);
        }
        self.caprefs.extend(batch.caprefs);
        self.applied.extend(batch.applied);
        self.claimed.extend(batch.claimed);
    }
}

/// A batch of records stopped at a failure.
#[derive(Debug, thiserror::Error)]
#[error("{source:#}")]
pub struct BatchError {
    /// Records from the start of the batch that are applied and published.
    pub handled: usize,
    pub source: anyhow::Error,
}

/// Why a settle failed, which decides what the caller retries.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// Some output was not acknowledged: the staged state was thrown away
    /// and reloaded, and the records must be handled again.
    #[error("publishing the router's outputs: {0:#}")]
    Unpublished(anyhow::Error),
    /// Everything is published but the Store write failed: settle again.
    #[error("writing the router's state to the store: {0:#}")]
    Unstored(anyhow::Error),
}

/// The router's state and IO, driven one record or tick at a time by
/// [`crate::run`].
pub struct Router {
    engine: Engine,
    store: SharedStore,
    producer: Producer,
    rules: InputRules,
    partitions: i32,
    owned: HashSet<i32>,
    /// Open incidents of the jurisdictions this instance owns: the only
    /// writer of them, so this copy is authoritative.
    open: HashMap<String, Incident>,
    /// `open` by place, for repeat linking.
    index: SpatialIndex,
    /// Open tasks of those incidents.
    tasks: HashMap<String, Task>,
    recent: HashSet<String>,
    recent_order: VecDeque<String>,
    /// Whether the Store marks a record id applied, read for a whole batch
    /// in one round trip by `handle_all` (ids are the records' CloudEvents
    /// ids) and dropped when it returns.
    prefetched: HashMap<String, bool>,
    /// Units this instance made available since the last tick.
    freed: usize,
    /// When the clock last retried dispatch for a waiting incident.
    retried: HashMap<String, Timestamp>,
    unsettled: Unsettled,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("open", &self.open.len())
            .field("owned", &self.owned)
            .finish()
    }
}

impl Router {
    pub fn new(ctx: &ServiceContext, engine: Engine, producer: Producer, partitions: i32) -> Router {
        Router {
            rules: InputRules::new(&ctx.config),
            index: SpatialIndex::new(engine.link_reach_m()),
            engine,
            store: ctx.store.clone(),
            producer,
            partitions: partitions.max(1),
            owned: HashSet::new(),
            open: HashMap::new(),
            tasks: HashMap::new(),
            recent: HashSet::new(),
            recent_order: VecDeque::new(),
            prefetched: HashMap::new(),
            freed: 0,
            retried: HashMap::new(),
            unsettled: Unsettled::default(),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Open incidents this instance holds, for tests and metrics.
    pub fn open_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.open.values()
    }

    /// The partitions of the events topic this instance owns changed:
    /// reload the open incidents of the jurisdictions they carry from the
    /// Store (written by the previous owner before it committed).
    pub async fn set_owned(&mut self, partitions: impl IntoIterator<Item = i32>) -> anyhow::Result<()> {
        self.settle().await?;
        self.owned = partitions.into_iter().collect();
        self.reload().await
    }

    /// Replaces the in-memory state of the owned jurisdictions with the
    /// Store's (which holds exactly what was settled).
    async fn reload(&mut self) -> anyhow::Result<()> {
        let all = self.store.open_incidents().await?;
        self.open = all
            .into_iter()
            .filter(|i| self.owned.contains(&partition_of(&i.jurisdiction, self.partitions)))
            .map(|i| (i.id.clone(), i))
            .collect();
        self.index.clear();
        for incident in self.open.values() {
            self.index.insert(incident);
        }
        self.tasks.clear();
        metrics::gauge!(bus::metrics::ROUTER_INCIDENTS_OPEN).set(self.open.len() as f64);
        tracing::info!(
            partitions = ?self.owned,
            open = self.open.len(),
            "router took over its jurisdictions"
        );
        Ok(())
    }

    /// Handles one consumed record and settles it. `Err` means "retry this
    /// record".
    pub async fn handle(&mut self, record: &Received, now: Timestamp) -> anyhow::Result<()> {
        self.handle_all(std::slice::from_ref(record), now)
            .await
            .map_err(|e| e.source)
    }

    /// Handles the records in order and settles them together. On `Err`,
    /// the first `handled` records are applied and published; the rest
    /// must be handled again.
    pub async fn handle_all(&mut self, records: &[Received], now: Timestamp) -> Result<(), BatchError> {
        let failed = |handled, source| BatchError { handled, source };
        // Outputs of an earlier call whose Store write failed come first.
        self.settle().await.map_err(|e| failed(0, e.into()))?;
        self.prefetch_applied(records).await;
        let mut staged = 0;
        let mut result = Ok(());
        for record in records {
            if let Err(e) = self.stage_record(record, now).await {
                result = Err(e);
                break;
            }
            staged += 1;
        }
        self.prefetched.clear();
        metrics::histogram!(bus::metrics::ROUTER_BATCH_RECORDS).record(staged as f64);
        match self.settle().await {
            Ok(()) => result.map_err(|e| failed(staged, e)),
            // Not handled until the Store holds it too, so a committed
            // offset never runs ahead of the Store. The retry writes the
            // Store first; the records' ids then make them no-ops.
            Err(e) => Err(failed(0, e.into())),
        }
    }

    async fn stage_record(&mut self, record: &Received, now: Timestamp) -> anyhow::Result<()> {
        let started = Instant::now();
        let result = match record.topic {
            Topic::Events => self.on_event_record(record, now).await,
            Topic::Actions => self.on_action_record(record, now).await,
            _ => Ok(()),
        };
        metrics::histogram!(bus::metrics::ROUTER_PROCESS_SECONDS, "topic" => record.topic.suffix())
            .record(started.elapsed().as_secs_f64());
        result
    }

    // ---------------------------------------------------------------- events

    async fn on_event_record(&mut self, record: &Received, now: Timestamp) -> anyhow::Result<()> {
        match self.parse_event(record, now) {
            Ok((event, false)) => self.apply_event(event, now).await,
            Ok((event, true)) => {
                if partition_of(&event.jurisdiction, self.partitions) == record.partition || forwarded(record) {
                    return self.apply_event(event, now).await;
                }
                // Written by a source system under another key: hand the
                // normalised event to the partition (and router) that owns
                // its jurisdiction. Its id is stable, so a replay of this
                // record forwards a duplicate the owner recognises.
                let out = OutRecord::json(Topic::Events, &event.jurisdiction, &event.id, &event)?;
                self.producer.send(&out).await?;
                metrics::counter!(bus::metrics::ROUTER_EVENTS_TOTAL, "outcome" => "forwarded").increment(1);
                Ok(())
            }
            Err(errors) => {
                metrics::counter!(bus::metrics::ROUTER_EVENTS_TOTAL, "outcome" => "dead_letter").increment(1);
                tracing::warn!(
                    partition = record.partition,
                    offset = record.offset,
                    errors = errors.len(),
                    "unusable record on the events topic; dead-lettered"
                );
                self.dead_letter(record, errors, now).await
            }
        }
    }

    /// A normalised event as ingest writes it, or an input event a source
    /// system wrote to the topic directly (validated and normalised here).
    /// The event and whether it was normalised here.
    fn parse_event(&self, record: &Received, now: Timestamp) -> Result<(Event, bool), Vec<FieldError>> {
        // Straight to the type: what ingest writes, nearly every record.
        if let Ok(event) = serde_json::from_slice::<Event>(&record.payload)
            && !event.id.is_empty()
            && !event.jurisdiction.is_empty()
        {
            return Ok((event, false));
        }
        let value: Value = serde_json::from_slice(&record.payload)
            .map_err(|e| vec![FieldError::new("", format!("not valid JSON: {e}"))])?;
        let input = validate_input(&value, &self.rules, None, now)?;
        let mut event = normalise(input, self.engine.city(), now);
        // A stable id, so a replay of this record is recognised.
        event.id = match &record.ce {
            Ok(ce) if !ce.id.is_empty() => format!("{}:{}", ce.source, ce.id),
            _ => format!("kafka:{}:{}:{}", record.topic.suffix(), record.partition, record.offset),
        };
        Ok((event, true))
    }

    async fn dead_letter(
        &mut self,
        record: &Received,
        mut errors: Vec<FieldError>,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        // A record too large for the dead-letter topic would be refused
        // forever and block its partition: keep its head and say so.
        let raw = if record.payload.len() > MAX_DEAD_LETTER_BYTES {
            errors.push(FieldError::new(
                "",
                format!(
                    "record of {} bytes truncated to {MAX_DEAD_LETTER_BYTES} for the dead-letter topic",
                    record.payload.len()
                ),
            ));
            &record.payload[..MAX_DEAD_LETTER_BYTES]
        } else {
            &record.payload[..]
        };
        let mut letter = DeadLetter::new(raw, errors, Channel::Kafka, now);
        let source = serde_json::from_slice::<Value>(&record.payload)
            .ok()
            .and_then(|v| v.get("source").and_then(Value::as_str).map(str::to_owned))
            .or_else(|| record.ce.as_ref().ok().map(|ce| ce.source.clone()));
        letter.source.clone_from(&source);
        letter.content_type = record.ce.as_ref().ok().and_then(|ce| ce.content_type.clone());
        let mut batch = Batch::default();
        batch
            .dead_letters
            .push((source.unwrap_or_else(|| "kafka".to_owned()), letter));
        self.stage(batch, now).await
    }

    async fn applied(&self, id: &str) -> anyhow::Result<bool> {
        if self.recent.contains(id) {
            return Ok(true);
        }
        if let Some(&applied) = self.prefetched.get(id) {
            return Ok(applied);
        }
        Ok(self.store.get_key(&applied_key(id)).await?.is_some())
    }

    /// Reads the applied markers of a batch's records in one round trip,
    /// by their CloudEvents ids: what ingest and the api write as the
    /// event's or command's own id. A record whose id differs (a source
    /// system's raw event) is looked up on its own. Best effort: on a Store
    /// error each record asks again.
    async fn prefetch_applied(&mut self, records: &[Received]) {
        let ids: Vec<String> = records
            .iter()
            .filter_map(|r| r.ce.as_ref().ok())
            .map(|ce| ce.id.clone())
            .filter(|id| !id.is_empty() && !self.recent.contains(id))
            .collect();
        let keys: Vec<String> = ids.iter().map(|id| applied_key(id)).collect();
        if let Ok(values) = self.store.get_keys(&keys).await {
            self.prefetched = ids.into_iter().zip(values).map(|(id, v)| (id, v.is_some())).collect();
        }
    }

    /// Forgets ids whose outputs were not published, so their records
    /// are applied when handled again.
    fn forget(&mut self, ids: &[String]) {
        for id in ids {
            self.recent.remove(id);
        }
        self.recent_order.retain(|id| self.recent.contains(id));
    }

    fn remember(&mut self, id: String) {
        if self.recent.insert(id.clone()) {
            self.recent_order.push_back(id);
            while self.recent_order.len() > RECENT_APPLIED {
                if let Some(old) = self.recent_order.pop_front() {
                    self.recent.remove(&old);
                }
            }
        }
    }

    /// Scores, links or creates, diverts or dispatches one event, and
    /// settles it.
    pub async fn on_event(&mut self, event: Event, now: Timestamp) -> anyhow::Result<()> {
        self.settle().await?;
        self.apply_event(event, now).await?;
        Ok(self.settle().await?)
    }

    async fn apply_event(&mut self, event: Event, now: Timestamp) -> anyhow::Result<()> {
        if self.applied(&event.id).await? {
            metrics::counter!(bus::metrics::ROUTER_EVENTS_TOTAL, "outcome" => "duplicate").increment(1);
            return Ok(());
        }
        let mut batch = Batch::applying(&event.id);

        let cap = self.cap_reference(&event).await?;
        let referenced = cap
            .as_ref()
            .and_then(|(_, id)| id.as_ref())
            .and_then(|id| self.open.get(id).cloned());
        if referenced.is_none() && cap.as_ref().is_some_and(|(cancel, _)| *cancel) {
            // Cancels an alert that made no open incident: nothing to do,
            // and certainly no new incident.
            tracing::info!(event = %event.id, "cap cancel for no open incident");
            metrics::counter!(bus::metrics::ROUTER_EVENTS_TOTAL, "outcome" => "cap_cancel_ignored").increment(1);
            return self.stage(batch, now).await;
        }
        if let Some((cancel, _)) = cap
            && let Some(mut incident) = referenced
        {
            incident.events.push(event.id.clone());
            if cancel {
                incident.timeline.push(entry(
                    now,
                    format!("cancelled by alert {}", event.input.source_id),
                    event.input.source.as_str(),
                ));
                self.end_tasks(&mut batch, &mut incident, now, "alert cancelled")
                    .await?;
                incident.status = IncidentStatus::Closed;
                incident.disposition = Some(format!("cancelled by alert {}", event.input.source_id));
                pending_to_na(&mut incident);
            } else {
                let score = self.engine.scorer().score(&event, incident.repeat_count);
                incident.timeline.push(entry(
                    now,
                    format!(
                        "updated by alert {}: scored {} ({})",
                        event.input.source_id,
                        score.score,
                        score.reasons.join("; ")
                    ),
                    event.input.source.as_str(),
                ));
                if let Some(text) = &event.input.text {
                    incident.text = Some(text.clone());
                }
                if score.priority < incident.priority {
                    incident.priority = score.priority;
                }
                incident.score = incident.score.max(score.score);
            }
            batch.caprefs.push((event.input.source_id.clone(), incident.id.clone()));
            batch.put_incident(incident);
            metrics::counter!(bus::metrics::ROUTER_EVENTS_TOTAL, "outcome" => "cap_update").increment(1);
            return self.stage(batch, now).await;
        }

        let link = event.input.location.as_ref().and_then(|loc| {
            let near = self.index.near(loc.lat, loc.lon).filter_map(|id| self.open.get(id));
            self.engine
                .find_link(&event, near)
                .map(|(i, link, distance)| (i.id.clone(), link, distance))
        });
        let mut incident = if let Some((id, link, distance)) = link {
            let mut incident = self
                .open
                .get(&id)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("linked incident vanished"))?;
            self.engine.join(&mut incident, &event, link, distance, now);
            let label = match link {
                crate::engine::Link::Repeat => "repeat",
                crate::engine::Link::Fusion => "fusion",
            };
            metrics::counter!(bus::metrics::ROUTER_REPEATS_TOTAL, "link" => label).increment(1);
            metrics::counter!(bus::metrics::ROUTER_EVENTS_TOTAL, "outcome" => "linked").increment(1);
            if let Some(cell) = &event.cell {
                self.store
                    .window_add(
                        &hotspot_key(cell),
                        &event.id,
                        event.received_at.timestamp_millis(),
                        HOTSPOT_KEEP_MS,
                    )
                    .await?;
            }
            // A raised priority may need more units than were sent.
            if incident.status.is_open() && incident.diverted_to.is_none() && incident.deadlines.is_some() {
                self.top_up(&mut batch, &mut incident, now).await?;
            }
            incident
        } else {
            let score = self.engine.scorer().score(&event, 1);
            let mut incident = self.engine.new_incident(&event, &score, now);
            metrics::counter!(bus::metrics::ROUTER_INCIDENTS_TOTAL, "priority" => priority_label(incident.priority))
                .increment(1);
            metrics::counter!(bus::metrics::ROUTER_EVENTS_TOTAL, "outcome" => "incident").increment(1);
            if incident.status == IncidentStatus::Diverted {
                metrics::counter!(bus::metrics::ROUTER_DIVERTED_TOTAL, "by" => "category").increment(1);
            } else {
                self.top_up(&mut batch, &mut incident, now).await?;
            }
            incident
        };
        if event.input.source == Source::Alert {
            batch.caprefs.push((event.input.source_id.clone(), incident.id.clone()));
            if let Some((base, _)) = event.input.source_id.rsplit_once('#') {
                batch.caprefs.push((base.to_owned(), incident.id.clone()));
            }
        }
        derive_status(&mut incident);
        batch.put_incident(incident);
        self.stage(batch, now).await
    }

    /// `Some((cancel, incident))` when the event is a CAP Update or Cancel,
    /// with the incident its references made, if any.
    async fn cap_reference(&self, event: &Event) -> anyhow::Result<Option<(bool, Option<String>)>> {
        let attrs = &event.input.attrs;
        let cancel = match attrs.get("cap_msg_type").and_then(Value::as_str) {
            Some(t) if t.eq_ignore_ascii_case("cancel") => true,
            Some(t) if t.eq_ignore_ascii_case("update") => false,
            _ => return Ok(None),
        };
        let references: Vec<String> = match attrs.get("cap_references") {
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        for reference in references {
            // CAP: "sender,identifier,sent"; a bare identifier is accepted.
            let parts: Vec<&str> = reference.split(',').collect();
            let identifier = if parts.len() >= 2 { parts[1] } else { parts[0] };
            let unsettled = self.unsettled.caprefs.iter().rev().find(|(cap, _)| cap == identifier);
            if let Some((_, id)) = unsettled {
                return Ok(Some((cancel, Some(id.clone()))));
            }
            if let Some(id) = self.store.get_key(&capref_key(identifier)).await? {
                return Ok(Some((cancel, Some(id))));
            }
        }
        Ok(Some((cancel, None)))
    }

    /// Sends the units an incident still needs: a primary when it has no
    /// open task, and for P1 reinforcements up to the reinforce target. A
    /// shortfall is escalated once (`no_unit`) and retried by the clock.
    async fn top_up(&mut self, batch: &mut Batch, incident: &mut Incident, now: Timestamp) -> anyhow::Result<()> {
        if working_units(incident) == 0 {
            let issued = self
                .dispatch(batch, incident, TaskKind::Respond, UnitRole::Primary, None, 1, now)
                .await?;
            if issued == 0 {
                self.no_unit(batch, incident, now, "none for the primary task");
                return Ok(());
            }
        }
        if incident.priority == 1 {
            let needed = self.engine.reinforce_units(&incident.jurisdiction, 1) as usize;
            let have = working_units(incident);
            if have < needed {
                let missing = needed - have;
                let issued = self
                    .dispatch(
                        batch,
                        incident,
                        TaskKind::Reinforce,
                        UnitRole::Reinforcement,
                        None,
                        missing,
                        now,
                    )
                    .await?;
                if issued < missing {
                    self.no_unit(
                        batch,
                        incident,
                        now,
                        &format!("only {} of {needed} units available", have + issued),
                    );
                }
            }
        }
        derive_status(incident);
        Ok(())
    }

    fn no_unit(&self, batch: &mut Batch, incident: &mut Incident, now: Timestamp, why: &str) {
        // Escalated once per incident; the clock keeps retrying quietly.
        if incident
            .timeline
            .iter()
            .any(|t| t.what.starts_with("no available unit"))
        {
            return;
        }
        let what = format!("no available unit: {why}; retrying");
        incident.timeline.push(entry(now, what.clone(), BY_ROUTER));
        batch.escalations.push(self.escalation(
            incident,
            EscalationKind::NoUnit,
            now,
            what,
            vec![self.engine.config().router.supervisor_desk.clone()],
        ));
    }

    /// Issues up to `count` tasks of `kind` to the best available units
    /// that have not worked on this incident, claiming each in the Store
    /// (a lost claim moves on to the next candidate). Returns how many.
    #[allow(clippy::too_many_arguments)]
    async fn dispatch(
        &mut self,
        batch: &mut Batch,
        incident: &mut Incident,
        kind: TaskKind,
        role: UnitRole,
        unit_type: Option<UnitType>,
        count: usize,
        now: Timestamp,
    ) -> anyhow::Result<usize> {
        let Some((lat, lon)) = self.engine.dispatch_point(incident) else {
            return Ok(0);
        };
        let config = &self.engine.config().router;
        let limit = config.candidate_units.max(count);
        // Ask for more than we need: the nearest may all be busy.
        let nearby = self
            .store
            .nearest_units(lat, lon, config.search_radius_m, limit.saturating_mul(4))
            .await?;
        let tried: HashSet<&str> = incident.units.iter().map(|u| u.unit.as_str()).collect();
        let nearby: Vec<_> = nearby
            .into_iter()
            .filter(|near| !tried.contains(near.unit.as_str()))
            .collect();
        // One Store round trip for all of them, then what this instance
        // changed since the last settle on top.
        let ids: Vec<String> = nearby.iter().map(|near| near.unit.clone()).collect();
        let stored = self.store.units_by_id(&ids).await?;
        let mut candidates = Vec::new();
        for (near, stored) in nearby.into_iter().zip(stored) {
            let Some(unit) = self.staged_unit(batch, &near.unit).or(stored) else {
                continue;
            };
            if unit.status != UnitStatus::Available || unit_type.is_some_and(|t| t != unit.unit_type) {
                continue;
            }
            candidates.push(Candidate {
                unit,
                distance_m: near.distance_m,
            });
            if candidates.len() >= limit {
                break;
            }
        }
        let ranked = self.engine.rank(incident, candidates, now);
        let mut issued = 0;
        for choice in ranked {
            if issued == count {
                break;
            }
            let task = self.engine.new_task(incident, &choice.unit.id, kind, now);
            match self.store.claim_unit(&choice.unit.id, &task.id).await? {
                Claim::Claimed(unit) => {
                    let mut unit = self.newest(unit);
                    unit.at = now;
                    batch.claimed.push((unit.id.clone(), task.id.clone()));
                    incident.units.push(IncidentUnit {
                        unit: unit.id.clone(),
                        task: task.id.clone(),
                        role,
                        status: TaskStatus::Issued,
                        eta_s: choice.eta_s,
                    });
                    incident.timeline.push(entry(
                        now,
                        format!(
                            "{} task issued to {} ({}, eta {} s{})",
                            task_kind(kind),
                            unit.id,
                            unit.unit_type.as_str(),
                            choice.eta_s,
                            if choice.in_time {
                                ""
                            } else {
                                ", after the arrive target"
                            }
                        ),
                        BY_ROUTER,
                    ));
                    metrics::counter!(bus::metrics::ROUTER_TASKS_TOTAL, "kind" => task_kind(kind)).increment(1);
                    batch.put_unit(unit);
                    batch.put_task(task);
                    issued += 1;
                }
                Claim::Unavailable(status) => {
                    tracing::debug!(unit = %choice.unit.id, status = status.as_str(), "unit taken meanwhile");
                }
                Claim::NotFound => {}
            }
        }
        Ok(issued)
    }

    async fn unit(&self, batch: &Batch, id: &str) -> Result<Option<Unit>, StoreError> {
        match self.staged_unit(batch, id) {
            Some(unit) => Ok(Some(unit)),
            None => self.store.unit(id).await,
        }
    }

    /// The unit as this batch or an unsettled one left it, if either
    /// changed it: newer than the Store's copy.
    fn staged_unit(&self, batch: &Batch, id: &str) -> Option<Unit> {
        batch
            .units
            .iter()
            .find(|u| u.id == id)
            .or_else(|| self.unsettled.units.get(id))
            .cloned()
    }

    /// A unit just claimed in the Store, over the copy this instance
    /// changed since the last settle (the Store's lags until then).
    fn newest(&self, claimed: Unit) -> Unit {
        match self.unsettled.units.get(&claimed.id) {
            Some(staged) => Unit {
                status: claimed.status,
                task: claimed.task,
                ..staged.clone()
            },
            None => claimed,
        }
    }

    async fn task(&self, batch: &Batch, id: &str) -> anyhow::Result<Option<Task>> {
        if let Some(t) = batch.tasks.iter().find(|t| t.id == id) {
            return Ok(Some(t.clone()));
        }
        if let Some(t) = self.tasks.get(id) {
            return Ok(Some(t.clone()));
        }
        if let Some(t) = self.unsettled.tasks.get(id) {
            return Ok(Some(t.clone()));
        }
        match self.store.get_key(&task_key(id)).await? {
            Some(json) => Ok(serde_json::from_str(&json).ok()),
            None => Ok(None),
        }
    }

    async fn incident(&self, batch: &Batch, id: &str) -> anyhow::Result<Option<Incident>> {
        if let Some(i) = batch.incidents.iter().find(|i| i.id == id) {
            return Ok(Some(i.clone()));
        }
        if let Some(i) = self.open.get(id) {
            return Ok(Some(i.clone()));
        }
        if let Some(i) = self.unsettled.incidents.get(id) {
            return Ok(Some(i.clone()));
        }
        Ok(self.store.incident(id).await?)
    }

    /// Cancels one task and frees its unit.
    async fn cancel_task(
        &mut self,
        batch: &mut Batch,
        incident: &mut Incident,
        task_id: &str,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        if let Some(mut task) = self.task(batch, task_id).await?
            && task.status.can_become(TaskStatus::Cancelled)
        {
            task.status = TaskStatus::Cancelled;
            self.free_unit(batch, &task.unit, &task.id, now).await?;
            batch.put_task(task);
        }
        if let Some(u) = incident.units.iter_mut().find(|u| u.task == task_id)
            && u.status.is_open()
        {
            u.status = TaskStatus::Cancelled;
        }
        Ok(())
    }

    /// Cancels every open task of the incident and frees the units.
    async fn end_tasks(
        &mut self,
        batch: &mut Batch,
        incident: &mut Incident,
        now: Timestamp,
        why: &str,
    ) -> anyhow::Result<()> {
        let open: Vec<String> = incident
            .units
            .iter()
            .filter(|u| u.status.is_open())
            .map(|u| u.task.clone())
            .collect();
        for task in &open {
            self.cancel_task(batch, incident, task, now).await?;
        }
        if !open.is_empty() {
            incident.timeline.push(entry(
                now,
                format!("{} task(s) cancelled: {why}", open.len()),
                BY_ROUTER,
            ));
        }
        Ok(())
    }

    /// Makes a unit available again, if it still works on `task`.
    async fn free_unit(&mut self, batch: &mut Batch, unit: &str, task: &str, now: Timestamp) -> anyhow::Result<()> {
        if let Some(mut u) = self.unit(batch, unit).await?
            && u.task.as_deref() == Some(task)
        {
            u.status = UnitStatus::Available;
            u.task = None;
            u.at = now;
            batch.put_unit(u);
        }
        Ok(())
    }

    fn escalation(
        &self,
        incident: &Incident,
        kind: EscalationKind,
        now: Timestamp,
        message: String,
        desks: Vec<String>,
    ) -> Escalation {
        Escalation {
            id: new_id(),
            incident: incident.id.clone(),
            jurisdiction: incident.jurisdiction.clone(),
            at: now,
            kind,
            stage: None,
            desks,
            unit_type: None,
            message,
            by: BY_ROUTER.to_owned(),
            action: None,
        }
    }

    // --------------------------------------------------------------- actions

    async fn on_action_record(&mut self, record: &Received, now: Timestamp) -> anyhow::Result<()> {
        match record.json::<Action>() {
            Ok(action) => {
                if !forwarded(record)
                    && let Some(jurisdiction) = self.action_owner(&action).await?
                    && partition_of(&jurisdiction, self.partitions) != record.partition
                {
                    // Keyed by another jurisdiction than its incident's:
                    // only the incident's owner may write it, so hand the
                    // command over (its id makes a replay harmless).
                    let out = OutRecord::json(Topic::Actions, &jurisdiction, &action.id, &action)?;
                    self.producer.send(&out).await?;
                    metrics::counter!(bus::metrics::ROUTER_ACTIONS_TOTAL, "op" => op_name(&action.command), "outcome" => "forwarded")
                        .increment(1);
                    return Ok(());
                }
                self.apply_action(action, now).await
            }
            Err(e) => {
                metrics::counter!(bus::metrics::ROUTER_ACTIONS_TOTAL, "op" => "invalid", "outcome" => "dead_letter")
                    .increment(1);
                tracing::warn!(
                    partition = record.partition,
                    offset = record.offset,
                    error = %e,
                    "unusable record on the actions topic; dead-lettered"
                );
                self.dead_letter(record, vec![FieldError::new("", format!("not an action: {e}"))], now)
                    .await
            }
        }
    }

    /// The jurisdiction of the incident a command changes, when it changes
    /// one that exists (unit-only commands have none).
    async fn action_owner(&self, action: &Action) -> anyhow::Result<Option<String>> {
        let none = Batch::default();
        let task = match &action.command {
            Command::Ack { task } => Some(task.clone()),
            Command::Status {
                status: ReportedStatus::EnRoute | ReportedStatus::OnScene | ReportedStatus::Cleared,
                task,
                ..
            } => match (task, &action.by.unit) {
                (Some(t), _) => Some(t.clone()),
                (None, Some(unit)) => self.unit(&none, unit).await?.and_then(|u| u.task),
                (None, None) => None,
            },
            Command::Assign { incident, .. }
            | Command::Divert { incident, .. }
            | Command::Escalate { incident, .. }
            | Command::Close { incident, .. } => {
                return Ok(self.incident(&none, incident).await?.map(|i| i.jurisdiction));
            }
            _ => None,
        };
        match task {
            Some(id) => Ok(self.task(&none, &id).await?.map(|t| t.jurisdiction)),
            None => Ok(None),
        }
    }

    /// Applies one command, or records why it cannot be applied, and
    /// settles it.
    pub async fn on_action(&mut self, action: Action, now: Timestamp) -> anyhow::Result<()> {
        self.settle().await?;
        self.apply_action(action, now).await?;
        Ok(self.settle().await?)
    }

    async fn apply_action(&mut self, action: Action, now: Timestamp) -> anyhow::Result<()> {
        if self.applied(&action.id).await? {
            return Ok(());
        }
        let op = op_name(&action.command);
        let mut batch = Batch::applying(&action.id);
        // The command's own time, but never in the future of the router.
        let at = action.at.min(now);
        let result = match action.command.clone() {
            Command::Ack { task } => self.ack(&mut batch, &action, &task, at, now).await,
            Command::Status {
                status,
                task,
                lat,
                lon,
                note,
                unit_type,
            } => {
                self.status(
                    &mut batch,
                    &action,
                    StatusReport {
                        status,
                        task,
                        position: lat.zip(lon),
                        note,
                        unit_type,
                    },
                    at,
                    now,
                )
                .await
            }
            Command::Position { lat, lon } => self.position(&mut batch, &action, lat, lon, now).await,
            Command::Assign { incident, unit } => self.assign(&mut batch, &action, &incident, &unit, now).await,
            Command::Divert { incident, to } => self.divert(&mut batch, &action, &incident, &to, now).await,
            Command::Escalate {
                incident,
                desk,
                unit_type,
                note,
            } => {
                self.escalate(&mut batch, &action, &incident, desk, unit_type, note, now)
                    .await
            }
            Command::Close {
                incident,
                disposition,
                feedback,
            } => {
                self.close(&mut batch, &action, &incident, &disposition, feedback, now)
                    .await
            }
        };
        match result {
            Ok(()) => {
                metrics::counter!(bus::metrics::ROUTER_ACTIONS_TOTAL, "op" => op, "outcome" => "applied").increment(1);
                self.stage(batch, now).await
            }
            Err(Fail::Io(e)) => {
                self.release_claims(&batch.claimed).await;
                Err(e)
            }
            Err(Fail::Reject { incident, reason }) => {
                self.release_claims(&batch.claimed).await;
                metrics::counter!(bus::metrics::ROUTER_ACTIONS_TOTAL, "op" => op, "outcome" => "rejected").increment(1);
                tracing::info!(action = %action.id, op, reason = %reason, "command rejected");
                let incident_id = incident.unwrap_or_default();
                let jurisdiction = match self.incident(&Batch::default(), &incident_id).await {
                    Ok(Some(i)) => i.jurisdiction,
                    _ => action.jurisdiction.clone(),
                };
                let mut batch = Batch::applying(&action.id);
                batch.escalations.push(Escalation {
                    id: new_id(),
                    incident: incident_id,
                    jurisdiction,
                    at: now,
                    kind: EscalationKind::Rejected,
                    stage: None,
                    desks: Vec::new(),
                    unit_type: None,
                    message: format!("{op} rejected: {reason}"),
                    by: action.by.sub.clone(),
                    action: Some(action.id.clone()),
                });
                self.stage(batch, now).await
            }
        }
    }

    /// The task a unit command is about, checked to belong to the unit.
    async fn unit_task(&self, batch: &Batch, action: &Action, task_id: &str) -> Result<Task, Fail> {
        let task = self
            .task(batch, task_id)
            .await
            .map_err(Fail::Io)?
            .ok_or_else(|| reject(None, format!("unknown task {task_id}")))?;
        if let Some(unit) = &action.by.unit
            && *unit != task.unit
        {
            return Err(reject(
                Some(&task.incident),
                format!("task {task_id} belongs to unit {}, not {unit}", task.unit),
            ));
        }
        Ok(task)
    }

    async fn ack(
        &mut self,
        batch: &mut Batch,
        action: &Action,
        task_id: &str,
        at: Timestamp,
        now: Timestamp,
    ) -> Result<(), Fail> {
        let task = self.unit_task(batch, action, task_id).await?;
        self.move_task(batch, action, task, TaskStatus::Acknowledged, None, at, now)
            .await
    }

    /// Moves a task forward, its unit and its incident with it, and marks
    /// the 1-3-5 stages that now hold.
    #[allow(clippy::too_many_arguments)]
    async fn move_task(
        &mut self,
        batch: &mut Batch,
        action: &Action,
        mut task: Task,
        next: TaskStatus,
        unit_status: Option<UnitStatus>,
        at: Timestamp,
        now: Timestamp,
    ) -> Result<(), Fail> {
        let incident_id = task.incident.clone();
        if !task.status.can_become(next) {
            return Err(reject(
                Some(&incident_id),
                format!(
                    "task {} is {}, it cannot become {}",
                    task.id,
                    task_status(task.status),
                    task_status(next)
                ),
            ));
        }
        let mut incident = self
            .incident(batch, &incident_id)
            .await
            .map_err(Fail::Io)?
            .ok_or_else(|| reject(Some(&incident_id), format!("unknown incident {incident_id}")))?;
        if !incident.status.is_open() {
            return Err(reject(
                Some(&incident_id),
                format!("incident is {}", incident.status.as_str()),
            ));
        }
        task.status = next;
        if let Some(u) = incident.units.iter_mut().find(|u| u.task == task.id) {
            u.status = next;
        }
        incident.timeline.push(entry(
            now,
            format!("unit {} {} task {}", task.unit, task_status(next), task.id),
            &action.by.sub,
        ));
        if let Some(mut unit) = self.unit(batch, &task.unit).await?
            && unit.task.as_deref() == Some(task.id.as_str())
        {
            match (next, unit_status) {
                (TaskStatus::Cleared, _) => {
                    unit.status = UnitStatus::Available;
                    unit.task = None;
                }
                (_, Some(status)) => unit.status = status,
                _ => {}
            }
            unit.at = now;
            batch.put_unit(unit);
        }
        for stage in self.engine.update_sla(&mut incident, at) {
            metrics::counter!(bus::metrics::ROUTER_SLA_MET_TOTAL, "stage" => stage.as_str()).increment(1);
        }
        derive_status(&mut incident);
        if incident.status == IncidentStatus::Resolved {
            incident
                .timeline
                .push(entry(now, "resolved: every unit has cleared", BY_ROUTER));
        }
        batch.put_task(task);
        batch.put_incident(incident);
        Ok(())
    }

    async fn status(
        &mut self,
        batch: &mut Batch,
        action: &Action,
        report: StatusReport,
        at: Timestamp,
        now: Timestamp,
    ) -> Result<(), Fail> {
        let unit_id = action
            .by
            .unit
            .clone()
            .ok_or_else(|| reject(None, "a status report needs the unit it is about"))?;
        if let Some((lat, lon)) = report.position
            && !valid_position(lat, lon)
        {
            return Err(reject(None, format!("position {lat},{lon} is out of range")));
        }
        let existing = self.unit(batch, &unit_id).await?;
        match report.status {
            ReportedStatus::Available | ReportedStatus::Busy | ReportedStatus::OffDuty => {
                let status = match report.status {
                    ReportedStatus::Available => UnitStatus::Available,
                    ReportedStatus::Busy => UnitStatus::Busy,
                    _ => UnitStatus::OffDuty,
                };
                let mut unit = match existing {
                    Some(unit) => unit,
                    None if report.status == ReportedStatus::Available => {
                        let Some((lat, lon)) = report.position else {
                            return Err(reject(
                                None,
                                format!("unknown unit {unit_id}: report available with a position to register"),
                            ));
                        };
                        self.register(&unit_id, report.unit_type, lat, lon, now)
                    }
                    None => return Err(reject(None, format!("unknown unit {unit_id}"))),
                };
                if let Some(task) = unit.task.clone()
                    && let Some(t) = self.task(batch, &task).await.map_err(Fail::Io)?
                    && t.status.is_open()
                {
                    return Err(reject(
                        Some(&t.incident),
                        format!(
                            "unit {unit_id} still has task {task} ({}); clear it first",
                            task_status(t.status)
                        ),
                    ));
                }
                unit.status = status;
                unit.task = None;
                if let Some((lat, lon)) = report.position {
                    unit.lat = Some(lat);
                    unit.lon = Some(lon);
                }
                unit.at = now;
                batch.put_unit(unit);
                Ok(())
            }
            ReportedStatus::EnRoute | ReportedStatus::OnScene | ReportedStatus::Cleared => {
                let unit = existing.ok_or_else(|| reject(None, format!("unknown unit {unit_id}")))?;
                let task_id = report
                    .task
                    .clone()
                    .or_else(|| unit.task.clone())
                    .ok_or_else(|| reject(None, format!("unit {unit_id} has no task to report on")))?;
                let task = self.unit_task(batch, action, &task_id).await?;
                if task.unit != unit_id {
                    return Err(reject(
                        Some(&task.incident),
                        format!("task {task_id} is not unit {unit_id}'s"),
                    ));
                }
                let (next, unit_status) = match report.status {
                    ReportedStatus::EnRoute => (TaskStatus::EnRoute, UnitStatus::EnRoute),
                    ReportedStatus::OnScene => (TaskStatus::OnScene, UnitStatus::OnScene),
                    _ => (TaskStatus::Cleared, UnitStatus::Available),
                };
                if let Some((lat, lon)) = report.position {
                    let mut moved = unit.clone();
                    moved.lat = Some(lat);
                    moved.lon = Some(lon);
                    batch.put_unit(moved);
                }
                self.move_task(batch, action, task, next, Some(unit_status), at, now)
                    .await?;
                if let Some(note) = report.note.filter(|n| !n.is_empty())
                    && let Some(incident) = batch.incidents.last_mut()
                {
                    incident
                        .timeline
                        .push(entry(now, format!("note: {note}"), &action.by.sub));
                }
                Ok(())
            }
        }
    }

    /// A unit not in the Store comes on duty: roster type and jurisdiction
    /// when it is listed, else the type it sent and where it is.
    fn register(&self, id: &str, unit_type: Option<UnitType>, lat: f64, lon: f64, now: Timestamp) -> Unit {
        let roster = self.engine.config().units.iter().find(|u| u.id == id);
        tracing::info!(unit = %id, rostered = roster.is_some(), "unit registered");
        Unit {
            id: id.to_owned(),
            unit_type: roster.map(|r| r.unit_type).or(unit_type).unwrap_or(UnitType::PatrolCar),
            jurisdiction: roster.map_or_else(
                || self.engine.city().place(lat, lon).jurisdiction,
                |r| r.jurisdiction.clone(),
            ),
            status: UnitStatus::Available,
            lat: Some(lat),
            lon: Some(lon),
            at: now,
            task: None,
            speed_kmh: None,
            name: roster.map(|r| r.name.clone()),
        }
    }

    async fn position(
        &mut self,
        batch: &mut Batch,
        action: &Action,
        lat: f64,
        lon: f64,
        now: Timestamp,
    ) -> Result<(), Fail> {
        let unit_id = action
            .by
            .unit
            .clone()
            .ok_or_else(|| reject(None, "a position report needs the unit it is about"))?;
        if !valid_position(lat, lon) {
            return Err(reject(None, format!("position {lat},{lon} is out of range")));
        }
        let mut unit = self
            .unit(batch, &unit_id)
            .await?
            .ok_or_else(|| reject(None, format!("unknown unit {unit_id}: report available first")))?;
        unit.lat = Some(lat);
        unit.lon = Some(lon);
        unit.at = now;
        batch.put_unit(unit);
        Ok(())
    }

    /// An open incident a command may change.
    async fn open_incident(&self, batch: &Batch, id: &str) -> Result<Incident, Fail> {
        let incident = self
            .incident(batch, id)
            .await
            .map_err(Fail::Io)?
            .ok_or_else(|| reject(Some(id), format!("unknown incident {id}")))?;
        if !incident.status.is_open() {
            return Err(reject(Some(id), format!("incident is {}", incident.status.as_str())));
        }
        Ok(incident)
    }

    async fn assign(
        &mut self,
        batch: &mut Batch,
        action: &Action,
        incident_id: &str,
        unit_id: &str,
        now: Timestamp,
    ) -> Result<(), Fail> {
        let mut incident = self.open_incident(batch, incident_id).await?;
        if incident.status == IncidentStatus::Resolved {
            return Err(reject(Some(incident_id), "incident is resolved"));
        }
        if incident.units.iter().any(|u| u.unit == unit_id && u.status.is_open()) {
            return Err(reject(Some(incident_id), format!("unit {unit_id} already works on it")));
        }
        let unit = self
            .unit(batch, unit_id)
            .await?
            .ok_or_else(|| reject(Some(incident_id), format!("unknown unit {unit_id}")))?;
        if unit.status != UnitStatus::Available {
            return Err(reject(
                Some(incident_id),
                format!("unit {unit_id} is {}", unit.status.as_str()),
            ));
        }
        let task = self.engine.new_task(&incident, unit_id, TaskKind::Respond, now);
        let mut unit = match self.store.claim_unit(unit_id, &task.id).await? {
            Claim::Claimed(unit) => self.newest(unit),
            Claim::Unavailable(status) => {
                return Err(reject(
                    Some(incident_id),
                    format!("unit {unit_id} is {}", status.as_str()),
                ));
            }
            Claim::NotFound => return Err(reject(Some(incident_id), format!("unknown unit {unit_id}"))),
        };
        batch.claimed.push((unit.id.clone(), task.id.clone()));
        let previous: Vec<(String, String)> = incident
            .units
            .iter()
            .filter(|u| u.role == UnitRole::Primary && u.status.is_open())
            .map(|u| (u.task.clone(), u.unit.clone()))
            .collect();
        for (task_id, _) in &previous {
            self.cancel_task(batch, &mut incident, task_id, now).await?;
        }
        let eta_s = match (unit.lat, unit.lon, self.engine.dispatch_point(&incident)) {
            (Some(la), Some(lo), Some((lat, lon))) => self
                .engine
                .rank(
                    &incident,
                    vec![Candidate {
                        unit: unit.clone(),
                        distance_m: bus::geo::haversine_m(la, lo, lat, lon),
                    }],
                    now,
                )
                .first()
                .map_or(0, |r| r.eta_s),
            _ => 0,
        };
        incident.units.push(IncidentUnit {
            unit: unit_id.to_owned(),
            task: task.id.clone(),
            role: UnitRole::Primary,
            status: TaskStatus::Issued,
            eta_s,
        });
        let what = match previous.first() {
            Some((_, old)) => format!("reassigned from {old} to {unit_id}"),
            None => format!("assigned to {unit_id}"),
        };
        incident.timeline.push(entry(now, what, &action.by.sub));
        unit.at = now;
        metrics::counter!(bus::metrics::ROUTER_TASKS_TOTAL, "kind" => "respond").increment(1);
        batch.put_unit(unit);
        batch.put_task(task);
        derive_status(&mut incident);
        batch.put_incident(incident);
        Ok(())
    }

    async fn divert(
        &mut self,
        batch: &mut Batch,
        action: &Action,
        incident_id: &str,
        to: &str,
        now: Timestamp,
    ) -> Result<(), Fail> {
        let mut incident = self.open_incident(batch, incident_id).await?;
        let to = if to.trim().is_empty() {
            self.engine.config().router.default_agency.clone()
        } else {
            to.trim().to_owned()
        };
        self.end_tasks(batch, &mut incident, now, "diverted").await?;
        incident.status = IncidentStatus::Diverted;
        incident.diverted_to = Some(to.clone());
        pending_to_na(&mut incident);
        incident
            .timeline
            .push(entry(now, format!("diverted to {to}"), &action.by.sub));
        metrics::counter!(bus::metrics::ROUTER_DIVERTED_TOTAL, "by" => "operator").increment(1);
        batch.put_incident(incident);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn escalate(
        &mut self,
        batch: &mut Batch,
        action: &Action,
        incident_id: &str,
        desk: Option<String>,
        unit_type: Option<UnitType>,
        note: Option<String>,
        now: Timestamp,
    ) -> Result<(), Fail> {
        let mut incident = self.open_incident(batch, incident_id).await?;
        if desk.is_none() && unit_type.is_none() {
            return Err(reject(Some(incident_id), "escalate needs a desk or a unit type"));
        }
        if let Some(d) = &desk
            && !self.engine.config().desks.iter().any(|x| x.id == *d)
        {
            return Err(reject(Some(incident_id), format!("unknown desk {d}")));
        }
        let mut what = Vec::new();
        if let Some(d) = &desk {
            add_desk(&mut incident.desks, d);
            what.push(format!("desk {d}"));
        }
        let mut message = String::new();
        if let Some(t) = unit_type {
            let kind = match t {
                UnitType::Special | UnitType::Traffic => TaskKind::Investigate,
                _ => TaskKind::Reinforce,
            };
            let issued = self
                .dispatch(batch, &mut incident, kind, UnitRole::Specialist, Some(t), 1, now)
                .await
                .map_err(Fail::Io)?;
            what.push(format!("unit type {}", t.as_str()));
            if issued == 0 {
                message = format!("; no available {} unit", t.as_str());
                batch.escalations.push(self.escalation(
                    &incident,
                    EscalationKind::NoUnit,
                    now,
                    format!("no available {} unit", t.as_str()),
                    vec![self.engine.config().router.supervisor_desk.clone()],
                ));
            }
        }
        let note = note
            .filter(|n| !n.is_empty())
            .map(|n| format!(": {n}"))
            .unwrap_or_default();
        let summary = format!("escalated: {}{note}{message}", what.join(" and "));
        incident.timeline.push(entry(now, summary.clone(), &action.by.sub));
        let mut escalation = self.escalation(
            &incident,
            EscalationKind::Escalate,
            now,
            summary,
            desk.into_iter().collect(),
        );
        escalation.unit_type = unit_type;
        escalation.by.clone_from(&action.by.sub);
        escalation.action = Some(action.id.clone());
        batch.escalations.push(escalation);
        derive_status(&mut incident);
        batch.put_incident(incident);
        Ok(())
    }

    async fn close(
        &mut self,
        batch: &mut Batch,
        action: &Action,
        incident_id: &str,
        disposition: &str,
        feedback: Option<bus::model::Feedback>,
        now: Timestamp,
    ) -> Result<(), Fail> {
        let mut incident = self.open_incident(batch, incident_id).await?;
        if disposition.trim().is_empty() {
            return Err(reject(Some(incident_id), "close needs a disposition"));
        }
        self.end_tasks(batch, &mut incident, now, "closed").await?;
        incident.status = IncidentStatus::Closed;
        incident.disposition = Some(disposition.to_owned());
        incident.feedback = feedback;
        pending_to_na(&mut incident);
        incident
            .timeline
            .push(entry(now, format!("closed: {disposition}"), &action.by.sub));
        if feedback == Some(bus::model::Feedback::Unsatisfied) {
            let follow_up = follow_up(&incident, now);
            incident.timeline.push(entry(
                now,
                format!("caller unsatisfied: follow-up {}", follow_up.id),
                BY_ROUTER,
            ));
            batch.put_incident(follow_up);
        }
        batch.put_incident(incident);
        Ok(())
    }

    async fn release_claims(&self, claimed: &[(String, String)]) {
        for (unit, task) in claimed {
            match self.store.unit(unit).await {
                Ok(Some(mut u)) if u.task.as_deref() == Some(task.as_str()) => {
                    u.status = UnitStatus::Available;
                    u.task = None;
                    if let Err(e) = self.store.put_unit(&u).await {
                        tracing::warn!(unit = %unit, error = %e, "could not release a claimed unit");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(unit = %unit, error = %e, "could not release a claimed unit"),
            }
        }
    }

    // ----------------------------------------------------------------- clock

    /// One tick of the 1-3-5 clock over the open incidents this instance
    /// holds: breaches stages past their deadline (escalation, metric,
    /// timeline, re-dispatch of an unacknowledged task) and retries
    /// dispatch for incidents still waiting for a unit.
    pub async fn tick(&mut self, now: Timestamp) -> anyhow::Result<()> {
        self.settle().await?;
        let mut due: Vec<String> = Vec::new();
        let mut waiting: Vec<&Incident> = Vec::new();
        for incident in self.open.values() {
            if clock_due(incident, now) {
                due.push(incident.id.clone());
            } else if self.needs_units(incident) {
                waiting.push(incident);
            }
        }
        // A unit frees up for one incident: each tick retries as many
        // waiting incidents as units were freed since the last, plus a few
        // (units another instance freed), most urgent and longest untried
        // first. Retrying all of them would scan every unit for every
        // waiting incident, and a backlog would starve the live records.
        let budget = WAITING_RETRIES_PER_TICK + std::mem::take(&mut self.freed);
        let mut ranked: Vec<_> = waiting
            .iter()
            .map(|i| {
                (
                    (i.priority, self.retried.get(&i.id).copied(), i.created_at),
                    i.id.as_str(),
                )
            })
            .collect();
        if ranked.len() > budget {
            ranked.select_nth_unstable(budget);
            ranked.truncate(budget);
        }
        ranked.sort_unstable();
        let retry: Vec<String> = ranked.iter().map(|(_, id)| (*id).to_owned()).collect();
        self.retried.retain(|id, _| self.open.contains_key(id));
        for id in &retry {
            self.retried.insert(id.clone(), now);
        }
        due.extend(retry);
        for id in due {
            let Some(mut incident) = self.open.get(&id).cloned() else {
                continue;
            };
            let before = incident.clone();
            let mut batch = Batch::default();
            if self.needs_units(&incident) {
                self.top_up(&mut batch, &mut incident, now).await?;
            }
            for stage in self.engine.clock(&mut incident, now) {
                metrics::counter!(bus::metrics::ROUTER_SLA_BREACHED_TOTAL, "stage" => stage.as_str()).increment(1);
                tracing::info!(incident = %incident.id, stage = stage.as_str(), "sla stage breached");
                let mut escalation = self.escalation(
                    &incident,
                    EscalationKind::SlaBreach,
                    now,
                    format!("{} target breached", stage.as_str()),
                    vec![self.engine.config().router.supervisor_desk.clone()],
                );
                escalation.stage = Some(stage);
                batch.escalations.push(escalation);
                if stage == Stage::Respond {
                    self.redispatch(&mut batch, &mut incident, now).await?;
                }
            }
            derive_status(&mut incident);
            if incident != before || !batch.is_empty() {
                batch.put_incident(incident);
                self.stage(batch, now).await?;
            }
        }
        Ok(self.settle().await?)
    }

    /// A police incident with a clock that has fewer units than it needs:
    /// none at all, or for P1 fewer than the reinforce target.
    fn needs_units(&self, incident: &Incident) -> bool {
        if incident.deadlines.is_none()
            || incident.diverted_to.is_some()
            || !incident.status.is_open()
            || incident.status == IncidentStatus::Resolved
        {
            return false;
        }
        let working = working_units(incident);
        let needed = if incident.priority == 1 {
            self.engine.reinforce_units(&incident.jurisdiction, 1) as usize
        } else {
            1
        };
        working < needed
    }

    /// The respond deadline passed without an acknowledgement: each task
    /// still only issued goes to the next best unit.
    async fn redispatch(&mut self, batch: &mut Batch, incident: &mut Incident, now: Timestamp) -> anyhow::Result<()> {
        let stale: Vec<IncidentUnit> = incident
            .units
            .iter()
            .filter(|u| u.status == TaskStatus::Issued)
            .cloned()
            .collect();
        for old in stale {
            self.cancel_task(batch, incident, &old.task, now).await?;
            let kind = match old.role {
                UnitRole::Primary => TaskKind::Respond,
                _ => TaskKind::Reinforce,
            };
            let issued = self.dispatch(batch, incident, kind, old.role, None, 1, now).await?;
            let message = if issued > 0 {
                let new = incident.units.last().map(|u| u.unit.clone()).unwrap_or_default();
                format!("unit {} did not acknowledge in time; re-dispatched to {new}", old.unit)
            } else {
                format!("unit {} did not acknowledge in time; no other unit available", old.unit)
            };
            incident.timeline.push(entry(now, message.clone(), BY_ROUTER));
            let mut escalation = self.escalation(
                incident,
                EscalationKind::Redispatch,
                now,
                message,
                vec![self.engine.config().router.supervisor_desk.clone()],
            );
            escalation.stage = Some(Stage::Respond);
            batch.escalations.push(escalation);
        }
        Ok(())
    }

    // ------------------------------------------------------------- publish

    /// Hands a batch's outputs to the producer and makes it the router's
    /// state at once; [`Router::settle`] waits for the acknowledgements.
    async fn stage(&mut self, mut batch: Batch, now: Timestamp) -> anyhow::Result<()> {
        for incident in &mut batch.incidents {
            incident.version += 1;
            incident.updated_at = now;
            trim_timeline(incident, now);
        }
        for task in &mut batch.tasks {
            task.version += 1;
            task.updated_at = now;
        }
        let records = match outputs(&batch) {
            Ok(records) => records,
            Err(e) => {
                self.release_claims(&batch.claimed).await;
                return Err(anyhow::Error::new(e).context("serialising the router's outputs"));
            }
        };
        self.unsettled
            .deliveries
            .extend(records.iter().map(|r| self.producer.start_send(r)));

        for incident in &batch.incidents {
            if incident.status.is_open() && self.owned_or_new(incident) {
                self.index.insert(incident);
                self.open.insert(incident.id.clone(), incident.clone());
            } else {
                self.index.remove(&incident.id);
                self.open.remove(&incident.id);
            }
        }
        for task in &batch.tasks {
            if task.status.is_open() {
                self.tasks.insert(task.id.clone(), task.clone());
            } else {
                self.tasks.remove(&task.id);
            }
        }
        metrics::gauge!(bus::metrics::ROUTER_INCIDENTS_OPEN).set(self.open.len() as f64);
        if let Some(id) = &batch.applied {
            self.remember(id.clone());
        }
        self.freed += batch.units.iter().filter(|u| u.status == UnitStatus::Available).count();
        self.unsettled.add(batch);
        Ok(())
    }

    /// Waits for every staged output's acknowledgement, then writes them
    /// to the Store. When a publish failed, the staged state is undone
    /// (claims released, state reloaded from the Store) so the records can
    /// be handled again; when the Store failed, the writes are kept and
    /// retried by the next settle, before anything else is handled.
    pub async fn settle(&mut self) -> Result<(), SettleError> {
        if self.unsettled.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let deliveries = std::mem::take(&mut self.unsettled.deliveries);
        let failed = futures::future::join_all(deliveries)
            .await
            .into_iter()
            .find_map(Result::err);
        if let Some(e) = failed {
            let unsettled = std::mem::take(&mut self.unsettled);
            self.release_claims(&unsettled.claimed).await;
            self.forget(&unsettled.applied);
            if let Err(reload) = self.reload().await {
                tracing::warn!(error = %format!("{reload:#}"), "could not reload the router's state after a failed publish");
            }
            return Err(SettleError::Unpublished(anyhow::Error::new(e)));
        }
        self.unsettled.claimed.clear();
        self.write_unsettled().await.map_err(SettleError::Unstored)?;
        self.unsettled = Unsettled::default();
        metrics::histogram!(bus::metrics::ROUTER_SETTLE_SECONDS).record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// An incident this instance owns (or created before its first
    /// assignment arrived, as in unit tests of the handler).
    fn owned_or_new(&self, incident: &Incident) -> bool {
        self.owned.is_empty()
            || self
                .owned
                .contains(&partition_of(&incident.jurisdiction, self.partitions))
    }

    /// Writes published outputs to the Store. Each write is idempotent,
    /// so a retry after a partial failure repeats them all. The writes of
    /// one phase go out together (one pipeline on Redis, not a round trip
    /// each); the applied markers go last, so a crash between the phases
    /// leaves records to be applied again, never state marked applied but
    /// not written.
    async fn write_unsettled(&self) -> anyhow::Result<()> {
        let unsettled = &self.unsettled;
        let store = &*self.store;
        let mut state: Vec<futures::future::BoxFuture<'_, anyhow::Result<()>>> = Vec::new();
        for i in unsettled.incidents.values() {
            state.push(Box::pin(async move { Ok(store.put_incident(i).await?) }));
        }
        for t in unsettled.tasks.values() {
            let json = serde_json::to_string(t)?;
            state.push(Box::pin(async move {
                Ok(store.set_key(&task_key(&t.id), &json, TASK_TTL).await?)
            }));
        }
        for u in unsettled.units.values() {
            state.push(Box::pin(async move { Ok(store.put_unit(u).await?) }));
        }
        for (identifier, incident) in &unsettled.caprefs {
            state.push(Box::pin(async move {
                Ok(store.set_key(&capref_key(identifier), incident, CAPREF_TTL).await?)
            }));
        }
        futures::future::try_join_all(state).await?;
        let applied = unsettled
            .applied
            .iter()
            .map(|id| async move { store.set_key(&applied_key(id), "1", APPLIED_TTL).await });
        futures::future::try_join_all(applied).await?;
        Ok(())
    }
}

/// The records a batch publishes.
fn outputs(batch: &Batch) -> Result<Vec<OutRecord>, ProduceError> {
    let mut records = Vec::new();
    for i in &batch.incidents {
        records.push(OutRecord::json(
            Topic::Incidents,
            &i.id,
            format!("{}:{}", i.id, i.version),
            i,
        )?);
    }
    for t in &batch.tasks {
        records.push(OutRecord::json(
            Topic::Tasks,
            &t.unit,
            format!("{}:{}", t.id, t.version),
            t,
        )?);
    }
    for u in &batch.units {
        records.push(OutRecord::json(Topic::Units, &u.id, new_id(), u)?);
    }
    for e in &batch.escalations {
        let key = if e.incident.is_empty() {
            &e.jurisdiction
        } else {
            &e.incident
        };
        records.push(OutRecord::json(Topic::Escalations, key, &e.id, e)?);
    }
    for (key, d) in &batch.dead_letters {
        records.push(OutRecord::json(Topic::DeadLetter, key, new_id(), d)?);
    }
    Ok(records)
}

/// What a unit's `status` command reports.
#[derive(Debug)]
struct StatusReport {
    status: ReportedStatus,
    task: Option<String>,
    position: Option<(f64, f64)>,
    note: Option<String>,
    unit_type: Option<UnitType>,
}

/// Units working on (or done with) an incident: not cancelled.
fn working_units(incident: &Incident) -> usize {
    incident
        .units
        .iter()
        .filter(|u| u.status.is_open() || u.status == TaskStatus::Cleared)
        .count()
}

/// A record a router already forwarded once: handled where it landed,
/// never forwarded again, so a partitioner mismatch cannot loop.
fn forwarded(record: &Received) -> bool {
    record.ce.as_ref().is_ok_and(|ce| ce.source == CE_SOURCE)
}

fn trim_timeline(incident: &mut Incident, now: Timestamp) {
    let len = incident.timeline.len();
    if len <= MAX_TIMELINE {
        return;
    }
    let cut = len - MAX_TIMELINE + 1;
    incident.timeline.drain(TIMELINE_HEAD..TIMELINE_HEAD + cut);
    incident.timeline.insert(
        TIMELINE_HEAD,
        entry(now, format!("{cut} earlier entries elided"), BY_ROUTER),
    );
}

fn valid_position(lat: f64, lon: f64) -> bool {
    (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)
}

fn clock_due(incident: &Incident, now: Timestamp) -> bool {
    incident.deadlines.as_ref().is_some_and(|d| {
        Stage::ALL
            .iter()
            .any(|s| incident.sla.get(*s) == SlaState::Pending && now > d.get(*s))
    })
}

fn pending_to_na(incident: &mut Incident) {
    for stage in Stage::ALL {
        if incident.sla.get(stage) == SlaState::Pending {
            incident.sla.set(stage, SlaState::NotApplicable);
        }
    }
    if incident.status == IncidentStatus::Diverted && incident.deadlines.is_none() {
        incident.sla = not_applicable();
    }
}

/// The 不满意回访 follow-up of a closed incident: open, for the station to
/// call the caller back; no units are sent and no clock runs.
fn follow_up(closed: &Incident, now: Timestamp) -> Incident {
    Incident {
        id: new_id(),
        version: 0,
        status: IncidentStatus::New,
        priority: closed.priority,
        score: closed.score,
        kind: closed.kind.clone(),
        location: closed.location.clone(),
        jurisdiction: closed.jurisdiction.clone(),
        cell: closed.cell.clone(),
        desks: closed.desks.clone(),
        events: Vec::new(),
        repeat_count: 0,
        diverted_to: None,
        created_at: now,
        updated_at: now,
        deadlines: None,
        sla: not_applicable(),
        units: Vec::new(),
        timeline: vec![entry(
            now,
            format!("follow-up of {}: the caller was unsatisfied", closed.id),
            BY_ROUTER,
        )],
        text: closed.text.clone(),
        disposition: None,
        feedback: None,
        follow_up_of: Some(closed.id.clone()),
    }
}

fn op_name(command: &Command) -> &'static str {
    match command {
        Command::Ack { .. } => "ack",
        Command::Status { .. } => "status",
        Command::Position { .. } => "position",
        Command::Assign { .. } => "assign",
        Command::Divert { .. } => "divert",
        Command::Escalate { .. } => "escalate",
        Command::Close { .. } => "close",
    }
}

fn task_kind(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Respond => "respond",
        TaskKind::Reinforce => "reinforce",
        TaskKind::Investigate => "investigate",
    }
}

fn task_status(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Issued => "issued",
        TaskStatus::Acknowledged => "acknowledged",
        TaskStatus::EnRoute => "en_route",
        TaskStatus::OnScene => "on_scene",
        TaskStatus::Cleared => "cleared",
        TaskStatus::Cancelled => "cancelled",
    }
}

fn priority_label(priority: u8) -> &'static str {
    match priority {
        1 => "1",
        2 => "2",
        3 => "3",
        _ => "4",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::model::{Sla, TimelineEntry};

    #[test]
    fn a_long_timeline_keeps_its_head_and_its_newest_entries() {
        let now = chrono::Utc::now();
        let mut incident = follow_up(
            &Incident {
                id: "i".into(),
                version: 1,
                status: IncidentStatus::Closed,
                priority: 3,
                score: 35,
                kind: "theft".into(),
                location: None,
                jurisdiction: "quancheng".into(),
                cell: None,
                desks: vec![],
                events: vec![],
                repeat_count: 1,
                diverted_to: None,
                created_at: now,
                updated_at: now,
                deadlines: None,
                sla: Sla::default(),
                units: vec![],
                timeline: vec![],
                text: None,
                disposition: None,
                feedback: None,
                follow_up_of: None,
            },
            now,
        );
        incident.timeline = (0..1000)
            .map(|i| TimelineEntry {
                at: now,
                what: format!("e{i}"),
                by: "x".into(),
            })
            .collect();
        trim_timeline(&mut incident, now);
        assert_eq!(incident.timeline.len(), MAX_TIMELINE);
        assert_eq!(incident.timeline[0].what, "e0");
        assert_eq!(incident.timeline[TIMELINE_HEAD - 1].what, "e9");
        assert!(incident.timeline[TIMELINE_HEAD].what.contains("elided"));
        assert_eq!(incident.timeline.last().unwrap().what, "e999");
        assert_eq!(
            incident.timeline[TIMELINE_HEAD + 1].what,
            format!("e{}", 1000 - MAX_TIMELINE + TIMELINE_HEAD + 1)
        );
    }
}
