//! `router`: the single writer of incident state. It consumes the events
//! and actions topics (co-partitioned by jurisdiction, so one instance owns
//! whole jurisdictions), scores and links events into incidents, diverts
//! non-police matters, routes incidents to desks, dispatches the nearest
//! available units, applies commands from units and operators, and runs the
//! 1-3-5 clock. Every change is published as a new incident version (and
//! tasks, unit states, escalations) before the input record is committed.
//!
//! Layout: [`score`] and [`engine`] are the pure core (configuration and an
//! explicit `now` in, decisions out); `events`, `commands` (one file per
//! command), `dispatch` and `clock` are the handlers, which read and write
//! only through a transaction of [`tx`], the only code that writes the
//! Store or sends a record; [`service`] decodes records and runs the batch;
//! [`rebuild`] refills a lost Store from the compacted topics; [`start`]
//! wires them into the supervisor. Nothing here speaks HTTP, and no other
//! service may write incident state.

pub mod briefing;
pub mod cap;
mod clock;
mod commands;
mod dispatch;
pub mod engine;
mod events;
pub mod incident;
pub mod index;
pub mod ladder;
pub mod partition;
pub mod plan;
mod preempt;
pub mod rebuild;
pub mod score;
pub mod service;
pub mod travel;
pub mod tx;

use std::sync::Arc;
use std::time::Duration;

use bus::kafka::{Consumer, Producer, ensure_topics};
use bus::topics::Topic;
use bus::{ServiceContext, Supervisor};
use tokio_util::sync::CancellationToken;

pub use engine::Engine;
pub use service::Router;
pub use travel::{StraightLine, TravelTime};
pub use tx::{CrashPoint, Publish, Recorder};

/// Topics the router reads or writes.
pub const TOPICS: [Topic; 7] = [
    Topic::Events,
    Topic::Actions,
    Topic::Incidents,
    Topic::Tasks,
    Topic::Units,
    Topic::Escalations,
    Topic::DeadLetter,
];

const RETRY_MIN: Duration = Duration::from_millis(100);
/// Records staged before one settle: enough to take a whole fetch at a
/// thousand events a second, few enough that a failed publish redoes
/// little.
const MAX_BATCH: usize = 256;
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The consumer group every router instance joins.
pub fn group(ctx: &ServiceContext) -> String {
    format!("{}-router", ctx.config.kafka.group_prefix)
}

/// Starts the router with the straight-line travel-time estimate: creates
/// its topics, rebuilds the Store from Kafka if it lost its state, and
/// spawns the consume-and-clock loop into `sup`.
pub async fn start(ctx: &ServiceContext, sup: &mut Supervisor) -> anyhow::Result<()> {
    let travel = Arc::new(StraightLine::new(&ctx.config.router));
    start_with(ctx, sup, travel).await
}

/// [`start`] with another travel-time model (a routing engine).
pub async fn start_with(ctx: &ServiceContext, sup: &mut Supervisor, travel: Arc<dyn TravelTime>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    ensure_topics(&ctx.brokers, &ctx.config.kafka, &ctx.topics, &TOPICS).await?;
    rebuild::rebuild_if_needed(ctx)
        .await
        .context("rebuilding the store from kafka")?;
    let partitions = rebuild::partition_count(ctx, Topic::Events)
        .await
        .context("reading the events topic's partition count")?
        .unwrap_or(ctx.config.kafka.partitions);
    let producer = Producer::new(&ctx.brokers, &ctx.config.kafka, ctx.topics.clone(), service::CE_SOURCE)?;
    let consumer = Consumer::new(
        &ctx.brokers,
        &ctx.config.kafka,
        ctx.topics.clone(),
        &group(ctx),
        &[Topic::Events, Topic::Actions],
    )?;
    let engine = Engine::new(ctx.config.clone(), travel);
    let router = Router::new(ctx, engine, producer.clone(), partitions);
    let settings = Settings {
        tick: Duration::from_millis(ctx.config.router.clock_tick_ms.max(10)),
        drain: ctx.config.kafka.drain_timeout(),
    };
    sup.spawn("router", run(router, consumer, producer, sup.token(), settings));
    Ok(())
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    tick: Duration,
    drain: Duration,
}

/// One loop per instance: batches of records and clock ticks are handled
/// one at a time, so the router's state needs no lock. On cancellation the
/// batch in hand is finished, offsets are committed and the producer
/// flushed.
async fn run(
    mut router: Router,
    consumer: Consumer,
    producer: Producer,
    token: CancellationToken,
    settings: Settings,
) -> anyhow::Result<()> {
    let mut assignment = consumer.assignment();
    let mut tick = tokio::time::interval(settings.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut reload = false;
    loop {
        if assignment.has_changed().unwrap_or(false) {
            assignment.borrow_and_update();
            reload = true;
        }
        if reload {
            let owned: Vec<i32> = assignment
                .borrow()
                .iter()
                .filter(|(t, _)| *t == Topic::Events)
                .map(|(_, p)| *p)
                .collect();
            match router.on_assigned(owned).await {
                Ok(()) => reload = false,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "could not load owned incidents, retrying");
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(RETRY_MIN * 10) => continue,
                    }
                }
            }
        }
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            // Marks the change seen: the reload above must run for it.
            _ = assignment.changed() => {
                reload = true;
                continue;
            }
            _ = tick.tick() => {
                if let Err(e) = router.tick(chrono::Utc::now()).await {
                    tracing::warn!(error = %format!("{e:#}"), "clock tick failed");
                }
            }
            next = consumer.next(&token) => {
                let Some(first) = next? else { break };
                // Take what the fetch brought with it: the records are
                // staged together and their acknowledgements awaited once.
                let mut records = vec![first];
                while records.len() < MAX_BATCH
                    && let Some(record) = consumer.try_next()?
                {
                    records.push(record);
                }
                let mut backoff = RETRY_MIN;
                loop {
                    match router.handle_all(&records, chrono::Utc::now()).await {
                        Ok(()) => {
                            for record in &records {
                                consumer.done(record);
                            }
                            break;
                        }
                        Err(e) => {
                            for record in records.drain(..e.handled.min(records.len())) {
                                consumer.done(&record);
                            }
                            let Some(head) = records.first() else { break };
                            tracing::warn!(
                                topic = head.topic.suffix(),
                                partition = head.partition,
                                offset = head.offset,
                                records = records.len(),
                                error = %format!("{:#}", e.source),
                                "router failed on a record, retrying from it"
                            );
                            tokio::select! {
                                _ = token.cancelled() => break,
                                _ = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(RETRY_MAX);
                            if assignment.has_changed().unwrap_or(false) {
                                // A rebalance: every partition is assigned
                                // afresh from its committed offset, so the
                                // records left here come again to whoever
                                // owns them now. Take the new ones over
                                // first.
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    consumer.commit();
    drop(consumer);
    let drain = settings.drain;
    tokio::task::spawn_blocking(move || producer.flush(drain)).await?;
    tracing::info!("router stopped");
    Ok(())
}
