//! Pre-emption (抽调): a unit on a lower-priority task may be taken for an
//! incident that no available unit reaches in time (automatically for the
//! priorities in `dispatch.preempt_for`, or when an operator assigns with
//! `preempt`), and the ranking an operator picks from in recommend mode,
//! which lists such units next to the available ones.
//!
//! A unit is only taken from a task it has not reached (issued,
//! acknowledged, en route: never from a scene), of an incident this router
//! owns; that task is cancelled with the reason, its incident goes back to
//! waiting (the clock finds it a unit), and both incidents record why.

use bus::model::{
    EscalationKind, Incident, Recommendation, Task, TaskKind, TaskStatus, Timestamp, Unit, UnitRole, UnitStatus,
};

use crate::dispatch::{cancel_task, carry_out, escalation};
use crate::engine::{Candidate, Engine};
use crate::incident::{BY_ROUTER, derive_status, entry};
use crate::tx::Tx;

/// A unit that may be taken for an incident, with the task it would leave.
#[derive(Debug, Clone)]
pub(crate) struct Taken {
    pub candidate: Candidate,
    pub task: Task,
}

/// The task `unit` would leave for an incident of `priority`, when it may
/// be taken from it: a task of lower priority it has not reached, of an
/// incident this router owns. `operator` is an operator's `assign` with
/// `preempt`: any lower priority, not only the configured ones.
pub(crate) async fn preemptable(
    tx: &Tx<'_>,
    engine: &Engine,
    unit: &Unit,
    priority: u8,
    operator: bool,
) -> anyhow::Result<Option<Task>> {
    if !matches!(unit.status, UnitStatus::Assigned | UnitStatus::EnRoute) {
        return Ok(None);
    }
    let Some(task_id) = &unit.task else { return Ok(None) };
    let Some(task) = tx.task(task_id).await? else {
        return Ok(None);
    };
    let reached = !matches!(
        task.status,
        TaskStatus::Issued | TaskStatus::Acknowledged | TaskStatus::EnRoute
    );
    let allowed = if operator {
        task.priority > priority
    } else {
        engine.config().dispatch.may_preempt(priority, task.priority)
    };
    let books = tx.books();
    if reached || !allowed || task.unit != unit.id || !books.owns(books.partition_of(&task.jurisdiction)) {
        return Ok(None);
    }
    Ok(Some(task))
}

/// The router's ranking for an operator: the available units and those it
/// may take from lower-priority tasks, best first (as [`Engine::rank`]
/// orders them), at most `router.candidate_units`. Stale units and units
/// that are or were on the incident are left out.
pub(crate) async fn ranking(
    tx: &Tx<'_>,
    engine: &Engine,
    incident: &Incident,
    candidates: &[Candidate],
    now: Timestamp,
) -> anyhow::Result<Vec<Recommendation>> {
    let mut eligible = Vec::new();
    let mut leaving = std::collections::HashMap::new();
    for c in candidates {
        // As `pick`: a unit that worked on it (or refused it) is not
        // offered again.
        if incident.units.iter().any(|u| u.unit == c.unit.id) || engine.is_stale(&c.unit, now) {
            continue;
        }
        if c.unit.status == UnitStatus::Available {
            eligible.push(c.clone());
        } else if let Some(task) = preemptable(tx, engine, &c.unit, incident.priority, false).await? {
            leaving.insert(c.unit.id.clone(), task);
            eligible.push(c.clone());
        }
    }
    let distance: std::collections::HashMap<String, f64> =
        eligible.iter().map(|c| (c.unit.id.clone(), c.distance_m)).collect();
    Ok(engine
        .rank(incident, eligible, now)
        .into_iter()
        .take(engine.config().router.candidate_units.max(1))
        .map(|r| {
            let task = leaving.get(&r.unit.id);
            Recommendation {
                distance_m: distance.get(&r.unit.id).copied().unwrap_or_default().round(),
                unit: r.unit.id,
                unit_type: r.unit.unit_type,
                eta_s: r.eta_s,
                in_time: r.in_time,
                task: task.map(|t| t.id.clone()),
                task_priority: task.map(|t| t.priority),
            }
        })
        .collect())
}

/// The best unit to take for `incident`'s primary task: the fastest of
/// those on lower-priority tasks that arrives in time. None when no such
/// unit arrives in time (taking one that is late too gains nothing).
pub(crate) async fn best(
    tx: &Tx<'_>,
    engine: &Engine,
    incident: &Incident,
    candidates: &[Candidate],
    now: Timestamp,
) -> anyhow::Result<Option<Taken>> {
    let mut busy = Vec::new();
    let mut tasks = std::collections::HashMap::new();
    for c in candidates {
        if incident.units.iter().any(|u| u.unit == c.unit.id) || engine.is_stale(&c.unit, now) {
            continue;
        }
        if let Some(task) = preemptable(tx, engine, &c.unit, incident.priority, false).await? {
            tasks.insert(c.unit.id.clone(), task);
            busy.push(c.clone());
        }
    }
    let ranked = engine.rank(incident, busy.clone(), now);
    let Some(first) = ranked.into_iter().find(|r| r.in_time) else {
        return Ok(None);
    };
    let candidate = busy.into_iter().find(|c| c.unit.id == first.unit.id);
    Ok(candidate.and_then(|candidate| tasks.remove(&candidate.unit.id).map(|task| Taken { candidate, task })))
}

/// Takes the unit off its task and gives it `incident`'s primary task.
/// The task it leaves is cancelled with the reason, and its incident
/// (owned here, checked by [`preemptable`]) records it and waits for
/// another unit; the supervisor is told (`preempted`). Returns whether the
/// unit was issued the task.
pub(crate) async fn take(
    tx: &mut Tx<'_>,
    engine: &Engine,
    incident: &mut Incident,
    taken: Taken,
    now: Timestamp,
) -> anyhow::Result<bool> {
    let Taken { candidate, task } = taken;
    let unit_id = candidate.unit.id.clone();
    let Some(mut other) = tx.incident(&task.incident).await? else {
        return Ok(false);
    };
    if other.id == incident.id {
        return Ok(false);
    }
    let why = format!(
        "taken for P{} incident {} ({})",
        incident.priority, incident.id, incident.kind
    );
    // The claim being taken over must still be the one read.
    tx.expect_claim(&unit_id, &task.id);
    cancel_task(tx, &mut other, &task.id, &why, now).await?;
    other.timeline.push(entry(
        now,
        format!("unit {unit_id} {why}; waiting for another unit"),
        BY_ROUTER,
    ));
    derive_status(&mut other);
    let desks = vec![engine.config().router.supervisor_desk.clone()];
    let message = format!("unit {unit_id} {why}");
    tx.escalate(escalation(&other, EscalationKind::Preempted, now, message, desks));
    tx.put_incident(other);

    let Some(freed) = tx.unit(&unit_id).await? else {
        return Ok(false);
    };
    let candidate = Candidate {
        unit: freed,
        distance_m: candidate.distance_m,
    };
    let issues = engine.pick(
        incident,
        TaskKind::Respond,
        UnitRole::Primary,
        None,
        1,
        &[candidate],
        now,
    );
    let Some(issue) = issues.into_iter().next() else {
        return Ok(false);
    };
    incident.timeline.push(entry(
        now,
        format!(
            "unit {unit_id} taken off P{} task {} (incident {}): no available unit in time",
            task.priority, task.id, task.incident
        ),
        BY_ROUTER,
    ));
    Ok(carry_out(tx, incident, issue, now))
}
