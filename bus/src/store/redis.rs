//! The [`Store`] on Redis (7.0 or newer): what several qzx processes share.
//! It must behave exactly as [`MemoryStore`] does as far as a caller can
//! observe; both pass one suite ([`super::suite`]).
//!
//! Every key starts with the configured prefix, so deployments (and tests)
//! can share a server. Each operation that must be atomic is one command, a
//! `MULTI` pipeline or a Lua script; none relies on `WATCH`, which a
//! multiplexed connection cannot use. Values read back are never trusted:
//! anything unexpected becomes [`StoreError::Corrupt`] naming the key, never
//! a panic. For Redis Cluster, give the prefix a hash tag (`{qzx}:`) so the
//! keys one script touches share a slot. [`Store::commit`], the largest
//! script, lives in [`commit`].
//!
//! Keys, after the prefix:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `kv:{key}` | string | [`Store::claim_key`] and friends |
//! | `unit:{id}` | string | a unit as JSON |
//! | `units` | set | ids of all units |
//! | `unit_geo` | geo set | positions of the units that have one |
//! | `incident:{id}` | hash | `v`: version, `j`: the incident as JSON |
//! | `incidents:open` | set | ids of open incidents |
//! | `win:{key}` | sorted set | a time window, scored by ms |
//! | `hist:{channel}` | stream | a channel's history, payload in field `p` |
//! | `hist-dedupe:{len}:{channel}:{dedupe}` | string | cursor of the entry appended under `dedupe` |
//!
//! [`MemoryStore`]: super::MemoryStore

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

mod commit;

use super::memory::{CLOSED_INCIDENT_TTL, StreamId, indexable_position, is_indexable, ttl_ms};
use super::{
    Appended, Claim, Commit, Committed, HistoryEntry, HistoryLimits, HistoryRead, NearbyUnit, Store, StoreError,
    StoreResult,
};
use crate::model::{Incident, Timestamp, Unit, UnitStatus};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Generous for a local Redis; an answer slower than this means trouble and
/// the caller is better off with an error than waiting.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_RETRIES: usize = 3;

/// How often [`Store::claim_unit`] re-reads a unit whose JSON changed between
/// its read and its write. Only position reports race with a claim, a few a
/// second at most, so this bound is never reached in practice.
const CLAIM_ATTEMPTS: usize = 16;

/// Compare-and-set of a string: `SET KEYS[1] ARGV[2]` only if it still holds
/// `ARGV[1]`. Returns 1 when set, else the current value (nil when gone).
///
/// Unit claims use this rather than editing the JSON in Lua: Lua's cjson
/// re-encodes numbers with 14 significant digits, which would round the
/// positions that the in-memory store keeps exactly.
const COMPARE_AND_SET: &str = r"
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return current
";

/// Stores an incident unless a newer version is there. KEYS: incident hash,
/// open set. ARGV: id, version, json, '1' when open, TTL in ms for one that
/// is not. Returns 1 when stored, 0 when older, -1 when the stored version
/// is not a number.
///
/// Versions compare as Lua numbers (doubles): exact below 2^53.
const PUT_INCIDENT: &str = r"
local stored = redis.call('HGET', KEYS[1], 'v')
if stored then
  local v = tonumber(stored)
  if not v then return -1 end
  if v > tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'j', ARGV[3])
if ARGV[4] == '1' then
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('PERSIST', KEYS[1])
else
  redis.call('SREM', KEYS[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
end
return 1
";

/// Appends to a channel's stream unless the dedupe key is there, then trims
/// by age and by length. KEYS: stream, dedupe key. ARGV: payload, max_len,
/// max_age in ms. Returns {cursor, 1 when appended / 0 when deduplicated}.
///
/// Trimming does not update the stream's `max-deleted-entry-id` (only XDEL
/// does), so the script records the newest trimmed id there itself with
/// XSETID; [`HISTORY_SINCE`] reads it back to detect gaps. Trimming is exact
/// (`MAXLEN n`, not `~`), so a cursor is in a gap exactly when an entry
/// after it was trimmed.
const HISTORY_APPEND: &str = r"
local seen = redis.call('GET', KEYS[2])
if seen then return {seen, 0} end
local id = redis.call('XADD', KEYS[1], '*', 'p', ARGV[1])
local trimmed = false
local ms = tonumber(string.match(id, '^(%d+)-'))
local cutoff = ms - tonumber(ARGV[3])
-- XREVRANGE from a point older than every entry walks the whole stream
-- (milliseconds at 10,000 entries), so look at the oldest entry first.
local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if cutoff > 0 and #oldest > 0 and tonumber(string.match(oldest[1][1], '^(%d+)-')) < cutoff then
  local min_id = string.format('%.0f', cutoff) .. '-0'
  local older = redis.call('XREVRANGE', KEYS[1], '(' .. min_id, '-', 'COUNT', 1)
  if #older > 0 then
    trimmed = older[1][1]
    redis.call('XTRIM', KEYS[1], 'MINID', min_id)
  end
end
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[2])
if excess > 0 then
  local cut = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', excess)
  trimmed = cut[#cut][1]
  redis.call('XTRIM', KEYS[1], 'MAXLEN', ARGV[2])
end
if trimmed then
  redis.call('XSETID', KEYS[1], id, 'MAXDELETEDID', trimmed)
end
redis.call('SET', KEYS[2], id, 'PX', ARGV[3])
return {id, 1}
";

/// Reads a channel's entries after a cursor together with the newest trimmed
/// id, atomically so that no trim can fall between the two. KEYS: stream.
/// ARGV: XRANGE start ('-' or '(<id>'), count (0 reads no entries).
/// Returns {max-deleted-entry-id, entries}.
const HISTORY_SINCE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {'0-0', {}} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local deleted = '0-0'
for i = 1, #info, 2 do
  if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
end
local entries = {}
if tonumber(ARGV[2]) > 0 then
  entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
end
return {deleted, entries}
";

/// The store on Redis. Cheap to share: one multiplexed connection that
/// reconnects by itself.
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    compare_and_set: Script,
    put_incident: Script,
    history_append: Script,
    history_since: Script,
    /// [`commit::COMMIT`].
    commit: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects and checks that the server is Redis 7 or newer (the store
    /// needs `SET NX GET` and `XSETID MAXDELETEDID`).
    pub async fn connect(url: &str, key_prefix: &str) -> StoreResult<RedisStore> {
        // The URL may hold a password: errors never repeat it.
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid redis url: {}", e.category())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(CONNECT_RETRIES);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| unavailable("connect", &e))?;
        let store = RedisStore {
            conn,
            prefix: key_prefix.to_owned(),
            compare_and_set: Script::new(COMPARE_AND_SET),
            put_incident: Script::new(PUT_INCIDENT),
            history_append: Script::new(HISTORY_APPEND),
            history_since: Script::new(HISTORY_SINCE),
            commit: Script::new(commit::COMMIT),
        };
        store.check_version().await?;
        tracing::debug!(prefix = key_prefix, "redis store connected");
        Ok(store)
    }

    async fn check_version(&self) -> StoreResult<()> {
        let info = self.query("INFO", redis::cmd("INFO").arg("server")).await?;
        let info = text(info, "INFO")?.unwrap_or_default();
        // A server that does not report a version (a Redis-compatible one)
        // is given the benefit of the doubt: the suite will tell.
        let Some(version) = info.lines().find_map(|line| line.strip_prefix("redis_version:")) else {
            return Ok(());
        };
        let major = version.split('.').next().and_then(|m| m.trim().parse::<u32>().ok());
        match major {
            Some(major) if major >= 7 => Ok(()),
            _ => Err(StoreError::Unavailable(format!(
                "redis 7.0 or newer is required, the server is {}",
                version.trim()
            ))),
        }
    }

    fn key(&self, parts: std::fmt::Arguments<'_>) -> String {
        format!("{}{}", self.prefix, parts)
    }

    fn kv_key(&self, key: &str) -> String {
        self.key(format_args!("kv:{key}"))
    }

    fn unit_key(&self, id: &str) -> String {
        self.key(format_args!("unit:{id}"))
    }

    fn units_key(&self) -> String {
        self.key(format_args!("units"))
    }

    fn geo_key(&self) -> String {
        self.key(format_args!("unit_geo"))
    }

    fn incident_key(&self, id: &str) -> String {
        self.key(format_args!("incident:{id}"))
    }

    fn open_key(&self) -> String {
        self.key(format_args!("incidents:open"))
    }

    fn window_key(&self, key: &str) -> String {
        self.key(format_args!("win:{key}"))
    }

    fn stream_key(&self, channel: &str) -> String {
        self.key(format_args!("hist:{channel}"))
    }

    /// The channel's length is part of the key: without it, channel `a:b`
    /// with dedupe key `c` and channel `a` with dedupe key `b:c` would share
    /// a key.
    fn dedupe_key(&self, channel: &str, dedupe: &str) -> String {
        self.key(format_args!("hist-dedupe:{}:{channel}:{dedupe}", channel.len()))
    }

    /// Runs one command (or `MULTI` pipeline) and returns the raw reply;
    /// `key` names what it touched, for errors.
    async fn query(&self, key: &str, cmd: &redis::Cmd) -> StoreResult<Value> {
        // Clones share the one multiplexed connection.
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn).await.map_err(|e| failed(key, &e))
    }

    async fn query_pipe(&self, key: &str, pipe: &redis::Pipeline) -> StoreResult<()> {
        let mut conn = self.conn.clone();
        pipe.query_async::<()>(&mut conn).await.map_err(|e| failed(key, &e))
    }

    async fn run(&self, key: &str, invocation: &redis::ScriptInvocation<'_>) -> StoreResult<Value> {
        let mut conn = self.conn.clone();
        invocation.invoke_async(&mut conn).await.map_err(|e| failed(key, &e))
    }

    async fn json_values<T: DeserializeOwned>(&self, keys: &[String], field: Option<&str>) -> StoreResult<Vec<T>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let replies = match field {
            None => self.mget(keys).await?,
            Some(field) => {
                let mut pipe = redis::pipe();
                for key in keys {
                    pipe.cmd("HGET").arg(key).arg(field);
                }
                let mut conn = self.conn.clone();
                let reply = pipe
                    .query_async::<Value>(&mut conn)
                    .await
                    .map_err(|e| failed(&keys[0], &e))?;
                items(reply, &keys[0])?
            }
        };
        let mut values = Vec::with_capacity(keys.len());
        for (key, reply) in keys.iter().zip(replies) {
            // Gone between listing and reading: it no longer exists.
            if let Some(raw) = bytes(reply, key)? {
                values.push(from_json(&raw, key)?);
            }
        }
        Ok(values)
    }

    /// The raw values of `keys`, in order, in one `MGET`.
    async fn mget(&self, keys: &[String]) -> StoreResult<Vec<Value>> {
        let Some(first) = keys.first() else {
            return Ok(Vec::new());
        };
        let reply = self.query(first, redis::cmd("MGET").arg(keys)).await?;
        items(reply, first)
    }

    async fn members(&self, key: &str) -> StoreResult<Vec<String>> {
        let reply = self.query(key, redis::cmd("SMEMBERS").arg(key)).await?;
        items(reply, key)?.into_iter().map(|v| required_text(v, key)).collect()
    }
}

#[async_trait]
impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.query("PING", &redis::cmd("PING")).await.map(drop)
    }

    async fn claim_key(&self, key: &str, value: &str, ttl: Duration) -> StoreResult<Option<String>> {
        let key = self.kv_key(key);
        // Redis 7: with NX and GET together, SET answers the value that was
        // already there (and then sets nothing), or nil when it set it.
        let cmd = redis::cmd("SET")
            .arg(&key)
            .arg(value)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(ttl_ms(ttl))
            .to_owned();
        let reply = self.query(&key, &cmd).await?;
        text(reply, &key)
    }

    async fn set_key(&self, key: &str, value: &str, ttl: Duration) -> StoreResult<()> {
        let key = self.kv_key(key);
        let cmd = redis::cmd("SET")
            .arg(&key)
            .arg(value)
            .arg("PX")
            .arg(ttl_ms(ttl))
            .to_owned();
        self.query(&key, &cmd).await.map(drop)
    }

    async fn get_key(&self, key: &str) -> StoreResult<Option<String>> {
        let key = self.kv_key(key);
        let reply = self.query(&key, redis::cmd("GET").arg(&key)).await?;
        text(reply, &key)
    }

    async fn get_keys(&self, keys: &[String]) -> StoreResult<Vec<Option<String>>> {
        let keys: Vec<String> = keys.iter().map(|key| self.kv_key(key)).collect();
        let replies = self.mget(&keys).await?;
        keys.iter().zip(replies).map(|(key, reply)| text(reply, key)).collect()
    }

    async fn delete_key(&self, key: &str) -> StoreResult<()> {
        let key = self.kv_key(key);
        self.query(&key, redis::cmd("DEL").arg(&key)).await.map(drop)
    }

    async fn put_unit(&self, unit: &Unit) -> StoreResult<()> {
        let key = self.unit_key(&unit.id);
        let json = to_json(unit, &key)?;
        let geo = self.geo_key();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&key)
            .arg(json)
            .cmd("SADD")
            .arg(self.units_key())
            .arg(&unit.id);
        match indexable_position(unit) {
            Some((lat, lon)) => pipe.cmd("GEOADD").arg(&geo).arg(lon).arg(lat).arg(&unit.id),
            None => pipe.cmd("ZREM").arg(&geo).arg(&unit.id),
        };
        self.query_pipe(&key, &pipe).await
    }

    async fn unit(&self, id: &str) -> StoreResult<Option<Unit>> {
        let key = self.unit_key(id);
        let reply = self.query(&key, redis::cmd("GET").arg(&key)).await?;
        bytes(reply, &key)?.map(|raw| from_json(&raw, &key)).transpose()
    }

    async fn units_by_id(&self, ids: &[String]) -> StoreResult<Vec<Option<Unit>>> {
        let keys: Vec<String> = ids.iter().map(|id| self.unit_key(id)).collect();
        let replies = self.mget(&keys).await?;
        keys.iter()
            .zip(replies)
            .map(|(key, reply)| bytes(reply, key)?.map(|raw| from_json(&raw, key)).transpose())
            .collect()
    }

    async fn units(&self) -> StoreResult<Vec<Unit>> {
        let mut ids = self.members(&self.units_key()).await?;
        ids.sort();
        let keys: Vec<String> = ids.iter().map(|id| self.unit_key(id)).collect();
        self.json_values(&keys, None).await
    }

    async fn nearest_units(&self, lat: f64, lon: f64, radius_m: f64, limit: usize) -> StoreResult<Vec<NearbyUnit>> {
        // GEOSEARCH rejects these; "nothing near" is the honest answer.
        if limit == 0 || radius_m.is_nan() || radius_m <= 0.0 || radius_m.is_infinite() || !is_indexable(lat, lon) {
            return Ok(Vec::new());
        }
        let key = self.geo_key();
        let cmd = redis::cmd("GEOSEARCH")
            .arg(&key)
            .arg("FROMLONLAT")
            .arg(lon)
            .arg(lat)
            .arg("BYRADIUS")
            .arg(radius_m)
            .arg("m")
            .arg("ASC")
            .arg("COUNT")
            .arg(limit)
            .arg("WITHDIST")
            .to_owned();
        let reply = self.query(&key, &cmd).await?;
        items(reply, &key)?
            .into_iter()
            .map(|hit| {
                let [unit, distance] = pair(hit, &key)?;
                let unit = required_text(unit, &key)?;
                let distance = required_text(distance, &key)?;
                let distance_m = distance
                    .parse::<f64>()
                    .map_err(|_| corrupt(&key, format!("distance {distance:?} is not a number")))?;
                Ok(NearbyUnit { unit, distance_m })
            })
            .collect()
    }

    async fn move_unit(
        &self,
        id: &str,
        lat: f64,
        lon: f64,
        speed_kmh: Option<f64>,
        at: Timestamp,
    ) -> StoreResult<Option<Unit>> {
        let key = self.unit_key(id);
        let reply = self.query(&key, redis::cmd("GET").arg(&key)).await?;
        let mut current = bytes(reply, &key)?;
        for _ in 0..CLAIM_ATTEMPTS {
            let Some(json) = current else {
                return Ok(None);
            };
            let mut unit: Unit = from_json(&json, &key)?;
            if at < unit.at {
                return Ok(Some(unit));
            }
            unit.lat = Some(lat);
            unit.lon = Some(lon);
            unit.at = at;
            if speed_kmh.is_some() {
                unit.speed_kmh = speed_kmh;
            }
            let moved = to_json(&unit, &key)?;
            let reply = self
                .run(&key, self.compare_and_set.key(&key).arg(&json).arg(moved))
                .await?;
            match reply {
                Value::Int(1) => {
                    let geo = self.geo_key();
                    let cmd = match indexable_position(&unit) {
                        Some((lat, lon)) => redis::cmd("GEOADD").arg(&geo).arg(lon).arg(lat).arg(id).clone(),
                        None => redis::cmd("ZREM").arg(&geo).arg(id).clone(),
                    };
                    self.query(&geo, &cmd).await?;
                    return Ok(Some(unit));
                }
                // Written in between (a status change): apply the position
                // to what is there now.
                other => current = bytes(other, &key)?,
            }
        }
        Err(StoreError::Unavailable(format!(
            "unit {id} changed {CLAIM_ATTEMPTS} times while being moved"
        )))
    }

    async fn claim_unit(&self, id: &str, task: &str) -> StoreResult<Claim> {
        let key = self.unit_key(id);
        let reply = self.query(&key, redis::cmd("GET").arg(&key)).await?;
        let mut current = bytes(reply, &key)?;
        for _ in 0..CLAIM_ATTEMPTS {
            let Some(json) = current else {
                return Ok(Claim::NotFound);
            };
            let mut unit: Unit = from_json(&json, &key)?;
            if unit.status != UnitStatus::Available {
                return Ok(Claim::Unavailable(unit.status));
            }
            unit.status = UnitStatus::Assigned;
            unit.task = Some(task.to_owned());
            let claimed = to_json(&unit, &key)?;
            let reply = self
                .run(&key, self.compare_and_set.key(&key).arg(&json).arg(claimed))
                .await?;
            match reply {
                Value::Int(1) => return Ok(Claim::Claimed(unit)),
                // Someone wrote the unit in between (most likely the
                // winner of a race): decide again on what is there now.
                other => current = bytes(other, &key)?,
            }
        }
        Err(StoreError::Unavailable(format!(
            "unit {id} changed {CLAIM_ATTEMPTS} times while being claimed"
        )))
    }

    async fn put_incident(&self, incident: &Incident) -> StoreResult<()> {
        let key = self.incident_key(&incident.id);
        let json = to_json(incident, &key)?;
        let open = if incident.status.is_open() { "1" } else { "0" };
        let reply = self
            .run(
                &key,
                self.put_incident
                    .key(&key)
                    .key(self.open_key())
                    .arg(&incident.id)
                    .arg(incident.version)
                    .arg(json)
                    .arg(open)
                    .arg(ttl_ms(CLOSED_INCIDENT_TTL)),
            )
            .await?;
        match reply {
            // Stored, or an older version that was rightly ignored.
            Value::Int(1 | 0) => Ok(()),
            Value::Int(-1) => Err(corrupt(&key, "stored version is not a number".to_owned())),
            other => Err(corrupt(&key, format!("unexpected script reply {}", describe(&other)))),
        }
    }

    async fn incident(&self, id: &str) -> StoreResult<Option<Incident>> {
        let key = self.incident_key(id);
        let reply = self.query(&key, redis::cmd("HGET").arg(&key).arg("j")).await?;
        bytes(reply, &key)?.map(|raw| from_json(&raw, &key)).transpose()
    }

    async fn open_incidents(&self) -> StoreResult<Vec<Incident>> {
        let mut ids = self.members(&self.open_key()).await?;
        ids.sort();
        let keys: Vec<String> = ids.iter().map(|id| self.incident_key(id)).collect();
        let incidents: Vec<Incident> = self.json_values(&keys, Some("j")).await?;
        // An incident closed between SMEMBERS and HGET is no longer open.
        Ok(incidents.into_iter().filter(|i| i.status.is_open()).collect())
    }

    async fn window_add(&self, key: &str, member: &str, at_ms: i64, keep_ms: i64) -> StoreResult<()> {
        let key = self.window_key(key);
        let keep = Duration::from_millis(u64::try_from(keep_ms).unwrap_or(0));
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZADD")
            .arg(&key)
            .arg(at_ms)
            .arg(member)
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(format!("({}", at_ms.saturating_sub(keep_ms)))
            // A window nobody adds to for `keep_ms` would be empty at the
            // next add anyway; expiring it keeps idle windows from piling up.
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl_ms(keep));
        self.query_pipe(&key, &pipe).await
    }

    async fn window_range(&self, key: &str, from_ms: i64, to_ms: i64) -> StoreResult<Vec<(String, i64)>> {
        let key = self.window_key(key);
        let cmd = redis::cmd("ZRANGEBYSCORE")
            .arg(&key)
            .arg(from_ms)
            .arg(to_ms)
            .arg("WITHSCORES")
            .to_owned();
        let reply = self.query(&key, &cmd).await?;
        let flat = items(reply, &key)?;
        let mut members = Vec::with_capacity(flat.len() / 2);
        let mut flat = flat.into_iter();
        while let Some(member) = flat.next() {
            let member = required_text(member, &key)?;
            let score = flat
                .next()
                .ok_or_else(|| corrupt(&key, "member without a score".to_owned()))
                .and_then(|s| score_ms(s, &key))?;
            members.push((member, score));
        }
        Ok(members)
    }

    async fn history_append(
        &self,
        channel: &str,
        dedupe: &str,
        payload: &[u8],
        limits: HistoryLimits,
    ) -> StoreResult<Appended> {
        let key = self.stream_key(channel);
        let reply = self
            .run(
                &key,
                self.history_append
                    .key(&key)
                    .key(self.dedupe_key(channel, dedupe))
                    .arg(payload)
                    .arg(limits.max_len)
                    .arg(ttl_ms(limits.max_age)),
            )
            .await?;
        let [cursor, fresh] = pair(reply, &key)?;
        let cursor = required_text(cursor, &key)?;
        let fresh = match fresh {
            Value::Int(fresh) => fresh == 1,
            other => {
                return Err(corrupt(&key, format!("unexpected script reply {}", describe(&other))));
            }
        };
        Ok(Appended { cursor, fresh })
    }

    async fn history_since(&self, channel: &str, cursor: Option<&str>, limit: usize) -> StoreResult<HistoryRead> {
        let key = self.stream_key(channel);
        // A cursor we cannot read is treated as older than anything: the
        // caller gets every retained entry and is told it missed some.
        let cursor = cursor.map(str::parse::<StreamId>);
        let (start, limit) = match cursor {
            // Nothing can follow the largest id, and Redis refuses `(` on it.
            Some(Ok(StreamId::MAX)) => (String::from("-"), 0),
            Some(Ok(after)) => (format!("({after}"), limit),
            None | Some(Err(())) => (String::from("-"), limit),
        };
        let reply = self
            .run(&key, self.history_since.key(&key).arg(start).arg(limit))
            .await?;
        let [deleted, entries] = pair(reply, &key)?;
        let deleted = required_text(deleted, &key)?;
        let deleted: StreamId = deleted
            .parse()
            .map_err(|()| corrupt(&key, format!("max-deleted-entry-id {deleted:?} is not a stream id")))?;
        let gap = match cursor {
            None => false,
            Some(Ok(after)) => after < deleted,
            Some(Err(())) => true,
        };
        let entries = items(entries, &key)?
            .into_iter()
            .map(|entry| stream_entry(entry, &key))
            .collect::<StoreResult<_>>()?;
        Ok(HistoryRead { entries, gap })
    }

    async fn history_head(&self, channel: &str) -> StoreResult<Option<String>> {
        let key = self.stream_key(channel);
        let cmd = redis::cmd("XREVRANGE")
            .arg(&key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .to_owned();
        let reply = self.query(&key, &cmd).await?;
        items(reply, &key)?
            .into_iter()
            .next()
            .map(|entry| stream_entry(entry, &key).map(|e| e.cursor))
            .transpose()
    }

    async fn commit(&self, commit: &Commit) -> StoreResult<Committed> {
        self.commit_atomically(commit).await
    }
}

/// A reply Redis could not have sent for a sane value means the key holds
/// something else (`WRONGTYPE`, garbage): that is corruption, not an outage.
fn failed(key: &str, e: &RedisError) -> StoreError {
    let corrupt_reply = matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType);
    if corrupt_reply || e.code() == Some("WRONGTYPE") {
        corrupt(key, e.to_string())
    } else {
        unavailable(key, e)
    }
}

fn unavailable(what: &str, e: &RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis {what}: {e}"))
}

fn corrupt(key: &str, message: String) -> StoreError {
    StoreError::Corrupt {
        key: key.to_owned(),
        message,
    }
}

/// What kind of reply this is, without its (possibly huge) content.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Int(_) => "an integer",
        Value::BulkString(_) | Value::SimpleString(_) | Value::VerbatimString { .. } => "a string",
        Value::Array(_) | Value::Set(_) => "an array",
        Value::Map(_) | Value::Attribute { .. } => "a map",
        Value::Okay => "OK",
        Value::Double(_) => "a double",
        Value::Boolean(_) => "a boolean",
        Value::BigNumber(_) => "a big number",
        Value::Push { .. } => "a push",
        Value::ServerError(_) => "an error",
        _ => "an unknown reply",
    }
}

fn bytes(value: Value, key: &str) -> StoreResult<Option<Vec<u8>>> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(raw) => Ok(Some(raw)),
        Value::SimpleString(text) => Ok(Some(text.into_bytes())),
        other => Err(corrupt(key, format!("expected a string, got {}", describe(&other)))),
    }
}

fn text(value: Value, key: &str) -> StoreResult<Option<String>> {
    bytes(value, key)?
        .map(|raw| String::from_utf8(raw).map_err(|_| corrupt(key, "value is not UTF-8".to_owned())))
        .transpose()
}

fn required_text(value: Value, key: &str) -> StoreResult<String> {
    text(value, key)?.ok_or_else(|| corrupt(key, "expected a string, got nil".to_owned()))
}

fn items(value: Value, key: &str) -> StoreResult<Vec<Value>> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        other => Err(corrupt(key, format!("expected an array, got {}", describe(&other)))),
    }
}

fn pair(value: Value, key: &str) -> StoreResult<[Value; 2]> {
    let items = items(value, key)?;
    let len = items.len();
    <[Value; 2]>::try_from(items).map_err(|_| corrupt(key, format!("expected 2 items, got {len}")))
}

fn score_ms(value: Value, key: &str) -> StoreResult<i64> {
    let score = match value {
        Value::Double(score) => score,
        other => {
            let text = required_text(other, key)?;
            text.parse::<f64>()
                .map_err(|_| corrupt(key, format!("score {text:?} is not a number")))?
        }
    };
    // Scores are the i64 milliseconds we stored; doubles hold them exactly.
    if !score.is_finite() || score.fract() != 0.0 {
        return Err(corrupt(key, format!("score {score} is not whole milliseconds")));
    }
    Ok(score as i64)
}

/// One `[id, [field, value, ...]]` entry of XRANGE.
fn stream_entry(value: Value, key: &str) -> StoreResult<HistoryEntry> {
    let [id, fields] = pair(value, key)?;
    let cursor = required_text(id, key)?;
    let mut fields = items(fields, key)?.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        if bytes(name, key)?.as_deref() == Some(b"p".as_slice()) {
            let payload = bytes(value, key)?.unwrap_or_default();
            return Ok(HistoryEntry { cursor, payload });
        }
    }
    Err(corrupt(key, format!("entry {cursor} has no payload field")))
}

fn from_json<T: DeserializeOwned>(raw: &[u8], key: &str) -> StoreResult<T> {
    serde_json::from_slice(raw).map_err(|e| corrupt(key, format!("invalid JSON: {e}")))
}

fn to_json<T: Serialize>(value: &T, key: &str) -> StoreResult<Vec<u8>> {
    // Cannot fail for the model's types (no maps with non-string keys), but
    // if it ever did, the value for this key is what is wrong.
    serde_json::to_vec(value).map_err(|e| corrupt(key, format!("cannot encode JSON: {e}")))
}
