//! The lone-member watchdog: makes a group consumer leave and rejoin its
//! group when the group coordinator left it alone in the group but still
//! hands it only part of the subscribed partitions.
//!
//! Why: tansu 0.6's coordinator has no session expiry timer. After a member
//! dies without leaving (SIGKILL, a lost machine), the next heartbeat of a
//! survivor past the session timeout removes the dead member and answers
//! `REBALANCE_IN_PROGRESS` once, but the group stays formed with the old
//! generation and stored assignments: the survivor rejoins, is given its
//! old partitions back (or, when the dead member led the group, none), and
//! the dead member's partitions are never consumed again. A `LeaveGroup`
//! does reset the group (new generation, no stale leader), so leaving and
//! joining again makes the survivor the leader of a group of one, and the
//! range assignor gives it every partition.
//!
//! The check, every [`interval`]: the coordinator lists exactly one member
//! in the group, that member is this consumer, and this consumer owns fewer
//! partitions than the subscribed topics have. Two checks in a row, and no
//! forced rejoin in the last [`MIN_GAP`], force a rejoin (`unsubscribe`, a
//! pause while the owner's `recv` runs the revoke, `subscribe`). On Apache
//! Kafka, whose coordinator expires dead members itself, the condition holds
//! only for a moment during a rebalance, so the two-checks rule and the rate
//! limit keep the watchdog idle there.
//!
//! It must never panic, never keep the consumer alive after its owner
//! dropped it (it holds a `Weak` and stops when the owner's [`Guard`]
//! drops), never run for a consumer without a group subscription, and never
//! act on a check it could not complete (ListGroups failed, or the group is
//! not listed yet: tansu lists a group only once it has committed offsets).

use std::sync::Weak;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use rdkafka::consumer::{Consumer as _, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use tokio::sync::watch;

use super::consumer::Assignment;
use crate::metrics;
use crate::topics::Topic;

/// Checks in a row that must find the consumer stranded before it rejoins.
const CHECKS_IN_A_ROW: u32 = 2;
/// The least time between two forced rejoins of one consumer.
const MIN_GAP: Duration = Duration::from_secs(60);
/// How long the consumer stays out of the group: long enough for the
/// owner's `recv` to run the revoke and for the leave to reach the broker.
const OUT_OF_GROUP: Duration = Duration::from_secs(2);
/// The longest a ListGroups or metadata request may block the watchdog.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How often to check: half the session timeout, so a stranded consumer is
/// seen within about one session timeout of the coordinator dropping the
/// dead member; at least a second, at most ten.
fn interval(session_timeout_ms: u64) -> Duration {
    Duration::from_millis(session_timeout_ms / 2).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// What one completed check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Check {
    /// Members the coordinator lists in the group.
    members: usize,
    /// Whether this consumer is among them (brokers name a member
    /// `<client.id>-<uuid>`; this consumer's client.id is unique).
    includes_us: bool,
    /// Partitions of the subscribed topics this consumer owns.
    owned: usize,
    /// Partitions the subscribed topics have.
    total: usize,
}

impl Check {
    /// Alone in the group, yet not given every partition.
    fn stranded(&self) -> bool {
        self.members == 1 && self.includes_us && self.total > 0 && self.owned < self.total
    }
}

/// The decision, apart from any IO: fed one check at a time, it says when
/// to force a rejoin.
#[derive(Debug, Default)]
struct Decision {
    in_a_row: u32,
    last_forced: Option<Instant>,
}

impl Decision {
    /// `check` is `None` when the check could not be completed; that breaks
    /// a run of stranded checks like a healthy one does.
    fn should_rejoin(&mut self, check: Option<Check>, now: Instant) -> bool {
        if !check.is_some_and(|c| c.stranded()) {
            self.in_a_row = 0;
            return false;
        }
        self.in_a_row = self.in_a_row.saturating_add(1);
        if self.in_a_row < CHECKS_IN_A_ROW {
            return false;
        }
        if self
            .last_forced
            .is_some_and(|last| now.saturating_duration_since(last) < MIN_GAP)
        {
            return false;
        }
        self.in_a_row = 0;
        self.last_forced = Some(now);
        true
    }
}

/// Stops the watchdog when dropped (the owning `Consumer` holds it).
#[derive(Debug)]
pub(super) struct Guard {
    _stop: mpsc::Sender<()>,
}

/// What the watchdog needs to know about its consumer.
pub(super) struct Watched {
    pub group: String,
    pub client_id: String,
    pub topics: Vec<Topic>,
    /// The subscribed topics' full names, as subscribed.
    pub names: Vec<String>,
    pub assignment: watch::Receiver<Assignment>,
    pub session_timeout_ms: u64,
}

/// Starts the watchdog on a thread of its own (its Kafka calls block).
/// `None` when there is nothing to watch or the thread could not start;
/// the consumer then works as before, without the watchdog.
pub(super) fn spawn<X>(consumer: Weak<StreamConsumer<X>>, watched: Watched) -> Option<Guard>
where
    X: ConsumerContext + 'static,
{
    if watched.names.is_empty() || watched.group.is_empty() {
        return None;
    }
    let (stop, stopped) = mpsc::channel();
    let group = watched.group.clone();
    let started = std::thread::Builder::new()
        .name("qzx-rejoin".to_owned())
        .spawn(move || run(&consumer, &watched, &stopped));
    match started {
        Ok(_) => Some(Guard { _stop: stop }),
        Err(e) => {
            tracing::warn!(%group, error = %e, "could not start the lone-member watchdog");
            None
        }
    }
}

/// Sleeps for `d`; false once the guard is dropped.
fn pause(stopped: &mpsc::Receiver<()>, d: Duration) -> bool {
    matches!(stopped.recv_timeout(d), Err(RecvTimeoutError::Timeout) | Ok(()))
}

fn run<X: ConsumerContext>(consumer: &Weak<StreamConsumer<X>>, w: &Watched, stopped: &mpsc::Receiver<()>) {
    let every = interval(w.session_timeout_ms);
    let mut decision = Decision::default();
    while pause(stopped, every) {
        // rdkafka's group accessors `expect` valid UTF-8; a broker that
        // breaks that costs one check, never the thread.
        let cycle = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            consumer.upgrade().map(|c| check(&c, w))
        }));
        let found = match cycle {
            Ok(None) => return,
            Ok(Some(Ok(found))) => {
                tracing::debug!(group = %w.group, ?found, "lone-member check");
                found
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(group = %w.group, error = %e, "lone-member check incomplete");
                None
            }
            Err(_) => {
                tracing::warn!(group = %w.group, "lone-member check failed");
                None
            }
        };
        if decision.should_rejoin(found, Instant::now()) {
            let (owned, total) = found.map_or((0, 0), |c| (c.owned, c.total));
            if !rejoin(consumer, w, stopped, owned, total) {
                return;
            }
        }
    }
}

/// One check; `Ok(None)` when the group is not listed.
fn check<X: ConsumerContext>(consumer: &StreamConsumer<X>, w: &Watched) -> Result<Option<Check>, KafkaError> {
    let groups = consumer.fetch_group_list(Some(&w.group), REQUEST_TIMEOUT)?;
    let Some(group) = groups.groups().iter().find(|g| g.name() == w.group) else {
        return Ok(None);
    };
    let prefix = format!("{}-", w.client_id);
    let members = group.members();
    let includes_us = members
        .iter()
        .any(|m| m.client_id() == w.client_id || m.id().starts_with(&prefix));
    let mut total = 0;
    for name in &w.names {
        let metadata = consumer.fetch_metadata(Some(name), REQUEST_TIMEOUT)?;
        let Some(topic) = metadata
            .topics()
            .iter()
            .find(|t| t.name() == name && t.error().is_none())
        else {
            return Ok(None);
        };
        total += topic.partitions().len();
    }
    let owned = w
        .assignment
        .borrow()
        .iter()
        .filter(|(t, _)| w.topics.contains(t))
        .count();
    Ok(Some(Check {
        members: members.len(),
        includes_us,
        owned,
        total,
    }))
}

/// Leaves the group and joins it again; false once the guard is dropped.
fn rejoin<X: ConsumerContext>(
    consumer: &Weak<StreamConsumer<X>>,
    w: &Watched,
    stopped: &mpsc::Receiver<()>,
    owned: usize,
    total: usize,
) -> bool {
    let Some(c) = consumer.upgrade() else {
        return false;
    };
    tracing::warn!(
        group = %w.group,
        owned,
        total,
        "alone in the group but given only part of its partitions: the broker kept a dead member's \
         partitions; leaving and rejoining the group"
    );
    ::metrics::counter!(metrics::KAFKA_FORCED_REJOINS_TOTAL).increment(1);
    c.unsubscribe();
    // While the watchdog holds the consumer, the owner's drop cannot close it.
    drop(c);
    if !pause(stopped, OUT_OF_GROUP) {
        return false;
    }
    let Some(c) = consumer.upgrade() else {
        return false;
    };
    let names: Vec<&str> = w.names.iter().map(String::as_str).collect();
    if let Err(e) = c.subscribe(&names) {
        // Nothing consumes until the next forced rejoin; say so loudly.
        tracing::error!(group = %w.group, error = %e, "could not subscribe again after leaving the group");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(members: usize, includes_us: bool, owned: usize, total: usize) -> Option<Check> {
        Some(Check {
            members,
            includes_us,
            owned,
            total,
        })
    }

    #[test]
    fn forces_a_rejoin_only_after_two_stranded_checks_in_a_row_and_once_a_minute() {
        let stranded = seen(1, true, 10, 20);
        let s = Duration::from_secs;
        // (what the check found, seconds since the start, rejoin?)
        type Step = (Option<Check>, u64, bool);
        let cases: &[(&str, &[Step])] = &[
            ("tansu after a SIGKILL", &[(stranded, 0, false), (stranded, 5, true)]),
            (
                "healthy group of two",
                &[(seen(2, true, 10, 20), 0, false), (seen(2, true, 10, 20), 5, false)],
            ),
            (
                "alone with every partition",
                &[(seen(1, true, 20, 20), 0, false), (seen(1, true, 20, 20), 5, false)],
            ),
            (
                "the lone member is someone else (we are still joining)",
                &[(seen(1, false, 0, 20), 0, false), (seen(1, false, 0, 20), 5, false)],
            ),
            (
                "no partitions to own (topics not found)",
                &[(seen(1, true, 0, 0), 0, false), (seen(1, true, 0, 0), 5, false)],
            ),
            (
                "alone with none, mid-rebalance, then given all (Apache Kafka)",
                &[(seen(1, true, 0, 20), 0, false), (seen(1, true, 20, 20), 5, false)],
            ),
            (
                "an incomplete check breaks the run",
                &[
                    (stranded, 0, false),
                    (None, 5, false),
                    (stranded, 10, false),
                    (stranded, 15, true),
                ],
            ),
            (
                "a healthy check breaks the run",
                &[
                    (stranded, 0, false),
                    (seen(2, true, 10, 20), 5, false),
                    (stranded, 10, false),
                ],
            ),
            (
                "at most once a minute",
                &[
                    (stranded, 0, false),
                    (stranded, 5, true),
                    (stranded, 10, false),
                    (stranded, 15, false),
                    (stranded, 60, false),
                    (stranded, 65, true),
                ],
            ),
            (
                "the run restarts after a forced rejoin",
                &[
                    (stranded, 0, false),
                    (stranded, 5, true),
                    (stranded, 70, false),
                    (stranded, 75, true),
                ],
            ),
        ];
        let start = Instant::now();
        for (name, steps) in cases {
            let mut decision = Decision::default();
            for (i, (check, at, want)) in steps.iter().enumerate() {
                let got = decision.should_rejoin(*check, start + s(*at));
                assert_eq!(got, *want, "{name}: step {i} ({check:?} at {at} s)");
            }
        }
    }

    #[test]
    fn checks_every_half_session_timeout_within_one_and_ten_seconds() {
        for (session_ms, want_ms) in [
            (10_000, 5_000),
            (4_000, 2_000),
            (1_000, 1_000),
            (45_000, 10_000),
            (0, 1_000),
        ] {
            assert_eq!(
                interval(session_ms),
                Duration::from_millis(want_ms),
                "session {session_ms} ms"
            );
        }
    }
}
