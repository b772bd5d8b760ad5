//! The escalation ladder (issue #22): a breached 1-3-5 stage is not
//! escalated once and forgotten. At the deadline the stage climbs its
//! first rung, then one more every `ladder.interval_s` (by priority) while
//! its condition still does not hold — nobody acknowledged (respond),
//! nobody on scene (arrive), too few on scene (reinforce) — until it holds
//! or an operator takes the incident over with `hold`:
//!
//! - respond: the tasks still not acknowledged go to the next units (or,
//!   with no task at all, the router tries again to find one);
//! - arrive: the nearest available unit is sent as backup;
//! - reinforce: units are requested until enough are on scene.
//!
//! Each rung is an escalation to the supervisor desk with its reason, and
//! its number and time are kept on the incident (`ladder`), so a router
//! that takes the incident over climbs on from there. Rungs past
//! `ladder.dispatching_rungs` only alarm; an incident whose dispatch is
//! held for an operator (recommend mode) gets the alarm and the ranking,
//! never a unit sent by the ladder.

use bus::model::{EscalationKind, Incident, Rung, SlaState, Stage, TaskKind, TaskStatus, Timestamp, UnitRole};

use crate::dispatch::{dispatch, escalation, redispatch, top_up};
use crate::engine::Engine;
use crate::incident::{BY_ROUTER, entry, on_scene_count};
use crate::tx::Tx;

/// Whether the stage's condition holds now (met late, or never breached).
fn holds(engine: &Engine, incident: &Incident, stage: Stage) -> bool {
    match stage {
        Stage::Respond => incident.units.iter().any(|u| {
            matches!(
                u.status,
                TaskStatus::Acknowledged | TaskStatus::EnRoute | TaskStatus::OnScene | TaskStatus::Cleared
            )
        }),
        Stage::Arrive => on_scene_count(incident) >= 1,
        Stage::Reinforce => {
            on_scene_count(incident) >= engine.reinforce_units(&incident.jurisdiction, incident.priority)
        }
    }
}

/// The breached stages whose next rung is due at `now`.
pub fn due(engine: &Engine, incident: &Incident, now: Timestamp) -> Vec<Stage> {
    if incident.hold || !incident.status.is_open() || incident.status == bus::model::IncidentStatus::Resolved {
        return Vec::new();
    }
    let interval = i64::try_from(engine.config().ladder.interval_s(incident.priority)).unwrap_or(i64::MAX);
    Stage::ALL
        .into_iter()
        .filter(|stage| {
            incident.sla.get(*stage) == SlaState::Breached
                && !holds(engine, incident, *stage)
                && incident
                    .ladder
                    .get(*stage)
                    .is_some_and(|last| (now - last.at).num_seconds() >= interval)
        })
        .collect()
}

/// Climbs the next rung of `stage`: sends what the rung sends and alarms
/// the supervisor desk.
pub(crate) async fn climb(
    tx: &mut Tx<'_>,
    engine: &Engine,
    incident: &mut Incident,
    stage: Stage,
    now: Timestamp,
) -> anyhow::Result<()> {
    let rung = incident.ladder.get(stage).map_or(1, |r| r.rung + 1);
    incident.ladder.set(stage, Rung { rung, at: now });
    let sends = rung <= engine.config().ladder.dispatching_rungs && !engine.held(incident);
    let before = incident.units.len();
    let done = if !sends {
        "supervisor alarmed".to_owned()
    } else {
        match stage {
            Stage::Respond => {
                let waiting = incident.units.iter().any(|u| u.status == TaskStatus::Issued);
                if waiting {
                    redispatch(tx, engine, incident, now).await?;
                } else {
                    top_up(tx, engine, incident, now).await?;
                }
                sent(incident, before, "re-dispatched to")
            }
            Stage::Arrive => {
                dispatch(
                    tx,
                    engine,
                    incident,
                    TaskKind::Reinforce,
                    UnitRole::Reinforcement,
                    None,
                    1,
                    now,
                )
                .await?;
                sent(incident, before, "backup sent:")
            }
            Stage::Reinforce => {
                let missing = engine
                    .reinforce_units(&incident.jurisdiction, incident.priority)
                    .saturating_sub(on_scene_count(incident)) as usize;
                let coming = incident
                    .units
                    .iter()
                    .filter(|u| u.status.is_open() && u.status != TaskStatus::OnScene)
                    .count();
                // Units still on the way count; from the second rung one
                // more is asked for even so (they are late).
                let count = missing.saturating_sub(coming).max(usize::from(rung > 1));
                if count == 0 {
                    format!("{coming} unit(s) on the way")
                } else {
                    dispatch(
                        tx,
                        engine,
                        incident,
                        TaskKind::Reinforce,
                        UnitRole::Reinforcement,
                        None,
                        count,
                        now,
                    )
                    .await?;
                    sent(incident, before, "reinforcements requested:")
                }
            }
        }
    };
    let what = format!("{} still not met: rung {rung}, {done}", stage.as_str());
    incident.timeline.push(entry(now, what.clone(), BY_ROUTER));
    let desks = vec![engine.config().router.supervisor_desk.clone()];
    let mut alarm = escalation(incident, EscalationKind::SlaBreach, now, what, desks);
    alarm.stage = Some(stage);
    // One id per rung: a replayed step publishes the same escalation.
    alarm.id = format!("ladder:{}:{}:{rung}", incident.id, stage.as_str());
    tx.escalate(alarm);
    metrics::counter!(bus::metrics::ROUTER_LADDER_RUNGS_TOTAL, "stage" => stage.as_str()).increment(1);
    Ok(())
}

/// What a rung sent, for its timeline line.
fn sent(incident: &Incident, before: usize, verb: &str) -> String {
    let units: Vec<&str> = incident.units[before.min(incident.units.len())..]
        .iter()
        .filter(|u| u.status == TaskStatus::Issued)
        .map(|u| u.unit.as_str())
        .collect();
    if units.is_empty() {
        "no unit available".to_owned()
    } else {
        format!("{verb} {}", units.join(", "))
    }
}
