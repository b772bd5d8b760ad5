//! The rules on an incident's own state, shared by the engine and the
//! handlers: its status from its tasks, stages that no longer apply, its
//! timeline (entries, and trimming one that grows without end), desks. Pure:
//! no IO, no clock.

use bus::model::{Caller, Flag, Incident, IncidentStatus, Sla, SlaState, Stage, TaskStatus, TimelineEntry, Timestamp};

/// Who the router signs its own timeline entries with.
pub const BY_ROUTER: &str = "router";

/// Sets the incident's status from its tasks: the furthest open task, or
/// resolved once every task that was not cancelled is cleared. Closed and
/// diverted incidents keep their status.
pub fn derive_status(incident: &mut Incident) {
    if !incident.status.is_open() {
        return;
    }
    let rank = |s: TaskStatus| match s {
        TaskStatus::Issued => 1,
        TaskStatus::Acknowledged => 2,
        TaskStatus::EnRoute => 3,
        TaskStatus::OnScene => 4,
        TaskStatus::Cleared | TaskStatus::Cancelled => 0,
    };
    let furthest = incident.units.iter().map(|u| rank(u.status)).max().unwrap_or(0);
    let cleared = incident.units.iter().any(|u| u.status == TaskStatus::Cleared);
    incident.status = match furthest {
        4 => IncidentStatus::OnScene,
        3 => IncidentStatus::EnRoute,
        2 => IncidentStatus::Acknowledged,
        1 => IncidentStatus::Dispatched,
        _ if cleared => IncidentStatus::Resolved,
        _ => IncidentStatus::New,
    };
}

/// Units that reached the scene (and may since have cleared).
pub fn on_scene_count(incident: &Incident) -> u32 {
    incident
        .units
        .iter()
        .filter(|u| matches!(u.status, TaskStatus::OnScene | TaskStatus::Cleared))
        .count() as u32
}

/// A call nobody has placed: no location, flagged `unlocated` by ingest.
/// (An alert without coordinates is not: it was placed by its area name.)
pub fn is_unlocated(incident: &Incident) -> bool {
    incident.location.is_none() && incident.flags.contains(&Flag::Unlocated)
}

pub fn entry(at: Timestamp, what: impl Into<String>, by: impl Into<String>) -> TimelineEntry {
    TimelineEntry {
        at,
        what: what.into(),
        by: by.into(),
    }
}

/// Adds a caller unless one with the same phone (or, without phones, the
/// same name) is there: each person once, first caller first.
pub fn add_caller(callers: &mut Vec<Caller>, caller: &Caller) {
    if caller.phone.is_none() && caller.name.is_none() {
        return;
    }
    let same = |c: &Caller| match (&c.phone, &caller.phone) {
        (Some(a), Some(b)) => a == b,
        (None, None) => c.name == caller.name,
        _ => false,
    };
    if !callers.iter().any(same) {
        callers.push(caller.clone());
    }
}

pub fn add_desk(desks: &mut Vec<String>, desk: &str) {
    if !desks.iter().any(|d| d == desk) {
        desks.insert(0, desk.to_owned());
    }
}

pub fn not_applicable() -> Sla {
    Sla {
        respond: SlaState::NotApplicable,
        arrive: SlaState::NotApplicable,
        reinforce: SlaState::NotApplicable,
    }
}

/// An incident that leaves the police's hands (closed, diverted,
/// cancelled): the stages still pending no longer apply.
pub fn pending_to_na(incident: &mut Incident) {
    for stage in Stage::ALL {
        if incident.sla.get(stage) == SlaState::Pending {
            incident.sla.set(stage, SlaState::NotApplicable);
        }
    }
    if incident.status == IncidentStatus::Diverted && incident.deadlines.is_none() {
        incident.sla = not_applicable();
    }
}

/// Timeline entries kept on an incident: a matter with endless repeat calls
/// must not grow its snapshot past what the broker accepts. The first
/// entries (creation, score, desks) are always kept.
pub const MAX_TIMELINE: usize = 300;
pub(crate) const TIMELINE_HEAD: usize = 10;

/// Elides the oldest entries after the head of a timeline longer than
/// [`MAX_TIMELINE`].
pub fn trim_timeline(incident: &mut Incident, now: Timestamp) {
    let len = incident.timeline.len();
    if len <= MAX_TIMELINE {
        return;
    }
    let cut = len - MAX_TIMELINE + 1;
    incident.timeline.drain(TIMELINE_HEAD..TIMELINE_HEAD + cut);
    incident.timeline.insert(
        TIMELINE_HEAD,
        entry(now, format!("{cut} earlier entries elided"), BY_ROUTER),
    );
}
