//! `merge`: two incidents turn out to be one matter. Incident `from` (B) is
//! merged into `incident` (A): B's events, callers, flags, desks and open
//! units move to A (a unit keeps its task, which now serves A: its unit is
//! told, `changes: merged`), A takes the higher priority, and B's timeline
//! is copied onto A's. B is closed with disposition "merged into A" and a
//! link both ways (`merged_into`, `merged`). Both must be open and owned by
//! this router instance.

use bus::model::{Action, IncidentStatus, Timestamp, UnitRole, add_flag};

use super::{Fail, open_incident, owned_incident, reject};
use crate::dispatch::top_up;
use crate::engine::Engine;
use crate::incident::{add_caller, add_desk, derive_status, entry, pending_to_na};
use crate::plan::needs_units;
use crate::tx::Tx;

pub(super) async fn apply(
    tx: &mut Tx<'_>,
    engine: &Engine,
    action: &Action,
    into: &str,
    from: &str,
    now: Timestamp,
) -> Result<(), Fail> {
    if into == from {
        return Err(reject(Some(into), "an incident cannot be merged into itself"));
    }
    let mut a = open_incident(tx, into).await?;
    let mut b = owned_incident(tx, from).await?;
    if !b.status.is_open() {
        return Err(reject(Some(into), format!("incident {from} is {}", b.status.as_str())));
    }
    let by = &action.by.sub;
    let short = |id: &str| {
        id.chars()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<String>()
    };

    for event in &b.events {
        if !a.events.contains(event) {
            a.events.push(event.clone());
        }
    }
    a.repeat_count = a.repeat_count.saturating_add(b.repeat_count);
    for caller in &b.callers {
        add_caller(&mut a.callers, caller);
    }
    for flag in &b.flags {
        add_flag(&mut a.flags, *flag);
    }
    for desk in b.desks.iter().rev() {
        add_desk(&mut a.desks, desk);
    }
    a.score = a.score.max(b.score);
    if a.location.is_none() {
        a.location.clone_from(&b.location);
        a.cell.clone_from(&b.cell);
    }
    if a.text.is_none() {
        a.text.clone_from(&b.text);
    }
    if b.priority < a.priority {
        a.timeline.push(entry(
            now,
            format!(
                "priority P{} -> P{}: merged incident {from} is P{}",
                a.priority, b.priority, b.priority
            ),
            by,
        ));
        a.priority = b.priority;
        engine.retarget(&mut a, false);
    }
    let has_primary = a
        .units
        .iter()
        .any(|u| u.role == UnitRole::Primary && u.status.is_open());
    let (moving, staying): (Vec<_>, Vec<_>) = std::mem::take(&mut b.units)
        .into_iter()
        .partition(|u| u.status.is_open());
    b.units = staying;
    let moved: Vec<String> = moving.iter().map(|u| u.unit.clone()).collect();
    for mut u in moving {
        if has_primary && u.role == UnitRole::Primary {
            u.role = UnitRole::Reinforcement;
        }
        a.units.push(u);
    }
    a.merged.push(b.id.clone());
    a.timeline.push(entry(
        now,
        format!(
            "merged from {from}: {} event(s), {} caller(s), units {}",
            b.events.len(),
            b.callers.len(),
            if moved.is_empty() {
                "none".to_owned()
            } else {
                moved.join(", ")
            }
        ),
        by,
    ));
    let tag = short(&b.id);
    for line in &b.timeline {
        let mut copied = line.clone();
        copied.what = format!("[{tag}] {}", line.what);
        a.timeline.push(copied);
    }

    b.timeline.push(entry(now, format!("merged into {into}"), by));
    b.status = IncidentStatus::Closed;
    b.disposition = Some(format!("merged into {into}"));
    b.merged_into = Some(a.id.clone());
    b.candidates.clear();
    pending_to_na(&mut b);

    if needs_units(engine, &a) || engine.held(&a) {
        top_up(tx, engine, &mut a, now).await?;
    }
    derive_status(&mut a);
    tx.put_incident(b);
    tx.put_incident(a);
    Ok(())
}
