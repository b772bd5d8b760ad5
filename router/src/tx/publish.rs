//! Where a transaction's records go: the [`Publish`] trait, which
//! `bus::kafka::Producer` implements for production and [`Recorder`] for
//! tests that drive the router without a broker (and kill it on purpose).

use std::sync::{Arc, Mutex, PoisonError};

use bus::kafka::{OutRecord, Producer};
use futures::FutureExt as _;
use futures::future::BoxFuture;

/// Hands records to a broker. A record handed over is on its way even if
/// the returned future is dropped; the future resolves when the broker has
/// acknowledged it (or will not).
pub trait Publish: Send + Sync + 'static {
    fn publish(&self, record: &OutRecord) -> BoxFuture<'static, anyhow::Result<()>>;
}

impl Publish for Producer {
    fn publish(&self, record: &OutRecord) -> BoxFuture<'static, anyhow::Result<()>> {
        self.start_send(record)
            .map(|r| r.map(drop).map_err(anyhow::Error::new))
            .boxed()
    }
}

/// An in-memory broker for tests: keeps every record it is handed, in
/// order, and refuses (without keeping) while told to fail.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    inner: Arc<Mutex<RecorderState>>,
}

#[derive(Debug, Default)]
struct RecorderState {
    records: Vec<OutRecord>,
    failing: bool,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Every record published so far, in order.
    pub fn records(&self) -> Vec<OutRecord> {
        self.lock().records.clone()
    }

    /// While `failing`, every publish is refused as a broker that is down
    /// would refuse it.
    pub fn set_failing(&self, failing: bool) {
        self.lock().failing = failing;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecorderState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Publish for Recorder {
    fn publish(&self, record: &OutRecord) -> BoxFuture<'static, anyhow::Result<()>> {
        let mut state = self.lock();
        let result = if state.failing {
            Err(anyhow::anyhow!("recorder: broker down"))
        } else {
            state.records.push(record.clone());
            Ok(())
        };
        futures::future::ready(result).boxed()
    }
}
