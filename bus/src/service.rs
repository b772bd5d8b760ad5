//! Supervision of a service's tasks: each task has a name, the process has
//! one cancellation token, and any task's error cancels all and makes the
//! process exit 1. SIGINT or SIGTERM cancels gracefully; a second signal
//! exits at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::kafka::Brokers;
use crate::store::SharedStore;
use crate::topics::Topics;

/// What every service is started with: `ingest::start`, `router::start`
/// and `dispatch_ui_api::start` take this and a [`Supervisor`], so `qzx
/// all`, `qzx demo`, one-service commands and tests start the same code.
#[derive(Clone)]
pub struct ServiceContext {
    pub config: Arc<Config>,
    pub brokers: Brokers,
    pub store: SharedStore,
    pub topics: Topics,
    /// Unique per process: names this instance where it must not be
    /// shared (the api's fan-out consumer group, the MQTT client id).
    pub instance: String,
}

impl std::fmt::Debug for ServiceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceContext")
            .field("brokers", &self.brokers.bootstrap())
            .field("store", &self.store.kind())
            .field("topics", &self.topics.prefix())
            .field("instance", &self.instance)
            .finish()
    }
}

impl ServiceContext {
    pub fn new(config: Config, brokers: Brokers, store: SharedStore) -> ServiceContext {
        let topics = Topics::new(config.kafka.topic_prefix.clone());
        ServiceContext {
            config: Arc::new(config),
            brokers,
            store,
            topics,
            instance: crate::model::new_id(),
        }
    }

    /// Readiness: the store answers and Kafka's metadata can be read.
    pub async fn ready(&self) -> Result<(), String> {
        self.store.ping().await.map_err(|e| e.to_string())?;
        crate::kafka::check_reachable(&self.brokers, Duration::from_secs(2))
            .await
            .map_err(|e| format!("kafka unreachable: {e}"))
    }
}

/// Named tasks under one cancellation token.
pub struct Supervisor {
    token: CancellationToken,
    tasks: JoinSet<(String, anyhow::Result<()>)>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").field("tasks", &self.tasks.len()).finish()
    }
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor::new(CancellationToken::new())
    }
}

impl Supervisor {
    pub fn new(token: CancellationToken) -> Supervisor {
        Supervisor {
            token,
            tasks: JoinSet::new(),
        }
    }

    /// The token every task watches to stop.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    pub fn spawn<F>(&mut self, name: impl Into<String>, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let name = name.into();
        self.tasks.spawn(async move { (name, task.await) });
    }

    /// Waits until every task has ended. The first failure cancels the
    /// others; after cancellation, tasks get `grace` to finish before they
    /// are aborted. Returns the first error.
    pub async fn wait(mut self, grace: Duration) -> anyhow::Result<()> {
        let mut first_error: Option<anyhow::Error> = None;
        loop {
            let next = if self.token.is_cancelled() {
                match tokio::time::timeout(grace, self.tasks.join_next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        tracing::error!(
                            remaining = self.tasks.len(),
                            "tasks did not stop in time; aborting them"
                        );
                        self.tasks.abort_all();
                        while self.tasks.join_next().await.is_some() {}
                        break;
                    }
                }
            } else {
                tokio::select! {
                    next = self.tasks.join_next() => next,
                    _ = self.token.cancelled() => continue,
                }
            };
            let Some(joined) = next else { break };
            match joined {
                Ok((name, Ok(()))) => {
                    tracing::debug!(task = %name, "task finished");
                    if !self.token.is_cancelled() {
                        // A service task ending on its own is a shutdown.
                        tracing::info!(task = %name, "task ended; shutting down");
                        self.token.cancel();
                    }
                }
                Ok((name, Err(e))) => {
                    tracing::error!(task = %name, error = %format!("{e:#}"), "task failed; shutting down");
                    self.token.cancel();
                    first_error.get_or_insert(e.context(format!("task {name} failed")));
                }
                Err(join) => {
                    tracing::error!(error = %join, "task panicked; shutting down");
                    self.token.cancel();
                    first_error.get_or_insert(anyhow::anyhow!("a task panicked: {join}"));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Cancels `token` on the first SIGINT or SIGTERM; exits the process with
/// code 130 on the second.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        if wait_for_signal().await.is_err() {
            return;
        }
        tracing::info!("shutdown requested; draining (signal again to exit at once)");
        token.cancel();
        if wait_for_signal().await.is_ok() {
            tracing::warn!("second signal; exiting now");
            std::process::exit(130);
        }
    });
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_task_cancels_the_others_and_is_reported() {
        let mut sup = Supervisor::default();
        let token = sup.token();
        sup.spawn("waits", async move {
            token.cancelled().await;
            Ok(())
        });
        sup.spawn("fails", async { Err(anyhow::anyhow!("boom")) });
        let err = sup.wait(Duration::from_secs(1)).await.unwrap_err();
        assert!(format!("{err:#}").contains("fails"), "{err:#}");
        assert!(format!("{err:#}").contains("boom"));
    }

    #[tokio::test]
    async fn a_task_that_ignores_cancellation_is_aborted_after_the_grace() {
        let mut sup = Supervisor::default();
        let token = sup.token();
        sup.spawn("stubborn", async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        token.cancel();
        let started = std::time::Instant::now();
        sup.wait(Duration::from_millis(50)).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
