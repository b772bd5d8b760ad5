//! One atomic write of the router's state: [`Commit`] is what a router
//! transaction hands to [`super::Store::commit`] before it publishes
//! anything. Its expectations are checked first (fencing tokens, unit
//! claims) and then every write is made, or nothing is: a commit that finds
//! an expectation broken writes nothing and says which one.
//!
//! This is what makes a replay repeat rather than recompute: the state, the
//! applied markers of the records and the outbox of serialised outputs land
//! in the Store together, so a router killed at any point after a commit
//! finds the decision made and republishes it, and one killed before finds
//! nothing of it.

use std::time::Duration;

use crate::model::{Incident, Unit};

/// Everything one transaction writes, applied atomically by
/// [`super::Store::commit`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Commit {
    /// Keys (of [`super::Store::set_key`]) that must hold exactly these
    /// values: the fencing tokens of the partitions this commit writes for.
    pub expect_keys: Vec<(String, String)>,
    /// Units that must still work on these tasks (unit id, task id): claims
    /// made earlier, with [`super::Store::claim_unit`] or by a commit.
    pub expect_claims: Vec<(String, String)>,
    /// Units that must be `available` with no task: the units this commit
    /// claims (its `units` write them as assigned). Claiming at the commit,
    /// not before it, leaves nothing claimed by a transaction that never
    /// commits.
    pub expect_available: Vec<String>,
    /// Stored as [`super::Store::put_incident`] does (an older version never
    /// overwrites a newer one; an incident no longer open leaves the open
    /// set).
    pub incidents: Vec<Incident>,
    /// Stored as [`super::Store::put_unit`] does.
    pub units: Vec<Unit>,
    /// Set as [`super::Store::set_key`] does: (key, value, time to live).
    pub set_keys: Vec<(String, String, Duration)>,
    /// Deleted as [`super::Store::delete_key`] does, before `set_keys` are
    /// set (a key in both ends up set).
    pub delete_keys: Vec<String>,
}

impl Commit {
    pub fn is_empty(&self) -> bool {
        self.incidents.is_empty() && self.units.is_empty() && self.set_keys.is_empty() && self.delete_keys.is_empty()
    }
}

/// What [`super::Store::commit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Every expectation held and every write was made.
    Done,
    /// An expected key holds another value (`None`: it is gone — the Store
    /// lost its state). Nothing was written.
    KeyChanged { key: String, found: Option<String> },
    /// A claimed unit works on another task, or on none, or is gone
    /// (`None`); or a unit expected available is not. Nothing was written.
    ClaimLost { unit: String, task: Option<String> },
}
