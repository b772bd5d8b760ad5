//! May this caller send this command now, and which jurisdiction keys it?
//!
//! Operator commands need role operator or admin, an incident in one of the
//! token's jurisdictions, and an incident in the state the command needs
//! (409 otherwise). Unit commands need role unit (or admin) acting for its
//! own unit, about its own open tasks. The answer is the jurisdiction the
//! action is keyed by: the incident's (or the task's, which is its
//! incident's), so the router that owns the incident reads it first hand;
//! a unit's own state is keyed by the unit's jurisdiction.
//!
//! Reads only (the Store and the api's view); never writes.

use bus::auth::Claims;
use bus::model::{Command, Incident, IncidentStatus, ReportedStatus, Role, Task, TaskStatus};

use crate::AppState;
use crate::auth::{may_act_for_unit, may_command_incidents};
use crate::error::ApiError;

/// Names what the sender left implicit, so the router and the audit trail
/// see one definite target: a unit's `note` without a task is about its
/// current task.
pub(super) async fn complete(
    state: &AppState,
    claims: &Claims,
    command: Command,
    unit: Option<&str>,
) -> Result<Command, ApiError> {
    match command {
        Command::Note {
            incident: None,
            task: None,
            text,
        } if claims.role == Role::Unit => {
            let unit = unit_subject(claims, unit)?;
            let task = current_task(state, &unit).await?;
            Ok(Command::Note {
                incident: None,
                task: Some(task),
                text,
            })
        }
        other => Ok(other),
    }
}

/// The jurisdiction the action is keyed by, once the caller may send it.
/// `create` is not an action and never comes here.
pub(super) async fn authorise(
    state: &AppState,
    claims: &Claims,
    command: &Command,
    unit: Option<&str>,
) -> Result<String, ApiError> {
    match command {
        Command::Ack { task } => {
            let unit = unit_subject(claims, unit)?;
            let task = own_open_task(state, &unit, task)?;
            if task.status != TaskStatus::Issued {
                return Err(ApiError::Conflict("the task is already acknowledged".into()));
            }
            Ok(task.jurisdiction)
        }
        Command::Status {
            status, task, lat, lon, ..
        } => {
            let unit = unit_subject(claims, unit)?;
            if let Some(task) = task {
                let task = own_open_task(state, &unit, task)?;
                // Progress on a task changes its incident: keyed by the
                // incident's jurisdiction, so the router that owns it reads
                // the command first hand (the router's `action_owner`).
                if matches!(
                    status,
                    ReportedStatus::EnRoute | ReportedStatus::OnScene | ReportedStatus::Cleared
                ) {
                    return Ok(task.jurisdiction);
                }
            }
            let known = state.store.unit(&unit).await?;
            // Out of service cancels the unit's task: keyed like progress
            // on it, by its incident's jurisdiction.
            if *status == ReportedStatus::OutOfService
                && let Some(task) = known
                    .as_ref()
                    .and_then(|u| u.task.as_deref())
                    .and_then(|t| state.view.task(t))
                    .filter(|t| t.status.is_open())
            {
                return Ok(task.jurisdiction);
            }
            match known {
                Some(known) => Ok(known.jurisdiction),
                // A unit not in the roster comes on duty by reporting
                // `available` with its position; the router registers it.
                None => match (status, lat, lon) {
                    (ReportedStatus::Available, Some(lat), Some(lon)) => Ok(state.city.place(*lat, *lon).jurisdiction),
                    _ => Err(ApiError::NotFound(format!(
                        "unit {unit} is not registered: report status available with lat and lon first"
                    ))),
                },
            }
        }
        Command::Position { .. } => {
            let unit = unit_subject(claims, unit)?;
            match state.store.unit(&unit).await? {
                Some(known) => Ok(known.jurisdiction),
                None => Err(ApiError::NotFound(format!("unit {unit} is not registered"))),
            }
        }
        Command::Assign { incident, unit, .. } => {
            let incident = commandable_incident(state, claims, incident).await?;
            // Only that the unit exists: whether it is free, or may be
            // taken off a lower-priority task (`preempt`), is the
            // router's to decide with the state it owns.
            let Some(found) = state.store.unit(unit).await? else {
                return Err(ApiError::NotFound(format!("unit {unit} not found")));
            };
            // A station's operator sends the station's units; borrowing a
            // neighbour's (支援) is for an operator who covers both.
            if !claims.covers(&found.jurisdiction) {
                return Err(ApiError::Forbidden(format!(
                    "unit {unit} belongs to jurisdiction {}, not yours",
                    found.jurisdiction
                )));
            }
            open_or_conflict(&incident)?;
            Ok(incident.jurisdiction)
        }
        Command::Escalate { incident, desk, .. } => {
            if let Some(desk) = desk
                && !state.config.desks.iter().any(|d| d.id == *desk)
            {
                return Err(ApiError::bad_field("desk", format!("unknown desk {desk}")));
            }
            open_incident(state, claims, incident).await
        }
        Command::Divert { incident, .. } | Command::Hold { incident, .. } => {
            open_incident(state, claims, incident).await
        }
        Command::Close { incident, .. } => {
            let incident = commandable_incident(state, claims, incident).await?;
            if incident.status == IncidentStatus::Closed {
                return Err(ApiError::Conflict("the incident is already closed".into()));
            }
            Ok(incident.jurisdiction)
        }
        Command::Update { incident, kind, .. } => {
            if let Some(kind) = kind {
                known_kind(state, kind)?;
            }
            open_incident(state, claims, incident).await
        }
        Command::Note { incident, task, .. } => note(state, claims, incident.as_deref(), task.as_deref(), unit).await,
        Command::Reopen { incident, .. } => {
            let incident = commandable_incident(state, claims, incident).await?;
            if let Some(into) = &incident.merged_into {
                return Err(ApiError::Conflict(format!(
                    "the incident was merged into {into}: reopen that one"
                )));
            }
            // Resolved is still open (nobody closed it) but done with: it
            // may come back like a closed or diverted one.
            if incident.status.is_open() && incident.status != IncidentStatus::Resolved {
                return Err(ApiError::Conflict(format!(
                    "the incident is {}, not closed, resolved or diverted",
                    incident.status.as_str()
                )));
            }
            Ok(incident.jurisdiction)
        }
        Command::Merge { incident, from } => {
            let into = commandable_incident(state, claims, incident).await?;
            open_or_conflict(&into)?;
            let from = commandable_incident(state, claims, from).await?;
            if !from.status.is_open() {
                return Err(ApiError::Conflict(format!(
                    "incident {} (from) is {}",
                    from.id,
                    from.status.as_str()
                )));
            }
            Ok(into.jurisdiction)
        }
        Command::Split { incident, events, .. } => {
            let incident = commandable_incident(state, claims, incident).await?;
            open_or_conflict(&incident)?;
            if let Some((i, missing)) = events.iter().enumerate().find(|(_, e)| !incident.events.contains(e)) {
                return Err(ApiError::bad_field(
                    &format!("events[{i}]"),
                    format!("{missing} is not an event of incident {}", incident.id),
                ));
            }
            // Moving every event would leave an incident about nothing:
            // that is an update (or a close), not a split.
            if events.len() >= incident.events.len() {
                return Err(ApiError::bad_field(
                    "events",
                    "at least one event must stay with the incident",
                ));
            }
            Ok(incident.jurisdiction)
        }
        Command::Refuse { task, .. } => {
            let unit = unit_subject(claims, unit)?;
            let task = own_open_task(state, &unit, task)?;
            // On scene, the unit is the one there: it clears the task
            // instead.
            if task.status == TaskStatus::OnScene {
                return Err(ApiError::Conflict(
                    "the unit is on scene: report cleared instead of refusing".into(),
                ));
            }
            Ok(task.jurisdiction)
        }
        Command::Create { .. } => Err(ApiError::Internal("create is an event, not an action".into())),
    }
}

/// A note: a unit's about its own task, an operator's about an incident
/// (named, or through one of its tasks).
async fn note(
    state: &AppState,
    claims: &Claims,
    incident: Option<&str>,
    task: Option<&str>,
    unit: Option<&str>,
) -> Result<String, ApiError> {
    if claims.role == Role::Unit {
        if incident.is_some() {
            return Err(ApiError::Forbidden("a unit notes its own task, not an incident".into()));
        }
        let unit = unit_subject(claims, unit)?;
        // `complete` named the current task when the unit gave none.
        let task = task.ok_or_else(|| ApiError::bad_field("task", "is required"))?;
        return Ok(own_open_task(state, &unit, task)?.jurisdiction);
    }
    let incident = match (incident, task) {
        (Some(incident), _) => incident.to_owned(),
        (None, Some(task)) => find_task(state, task)?.incident,
        (None, None) => return Err(ApiError::bad_field("incident", "incident or task is required")),
    };
    open_incident(state, claims, &incident).await
}

/// The unit a unit command is about, when the caller may act for it.
pub(super) fn unit_subject(claims: &Claims, unit: Option<&str>) -> Result<String, ApiError> {
    if !matches!(claims.role, Role::Unit | Role::Admin) {
        return Err(ApiError::Forbidden("only a unit may send this command".into()));
    }
    let Some(unit) = unit.or(claims.unit.as_deref()) else {
        // An admin token names no unit: over REST the path does.
        return Err(ApiError::bad_field(
            "unit",
            "this command acts for the token's unit; use POST /api/v1/units/{id}/status",
        ));
    };
    if !may_act_for_unit(claims, unit) {
        return Err(ApiError::Forbidden("a unit may only act for itself".into()));
    }
    Ok(unit.to_owned())
}

fn find_task(state: &AppState, id: &str) -> Result<Task, ApiError> {
    state
        .view
        .task(id)
        .ok_or_else(|| ApiError::NotFound(format!("task {id} not found")))
}

/// A task of `unit` that is not finished.
fn own_open_task(state: &AppState, unit: &str, id: &str) -> Result<Task, ApiError> {
    let task = find_task(state, id)?;
    if task.unit != unit {
        return Err(ApiError::Forbidden("the task belongs to another unit".into()));
    }
    if !task.status.is_open() {
        return Err(ApiError::Conflict(format!(
            "the task is already {}",
            task.status.as_str()
        )));
    }
    Ok(task)
}

/// The unit's current task: the one the router put on the unit, else its
/// newest open task in the view (the unit record may lag its tasks).
async fn current_task(state: &AppState, unit: &str) -> Result<String, ApiError> {
    let on_unit = state
        .store
        .unit(unit)
        .await?
        .and_then(|u| u.task)
        .filter(|t| state.view.task(t).is_some_and(|t| t.status.is_open()));
    if let Some(task) = on_unit {
        return Ok(task);
    }
    state
        .view
        .open_tasks_of(unit)
        .into_iter()
        .max_by_key(|t| t.issued_at)
        .map(|t| t.id)
        .ok_or_else(|| ApiError::Conflict(format!("unit {unit} has no open task to note")))
}

/// An incident the caller may command: role, and its jurisdiction theirs.
pub(super) async fn commandable_incident(state: &AppState, claims: &Claims, id: &str) -> Result<Incident, ApiError> {
    if !may_command_incidents(claims) {
        return Err(ApiError::Forbidden("only an operator may command incidents".into()));
    }
    let incident = crate::rest::find_incident(state, id).await?;
    if !claims.covers(&incident.jurisdiction) {
        return Err(ApiError::Forbidden(format!(
            "incident {id} is in jurisdiction {}, not yours",
            incident.jurisdiction
        )));
    }
    Ok(incident)
}

/// The jurisdiction of an open incident the caller may command.
async fn open_incident(state: &AppState, claims: &Claims, id: &str) -> Result<String, ApiError> {
    let incident = commandable_incident(state, claims, id).await?;
    open_or_conflict(&incident)?;
    Ok(incident.jurisdiction)
}

fn open_or_conflict(incident: &Incident) -> Result<(), ApiError> {
    if incident.status.is_open() {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "the incident is {}",
            incident.status.as_str()
        )))
    }
}

/// An operator picks a kind from the configured categories: unlike a
/// source system's call, a typo is refused rather than kept as `unknown`.
pub(super) fn known_kind(state: &AppState, kind: &str) -> Result<(), ApiError> {
    if state.config.categories.iter().any(|c| c.code == kind) {
        Ok(())
    } else {
        Err(ApiError::bad_field("kind", format!("unknown category {kind}")))
    }
}
