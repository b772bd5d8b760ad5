//! The router's clock: each tick breaches the 1-3-5 stages past their
//! deadline (escalation, metric, timeline) and climbs the escalation
//! ladder of each stage still not met (`ladder`: re-dispatch, backup,
//! reinforcements, alarms), retries dispatch for incidents still waiting
//! for units (and unit types an operator asked for),
//! and now and then reconciles unit claims: a unit held by a task that is
//! not open (a claim no router can explain, say from a version of qzx
//! that claimed units before committing) is made available again, with an
//! escalation saying so.
//!
//! Works only on what this instance owns, one transaction per incident or
//! unit; never blocks live records for long (bounded work per tick).

use std::collections::HashMap;

use bus::model::{EscalationKind, Incident, Stage, Task, Timestamp, Unit, UnitStatus};

use crate::dispatch::{escalation, top_up};
use crate::engine::Engine;
use crate::incident::derive_status;
use crate::ladder;
use crate::plan::needs_units;
use crate::tx::{Books, Tx, task_key};

/// Waiting incidents the clock retries each tick besides one per unit
/// freed since the last tick.
const WAITING_RETRIES_PER_TICK: usize = 4;
/// How often unit claims are reconciled.
const RECONCILE_EVERY_S: i64 = 10;
/// A claim is undone only when it was found dangling on two passes at
/// least this far apart: a claim whose batch is being committed right now
/// looks dangling for a few milliseconds (and if it is undone anyway, that
/// commit fails and its batch is handled again).
const RECONCILE_GRACE_S: i64 = 10;

/// What the clock remembers between ticks.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    /// When dispatch was last retried for a waiting incident.
    retried: HashMap<String, Timestamp>,
    /// Units found held by a task that is not open: the task, and when.
    dangling: HashMap<String, (String, Timestamp)>,
    last_reconcile: Option<Timestamp>,
}

impl Clock {
    /// Whether a reconcile pass is due at `now` (and from then on, not).
    pub fn reconcile_due(&mut self, now: Timestamp) -> bool {
        let due = self
            .last_reconcile
            .is_none_or(|last| (now - last).num_seconds() >= RECONCILE_EVERY_S);
        if due {
            self.last_reconcile = Some(now);
        }
        due
    }
}

fn clock_due(engine: &Engine, incident: &Incident, now: Timestamp) -> bool {
    !ladder::due(engine, incident, now).is_empty()
        || incident.deadlines.as_ref().is_some_and(|d| {
            Stage::ALL
                .iter()
                .any(|s| incident.sla.get(*s) == bus::model::SlaState::Pending && now > d.get(*s))
        })
}

/// One tick over the open incidents this instance holds; stages one
/// transaction per incident that changed.
pub(crate) async fn tick(books: &mut Books, engine: &Engine, clock: &mut Clock, now: Timestamp) -> anyhow::Result<()> {
    let due: Vec<String> = books
        .open
        .values()
        .filter(|i| clock_due(engine, i, now))
        .map(|i| i.id.clone())
        .collect();
    // Units another instance freed are found here: a few waiting
    // incidents are retried each tick besides those of the units this one
    // freed.
    let budget = WAITING_RETRIES_PER_TICK + std::mem::take(&mut books.freed);
    let retry = waiting_to_retry(books, engine, clock, budget, now);
    for id in due.into_iter().chain(retry) {
        let Some(incident) = books.open.get(&id).cloned() else {
            continue;
        };
        let partition = books.partition_of(&incident.jurisdiction);
        let mut tx = Tx::begin(books, partition, None);
        step(&mut tx, engine, incident, now).await?;
        tx.stage(engine, now).await?;
    }
    Ok(())
}

/// Units were made available by the records just staged: the most urgent
/// incidents waiting for a unit get them now, in the same batch, rather
/// than at the next tick.
pub(crate) async fn dispatch_freed(
    books: &mut Books,
    engine: &Engine,
    clock: &mut Clock,
    now: Timestamp,
) -> anyhow::Result<()> {
    let budget = std::mem::take(&mut books.freed);
    if budget == 0 {
        return Ok(());
    }
    for id in waiting_to_retry(books, engine, clock, budget, now) {
        let Some(incident) = books.open.get(&id).cloned() else {
            continue;
        };
        let partition = books.partition_of(&incident.jurisdiction);
        let mut tx = Tx::begin(books, partition, None);
        step(&mut tx, engine, incident, now).await?;
        tx.stage(engine, now).await?;
    }
    Ok(())
}

/// Up to `budget` incidents waiting for units (not due for a breach),
/// most urgent and longest untried first: a unit frees up for one
/// incident, and retrying all of them would scan every unit for every
/// waiting incident, so a backlog would starve the live records.
fn waiting_to_retry(books: &Books, engine: &Engine, clock: &mut Clock, budget: usize, now: Timestamp) -> Vec<String> {
    let waiting: Vec<&Incident> = books
        .open
        .values()
        .filter(|i| !clock_due(engine, i, now) && needs_units(engine, i))
        .collect();
    let mut ranked: Vec<_> = waiting
        .iter()
        .map(|i| {
            (
                (i.priority, clock.retried.get(&i.id).copied(), i.created_at),
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
    clock.retried.retain(|id, _| books.open.contains_key(id));
    for id in &retry {
        clock.retried.insert(id.clone(), now);
    }
    retry
}

/// One incident's clock step within `tx`.
async fn step(tx: &mut Tx<'_>, engine: &Engine, mut incident: Incident, now: Timestamp) -> anyhow::Result<()> {
    let before = incident.clone();
    if needs_units(engine, &incident) {
        top_up(tx, engine, &mut incident, now).await?;
    }
    let breached = engine.clock(&mut incident, now);
    for stage in &breached {
        metrics::counter!(bus::metrics::ROUTER_SLA_BREACHED_TOTAL, "stage" => stage.as_str()).increment(1);
        tracing::info!(incident = %incident.id, stage = stage.as_str(), "sla stage breached");
        let desks = vec![engine.config().router.supervisor_desk.clone()];
        let message = format!("{} target breached", stage.as_str());
        let mut breach = escalation(&incident, EscalationKind::SlaBreach, now, message, desks);
        breach.stage = Some(*stage);
        tx.escalate(breach);
    }
    // The first rung at the deadline, then one each interval while the
    // stage is still not met (`ladder`).
    let mut climbing = ladder::due(engine, &incident, now);
    climbing.extend(breached.iter().filter(|s| incident.ladder.get(**s).is_none()));
    for stage in climbing {
        if !incident.hold {
            ladder::climb(tx, engine, &mut incident, stage, now).await?;
        }
    }
    derive_status(&mut incident);
    if incident != before || tx.has_outputs() {
        tx.put_incident(incident);
    }
    Ok(())
}

/// Frees the units of owned jurisdictions that a task not open holds,
/// once found so on two passes `RECONCILE_GRACE_S` apart. Reads every unit
/// and their tasks in two Store round trips.
pub(crate) async fn reconcile(
    books: &mut Books,
    engine: &Engine,
    clock: &mut Clock,
    now: Timestamp,
) -> anyhow::Result<usize> {
    let units = books.store.units().await?;
    let held: Vec<Unit> = units
        .into_iter()
        .filter(|u| u.task.is_some() && books.owns(books.partition_of(&u.jurisdiction)))
        .collect();
    let keys: Vec<String> = held.iter().filter_map(|u| u.task.as_deref()).map(task_key).collect();
    let tasks = books.store.get_keys(&keys).await?;
    let mut dangling = HashMap::new();
    let mut freed = 0;
    for (unit, task) in held.into_iter().zip(tasks) {
        let task_id = unit.task.clone().unwrap_or_default();
        let task: Option<Task> = task.and_then(|json| serde_json::from_str(&json).ok());
        if task.as_ref().is_some_and(|t| t.status.is_open() && t.unit == unit.id) {
            continue;
        }
        let first = match clock.dangling.get(&unit.id) {
            Some((t, first)) if *t == task_id => *first,
            _ => now,
        };
        if (now - first).num_seconds() < RECONCILE_GRACE_S {
            dangling.insert(unit.id.clone(), (task_id, first));
            continue;
        }
        free(books, engine, unit, &task_id, task.as_ref(), now).await?;
        freed += 1;
    }
    clock.dangling = dangling;
    Ok(freed)
}

/// Makes `unit` available again, unless it no longer works on `task_id`
/// when the transaction commits.
async fn free(
    books: &mut Books,
    engine: &Engine,
    mut unit: Unit,
    task_id: &str,
    task: Option<&Task>,
    now: Timestamp,
) -> anyhow::Result<()> {
    let desk = engine.config().router.supervisor_desk.clone();
    let why = match task {
        Some(t) => format!("its task {task_id} is {}", t.status.as_str()),
        None => format!("its task {task_id} was never recorded"),
    };
    tracing::warn!(unit = %unit.id, task = %task_id, "unit freed by the reconciler: {why}");
    metrics::counter!(bus::metrics::ROUTER_RECONCILED_TOTAL).increment(1);
    let partition = books.partition_of(&unit.jurisdiction);
    let mut tx = Tx::begin(books, partition, None);
    tx.expect_claim(&unit.id, task_id);
    let freed = bus::model::Escalation {
        id: format!("reconciled:{}:{task_id}", unit.id),
        incident: task.map(|t| t.incident.clone()).unwrap_or_default(),
        jurisdiction: unit.jurisdiction.clone(),
        at: now,
        kind: EscalationKind::Reconciled,
        stage: None,
        desks: vec![desk],
        unit_type: Some(unit.unit_type),
        message: format!("unit {} made available: {why}", unit.id),
        by: crate::incident::BY_ROUTER.to_owned(),
        action: None,
    };
    unit.status = UnitStatus::Available;
    unit.task = None;
    unit.at = now;
    tx.put_unit(unit);
    tx.escalate(freed);
    tx.stage(engine, now).await
}
