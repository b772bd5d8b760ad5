//! The system under test for `qzx bench`: this binary started as child
//! processes on free loopback ports, on a broker this process owns (the
//! embedded one) or the configured one. Child CPU time and memory come from
//! `/proc`, so the load generator's own work is not counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bus::auth::TokenKeys;
use bus::embedded::EmbeddedBroker;
use bus::kafka::{Brokers, ensure_topics};
use bus::model::Role;
use bus::{Config, Topic, Topics};

use crate::children::{Log, Proc, Spec, free_port, wait_ready};

/// Linux reports CPU time in clock ticks of 1/100 s on every platform we
/// run on.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

struct Service {
    name: &'static str,
    proc: Proc,
    http: SocketAddr,
}

pub struct System {
    services: Vec<Service>,
    /// Kept alive for the run: the children's broker.
    embedded: Option<Arc<EmbeddedBroker>>,
    pub bootstrap: String,
    pub api_addr: SocketAddr,
    ingest_addr: SocketAddr,
    keys: TokenKeys,
    topics: Topics,
    config: Config,
    pub source_token: String,
    pub http: reqwest::Client,
}

impl System {
    pub async fn start(config: &Config) -> anyhow::Result<System> {
        let prefix = format!("bench-{}.", bus::model::new_id());
        let topics = Topics::new(prefix.clone());
        let (brokers, embedded) = match Brokers::configured(&config.kafka) {
            Some(b) => (b, None),
            None => {
                let broker = Arc::new(EmbeddedBroker::start(config.kafka.embedded_brokers)?);
                (Brokers::Embedded(broker.clone()), Some(broker))
            }
        };
        ensure_topics(&brokers, &config.kafka, &topics, &Topic::ALL).await?;
        let secret = bus::model::new_id();
        let base_env: Vec<(String, String)> = vec![
            ("QZX_KAFKA_BROKERS".into(), brokers.bootstrap().to_owned()),
            ("QZX_TOPIC_PREFIX".into(), prefix.clone()),
            ("QZX_JWT_SECRET".into(), secret.clone()),
            // Bench events are all distinct matters: no repeat linking.
            ("QZX_ROUTER__REPEAT_DISTANCE_M".into(), "0".into()),
            ("QZX_ROUTER__FUSION_DISTANCE_M".into(), "0".into()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        let roles: Vec<(&'static str, &'static [&'static str])> = if config.redis.url.is_some() {
            vec![("ingest", &["ingest"]), ("router", &["router"]), ("api", &["api"])]
        } else {
            vec![("all", &["all"])]
        };
        let mut services = Vec::new();
        for (name, args) in roles {
            let http: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
            let mut env = base_env.clone();
            if let Some(url) = &config.redis.url {
                // Keys of its own, like the topics: a run must not find the
                // units and incidents of an earlier run in the same Redis.
                env.push(("QZX_REDIS_URL".into(), url.clone()));
                env.push(("QZX_REDIS__KEY_PREFIX".into(), format!("{prefix}qzx:")));
            }
            let proc = Proc::spawn(Spec::qzx(name, args, &env, http, Log::Inherit)?)?;
            services.push(Service { name, proc, http });
        }
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(30))
            .build()?;
        for s in &services {
            wait_ready(&http, s.http, &format!("qzx {}", s.name), Duration::from_secs(60)).await?;
        }
        let addr_of = |wanted: &[&str]| {
            services
                .iter()
                .find(|s| wanted.contains(&s.name))
                .map(|s| s.http)
                .context("service address")
        };
        let api_addr = addr_of(&["api", "all"])?;
        let ingest_addr = addr_of(&["ingest", "all"])?;
        let keys = TokenKeys::new(&secret);
        let source_token = keys.mint(
            "bench-source",
            Role::Source,
            &["*".into()],
            None,
            Duration::from_secs(3600),
        )?;
        Ok(System {
            services,
            embedded,
            bootstrap: brokers.bootstrap().to_owned(),
            api_addr,
            ingest_addr,
            keys,
            topics,
            config: config.clone(),
            source_token,
            http,
        })
    }

    pub fn broker_description(&self) -> String {
        match &self.embedded {
            Some(_) => format!("embedded (librdkafka mock cluster) at {}", self.bootstrap),
            None => format!("external at {}", self.bootstrap),
        }
    }

    /// A topic of this run's prefix for the ceiling measurements, apart
    /// from the pipeline's own.
    pub async fn ceiling_topic(&self) -> anyhow::Result<String> {
        let topics = Topics::new(format!("{}ceiling.", self.topics.prefix()));
        let brokers = match &self.embedded {
            Some(e) => Brokers::Embedded(e.clone()),
            None => Brokers::External(self.bootstrap.clone()),
        };
        ensure_topics(&brokers, &self.config.kafka, &topics, &[Topic::Events]).await?;
        Ok(topics.name(Topic::Events))
    }

    pub fn token(&self, role: Role, unit: Option<&str>) -> anyhow::Result<String> {
        let sub = unit.unwrap_or("bench");
        Ok(self
            .keys
            .mint(sub, role, &["*".into()], unit, Duration::from_secs(3600))?)
    }

    pub fn ws_base(&self) -> String {
        format!("ws://{}", self.api_addr)
    }

    pub fn ingest_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ingest_addr)
    }

    /// CPU seconds used so far by each service process; by the embedded
    /// broker's thread, when it runs in this process, as `embedded broker`;
    /// and by the rest of this process (the load generator) as `bench`. On
    /// a shared machine they all compete for the same cores.
    pub fn cpu_seconds(&self) -> HashMap<String, f64> {
        let mut seconds: HashMap<String, f64> = self
            .services
            .iter()
            .filter_map(|s| {
                Some((
                    s.name.to_owned(),
                    proc_cpu_seconds(&format!("/proc/{}", s.proc.pid()?))?,
                ))
            })
            .collect();
        let broker = self.embedded.as_ref().and_then(|_| mock_thread_cpu_seconds());
        if let Some(own) = proc_cpu_seconds("/proc/self") {
            seconds.insert("bench".to_owned(), own - broker.unwrap_or(0.0));
        }
        if let Some(broker) = broker {
            seconds.insert("embedded broker".to_owned(), broker);
        }
        seconds
    }

    /// Resident memory of the process serving WebSockets, KiB.
    pub fn api_rss_kib(&self) -> f64 {
        self.services
            .iter()
            .find(|s| s.name == "api" || s.name == "all")
            .and_then(|s| proc_rss_kib(s.proc.pid()?))
            .unwrap_or(0.0)
    }

    /// Mean processing time per record of the router, by topic, read from
    /// the `_sum` and `_count` of its histogram on `/metrics`.
    pub async fn router_ms_per_record(&self) -> HashMap<String, f64> {
        let Some(router) = self.services.iter().find(|s| s.name == "router" || s.name == "all") else {
            return HashMap::new();
        };
        let text = self.metrics_text(router).await;
        let name = bus::metrics::ROUTER_PROCESS_SECONDS;
        let counts = by_topic(&text, &format!("{name}_count"));
        by_topic(&text, &format!("{name}_sum"))
            .into_iter()
            .filter_map(|(topic, sum)| {
                let count = *counts.get(&topic)?;
                (count > 0.0).then(|| (topic, sum * 1000.0 / count))
            })
            .collect()
    }

    /// Records all services together produced to and consumed from Kafka
    /// so far, over every topic, from their `/metrics`.
    pub async fn kafka_records(&self) -> KafkaRecords {
        let produced = format!("{}_count", bus::metrics::KAFKA_PRODUCE_SECONDS);
        let mut records = KafkaRecords::default();
        for service in &self.services {
            let text = self.metrics_text(service).await;
            records.produced += by_topic(&text, &produced).values().sum::<f64>();
            records.consumed += by_topic(&text, bus::metrics::KAFKA_RECORDS_CONSUMED_TOTAL)
                .values()
                .sum::<f64>();
        }
        records
    }

    /// A service's `/metrics` page; empty when it does not answer.
    async fn metrics_text(&self, service: &Service) -> String {
        match self.http.get(format!("http://{}/metrics", service.http)).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Stops the children gracefully (SIGTERM), then hard.
    pub async fn stop(mut self) {
        for s in &self.services {
            s.proc.terminate();
        }
        for s in &mut self.services {
            s.proc.reap(Duration::from_secs(10)).await;
        }
        drop(self.embedded.take());
    }
}

/// Kafka records moved by the system: produced (acknowledged or not) and
/// consumed.
#[derive(Debug, Default, Clone, Copy)]
pub struct KafkaRecords {
    pub produced: f64,
    pub consumed: f64,
}

impl KafkaRecords {
    /// What was moved between `before` and these counts.
    pub fn since(self, before: KafkaRecords) -> KafkaRecords {
        KafkaRecords {
            produced: self.produced - before.produced,
            consumed: self.consumed - before.consumed,
        }
    }
}

/// The values of one Prometheus series by its `topic` label (its first
/// label), e.g. `name{topic="events"} 12`.
fn by_topic(text: &str, name: &str) -> HashMap<String, f64> {
    let prefix = format!("{name}{{");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (labels, value) = rest.split_once("} ")?;
            let topic = labels.split('"').nth(1)?.to_owned();
            Some((topic, value.trim().parse().ok()?))
        })
        .collect()
}

/// The mock cluster's thread in this process (librdkafka names it `rdk:mock`):
/// it serves every request the embedded broker gets.
fn mock_thread_cpu_seconds() -> Option<f64> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let mut seconds = None;
    for task in tasks.flatten() {
        let path = task.path();
        if std::fs::read_to_string(path.join("comm")).is_ok_and(|comm| comm.trim() == "rdk:mock") {
            *seconds.get_or_insert(0.0) += proc_cpu_seconds(&path.to_string_lossy()).unwrap_or(0.0);
        }
    }
    seconds
}

/// User and system CPU seconds of a process or thread, from `<dir>/stat`.
fn proc_cpu_seconds(dir: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / CLOCK_TICKS_PER_SECOND)
}

fn proc_rss_kib(pid: u32) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
