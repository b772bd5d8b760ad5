//! `[ladder]`: what the clock does after a 1-3-5 stage's deadline, and at
//! each further interval while the stage is still not met, until it is met
//! or an operator holds the incident: respond re-dispatches the tasks not
//! acknowledged, arrive sends the nearest available unit as backup,
//! reinforce keeps requesting units until enough are on scene; every rung
//! alarms the supervisor desk. Re-dispatches and backups stop after
//! `dispatching_rungs` rungs (the units would run out); the alarm goes on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConfigError, check_priority, invalid};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LadderConfig {
    /// Seconds between rungs, by priority ("1" to "4").
    pub interval_s: BTreeMap<String, u64>,
    /// Rungs that send units (re-dispatch, backup, reinforcements); later
    /// rungs only alarm.
    pub dispatching_rungs: u32,
}

impl LadderConfig {
    /// Seconds between rungs for `priority` (the lowest priority's when
    /// not listed).
    pub fn interval_s(&self, priority: u8) -> u64 {
        self.interval_s
            .get(&priority.to_string())
            .or_else(|| self.interval_s.values().max())
            .copied()
            .unwrap_or(300)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (key, seconds) in &self.interval_s {
            let field = format!("ladder.interval_s.{key}");
            let priority: u8 = key.parse().map_err(|_| invalid(&field, "keys are priorities 1 to 4"))?;
            check_priority(&field, priority)?;
            if *seconds == 0 {
                return Err(invalid(&field, "must be at least 1"));
            }
        }
        Ok(())
    }
}
