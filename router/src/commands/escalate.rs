//! `escalate`: an operator pulls a desk or a unit type into an open
//! incident (吹哨报到). A desk must exist; a unit type is dispatched like
//! any task (a special or traffic unit to investigate, others to
//! reinforce), and its absence is escalated to the supervisor and kept on
//! the incident (`requested`) until a unit of the type frees up.

use bus::model::{Action, EscalationKind, TaskKind, Timestamp, UnitRole, UnitType};

use super::{Fail, open_incident, reject};
use crate::dispatch::{dispatch, escalation};
use crate::engine::Engine;
use crate::incident::{add_desk, derive_status, entry};
use crate::tx::Tx;

#[allow(clippy::too_many_arguments)]
pub(super) async fn apply(
    tx: &mut Tx<'_>,
    engine: &Engine,
    action: &Action,
    incident_id: &str,
    desk: Option<&str>,
    unit_type: Option<UnitType>,
    note: Option<&str>,
    now: Timestamp,
) -> Result<(), Fail> {
    let mut incident = open_incident(tx, incident_id).await?;
    if desk.is_none() && unit_type.is_none() {
        return Err(reject(Some(incident_id), "escalate needs a desk or a unit type"));
    }
    if let Some(d) = desk
        && !engine.config().desks.iter().any(|x| x.id == d)
    {
        return Err(reject(Some(incident_id), format!("unknown desk {d}")));
    }
    let mut what = Vec::new();
    if let Some(d) = desk {
        add_desk(&mut incident.desks, d);
        what.push(format!("desk {d}"));
    }
    let mut shortfall = String::new();
    if let Some(t) = unit_type {
        let kind = match t {
            UnitType::Special | UnitType::Traffic => TaskKind::Investigate,
            _ => TaskKind::Reinforce,
        };
        let issued = dispatch(tx, engine, &mut incident, kind, UnitRole::Specialist, Some(t), 1, now).await?;
        what.push(format!("unit type {}", t.as_str()));
        if issued == 0 {
            // Not forgotten: the request stays on the incident and the
            // clock serves it as units free up.
            if !incident.requested.contains(&t) {
                incident.requested.push(t);
            }
            shortfall = format!("; no available {} unit, request kept", t.as_str());
            let desks = vec![engine.config().router.supervisor_desk.clone()];
            let message = format!("no available {} unit", t.as_str());
            tx.escalate(escalation(&incident, EscalationKind::NoUnit, now, message, desks));
        }
    }
    let note = note
        .filter(|n| !n.is_empty())
        .map(|n| format!(": {n}"))
        .unwrap_or_default();
    let summary = format!("escalated: {}{note}{shortfall}", what.join(" and "));
    incident.timeline.push(entry(now, summary.clone(), &action.by.sub));
    let mut escalated = escalation(
        &incident,
        EscalationKind::Escalate,
        now,
        summary,
        desk.map(str::to_owned).into_iter().collect(),
    );
    escalated.unit_type = unit_type;
    escalated.by.clone_from(&action.by.sub);
    escalated.action = Some(action.id.clone());
    tx.escalate(escalated);
    derive_status(&mut incident);
    tx.put_incident(incident);
    Ok(())
}
