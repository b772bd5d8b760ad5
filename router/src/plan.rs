//! Dispatch decided in one pass, purely: given an incident and the units
//! that could take its tasks (as the transaction read them), which units
//! get which tasks, and what is still missing. `dispatch` reads the
//! candidates once, asks for a plan and carries it out; nothing here does
//! IO or reads the clock.

use std::collections::HashSet;

use bus::model::{
    Incident, IncidentStatus, Task, TaskKind, TaskStatus, Timestamp, Unit, UnitRole, UnitStatus, UnitType,
};

use crate::engine::{Candidate, Engine};

/// One task to issue: the unit (as read, still available) and its task.
#[derive(Debug, Clone)]
pub struct Issue {
    pub unit: Unit,
    pub task: Task,
    pub role: UnitRole,
    pub eta_s: u32,
    /// Predicted to arrive before the incident's arrive deadline.
    pub in_time: bool,
}

/// What an incident's top-up decided.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub issues: Vec<Issue>,
    /// Why units are missing, when they are.
    pub shortfall: Option<String>,
}

/// Units working on (or done with) an incident: not cancelled.
pub fn working_units(incident: &Incident) -> usize {
    incident
        .units
        .iter()
        .filter(|u| u.status.is_open() || u.status == TaskStatus::Cleared)
        .count()
}

/// A police incident with a clock that has fewer units than it needs:
/// none at all, fewer than its priority's reinforce target
/// (`reinforce_units`, for every priority), or a unit type an operator
/// asked for that is still missing. An unlocated
/// one waits for a person to place it, not for a unit: retrying it would
/// take the retry slots of located incidents waiting for units.
pub fn needs_units(engine: &Engine, incident: &Incident) -> bool {
    if crate::incident::is_unlocated(incident)
        || incident.deadlines.is_none()
        || incident.diverted_to.is_some()
        || !incident.status.is_open()
        || incident.status == IncidentStatus::Resolved
    {
        return false;
    }
    let needed = engine.reinforce_units(&incident.jurisdiction, incident.priority) as usize;
    working_units(incident) < needed || !incident.requested.is_empty()
}

impl Engine {
    /// Up to `count` tasks of `kind`, for the best of `candidates` (nearest
    /// first) that are available and not stale, of `unit_type` when one is
    /// asked for, and have not worked on this incident; best first.
    #[allow(clippy::too_many_arguments)]
    pub fn pick(
        &self,
        incident: &Incident,
        kind: TaskKind,
        role: UnitRole,
        unit_type: Option<UnitType>,
        count: usize,
        candidates: &[Candidate],
        now: Timestamp,
    ) -> Vec<Issue> {
        let tried: HashSet<&str> = incident.units.iter().map(|u| u.unit.as_str()).collect();
        let eligible: Vec<Candidate> = candidates
            .iter()
            .filter(|c| {
                !tried.contains(c.unit.id.as_str())
                    && c.unit.status == UnitStatus::Available
                    && !self.is_stale(&c.unit, now)
                    && unit_type.is_none_or(|t| t == c.unit.unit_type)
            })
            .take(self.config().router.candidate_units.max(count))
            .cloned()
            .collect();
        self.rank(incident, eligible, now)
            .into_iter()
            .take(count)
            .map(|ranked| Issue {
                task: self.new_task(incident, &ranked.unit.id, kind, now),
                unit: ranked.unit,
                role,
                eta_s: ranked.eta_s,
                in_time: ranked.in_time,
            })
            .collect()
    }

    /// The units an incident still needs: a primary when none works on it,
    /// and reinforcements up to its priority's reinforce target, each unit
    /// once.
    pub fn plan_top_up(&self, incident: &Incident, candidates: &[Candidate], now: Timestamp) -> Plan {
        let mut plan = Plan::default();
        let mut working = working_units(incident);
        if working == 0 {
            plan.issues = self.pick(incident, TaskKind::Respond, UnitRole::Primary, None, 1, candidates, now);
            if plan.issues.is_empty() {
                plan.shortfall = Some("none for the primary task".to_owned());
                return plan;
            }
            working += 1;
        }
        let needed = self.reinforce_units(&incident.jurisdiction, incident.priority) as usize;
        if working < needed {
            let missing = needed - working;
            let chosen: HashSet<&str> = plan.issues.iter().map(|i| i.unit.id.as_str()).collect();
            let rest: Vec<Candidate> = candidates
                .iter()
                .filter(|c| !chosen.contains(c.unit.id.as_str()))
                .cloned()
                .collect();
            let reinforcements = self.pick(
                incident,
                TaskKind::Reinforce,
                UnitRole::Reinforcement,
                None,
                missing,
                &rest,
                now,
            );
            if reinforcements.len() < missing {
                plan.shortfall = Some(format!(
                    "only {} of {needed} units available",
                    working + reinforcements.len()
                ));
            }
            plan.issues.extend(reinforcements);
        }
        plan
    }
}
