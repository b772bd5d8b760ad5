//! `status`: a unit reports what it is doing. `available`, `busy`,
//! `off_duty` and `out_of_service` change the unit (refused while it still
//! has an open task, but for `out_of_service`: a unit that broke down on
//! the way is taken off its task, and another unit sent at once); `busy`
//! and `out_of_service` carry the unit's reason. An unknown unit reporting
//! `available` with a position comes on duty. `en_route`, `on_scene` and
//! `cleared` move its task, and with it the incident's 1-3-5 stages. A
//! note goes on the incident's timeline.

use bus::model::{Action, Command, ReportedStatus, TaskStatus, Timestamp, Unit, UnitStatus, UnitType};

use super::{Fail, move_task, open_incident, reject, unit_task, valid_position};
use crate::dispatch::withdraw;
use crate::engine::Engine;
use crate::incident::derive_status;
use crate::incident::entry;
use crate::tx::Tx;

pub(super) async fn apply(
    tx: &mut Tx<'_>,
    engine: &Engine,
    action: &Action,
    at: Timestamp,
    now: Timestamp,
) -> Result<(), Fail> {
    let Command::Status {
        status,
        task,
        lat,
        lon,
        note,
        unit_type,
        reason,
    } = &action.command
    else {
        return Err(reject(None, "not a status report"));
    };
    let position = lat.zip(*lon);
    let unit_id = action
        .by
        .unit
        .clone()
        .ok_or_else(|| reject(None, "a status report needs the unit it is about"))?;
    if let Some((lat, lon)) = position
        && !valid_position(lat, lon)
    {
        return Err(reject(None, format!("position {lat},{lon} is out of range")));
    }
    let existing = tx.unit(&unit_id).await?;
    match status {
        ReportedStatus::Available | ReportedStatus::Busy | ReportedStatus::OffDuty | ReportedStatus::OutOfService => {
            let next = match status {
                ReportedStatus::Available => UnitStatus::Available,
                ReportedStatus::Busy => UnitStatus::Busy,
                ReportedStatus::OutOfService => UnitStatus::OutOfService,
                _ => UnitStatus::OffDuty,
            };
            let reason = reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
            if next == UnitStatus::OutOfService && reason.is_none() {
                return Err(reject(None, "out_of_service needs a reason"));
            }
            let mut unit = match existing {
                Some(unit) => unit,
                None if *status == ReportedStatus::Available => {
                    let Some((lat, lon)) = position else {
                        return Err(reject(
                            None,
                            format!("unknown unit {unit_id}: report available with a position to register"),
                        ));
                    };
                    register(engine, &unit_id, *unit_type, lat, lon, now)
                }
                None => return Err(reject(None, format!("unknown unit {unit_id}"))),
            };
            if let Some(task) = unit.task.clone()
                && let Some(t) = tx.task(&task).await?
                && t.status.is_open()
            {
                if next != UnitStatus::OutOfService {
                    return Err(reject(
                        Some(&t.incident),
                        format!(
                            "unit {unit_id} still has task {task} ({}); clear it first",
                            t.status.as_str()
                        ),
                    ));
                }
                let mut incident = open_incident(tx, &t.incident).await?;
                let why = format!("{unit_id} out of service: {}", reason.unwrap_or_default());
                withdraw(tx, engine, &mut incident, &t, &why, now).await?;
                derive_status(&mut incident);
                tx.put_incident(incident);
                // The withdrawal made the unit available; it is not.
                unit = tx.unit(&unit_id).await?.unwrap_or(unit);
            }
            unit.status = next;
            unit.task = None;
            unit.reason = match next {
                UnitStatus::Busy | UnitStatus::OutOfService => reason.map(str::to_owned),
                _ => None,
            };
            if let Some((lat, lon)) = position {
                unit.lat = Some(lat);
                unit.lon = Some(lon);
            }
            unit.at = now;
            tx.put_unit(unit);
            Ok(())
        }
        ReportedStatus::EnRoute | ReportedStatus::OnScene | ReportedStatus::Cleared => {
            let unit = existing.ok_or_else(|| reject(None, format!("unknown unit {unit_id}")))?;
            let task_id = task
                .clone()
                .or_else(|| unit.task.clone())
                .ok_or_else(|| reject(None, format!("unit {unit_id} has no task to report on")))?;
            let task = unit_task(tx, action, &task_id).await?;
            if task.unit != unit_id {
                return Err(reject(
                    Some(&task.incident),
                    format!("task {task_id} is not unit {unit_id}'s"),
                ));
            }
            let (next, unit_status) = match status {
                ReportedStatus::EnRoute => (TaskStatus::EnRoute, UnitStatus::EnRoute),
                ReportedStatus::OnScene => (TaskStatus::OnScene, UnitStatus::OnScene),
                _ => (TaskStatus::Cleared, UnitStatus::Available),
            };
            if let Some((lat, lon)) = position {
                let mut moved = unit.clone();
                moved.lat = Some(lat);
                moved.lon = Some(lon);
                tx.put_unit(moved);
            }
            move_task(tx, engine, action, task, next, Some(unit_status), at, now).await?;
            if let Some(note) = note.as_deref().filter(|n| !n.is_empty())
                && let Some(incident) = tx.last_incident()
            {
                incident
                    .timeline
                    .push(entry(now, format!("note: {note}"), &action.by.sub));
            }
            Ok(())
        }
    }
}

/// A unit not in the Store comes on duty: roster type and jurisdiction
/// when it is listed, else the type it sent and where it is.
fn register(engine: &Engine, id: &str, unit_type: Option<UnitType>, lat: f64, lon: f64, now: Timestamp) -> Unit {
    let roster = engine.config().units.iter().find(|u| u.id == id);
    tracing::info!(unit = %id, rostered = roster.is_some(), "unit registered");
    Unit {
        reason: None,
        id: id.to_owned(),
        unit_type: roster.map(|r| r.unit_type).or(unit_type).unwrap_or(UnitType::PatrolCar),
        jurisdiction: roster.map_or_else(
            || engine.city().place(lat, lon).jurisdiction,
            |r| r.jurisdiction.clone(),
        ),
        status: UnitStatus::Available,
        lat: Some(lat),
        lon: Some(lon),
        at: now,
        task: None,
        version: 0,
        speed_kmh: None,
        name: roster.map(|r| r.name.clone()),
    }
}
