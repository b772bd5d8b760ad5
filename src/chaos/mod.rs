//! `qzx chaos`: faults injected into a whole qzx deployment on this machine
//! while it takes calls and dispatches units, then counted: how many calls
//! were lost, applied twice, forked, how many tasks missed their terminal,
//! how long a router's jurisdictions waited after it died.
//!
//! It starts `qzx broker`, redis-server, one ingest, two routers and two
//! apis as child processes (`cluster`), drives calls over HTTP (`load`)
//! and unit terminals over WebSocket (`terminals`), injects the seeded
//! faults (`faults`), waits until the routers have no lag and the topics
//! stop growing, then checks what Kafka, the Store, ingest's answers and
//! the terminals say (`topics`, `check`) and reports (`report`). It must
//! never report a figure it did not count, nor hide one that is not zero.

mod check;
mod cluster;
mod faults;
mod load;
mod report;
mod terminals;
mod topics;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::{Config, Topic};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use self::cluster::Cluster;
use self::load::Load;
use self::report::Report;
use self::terminals::Terminals;

#[derive(Args, Debug)]
pub struct ChaosArgs {
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Seconds of load with faults (the quiesce and checks come after).
    #[arg(long, default_value_t = 180)]
    seconds: u64,
    /// Faults over the run, their kinds in a fixed round (README,
    /// Reliability) shuffled by the seed.
    #[arg(long, default_value_t = 10)]
    faults: usize,
    /// Seed of the fault schedule and of the calls.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Single calls posted per second (NDJSON bursts come on top).
    #[arg(long, default_value_t = 3.0)]
    rate: f64,
    /// Keep the run's directory (logs, accepted ids, terminal log) even
    /// when every figure is zero.
    #[arg(long)]
    keep_logs: bool,
}

/// A burst of calls this often, besides those the faults post.
const BURST_EVERY: u64 = 15;
const BURST: usize = 20;
/// The system counts as quiet after this long with no router lag and no
/// new record on any topic.
const QUIET_FOR: Duration = Duration::from_secs(5);
const QUIESCE_WITHIN: Duration = Duration::from_secs(180);

pub async fn run(config: Config, config_file: Option<PathBuf>, args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let begun = Instant::now();
    let dir = std::env::temp_dir().join(format!("qzx-chaos-{}-{}", args.seed, &bus::model::new_id()[24..]));
    let bar = ProgressBar::new(args.seconds);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar.set_message("starting broker, redis, ingest, 2 routers, 2 apis");
    let cluster = Arc::new(Cluster::start(&config, config_file.as_deref(), &dir).await?);
    let result = drive(&config, &args, cluster.clone(), &bar).await;
    bar.set_message("stopping");
    cluster.stop().await;
    bar.finish_and_clear();
    let mut report = result?;
    report.run_seconds = begun.elapsed().as_secs_f64();
    if report.ok && !args.keep_logs {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        report.logs = Some(dir.display().to_string());
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report::print_table(&report);
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn drive(config: &Config, args: &ChaosArgs, cluster: Arc<Cluster>, bar: &ProgressBar) -> anyhow::Result<Report> {
    let quiet = CancellationToken::new();
    let stop = CancellationToken::new();
    let terminals = Terminals::start(&cluster, &config.units, args.seed, quiet.clone(), stop.clone())?;
    // On duty before the first call.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let load = Arc::new(Load::new(cluster.clone(), config, args.seed)?);
    let started = Instant::now();
    let stop_calls = CancellationToken::new();
    let singles = tokio::spawn(load.clone().singles(args.rate, stop_calls.clone()));
    let plan = faults::schedule(args.seed, args.seconds, args.faults);
    let faults = tokio::spawn(faults::run(plan, cluster.clone(), load.clone(), started));
    let mut bursts = tokio::task::JoinSet::new();
    bar.set_message("calls, terminals, faults");
    for second in 1..=args.seconds {
        tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
        bar.set_position(second);
        if second % BURST_EVERY == 0 {
            let load = load.clone();
            bursts.spawn(async move { load.burst(BURST).await });
        }
    }
    stop_calls.cancel();
    bar.set_message("calls still being retried, faults being undone");
    let _ = singles.await;
    while bursts.join_next().await.is_some() {}
    let done = faults.await?;
    let load_seconds = started.elapsed().as_secs_f64();

    bar.set_message("waiting for the system to fall quiet");
    quiet.cancel();
    let quiesce_started = Instant::now();
    let quiesced = quiesce(&cluster).await;
    let quiesce_seconds = quiesce_started.elapsed().as_secs_f64();
    stop.cancel();
    let unexpected_exits: Vec<String> = cluster
        .services()
        .filter(|s| !s.running())
        .map(|s| s.name.clone())
        .collect();
    let received = terminals.received();
    let terminal_stats = terminals.stats();
    terminals.join().await;

    bar.set_message("reading the topics and the store");
    let read = topics::read_all(
        &cluster.bootstrap,
        &cluster.topic_prefix,
        &[Topic::Events, Topic::Incidents, Topic::Tasks],
    )
    .await?;
    let accepted = load.accepted();
    let kills_ms: Vec<i64> = done.iter().filter_map(|d| d.killed_at_ms).collect();
    let outcome = check::run(check::Inputs {
        read: &read,
        accepted: &accepted,
        received: &received,
        kills_ms: &kills_ms,
        redis_url: &cluster.redis_url,
        key_prefix: &config.redis.key_prefix,
    })
    .await?;

    let mut by_kind: BTreeMap<String, u64> = faults::FaultKind::ALL
        .iter()
        .map(|k| (k.as_str().to_owned(), 0))
        .collect();
    for d in done.iter().filter(|d| d.error.is_none()) {
        *by_kind.entry(d.kind.as_str().to_owned()).or_default() += 1;
    }
    Ok(Report {
        ok: outcome.figures.broken() == 0,
        reproduce: format!(
            "qzx chaos --seconds {} --faults {} --seed {} --rate {}",
            args.seconds, args.faults, args.seed, args.rate
        ),
        seed: args.seed,
        load_seconds,
        quiesce_seconds,
        quiesced,
        run_seconds: 0.0,
        calls: load.snapshot(),
        terminals: terminal_stats,
        faults: by_kind,
        fault_log: done,
        figures: outcome.figures,
        handover_ms: outcome.handover,
        seen: outcome.seen,
        topics: read.counts,
        truncated: read.truncated,
        unexpected_exits,
        examples: outcome.examples,
        logs: None,
    })
}

/// Waits until the routers' consumer group has no lag on events and
/// actions and no topic has grown for `QUIET_FOR`; false when that did not
/// happen within `QUIESCE_WITHIN`.
async fn quiesce(cluster: &Cluster) -> bool {
    let probe = match topics::Probe::new(
        &cluster.bootstrap,
        &cluster.router_group,
        &cluster.topic_prefix,
        cluster::PARTITIONS,
    ) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot watch the routers' lag");
            return false;
        }
    };
    let started = Instant::now();
    let mut last: Option<topics::Sample> = None;
    let mut quiet_since: Option<Instant> = None;
    while started.elapsed() < QUIESCE_WITHIN {
        match probe.sample().await {
            Ok(sample) => {
                let still = sample.router_lag == 0 && last.as_ref().is_some_and(|l| l.ends == sample.ends);
                if !still {
                    quiet_since = None;
                } else if quiet_since.get_or_insert_with(Instant::now).elapsed() >= QUIET_FOR {
                    return true;
                }
                last = Some(sample);
            }
            Err(e) => {
                tracing::debug!(error = %format!("{e:#}"), "sampling the lag");
                quiet_since = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}
