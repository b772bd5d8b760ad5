//! `[dispatch]`: how far the router may send units on its own. Per
//! priority, `auto` dispatches and `recommend` ranks units for an operator
//! to pick; pre-emption takes a unit off a lower-priority task; a unit not
//! heard from for `stale_after_s` is not sent anywhere.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ConfigError, check_priority, invalid};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DispatchMode {
    /// The router sends the units itself.
    Auto,
    /// The router ranks the units (`candidates` on the incident) and an
    /// operator assigns.
    Recommend,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchConfig {
    /// By priority ("1" to "4"); a priority not listed is `auto`.
    pub mode: BTreeMap<String, DispatchMode>,
    /// A unit whose position and status are older than this is stale: not
    /// dispatched, and shown as stale on the board.
    pub stale_after_s: u64,
    /// Priorities whose incidents may take a unit off another task when no
    /// available unit arrives in time.
    pub preempt_for: Vec<u8>,
    /// Only tasks of this priority or lower (a higher number) are taken.
    pub preempt_from: u8,
}

impl DispatchConfig {
    pub fn mode(&self, priority: u8) -> DispatchMode {
        self.mode
            .get(&priority.to_string())
            .copied()
            .unwrap_or(DispatchMode::Auto)
    }

    /// A task of `task_priority` may give its unit to an incident of
    /// `priority`.
    pub fn may_preempt(&self, priority: u8, task_priority: u8) -> bool {
        self.preempt_for.contains(&priority) && task_priority >= self.preempt_from && task_priority > priority
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for key in self.mode.keys() {
            let priority: u8 = key
                .parse()
                .map_err(|_| invalid(format!("dispatch.mode.{key}"), "keys are priorities 1 to 4"))?;
            check_priority(&format!("dispatch.mode.{key}"), priority)?;
        }
        for p in &self.preempt_for {
            check_priority("dispatch.preempt_for", *p)?;
        }
        check_priority("dispatch.preempt_from", self.preempt_from)?;
        if self.stale_after_s == 0 {
            return Err(invalid("dispatch.stale_after_s", "must be at least 1"));
        }
        Ok(())
    }
}
