//! The in-process [`Store`]: the demo, single-process deployments and fast
//! tests use it instead of Redis. It must behave exactly as [`RedisStore`]
//! does as far as a caller can observe — same cursor format, same trimming,
//! same ordering — because both pass one suite ([`super::suite`]).
//!
//! Locks are plain `std::sync::Mutex`es held only for a few map operations:
//! no method ever awaits while holding one, and none may start to. Expired
//! keys are dropped lazily when read, and swept now and then on writes so
//! that keys nobody reads again do not pile up.
//!
//! [`RedisStore`]: super::RedisStore

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::{
    Appended, Claim, Commit, Committed, HistoryEntry, HistoryLimits, HistoryRead, NearbyUnit, Store, StoreResult,
};
use crate::model::{Incident, Timestamp, Unit, UnitStatus};

/// Earth radius that Redis' GEO commands use; the in-memory distances use it
/// too so that both stores report the same metres.
const EARTH_RADIUS_M: f64 = 6_372_797.560_856;

/// How long an incident that is no longer open stays readable, so that
/// lookups of recently closed incidents still work.
pub(super) const CLOSED_INCIDENT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// TTLs are clamped to this: Redis rejects expiry times that overflow, and
/// `Instant + Duration` would panic.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Expired entries are swept once every this many writes to a map, or once
/// every as many writes as the last sweep left entries if that is more: a
/// sweep reads every entry, so its cost per write stays constant however
/// many live entries (a day of idempotency keys) the map holds.
const SWEEP_EVERY: u64 = 1024;

/// The TTL both stores really apply: at least a millisecond (Redis rejects
/// zero) and at most [`MAX_TTL`].
pub(super) fn clamp_ttl(ttl: Duration) -> Duration {
    ttl.clamp(Duration::from_millis(1), MAX_TTL)
}

/// The TTL in whole milliseconds, as Redis takes it.
pub(super) fn ttl_ms(ttl: Duration) -> u64 {
    // Clamped to ten years, so this always fits.
    u64::try_from(clamp_ttl(ttl).as_millis()).unwrap_or(u64::MAX)
}

/// The position of a unit as the GEO index can hold it. Redis' GEOADD
/// refuses latitudes beyond ±85.05112878° (and anything not finite), so a
/// unit with such a position is kept but not indexed, by both stores.
pub(super) fn indexable_position(unit: &Unit) -> Option<(f64, f64)> {
    match (unit.lat, unit.lon) {
        (Some(lat), Some(lon)) if is_indexable(lat, lon) => Some((lat, lon)),
        _ => None,
    }
}

pub(super) fn is_indexable(lat: f64, lon: f64) -> bool {
    lat.is_finite()
        && lon.is_finite()
        && (-85.051_128_78..=85.051_128_78).contains(&lat)
        && (-180.0..=180.0).contains(&lon)
}

/// Great-circle distance in metres, as Redis computes it.
fn haversine_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (lat1, lat2) = (lat1.to_radians(), lat2.to_radians());
    let u = ((lat2 - lat1) / 2.0).sin();
    let v = ((lon2 - lon1).to_radians() / 2.0).sin();
    2.0 * EARTH_RADIUS_M * (u * u + lat1.cos() * lat2.cos() * v * v).sqrt().asin()
}

/// A history cursor: the shape of a Redis stream id, `<ms>-<seq>`. Cursors
/// order numerically by `(ms, seq)` — as strings, `"999-0"` would sort after
/// `"1000-0"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(super) struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const MAX: StreamId = StreamId {
        ms: u64::MAX,
        seq: u64::MAX,
    };

    /// The id Redis' `XADD *` would give after `last` at wall time `now_ms`:
    /// never smaller than `last`, even when the clock steps back.
    fn next(last: StreamId, now_ms: u64) -> StreamId {
        if now_ms > last.ms {
            StreamId { ms: now_ms, seq: 0 }
        } else if last.seq < u64::MAX {
            StreamId {
                ms: last.ms,
                seq: last.seq + 1,
            }
        } else {
            StreamId {
                ms: last.ms.saturating_add(1),
                seq: 0,
            }
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for StreamId {
    type Err = ();

    /// Only the full `<ms>-<seq>` shape: Redis would also take `<ms>`, but a
    /// cursor we handed out always has both parts, so anything else is not
    /// one of ours.
    fn from_str(s: &str) -> Result<Self, ()> {
        let (ms, seq) = s.split_once('-').ok_or(())?;
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(());
        }
        Ok(StreamId {
            ms: ms.parse().map_err(|_| ())?,
            seq: seq.parse().map_err(|_| ())?,
        })
    }
}

fn now_ms() -> u64 {
    // A clock before 1970 is a broken clock; ids then still increase
    // because `StreamId::next` never goes below the last id.
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// Takes a lock even if another thread panicked while holding it: every
/// critical section here leaves its map consistent at each step, so the
/// data is still good.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A value with an optional deadline.
struct Expiring<T> {
    value: T,
    /// `None` lives until replaced.
    expires: Option<Instant>,
}

impl<T> Expiring<T> {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

/// A map whose entries may expire; reads ignore expired entries.
struct ExpiringMap<K, V> {
    entries: HashMap<K, Expiring<V>>,
    /// Writes since the last sweep of expired entries.
    writes: u64,
    /// Writes between sweeps: the entries the last sweep left, at least
    /// [`SWEEP_EVERY`].
    sweep_after: u64,
}

impl<K: std::hash::Hash + Eq, V> ExpiringMap<K, V> {
    fn new() -> Self {
        ExpiringMap {
            entries: HashMap::new(),
            writes: 0,
            sweep_after: SWEEP_EVERY,
        }
    }

    fn get<Q>(&self, key: &Q, now: Instant) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.entries.get(key).filter(|e| e.live(now)).map(|e| &e.value)
    }

    fn get_mut<Q>(&mut self, key: &Q, now: Instant) -> Option<&mut V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.entries.get_mut(key).filter(|e| e.live(now)).map(|e| &mut e.value)
    }

    fn insert(&mut self, key: K, value: V, expires: Option<Instant>, now: Instant) {
        self.writes += 1;
        if self.writes >= self.sweep_after {
            self.writes = 0;
            self.entries.retain(|_, e| e.live(now));
            self.sweep_after = SWEEP_EVERY.max(self.entries.len() as u64);
        }
        self.entries.insert(key, Expiring { value, expires });
    }

    fn remove<Q>(&mut self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.entries.remove(key);
    }

    fn live_values(&self, now: Instant) -> impl Iterator<Item = &V> {
        self.entries.values().filter(move |e| e.live(now)).map(|e| &e.value)
    }
}

/// A time window: members with times, readable oldest first.
#[derive(Default)]
struct Window {
    times: HashMap<String, i64>,
    /// Ordered as Redis orders a sorted set: by time, ties by member bytes.
    ordered: BTreeSet<(i64, String)>,
}

/// One channel's history.
#[derive(Default)]
struct Channel {
    entries: VecDeque<(StreamId, Vec<u8>)>,
    /// The newest id ever given out, kept when its entry is trimmed so ids
    /// keep increasing (Redis' `last-generated-id`).
    last_id: StreamId,
    /// The newest id trimmed away: a cursor older than this has missed
    /// entries (Redis' `max-deleted-entry-id`).
    max_deleted: StreamId,
    /// Dedupe key → cursor of the entry it appended; lives `max_age`.
    dedupe: ExpiringMap<String, StreamId>,
}

impl<K: std::hash::Hash + Eq, V> Default for ExpiringMap<K, V> {
    fn default() -> Self {
        ExpiringMap::new()
    }
}

/// The in-process store. Each kind of state has its own lock so that, say,
/// history appends do not wait behind unit updates.
///
/// Lock order: a method that needs several locks takes them in the order of
/// the fields below (`keys`, then `units`, then `incidents`, ...), and holds
/// them all until it is done, so that it is atomic and two such methods can
/// never deadlock. Only [`Store::commit`] takes more than one today.
pub struct MemoryStore {
    keys: Mutex<ExpiringMap<String, String>>,
    /// By id, so `units()` lists them in id order as the Redis store does.
    units: Mutex<BTreeMap<String, Unit>>,
    /// Incidents that are no longer open expire after
    /// [`CLOSED_INCIDENT_TTL`].
    incidents: Mutex<ExpiringMap<String, Incident>>,
    /// A window untouched for its `keep_ms` expires as a whole.
    windows: Mutex<ExpiringMap<String, Window>>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore {
            keys: Mutex::new(ExpiringMap::new()),
            units: Mutex::new(BTreeMap::new()),
            incidents: Mutex::new(ExpiringMap::new()),
            windows: Mutex::new(ExpiringMap::new()),
            channels: Mutex::new(HashMap::new()),
        }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

/// [`Store::put_incident`] on the locked map, for it and for
/// [`Store::commit`]: an older version never overwrites a newer one, and an
/// incident no longer open expires after [`CLOSED_INCIDENT_TTL`].
fn store_incident(incidents: &mut ExpiringMap<String, Incident>, incident: &Incident, now: Instant) {
    if let Some(stored) = incidents.get(&incident.id, now)
        && stored.version > incident.version
    {
        return;
    }
    let expires = (!incident.status.is_open()).then(|| now + CLOSED_INCIDENT_TTL);
    incidents.insert(incident.id.clone(), incident.clone(), expires, now);
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn claim_key(&self, key: &str, value: &str, ttl: Duration) -> StoreResult<Option<String>> {
        let now = Instant::now();
        let mut keys = lock(&self.keys);
        if let Some(existing) = keys.get(key, now) {
            return Ok(Some(existing.clone()));
        }
        keys.insert(key.to_owned(), value.to_owned(), Some(now + clamp_ttl(ttl)), now);
        Ok(None)
    }

    async fn set_key(&self, key: &str, value: &str, ttl: Duration) -> StoreResult<()> {
        let now = Instant::now();
        lock(&self.keys).insert(key.to_owned(), value.to_owned(), Some(now + clamp_ttl(ttl)), now);
        Ok(())
    }

    async fn get_key(&self, key: &str) -> StoreResult<Option<String>> {
        Ok(lock(&self.keys).get(key, Instant::now()).cloned())
    }

    async fn get_keys(&self, keys: &[String]) -> StoreResult<Vec<Option<String>>> {
        let now = Instant::now();
        let map = lock(&self.keys);
        Ok(keys.iter().map(|key| map.get(key.as_str(), now).cloned()).collect())
    }

    async fn delete_key(&self, key: &str) -> StoreResult<()> {
        lock(&self.keys).remove(key);
        Ok(())
    }

    async fn put_unit(&self, unit: &Unit) -> StoreResult<()> {
        lock(&self.units).insert(unit.id.clone(), unit.clone());
        Ok(())
    }

    async fn unit(&self, id: &str) -> StoreResult<Option<Unit>> {
        Ok(lock(&self.units).get(id).cloned())
    }

    async fn units_by_id(&self, ids: &[String]) -> StoreResult<Vec<Option<Unit>>> {
        let units = lock(&self.units);
        Ok(ids.iter().map(|id| units.get(id).cloned()).collect())
    }

    async fn units(&self) -> StoreResult<Vec<Unit>> {
        Ok(lock(&self.units).values().cloned().collect())
    }

    async fn nearest_units(&self, lat: f64, lon: f64, radius_m: f64, limit: usize) -> StoreResult<Vec<NearbyUnit>> {
        // Redis refuses such queries; both stores answer "nothing near".
        if limit == 0 || radius_m.is_nan() || radius_m <= 0.0 || radius_m.is_infinite() || !is_indexable(lat, lon) {
            return Ok(Vec::new());
        }
        // Computed under the lock: a few thousand units take well under the
        // half millisecond an async task may block.
        let units = lock(&self.units);
        let mut near: Vec<(f64, &str)> = units
            .values()
            .filter_map(|unit| {
                let (ulat, ulon) = indexable_position(unit)?;
                let distance_m = haversine_m(lat, lon, ulat, ulon);
                (distance_m <= radius_m).then_some((distance_m, unit.id.as_str()))
            })
            .collect();
        near.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        // Ids are copied only for the units answered.
        Ok(near
            .into_iter()
            .take(limit)
            .map(|(distance_m, id)| NearbyUnit {
                unit: id.to_owned(),
                distance_m,
            })
            .collect())
    }

    async fn move_unit(
        &self,
        id: &str,
        lat: f64,
        lon: f64,
        speed_kmh: Option<f64>,
        at: Timestamp,
    ) -> StoreResult<Option<Unit>> {
        let mut units = lock(&self.units);
        let Some(unit) = units.get_mut(id) else {
            return Ok(None);
        };
        if at >= unit.at {
            unit.lat = Some(lat);
            unit.lon = Some(lon);
            unit.at = at;
            if speed_kmh.is_some() {
                unit.speed_kmh = speed_kmh;
            }
        }
        Ok(Some(unit.clone()))
    }

    async fn claim_unit(&self, id: &str, task: &str) -> StoreResult<Claim> {
        let mut units = lock(&self.units);
        let Some(unit) = units.get_mut(id) else {
            return Ok(Claim::NotFound);
        };
        if unit.status != UnitStatus::Available {
            return Ok(Claim::Unavailable(unit.status));
        }
        unit.status = UnitStatus::Assigned;
        unit.task = Some(task.to_owned());
        Ok(Claim::Claimed(unit.clone()))
    }

    async fn put_incident(&self, incident: &Incident) -> StoreResult<()> {
        let now = Instant::now();
        store_incident(&mut lock(&self.incidents), incident, now);
        Ok(())
    }

    async fn incident(&self, id: &str) -> StoreResult<Option<Incident>> {
        Ok(lock(&self.incidents).get(id, Instant::now()).cloned())
    }

    async fn open_incidents(&self) -> StoreResult<Vec<Incident>> {
        let now = Instant::now();
        let mut open: Vec<Incident> = lock(&self.incidents)
            .live_values(now)
            .filter(|incident| incident.status.is_open())
            .cloned()
            .collect();
        open.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(open)
    }

    async fn window_add(&self, key: &str, member: &str, at_ms: i64, keep_ms: i64) -> StoreResult<()> {
        let now = Instant::now();
        let keep = Duration::from_millis(u64::try_from(keep_ms).unwrap_or(0));
        let expires = Some(now + clamp_ttl(keep));
        let mut windows = lock(&self.windows);
        let mut window = match windows.get_mut(key, now) {
            Some(window) => std::mem::take(window),
            None => Window::default(),
        };
        if let Some(old) = window.times.insert(member.to_owned(), at_ms) {
            window.ordered.remove(&(old, member.to_owned()));
        }
        window.ordered.insert((at_ms, member.to_owned()));
        let cutoff = at_ms.saturating_sub(keep_ms);
        let kept = window.ordered.split_off(&(cutoff, String::new()));
        for (_, dropped) in std::mem::replace(&mut window.ordered, kept) {
            window.times.remove(&dropped);
        }
        windows.insert(key.to_owned(), window, expires, now);
        Ok(())
    }

    async fn window_range(&self, key: &str, from_ms: i64, to_ms: i64) -> StoreResult<Vec<(String, i64)>> {
        let windows = lock(&self.windows);
        let Some(window) = windows.get(key, Instant::now()) else {
            return Ok(Vec::new());
        };
        Ok(window
            .ordered
            .iter()
            .skip_while(|(at, _)| *at < from_ms)
            .take_while(|(at, _)| *at <= to_ms)
            .map(|(at, member)| (member.clone(), *at))
            .collect())
    }

    async fn history_append(
        &self,
        channel: &str,
        dedupe: &str,
        payload: &[u8],
        limits: HistoryLimits,
    ) -> StoreResult<Appended> {
        let now = Instant::now();
        let mut channels = lock(&self.channels);
        let ch = channels.entry(channel.to_owned()).or_default();
        if let Some(seen) = ch.dedupe.get(dedupe, now) {
            return Ok(Appended {
                cursor: seen.to_string(),
                fresh: false,
            });
        }
        let id = StreamId::next(ch.last_id, now_ms());
        ch.last_id = id;
        ch.entries.push_back((id, payload.to_vec()));

        // Trim by age first, then by length, as the Redis script does; both
        // cut from the oldest end, so the last entry cut is the newest lost.
        let max_age_ms = ttl_ms(limits.max_age);
        let cutoff = StreamId {
            ms: id.ms.saturating_sub(max_age_ms),
            seq: 0,
        };
        while let Some((oldest, _)) = ch.entries.front()
            && (*oldest < cutoff || ch.entries.len() > limits.max_len)
        {
            ch.max_deleted = *oldest;
            ch.entries.pop_front();
        }
        ch.dedupe
            .insert(dedupe.to_owned(), id, Some(now + clamp_ttl(limits.max_age)), now);
        Ok(Appended {
            cursor: id.to_string(),
            fresh: true,
        })
    }

    async fn history_since(&self, channel: &str, cursor: Option<&str>, limit: usize) -> StoreResult<HistoryRead> {
        let channels = lock(&self.channels);
        let Some(ch) = channels.get(channel) else {
            return Ok(HistoryRead::default());
        };
        // A cursor we cannot read is treated as older than anything: the
        // caller gets every retained entry and is told it missed some.
        let (after, gap) = match cursor.map(str::parse::<StreamId>) {
            None => (None, false),
            Some(Ok(cursor)) => (Some(cursor), cursor < ch.max_deleted),
            Some(Err(())) => (None, true),
        };
        let entries = ch
            .entries
            .iter()
            .filter(|(id, _)| after.is_none_or(|after| *id > after))
            .take(limit)
            .map(|(id, payload)| HistoryEntry {
                cursor: id.to_string(),
                payload: payload.clone(),
            })
            .collect();
        Ok(HistoryRead { entries, gap })
    }

    async fn history_head(&self, channel: &str) -> StoreResult<Option<String>> {
        let channels = lock(&self.channels);
        Ok(channels
            .get(channel)
            .and_then(|ch| ch.entries.back())
            .map(|(id, _)| id.to_string()))
    }

    async fn commit(&self, commit: &Commit) -> StoreResult<Committed> {
        let now = Instant::now();
        // All three locks, in the struct's order, for the whole commit: a
        // reader taking any one of them sees all of the commit or none of it.
        let mut keys = lock(&self.keys);
        let mut units = lock(&self.units);
        let mut incidents = lock(&self.incidents);

        // Every expectation before any write: a broken one writes nothing.
        for (key, expected) in &commit.expect_keys {
            let found = keys.get(key.as_str(), now);
            if found != Some(expected) {
                return Ok(Committed::KeyChanged {
                    key: key.clone(),
                    found: found.cloned(),
                });
            }
        }
        for (id, task) in &commit.expect_claims {
            let found = units.get(id).and_then(|unit| unit.task.as_ref());
            if found != Some(task) {
                return Ok(Committed::ClaimLost {
                    unit: id.clone(),
                    task: found.cloned(),
                });
            }
        }
        for id in &commit.expect_available {
            let unit = units.get(id);
            if !unit.is_some_and(|u| u.status == UnitStatus::Available && u.task.is_none()) {
                return Ok(Committed::ClaimLost {
                    unit: id.clone(),
                    task: unit.and_then(|u| u.task.clone()),
                });
            }
        }

        // The same steps, in the same order, as the single-item methods and
        // the Redis script: deletes before sets, so a key in both ends up set.
        for key in &commit.delete_keys {
            keys.remove(key.as_str());
        }
        for incident in &commit.incidents {
            store_incident(&mut incidents, incident, now);
        }
        for unit in &commit.units {
            units.insert(unit.id.clone(), unit.clone());
        }
        for (key, value, ttl) in &commit.set_keys {
            keys.insert(key.clone(), value.clone(), Some(now + clamp_ttl(*ttl)), now);
        }
        Ok(Committed::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_entries_are_swept_and_live_ones_kept() {
        let start = Instant::now();
        let mut map = ExpiringMap::new();
        // 5,000 entries that expire after a second, 5,000 that live on.
        for i in 0..5_000u32 {
            map.insert(format!("short-{i}"), i, Some(start + Duration::from_secs(1)), start);
            map.insert(format!("long-{i}"), i, None, start);
        }
        let later = start + Duration::from_secs(2);
        for i in 0..10_000u32 {
            map.insert(format!("new-{i}"), i, None, later);
        }
        assert!(
            !map.entries.keys().any(|k| k.starts_with("short-")),
            "expired entries were never swept"
        );
        assert_eq!(map.live_values(later).count(), 15_000);
        assert_eq!(map.get("long-4999", later), Some(&4999));
        assert_eq!(map.get("short-1", later), None);
    }

    #[test]
    fn cursors_compare_as_numbers_not_strings() {
        let small: StreamId = "999-5".parse().unwrap();
        let big: StreamId = "1000-0".parse().unwrap();
        assert!(small < big);
        assert_eq!(big.to_string(), "1000-0");
    }

    #[test]
    fn only_full_stream_ids_parse() {
        for bad in [
            "",
            "12",
            "12-",
            "-3",
            "a-1",
            "1-b",
            "1-2-3",
            "+1-2",
            "1 -2",
            "99999999999999999999-0",
        ] {
            assert!(bad.parse::<StreamId>().is_err(), "{bad:?} parsed");
        }
        assert_eq!("0-0".parse::<StreamId>(), Ok(StreamId { ms: 0, seq: 0 }));
    }

    #[test]
    fn ids_increase_even_when_the_clock_steps_back() {
        let last = StreamId { ms: 2000, seq: 4 };
        assert_eq!(StreamId::next(last, 1500), StreamId { ms: 2000, seq: 5 });
        assert_eq!(StreamId::next(last, 2000), StreamId { ms: 2000, seq: 5 });
        assert_eq!(StreamId::next(last, 2001), StreamId { ms: 2001, seq: 0 });
    }

    #[test]
    fn haversine_matches_a_known_distance() {
        // One degree of latitude on Redis' sphere.
        let d = haversine_m(36.0, 117.0, 37.0, 117.0);
        assert!((d - EARTH_RADIUS_M.to_radians()).abs() < 1e-6, "{d}");
    }
}
