//! The api's local view of what the router publishes: every task's latest
//! version (the open tasks of each unit are a terminal's snapshot), recent
//! incidents (closed ones are no longer in the Store's open set), when
//! each incident reached the 1-3-5 stages (for response-time percentiles)
//! and every unit, whose position the positions topic moves between the
//! router's versions (the fan-out pushes the moved unit as a unit push).
//!
//! It is rebuilt from the topics at start and only ever read by requests;
//! it never writes the Store (only the router does). Closed items are kept
//! up to a bound so memory stays flat. Locks are never held across `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bus::model::{Incident, PositionReport, Task, TaskStatus, Timestamp, Unit};

/// How many closed tasks and closed incidents are remembered.
pub const CLOSED_KEPT: usize = 20_000;

/// When an incident reached each stage, as seen from its tasks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageTimes {
    /// First task signed for.
    pub acknowledged: Option<Timestamp>,
    /// Each unit's first report on scene, in order.
    pub on_scene: Vec<(String, Timestamp)>,
}

#[derive(Debug, Default)]
struct Inner {
    tasks: HashMap<String, Task>,
    closed_tasks: VecDeque<String>,
    incidents: HashMap<String, Incident>,
    closed_incidents: VecDeque<String>,
    stages: HashMap<String, StageTimes>,
    /// Every unit the router published (bounded by the roster).
    units: HashMap<String, Unit>,
}

#[derive(Debug, Default)]
pub struct View {
    inner: Mutex<Inner>,
}

impl View {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a task version; an older version than the one held is ignored.
    pub fn apply_task(&self, task: Task) {
        let mut inner = self.lock();
        if inner.tasks.get(&task.id).is_some_and(|t| t.version >= task.version) {
            return;
        }
        let stages = inner.stages.entry(task.incident.clone()).or_default();
        if task.status != TaskStatus::Cancelled && task.status != TaskStatus::Issued && stages.acknowledged.is_none() {
            stages.acknowledged = Some(task.updated_at);
        }
        if matches!(task.status, TaskStatus::OnScene) && !stages.on_scene.iter().any(|(u, _)| *u == task.unit) {
            stages.on_scene.push((task.unit.clone(), task.updated_at));
        }
        if !task.status.is_open() {
            inner.closed_tasks.push_back(task.id.clone());
            while inner.closed_tasks.len() > CLOSED_KEPT {
                if let Some(old) = inner.closed_tasks.pop_front()
                    && inner.tasks.get(&old).is_some_and(|t| !t.status.is_open())
                {
                    inner.tasks.remove(&old);
                }
            }
        }
        inner.tasks.insert(task.id.clone(), task);
    }

    pub fn apply_incident(&self, incident: Incident) {
        let mut inner = self.lock();
        if inner
            .incidents
            .get(&incident.id)
            .is_some_and(|i| i.version >= incident.version)
        {
            return;
        }
        if !incident.status.is_open() {
            inner.closed_incidents.push_back(incident.id.clone());
            while inner.closed_incidents.len() > CLOSED_KEPT {
                if let Some(old) = inner.closed_incidents.pop_front()
                    && inner.incidents.get(&old).is_some_and(|i| !i.status.is_open())
                {
                    inner.incidents.remove(&old);
                    inner.stages.remove(&old);
                }
            }
        }
        inner.incidents.insert(incident.id.clone(), incident);
    }

    /// Takes a unit version from the units topic (the router's): its
    /// status and task win unless the view holds a higher version; its type
    /// and jurisdiction always win. Its position does
    /// only when it is not older than the one held: a report the router had
    /// not read yet when it wrote this version stays.
    pub fn apply_unit(&self, mut unit: Unit) {
        let mut inner = self.lock();
        if let Some(held) = inner.units.get(&unit.id)
            && held.version > unit.version
        {
            // An older record of the router's (a take-over republishes
            // what it committed): what the unit does stays as held.
            unit.status = held.status;
            unit.task.clone_from(&held.task);
            unit.reason.clone_from(&held.reason);
            unit.version = held.version;
        }
        if let Some(held) = inner.units.get(&unit.id)
            && held.at > unit.at
        {
            unit.lat = held.lat;
            unit.lon = held.lon;
            unit.speed_kmh = held.speed_kmh;
            unit.at = held.at;
        }
        inner.units.insert(unit.id.clone(), unit);
    }

    /// The unit as a position report leaves it: position, speed and `at`
    /// from the report, everything else (status, task) as held. `None` for
    /// a unit the view does not know (the router registers units) or a
    /// report older than the unit's `at`. Changes nothing: the caller
    /// applies the result with [`View::apply_unit`], like any unit version.
    pub fn moved_unit(&self, report: &PositionReport) -> Option<Unit> {
        let inner = self.lock();
        let held = inner.units.get(&report.unit)?;
        if report.at < held.at {
            return None;
        }
        Some(Unit {
            lat: Some(report.lat),
            lon: Some(report.lon),
            speed_kmh: report.speed_kmh,
            at: report.at,
            ..held.clone()
        })
    }

    pub fn task(&self, id: &str) -> Option<Task> {
        self.lock().tasks.get(id).cloned()
    }

    /// The unit's open tasks, oldest first.
    pub fn open_tasks_of(&self, unit: &str) -> Vec<Task> {
        let inner = self.lock();
        let mut tasks: Vec<Task> = inner
            .tasks
            .values()
            .filter(|t| t.unit == unit && t.status.is_open())
            .cloned()
            .collect();
        tasks.sort_by_key(|t| t.issued_at);
        tasks
    }

    pub fn incident(&self, id: &str) -> Option<Incident> {
        self.lock().incidents.get(id).cloned()
    }

    pub fn incidents(&self) -> Vec<Incident> {
        self.lock().incidents.values().cloned().collect()
    }

    pub fn stage_times(&self, incident: &str) -> Option<StageTimes> {
        self.lock().stages.get(incident).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::model::{TaskKind, UnitStatus, UnitType};
    use chrono::{Duration, Utc};

    fn task(id: &str, unit: &str, version: u64, status: TaskStatus) -> Task {
        let now = Utc::now();
        Task {
            id: id.into(),
            incident: "i1".into(),
            unit: unit.into(),
            version,
            kind: TaskKind::Respond,
            priority: 1,
            location: None,
            summary: String::new(),
            issued_at: now,
            deadlines: None,
            status,
            jurisdiction: "quancheng".into(),
            updated_at: now,
            incident_kind: "theft".into(),
            caller: None,
            other_units: Vec::new(),
            changes: Vec::new(),
            reason: None,
        }
    }

    #[test]
    fn an_older_task_version_never_replaces_a_newer_one() {
        let view = View::default();
        view.apply_task(task("t1", "u1", 2, TaskStatus::Acknowledged));
        view.apply_task(task("t1", "u1", 1, TaskStatus::Issued));
        assert_eq!(view.task("t1").unwrap().status, TaskStatus::Acknowledged);
        assert_eq!(view.open_tasks_of("u1").len(), 1);
        view.apply_task(task("t1", "u1", 3, TaskStatus::Cleared));
        assert!(view.open_tasks_of("u1").is_empty());
        // A finished task is still known, so a late ack is a conflict.
        assert_eq!(view.task("t1").unwrap().status, TaskStatus::Cleared);
    }

    #[test]
    fn stage_times_record_the_first_ack_and_each_unit_on_scene() {
        let view = View::default();
        let mut ack = task("t1", "u1", 2, TaskStatus::Acknowledged);
        let first_ack = ack.updated_at;
        view.apply_task(ack.clone());
        ack.version = 3;
        ack.status = TaskStatus::OnScene;
        ack.updated_at = first_ack + chrono::Duration::seconds(90);
        view.apply_task(ack);
        view.apply_task(task("t2", "u2", 1, TaskStatus::OnScene));
        let stages = view.stage_times("i1").unwrap();
        assert_eq!(stages.acknowledged, Some(first_ack));
        assert_eq!(stages.on_scene.len(), 2);
        assert_eq!(stages.on_scene[0].0, "u1");
    }

    fn unit(at: Timestamp, status: UnitStatus) -> Unit {
        Unit {
            id: "u1".into(),
            unit_type: UnitType::PatrolCar,
            jurisdiction: "quancheng".into(),
            status,
            lat: Some(36.60),
            lon: Some(117.00),
            at,
            task: Some("t1".into()),
            version: 0,
            speed_kmh: None,
            name: None,
            reason: None,
        }
    }

    fn report(at: Timestamp, lat: f64) -> PositionReport {
        PositionReport {
            unit: "u1".into(),
            lat,
            lon: 117.05,
            at,
            speed_kmh: Some(30.0),
        }
    }

    #[test]
    fn a_report_moves_a_known_unit_and_never_changes_what_it_does() {
        let view = View::default();
        let t0 = Utc::now();
        assert_eq!(view.moved_unit(&report(t0, 36.7)), None, "unknown unit");
        view.apply_unit(unit(t0, UnitStatus::EnRoute));
        let moved = view.moved_unit(&report(t0 + Duration::seconds(5), 36.7)).unwrap();
        assert_eq!(
            (moved.lat, moved.lon, moved.speed_kmh, moved.at),
            (Some(36.7), Some(117.05), Some(30.0), t0 + Duration::seconds(5))
        );
        assert_eq!((moved.status, moved.task.as_deref()), (UnitStatus::EnRoute, Some("t1")));
        assert_eq!(
            view.lock().units["u1"].clone().lat,
            Some(36.60),
            "moved_unit changes nothing"
        );
        view.apply_unit(moved);
        assert_eq!(
            view.moved_unit(&report(t0 + Duration::seconds(1), 36.8)),
            None,
            "older report"
        );
        // The router's next version, written before it saw that report:
        // its status wins, the newer position stays.
        view.apply_unit(unit(t0 + Duration::seconds(2), UnitStatus::OnScene));
        let held = view.lock().units["u1"].clone();
        assert_eq!((held.status, held.lat), (UnitStatus::OnScene, Some(36.7)));
        assert_eq!(held.at, t0 + Duration::seconds(5));
    }

    #[test]
    fn an_older_unit_version_never_undoes_what_the_unit_does() {
        let view = View::default();
        let t0 = Utc::now();
        let mut assigned = unit(t0, UnitStatus::Assigned);
        assigned.version = 3;
        view.apply_unit(assigned);
        // A take-over republished version 2 (available), with a newer
        // position: the position is taken, the status and task are not.
        let mut older = unit(t0 + Duration::seconds(5), UnitStatus::Available);
        older.version = 2;
        older.task = None;
        older.lat = Some(36.61);
        view.apply_unit(older);
        let held = view.lock().units["u1"].clone();
        assert_eq!(
            (held.status, held.task.as_deref(), held.version),
            (UnitStatus::Assigned, Some("t1"), 3)
        );
        assert_eq!(held.lat, Some(36.61));
    }

    #[test]
    fn closed_tasks_are_forgotten_beyond_the_bound() {
        let view = View::default();
        for n in 0..CLOSED_KEPT + 10 {
            view.apply_task(task(&format!("t{n}"), "u1", 1, TaskStatus::Cancelled));
        }
        view.apply_task(task("open", "u1", 1, TaskStatus::Issued));
        assert!(view.task("t0").is_none());
        assert!(view.task(&format!("t{}", CLOSED_KEPT + 9)).is_some());
        assert_eq!(view.lock().tasks.len(), CLOSED_KEPT + 1);
    }
}
