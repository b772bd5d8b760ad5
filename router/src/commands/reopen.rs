//! `reopen`: a closed, resolved or diverted incident comes back open with
//! its history ("urgent matters come back" from 12345; un-diverting is a
//! reopen with a reason). It is a new demand on the police: fresh 1-3-5
//! deadlines from now, and units sent as for a new incident. Its finished
//! tasks stay on the timeline, not on its unit list, so the units it needs
//! are counted afresh. A merged incident is reopened through the incident
//! it was merged into.

use bus::model::{Action, IncidentStatus, Sla, Timestamp};

use super::{Fail, owned_incident, reject};
use crate::dispatch::top_up;
use crate::engine::Engine;
use crate::incident::{derive_status, entry};
use crate::tx::Tx;

pub(super) async fn apply(
    tx: &mut Tx<'_>,
    engine: &Engine,
    action: &Action,
    id: &str,
    reason: &str,
    now: Timestamp,
) -> Result<(), Fail> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(reject(Some(id), "a reopen needs a reason"));
    }
    let mut incident = owned_incident(tx, id).await?;
    if let Some(into) = &incident.merged_into {
        return Err(reject(Some(id), format!("merged into {into}: reopen that one")));
    }
    let was = incident.status;
    if was.is_open() && was != IncidentStatus::Resolved {
        return Err(reject(Some(id), format!("incident is {}", was.as_str())));
    }
    let finished: Vec<String> = incident.units.iter().map(|u| u.unit.clone()).collect();
    incident.units.clear();
    let mut what = format!("reopened (was {}): {reason}", was.as_str());
    if let Some(agency) = incident.diverted_to.take() {
        what.push_str(&format!("; taken back from {agency}"));
    }
    if !finished.is_empty() {
        what.push_str(&format!("; earlier units {}", finished.join(", ")));
    }
    incident.timeline.push(entry(now, what, &action.by.sub));
    incident.status = IncidentStatus::New;
    incident.disposition = None;
    incident.feedback = None;
    incident.deadlines = engine.deadlines(&incident.jurisdiction, incident.priority, now);
    incident.sla = Sla::default();
    incident.candidates.clear();
    top_up(tx, engine, &mut incident, now).await?;
    derive_status(&mut incident);
    tx.put_incident(incident);
    Ok(())
}
