//! The seeded fault schedule and how each fault is done and undone. The
//! seed fixes which faults come, in which order, when, against which
//! process or broker and for how long; the system's own timing still
//! varies from run to run. A fault is only ever done to the cluster's own
//! children and `qzx broker`'s control endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;

use super::cluster::{BROKERS, Cluster, PARTITIONS};
use super::load::Load;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// SIGKILL of a router right after a burst of calls was accepted (its
    /// records in flight), started again later.
    RouterKill,
    /// SIGKILL of ingest 1–3 ms after a burst's request was sent; the
    /// client retries the same body until it is accepted.
    IngestKill,
    /// SIGKILL of an api: its terminals reconnect (to the other api, or
    /// to it once it is back) and resume with their cursor.
    ApiKill,
    /// SIGKILL of redis-server, started again empty (no persistence).
    RedisRestart,
    /// `FLUSHALL` while everything runs: README says a flushed Store is
    /// detected and rebuilt from Kafka.
    Flushall,
    /// One broker answers every request later than the producers'
    /// delivery timeout, for a while.
    BrokerSlow,
    /// One broker down (connections closed and refused), then up.
    BrokerDown,
    /// Leaders of one partition of every topic moved to another broker.
    LeaderMove,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::RouterKill,
        FaultKind::IngestKill,
        FaultKind::ApiKill,
        FaultKind::RedisRestart,
        FaultKind::Flushall,
        FaultKind::BrokerSlow,
        FaultKind::BrokerDown,
        FaultKind::LeaderMove,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::RouterKill => "router_kill",
            FaultKind::IngestKill => "ingest_kill",
            FaultKind::ApiKill => "api_kill",
            FaultKind::RedisRestart => "redis_restart",
            FaultKind::Flushall => "flushall",
            FaultKind::BrokerSlow => "broker_slow",
            FaultKind::BrokerDown => "broker_down",
            FaultKind::LeaderMove => "leader_move",
        }
    }
}

/// The kinds in the order a schedule takes them: `--faults 5` is two
/// router kills, an ingest kill, a Redis restart and an api kill (the CI
/// run); ten give every kind, router kills three times. The seed shuffles
/// their order within each round of ten.
const ROUND: [FaultKind; 10] = [
    FaultKind::RouterKill,
    FaultKind::IngestKill,
    FaultKind::RedisRestart,
    FaultKind::RouterKill,
    FaultKind::ApiKill,
    FaultKind::BrokerSlow,
    FaultKind::RouterKill,
    FaultKind::BrokerDown,
    FaultKind::LeaderMove,
    FaultKind::Flushall,
];

/// No fault in the first seconds (terminals on duty, calls flowing) nor
/// in the last (the system settles before the load stops).
const WARM_UP: Duration = Duration::from_secs(8);
const COOL_DOWN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Planned {
    /// From the start of the load.
    pub at: Duration,
    pub kind: FaultKind,
    /// Which router, api or broker (index or id); unused by the others.
    pub target: usize,
    /// How long the fault lasts before it is undone (the process started
    /// again, the broker up, the delay removed).
    pub hold: Duration,
    /// Ingest kill: milliseconds between sending the request and the kill.
    pub delay_ms: u64,
    /// Leader move: the partition moved and the broker it goes to.
    pub partition: i32,
}

/// `faults` faults spread over `seconds` of load, from `seed`.
pub fn schedule(seed: u64, seconds: u64, faults: usize) -> Vec<Planned> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed_fa17);
    let mut kinds = Vec::with_capacity(faults);
    while kinds.len() < faults {
        let take = (faults - kinds.len()).min(ROUND.len());
        let mut round = ROUND[..take].to_vec();
        round.shuffle(&mut rng);
        kinds.extend(round);
    }
    let span = Duration::from_secs(seconds).saturating_sub(WARM_UP + COOL_DOWN);
    let slot = span / faults.max(1) as u32;
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| {
            let jitter = slot.mul_f64(rng.random_range(0.0..0.3));
            let hold_s = match kind {
                FaultKind::RouterKill => rng.random_range(5.0..10.0),
                FaultKind::IngestKill => rng.random_range(1.0..3.0),
                FaultKind::ApiKill => rng.random_range(2.0..5.0),
                FaultKind::RedisRestart => rng.random_range(1.0..3.0),
                FaultKind::BrokerSlow => rng.random_range(8.0..12.0),
                FaultKind::BrokerDown => rng.random_range(5.0..8.0),
                FaultKind::Flushall | FaultKind::LeaderMove => 0.0,
            };
            Planned {
                at: WARM_UP + slot * i as u32 + jitter,
                kind,
                target: rng.random_range(0..2),
                hold: Duration::from_secs_f64(hold_s),
                delay_ms: rng.random_range(1..=3),
                partition: rng.random_range(0..PARTITIONS),
            }
        })
        .collect()
}

/// What was done, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Done {
    /// Seconds from the start of the load.
    pub at_s: f64,
    pub kind: FaultKind,
    pub target: String,
    pub hold_s: f64,
    /// When a router was killed, milliseconds since the epoch: the
    /// hand-over is measured from it.
    #[serde(skip)]
    pub killed_at_ms: Option<i64>,
    /// Set when doing or undoing the fault failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs the schedule from `started`; returns what was done once every
/// fault is undone.
pub async fn run(plan: Vec<Planned>, cluster: Arc<Cluster>, load: Arc<Load>, started: Instant) -> Vec<Done> {
    let mut undo = Vec::new();
    let mut done = Vec::new();
    for planned in plan {
        tokio::time::sleep_until((started + planned.at).into()).await;
        let (record, restore) = inject(&planned, &cluster, &load, started).await;
        tracing::info!(kind = planned.kind.as_str(), target = %record.target, "fault injected");
        done.push(record);
        let cluster = cluster.clone();
        let hold = planned.hold;
        let index = done.len() - 1;
        undo.push(tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            (index, restore.undo(&cluster).await.err())
        }));
    }
    for handle in undo {
        if let Ok((index, Some(e))) = handle.await {
            tracing::warn!(error = %format!("{e:#}"), "undoing a fault failed");
            done[index].error = Some(format!("undo: {e:#}"));
        }
    }
    done
}

/// How a fault is undone.
enum Restore {
    Nothing,
    Router(usize),
    Ingest,
    Api(usize),
    Redis,
    BrokerRtt(i32),
    BrokerUp(i32),
}

impl Restore {
    async fn undo(self, cluster: &Cluster) -> anyhow::Result<()> {
        match self {
            Restore::Nothing => Ok(()),
            Restore::Router(i) => cluster.routers[i].restart(&cluster.http).await,
            Restore::Ingest => cluster.ingest.restart(&cluster.http).await,
            Restore::Api(i) => cluster.apis[i].restart(&cluster.http).await,
            Restore::Redis => cluster.restart_redis().await,
            Restore::BrokerRtt(id) => cluster.control(&format!("/brokers/{id}/rtt?ms=0")).await,
            Restore::BrokerUp(id) => cluster.control(&format!("/brokers/{id}/up")).await,
        }
    }
}

async fn inject(p: &Planned, cluster: &Cluster, load: &Arc<Load>, started: Instant) -> (Done, Restore) {
    let mut killed_at_ms = None;
    let broker = (p.target as i32 % BROKERS) + 1;
    let result: anyhow::Result<(String, Restore)> = async {
        Ok(match p.kind {
            FaultKind::RouterKill => {
                // A burst accepted (in Kafka) just before: the router dies
                // with its records in flight.
                load.burst(30).await;
                // The other one when the planned one is still down.
                let i = if cluster.routers[p.target].running() {
                    p.target
                } else {
                    1 - p.target
                };
                let router = &cluster.routers[i];
                router.kill();
                killed_at_ms = Some(chrono::Utc::now().timestamp_millis());
                (router.name.clone(), Restore::Router(i))
            }
            FaultKind::IngestKill => {
                let burst = load.clone();
                tokio::spawn(async move { burst.burst(50).await });
                tokio::time::sleep(Duration::from_millis(p.delay_ms)).await;
                cluster.ingest.kill();
                (format!("ingest, {} ms into a burst", p.delay_ms), Restore::Ingest)
            }
            FaultKind::ApiKill => {
                let i = if cluster.apis[p.target].running() {
                    p.target
                } else {
                    1 - p.target
                };
                let api = &cluster.apis[i];
                api.kill();
                (api.name.clone(), Restore::Api(i))
            }
            FaultKind::RedisRestart => {
                cluster.kill_redis();
                ("redis-server".to_owned(), Restore::Redis)
            }
            FaultKind::Flushall => {
                cluster.flushall().await?;
                ("redis FLUSHALL".to_owned(), Restore::Nothing)
            }
            FaultKind::BrokerSlow => {
                let ms = load.delivery_timeout_ms + 1000;
                cluster.control(&format!("/brokers/{broker}/rtt?ms={ms}")).await?;
                (format!("broker {broker}, rtt {ms} ms"), Restore::BrokerRtt(broker))
            }
            FaultKind::BrokerDown => {
                cluster.control(&format!("/brokers/{broker}/down")).await?;
                (format!("broker {broker}"), Restore::BrokerUp(broker))
            }
            FaultKind::LeaderMove => {
                for topic in bus::Topic::ALL {
                    let name = bus::Topics::new(cluster.topic_prefix.clone()).name(topic);
                    cluster
                        .control(&format!(
                            "/topics/{name}/partitions/{}/leader?broker={broker}",
                            p.partition
                        ))
                        .await?;
                }
                (
                    format!("partition {} of every topic to broker {broker}", p.partition),
                    Restore::Nothing,
                )
            }
        })
    }
    .await;
    let at_s = started.elapsed().as_secs_f64();
    let hold_s = p.hold.as_secs_f64();
    match result {
        Ok((target, restore)) => (
            Done {
                at_s,
                kind: p.kind,
                target,
                hold_s,
                killed_at_ms,
                error: None,
            },
            restore,
        ),
        Err(e) => (
            Done {
                at_s,
                kind: p.kind,
                target: String::new(),
                hold_s,
                killed_at_ms,
                error: Some(format!("{e:#}")),
            },
            Restore::Nothing,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule_and_the_first_round_its_kinds() {
        let a = schedule(7, 90, 5);
        let b = schedule(7, 90, 5);
        assert_eq!(
            a.iter().map(|p| (p.at, p.kind, p.target)).collect::<Vec<_>>(),
            b.iter().map(|p| (p.at, p.kind, p.target)).collect::<Vec<_>>()
        );
        let mut kinds: Vec<FaultKind> = a.iter().map(|p| p.kind).collect();
        kinds.sort();
        assert_eq!(
            kinds,
            vec![
                FaultKind::RouterKill,
                FaultKind::RouterKill,
                FaultKind::IngestKill,
                FaultKind::ApiKill,
                FaultKind::RedisRestart
            ]
        );
        assert!(a.windows(2).all(|w| w[0].at < w[1].at));
        assert!(
            a.iter()
                .all(|p| p.at >= WARM_UP && p.at <= Duration::from_secs(90) - COOL_DOWN)
        );
        let all: std::collections::BTreeSet<FaultKind> = schedule(1, 300, 10).iter().map(|p| p.kind).collect();
        assert_eq!(all.len(), FaultKind::ALL.len());
    }
}
