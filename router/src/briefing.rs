//! A task's briefing: what its unit must know of the incident (priority,
//! kind, text, place, deadlines, caller, the other units). A task is a
//! projection of its incident, so every time an incident is staged its
//! open tasks are briefed again, and a task whose briefing changed gets a
//! new version naming what changed (`changes`): the unit driving to a P3
//! theft learns that it is now a P1 knife robbery. Pure: no IO.
//!
//! This must stay the only place that copies incident fields onto a task,
//! or a new task and an updated one could disagree.

use bus::model::{Incident, Location, Task};

/// Longest incident text copied into a task's summary.
const SUMMARY_TEXT_CHARS: usize = 120;

/// The summary a unit's screen shows: priority, kind and the start of the
/// text.
pub fn summary(incident: &Incident) -> String {
    let mut summary = format!("P{} {}", incident.priority, incident.kind);
    if let Some(text) = incident.text.as_deref().filter(|t| !t.is_empty()) {
        summary.push_str(": ");
        summary.extend(text.chars().take(SUMMARY_TEXT_CHARS));
    }
    summary
}

/// Copies the incident's briefing onto `task` and returns what changed,
/// by name (`merged`, `priority`, `kind`, `text`, `location`, `deadlines`,
/// `caller`, `units`). `dispatch_point` is where units are sent when the incident
/// has no location of its own (an alert placed by its area): the task keeps
/// it rather than losing its destination.
pub fn brief(task: &mut Task, incident: &Incident, dispatch_point: Option<(f64, f64)>) -> Vec<String> {
    let mut changes = Vec::new();
    let mut set = |name: &str, changed: bool| {
        if changed {
            changes.push(name.to_owned());
        }
    };
    // A task of a merged incident now serves the incident it was merged
    // into: the unit keeps its task and learns where it belongs.
    set("merged", task.incident != incident.id);
    task.incident.clone_from(&incident.id);
    task.jurisdiction.clone_from(&incident.jurisdiction);
    let priority_changed = task.priority != incident.priority;
    let kind_changed = task.incident_kind != incident.kind;
    set("priority", priority_changed);
    task.priority = incident.priority;
    set("kind", kind_changed);
    task.incident_kind.clone_from(&incident.kind);
    // The summary starts with priority and kind: it names a change of its
    // own only when the text changed.
    let summary = summary(incident);
    set("text", task.summary != summary && !priority_changed && !kind_changed);
    task.summary = summary;
    let location = incident.location.clone().or_else(|| {
        dispatch_point.map(|(lat, lon)| Location {
            lat,
            lon,
            address: None,
        })
    });
    set("location", task.location != location);
    task.location = location;
    set("deadlines", task.deadlines != incident.deadlines);
    task.deadlines.clone_from(&incident.deadlines);
    let caller = incident.callers.first().cloned();
    set("caller", task.caller != caller);
    task.caller = caller;
    let others: Vec<String> = incident
        .units
        .iter()
        .filter(|u| u.status.is_open() && u.task != task.id)
        .map(|u| u.unit.clone())
        .collect();
    set("units", task.other_units != others);
    task.other_units = others;
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::model::{Caller, IncidentUnit, TaskStatus, UnitRole};

    fn incident() -> Incident {
        serde_json::from_value(serde_json::json!({
            "id": "i1", "version": 1, "status": "dispatched", "priority": 3, "score": 40, "kind": "theft",
            "location": {"lat": 36.66, "lon": 117.0}, "jurisdiction": "lixia", "cell": null, "desks": [],
            "events": ["e1"], "repeat_count": 1, "diverted_to": null, "created_at": "2026-11-22T06:00:00Z",
            "updated_at": "2026-11-22T06:00:00Z", "deadlines": null,
            "sla": {"respond": "pending", "arrive": "pending", "reinforce": "pending"},
            "units": [{"unit": "u1", "task": "t1", "role": "primary", "status": "issued", "eta_s": 60}],
            "timeline": [], "text": "bike stolen"
        }))
        .unwrap()
    }

    fn task_of(incident: &Incident) -> Task {
        let mut task: Task = serde_json::from_value(serde_json::json!({
            "id": "t1", "incident": "i1", "unit": "u1", "version": 1, "kind": "respond", "priority": 0,
            "location": null, "summary": "", "issued_at": "2026-11-22T06:00:00Z", "deadlines": null,
            "status": "issued", "jurisdiction": "lixia", "updated_at": "2026-11-22T06:00:00Z"
        }))
        .unwrap();
        brief(&mut task, incident, None);
        task
    }

    #[test]
    fn an_unchanged_incident_changes_nothing() {
        let incident = incident();
        let mut task = task_of(&incident);
        assert!(brief(&mut task, &incident, None).is_empty());
        assert_eq!(task.summary, "P3 theft: bike stolen");
        assert_eq!(task.incident_kind, "theft");
    }

    #[test]
    fn a_repeat_call_that_raises_the_priority_names_each_change() {
        let mut incident = incident();
        let mut task = task_of(&incident);
        incident.priority = 1;
        incident.kind = "robbery".into();
        incident.callers.push(Caller {
            phone: Some("13800000000".into()),
            name: None,
        });
        incident.units.push(IncidentUnit {
            unit: "u2".into(),
            task: "t2".into(),
            role: UnitRole::Reinforcement,
            status: TaskStatus::Issued,
            eta_s: 90,
        });
        let changes = brief(&mut task, &incident, None);
        assert_eq!(changes, ["priority", "kind", "caller", "units"]);
        assert_eq!(task.priority, 1);
        assert_eq!(task.other_units, ["u2"]);
        assert_eq!(task.summary, "P1 robbery: bike stolen");
    }

    #[test]
    fn a_moved_incident_moves_its_units_and_a_new_text_is_named() {
        let mut incident = incident();
        let mut task = task_of(&incident);
        incident.location = Some(Location {
            lat: 36.67,
            lon: 117.01,
            address: Some("经十路 1 号".into()),
        });
        incident.text = Some("suspect left on foot".into());
        assert_eq!(brief(&mut task, &incident, None), ["text", "location"]);
        assert_eq!(task.location.unwrap().lat, 36.67);
    }
}
