//! Sending units: the primary task and P1 reinforcements an incident still
//! needs (`top_up`, or the ranking for an operator when dispatch is held),
//! re-dispatch of tasks not acknowledged in time, a unit withdrawn
//! (refused, out of service) replaced at once, and ending tasks (their
//! units made available again, told why). Each reads the
//! candidates once, lets the engine decide ([`crate::plan`]), and carries
//! the decision out through the transaction, which claims each unit (the
//! commit checks it is still available, so two incidents never get one).

use bus::model::{
    Escalation, EscalationKind, Incident, IncidentUnit, Recommendation, Stage, Task, TaskKind, TaskStatus, Timestamp,
    UnitRole, UnitStatus, UnitType, new_id,
};

use crate::engine::{Candidate, Engine};
use crate::incident::{BY_ROUTER, derive_status, entry};
use crate::plan::{Issue, needs_units, working_units};
use crate::tx::Tx;

/// An escalation the router raises about an incident.
pub(crate) fn escalation(
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

/// Sends the units an incident still needs (a primary, and for P1
/// reinforcements): the candidates read once, the plan decided once
/// ([`Engine::plan_top_up`]), then carried out. A shortfall is escalated
/// once (`no_unit`) and retried by the clock. A primary that cannot arrive
/// in time may be taken off a lower-priority task ([`crate::preempt`]). A
/// held incident gets the ranking instead (`candidates`), for an operator
/// to pick from.
pub(crate) async fn top_up(
    tx: &mut Tx<'_>,
    engine: &Engine,
    incident: &mut Incident,
    now: Timestamp,
) -> anyhow::Result<()> {
    if engine.held(incident) {
        return recommend(tx, engine, incident, now).await;
    }
    incident.candidates.clear();
    let candidates = candidates(tx, engine, incident).await?;
    let mut plan = engine.plan_top_up(incident, &candidates, now);
    let primary_late = working_units(incident) == 0 && plan.issues.first().is_none_or(|i| !i.in_time);
    if primary_late
        && engine.config().dispatch.preempt_for.contains(&incident.priority)
        && let Some(taken) = crate::preempt::best(tx, engine, incident, &candidates, now).await?
    {
        crate::preempt::take(tx, engine, incident, taken, now).await?;
        // The primary is there now: what is left is reinforcements.
        plan = engine.plan_top_up(incident, &candidates, now);
    }
    for issue in plan.issues {
        carry_out(tx, incident, issue, now);
    }
    if let Some(why) = plan.shortfall {
        no_unit(tx, engine, incident, now, &why);
    }
    serve_requests(tx, engine, incident, now).await?;
    derive_status(incident);
    Ok(())
}

/// Sends the unit types operators asked for that no unit could serve when
/// they asked (`requested`), as far as units of those types are free now.
async fn serve_requests(
    tx: &mut Tx<'_>,
    engine: &Engine,
    incident: &mut Incident,
    now: Timestamp,
) -> anyhow::Result<()> {
    for unit_type in incident.requested.clone() {
        let kind = match unit_type {
            UnitType::Special | UnitType::Traffic => TaskKind::Investigate,
            _ => TaskKind::Reinforce,
        };
        if dispatch(
            tx,
            engine,
            incident,
            kind,
            UnitRole::Specialist,
            Some(unit_type),
            1,
            now,
        )
        .await?
            > 0
        {
            incident.requested.retain(|t| *t != unit_type);
            let unit = incident.units.last().map(|u| u.unit.clone()).unwrap_or_default();
            incident.timeline.push(entry(
                now,
                format!("requested {} unit sent: {unit}", unit_type.as_str()),
                BY_ROUTER,
            ));
        }
    }
    Ok(())
}

/// Publishes the router's ranking on a held incident that needs units
/// (none when it needs none). Rewritten only when the units or whether
/// they arrive in time changed, not for every second of ETA, so a clock
/// retry does not publish a new version each time.
async fn recommend(tx: &mut Tx<'_>, engine: &Engine, incident: &mut Incident, now: Timestamp) -> anyhow::Result<()> {
    let ranking = if needs_units(engine, incident) {
        let candidates = candidates(tx, engine, incident).await?;
        crate::preempt::ranking(tx, engine, incident, &candidates, now).await?
    } else {
        Vec::new()
    };
    let key = |r: &Recommendation| (r.unit.clone(), r.in_time, r.task.clone());
    let same =
        ranking.len() == incident.candidates.len() && ranking.iter().map(key).eq(incident.candidates.iter().map(key));
    if !same {
        incident.candidates = ranking;
    }
    Ok(())
}

fn no_unit(tx: &mut Tx<'_>, engine: &Engine, incident: &mut Incident, now: Timestamp, why: &str) {
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
    let desks = vec![engine.config().router.supervisor_desk.clone()];
    tx.escalate(escalation(incident, EscalationKind::NoUnit, now, what, desks));
}

/// The units that could take the incident's tasks, nearest first, as this
/// transaction sees them: the one read dispatch makes.
pub(crate) async fn candidates(tx: &Tx<'_>, engine: &Engine, incident: &Incident) -> anyhow::Result<Vec<Candidate>> {
    let Some((lat, lon)) = engine.dispatch_point(incident) else {
        return Ok(Vec::new());
    };
    let config = &engine.config().router;
    // More than a task needs: the nearest may all be busy.
    let limit = config.candidate_units.saturating_mul(4);
    let nearby = tx.units_near(lat, lon, config.search_radius_m, limit).await?;
    Ok(nearby
        .into_iter()
        .map(|(near, unit)| Candidate {
            unit,
            distance_m: near.distance_m,
        })
        .collect())
}

/// Issues up to `count` tasks of `kind` to the best available units that
/// have not worked on this incident. Returns how many were issued.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn dispatch(
    tx: &mut Tx<'_>,
    engine: &Engine,
    incident: &mut Incident,
    kind: TaskKind,
    role: UnitRole,
    unit_type: Option<UnitType>,
    count: usize,
    now: Timestamp,
) -> anyhow::Result<usize> {
    let candidates = candidates(tx, engine, incident).await?;
    let issues = engine.pick(incident, kind, role, unit_type, count, &candidates, now);
    Ok(issues
        .into_iter()
        .filter(|issue| carry_out(tx, incident, issue.clone(), now))
        .count())
}

/// Claims the issue's unit and records its task on the incident. False
/// when the unit cannot be claimed (it was not available after all).
pub(crate) fn carry_out(tx: &mut Tx<'_>, incident: &mut Incident, issue: Issue, now: Timestamp) -> bool {
    let Issue {
        unit,
        task,
        role,
        eta_s,
        in_time,
    } = issue;
    let Some(mut unit) = tx.claim(&unit, &task.id) else {
        tracing::debug!(unit = %unit.id, "unit taken meanwhile");
        return false;
    };
    unit.at = now;
    incident.units.push(IncidentUnit {
        unit: unit.id.clone(),
        task: task.id.clone(),
        role,
        status: TaskStatus::Issued,
        eta_s,
    });
    let late = if in_time { "" } else { ", after the arrive target" };
    incident.timeline.push(entry(
        now,
        format!(
            "{} task issued to {} ({}, eta {eta_s} s{late})",
            task.kind.as_str(),
            unit.id,
            unit.unit_type.as_str(),
        ),
        BY_ROUTER,
    ));
    metrics::counter!(bus::metrics::ROUTER_TASKS_TOTAL, "kind" => task.kind.as_str()).increment(1);
    tx.put_unit(unit);
    tx.put_task(task);
    true
}

/// The respond deadline passed without an acknowledgement: each task still
/// only issued goes to the next best unit.
pub(crate) async fn redispatch(
    tx: &mut Tx<'_>,
    engine: &Engine,
    incident: &mut Incident,
    now: Timestamp,
) -> anyhow::Result<()> {
    let stale: Vec<IncidentUnit> = incident
        .units
        .iter()
        .filter(|u| u.status == TaskStatus::Issued)
        .cloned()
        .collect();
    for old in stale {
        cancel_task(tx, incident, &old.task, "not acknowledged in time", now).await?;
        let kind = match old.role {
            UnitRole::Primary => TaskKind::Respond,
            _ => TaskKind::Reinforce,
        };
        let issued = dispatch(tx, engine, incident, kind, old.role, None, 1, now).await?;
        let message = if issued > 0 {
            let new = incident.units.last().map(|u| u.unit.clone()).unwrap_or_default();
            format!("unit {} did not acknowledge in time; re-dispatched to {new}", old.unit)
        } else {
            format!("unit {} did not acknowledge in time; no other unit available", old.unit)
        };
        incident.timeline.push(entry(now, message.clone(), BY_ROUTER));
        let desks = vec![engine.config().router.supervisor_desk.clone()];
        let mut escalation = escalation(incident, EscalationKind::Redispatch, now, message, desks);
        escalation.stage = Some(Stage::Respond);
        tx.escalate(escalation);
    }
    Ok(())
}

/// Cancels one task, telling its unit why, and frees the unit.
pub(crate) async fn cancel_task(
    tx: &mut Tx<'_>,
    incident: &mut Incident,
    task_id: &str,
    why: &str,
    now: Timestamp,
) -> anyhow::Result<()> {
    if let Some(mut task) = tx.task(task_id).await?
        && task.status.can_become(TaskStatus::Cancelled)
    {
        task.status = TaskStatus::Cancelled;
        task.reason = Some(why.to_owned());
        free_unit(tx, &task.unit, &task.id, now).await?;
        tx.put_task(task);
    }
    if let Some(u) = incident.units.iter_mut().find(|u| u.task == task_id)
        && u.status.is_open()
    {
        u.status = TaskStatus::Cancelled;
    }
    Ok(())
}

/// Takes a unit off its task on `incident` (it refused, or went out of
/// service) and sends another unit in its place at once; a held incident
/// gets a new ranking instead.
pub(crate) async fn withdraw(
    tx: &mut Tx<'_>,
    engine: &Engine,
    incident: &mut Incident,
    task: &Task,
    why: &str,
    now: Timestamp,
) -> anyhow::Result<()> {
    let role = incident
        .units
        .iter()
        .find(|u| u.task == task.id)
        .map_or(UnitRole::Primary, |u| u.role);
    cancel_task(tx, incident, &task.id, why, now).await?;
    incident.timeline.push(entry(
        now,
        format!("unit {} withdrawn from task {}: {why}", task.unit, task.id),
        BY_ROUTER,
    ));
    if engine.held(incident) {
        return recommend(tx, engine, incident, now).await;
    }
    let kind = match role {
        UnitRole::Primary => TaskKind::Respond,
        _ => task.kind,
    };
    let issued = dispatch(tx, engine, incident, kind, role, None, 1, now).await?;
    if issued == 0 {
        no_unit(tx, engine, incident, now, &format!("none to replace {}", task.unit));
    }
    Ok(())
}

/// Cancels every open task of the incident and frees the units.
pub(crate) async fn end_tasks(
    tx: &mut Tx<'_>,
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
        cancel_task(tx, incident, task, why, now).await?;
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
pub(crate) async fn free_unit(tx: &mut Tx<'_>, unit: &str, task: &str, now: Timestamp) -> anyhow::Result<()> {
    if let Some(mut u) = tx.unit(unit).await?
        && u.task.as_deref() == Some(task)
    {
        u.status = UnitStatus::Available;
        u.task = None;
        u.at = now;
        tx.put_unit(u);
    }
    Ok(())
}
