//! The system a chaos run attacks, as child processes of this binary on
//! free loopback ports: `qzx broker` (three mock brokers, with its control
//! endpoint), a redis-server of its own, one ingest, two routers and two
//! apis. Each can be killed (SIGKILL) and started again on the same port
//! with the same environment. It starts nothing it does not stop, and
//! never touches a server it did not start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bus::Config;
use bus::auth::TokenKeys;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use crate::children::{Log, Proc, Spec, free_port, wait_ready};

/// Brokers of the mock cluster: one can be down, slow or lose a leader
/// while the others serve.
pub const BROKERS: i32 = 3;
/// Partitions of every topic: the demo city's jurisdiction keys hash onto
/// both routers' halves (with 6, all land on one router; deploy/README.md).
pub const PARTITIONS: i32 = 10;
/// The group session: how long a SIGKILLed router keeps its partitions.
/// The local cluster's value (tests/deploy.rs), so a kill is handed over
/// within seconds; the drain must stay below it.
const SESSION_TIMEOUT_MS: u64 = 6000;
const DRAIN_TIMEOUT_MS: u64 = 2000;
const READY_WITHIN: Duration = Duration::from_secs(90);

/// One qzx service process and its fixed address.
pub struct Service {
    pub name: String,
    pub addr: SocketAddr,
    proc: Mutex<Proc>,
}

impl Service {
    fn start(name: &str, args: &[String], env: &[(String, String)], dir: &Path) -> anyhow::Result<Service> {
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let log = Log::File(dir.join(format!("{name}.log")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = Proc::spawn(Spec::qzx(name, &args, env, addr, log)?)?;
        Ok(Service {
            name: name.to_owned(),
            addr,
            proc: Mutex::new(proc),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// False once killed (or exited by itself), until started again.
    pub fn running(&self) -> bool {
        self.lock().running()
    }

    /// SIGKILL now.
    pub fn kill(&self) {
        self.lock().kill();
    }

    /// Starts it again on its port and waits until it is ready.
    pub async fn restart(&self, http: &reqwest::Client) -> anyhow::Result<()> {
        self.lock().start()?;
        wait_ready(http, self.addr, &self.name, READY_WITHIN).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Proc> {
        self.proc.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Cluster {
    /// Logs of every child, the accepted ids and the terminals' log.
    pub dir: PathBuf,
    pub topic_prefix: String,
    /// The routers' consumer group, whose lag says when the run is quiet.
    pub router_group: String,
    pub bootstrap: String,
    /// `qzx broker`'s control endpoint.
    pub control: String,
    pub redis_url: String,
    pub keys: TokenKeys,
    pub ingest: Service,
    pub routers: [Service; 2],
    pub apis: [Service; 2],
    broker: Mutex<Proc>,
    redis: Mutex<Proc>,
    pub http: reqwest::Client,
}

impl Cluster {
    /// Starts everything under `dir` and waits until every service is
    /// ready. `config_file` is handed to the services (`--config`).
    pub async fn start(config: &Config, config_file: Option<&Path>, dir: &Path) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let topic_prefix = format!("chaos-{}.", &bus::model::new_id()[..8]);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .pool_max_idle_per_host(64)
            .build()?;

        let redis_program = ensure_redis_server()?;
        let redis_port = free_port()?;
        let redis = Proc::spawn(Spec {
            name: "redis-server".into(),
            program: redis_program,
            args: [
                "--bind",
                "127.0.0.1",
                "--port",
                &redis_port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.to_string_lossy(),
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
            env: Vec::new(),
            log: Log::File(dir.join("redis.log")),
            stdout: false,
        })?;
        let redis_url = format!("redis://127.0.0.1:{redis_port}/0");
        wait_redis(&redis_url).await?;

        let mut broker = Proc::spawn(Spec {
            name: "qzx broker".into(),
            program: std::env::current_exe().context("locating the qzx binary")?,
            args: vec![
                "broker".into(),
                "--brokers".into(),
                BROKERS.to_string(),
                "--partitions".into(),
                PARTITIONS.to_string(),
                "--topic-prefix".into(),
                topic_prefix.clone(),
            ],
            env: vec![("RUST_LOG".into(), "warn".into())],
            log: Log::File(dir.join("broker.log")),
            stdout: true,
        })?;
        let (bootstrap, control) = broker_lines(&mut broker).await?;

        let secret = bus::model::new_id() + &bus::model::new_id();
        let env: Vec<(String, String)> = vec![
            ("QZX_KAFKA_BROKERS".into(), bootstrap.clone()),
            ("QZX_TOPIC_PREFIX".into(), topic_prefix.clone()),
            ("QZX_REDIS_URL".into(), redis_url.clone()),
            ("QZX_JWT_SECRET".into(), secret.clone()),
            ("QZX_KAFKA__PARTITIONS".into(), PARTITIONS.to_string()),
            ("QZX_KAFKA__SESSION_TIMEOUT_MS".into(), SESSION_TIMEOUT_MS.to_string()),
            ("QZX_KAFKA__DRAIN_TIMEOUT_MS".into(), DRAIN_TIMEOUT_MS.to_string()),
            (
                "RUST_LOG".into(),
                std::env::var("CHAOS_SERVICE_LOG").unwrap_or_else(|_| "warn".into()),
            ),
        ];
        // The services read the same configuration file as this run: its
        // city and units are what the load and the terminals use.
        let mut head: Vec<String> = Vec::new();
        if let Some(file) = config_file {
            let file = std::fs::canonicalize(file).with_context(|| format!("reading {}", file.display()))?;
            head = vec!["--config".into(), file.to_string_lossy().into_owned()];
        }
        let start = |name: &str, role: &str| {
            let mut args = head.clone();
            args.push(role.to_owned());
            Service::start(name, &args, &env, dir)
        };
        let ingest = start("ingest", "ingest")?;
        let routers = [start("router-1", "router")?, start("router-2", "router")?];
        let apis = [start("api-1", "api")?, start("api-2", "api")?];
        let cluster = Cluster {
            dir: dir.to_owned(),
            topic_prefix,
            router_group: format!("{}-router", config.kafka.group_prefix),
            bootstrap,
            control,
            redis_url,
            keys: TokenKeys::new(&secret),
            ingest,
            routers,
            apis,
            broker: Mutex::new(broker),
            redis: Mutex::new(redis),
            http,
        };
        for s in cluster.services() {
            wait_ready(&cluster.http, s.addr, &s.name, READY_WITHIN).await?;
        }
        Ok(cluster)
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        std::iter::once(&self.ingest)
            .chain(self.routers.iter())
            .chain(self.apis.iter())
    }

    /// SIGKILL of redis-server: everything in it is gone (no persistence).
    pub fn kill_redis(&self) {
        self.redis.lock().unwrap_or_else(|e| e.into_inner()).kill();
    }

    /// Starts redis-server again, empty, on its port.
    pub async fn restart_redis(&self) -> anyhow::Result<()> {
        self.redis.lock().unwrap_or_else(|e| e.into_inner()).start()?;
        wait_redis(&self.redis_url).await
    }

    /// `FLUSHALL` on the running Redis.
    pub async fn flushall(&self) -> anyhow::Result<()> {
        let client = redis::Client::open(self.redis_url.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
        Ok(())
    }

    /// A request to `qzx broker`'s control endpoint (`POST` `path`).
    pub async fn control(&self, path: &str) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{}{path}", self.control))
            .send()
            .await
            .with_context(|| format!("broker control {path}"))?;
        if !response.status().is_success() {
            bail!(
                "broker control {path}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Stops the services gracefully (SIGTERM, then SIGKILL after the
    /// drain), then the broker and Redis.
    pub async fn stop(&self) {
        let grace = Duration::from_millis(DRAIN_TIMEOUT_MS + 5000);
        let mut procs: Vec<Proc> = self.services().map(|s| s.lock().take()).collect();
        for p in &procs {
            p.terminate();
        }
        for p in &mut procs {
            p.reap(grace).await;
        }
        for lock in [&self.broker, &self.redis] {
            let mut proc = lock.lock().unwrap_or_else(|e| e.into_inner()).take();
            proc.stop(Duration::from_secs(5)).await;
        }
    }
}

/// Reads `bootstrap <addr>` and `control <url>` from `qzx broker`.
async fn broker_lines(broker: &mut Proc) -> anyhow::Result<(String, String)> {
    let stdout = broker.take_stdout().context("qzx broker's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut bootstrap = None;
    let mut control = None;
    let read = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(b) = line.strip_prefix("bootstrap ") {
                bootstrap = Some(b.trim().to_owned());
            } else if let Some(c) = line.strip_prefix("control ") {
                control = Some(c.trim().to_owned());
            }
            if bootstrap.is_some() && control.is_some() {
                break;
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(READY_WITHIN, read)
        .await
        .context("qzx broker did not print its addresses in time")??;
    // The rest of its stdout is not read again; keep draining it so the
    // broker never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    match (bootstrap, control) {
        (Some(b), Some(c)) => Ok((b, c)),
        _ => bail!("qzx broker exited before printing its addresses"),
    }
}

async fn wait_redis(url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(url)?;
    for _ in 0..200 {
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await
            && redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("redis-server at {url} did not answer PING within 20 s")
}

/// redis-server from PATH (or /usr/sbin, /usr/bin), installed with
/// apt-get when missing as `scripts/test.sh` does (as root, or through
/// `sudo -n`).
pub fn ensure_redis_server() -> anyhow::Result<PathBuf> {
    if let Some(found) = find_program("redis-server") {
        return Ok(found);
    }
    if find_program("apt-get").is_none() {
        bail!("redis-server is not installed and there is no apt-get to install it: install Redis 7");
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    let as_root = |args: &[&str]| {
        let mut cmd = if root {
            std::process::Command::new(args[0])
        } else {
            let mut c = std::process::Command::new("sudo");
            c.arg("-n").arg(args[0]);
            c
        };
        cmd.args(&args[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        cmd.status().is_ok_and(|s| s.success())
    };
    tracing::info!("installing redis-server with apt-get");
    if !(as_root(&["apt-get", "update", "-qq"])
        && as_root(&[
            "apt-get",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "redis-server",
        ]))
    {
        bail!("redis-server is not installed and apt-get could not install it (needs root or sudo)");
    }
    find_program("redis-server").context("redis-server is still not found after apt-get install")
}

pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
