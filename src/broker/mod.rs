//! `qzx broker`: the embedded broker (librdkafka's mock cluster) as a
//! process of its own, so it outlives the services killed around it, with a
//! loopback control endpoint for its fault injection (`control`). A
//! zero-install Kafka for multi-process setups and chaos runs; it is not
//! durable and must never stand in where durability is promised.
//!
//! The mock has no CreateTopics API, so services in other processes cannot
//! create their topics on it: this command creates qzx's topics at start,
//! and a service finds them there (`ensure_topics` creates only what is
//! missing). Its brokers listen on ports the kernel picks (the mock binds
//! port 0 and offers no other), so the address is printed and, with
//! `--bootstrap-file`, written to a file.

mod control;

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bus::embedded::EmbeddedBroker;
use bus::{Config, Supervisor, Topic, Topics};
use clap::Args;

use crate::serve;

#[derive(Args, Debug)]
pub struct BrokerArgs {
    /// Loopback port of the control endpoint (0: any free port).
    #[arg(long, default_value_t = 0)]
    control_port: u16,
    /// Brokers in the cluster, ids 1 to N (default: kafka.embedded_brokers).
    #[arg(long)]
    brokers: Option<i32>,
    /// Partitions of each topic created (default: kafka.partitions).
    #[arg(long)]
    partitions: Option<i32>,
    /// Prefix of the qzx topics created at start (default: kafka.topic_prefix).
    #[arg(long)]
    topic_prefix: Option<String>,
    /// Also write the bootstrap address to this file once the topics exist;
    /// it is removed on exit.
    #[arg(long, value_name = "FILE")]
    bootstrap_file: Option<PathBuf>,
}

/// Runs the broker until SIGINT or SIGTERM.
pub async fn run(config: Config, args: BrokerArgs) -> anyhow::Result<()> {
    let http = config.http.clone();
    let brokers = args.brokers.unwrap_or(config.kafka.embedded_brokers);
    if brokers < 1 {
        bail!("--brokers must be at least 1");
    }
    let partitions = args.partitions.unwrap_or(config.kafka.partitions);
    if partitions < 1 {
        bail!("--partitions must be at least 1");
    }
    let topics = Topics::new(args.topic_prefix.unwrap_or(config.kafka.topic_prefix));
    let created: Vec<(String, i32)> = Topic::ALL.iter().map(|t| (topics.name(*t), partitions)).collect();
    // Starting the mock and creating its topics wait on the mock's thread.
    let broker = tokio::task::spawn_blocking(move || -> anyhow::Result<EmbeddedBroker> {
        let broker = EmbeddedBroker::start(brokers)?;
        broker.create_topics(&topics, partitions)?;
        Ok(broker)
    })
    .await??;
    let broker = Arc::new(broker);
    let bootstrap = broker.bootstrap_servers().to_owned();

    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, args.control_port))
        .await
        .with_context(|| format!("binding the control endpoint on 127.0.0.1:{}", args.control_port))?;
    let control_url = format!("http://{}", listener.local_addr()?);
    let mut sup = Supervisor::default();
    bus::service::cancel_on_signals(sup.token());
    let app = control::router(broker.clone(), &created);
    sup.spawn("control", serve::serve(listener, app, http, sup.token()));

    if let Some(file) = &args.bootstrap_file {
        write_atomically(file, &bootstrap)?;
    }
    tracing::info!(%bootstrap, control = %control_url, brokers, partitions, "broker ready; it is not durable");
    // The two lines a user or a parent process reads; logs go to stderr.
    let mut out = std::io::stdout().lock();
    writeln!(out, "bootstrap {bootstrap}")?;
    writeln!(out, "control {control_url}")?;
    out.flush()?;
    drop(out);

    let result = sup.wait(Duration::from_secs(2)).await;
    if let Some(file) = &args.bootstrap_file {
        // A file left behind would point the next reader at a dead broker.
        let _ = std::fs::remove_file(file);
    }
    result
}

/// Writes through a temporary file and a rename, so a process polling for
/// the file never reads half an address.
fn write_atomically(file: &Path, contents: &str) -> anyhow::Result<()> {
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{contents}\n")).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, file).with_context(|| format!("writing {}", file.display()))?;
    Ok(())
}
