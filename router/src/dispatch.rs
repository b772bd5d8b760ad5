//! Sending units: the primary task and P1 reinforcements an incident still
//! needs (`top_up`), re-dispatch of tasks not acknowledged in time, and
//! ending tasks (their units made available again). The engine ranks; this
//! module claims the ranked units through the transaction, so two
//! incidents never get one unit, and a unit it cannot claim is skipped.

use std::collections::HashSet;

use bus::model::{
    Escalation, EscalationKind, Incident, IncidentStatus, IncidentUnit, Stage, TaskKind, TaskStatus, Timestamp,
    UnitRole, UnitStatus, UnitType, new_id,
};

use crate::engine::{BY_ROUTER, Candidate, Engine, derive_status, entry};
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

/// Units working on (or done with) an incident: not cancelled.
pub(crate) fn working_units(incident: &Incident) -> usize {
    incident
        .units
        .iter()
        .filter(|u| u.status.is_open() || u.status == TaskStatus::Cleared)
        .count()
}

/// A police incident with a clock that has fewer units than it needs:
/// none at all, or for P1 fewer than the reinforce target.
pub(crate) fn needs_units(engine: &Engine, incident: &Incident) -> bool {
    if incident.deadlines.is_none()
        || incident.diverted_to.is_some()
        || !incident.status.is_open()
        || incident.status == IncidentStatus::Resolved
    {
        return false;
    }
    let needed = if incident.priority == 1 {
        engine.reinforce_units(&incident.jurisdiction, 1) as usize
    } else {
        1
    };
    working_units(incident) < needed
}

/// Sends the units an incident still needs: a primary when it has no
/// working task, and for P1 reinforcements up to the reinforce target. A
/// shortfall is escalated once (`no_unit`) and retried by the clock.
pub(crate) async fn top_up(
    tx: &mut Tx<'_>,
    engine: &Engine,
    incident: &mut Incident,
    now: Timestamp,
) -> anyhow::Result<()> {
    if working_units(incident) == 0 {
        let issued = dispatch(tx, engine, incident, TaskKind::Respond, UnitRole::Primary, None, 1, now).await?;
        if issued == 0 {
            no_unit(tx, engine, incident, now, "none for the primary task");
            return Ok(());
        }
    }
    if incident.priority == 1 {
        let needed = engine.reinforce_units(&incident.jurisdiction, 1) as usize;
        let have = working_units(incident);
        if have < needed {
            let missing = needed - have;
            let issued = dispatch(
                tx,
                engine,
                incident,
                TaskKind::Reinforce,
                UnitRole::Reinforcement,
                None,
                missing,
                now,
            )
            .await?;
            if issued < missing {
                let why = format!("only {} of {needed} units available", have + issued);
                no_unit(tx, engine, incident, now, &why);
            }
        }
    }
    derive_status(incident);
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

/// Issues up to `count` tasks of `kind` to the best available units that
/// have not worked on this incident, claiming each (one taken meanwhile
/// is skipped). Returns how many were issued.
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
    let Some((lat, lon)) = engine.dispatch_point(incident) else {
        return Ok(0);
    };
    let config = &engine.config().router;
    let limit = config.candidate_units.max(count);
    // Ask for more than we need: the nearest may all be busy.
    let nearby = tx
        .units_near(lat, lon, config.search_radius_m, limit.saturating_mul(4))
        .await?;
    let tried: HashSet<&str> = incident.units.iter().map(|u| u.unit.as_str()).collect();
    let candidates: Vec<Candidate> = nearby
        .into_iter()
        .filter(|(_, unit)| {
            !tried.contains(unit.id.as_str())
                && unit.status == UnitStatus::Available
                && unit_type.is_none_or(|t| t == unit.unit_type)
        })
        .take(limit)
        .map(|(near, unit)| Candidate {
            unit,
            distance_m: near.distance_m,
        })
        .collect();
    let ranked = engine.rank(incident, candidates, now);
    let mut issued = 0;
    for choice in ranked {
        if issued == count {
            break;
        }
        let task = engine.new_task(incident, &choice.unit.id, kind, now);
        match tx.claim(&choice.unit, &task.id) {
            Some(mut unit) => {
                unit.at = now;
                incident.units.push(IncidentUnit {
                    unit: unit.id.clone(),
                    task: task.id.clone(),
                    role,
                    status: TaskStatus::Issued,
                    eta_s: choice.eta_s,
                });
                let late = if choice.in_time {
                    ""
                } else {
                    ", after the arrive target"
                };
                incident.timeline.push(entry(
                    now,
                    format!(
                        "{} task issued to {} ({}, eta {} s{late})",
                        kind.as_str(),
                        unit.id,
                        unit.unit_type.as_str(),
                        choice.eta_s,
                    ),
                    BY_ROUTER,
                ));
                metrics::counter!(bus::metrics::ROUTER_TASKS_TOTAL, "kind" => kind.as_str()).increment(1);
                tx.put_unit(unit);
                tx.put_task(task);
                issued += 1;
            }
            None => tracing::debug!(unit = %choice.unit.id, "unit taken meanwhile"),
        }
    }
    Ok(issued)
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
        cancel_task(tx, incident, &old.task, now).await?;
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

/// Cancels one task and frees its unit.
pub(crate) async fn cancel_task(
    tx: &mut Tx<'_>,
    incident: &mut Incident,
    task_id: &str,
    now: Timestamp,
) -> anyhow::Result<()> {
    if let Some(mut task) = tx.task(task_id).await?
        && task.status.can_become(TaskStatus::Cancelled)
    {
        task.status = TaskStatus::Cancelled;
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
        cancel_task(tx, incident, task, now).await?;
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
