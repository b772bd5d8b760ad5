//! `assign`: an operator sends a named unit to an open incident (派警 /
//! 改派). The unit must be available; it is claimed like any dispatch, and
//! the incident's open primary tasks are cancelled (their units freed), so
//! an assignment replaces the primary unit.

use bus::model::{
    Action, Incident, IncidentStatus, IncidentUnit, TaskKind, TaskStatus, Timestamp, UnitRole, UnitStatus,
};

use super::{Fail, open_incident, reject};
use crate::dispatch::cancel_task;
use crate::engine::{Candidate, Engine};
use crate::incident::{derive_status, entry};
use crate::tx::Tx;

pub(super) async fn apply(
    tx: &mut Tx<'_>,
    engine: &Engine,
    action: &Action,
    incident_id: &str,
    unit_id: &str,
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
        return Err(reject(
            Some(incident_id),
            format!("unit {unit_id} is {}", unit.status.as_str()),
        ));
    }
    let task = engine.new_task(&incident, unit_id, TaskKind::Respond, now);
    let mut unit = tx
        .claim(&unit, &task.id)
        .ok_or_else(|| reject(Some(incident_id), format!("unit {unit_id} is not available")))?;
    let previous: Vec<(String, String)> = incident
        .units
        .iter()
        .filter(|u| u.role == UnitRole::Primary && u.status.is_open())
        .map(|u| (u.task.clone(), u.unit.clone()))
        .collect();
    for (task_id, _) in &previous {
        cancel_task(tx, &mut incident, task_id, now).await?;
    }
    let eta_s = eta(engine, &incident, &unit, now);
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
    metrics::counter!(bus::metrics::ROUTER_TASKS_TOTAL, "kind" => TaskKind::Respond.as_str()).increment(1);
    tx.put_unit(unit);
    tx.put_task(task);
    derive_status(&mut incident);
    tx.put_incident(incident);
    Ok(())
}

/// The unit's predicted travel time to the incident, 0 when either has no
/// position.
fn eta(engine: &Engine, incident: &Incident, unit: &bus::model::Unit, now: Timestamp) -> u32 {
    let (Some(la), Some(lo), Some((lat, lon))) = (unit.lat, unit.lon, engine.dispatch_point(incident)) else {
        return 0;
    };
    let candidate = Candidate {
        unit: unit.clone(),
        distance_m: bus::geo::haversine_m(la, lo, lat, lon),
    };
    engine
        .rank(incident, vec![candidate], now)
        .first()
        .map_or(0, |r| r.eta_s)
}
