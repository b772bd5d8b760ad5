//! `ack`: a unit signs for its task (签收). The task becomes
//! `acknowledged` and the incident's respond stage is met at the command's
//! time. Only the unit the task was issued to may sign for it.

use bus::model::{Action, TaskStatus, Timestamp};

use super::{Fail, move_task, unit_task};
use crate::engine::Engine;
use crate::tx::Tx;

pub(super) async fn apply(
    tx: &mut Tx<'_>,
    engine: &Engine,
    action: &Action,
    task_id: &str,
    at: Timestamp,
    now: Timestamp,
) -> Result<(), Fail> {
    let task = unit_task(tx, action, task_id).await?;
    move_task(tx, engine, action, task, TaskStatus::Acknowledged, None, at, now).await
}
