//! `divert`: an operator hands an open incident to another agency (分流,
//! `12345` by default). Its tasks are cancelled, its units freed, and the
//! stages still pending no longer apply.

use bus::model::{Action, IncidentStatus, Timestamp};

use super::{Fail, open_incident};
use crate::dispatch::end_tasks;
use crate::engine::Engine;
use crate::incident::{entry, pending_to_na};
use crate::tx::Tx;

pub(super) async fn apply(
    tx: &mut Tx<'_>,
    engine: &Engine,
    action: &Action,
    incident_id: &str,
    to: &str,
    now: Timestamp,
) -> Result<(), Fail> {
    let mut incident = open_incident(tx, incident_id).await?;
    let to = if to.trim().is_empty() {
        engine.config().router.default_agency.clone()
    } else {
        to.trim().to_owned()
    };
    end_tasks(tx, &mut incident, now, "diverted").await?;
    incident.status = IncidentStatus::Diverted;
    incident.diverted_to = Some(to.clone());
    pending_to_na(&mut incident);
    incident
        .timeline
        .push(entry(now, format!("diverted to {to}"), &action.by.sub));
    metrics::counter!(bus::metrics::ROUTER_DIVERTED_TOTAL, "by" => "operator").increment(1);
    tx.put_incident(incident);
    Ok(())
}
