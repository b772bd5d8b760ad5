//! `note`: a line on an incident's timeline, from an operator (about an
//! incident, open or not) or a unit (about its task, or its current one).
//! Changes nothing else.

use bus::model::{Action, Timestamp};

use super::{Fail, owned_incident, reject, unit_task};
use crate::incident::entry;
use crate::tx::Tx;

pub(super) async fn apply(
    tx: &mut Tx<'_>,
    action: &Action,
    incident: Option<&str>,
    task: Option<&str>,
    text: &str,
    now: Timestamp,
) -> Result<(), Fail> {
    let text = text.trim();
    if text.is_empty() {
        return Err(reject(incident, "a note needs text"));
    }
    let incident_id = match (incident, task, &action.by.unit) {
        (Some(id), _, _) => id.to_owned(),
        (None, Some(task), _) => unit_task(tx, action, task).await?.incident,
        (None, None, Some(unit)) => {
            let current = tx.unit(unit).await?.and_then(|u| u.task);
            let task = current.ok_or_else(|| reject(None, format!("unit {unit} has no task to note on")))?;
            unit_task(tx, action, &task).await?.incident
        }
        (None, None, None) => return Err(reject(None, "a note needs an incident or a task")),
    };
    let mut incident = owned_incident(tx, &incident_id).await?;
    incident
        .timeline
        .push(entry(now, format!("note: {text}"), &action.by.sub));
    tx.put_incident(incident);
    Ok(())
}
