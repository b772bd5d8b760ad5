//! The shared hot state of qzx: what the router and the api must both see
//! quickly, and what must agree across processes (idempotency, unit claims,
//! WebSocket history). Kafka stays the truth; everything here can be rebuilt
//! from the compacted topics.
//!
//! Two implementations pass one test suite ([`suite`]): [`RedisStore`] for
//! deployments with several processes, and [`MemoryStore`] for a single
//! process (the demo and fast tests). A Store must never hold a lock across
//! an `.await` and never block the runtime.

mod commit;
mod memory;
mod redis;
pub mod suite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::model::{Incident, Timestamp, Unit, UnitStatus};

pub use self::commit::{Commit, Committed};
pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unreachable: {0}")]
    Unavailable(String),
    #[error("stored value for {key} is corrupt: {message}")]
    Corrupt { key: String, message: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A unit found near a point, with its straight-line distance.
#[derive(Debug, Clone, PartialEq)]
pub struct NearbyUnit {
    pub unit: String,
    pub distance_m: f64,
}

/// The outcome of trying to claim a unit for a task.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The unit was available and now works on the task.
    Claimed(Unit),
    /// The unit exists but is not available (another incident got it).
    Unavailable(UnitStatus),
    NotFound,
}

/// One entry of a channel's push history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// Opaque, increasing per channel.
    pub cursor: String,
    pub payload: Vec<u8>,
}

/// What [`Store::history_since`] found after a cursor.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistoryRead {
    pub entries: Vec<HistoryEntry>,
    /// True when entries after the cursor were already trimmed away: the
    /// client missed something and needs a snapshot.
    pub gap: bool,
}

/// How much history a channel keeps: entries older than `max_age` or beyond
/// the newest `max_len` are trimmed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistoryLimits {
    pub max_age: Duration,
    pub max_len: usize,
}

/// The outcome of [`Store::history_append`].
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    pub cursor: String,
    /// False when another process had already appended the entry with the
    /// same dedupe key; `cursor` is then that entry's cursor.
    pub fresh: bool,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// "redis" or "memory", for `/api/v1/info`.
    fn kind(&self) -> &'static str;

    /// Round trip to the backing service (readiness).
    async fn ping(&self) -> StoreResult<()>;

    // --- keys with a time to live (idempotency, markers) ---

    /// Sets `key` to `value` unless it exists. Returns `None` when this call
    /// set it, or the value already there.
    async fn claim_key(&self, key: &str, value: &str, ttl: Duration) -> StoreResult<Option<String>>;
    async fn set_key(&self, key: &str, value: &str, ttl: Duration) -> StoreResult<()>;
    async fn get_key(&self, key: &str) -> StoreResult<Option<String>>;
    /// The values of `keys`, in order, in one round trip.
    async fn get_keys(&self, keys: &[String]) -> StoreResult<Vec<Option<String>>>;
    async fn delete_key(&self, key: &str) -> StoreResult<()>;

    // --- units: status and position ---

    /// Stores the unit and indexes its position (when it has one) for
    /// [`Store::nearest_units`].
    async fn put_unit(&self, unit: &Unit) -> StoreResult<()>;
    async fn unit(&self, id: &str) -> StoreResult<Option<Unit>>;
    /// The units with these ids in the order asked (`None` for an unknown
    /// id), in one round trip: dispatch reads a few dozen candidates.
    async fn units_by_id(&self, ids: &[String]) -> StoreResult<Vec<Option<Unit>>>;
    async fn units(&self) -> StoreResult<Vec<Unit>>;
    /// Units within `radius_m` of the point, nearest first, at most `limit`,
    /// whatever their status.
    async fn nearest_units(&self, lat: f64, lon: f64, radius_m: f64, limit: usize) -> StoreResult<Vec<NearbyUnit>>;
    /// Atomically sets a unit's position, speed (when reported) and report
    /// time, leaving its
    /// status and task as they are (a position report must never undo a
    /// status change made at the same moment). A report older than the
    /// stored one is ignored. Returns the unit as stored, `None` when the
    /// unit is unknown.
    async fn move_unit(
        &self,
        id: &str,
        lat: f64,
        lon: f64,
        speed_kmh: Option<f64>,
        at: Timestamp,
    ) -> StoreResult<Option<Unit>>;
    /// Atomically moves an `available` unit to `assigned` with `task`. Two
    /// incidents racing for one unit: exactly one gets `Claimed`.
    async fn claim_unit(&self, id: &str, task: &str) -> StoreResult<Claim>;

    // --- open incidents ---

    /// Stores an incident; an incident that is no longer open is removed
    /// from the open set. An older version never overwrites a newer one.
    async fn put_incident(&self, incident: &Incident) -> StoreResult<()>;
    async fn incident(&self, id: &str) -> StoreResult<Option<Incident>>;
    async fn open_incidents(&self) -> StoreResult<Vec<Incident>>;

    // --- time windows (repeat detection, hotspot counts) ---

    /// Adds `member` at time `at_ms` to the window `key` (re-adding moves
    /// it), and drops members older than `at_ms - keep_ms`.
    async fn window_add(&self, key: &str, member: &str, at_ms: i64, keep_ms: i64) -> StoreResult<()>;
    /// Members with times in `[from_ms, to_ms]`, oldest first.
    async fn window_range(&self, key: &str, from_ms: i64, to_ms: i64) -> StoreResult<Vec<(String, i64)>>;

    // --- per-channel push history (WebSocket resume) ---

    /// Appends `payload` to the channel's history unless an entry with the
    /// same `dedupe` key was appended before (by any process), then trims by
    /// `limits`.
    async fn history_append(
        &self,
        channel: &str,
        dedupe: &str,
        payload: &[u8],
        limits: HistoryLimits,
    ) -> StoreResult<Appended>;
    /// Entries after `cursor` (all retained entries when `None`), oldest
    /// first, at most `limit`.
    async fn history_since(&self, channel: &str, cursor: Option<&str>, limit: usize) -> StoreResult<HistoryRead>;
    /// The cursor of the newest entry, if any.
    async fn history_head(&self, channel: &str) -> StoreResult<Option<String>>;

    // --- the router's transactions ---

    /// Checks every expectation of `commit`, then makes every write, as one
    /// atomic step: another process sees all of it or none of it, and a
    /// broken expectation writes nothing (see [`Commit`]).
    async fn commit(&self, commit: &Commit) -> StoreResult<Committed>;
}

pub type SharedStore = Arc<dyn Store>;

/// Connects to Redis when `redis_url` is set, else an in-memory store.
pub async fn open(redis_url: Option<&str>, key_prefix: &str) -> StoreResult<SharedStore> {
    match redis_url {
        Some(url) => Ok(Arc::new(RedisStore::connect(url, key_prefix).await?)),
        None => Ok(Arc::new(MemoryStore::new())),
    }
}
