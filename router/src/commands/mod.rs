//! Commands from units and operators (the `actions` topic), one file each:
//! its doc, its validation and its `apply`. This module dispatches an
//! action to its command and, when the command cannot be applied, records
//! why as a `rejected` escalation instead (a rejected command changes
//! nothing else, and is never retried).
//!
//! A command reads and writes only through the transaction it is given.

mod ack;
mod assign;
mod close;
mod divert;
mod escalate;
mod hold;
mod merge;
mod note;
mod position;
mod refuse;
mod reopen;
mod split;
mod status;
mod update;

use bus::model::{
    Action, Command, Escalation, EscalationKind, Incident, IncidentStatus, Task, TaskStatus, Timestamp, UnitStatus,
};

use crate::engine::Engine;
use crate::incident::{BY_ROUTER, derive_status, entry};
use crate::tx::Tx;

/// Why a command was not applied.
#[derive(Debug)]
pub(crate) enum Fail {
    /// Not applicable as sent: becomes a `rejected` escalation.
    Reject { incident: Option<String>, reason: String },
    /// The Store or the broker failed: the record is retried.
    Io(anyhow::Error),
}

impl From<anyhow::Error> for Fail {
    fn from(e: anyhow::Error) -> Fail {
        Fail::Io(e)
    }
}

pub(crate) fn reject(incident: Option<&str>, reason: impl Into<String>) -> Fail {
    Fail::Reject {
        incident: incident.map(str::to_owned),
        reason: reason.into(),
    }
}

/// What applying an action did, for the caller to finish its transaction.
#[derive(Debug)]
pub(crate) enum Outcome {
    Applied,
    /// Rejected: the caller drops the transaction and stages this
    /// escalation alone.
    Rejected(Escalation),
}

/// Applies one command (not applied before) within `tx`.
pub(crate) async fn apply(
    tx: &mut Tx<'_>,
    engine: &Engine,
    action: &Action,
    now: Timestamp,
) -> anyhow::Result<Outcome> {
    let op = action.command.as_str();
    // The command's own time, but never in the future of the router.
    let at = action.at.min(now);
    let result = match &action.command {
        Command::Ack { task } => ack::apply(tx, engine, action, task, at, now).await,
        Command::Status { .. } => status::apply(tx, engine, action, at, now).await,
        Command::Position { lat, lon } => position::apply(tx, action, *lat, *lon, now).await,
        Command::Assign {
            incident,
            unit,
            mode,
            preempt,
        } => assign::apply(tx, engine, action, incident, unit, *mode, *preempt, now).await,
        Command::Divert { incident, to } => divert::apply(tx, engine, action, incident, to, now).await,
        Command::Escalate {
            incident,
            desk,
            unit_type,
            note,
        } => {
            escalate::apply(
                tx,
                engine,
                action,
                incident,
                desk.as_deref(),
                *unit_type,
                note.as_deref(),
                now,
            )
            .await
        }
        Command::Close {
            incident,
            disposition,
            feedback,
        } => close::apply(tx, action, incident, disposition, *feedback, now).await,
        Command::Update { .. } => update::apply(tx, engine, action, now).await,
        Command::Note { incident, task, text } => {
            note::apply(tx, action, incident.as_deref(), task.as_deref(), text, now).await
        }
        Command::Reopen { incident, reason } => reopen::apply(tx, engine, action, incident, reason, now).await,
        Command::Merge { incident, from } => merge::apply(tx, engine, action, incident, from, now).await,
        Command::Split {
            incident,
            events,
            reason,
        } => split::apply(tx, engine, action, incident, events, reason.as_deref(), now).await,
        Command::Hold { incident, hold, reason } => {
            hold::apply(tx, engine, action, incident, *hold, reason.as_deref(), now).await
        }
        Command::Refuse { task, reason } => refuse::apply(tx, engine, action, task, reason, now).await,
        // The api publishes a created incident as an event, never as an
        // action: one on the actions topic did not come from it.
        Command::Create { .. } => Err(reject(None, "create is sent as an event, not an action")),
    };
    match result {
        Ok(()) => {
            metrics::counter!(bus::metrics::ROUTER_ACTIONS_TOTAL, "op" => op, "outcome" => "applied").increment(1);
            Ok(Outcome::Applied)
        }
        Err(Fail::Io(e)) => Err(e),
        Err(Fail::Reject { incident, reason }) => {
            metrics::counter!(bus::metrics::ROUTER_ACTIONS_TOTAL, "op" => op, "outcome" => "rejected").increment(1);
            tracing::info!(action = %action.id, op, reason = %reason, "command rejected");
            let incident = incident.unwrap_or_default();
            let jurisdiction = match tx.incident(&incident).await {
                Ok(Some(i)) => i.jurisdiction,
                _ => action.jurisdiction.clone(),
            };
            Ok(Outcome::Rejected(Escalation {
                id: bus::model::new_id(),
                incident,
                jurisdiction,
                at: now,
                kind: EscalationKind::Rejected,
                stage: None,
                desks: Vec::new(),
                unit_type: None,
                message: format!("{op} rejected: {reason}"),
                by: action.by.sub.clone(),
                action: Some(action.id.clone()),
            }))
        }
    }
}

/// The jurisdiction of the incident a command changes, when it changes
/// one that exists (unit-only commands have none): the router that owns
/// it must apply the command.
pub(crate) async fn owner(tx: &Tx<'_>, action: &Action) -> anyhow::Result<Option<String>> {
    use bus::model::ReportedStatus;
    let task = match &action.command {
        Command::Ack { task } | Command::Refuse { task, .. } => Some(task.clone()),
        Command::Note {
            incident: None, task, ..
        } => match (task, &action.by.unit) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(unit)) => tx.unit(unit).await?.and_then(|u| u.task),
            (None, None) => None,
        },
        Command::Status {
            status: ReportedStatus::EnRoute | ReportedStatus::OnScene | ReportedStatus::Cleared,
            task,
            ..
        } => match (task, &action.by.unit) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(unit)) => tx.unit(unit).await?.and_then(|u| u.task),
            (None, None) => None,
        },
        Command::Assign { incident, .. }
        | Command::Divert { incident, .. }
        | Command::Escalate { incident, .. }
        | Command::Close { incident, .. }
        | Command::Update { incident, .. }
        | Command::Note {
            incident: Some(incident),
            ..
        }
        | Command::Reopen { incident, .. }
        | Command::Merge { incident, .. }
        | Command::Split { incident, .. }
        | Command::Hold { incident, .. } => {
            return Ok(tx.incident(incident).await?.map(|i| i.jurisdiction));
        }
        _ => None,
    };
    match task {
        Some(id) => Ok(tx.task(&id).await?.map(|t| t.jurisdiction)),
        None => Ok(None),
    }
}

/// An open incident a command may change.
async fn open_incident(tx: &Tx<'_>, id: &str) -> Result<Incident, Fail> {
    let incident = tx
        .incident(id)
        .await?
        .ok_or_else(|| reject(Some(id), format!("unknown incident {id}")))?;
    if !incident.status.is_open() {
        return Err(reject(Some(id), format!("incident is {}", incident.status.as_str())));
    }
    Ok(incident)
}

/// An incident this router may write: it exists and its jurisdiction's
/// partition is owned here (a command about two incidents, such as
/// `merge`, is keyed by one of them only).
async fn owned_incident(tx: &Tx<'_>, id: &str) -> Result<Incident, Fail> {
    let incident = tx
        .incident(id)
        .await?
        .ok_or_else(|| reject(Some(id), format!("unknown incident {id}")))?;
    let books = tx.books();
    if !books.owns(books.partition_of(&incident.jurisdiction)) {
        return Err(reject(
            Some(id),
            format!(
                "incident {id} is in jurisdiction {}, which another router instance owns",
                incident.jurisdiction
            ),
        ));
    }
    Ok(incident)
}

/// The task a unit command is about, checked to belong to the unit.
async fn unit_task(tx: &Tx<'_>, action: &Action, task_id: &str) -> Result<Task, Fail> {
    let task = tx
        .task(task_id)
        .await?
        .ok_or_else(|| reject(None, format!("unknown task {task_id}")))?;
    if let Some(unit) = &action.by.unit
        && *unit != task.unit
    {
        return Err(reject(
            Some(&task.incident),
            format!("task {task_id} belongs to unit {}, not {unit}", task.unit),
        ));
    }
    Ok(task)
}

/// Moves a task forward, its unit and its incident with it, and marks the
/// 1-3-5 stages that now hold.
#[allow(clippy::too_many_arguments)]
async fn move_task(
    tx: &mut Tx<'_>,
    engine: &Engine,
    action: &Action,
    mut task: Task,
    next: TaskStatus,
    unit_status: Option<UnitStatus>,
    at: Timestamp,
    now: Timestamp,
) -> Result<(), Fail> {
    let incident_id = task.incident.clone();
    if !task.status.can_become(next) {
        return Err(reject(
            Some(&incident_id),
            format!(
                "task {} is {}, it cannot become {}",
                task.id,
                task.status.as_str(),
                next.as_str()
            ),
        ));
    }
    let mut incident = open_incident(tx, &incident_id).await?;
    task.status = next;
    if let Some(u) = incident.units.iter_mut().find(|u| u.task == task.id) {
        u.status = next;
    }
    incident.timeline.push(entry(
        now,
        format!("unit {} {} task {}", task.unit, next.as_str(), task.id),
        &action.by.sub,
    ));
    if let Some(mut unit) = tx.unit(&task.unit).await?
        && unit.task.as_deref() == Some(task.id.as_str())
    {
        match (next, unit_status) {
            (TaskStatus::Cleared, _) => {
                unit.status = UnitStatus::Available;
                unit.task = None;
            }
            (_, Some(status)) => unit.status = status,
            _ => {}
        }
        unit.at = now;
        tx.put_unit(unit);
    }
    for stage in engine.update_sla(&mut incident, at) {
        metrics::counter!(bus::metrics::ROUTER_SLA_MET_TOTAL, "stage" => stage.as_str()).increment(1);
    }
    derive_status(&mut incident);
    if incident.status == IncidentStatus::Resolved {
        incident
            .timeline
            .push(entry(now, "resolved: every unit has cleared", BY_ROUTER));
    }
    tx.put_task(task);
    tx.put_incident(incident);
    Ok(())
}

fn valid_position(lat: f64, lon: f64) -> bool {
    (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)
}
