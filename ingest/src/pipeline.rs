//! The path every input event takes, whatever channel it came by (HTTP,
//! CAP, MQTT): validate, normalise, claim its idempotency key, produce to
//! `events` (and every rejected item to `deadletter`), wait for Kafka's
//! acknowledgement, then record the key.
//!
//! Idempotency key protocol, on (`source`, `source_id`) in the shared Store:
//! 1. `claim_key(k, "pending:<id>:<expires_ms>")`: exactly one request (of
//!    any ingest process) owns a fresh key.
//! 2. The owner produces; only after the broker's ack does it set
//!    `k = "<id>"`. On failure it deletes `k` (so a retry is not called a
//!    duplicate); a key never points at an event that is not in Kafka.
//! 3. A request that finds `"<id>"` answers `duplicate: true` with that id.
//!    One that finds `pending` waits (up to the delivery timeout) for the
//!    owner to finish; if it does not, the whole request gets 503 +
//!    Retry-After, never a false duplicate. A pending marker past its expiry
//!    belongs to an owner that died between claim and finish: it is taken
//!    over (the narrow race of two takers is accepted; both events carry
//!    the same source_id, so the router can still link them).
//!
//! A request succeeds only when every record it produced (events and dead
//! letters) was acknowledged; otherwise it is a 503 and no event of it is
//! reported accepted. An event that Kafka did acknowledge in a request that
//! failed overall keeps its key: it *is* in Kafka, so the retry is answered
//! `duplicate: true` with its id rather than producing it twice.
//!
//! This module must never report an event accepted before its ack, and
//! never drop a rejected item without a dead letter.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::kafka::{OutRecord, ProduceError};
use bus::metrics as m;
use bus::model::{Channel, DeadLetter, Event, FieldError, Flag, Source};
use bus::store::StoreError;
use bus::topics::Topic;
use bus::validate::{demote_cap_attrs, normalise, validate_input};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::Ingest;
use crate::error::IngestError;

/// A dead letter keeps at most this many raw bytes: a record must stay
/// under Kafka's default 1 MB message limit even after JSON escaping.
pub const DEADLETTER_MAX_RAW_BYTES: usize = 128 * 1024;

/// How often a request waiting on another request's pending key looks
/// again.
const PENDING_POLL: Duration = Duration::from_millis(50);

/// One item to ingest: its position in the request, its raw bytes (for
/// the dead letter) and its JSON, or why it has none.
#[derive(Debug, Clone)]
pub struct Submission {
    pub index: usize,
    /// Shared: the items of one CAP alert all point at its one body.
    pub raw: Arc<Vec<u8>>,
    pub value: Result<Value, Vec<FieldError>>,
}

/// Where a batch came from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub channel: Channel,
    /// Fills a missing `source` (MQTT sensors).
    pub default_source: Option<Source>,
    pub content_type: Option<String>,
    /// Who sent it (token subject, MQTT topic): names the sender of a dead
    /// letter whose own `source` is unusable.
    pub sender: Option<String>,
    /// The jurisdictions the sender may act in (its token's); `None`: all
    /// (an admin, a `*` token, the MQTT bridge). Unit positions are checked
    /// against them; a call is accepted wherever it falls (a caller near a
    /// station boundary is still a caller).
    pub jurisdictions: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accepted {
    pub index: usize,
    pub id: String,
    pub source_id: String,
    pub duplicate: bool,
    /// What was corrected in a call accepted rather than refused (empty
    /// for a duplicate: it produced nothing).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejected {
    pub index: usize,
    pub errors: Vec<FieldError>,
}

/// The response body of every ingest endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outcome {
    pub accepted: Vec<Accepted>,
    pub rejected: Vec<Rejected>,
}

/// An event this request owns the idempotency key of.
struct Owned {
    index: usize,
    key: String,
    event: Event,
}

/// A valid item: its event, and the bytes it was sent as when the event
/// does not hold all of them (a call cut or stripped of a field), for the
/// dead letter that keeps the original.
struct Valid {
    index: usize,
    event: Event,
    original: Option<Arc<Vec<u8>>>,
}

enum Claimed {
    Owned,
    /// Owned again after a produce that may have reached Kafka: the event
    /// must go out with this id, so that if the first copy did land the
    /// two are one event to every consumer.
    OwnedAs(String),
    Duplicate(String),
    /// Another request holds the key and did not finish in time.
    Busy,
}

impl Ingest {
    /// Ingests a batch; see the module doc for the guarantees.
    pub async fn submit(&self, items: Vec<Submission>, origin: &Origin) -> Result<Outcome, IngestError> {
        let now = Utc::now();
        let mut outcome = Outcome::default();
        let mut dead: Vec<DeadLetter> = Vec::new();
        let mut valid: Vec<Valid> = Vec::new();

        for item in items {
            let source_label = source_label(item.value.as_ref().ok(), origin.default_source);
            ::metrics::counter!(m::INGEST_EVENTS_RECEIVED_TOTAL, "source" => source_label).increment(1);
            let checked = item
                .value
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|v| validate_input(v, &self.rules, origin.default_source, now));
            match checked {
                Ok(mut input) => {
                    // Authority comes from the channel, not the payload.
                    if origin.channel != Channel::Cap && demote_cap_attrs(&mut input.attrs) {
                        ::metrics::counter!(m::INGEST_CAP_ATTRS_DEMOTED_TOTAL).increment(1);
                    }
                    let original = input.flags.iter().any(|f| f.loses_content()).then(|| item.raw.clone());
                    valid.push(Valid {
                        index: item.index,
                        event: normalise(input, &self.city, now),
                        original,
                    });
                }
                Err(errors) => {
                    ::metrics::counter!(m::INGEST_EVENTS_REJECTED_TOTAL, "source" => source_label).increment(1);
                    let source = item
                        .value
                        .as_ref()
                        .ok()
                        .and_then(|v| v.get("source"))
                        .and_then(Value::as_str)
                        .and_then(Source::parse)
                        .map(|s| s.as_str().to_owned());
                    dead.push(self.dead_letter(&item.raw, errors.clone(), origin, source, now));
                    outcome.rejected.push(Rejected {
                        index: item.index,
                        errors,
                    });
                }
            }
        }

        // The sent original of a call accepted with corrections, linked by
        // its event id, in the same produce as the event: nothing the caller
        // sent is lost once the 202 is out. Only for events this request
        // owns: a duplicate's first copy has its own.
        let mut originals: HashMap<usize, Arc<Vec<u8>>> = valid
            .iter_mut()
            .filter_map(|v| v.original.take().map(|raw| (v.index, raw)))
            .collect();
        let (owned, duplicates) = self.claim_all(idempotency_scope(origin), valid).await?;
        for o in &owned {
            if let Some(raw) = originals.remove(&o.index) {
                dead.push(self.original_of(&raw, &o.event, origin, now));
            }
        }
        self.produce(&owned, &dead, origin.channel).await?;

        for o in &owned {
            let source = o.event.input.source.as_str();
            ::metrics::counter!(m::INGEST_EVENTS_ACCEPTED_TOTAL, "source" => source).increment(1);
            for flag in &o.event.input.flags {
                ::metrics::counter!(m::INGEST_EVENTS_FLAGGED_TOTAL, "flag" => flag.as_str()).increment(1);
            }
            outcome.accepted.push(Accepted {
                index: o.index,
                id: o.event.id.clone(),
                source_id: o.event.input.source_id.clone(),
                duplicate: false,
                flags: o.event.input.flags.clone(),
            });
        }
        for d in &duplicates {
            ::metrics::counter!(m::INGEST_EVENTS_DUPLICATE_TOTAL, "source" => d.1).increment(1);
        }
        outcome.accepted.extend(duplicates.into_iter().map(|d| d.0));
        outcome.accepted.sort_by_key(|a| a.index);
        Ok(outcome)
    }

    /// Writes dead letters for a body that could not be split into items.
    /// Returns an error only when Kafka did not take them.
    pub async fn dead_letter_body(
        &self,
        raw: &[u8],
        errors: Vec<FieldError>,
        origin: &Origin,
    ) -> Result<(), IngestError> {
        let label = origin.default_source.map_or("unknown", Source::as_str);
        ::metrics::counter!(m::INGEST_EVENTS_RECEIVED_TOTAL, "source" => label).increment(1);
        ::metrics::counter!(m::INGEST_EVENTS_REJECTED_TOTAL, "source" => label).increment(1);
        let dl = self.dead_letter(raw, errors, origin, None, Utc::now());
        self.produce(&[], &[dl], origin.channel).await
    }

    /// The dead letter that keeps the sent original of an accepted call
    /// whose event does not hold all of it.
    fn original_of(&self, raw: &[u8], event: &Event, origin: &Origin, now: DateTime<Utc>) -> DeadLetter {
        let flags: Vec<&str> = event.input.flags.iter().map(|f| f.as_str()).collect();
        let why = FieldError::new(
            "",
            format!(
                "accepted as event {} with flags {}: this is the original as sent",
                event.id,
                flags.join(", ")
            ),
        );
        let source = Some(event.input.source.as_str().to_owned());
        let mut dl = self.dead_letter(raw, vec![why], origin, source, now);
        dl.event_id = Some(event.id.clone());
        dl
    }

    pub(crate) fn dead_letter(
        &self,
        raw: &[u8],
        mut errors: Vec<FieldError>,
        origin: &Origin,
        source: Option<String>,
        now: DateTime<Utc>,
    ) -> DeadLetter {
        let kept = if raw.len() > DEADLETTER_MAX_RAW_BYTES {
            errors.push(FieldError::new(
                "",
                format!(
                    "raw input was {} bytes; only the first {DEADLETTER_MAX_RAW_BYTES} are kept here",
                    raw.len()
                ),
            ));
            &raw[..DEADLETTER_MAX_RAW_BYTES]
        } else {
            raw
        };
        let mut dl = DeadLetter::new(kept, errors, origin.channel, now);
        dl.source = source
            .or_else(|| origin.default_source.map(|s| s.as_str().to_owned()))
            .or_else(|| origin.sender.clone());
        dl.content_type.clone_from(&origin.content_type);
        dl
    }

    /// Claims the key of every valid event, all at once (one pipeline on
    /// Redis rather than a round trip per event). On a store failure or a
    /// key held by an unfinished request, releases what it claimed and
    /// fails the whole request with 503.
    async fn claim_all(
        &self,
        scope: &str,
        valid: Vec<Valid>,
    ) -> Result<(Vec<Owned>, Vec<(Accepted, &'static str)>), IngestError> {
        // The same (source, source_id) twice in one request: the later one
        // is a duplicate of the earlier, answered without the store.
        let mut seen: HashSet<String> = HashSet::new();
        let mut unique: Vec<(usize, String, Event)> = Vec::new();
        let mut repeats: Vec<(usize, String, Event)> = Vec::new();
        for Valid { index, event, .. } in valid {
            let key = idempotency_key(scope, event.input.source, &event.input.source_id);
            if seen.insert(key.clone()) {
                unique.push((index, key, event));
            } else {
                repeats.push((index, key, event));
            }
        }
        let claims = futures::future::join_all(unique.iter().map(|(_, key, event)| self.claim(key, &event.id))).await;

        let mut owned: Vec<Owned> = Vec::new();
        let mut duplicates = Vec::new();
        // The id each key stands for in this request's answer.
        let mut ids: HashMap<String, String> = HashMap::new();
        let mut refusal: Option<IngestError> = None;
        for ((index, key, event), claimed) in unique.into_iter().zip(claims) {
            match claimed {
                Ok(Claimed::Owned) => {
                    ids.insert(key.clone(), event.id.clone());
                    owned.push(Owned { index, key, event });
                }
                Ok(Claimed::OwnedAs(id)) => {
                    let mut event = event;
                    event.id = id;
                    ids.insert(key.clone(), event.id.clone());
                    owned.push(Owned { index, key, event });
                }
                Ok(Claimed::Duplicate(id)) => {
                    ids.insert(key, id.clone());
                    duplicates.push(duplicate_of(index, id, &event));
                }
                Ok(Claimed::Busy) => {
                    refusal.get_or_insert_with(|| {
                        self.unavailable(format!(
                            "source_id '{}' is being ingested by another request; retry",
                            event.input.source_id
                        ))
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "idempotency store failed; refusing the request");
                    refusal.get_or_insert_with(|| {
                        self.unavailable("the idempotency store is unavailable; retry".to_owned())
                    });
                }
            }
        }
        if let Some(refusal) = refusal {
            self.release(&owned).await;
            return Err(refusal);
        }
        for (index, key, event) in repeats {
            // Every repeated key was claimed (or found done) above.
            let id = ids.get(&key).cloned().unwrap_or_default();
            duplicates.push(duplicate_of(index, id, &event));
        }
        Ok((owned, duplicates))
    }

    async fn claim(&self, key: &str, id: &str) -> Result<Claimed, StoreError> {
        let ttl = self.idempotency_ttl;
        let give_up = Instant::now() + self.config.kafka.delivery_timeout() + Duration::from_secs(1);
        // The id of an earlier attempt whose produce may have landed.
        let mut earlier: Option<String> = None;
        loop {
            let expires = Utc::now().timestamp_millis() + self.pending_expiry.as_millis() as i64;
            let marker = format!("pending:{}:{expires}", earlier.as_deref().unwrap_or(id));
            let Some(existing) = self.store.claim_key(key, &marker, ttl).await? else {
                return Ok(earlier.map_or(Claimed::Owned, Claimed::OwnedAs));
            };
            match parse_marker(&existing) {
                Marker::Done(id) => return Ok(Claimed::Duplicate(id)),
                Marker::Maybe(id) => {
                    // Take the key over (unless another retry did) and send
                    // the event again under the earlier attempt's id.
                    if self.store.get_key(key).await?.as_deref() == Some(existing.as_str()) {
                        self.store.delete_key(key).await?;
                    }
                    earlier = Some(id);
                }
                Marker::Pending { expires_ms } if expires_ms < Utc::now().timestamp_millis() => {
                    // The owner died between claim and finish. Take over,
                    // unless somebody else did meanwhile.
                    if self.store.get_key(key).await?.as_deref() == Some(existing.as_str()) {
                        tracing::warn!(%key, "taking over a stale pending idempotency key");
                        self.store.delete_key(key).await?;
                    }
                }
                Marker::Pending { .. } => {
                    if Instant::now() >= give_up {
                        return Ok(Claimed::Busy);
                    }
                    tokio::time::sleep(PENDING_POLL).await;
                }
            }
        }
    }

    /// Deletes the pending keys of events that did not reach Kafka, so a
    /// retry is not called a duplicate. Best effort: a key that cannot be
    /// deleted expires as a stale pending marker.
    async fn release(&self, owned: &[Owned]) {
        let deletes = owned.iter().map(|o| self.store.delete_key(&o.key));
        for (o, r) in owned.iter().zip(futures::future::join_all(deletes).await) {
            if let Err(e) = r {
                tracing::warn!(key = %o.key, error = %e, "could not release an idempotency key");
            }
        }
    }

    /// Produces the events and dead letters and waits for every ack; then
    /// records the keys. Any failure: 503 (or 500 for a refused record).
    async fn produce(&self, owned: &[Owned], dead: &[DeadLetter], channel: Channel) -> Result<(), IngestError> {
        let mut records = Vec::with_capacity(owned.len() + dead.len());
        for o in owned {
            records.push(
                OutRecord::json(
                    Topic::Events,
                    o.event.jurisdiction.clone(),
                    o.event.id.clone(),
                    &o.event,
                )
                .map_err(|e| IngestError::Internal(e.to_string()))?,
            );
        }
        for dl in dead {
            let key = dl.source.clone().unwrap_or_else(|| "unknown".to_owned());
            records.push(
                OutRecord::json(Topic::DeadLetter, key, bus::model::new_id(), dl)
                    .map_err(|e| IngestError::Internal(e.to_string()))?,
            );
        }
        if records.is_empty() {
            return Ok(());
        }
        let results = self.producer.send_all(&records).await;
        let (event_results, dead_results) = results.split_at(owned.len());

        let mut failure: Option<&ProduceError> = None;
        let mut finish = Vec::new();
        let mut release = Vec::new();
        for (o, r) in owned.iter().zip(event_results) {
            match r {
                Ok(_) => finish.push(o),
                Err(e) => {
                    failure.get_or_insert(e);
                    release.push(o);
                }
            }
        }
        let mut dead_ok = 0u64;
        for r in dead_results {
            match r {
                Ok(_) => dead_ok += 1,
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        if dead_ok > 0 {
            ::metrics::counter!(m::INGEST_DEADLETTER_TOTAL, "channel" => channel.as_str()).increment(dead_ok);
        }

        // Keys of acknowledged events point at them, whatever happens to
        // the rest of the request.
        let ttl = self.idempotency_ttl;
        let sets = finish.iter().map(|o| self.store.set_key(&o.key, &o.event.id, ttl));
        for (o, r) in finish.iter().zip(futures::future::join_all(sets).await) {
            if let Err(e) = r {
                // The event is in Kafka; the pending marker will expire and
                // a retry after that could produce it once more.
                tracing::warn!(key = %o.key, error = %e, "could not record an idempotency key");
            }
        }

        match failure {
            None => Ok(()),
            Some(e) => {
                // A produce that timed out may still have reached Kafka
                // (librdkafka cannot tell): the key remembers the event id,
                // and the client's retry sends the event again under it, so
                // at worst the topic holds one event twice, never two
                // events for one call. A refused record did not land: its
                // key is released.
                let maybe_landed = e.is_retriable();
                let updates = release.iter().map(|o| async move {
                    if maybe_landed {
                        self.store.set_key(&o.key, &format!("maybe:{}", o.event.id), ttl).await
                    } else {
                        self.store.delete_key(&o.key).await.map(|_| ())
                    }
                });
                for (o, r) in release.iter().zip(futures::future::join_all(updates).await) {
                    if let Err(e) = r {
                        tracing::warn!(key = %o.key, error = %e, "could not release an idempotency key");
                    }
                }
                if e.is_retriable() {
                    tracing::warn!(error = %e, "kafka did not take the request in time");
                    Err(self.unavailable("kafka did not acknowledge the events in time; retry".to_owned()))
                } else {
                    Err(IngestError::Internal(e.to_string()))
                }
            }
        }
    }

    pub(crate) fn unavailable(&self, message: String) -> IngestError {
        IngestError::Unavailable {
            message,
            retry_after_s: self.config.ingest.retry_after_s,
        }
    }
}

/// The answer for an event that repeats the event `id`, with its source
/// for the metrics.
fn duplicate_of(index: usize, id: String, event: &Event) -> (Accepted, &'static str) {
    let accepted = Accepted {
        index,
        id,
        source_id: event.input.source_id.clone(),
        duplicate: true,
        flags: Vec::new(),
    };
    (accepted, event.input.source.as_str())
}

/// The Store key of an input's idempotency record: (`source`,
/// `source_id`) scoped to who sent it (the token's `sub`, the MQTT topic),
/// so one sender can never pre-claim another's ids and have its real calls
/// answered `duplicate` and dropped. The scope is escaped: a `:` in a
/// subject cannot make two senders' keys meet.
pub fn idempotency_key(scope: &str, source: Source, source_id: &str) -> String {
    let scope = scope.replace('%', "%25").replace(':', "%3A");
    format!("ingest:idem:{scope}:{}:{source_id}", source.as_str())
}

/// The scope of a request's idempotency keys.
pub fn idempotency_scope(origin: &Origin) -> &str {
    origin.sender.as_deref().unwrap_or("anonymous")
}

enum Marker {
    Done(String),
    Pending {
        expires_ms: i64,
    },
    /// An attempt timed out with this event id: it may be on Kafka.
    Maybe(String),
}

fn parse_marker(value: &str) -> Marker {
    if let Some(id) = value.strip_prefix("maybe:") {
        return Marker::Maybe(id.to_owned());
    }
    match value.strip_prefix("pending:") {
        None => Marker::Done(value.to_owned()),
        Some(rest) => Marker::Pending {
            // An unreadable expiry counts as expired: better a rare
            // duplicate than a key blocked for the whole window.
            expires_ms: rest
                .rsplit_once(':')
                .and_then(|(_, ms)| ms.parse().ok())
                .unwrap_or(i64::MIN),
        },
    }
}

/// The bounded `source` label of an item for metrics.
fn source_label(value: Option<&Value>, default: Option<Source>) -> &'static str {
    value
        .and_then(|v| v.get("source"))
        .and_then(Value::as_str)
        .and_then(Source::parse)
        .or(default)
        .map_or("unknown", Source::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_read_back() {
        assert!(matches!(parse_marker("0190-abc"), Marker::Done(id) if id == "0190-abc"));
        assert!(matches!(
            parse_marker("pending:01-a:1700"),
            Marker::Pending { expires_ms: 1700 }
        ));
        assert!(matches!(
            parse_marker("pending:garbage"),
            Marker::Pending { expires_ms: i64::MIN }
        ));
    }

    #[test]
    fn keys_separate_sources_and_senders() {
        assert_ne!(
            idempotency_key("a", Source::Call110, "1"),
            idempotency_key("a", Source::Sensor, "1")
        );
        assert_ne!(
            idempotency_key("sensor-platform", Source::Call110, "1"),
            idempotency_key("call-centre", Source::Call110, "1")
        );
        // A colon in a subject cannot forge another sender's key.
        assert_ne!(
            idempotency_key("a:call110", Source::Call110, "1"),
            idempotency_key("a", Source::Call110, "call110:1")
        );
    }
}
