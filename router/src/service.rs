//! The router's IO edge: decodes consumed records (an event, a command, or
//! a record it cannot use, which is dead-lettered), forwards a record that
//! landed on a partition another router owns, runs each through its
//! handler in a transaction, and settles the batch before the records
//! count as handled. The decisions are in `events`, `commands`,
//! `dispatch` and `clock`; every write is in `tx`.
//!
//! This module must never skip a record to make progress: a record it
//! cannot use goes to the dead-letter topic, and one that fails is handled
//! again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use bus::ServiceContext;
use bus::kafka::{OutRecord, Producer, Received};
use bus::model::{Action, Channel, Command, DeadLetter, Event, FieldError, Incident, Timestamp};
use bus::topics::Topic;
use bus::validate::{InputRules, normalise, validate_input};
use serde_json::Value;

use crate::clock::{self, Clock};
use crate::commands::{self, Outcome};
use crate::engine::Engine;
use crate::tx::{Books, Publish, SettleError, Tx, Wanted};

/// `ce_source` of everything the router writes.
pub const CE_SOURCE: &str = "/qzx/router";

/// Raw bytes kept in a dead letter (base64 may grow them by a third; the
/// broker's default limit is 1 MiB).
const MAX_DEAD_LETTER_BYTES: usize = 512 * 1024;

/// A batch of records stopped at a failure.
#[derive(Debug, thiserror::Error)]
#[error("{source:#}")]
pub struct BatchError {
    /// Records from the start of the batch that are applied and published.
    pub handled: usize,
    pub source: anyhow::Error,
}

/// The router's state and IO, driven one batch or tick at a time by
/// [`crate::run`].
pub struct Router {
    ctx: ServiceContext,
    engine: Engine,
    rules: InputRules,
    books: Books,
    clock: Clock,
    /// Whether the Store's rebuild marker was seen: once it was, its
    /// disappearance means the Store lost the router's state.
    marker_seen: bool,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("open", &self.books.open.len())
            .field("owned", &self.books.owned)
            .finish()
    }
}

impl Router {
    pub fn new(ctx: &ServiceContext, engine: Engine, producer: Producer, partitions: i32) -> Router {
        Router::with_publisher(ctx, engine, Arc::new(producer), partitions)
    }

    /// A router that publishes through `publisher` (tests record instead).
    pub fn with_publisher(
        ctx: &ServiceContext,
        engine: Engine,
        publisher: Arc<dyn Publish>,
        partitions: i32,
    ) -> Router {
        Router {
            ctx: ctx.clone(),
            rules: InputRules::new(&ctx.config),
            books: Books::new(ctx.store.clone(), publisher, partitions, engine.link_reach_m()),
            engine,
            clock: Clock::default(),
            marker_seen: false,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Open incidents this instance holds, for tests and metrics.
    pub fn open_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.books.open.values()
    }

    /// Dies (panics, as SIGKILL would, with no cleanup) the `nth` time it
    /// reaches `point`. Tests only.
    #[cfg(feature = "failpoints")]
    pub fn crash_at(&mut self, point: crate::tx::CrashPoint, nth: usize) {
        self.books.crash = Some(crate::tx::CrashAt { point, nth });
    }

    /// A rebalance gave this instance `partitions`. A Store that lost its
    /// state (Redis back empty) is rebuilt from Kafka first: taken over as
    /// if whole, its missing applied markers would let a redelivered event
    /// open a second incident (qzx chaos: double-applied after a Redis
    /// restart). Then the partitions are taken over.
    pub async fn on_assigned(&mut self, partitions: Vec<i32>) -> anyhow::Result<()> {
        crate::rebuild::rebuild_if_needed(&self.ctx).await?;
        self.set_owned(partitions).await
    }

    /// The partitions of the events topic this instance owns changed: take
    /// over the new ones (fence, republish, load their open incidents) and
    /// let go of the rest.
    pub async fn set_owned(&mut self, partitions: impl IntoIterator<Item = i32>) -> anyhow::Result<()> {
        self.settle().await?;
        self.books.take_over(partitions.into_iter().collect()).await
    }

    /// Settles what is staged; a Store that lost its state is rebuilt.
    pub async fn settle(&mut self) -> Result<(), SettleError> {
        let result = self.books.settle().await;
        let thrown_away = match &result {
            Err(SettleError::StoreLost(_)) => Some("store_lost"),
            Err(SettleError::Fenced(_)) => Some("fenced"),
            Err(SettleError::ClaimLost(..)) => Some("claim_lost"),
            _ => None,
        };
        if let Some(reason) = thrown_away {
            metrics::counter!(bus::metrics::ROUTER_CONFLICTS_TOTAL, "reason" => reason).increment(1);
        }
        if let Err(SettleError::StoreLost(_)) = &result {
            self.recover().await;
        }
        result
    }

    /// The Store lost the router's state (Redis flushed or replaced while
    /// running): rebuild it from the compacted topics, then take the owned
    /// partitions over again. Failures are logged; the next settle finds
    /// the Store still lost and comes back here.
    async fn recover(&mut self) {
        tracing::error!("the store lost the router's state; rebuilding it from kafka");
        if let Err(e) = crate::rebuild::rebuild_if_needed(&self.ctx).await {
            tracing::warn!(error = %e, "rebuilding the store failed");
            return;
        }
        let owned = std::mem::take(&mut self.books.owned);
        if let Err(e) = self.books.take_over(owned.clone()).await {
            self.books.owned = owned;
            tracing::warn!(error = %format!("{e:#}"), "taking the partitions over again failed");
        }
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
        // What an earlier call committed or staged comes first.
        self.settle().await.map_err(|e| failed(0, e.into()))?;
        // Each record parsed once: what it asks for is read ahead, then
        // it is staged.
        let decoded: Vec<Decoded> = records.iter().map(|r| self.decode(r, now)).collect();
        let router = &self.engine.config().router;
        let mut wanted = wanted(records, &decoded);
        wanted.near_radius_m = router.search_radius_m;
        wanted.near_limit = router.candidate_units.saturating_mul(4);
        self.books.prefetch(wanted).await;
        let mut staged = 0;
        let mut result = Ok(());
        for (record, decoded) in records.iter().zip(decoded) {
            if let Err(e) = self.stage_record(record, decoded, now).await {
                result = Err(e);
                break;
            }
            staged += 1;
        }
        if result.is_ok()
            && let Err(e) = clock::dispatch_freed(&mut self.books, &self.engine, &mut self.clock, now).await
        {
            // The clock retries them; the records are handled.
            tracing::warn!(error = %format!("{e:#}"), "dispatching freed units failed");
        }
        self.books.prefetched = Default::default();
        metrics::histogram!(bus::metrics::ROUTER_BATCH_RECORDS).record(staged as f64);
        match self.settle().await {
            Ok(()) => result.map_err(|e| failed(staged, e)),
            // Not handled until the Store and the broker hold it: the retry
            // settles first, and the records' markers make them no-ops, or
            // (thrown away) they are handled afresh.
            Err(e) => Err(failed(0, e.into())),
        }
    }

    /// A record as its topic says to read it.
    fn decode(&self, record: &Received, now: Timestamp) -> Decoded {
        match record.topic {
            Topic::Events => Decoded::Event(self.parse_event(record, now)),
            Topic::Actions => Decoded::Action(record.json::<Action>()),
            _ => Decoded::Other,
        }
    }

    async fn stage_record(&mut self, record: &Received, decoded: Decoded, now: Timestamp) -> anyhow::Result<()> {
        let started = Instant::now();
        let result = match decoded {
            Decoded::Event(parsed) => self.on_event_record(record, parsed, now).await,
            Decoded::Action(parsed) => self.on_action_record(record, parsed, now).await,
            Decoded::Other => Ok(()),
        };
        metrics::histogram!(bus::metrics::ROUTER_PROCESS_SECONDS, "topic" => record.topic.suffix())
            .record(started.elapsed().as_secs_f64());
        result
    }

    // ---------------------------------------------------------------- events

    async fn on_event_record(
        &mut self,
        record: &Received,
        parsed: Result<(Event, bool), Vec<FieldError>>,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        match parsed {
            Ok((event, normalised_here)) => {
                let owner = self.books.partition_of(&event.jurisdiction);
                if normalised_here && owner != record.partition && !forwarded(record) {
                    // Written by a source system under another key: hand the
                    // normalised event to the partition (and router) that
                    // owns its jurisdiction. Its id is stable, so a replay
                    // of this record forwards a duplicate the owner
                    // recognises.
                    let out = OutRecord::json(Topic::Events, &event.jurisdiction, &event.id, &event)?;
                    self.books.forward(&out).await?;
                    metrics::counter!(bus::metrics::ROUTER_EVENTS_TOTAL, "outcome" => "forwarded").increment(1);
                    return Ok(());
                }
                self.apply_event(&event, record.partition, now).await
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
        let mut input = validate_input(&value, &self.rules, None, now)?;
        // Not through ingest's CAP parser: no CAP authority.
        bus::validate::demote_cap_attrs(&mut input.attrs);
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
        let mut tx = Tx::begin(&mut self.books, record.partition, None);
        tx.dead_letter(source.unwrap_or_else(|| "kafka".to_owned()), letter);
        tx.stage(&self.engine, now).await
    }

    /// Scores, links or creates, diverts or dispatches one event, and
    /// settles it.
    pub async fn on_event(&mut self, event: Event, now: Timestamp) -> anyhow::Result<()> {
        self.settle().await?;
        let partition = self.books.partition_of(&event.jurisdiction);
        self.apply_event(&event, partition, now).await?;
        Ok(self.settle().await?)
    }

    async fn apply_event(&mut self, event: &Event, partition: i32, now: Timestamp) -> anyhow::Result<()> {
        if self.books.applied(&event.id).await? {
            metrics::counter!(bus::metrics::ROUTER_EVENTS_TOTAL, "outcome" => "duplicate").increment(1);
            return Ok(());
        }
        let mut tx = Tx::begin(&mut self.books, partition, Some(&event.id));
        crate::events::apply(&mut tx, &self.engine, event, now).await?;
        tx.stage(&self.engine, now).await
    }

    // --------------------------------------------------------------- actions

    async fn on_action_record(
        &mut self,
        record: &Received,
        parsed: Result<Action, serde_json::Error>,
        now: Timestamp,
    ) -> anyhow::Result<()> {
        let action = match parsed {
            Ok(action) => action,
            Err(e) => {
                metrics::counter!(bus::metrics::ROUTER_ACTIONS_TOTAL, "op" => "invalid", "outcome" => "dead_letter")
                    .increment(1);
                tracing::warn!(
                    partition = record.partition,
                    offset = record.offset,
                    error = %e,
                    "unusable record on the actions topic; dead-lettered"
                );
                let errors = vec![FieldError::new("", format!("not an action: {e}"))];
                return self.dead_letter(record, errors, now).await;
            }
        };
        if !forwarded(record) {
            let tx = Tx::begin(&mut self.books, record.partition, None);
            if let Some(jurisdiction) = commands::owner(&tx, &action).await?
                && tx.books().partition_of(&jurisdiction) != record.partition
            {
                // Keyed by another jurisdiction than its incident's: only
                // the incident's owner may write it, so hand the command
                // over (its id makes a replay harmless).
                let out = OutRecord::json(Topic::Actions, &jurisdiction, &action.id, &action)?;
                tx.books().forward(&out).await?;
                metrics::counter!(bus::metrics::ROUTER_ACTIONS_TOTAL, "op" => action.command.as_str(), "outcome" => "forwarded")
                    .increment(1);
                return Ok(());
            }
        }
        self.apply_action(&action, record.partition, now).await
    }

    /// Applies one command, or records why it cannot be applied, and
    /// settles it.
    pub async fn on_action(&mut self, action: Action, now: Timestamp) -> anyhow::Result<()> {
        self.settle().await?;
        let partition = self.books.partition_of(&action.jurisdiction);
        self.apply_action(&action, partition, now).await?;
        Ok(self.settle().await?)
    }

    async fn apply_action(&mut self, action: &Action, partition: i32, now: Timestamp) -> anyhow::Result<()> {
        if self.books.applied(&action.id).await? {
            return Ok(());
        }
        let mut tx = Tx::begin(&mut self.books, partition, Some(&action.id));
        match commands::apply(&mut tx, &self.engine, action, now).await? {
            Outcome::Applied => tx.stage(&self.engine, now).await,
            Outcome::Rejected(escalation) => {
                // Nothing of the command is kept but the record of why.
                drop(tx);
                let mut tx = Tx::begin(&mut self.books, partition, Some(&action.id));
                tx.escalate(escalation);
                tx.stage(&self.engine, now).await
            }
        }
    }

    // ----------------------------------------------------------------- clock

    /// One tick of the 1-3-5 clock over the open incidents this instance
    /// holds, then (every few seconds) the reconciliation of unit claims
    /// and a check that the Store still holds the router's state.
    pub async fn tick(&mut self, now: Timestamp) -> anyhow::Result<()> {
        self.settle().await?;
        clock::tick(&mut self.books, &self.engine, &mut self.clock, now).await?;
        self.settle().await?;
        if self.clock.reconcile_due(now) {
            let marked = self.ctx.store.get_key(crate::rebuild::MARKER).await?.is_some();
            if self.marker_seen && !marked {
                self.recover().await;
            }
            self.marker_seen |= marked;
            clock::reconcile(&mut self.books, &self.engine, &mut self.clock, now).await?;
            self.settle().await?;
        }
        Ok(())
    }

    /// The partitions this instance owns.
    pub fn owned(&self) -> &HashSet<i32> {
        &self.books.owned
    }
}

/// What a batch's records will look up: their ids (CloudEvents ids, what
/// ingest and the api write as the event's or command's own id), and the
/// units and tasks their commands name.
fn wanted(records: &[Received], decoded: &[Decoded]) -> Wanted {
    let mut wanted = Wanted::default();
    for (record, decoded) in records.iter().zip(decoded) {
        if let Ok(ce) = &record.ce
            && !ce.id.is_empty()
        {
            wanted.applied.push(ce.id.clone());
        }
        match decoded {
            Decoded::Event(Ok((event, _))) => {
                if let Some(location) = &event.input.location {
                    wanted.near.push((location.lat, location.lon));
                }
            }
            Decoded::Action(Ok(action)) => {
                wanted.units.extend(action.by.unit.clone());
                match &action.command {
                    Command::Ack { task } | Command::Status { task: Some(task), .. } => wanted.tasks.push(task.clone()),
                    Command::Assign { unit, .. } => wanted.units.push(unit.clone()),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    wanted.units.sort_unstable();
    wanted.units.dedup();
    wanted
}

/// A consumed record, parsed once for its batch.
enum Decoded {
    /// An event, and whether it was normalised here; or why it is unusable.
    Event(Result<(Event, bool), Vec<FieldError>>),
    Action(Result<Action, serde_json::Error>),
    /// A topic the router does not handle.
    Other,
}

/// A record a router already forwarded once: handled where it landed,
/// never forwarded again, so a partitioner mismatch cannot loop.
fn forwarded(record: &Received) -> bool {
    record.ce.as_ref().is_ok_and(|ce| ce.source == CE_SOURCE)
}
