//! `refuse`: a unit refuses a task it has not reached, with a reason (a
//! breakdown, already engaged). The task is cancelled, the unit made
//! available, the supervisor told (`refused`), and another unit sent at
//! once (the refusing one is not asked again for this incident).

use bus::model::{Action, EscalationKind, TaskStatus, Timestamp};

use super::{Fail, open_incident, reject, unit_task};
use crate::dispatch::{escalation, withdraw};
use crate::engine::Engine;
use crate::incident::derive_status;
use crate::tx::Tx;

pub(super) async fn apply(
    tx: &mut Tx<'_>,
    engine: &Engine,
    action: &Action,
    task_id: &str,
    reason: &str,
    now: Timestamp,
) -> Result<(), Fail> {
    let reason = reason.trim();
    let task = unit_task(tx, action, task_id).await?;
    if reason.is_empty() {
        return Err(reject(Some(&task.incident), "a refusal needs a reason"));
    }
    if !matches!(
        task.status,
        TaskStatus::Issued | TaskStatus::Acknowledged | TaskStatus::EnRoute
    ) {
        return Err(reject(
            Some(&task.incident),
            format!(
                "task {task_id} is {}: only a task not yet reached can be refused",
                task.status.as_str()
            ),
        ));
    }
    let mut incident = open_incident(tx, &task.incident).await?;
    let why = format!("refused by {}: {reason}", task.unit);
    withdraw(tx, engine, &mut incident, &task, &why, now).await?;
    let desks = vec![engine.config().router.supervisor_desk.clone()];
    let mut refused = escalation(&incident, EscalationKind::Refused, now, why, desks);
    refused.by.clone_from(&action.by.sub);
    tx.escalate(refused);
    derive_status(&mut incident);
    tx.put_incident(incident);
    Ok(())
}
