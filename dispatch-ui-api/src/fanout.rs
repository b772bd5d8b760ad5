//! The fan-out loop: consumes incidents, tasks, units, escalations, events
//! and positions with this instance's own consumer group (so every instance
//! sees every record), updates the local [`View`], appends each record once
//! to the Store history of every channel it belongs to, and hands the push
//! to the [`Hub`].
//!
//! A position report is not pushed as itself: it moves the view's copy of
//! its unit (position, speed, `at`; never status or task) and that unit is
//! pushed exactly as a record of the units topic is (kind `unit`, the same
//! channels), so clients see live positions although only the router
//! writes the units topic. A report for a unit the view does not know, or
//! older than the unit's `at`, pushes nothing.
//!
//! Where it starts: the group is new for every process, so it reads each
//! topic from the earliest retained offset. That rebuilds the view (every
//! open task of every unit, recent closed incidents) after a restart.
//! Re-reading is harmless to clients: records older than the history's age
//! only touch the view, and younger ones hit their dedupe keys, get their
//! old cursors back and are dropped by every subscriber's boundary.
//!
//! The dedupe key of a history entry is `<topic>:<partition>:<offset>`, so
//! several instances appending the same record agree on one cursor. A
//! record the loop cannot parse is logged and skipped (it is the router's
//! output, not a client's; stalling every board on it would be worse). A
//! Store failure is retried: pushes without a cursor could not be resumed.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use bus::kafka::{Brokers, Consumer, Received};
use bus::model::PositionReport;
use bus::store::{HistoryLimits, SharedStore};
use bus::topics::Topic;
use futures::FutureExt as _;
use tokio_util::sync::CancellationToken;

use crate::channel::{ChannelName, Cursor, Meta, PushKind, PushRecord, channels_for, history_payload, push_frame};
use crate::hub::{Hub, Push};
use crate::view::View;

/// The topics the api pushes (positions as the units they move).
pub const CONSUMED: [Topic; 6] = [
    Topic::Incidents,
    Topic::Tasks,
    Topic::Units,
    Topic::Escalations,
    Topic::Events,
    Topic::Positions,
];

const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub struct Fanout {
    /// Declared first so it is dropped first: closing a consumer talks to
    /// the brokers, which must still be there (see `brokers`).
    pub consumer: Consumer,
    pub store: SharedStore,
    pub hub: Arc<Hub>,
    pub view: Arc<View>,
    pub limits: HistoryLimits,
    /// Keeps an embedded broker alive until the consumer has closed: a
    /// librdkafka consumer closed after its cluster is gone can hang.
    pub _brokers: Brokers,
}

/// Records handled together: their Store appends go out pipelined, so a
/// busy topic costs one Store round trip per batch, not per record.
const MAX_BATCH: usize = 128;

/// One record ready to append: its meta, push data and history channels.
struct Prepared<'a> {
    record: &'a Received,
    kind: PushKind,
    meta: Meta,
    /// The record's own bytes; for a position report, the unit it moved.
    data: Cow<'a, str>,
    dedupe: String,
    payload: Vec<u8>,
    /// For the analysts' `topic:` channels, when the record names a
    /// caller: its data and payload with the caller masked
    /// ([`crate::privacy`]).
    masked: Option<(String, Vec<u8>)>,
    channels: Vec<ChannelName>,
}

impl Prepared<'_> {
    /// The data and history payload `channel` gets.
    fn for_channel(&self, channel: &ChannelName) -> (&str, &[u8]) {
        match (&self.masked, channel) {
            (Some((data, payload)), ChannelName::Topic(_)) => (data, payload),
            _ => (&self.data, &self.payload),
        }
    }
}

impl Fanout {
    /// Runs until `shutdown`. Records are taken in batches of what is
    /// already there; a batch is fully handled before the next.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let consumer = &self.consumer;
        while let Some(first) = consumer.next(&shutdown).await? {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match consumer.next(&shutdown).now_or_never() {
                    Some(Ok(Some(record))) => batch.push(record),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(None)) | None => break,
                }
            }
            self.handle(&batch, &shutdown).await;
            if shutdown.is_cancelled() {
                // Appends were cut short: do not mark the batch done.
                break;
            }
            for record in &batch {
                consumer.done(record);
            }
        }
        consumer.commit();
        Ok(())
    }

    async fn handle(&self, batch: &[Received], shutdown: &CancellationToken) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let prepared: Vec<Prepared<'_>> = batch.iter().filter_map(|r| self.prepare(r, now_ms)).collect();
        // Issued in record order on one Store connection; the cursors come
        // back in that order too, and are sorted per channel below anyway.
        let appends = prepared.iter().enumerate().flat_map(|(i, p)| {
            p.channels.iter().map(move |channel| async move {
                let key = channel.key();
                let (_, payload) = p.for_channel(channel);
                let cursor = self.append(&key, &p.dedupe, payload, shutdown).await?;
                Some((i, channel, key, cursor))
            })
        });
        let mut pushes = Vec::new();
        for (i, channel, key, cursor) in futures::future::join_all(appends).await.into_iter().flatten() {
            let Some(parsed) = Cursor::parse(&cursor) else {
                tracing::warn!(channel = %key, %cursor, "store returned an unreadable cursor");
                continue;
            };
            let p = &prepared[i];
            let (data, _) = p.for_channel(channel);
            let push = Push {
                text: Utf8Bytes::from(push_frame(&key, &cursor, p.kind, data, false)),
                channel: key,
                cursor: parsed,
                meta: p.meta.clone(),
            };
            pushes.push((channel.label(), p.record.timestamp_ms, Arc::new(push)));
        }
        // Each channel's pushes go out in cursor order.
        pushes.sort_by(|a, b| a.2.channel.cmp(&b.2.channel).then(a.2.cursor.cmp(&b.2.cursor)));
        for (label, timestamp_ms, push) in pushes {
            let delivered = self.hub.deliver(&push);
            if delivered > 0 {
                ::metrics::counter!(bus::metrics::API_WS_PUSHES_TOTAL, "channel" => label, "kind" => push.meta.kind.as_str())
                    .increment(delivered as u64);
                if let Some(ts) = timestamp_ms {
                    ::metrics::histogram!(bus::metrics::API_PUSH_LATENCY_SECONDS)
                        .record((now_ms - ts).max(0) as f64 / 1000.0);
                }
            }
        }
    }

    /// Parses a record and updates the view; `None` when there is nothing
    /// to push (unreadable, a report that moves no unit, or older than
    /// history keeps).
    fn prepare<'a>(&self, record: &'a Received, now_ms: i64) -> Option<Prepared<'a>> {
        let unreadable = |e: serde_json::Error| {
            tracing::warn!(topic = record.topic.suffix(), partition = record.partition, offset = record.offset, error = %e, "unreadable record skipped");
        };
        let (parsed, data) = if record.topic == Topic::Positions {
            let report: PositionReport = serde_json::from_slice(&record.payload).map_err(unreadable).ok()?;
            let unit = self.view.moved_unit(&report)?;
            let data = serde_json::to_string(&unit).map_err(unreadable).ok()?;
            (PushRecord::Unit(unit), Cow::Owned(data))
        } else {
            let kind = PushKind::of(record.topic)?;
            let parsed = PushRecord::parse(kind, &record.payload).map_err(unreadable).ok()?;
            // The record's own bytes go out as `data`: valid JSON, just parsed.
            (parsed, Cow::Borrowed(std::str::from_utf8(&record.payload).ok()?))
        };
        let meta = parsed.meta();
        let kind = meta.kind;
        match parsed {
            PushRecord::Incident(incident) => self.view.apply_incident(*incident),
            PushRecord::Task(task) => self.view.apply_task(task),
            PushRecord::Unit(unit) => self.view.apply_unit(unit),
            PushRecord::Event(_) | PushRecord::Escalation(_) => {}
        }
        // Records older than the history keeps (the catch-up at start) only
        // rebuild the view: appending them again would re-push old news.
        if let Some(ts) = record.timestamp_ms
            && now_ms - ts > self.limits.max_age.as_millis() as i64
        {
            return None;
        }
        let channels = channels_for(&meta);
        let masked = crate::privacy::for_topics(kind, &data).map(|masked| {
            let payload = history_payload(kind, masked.as_bytes());
            (masked, payload)
        });
        Some(Prepared {
            record,
            kind,
            dedupe: format!("{}:{}:{}", record.topic.suffix(), record.partition, record.offset),
            payload: history_payload(kind, data.as_bytes()),
            masked,
            data,
            channels,
            meta,
        })
    }

    /// Appends with retries until it works or shutdown (then `None`).
    async fn append(
        &self,
        channel: &str,
        dedupe: &str,
        payload: &[u8],
        shutdown: &CancellationToken,
    ) -> Option<String> {
        let mut backoff = RETRY_MIN;
        loop {
            let started = Instant::now();
            match self.store.history_append(channel, dedupe, payload, self.limits).await {
                Ok(appended) => return Some(appended.cursor),
                Err(e) => {
                    tracing::warn!(%channel, error = %e, elapsed_ms = started.elapsed().as_millis() as u64, "history append failed, retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
    }
}
