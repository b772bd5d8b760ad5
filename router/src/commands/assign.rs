//! `assign`: an operator sends a named unit to an open incident (派警 /
//! 改派). By default the unit replaces the primary (the incident's open
//! primary tasks are cancelled, their units freed); `mode: add` sends it as
//! a reinforcement beside those already on it. The unit must be available,
//! or with `preempt` on a task of lower priority it has not reached: that
//! task is cancelled with the reason and its incident waits for another
//! unit. The unit is claimed like any dispatch.

use bus::model::{
    Action, AssignMode, Incident, IncidentStatus, IncidentUnit, TaskKind, TaskStatus, Timestamp, UnitRole, UnitStatus,
};

use super::{Fail, open_incident, reject};
use crate::dispatch::{cancel_task, top_up};
use crate::engine::{Candidate, Engine};
use crate::incident::{derive_status, entry};
use crate::preempt::{Taken, preemptable, take};
use crate::tx::Tx;

#[allow(clippy::too_many_arguments)]
pub(super) async fn apply(
    tx: &mut Tx<'_>,
    engine: &Engine,
    action: &Action,
    incident_id: &str,
    unit_id: &str,
    mode: AssignMode,
    preempt: bool,
    now: Timestamp,
) -> Result<(), Fail> {
    let mut incident = open_incident(tx, incident_id).await?;
    if incident.status == IncidentStatus::Resolved {
        return Err(reject(Some(incident_id), "incident is resolved"));
    }
    if incident.units.iter().any(|u| u.unit == unit_id && u.status.is_open()) {
        return Err(reject(Some(incident_id), format!("unit {unit_id} already works on it")));
    }
    let unit = tx
        .unit(unit_id)
        .await?
        .ok_or_else(|| reject(Some(incident_id), format!("unknown unit {unit_id}")))?;
    if unit.status != UnitStatus::Available {
        let task = match preempt {
            true => preemptable(tx, engine, &unit, incident.priority, true).await?,
            false => None,
        };
        let Some(task) = task else {
            let hint = if preempt {
                " (its task is not of lower priority, or it has reached it)"
            } else {
                ""
            };
            return Err(reject(
                Some(incident_id),
                format!("unit {unit_id} is {}{hint}", unit.status.as_str()),
            ));
        };
        if mode == AssignMode::Replace {
            cancel_primaries(tx, &mut incident, unit_id, now).await?;
        }
        let distance_m = distance(engine, &incident, &unit);
        let candidate = Candidate { unit, distance_m };
        if !take(tx, engine, &mut incident, Taken { candidate, task }, now).await? {
            return Err(reject(Some(incident_id), format!("unit {unit_id} could not be taken")));
        }
        if mode == AssignMode::Add
            && let Some(last) = incident.units.last_mut()
        {
            last.role = UnitRole::Reinforcement;
        }
        finish(
            tx,
            engine,
            action,
            incident,
            format!("unit {unit_id} taken and assigned"),
            now,
        )
        .await?;
        return Ok(());
    }
    let (kind, role) = match mode {
        AssignMode::Replace => (TaskKind::Respond, UnitRole::Primary),
        AssignMode::Add => (TaskKind::Reinforce, UnitRole::Reinforcement),
    };
    let task = engine.new_task(&incident, unit_id, kind, now);
    let mut unit = tx
        .claim(&unit, &task.id)
        .ok_or_else(|| reject(Some(incident_id), format!("unit {unit_id} is not available")))?;
    let replaced = match mode {
        AssignMode::Replace => cancel_primaries(tx, &mut incident, unit_id, now).await?,
        AssignMode::Add => Vec::new(),
    };
    let eta_s = eta(engine, &incident, &unit, now);
    incident.units.push(IncidentUnit {
        unit: unit_id.to_owned(),
        task: task.id.clone(),
        role,
        status: TaskStatus::Issued,
        eta_s,
    });
    let what = match (mode, replaced.first()) {
        (AssignMode::Add, _) => format!("{unit_id} added"),
        (AssignMode::Replace, Some(old)) => format!("reassigned from {old} to {unit_id}"),
        (AssignMode::Replace, None) => format!("assigned to {unit_id}"),
    };
    unit.at = now;
    metrics::counter!(bus::metrics::ROUTER_TASKS_TOTAL, "kind" => kind.as_str()).increment(1);
    tx.put_unit(unit);
    tx.put_task(task);
    finish(tx, engine, action, incident, what, now).await
}

/// Cancels the incident's open primary tasks (an assignment replaces the
/// primary); returns their units.
async fn cancel_primaries(
    tx: &mut Tx<'_>,
    incident: &mut Incident,
    new_unit: &str,
    now: Timestamp,
) -> anyhow::Result<Vec<String>> {
    let previous: Vec<(String, String)> = incident
        .units
        .iter()
        .filter(|u| u.role == UnitRole::Primary && u.status.is_open())
        .map(|u| (u.task.clone(), u.unit.clone()))
        .collect();
    let why = format!("replaced by {new_unit} (operator's assignment)");
    for (task_id, _) in &previous {
        cancel_task(tx, incident, task_id, &why, now).await?;
    }
    Ok(previous.into_iter().map(|(_, unit)| unit).collect())
}

/// Records the assignment and refreshes the ranking of a held incident
/// (the unit just assigned leaves it).
async fn finish(
    tx: &mut Tx<'_>,
    engine: &Engine,
    action: &Action,
    mut incident: Incident,
    what: String,
    now: Timestamp,
) -> Result<(), Fail> {
    incident.timeline.push(entry(now, what, &action.by.sub));
    if engine.held(&incident) {
        top_up(tx, engine, &mut incident, now).await?;
    }
    derive_status(&mut incident);
    tx.put_incident(incident);
    Ok(())
}

fn distance(engine: &Engine, incident: &Incident, unit: &bus::model::Unit) -> f64 {
    match (unit.lat, unit.lon, engine.dispatch_point(incident)) {
        (Some(la), Some(lo), Some((lat, lon))) => bus::geo::haversine_m(la, lo, lat, lon),
        _ => 0.0,
    }
}

/// The unit's predicted travel time to the incident, 0 when either has no
/// position.
fn eta(engine: &Engine, incident: &Incident, unit: &bus::model::Unit, now: Timestamp) -> u32 {
    if unit.lat.is_none() || engine.dispatch_point(incident).is_none() {
        return 0;
    }
    let candidate = Candidate {
        unit: unit.clone(),
        distance_m: distance(engine, incident, unit),
    };
    engine
        .rank(incident, vec![candidate], now)
        .first()
        .map_or(0, |r| r.eta_s)
}
