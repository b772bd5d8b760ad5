//! The fan-out registry of one api instance: which connection listens to
//! which channel with which filter, and the delivery of a push to them.
//!
//! Delivery never waits: each connection has a bounded queue, and a
//! connection whose queue is full is marked lagging (it closes itself with
//! 1013 and resumes with its cursor). The registry lock is a plain
//! `RwLock` held only for the loop over subscribers, never across `.await`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::extract::ws::Utf8Bytes;
use bus::auth::Claims;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use crate::channel::{ChannelName, Cursor, Filter, Meta, visible};

/// One push, serialised once and shared by every connection it goes to.
#[derive(Debug)]
pub struct Push {
    pub channel: String,
    pub cursor: Cursor,
    pub meta: Meta,
    pub text: Utf8Bytes,
}

/// What a connection registered for one channel.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub conn: u64,
    pub tx: mpsc::Sender<Arc<Push>>,
    /// Cancelled when the queue overflowed.
    pub lagged: CancellationToken,
    pub claims: Arc<Claims>,
    pub filter: Arc<Filter>,
    pub check_jurisdiction: bool,
}

impl Subscriber {
    fn wants(&self, meta: &Meta) -> bool {
        (!self.check_jurisdiction || visible(&self.claims, meta)) && self.filter.accepts(meta)
    }
}

#[derive(Debug, Default)]
pub struct Hub {
    /// Subscribers by channel, then by connection: thousands of terminals
    /// share a channel, and each comes and goes without a scan of the rest.
    channels: RwLock<HashMap<String, HashMap<u64, Subscriber>>>,
}

impl Hub {
    /// Adds or replaces `sub.conn`'s subscription to `channel`.
    pub fn subscribe(&self, channel: &ChannelName, sub: Subscriber) {
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        channels.entry(channel.key()).or_default().insert(sub.conn, sub);
    }

    pub fn unsubscribe(&self, channel: &str, conn: u64) {
        let mut channels = self.channels.write().unwrap_or_else(|p| p.into_inner());
        if let Some(subs) = channels.get_mut(channel) {
            subs.remove(&conn);
            if subs.is_empty() {
                channels.remove(channel);
            }
        }
    }

    /// Delivers to every subscriber of the push's channel that may and
    /// wants to see it. Returns how many queues took it.
    pub fn deliver(&self, push: &Arc<Push>) -> usize {
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        let Some(subs) = channels.get(&push.channel) else {
            return 0;
        };
        let mut delivered = 0;
        for sub in subs.values().filter(|s| s.wants(&push.meta)) {
            match sub.tx.try_send(Arc::clone(push)) {
                Ok(()) => delivered += 1,
                Err(TrySendError::Full(_)) => {
                    // The push is dropped for this client only; it will
                    // resume from its cursor and find it in the history.
                    ::metrics::counter!(bus::metrics::API_WS_DROPPED_TOTAL).increment(1);
                    sub.lagged.cancel();
                }
                Err(TrySendError::Closed(_)) => {}
            }
        }
        delivered
    }

    #[cfg(test)]
    pub fn subscriber_count(&self) -> usize {
        let channels = self.channels.read().unwrap_or_else(|p| p.into_inner());
        channels.values().map(HashMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::PushKind;
    use bus::model::Role;

    fn sub(conn: u64, jurisdiction: &str, queue: usize) -> (Subscriber, mpsc::Receiver<Arc<Push>>) {
        let (tx, rx) = mpsc::channel(queue);
        let s = Subscriber {
            conn,
            tx,
            lagged: CancellationToken::new(),
            claims: Arc::new(Claims {
                sub: "op".into(),
                role: Role::Operator,
                jurisdictions: vec![jurisdiction.into()],
                unit: None,
                exp: i64::MAX,
            }),
            filter: Arc::new(Filter::default()),
            check_jurisdiction: true,
        };
        (s, rx)
    }

    fn push(jurisdiction: &str) -> Arc<Push> {
        Arc::new(Push {
            channel: "board".into(),
            cursor: Cursor(1, 0),
            meta: Meta::from_value(
                PushKind::Incident,
                &serde_json::json!({"id": "i", "jurisdiction": jurisdiction}),
            ),
            text: Utf8Bytes::from_static("{}"),
        })
    }

    #[test]
    fn a_full_queue_marks_only_that_subscriber_lagging() {
        let hub = Hub::default();
        let (slow, _slow_rx) = sub(1, "quancheng", 1);
        let (fast, mut fast_rx) = sub(2, "quancheng", 8);
        let slow_lag = slow.lagged.clone();
        hub.subscribe(&ChannelName::Board, slow);
        hub.subscribe(&ChannelName::Board, fast);
        for _ in 0..3 {
            hub.deliver(&push("quancheng"));
        }
        assert!(slow_lag.is_cancelled());
        let mut got = 0;
        while fast_rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, 3);
    }

    #[test]
    fn pushes_of_other_jurisdictions_are_not_delivered() {
        let hub = Hub::default();
        let (s, mut rx) = sub(1, "quancheng", 8);
        hub.subscribe(&ChannelName::Board, s);
        assert_eq!(hub.deliver(&push("daminghu")), 0);
        assert!(rx.try_recv().is_err());
        hub.unsubscribe("board", 1);
        assert_eq!(hub.subscriber_count(), 0);
    }

    #[test]
    fn a_connection_subscribing_again_replaces_its_subscription() {
        let hub = Hub::default();
        let (first, mut first_rx) = sub(1, "quancheng", 8);
        let (again, mut again_rx) = sub(1, "quancheng", 8);
        let (other, mut other_rx) = sub(2, "quancheng", 8);
        hub.subscribe(&ChannelName::Board, first);
        hub.subscribe(&ChannelName::Board, other);
        hub.subscribe(&ChannelName::Board, again);
        assert_eq!(hub.subscriber_count(), 2);
        assert_eq!(hub.deliver(&push("quancheng")), 2);
        assert!(first_rx.try_recv().is_err(), "the replaced subscription gets nothing");
        assert!(again_rx.try_recv().is_ok());
        assert!(other_rx.try_recv().is_ok());

        hub.unsubscribe("board", 1);
        assert_eq!(hub.deliver(&push("quancheng")), 1, "only connection 2 is left");
        assert!(other_rx.try_recv().is_ok());
    }
}
