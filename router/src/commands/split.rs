//! `split`: some of an incident's events are another matter. The chosen
//! events leave `incident` for a new incident that copies its kind,
//! priority, place and desks (an operator corrects them with `update`),
//! keeps the 1-3-5 clock of the original (its callers have waited as long)
//! and is dispatched like any new incident. Both link: `split_from`, and a
//! line on each timeline.

use bus::model::{Action, Incident, IncidentStatus, Sla, Timestamp, new_id};

use super::{Fail, open_incident, reject};
use crate::dispatch::top_up;
use crate::engine::Engine;
use crate::incident::{derive_status, entry};
use crate::tx::Tx;

pub(super) async fn apply(
    tx: &mut Tx<'_>,
    engine: &Engine,
    action: &Action,
    id: &str,
    events: &[String],
    reason: Option<&str>,
    now: Timestamp,
) -> Result<(), Fail> {
    let mut a = open_incident(tx, id).await?;
    if events.is_empty() {
        return Err(reject(Some(id), "choose the events to split off"));
    }
    if let Some(unknown) = events.iter().find(|e| !a.events.contains(e)) {
        return Err(reject(Some(id), format!("event {unknown} is not in incident {id}")));
    }
    if a.events.iter().all(|e| events.contains(e)) {
        return Err(reject(Some(id), "at least one event must stay"));
    }
    let by = &action.by.sub;
    let why = reason
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    let b_id = new_id();
    let b = Incident {
        ladder: Default::default(),
        requested: Vec::new(),
        id: b_id.clone(),
        version: 0,
        status: IncidentStatus::New,
        priority: a.priority,
        score: a.score,
        kind: a.kind.clone(),
        location: a.location.clone(),
        jurisdiction: a.jurisdiction.clone(),
        cell: a.cell.clone(),
        desks: a.desks.clone(),
        events: events.to_vec(),
        repeat_count: u32::try_from(events.len()).unwrap_or(u32::MAX),
        diverted_to: None,
        created_at: a.created_at,
        updated_at: now,
        deadlines: engine.deadlines(&a.jurisdiction, a.priority, a.created_at),
        sla: Sla::default(),
        units: Vec::new(),
        timeline: vec![entry(
            now,
            format!(
                "split from {id}{why}: {} event(s); kind, priority and place copied from it",
                events.len()
            ),
            by,
        )],
        text: a.text.clone(),
        disposition: None,
        feedback: None,
        follow_up_of: None,
        flags: a.flags.clone(),
        callers: Vec::new(),
        hold: a.hold,
        candidates: Vec::new(),
        merged_into: None,
        merged: Vec::new(),
        split_from: Some(a.id.clone()),
    };
    a.events.retain(|e| !events.contains(e));
    a.repeat_count = u32::try_from(a.events.len()).unwrap_or(u32::MAX);
    a.timeline.push(entry(
        now,
        format!("{} event(s) split into {b_id}{why}", events.len()),
        by,
    ));
    let mut b = b;
    top_up(tx, engine, &mut b, now).await?;
    derive_status(&mut b);
    tx.put_incident(a);
    tx.put_incident(b);
    Ok(())
}
