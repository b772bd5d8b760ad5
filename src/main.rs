//! The `qzx` binary: parses the command line, loads the configuration, and
//! wires the service crates together. It holds no service logic: each
//! service is a library with one `start(ctx, supervisor)`, so `qzx all`,
//! `qzx demo`, one-service commands and tests start the same code.

mod bench;
mod broker;
mod chaos;
mod children;
mod serve;

/// mimalloc rather than glibc's malloc: under load, allocation and freeing
/// took a fifth of the system's CPU, and `malloc_consolidate` alone 3 %.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bus::auth::{TokenKeys, parse_ttl};
use bus::kafka::{Brokers, ensure_topics};
use bus::model::Role;
use bus::{Config, ServiceContext, Supervisor, Topic};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "qzx",
    version,
    about = "Streaming event bus for police command centres (情指行)"
)]
struct Cli {
    /// Configuration file layered over the compiled-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Ingest, router and api in one process plus the city simulator, on the
    /// embedded broker and in-memory store unless configured otherwise.
    Demo(DemoArgs),
    /// Ingest, router and api in one process, no simulator.
    All,
    /// The ingest service alone (HTTP on QZX_INGEST_LISTEN).
    Ingest,
    /// The router alone.
    Router,
    /// The dispatch-ui-api alone (HTTP and WebSocket on QZX_LISTEN).
    Api,
    /// The simulator against a running deployment.
    Sim(SimArgs),
    /// The load benchmark.
    Bench(BenchArgs),
    /// Prints a signed JWT.
    Token(TokenArgs),
    /// Validates the configuration and prints the effective one.
    CheckConfig,
    /// The embedded broker (not durable) as a process of its own, with a
    /// loopback control endpoint for fault injection.
    Broker(broker::BrokerArgs),
    /// Faults injected into a whole deployment (child processes) under
    /// load, then every lost, duplicated or missed record counted.
    Chaos(chaos::ChaosArgs),
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Run the city this many times faster than real time; the 1-3-5
    /// targets and the router's windows are scaled to match, so a breach
    /// means the same as in real time.
    #[arg(long, default_value_t = DEMO_SPEED)]
    speed: f64,
    /// Seed of the simulated city (a repeatable run).
    #[arg(long)]
    seed: Option<u64>,
    /// Local hour of the day the simulated city starts at (the call rate
    /// follows the hour); the evening peak by default, so the demo is busy.
    #[arg(long, default_value_t = DEMO_START_HOUR)]
    start_hour: f64,
    /// Stop after this many simulated seconds and print the simulator's
    /// report (1-3-5 outcomes next to a nearest-unit baseline on the same
    /// seed); default: run until interrupted.
    #[arg(long)]
    duration: Option<u64>,
}

/// Ten times real time: a 1-minute target shows as 6 s on the board, and a
/// job (drive, on scene, close) takes a minute or two instead of half an
/// hour.
const DEMO_SPEED: f64 = 10.0;
const DEMO_START_HOUR: f64 = 19.0;

#[derive(Args, Debug)]
struct SimArgs {
    /// Base URL of the deployment (ingest and api).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// A source or admin token for the deployment. With QZX_JWT_SECRET set
    /// instead, every token (units included) is minted.
    #[arg(long)]
    token: Option<String>,
    #[arg(long)]
    speed: Option<f64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Simulated seconds to run (default: until interrupted).
    #[arg(long)]
    duration: Option<u64>,
    /// Local hour of the day the simulated city starts at (default: now).
    #[arg(long)]
    start_hour: Option<f64>,
    /// Ingest's base URL when it is not the target's.
    #[arg(long)]
    ingest_url: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Events per second for the latency figure.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// How long the latency figure is measured, seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Idle WebSocket connections to hold.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Simulated unit terminals receiving tasks.
    #[arg(long, default_value_t = 200)]
    units: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args, Debug)]
struct TokenArgs {
    #[arg(long, value_enum)]
    role: RoleArg,
    /// A jurisdiction id (repeatable), or `*` for all.
    #[arg(long = "jurisdiction")]
    jurisdictions: Vec<String>,
    /// The unit id, for role `unit`.
    #[arg(long)]
    unit: Option<String>,
    /// Lifetime: 30s, 15m, 8h, 7d.
    #[arg(long, default_value = "8h")]
    ttl: String,
    /// Subject (user or system id); defaults to the unit id or the role.
    #[arg(long)]
    sub: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RoleArg {
    Source,
    Unit,
    Operator,
    Analyst,
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Source => Role::Source,
            RoleArg::Unit => Role::Unit,
            RoleArg::Operator => Role::Operator,
            RoleArg::Analyst => Role::Analyst,
            RoleArg::Admin => Role::Admin,
        }
    }
}

/// Which services one process runs.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Services {
    ingest: bool,
    router: bool,
    api: bool,
    /// Only `demo` and `all` may start the embedded broker and use the
    /// in-memory store: every service is then in this process.
    single_process: bool,
    /// Run the simulated city too, with these overrides.
    demo: Option<DemoOverrides>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct DemoOverrides {
    speed: f64,
    seed: Option<u64>,
    start_hour: f64,
    duration: Option<u64>,
}

const ALL: Services = Services {
    ingest: true,
    router: true,
    api: true,
    single_process: true,
    demo: None,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "qzx failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::load(cli.config.as_deref())?;
    let services = match cli.command {
        Command::CheckConfig => {
            print!(
                "{}",
                toml::to_string_pretty(&config).context("printing the configuration")?
            );
            return Ok(ExitCode::SUCCESS);
        }
        Command::Token(args) => {
            println!("{}", mint_token(&config, args)?);
            return Ok(ExitCode::SUCCESS);
        }
        Command::Bench(args) => {
            let options = bench::BenchOptions {
                rate: args.rate,
                seconds: args.seconds,
                connections: args.connections,
                units: args.units,
                seed: args.seed,
            };
            let report = runtime()?.block_on(bench::run(config, options, true))?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                bench::print_table(&report);
            }
            return Ok(ExitCode::SUCCESS);
        }
        Command::Sim(args) => {
            runtime()?.block_on(run_sim(config, args))?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Broker(args) => {
            runtime()?.block_on(broker::run(config, args))?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Chaos(args) => return runtime()?.block_on(chaos::run(config, cli.config, args)),
        Command::Demo(args) => Services {
            demo: Some(DemoOverrides {
                speed: args.speed,
                seed: args.seed,
                start_hour: args.start_hour,
                duration: args.duration,
            }),
            ..ALL
        },
        Command::All => ALL,
        Command::Ingest => Services {
            ingest: true,
            router: false,
            api: false,
            single_process: false,
            demo: None,
        },
        Command::Router => Services {
            ingest: false,
            router: true,
            api: false,
            single_process: false,
            demo: None,
        },
        Command::Api => Services {
            ingest: false,
            router: false,
            api: true,
            single_process: false,
            demo: None,
        },
    };
    runtime()?.block_on(run_services(config, services))?;
    Ok(ExitCode::SUCCESS)
}

/// Only the commands that run something start the async runtime.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn mint_token(config: &Config, args: TokenArgs) -> anyhow::Result<String> {
    let Some(secret) = config.auth.jwt_secret.as_deref() else {
        bail!("QZX_JWT_SECRET is not set: tokens are signed with it");
    };
    let ttl = parse_ttl(&args.ttl).with_context(|| format!("--ttl {}: use 30s, 15m, 8h or 7d", args.ttl))?;
    let role = Role::from(args.role);
    let sub = args
        .sub
        .or_else(|| args.unit.clone())
        .unwrap_or_else(|| format!("{role:?}").to_lowercase());
    Ok(TokenKeys::new(secret).mint(&sub, role, &args.jurisdictions, args.unit.as_deref(), ttl)?)
}

async fn run_services(mut config: Config, services: Services) -> anyhow::Result<()> {
    let brokers = match Brokers::configured(&config.kafka) {
        Some(b) => b,
        None if services.single_process => Brokers::start_embedded(&config.kafka)?,
        None => bail!(
            "QZX_KAFKA_BROKERS is not set: this command needs a Kafka cluster (only `demo` and `all` start the embedded broker)"
        ),
    };
    if config.redis.url.is_none() && !services.single_process {
        bail!(
            "QZX_REDIS_URL is not set: the in-memory store only works when every service shares one process (`qzx all`, `qzx demo`)"
        );
    }
    if config.auth.jwt_secret.is_none() && services.demo.is_some() {
        config.auth.jwt_secret = Some(bus::model::new_id() + &bus::model::new_id());
    }
    // The simulator drives units in simulated time on the configuration as
    // written; the services run on clocks scaled by the same speed.
    let simulation = services.demo.map(|demo| {
        let mut city = config.clone();
        city.sim.speed = demo.speed;
        if let Some(seed) = demo.seed {
            city.sim.seed = seed;
        }
        config = sim::scaled_config(&config, demo.speed);
        (std::sync::Arc::new(city), demo)
    });
    if config.auth.jwt_secret.is_none() && (services.ingest || services.api) {
        bail!("QZX_JWT_SECRET is not set: only `demo` generates one");
    }
    if let Some(why) = config.auth.jwt_secret.as_deref().and_then(bus::auth::weak_secret)
        && (services.ingest || services.api)
    {
        bail!("QZX_JWT_SECRET {why}");
    }
    let store = bus::store::open(config.redis.url.as_deref(), &config.redis.key_prefix).await?;
    let metrics = serve::install_metrics()?;
    let ctx = ServiceContext::new(config, brokers, store);
    tracing::info!(
        kafka = %ctx.brokers.bootstrap(),
        embedded = ctx.brokers.is_embedded(),
        store = ctx.store.kind(),
        topics = %ctx.topics.prefix(),
        "starting"
    );
    if ctx.brokers.is_embedded() {
        ensure_topics(&ctx.brokers, &ctx.config.kafka, &ctx.topics, &Topic::ALL).await?;
    }

    let mut sup = Supervisor::default();
    bus::service::cancel_on_signals(sup.token());

    let mut app = axum::Router::new();
    if services.ingest {
        app = app.merge(ingest::start(&ctx, &mut sup).await.context("starting ingest")?);
    }
    if services.router {
        router::start(&ctx, &mut sup).await.context("starting the router")?;
    }
    if services.api {
        app = app.merge(
            dispatch_ui_api::start(&ctx, &mut sup)
                .await
                .context("starting the api")?,
        );
    }
    let listen = if services.ingest && !services.api {
        ctx.config.ingest.listen.clone()
    } else {
        ctx.config.api.listen.clone()
    };
    let app = serve::with_common_routes(app, ctx.clone(), metrics);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let local = listener.local_addr()?;
    tracing::info!(address = %local, "listening");
    sup.spawn(
        "http",
        serve::serve(listener, app, ctx.config.http.clone(), sup.token()),
    );
    if let Some((city, demo)) = simulation {
        print_demo_banner(&ctx, local);
        start_simulator(city, demo, local, &mut sup)?;
    }
    let drain = ctx.config.kafka.drain_timeout() + Duration::from_secs(2);
    sup.wait(drain).await
}

/// The simulated city against this process's own HTTP and WebSocket
/// interfaces, as any client would drive it.
fn start_simulator(
    config: std::sync::Arc<Config>,
    demo: DemoOverrides,
    address: std::net::SocketAddr,
    sup: &mut Supervisor,
) -> anyhow::Result<()> {
    let secret = config
        .auth
        .jwt_secret
        .as_deref()
        .context("the demo has a token secret")?;
    let mut options = sim::SimOptions::with_keys(&config, &format!("http://{address}"), &TokenKeys::new(secret))?;
    options.start_hour = Some(demo.start_hour);
    options.duration = demo.duration.map(Duration::from_secs);
    let token = sup.token();
    sup.spawn("simulator", async move {
        let report = sim::run(config, options, token).await?;
        tracing::info!(
            calls = report.calls_posted,
            tasks = report.tasks_received,
            "simulator stopped"
        );
        if demo.duration.is_some() {
            // A run with a duration is a measurement: its report is the
            // output, and the demo ends with it.
            print!("{report}");
            println!("{}", serde_json::to_string(&report)?);
        }
        Ok(())
    });
    Ok(())
}

/// `qzx sim`: the simulated city against a running deployment, until
/// interrupted or for `--duration` simulated seconds.
async fn run_sim(config: Config, args: SimArgs) -> anyhow::Result<()> {
    let mut options = sim::SimOptions::for_target(&config, &args.target, args.token.as_deref())?;
    if let Some(speed) = args.speed {
        options.speed = speed;
    }
    if let Some(seed) = args.seed {
        options.seed = seed;
    }
    options.duration = args.duration.map(Duration::from_secs);
    if args.start_hour.is_some() {
        options.start_hour = args.start_hour;
    }
    if args.ingest_url.is_some() {
        options.ingest_url = args.ingest_url;
    }
    let token = tokio_util::sync::CancellationToken::new();
    bus::service::cancel_on_signals(token.clone());
    let report = sim::run(std::sync::Arc::new(config), options, token).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// What a new user needs to start using the demo.
fn print_demo_banner(ctx: &ServiceContext, address: std::net::SocketAddr) {
    let Some(secret) = ctx.config.auth.jwt_secret.as_deref() else {
        return;
    };
    let keys = TokenKeys::new(secret);
    let day = Duration::from_secs(24 * 3600);
    let all = ["*".to_owned()];
    let mint = |sub: &str, role: Role, unit: Option<&str>| keys.mint(sub, role, &all, unit, day).unwrap_or_default();
    let operator = mint("demo-operator", Role::Operator, None);
    let analyst = mint("demo-analyst", Role::Analyst, None);
    let source = mint("demo-source", Role::Source, None);
    let unit_id = ctx.config.units.first().map_or("quancheng-01", |u| u.id.as_str());
    let unit = mint(unit_id, Role::Unit, Some(unit_id));
    let base = format!("http://{address}");
    println!("qzx demo is running");
    println!("  board     {base}/?token={operator}");
    println!("  terminal  {base}/terminal?token={unit}   (unit {unit_id})");
    println!("  analyst token  {analyst}");
    println!("  source token   {source}");
    println!(
        "  kafka     {}{}",
        ctx.brokers.bootstrap(),
        if ctx.brokers.is_embedded() {
            "   (embedded, not durable; any Kafka client can read it)"
        } else {
            ""
        }
    );
    println!("  topics    {}*", ctx.topics.prefix());
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
