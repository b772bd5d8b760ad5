//! `update`: an operator corrects an incident — its priority (with a
//! reason, recorded next to the router's own scoring), kind, text or
//! location. The pending deadlines follow a new priority (a lower one
//! loosens them); a raised priority or a first location may need units,
//! which are sent; the units already on it get a task update (see
//! `briefing`). The jurisdiction stays: moving an incident to another
//! station is `divert`'s or a new incident's business.

use bus::model::{Action, Command, Timestamp};

use super::{Fail, open_incident, reject, valid_position};
use crate::dispatch::top_up;
use crate::engine::Engine;
use crate::incident::{add_desk, derive_status, entry};
use crate::plan::needs_units;
use crate::tx::Tx;

/// Longest text quoted on the timeline.
const QUOTE_CHARS: usize = 80;

pub(super) async fn apply(tx: &mut Tx<'_>, engine: &Engine, action: &Action, now: Timestamp) -> Result<(), Fail> {
    let Command::Update {
        incident: id,
        priority,
        kind,
        text,
        location,
        reason,
    } = &action.command
    else {
        return Err(reject(None, "not an update"));
    };
    let mut incident = open_incident(tx, id).await?;
    if priority.is_none() && kind.is_none() && text.is_none() && location.is_none() {
        return Err(reject(Some(id), "nothing to update"));
    }
    let by = &action.by.sub;
    let reason = reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
    if let Some(p) = *priority
        && p != incident.priority
    {
        if !(1..=4).contains(&p) {
            return Err(reject(Some(id), format!("priority {p} is not in 1..=4")));
        }
        let Some(reason) = reason else {
            return Err(reject(Some(id), "a priority change needs a reason"));
        };
        incident.timeline.push(entry(
            now,
            format!(
                "priority P{} -> P{p}: {reason} (router's score {})",
                incident.priority, incident.score
            ),
            by,
        ));
        let loosen = p > incident.priority;
        incident.priority = p;
        if p == 1 {
            add_desk(&mut incident.desks, &engine.config().router.command_desk);
        }
        engine.retarget(&mut incident, loosen);
    }
    if let Some(kind) = kind.as_deref().map(str::trim).filter(|k| *k != incident.kind) {
        if kind.is_empty() {
            return Err(reject(Some(id), "kind must not be empty"));
        }
        incident
            .timeline
            .push(entry(now, format!("kind {} -> {kind}", incident.kind), by));
        kind.clone_into(&mut incident.kind);
    }
    if let Some(text) = text {
        let quoted: String = text.chars().take(QUOTE_CHARS).collect();
        incident.timeline.push(entry(now, format!("text: {quoted}"), by));
        incident.text = Some(text.clone());
    }
    if let Some(location) = location {
        if !valid_position(location.lat, location.lon) {
            return Err(reject(
                Some(id),
                format!("position {},{} is out of range", location.lat, location.lon),
            ));
        }
        let placed = engine.city().place(location.lat, location.lon);
        let mut what = format!("location set to {:.5},{:.5}", location.lat, location.lon);
        if let Some(address) = &location.address {
            what.push_str(&format!(" ({address})"));
        }
        if placed.jurisdiction != incident.jurisdiction {
            what.push_str(&format!(
                "; it lies in {}, the incident stays with {} (divert to hand it over)",
                placed.jurisdiction, incident.jurisdiction
            ));
        }
        incident.timeline.push(entry(now, what, by));
        incident.location = Some(location.clone());
        incident.cell = placed.cell;
    }
    if needs_units(engine, &incident) || engine.held(&incident) {
        top_up(tx, engine, &mut incident, now).await?;
    }
    derive_status(&mut incident);
    tx.put_incident(incident);
    Ok(())
}
