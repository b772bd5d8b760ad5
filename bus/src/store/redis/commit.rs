//! [`Store::commit`] on Redis: one Lua script, [`COMMIT`], checks every
//! expectation of a [`Commit`] and then makes every write. Redis runs a
//! script without running anything else, so another client sees all of a
//! commit or none of it; a script cannot roll back, so it must never start
//! writing until nothing can fail any more — every check (expectations, key
//! types, stored versions) comes before the first write.
//!
//! The writes are exactly those of [`Store::delete_key`],
//! [`Store::put_incident`], [`Store::put_unit`] and [`Store::set_key`], on
//! the same keys (see the table in [`super`]); no key is new. The script
//! never encodes JSON: Lua's cjson writes numbers with 14 significant
//! digits, which would round positions, so incidents and units are
//! serialised here and stored as given. It decodes a unit only to read its
//! `task` and `status`.
//!
//! A stored incident whose version is not a number makes the commit fail
//! with [`StoreError::Corrupt`] as `put_incident` does, and so does a key of
//! the wrong type — in both cases having written nothing.
//!
//! [`Store::commit`]: super::Store::commit
//! [`Store::delete_key`]: super::Store::delete_key
//! [`Store::put_incident`]: super::Store::put_incident
//! [`Store::put_unit`]: super::Store::put_unit
//! [`Store::set_key`]: super::Store::set_key
//! [`StoreError::Corrupt`]: super::StoreError::Corrupt

use redis::Value;

use super::{
    CLOSED_INCIDENT_TTL, Commit, Committed, RedisStore, StoreResult, corrupt, describe, indexable_position,
    required_text, text, to_json, ttl_ms,
};

/// KEYS: the open set, the units set, the geo set, then one group after
/// another: the expected keys, the claimed units' keys, the keys to delete,
/// the incidents' keys, the units' keys, the keys to set.
///
/// ARGV: the sizes of those six groups, the TTL in ms of an incident that is
/// not open, then the expected values (one each), the claimed tasks (one
/// each; '' for a unit that must be available with no task), nothing for deletes, per incident id, version, JSON and '1' when
/// open, per unit id, JSON, lon and lat ('' and '' when not indexable), per
/// key to set value and TTL in ms.
///
/// Returns 1 when done; `{'key', i, found}` or `{'claim', i, task}` for the
/// i-th (1-based) broken expectation of its group, found/task nil when
/// missing; `{'corrupt', k, why}` for `KEYS[k]` holding something it must
/// not.
///
/// Versions compare as Lua numbers (doubles), as in `PUT_INCIDENT`.
pub(super) const COMMIT: &str = r"
local function wrong_type(key, want)
  local found = redis.call('TYPE', key)['ok']
  return found ~= 'none' and found ~= want
end

local n_expect, n_claim, n_delete = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local n_incident, n_unit, n_set = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local closed_ttl = ARGV[7]
-- Where each group starts in KEYS and ARGV, less one.
local expect_k, expect_a = 3, 7
local claim_k, claim_a = expect_k + n_expect, expect_a + n_expect
local delete_k = claim_k + n_claim
local incident_k, incident_a = delete_k + n_delete, claim_a + n_claim
local unit_k, unit_a = incident_k + n_incident, incident_a + 4 * n_incident
local set_k, set_a = unit_k + n_unit, unit_a + 4 * n_unit

-- Checks. Nothing may be written before all of them passed.
if n_incident > 0 and wrong_type(KEYS[1], 'set') then return {'corrupt', 1, 'not a set'} end
if n_unit > 0 and wrong_type(KEYS[2], 'set') then return {'corrupt', 2, 'not a set'} end
if n_unit > 0 and wrong_type(KEYS[3], 'zset') then return {'corrupt', 3, 'not a geo set'} end
for i = 1, n_expect do
  local key = KEYS[expect_k + i]
  if wrong_type(key, 'string') then return {'corrupt', expect_k + i, 'not a string'} end
  local found = redis.call('GET', key)
  if found ~= ARGV[expect_a + i] then return {'key', i, found} end
end
for i = 1, n_claim do
  local key = KEYS[claim_k + i]
  if wrong_type(key, 'string') then return {'corrupt', claim_k + i, 'not a string'} end
  local raw = redis.call('GET', key)
  local task = false
  if raw then
    local ok, unit = pcall(cjson.decode, raw)
    if not ok or type(unit) ~= 'table' then return {'corrupt', claim_k + i, 'invalid unit JSON'} end
    -- JSON null decodes to cjson.null, not a string: no task.
    if type(unit['task']) == 'string' then task = unit['task'] end
  end
  local want = ARGV[claim_a + i]
  if want == '' then
    -- Expected available: no task, and on duty and free.
    local status = raw and cjson.decode(raw)['status']
    if task or status ~= 'available' then return {'claim', i, task} end
  elseif task ~= want then
    return {'claim', i, task}
  end
end
for i = 1, n_incident do
  local key = KEYS[incident_k + i]
  if wrong_type(key, 'hash') then return {'corrupt', incident_k + i, 'not a hash'} end
  local stored = redis.call('HGET', key, 'v')
  if stored and not tonumber(stored) then
    return {'corrupt', incident_k + i, 'stored version is not a number'}
  end
end

-- Writes, deletes before sets (a key in both ends up set).
for i = 1, n_delete do
  redis.call('DEL', KEYS[delete_k + i])
end
for i = 1, n_incident do
  local key, a = KEYS[incident_k + i], incident_a + 4 * (i - 1)
  local stored = redis.call('HGET', key, 'v')
  -- Read again: an earlier entry of this commit may have written it.
  if not stored or not (tonumber(stored) > tonumber(ARGV[a + 2])) then
    redis.call('HSET', key, 'v', ARGV[a + 2], 'j', ARGV[a + 3])
    if ARGV[a + 4] == '1' then
      redis.call('SADD', KEYS[1], ARGV[a + 1])
      redis.call('PERSIST', key)
    else
      redis.call('SREM', KEYS[1], ARGV[a + 1])
      redis.call('PEXPIRE', key, closed_ttl)
    end
  end
end
for i = 1, n_unit do
  local a = unit_a + 4 * (i - 1)
  local id = ARGV[a + 1]
  redis.call('SET', KEYS[unit_k + i], ARGV[a + 2])
  redis.call('SADD', KEYS[2], id)
  if ARGV[a + 3] == '' then
    redis.call('ZREM', KEYS[3], id)
  else
    redis.call('GEOADD', KEYS[3], ARGV[a + 3], ARGV[a + 4], id)
  end
end
for i = 1, n_set do
  local a = set_a + 2 * (i - 1)
  redis.call('SET', KEYS[set_k + i], ARGV[a + 1], 'PX', ARGV[a + 2])
end
return 1
";

/// KEYS before the first group: open set, units set, geo set.
const FIXED_KEYS: usize = 3;

impl RedisStore {
    /// [`super::Store::commit`]: one run of [`COMMIT`].
    pub(super) async fn commit_atomically(&self, commit: &Commit) -> StoreResult<Committed> {
        if commit.is_empty()
            && commit.expect_keys.is_empty()
            && commit.expect_claims.is_empty()
            && commit.expect_available.is_empty()
        {
            return Ok(Committed::Done);
        }
        // One group for the script: a unit expected available is expected
        // to hold the empty task.
        let claims: Vec<(&str, &str)> = commit
            .expect_claims
            .iter()
            .map(|(unit, task)| (unit.as_str(), task.as_str()))
            .chain(commit.expect_available.iter().map(|unit| (unit.as_str(), "")))
            .collect();
        let mut keys = Vec::with_capacity(
            FIXED_KEYS
                + commit.expect_keys.len()
                + claims.len()
                + commit.delete_keys.len()
                + commit.incidents.len()
                + commit.units.len()
                + commit.set_keys.len(),
        );
        keys.extend([self.open_key(), self.units_key(), self.geo_key()]);
        keys.extend(commit.expect_keys.iter().map(|(key, _)| self.kv_key(key)));
        keys.extend(claims.iter().map(|(unit, _)| self.unit_key(unit)));
        keys.extend(commit.delete_keys.iter().map(|key| self.kv_key(key)));
        keys.extend(commit.incidents.iter().map(|incident| self.incident_key(&incident.id)));
        keys.extend(commit.units.iter().map(|unit| self.unit_key(&unit.id)));
        keys.extend(commit.set_keys.iter().map(|(key, _, _)| self.kv_key(key)));

        let mut invocation = self.commit.prepare_invoke();
        for key in &keys {
            invocation.key(key);
        }
        invocation
            .arg(commit.expect_keys.len())
            .arg(claims.len())
            .arg(commit.delete_keys.len())
            .arg(commit.incidents.len())
            .arg(commit.units.len())
            .arg(commit.set_keys.len())
            .arg(ttl_ms(CLOSED_INCIDENT_TTL));
        for (_, value) in &commit.expect_keys {
            invocation.arg(value);
        }
        for (_, task) in &claims {
            invocation.arg(*task);
        }
        for incident in &commit.incidents {
            let json = to_json(incident, &self.incident_key(&incident.id))?;
            let open = if incident.status.is_open() { "1" } else { "0" };
            invocation.arg(&incident.id).arg(incident.version).arg(json).arg(open);
        }
        for unit in &commit.units {
            invocation.arg(&unit.id).arg(to_json(unit, &self.unit_key(&unit.id))?);
            // The same values put_unit hands GEOADD, so both index alike.
            match indexable_position(unit) {
                Some((lat, lon)) => invocation.arg(lon).arg(lat),
                None => invocation.arg("").arg(""),
            };
        }
        for (_, value, ttl) in &commit.set_keys {
            invocation.arg(value).arg(ttl_ms(*ttl));
        }

        let reply = self.run("commit", &invocation).await?;
        outcome(reply, commit, &claims, &keys)
    }
}

/// The script's reply as a [`Committed`], or the corruption it found.
fn outcome(reply: Value, commit: &Commit, claims: &[(&str, &str)], keys: &[String]) -> StoreResult<Committed> {
    let unexpected = |what: &str| corrupt("commit", format!("unexpected script reply {what}"));
    let items = match reply {
        Value::Int(1) => return Ok(Committed::Done),
        Value::Array(items) => items,
        other => return Err(unexpected(describe(&other))),
    };
    let [tag, index, detail]: [Value; 3] = items
        .try_into()
        .map_err(|items: Vec<Value>| unexpected(&format!("of {} items", items.len())))?;
    let tag = required_text(tag, "commit")?;
    // 1-based, as Lua counts.
    let index = match index {
        Value::Int(i) => usize::try_from(i).ok().and_then(|i| i.checked_sub(1)),
        _ => None,
    };
    match (tag.as_str(), index) {
        ("key", Some(i)) if i < commit.expect_keys.len() => Ok(Committed::KeyChanged {
            key: commit.expect_keys[i].0.clone(),
            found: text(detail, &keys[FIXED_KEYS + i])?,
        }),
        ("claim", Some(i)) if i < claims.len() => Ok(Committed::ClaimLost {
            unit: claims[i].0.to_owned(),
            task: text(detail, &keys[FIXED_KEYS + commit.expect_keys.len() + i])?,
        }),
        ("corrupt", Some(k)) if k < keys.len() => {
            let why = text(detail, &keys[k])?.unwrap_or_default();
            Err(corrupt(&keys[k], why))
        }
        _ => Err(unexpected(&format!("{tag:?} at {index:?}"))),
    }
}
