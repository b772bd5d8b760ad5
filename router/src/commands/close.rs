//! `close`: an operator closes an open incident with a disposition (结案).
//! Its open tasks are cancelled and its units freed; a caller who was
//! unsatisfied gets a follow-up incident (不满意回访) for the station.

use bus::model::{Action, Feedback, Incident, IncidentStatus, Timestamp};

use super::{Fail, open_incident, reject};
use crate::dispatch::end_tasks;
use crate::incident::{BY_ROUTER, entry, not_applicable, pending_to_na};
use crate::tx::Tx;

pub(super) async fn apply(
    tx: &mut Tx<'_>,
    action: &Action,
    incident_id: &str,
    disposition: &str,
    feedback: Option<Feedback>,
    now: Timestamp,
) -> Result<(), Fail> {
    let mut incident = open_incident(tx, incident_id).await?;
    if disposition.trim().is_empty() {
        return Err(reject(Some(incident_id), "close needs a disposition"));
    }
    end_tasks(tx, &mut incident, now, "closed").await?;
    incident.status = IncidentStatus::Closed;
    incident.disposition = Some(disposition.to_owned());
    incident.feedback = feedback;
    pending_to_na(&mut incident);
    incident
        .timeline
        .push(entry(now, format!("closed: {disposition}"), &action.by.sub));
    if feedback == Some(Feedback::Unsatisfied) {
        let follow_up = follow_up(&incident, now);
        incident.timeline.push(entry(
            now,
            format!("caller unsatisfied: follow-up {}", follow_up.id),
            BY_ROUTER,
        ));
        tx.put_incident(follow_up);
    }
    tx.put_incident(incident);
    Ok(())
}

/// The 不满意回访 follow-up of a closed incident: open, for the station to
/// call the caller back; no units are sent and no clock runs.
fn follow_up(closed: &Incident, now: Timestamp) -> Incident {
    Incident {
        ladder: Default::default(),
        requested: Vec::new(),
        callers: Vec::new(),
        hold: false,
        candidates: Vec::new(),
        merged_into: None,
        merged: Vec::new(),
        split_from: None,
        id: bus::model::new_id(),
        version: 0,
        status: IncidentStatus::New,
        priority: closed.priority,
        score: closed.score,
        kind: closed.kind.clone(),
        location: closed.location.clone(),
        jurisdiction: closed.jurisdiction.clone(),
        cell: closed.cell.clone(),
        desks: closed.desks.clone(),
        events: Vec::new(),
        repeat_count: 0,
        diverted_to: None,
        created_at: now,
        updated_at: now,
        deadlines: None,
        sla: not_applicable(),
        units: Vec::new(),
        timeline: vec![entry(
            now,
            format!("follow-up of {}: the caller was unsatisfied", closed.id),
            BY_ROUTER,
        )],
        text: closed.text.clone(),
        disposition: None,
        feedback: None,
        follow_up_of: Some(closed.id.clone()),
        // The follow-up is a phone call back, not a place to go: what was
        // wrong with the original call stays on the original.
        flags: Vec::new(),
    }
}
