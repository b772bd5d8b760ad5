//! The simulated command-centre operator (指挥员): watches the board and
//! closes each incident once the router has marked it resolved (every unit
//! cleared), after a short human delay, with a disposition and the caller's
//! feedback (回访: mostly satisfied, now and then not). Without it no
//! incident would ever be closed (闭环 needs an explicit close).
//!
//! Pure state machine like [`crate::agent`]: the caller passes simulated
//! time and sends the commands. It must never close an incident that is not
//! resolved.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use bus::model::{Command, Feedback};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::agent::{Note, Output};

/// Incident ids remembered as closed, so a replayed push is not closed again.
const REMEMBERED: usize = 10_000;
/// Closes waiting at once; beyond this the desk is "busy" and the rest wait
/// for the next push (a bound, not a behaviour anyone should see).
const MAX_PENDING: usize = 10_000;

const DISPOSITIONS: [&str; 4] = [
    "已处置，现场恢复正常",
    "已调解，双方达成一致",
    "已移交相关部门处理",
    "经核查，无违法犯罪情况",
];

/// The operator desk.
#[derive(Debug)]
pub struct Desk {
    rng: StdRng,
    /// Share of callers unsatisfied at the follow-up call.
    unsatisfied_share: f64,
    /// Delay before closing, simulated seconds.
    delay_s: (f64, f64),
    /// incident → when it gets closed.
    pending: BTreeMap<String, Duration>,
    done: HashSet<String>,
    done_order: VecDeque<String>,
}

impl Desk {
    pub fn new(seed: u64) -> Desk {
        Desk {
            rng: StdRng::seed_from_u64(seed),
            unsatisfied_share: 0.1,
            delay_s: (20.0, 90.0),
            pending: BTreeMap::new(),
            done: HashSet::new(),
            done_order: VecDeque::new(),
        }
    }

    /// An incident snapshot from the board.
    pub fn on_incident(&mut self, now: Duration, incident: &Value) {
        let Some(id) = incident.get("id").and_then(Value::as_str) else {
            return;
        };
        match incident.get("status").and_then(Value::as_str) {
            Some("resolved") => {
                if !self.done.contains(id) && !self.pending.contains_key(id) && self.pending.len() < MAX_PENDING {
                    let (lo, hi) = self.delay_s;
                    let at = now + Duration::from_secs_f64(self.rng.random_range(lo..=hi));
                    self.pending.insert(id.to_owned(), at);
                }
            }
            Some("closed" | "diverted") => {
                self.pending.remove(id);
                self.remember(id);
            }
            // Back to work (a new unit, a reopened matter): not ours to close.
            _ => {
                self.pending.remove(id);
            }
        }
    }

    fn remember(&mut self, id: &str) {
        if self.done.insert(id.to_owned()) {
            self.done_order.push_back(id.to_owned());
            if self.done_order.len() > REMEMBERED
                && let Some(old) = self.done_order.pop_front()
            {
                self.done.remove(&old);
            }
        }
    }

    pub fn next_wake(&self) -> Option<Duration> {
        self.pending.values().min().copied()
    }

    /// Closes what is due.
    pub fn tick(&mut self, now: Duration) -> Output {
        let due: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Output::default();
        for id in due {
            self.pending.remove(&id);
            self.remember(&id);
            let disposition = DISPOSITIONS[self.rng.random_range(0..DISPOSITIONS.len())];
            let feedback = if self.rng.random_range(0.0..1.0) < self.unsatisfied_share {
                Feedback::Unsatisfied
            } else {
                Feedback::Satisfied
            };
            out.commands.push(Command::Close {
                incident: id,
                disposition: disposition.to_owned(),
                feedback: Some(feedback),
            });
            out.notes.push(Note::Closed);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_resolved_incident_is_closed_after_a_human_delay_once() {
        let mut desk = Desk::new(1);
        desk.on_incident(secs(0), &json!({"id": "i1", "status": "dispatched"}));
        assert_eq!(desk.next_wake(), None);
        desk.on_incident(secs(10), &json!({"id": "i1", "status": "resolved"}));
        let at = desk.next_wake().unwrap();
        assert!(at >= secs(30) && at <= secs(100), "{at:?}");
        assert!(desk.tick(at - secs(1)).commands.is_empty());
        let out = desk.tick(at);
        assert_eq!(out.notes, [Note::Closed]);
        assert!(matches!(&out.commands[..], [Command::Close { incident, feedback: Some(_), .. }] if incident == "i1"));
        // The echo (or a replay) of the resolved version is not closed again.
        desk.on_incident(at, &json!({"id": "i1", "status": "resolved"}));
        assert_eq!(desk.next_wake(), None);
    }

    #[test]
    fn an_incident_back_at_work_or_closed_by_someone_else_is_left_alone() {
        let mut desk = Desk::new(1);
        desk.on_incident(secs(0), &json!({"id": "i1", "status": "resolved"}));
        desk.on_incident(secs(1), &json!({"id": "i1", "status": "en_route"}));
        desk.on_incident(secs(0), &json!({"id": "i2", "status": "resolved"}));
        desk.on_incident(secs(1), &json!({"id": "i2", "status": "closed"}));
        assert_eq!(desk.next_wake(), None);
        assert!(desk.tick(secs(1000)).commands.is_empty());
        desk.on_incident(secs(2), &json!({"status": "resolved"}));
        assert_eq!(desk.next_wake(), None);
    }
}
