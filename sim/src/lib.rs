//! `sim`: the simulated city of Jinan that drives a qzx deployment through
//! its public interfaces only — 110 calls, sensor alarms and CAP alerts
//! posted to ingest over HTTP, and patrol units that are real WebSocket
//! clients of the api, each with its own unit token. `qzx demo` runs it next
//! to the services; `qzx sim --target URL` runs it against any deployment.
//!
//! It must never reach into a service (no router, ingest or api crate, no
//! Kafka, no Store): what it can do, any client can. Everything random is
//! seeded, so `--seed` repeats the sequence of reports.
//!
//! Time: simulated time is real time × `speed`. The simulator's own waits
//! (arrivals, sign-in delays, driving, time on scene) follow it; the
//! deployment's 1-3-5 clocks run in real time. For a fast run to stay
//! meaningful, start the deployment with [`scaled_config`], which divides
//! the SLA targets and the router's windows by the speed — and give [`run`]
//! the unscaled configuration (it drives units at the configured speeds in
//! simulated time).
//!
//! Besides the units, a simulated operator desk ([`desk`]) watches the
//! board and closes resolved incidents, and a run with a duration also
//! reports the offline nearest-unit [`baseline`] on the same seed.
//!
//! Wiring (what `qzx demo` does after its listener is bound):
//!
//! ```no_run
//! # async fn demo(config: bus::Config, secret: &str) -> anyhow::Result<()> {
//! use std::sync::Arc;
//! let speed = 10.0;
//! let deployment_config = sim::scaled_config(&config, speed); // for ingest/router/api
//! # let _ = deployment_config;
//! let keys = bus::auth::TokenKeys::new(secret);
//! let mut options = sim::SimOptions::with_keys(&config, "http://127.0.0.1:8080", &keys)?;
//! options.speed = speed;
//! options.duration = Some(std::time::Duration::from_secs(3600)); // one simulated hour
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let report = sim::run(Arc::new(config), options, shutdown).await?;
//! eprintln!("{report}");
//! # Ok(())
//! # }
//! ```

pub mod agent;
pub mod baseline;
pub mod city;
pub mod clock;
pub mod desk;
pub mod generate;
pub mod post;
pub mod unit;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bus::Config;
use bus::auth::TokenKeys;
use bus::model::{Role, UnitType};
use chrono::Offset as _;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::agent::{Agent, Behaviour};
use crate::city::Grid;
use crate::clock::SimClock;
use crate::desk::Desk;
use crate::generate::{Generator, Item};
use crate::post::{IngestClient, PostCounters};
use crate::unit::{Client, UnitClient, UnitCounters};

/// Lifetime of the tokens the simulator mints for itself.
const MINTED_TTL: Duration = Duration::from_secs(7 * 86400);
/// Posts in flight at once; arrivals beyond wait (a slow ingest slows the
/// city down rather than piling up requests).
const MAX_POSTS_IN_FLIGHT: usize = 16;
/// How long units and posts get to finish at the end of a run.
const STOP_GRACE: Duration = Duration::from_secs(5);
const PROGRESS_EVERY: Duration = Duration::from_secs(60);
/// How long to wait for the deployment's `/healthz` before starting anyway.
const READY_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{0} must start with http:// or https://")]
    BadUrl(String),
    #[error("cannot mint a token: {0}")]
    Token(#[from] bus::auth::AuthError),
    #[error(transparent)]
    Post(#[from] post::PostError),
    #[error("no credentials: set QZX_JWT_SECRET (to mint unit tokens) or pass a token")]
    NoCredentials,
}

/// Where the units' tokens come from.
#[derive(Debug, Clone)]
pub enum UnitTokens {
    /// Mint one unit token per roster unit with the deployment's secret.
    Mint(TokenKeys),
    /// Tokens given per unit id; only these units are simulated. An id
    /// missing from the roster becomes a patrol car somewhere in the city.
    Fixed(HashMap<String, String>),
}

/// How to run the simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The api, e.g. `http://127.0.0.1:8080` (ingest too, unless
    /// `ingest_url` is set). WebSockets go to the same host (`ws://…/ws`).
    pub base_url: String,
    /// A separate ingest, e.g. `http://127.0.0.1:8081`.
    pub ingest_url: Option<String>,
    /// A `source` token for the ingest endpoints.
    pub source_token: String,
    pub unit_tokens: UnitTokens,
    /// An analyst or admin token for `GET /api/v1/stats` at the end; minted
    /// when the unit tokens are minted and this is `None`.
    pub stats_token: Option<String>,
    /// An operator (or admin) token for the simulated operator desk, which
    /// closes resolved incidents; minted with the unit tokens when `None`.
    /// Without one, incidents stay resolved and are never closed.
    pub operator_token: Option<String>,
    /// Simulated seconds per real second; `--speed 10` is ten times faster.
    pub speed: f64,
    pub seed: u64,
    /// Simulated time to run; `None` runs until shutdown.
    pub duration: Option<Duration>,
    /// Local hour of the day the simulated day starts at (drives the call
    /// rhythm); `None` is the current local hour of the city.
    pub start_hour: Option<f64>,
}

impl SimOptions {
    /// Options for a deployment whose JWT secret we hold (`qzx demo`): every
    /// token minted, speed and seed from `[sim]`.
    pub fn with_keys(config: &Config, base_url: &str, keys: &TokenKeys) -> Result<SimOptions, SimError> {
        let all = ["*".to_owned()];
        Ok(SimOptions {
            base_url: base_url.to_owned(),
            ingest_url: None,
            source_token: keys.mint("qzx-sim", Role::Source, &all, None, MINTED_TTL)?,
            unit_tokens: UnitTokens::Mint(keys.clone()),
            stats_token: Some(keys.mint("qzx-sim", Role::Analyst, &all, None, MINTED_TTL)?),
            operator_token: Some(keys.mint("qzx-sim-desk", Role::Operator, &all, None, MINTED_TTL)?),
            speed: config.sim.speed,
            seed: config.sim.seed,
            duration: None,
            start_hour: None,
        })
    }

    /// Options for `qzx sim --target URL [--token T]`. With the deployment's
    /// secret (`auth.jwt_secret`, i.e. `QZX_JWT_SECRET`) every token is
    /// minted and `token`, when given, reads the stats. Without it, `token`
    /// (source or admin) posts the city's reports and reads the stats, and
    /// no unit is simulated: a unit acts only with its own unit token, so
    /// pass [`UnitTokens::Fixed`] for those.
    pub fn for_target(config: &Config, target: &str, token: Option<&str>) -> Result<SimOptions, SimError> {
        ws_url(target)?;
        if let Some(secret) = config.auth.jwt_secret.as_deref() {
            let mut options = SimOptions::with_keys(config, target, &TokenKeys::new(secret))?;
            if let Some(t) = token {
                options.stats_token = Some(t.to_owned());
            }
            return Ok(options);
        }
        let token = token.ok_or(SimError::NoCredentials)?;
        warn!("no jwt secret: the simulator posts events but drives no units");
        Ok(SimOptions {
            base_url: target.to_owned(),
            ingest_url: None,
            source_token: token.to_owned(),
            unit_tokens: UnitTokens::Fixed(HashMap::new()),
            stats_token: Some(token.to_owned()),
            operator_token: Some(token.to_owned()),
            speed: config.sim.speed,
            seed: config.sim.seed,
            duration: None,
            start_hour: None,
        })
    }
}

/// One stage of the 1-3-5 clock as `/api/v1/stats` reported it. Times are
/// the deployment's (real) seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StageOutcome {
    pub met: u64,
    pub breached: u64,
    pub pending: u64,
    pub share_met: Option<f64>,
    pub p50_s: Option<f64>,
    pub p90_s: Option<f64>,
}

/// What a run did, and what the deployment made of it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimReport {
    pub seed: u64,
    pub speed: f64,
    pub simulated_s: f64,
    pub real_s: f64,
    pub calls_posted: u64,
    /// Of the calls: repeats about the same matter, and calls about a
    /// sensor alarm (both should join an existing incident).
    pub repeat_calls_posted: u64,
    pub sensor_alarms_posted: u64,
    pub cap_alerts_posted: u64,
    /// Items ingest accepted as new.
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// Items given up after retries (ingest unreachable or unavailable).
    pub failed: u64,
    pub units: u64,
    pub units_connected: u64,
    pub reconnects: u64,
    pub tasks_received: u64,
    pub acked: u64,
    pub late_acks: u64,
    pub on_scene: u64,
    pub cleared: u64,
    pub cancelled: u64,
    /// Incidents the simulated operator closed.
    pub closed: u64,
    pub command_errors: u64,
    /// Per stage (`respond`, `arrive`, `reinforce`), when the stats had them.
    pub stages: Option<HashMap<String, StageOutcome>>,
    /// `/api/v1/stats` as it came, whatever its shape.
    pub stats: Option<Value>,
    pub stats_error: Option<String>,
    /// The nearest-unit baseline on the same seed and simulated time (runs
    /// with a duration only), see [`baseline`].
    pub baseline: Option<baseline::BaselineReport>,
}

impl std::fmt::Display for SimReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "simulated {:.0} s in {:.0} s (speed {}, seed {})",
            self.simulated_s, self.real_s, self.speed, self.seed
        )?;
        writeln!(
            f,
            "posted: {} calls ({} repeats), {} sensor alarms, {} CAP alerts; accepted {}, duplicates {}, rejected {}, failed {}",
            self.calls_posted,
            self.repeat_calls_posted,
            self.sensor_alarms_posted,
            self.cap_alerts_posted,
            self.accepted,
            self.duplicates,
            self.rejected,
            self.failed
        )?;
        writeln!(
            f,
            "units: {} of {} connected ({} reconnects); tasks {}, acked {} ({} late), on scene {}, cleared {}, cancelled {}; incidents closed {}; refused commands {}",
            self.units_connected,
            self.units,
            self.reconnects,
            self.tasks_received,
            self.acked,
            self.late_acks,
            self.on_scene,
            self.cleared,
            self.cancelled,
            self.closed,
            self.command_errors
        )?;
        match (&self.stages, &self.stats_error) {
            (Some(stages), _) => {
                for name in ["respond", "arrive", "reinforce"] {
                    let Some(s) = stages.get(name) else { continue };
                    let share = s.share_met.map_or("-".to_owned(), |x| format!("{:.0}%", x * 100.0));
                    let time = |t: Option<f64>| {
                        t.map_or("-".to_owned(), |t| format!("{t:.0} s (sim {:.0} s)", t * self.speed))
                    };
                    writeln!(
                        f,
                        "1-3-5 {name}: met {}, breached {}, pending {}, share met {share}, p50 {}, p90 {}",
                        s.met,
                        s.breached,
                        s.pending,
                        time(s.p50_s),
                        time(s.p90_s)
                    )?;
                }
            }
            (None, Some(e)) => writeln!(f, "stats: {e}")?,
            (None, None) => {}
        }
        if let Some(b) = &self.baseline {
            writeln!(
                f,
                "baseline (nearest unit by straight line, offline model): {} incidents, {} diverted, {} repeats, {} dispatches waited for a unit",
                b.incidents, b.diverted, b.repeats, b.waited_for_unit
            )?;
            for name in ["respond", "arrive", "reinforce"] {
                let Some(s) = b.stages.get(name) else { continue };
                let share = s.share_met.map_or("-".to_owned(), |x| format!("{:.0}%", x * 100.0));
                let time = |t: Option<f64>| t.map_or("-".to_owned(), |t| format!("sim {t:.0} s"));
                writeln!(
                    f,
                    "baseline {name}: met {}, breached {}, share met {share}, p50 {}, p90 {}",
                    s.met,
                    s.breached,
                    time(s.p50_s),
                    time(s.p90_s)
                )?;
            }
        }
        Ok(())
    }
}

/// The configuration a deployment should run with when the simulator runs
/// at `speed`: SLA targets and the router's repeat and fusion windows
/// divided by the speed (at least 1 s), unit speeds for the travel-time
/// estimate multiplied by it, and the clock tick shortened, so that at
/// `--speed 10` a unit signing 20 simulated seconds after the task (2 real
/// seconds) meets a 60 s target scaled to 6 s. `speed` ≤ 1 or not a number
/// leaves the configuration as it is (except `sim.speed`).
pub fn scaled_config(config: &Config, speed: f64) -> Config {
    let mut scaled = config.clone();
    let speed = clock::sane_speed(speed);
    scaled.sim.speed = speed;
    if speed <= 1.0 {
        return scaled;
    }
    let div = |s: u64| ((s as f64 / speed).ceil() as u64).max(1);
    for target in &mut scaled.sla {
        target.respond_s = div(target.respond_s);
        target.arrive_s = div(target.arrive_s);
        target.reinforce_s = div(target.reinforce_s);
    }
    scaled.router.repeat_window_s = div(scaled.router.repeat_window_s);
    scaled.router.fusion_window_s = div(scaled.router.fusion_window_s);
    for kmh in scaled.router.speeds_kmh.values_mut() {
        *kmh *= speed;
    }
    scaled.router.clock_tick_ms = ((scaled.router.clock_tick_ms as f64 / speed) as u64).max(50);
    scaled
}

/// `http://host` → `ws://host/ws`.
fn ws_url(base_url: &str) -> Result<String, SimError> {
    let base = base_url.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        Ok(format!("ws://{rest}/ws"))
    } else if let Some(rest) = base.strip_prefix("https://") {
        Ok(format!("wss://{rest}/ws"))
    } else {
        Err(SimError::BadUrl(base_url.to_owned()))
    }
}

/// A unit to simulate: from the roster, or a stranger with a token.
struct UnitPlan {
    id: String,
    unit_type: UnitType,
    home: [f64; 2],
    token: String,
}

fn plan_units(config: &Config, tokens: &UnitTokens, grid: &Grid, seed: u64) -> Result<Vec<UnitPlan>, SimError> {
    let mut plans = Vec::new();
    match tokens {
        UnitTokens::Mint(keys) => {
            for u in &config.units {
                let token = keys.mint(
                    &u.id,
                    Role::Unit,
                    std::slice::from_ref(&u.jurisdiction),
                    Some(&u.id),
                    MINTED_TTL,
                )?;
                plans.push(UnitPlan {
                    id: u.id.clone(),
                    unit_type: u.unit_type,
                    home: u.home,
                    token,
                });
            }
        }
        UnitTokens::Fixed(map) => {
            let mut entries: Vec<(&String, &String)> = map.iter().collect();
            entries.sort();
            let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed ^ 0x0005_eed0_u64);
            for (id, token) in entries {
                let roster = config.units.iter().find(|u| &u.id == id);
                let (unit_type, home) = match roster {
                    Some(u) => (u.unit_type, u.home),
                    None => (
                        UnitType::PatrolCar,
                        grid.random_place(&mut rng)
                            .unwrap_or_else(|| config.city.jurisdictions.first().map_or([0.0, 0.0], |j| j.centre)),
                    ),
                };
                plans.push(UnitPlan {
                    id: id.clone(),
                    unit_type,
                    home,
                    token: token.clone(),
                });
            }
        }
    }
    Ok(plans)
}

/// A stable per-unit seed, so each unit's delays repeat with the run's seed.
fn unit_seed(seed: u64, id: &str) -> u64 {
    // FNV-1a: stable across builds, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Runs the simulated city against the deployment at `options.base_url`
/// until `shutdown` or until `options.duration` of simulated time has
/// passed, then fetches `/api/v1/stats` and reports.
pub async fn run(config: Arc<Config>, options: SimOptions, shutdown: CancellationToken) -> anyhow::Result<SimReport> {
    let speed = clock::sane_speed(options.speed);
    let ws = ws_url(&options.base_url)?;
    let ingest_base = options.ingest_url.clone().unwrap_or_else(|| options.base_url.clone());
    ws_url(&ingest_base)?;
    let ingest = IngestClient::new(&ingest_base, &options.source_token)?;
    let grid = Arc::new(Grid::new(&config));
    let units = plan_units(&config, &options.unit_tokens, &grid, options.seed)?;
    let stats_token = match (&options.stats_token, &options.unit_tokens) {
        (Some(t), _) => Some(t.clone()),
        (None, UnitTokens::Mint(keys)) => {
            Some(keys.mint("qzx-sim", Role::Analyst, &["*".to_owned()], None, MINTED_TTL)?)
        }
        (None, UnitTokens::Fixed(_)) => None,
    };
    let operator_token = match (&options.operator_token, &options.unit_tokens) {
        (Some(t), _) => Some(t.clone()),
        (None, UnitTokens::Mint(keys)) => {
            Some(keys.mint("qzx-sim-desk", Role::Operator, &["*".to_owned()], None, MINTED_TTL)?)
        }
        (None, UnitTokens::Fixed(_)) => None,
    };

    let started_wall = chrono::Utc::now();
    let start_hour = options.start_hour.unwrap_or_else(|| {
        let local = started_wall + chrono::Duration::hours(i64::from(config.router.night.utc_offset_hours));
        let secs = local.timestamp().rem_euclid(86400) as f64;
        secs / 3600.0
    });
    // Unique per run so a repeated seed is not taken for duplicates by the
    // deployment's idempotency window; everything else follows the seed.
    let run_tag = format!("{}-s{}", started_wall.format("%Y%m%d%H%M%S"), options.seed);
    info!(
        speed,
        seed = options.seed,
        units = units.len(),
        start_hour = format!("{start_hour:.1}"),
        "simulated city starting"
    );

    // `qzx demo` starts the simulator with the services: wait until they
    // answer, so the first calls are not spent on a closed port.
    if !wait_until_up(&options.base_url, &shutdown, READY_PATIENCE).await && !shutdown.is_cancelled() {
        warn!("the deployment does not answer /healthz; starting anyway");
    }
    let clock = SimClock::start(speed);
    let unit_counters = Arc::new(UnitCounters::default());
    // The desk's connection is not a unit's: counted apart.
    let desk_counters = Arc::new(UnitCounters::default());
    let post_counters = Arc::new(PostCounters::default());
    let stop = shutdown.child_token();

    let mut unit_tasks = JoinSet::new();
    let late_share = config.sim.late_ack_share;
    for plan in &units {
        let behaviour = Behaviour::for_unit(plan.unit_type, config.router.speed_kmh(plan.unit_type), late_share);
        let agent = Agent::new(
            &plan.id,
            plan.unit_type,
            plan.home,
            behaviour,
            grid.clone(),
            unit_seed(options.seed, &plan.id),
        );
        let client = UnitClient {
            agent,
            ws_url: ws.clone(),
            token: plan.token.clone(),
            clock,
            counters: unit_counters.clone(),
        };
        unit_tasks.spawn(client.run(stop.clone()));
    }
    if let Some(token) = operator_token {
        let desk = Client {
            agent: Desk::new(unit_seed(options.seed, "operator-desk")),
            ws_url: ws.clone(),
            token,
            clock,
            counters: desk_counters.clone(),
        };
        unit_tasks.spawn(desk.run(stop.clone()));
    } else {
        warn!("no operator token: resolved incidents will not be closed");
    }

    let mut generator = Generator::new(&config, options.seed, &run_tag, start_hour);
    // CAP alerts are stamped in the city's local time, as its systems would.
    let city_offset =
        chrono::FixedOffset::east_opt(config.router.night.utc_offset_hours * 3600).unwrap_or_else(|| chrono::Utc.fix());
    let posts = Arc::new(Semaphore::new(MAX_POSTS_IN_FLIGHT));
    let mut in_flight = JoinSet::new();
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    progress.tick().await;
    let sim_until = options.duration;
    loop {
        let Some(planned) = generator.next() else {
            // Every stream is switched off: the units still work.
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = sleep_until_sim(&clock, sim_until) => break,
            }
        };
        if sim_until.is_some_and(|d| planned.at > d) {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = sleep_until_sim(&clock, sim_until) => {}
            }
            break;
        }
        let due = clock.instant_of(planned.at);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(due) => break,
                _ = progress.tick() => log_progress(&clock, &post_counters, &unit_counters),
            }
        }
        if stop.is_cancelled() {
            break;
        }
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            p = posts.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        while in_flight.try_join_next().is_some() {}
        let ingest = ingest.clone();
        let counters = post_counters.clone();
        let source = planned.source();
        match &planned.item {
            Item::Cap(_) => counters.cap_alerts.fetch_add(1, Ordering::Relaxed),
            Item::Event(_) if source == bus::model::Source::Sensor => {
                counters.sensor_alarms.fetch_add(1, Ordering::Relaxed)
            }
            Item::Event(_) => {
                if planned.repeat_of.is_some() || planned.about_alarm.is_some() {
                    counters.repeats.fetch_add(1, Ordering::Relaxed);
                }
                counters.calls.fetch_add(1, Ordering::Relaxed)
            }
        };
        in_flight.spawn(async move {
            let result = match planned.item {
                Item::Event(event) => ingest.post_event(&event).await,
                Item::Cap(alert) => {
                    let sent = chrono::Utc::now().with_timezone(&city_offset);
                    ingest.post_cap(alert.to_xml(sent)).await
                }
            };
            if let Err(e) = &result {
                debug!(error = %e, "simulated report not taken");
            }
            counters.record(&result);
            drop(permit);
        });
    }

    let simulated = clock.now();
    stop.cancel();
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while in_flight.join_next().await.is_some() {}
        while unit_tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("simulator stopped before every post and unit finished");
        in_flight.abort_all();
        unit_tasks.abort_all();
    }

    let real = clock.real(simulated);
    let mut report = report_from(&post_counters, &unit_counters, units.len() as u64);
    report.closed = desk_counters.closed.load(Ordering::Relaxed);
    report.command_errors += desk_counters.command_errors.load(Ordering::Relaxed);
    report.seed = options.seed;
    report.speed = speed;
    report.simulated_s = simulated.as_secs_f64();
    report.real_s = real.as_secs_f64();
    if let Some(token) = stats_token {
        let window_min = real.as_secs() / 60 + 2;
        match fetch_stats(&options.base_url, &token, window_min).await {
            Ok(stats) => {
                report.stages = parse_stages(&stats);
                report.stats = Some(stats);
            }
            Err(e) => {
                warn!(error = %e, "stats not fetched");
                report.stats_error = Some(e);
            }
        }
    } else {
        report.stats_error = Some("no analyst token given".into());
    }
    if let Some(duration) = options.duration {
        let (config, seed) = (config.clone(), options.seed);
        let model = tokio::task::spawn_blocking(move || baseline::baseline(&config, seed, start_hour, duration));
        match model.await {
            Ok(b) => report.baseline = Some(b),
            Err(e) => warn!(error = %e, "baseline model failed"),
        }
    }
    info!(
        calls = report.calls_posted,
        acked = report.acked,
        cleared = report.cleared,
        "simulated city stopped"
    );
    Ok(report)
}

/// Polls `GET /healthz` until it answers 2xx; false after `patience` or on
/// shutdown.
async fn wait_until_up(base_url: &str, shutdown: &CancellationToken, patience: Duration) -> bool {
    let url = format!("{}/healthz", base_url.trim_end_matches('/'));
    let Ok(client) = reqwest::Client::builder().timeout(Duration::from_secs(2)).build() else {
        return false;
    };
    let deadline = tokio::time::Instant::now() + patience;
    while tokio::time::Instant::now() < deadline {
        if let Ok(r) = client.get(&url).send().await
            && r.status().is_success()
        {
            return true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    false
}

async fn sleep_until_sim(clock: &SimClock, until: Option<Duration>) {
    match until {
        Some(d) => tokio::time::sleep_until(clock.instant_of(d)).await,
        None => std::future::pending().await,
    }
}

fn log_progress(clock: &SimClock, posts: &PostCounters, units: &UnitCounters) {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    info!(
        simulated_min = clock.now().as_secs() / 60,
        calls = get(&posts.calls),
        sensor_alarms = get(&posts.sensor_alarms),
        failed = get(&posts.failed),
        tasks = get(&units.tasks_received),
        acked = get(&units.acked),
        cleared = get(&units.cleared),
        "simulated city running"
    );
}

fn report_from(posts: &PostCounters, units: &UnitCounters, unit_count: u64) -> SimReport {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    SimReport {
        calls_posted: get(&posts.calls),
        repeat_calls_posted: get(&posts.repeats),
        sensor_alarms_posted: get(&posts.sensor_alarms),
        cap_alerts_posted: get(&posts.cap_alerts),
        accepted: get(&posts.accepted),
        duplicates: get(&posts.duplicates),
        rejected: get(&posts.rejected),
        failed: get(&posts.failed),
        units: unit_count,
        units_connected: get(&units.connected),
        reconnects: get(&units.reconnects),
        tasks_received: get(&units.tasks_received),
        acked: get(&units.acked),
        late_acks: get(&units.late_acks),
        on_scene: get(&units.on_scene),
        cleared: get(&units.cleared),
        cancelled: get(&units.cancelled),
        command_errors: get(&units.command_errors),
        ..SimReport::default()
    }
}

async fn fetch_stats(base_url: &str, token: &str, window_min: u64) -> Result<Value, String> {
    let url = format!("{}/api/v1/stats?window={window_min}m", base_url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {}", text.chars().take(300).collect::<String>()));
    }
    serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))
}

/// Reads `stages.<stage>.{met,breached,pending,share_met,p50_s,p90_s}`;
/// `None` when the stats have another shape (the raw JSON is kept).
pub fn parse_stages(stats: &Value) -> Option<HashMap<String, StageOutcome>> {
    let stages = stats.get("stages")?.as_object()?;
    let mut out = HashMap::new();
    for (name, s) in stages {
        let n = |k: &str| s.get(k).and_then(Value::as_u64).unwrap_or(0);
        let f = |k: &str| s.get(k).and_then(Value::as_f64);
        out.insert(
            name.clone(),
            StageOutcome {
                met: n("met"),
                breached: n("breached"),
                pending: n("pending"),
                share_met: f("share_met"),
                p50_s: f("p50_s"),
                p90_s: f("p90_s"),
            },
        );
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_config_divides_targets_and_windows_and_stays_valid() {
        let config = Config::defaults();
        let scaled = scaled_config(&config, 10.0);
        scaled.validate().unwrap();
        let t = config.sla_target(bus::config::AreaType::Urban, 1).unwrap();
        let s = scaled.sla_target(bus::config::AreaType::Urban, 1).unwrap();
        assert_eq!((s.respond_s, s.arrive_s, s.reinforce_s), (6, 18, 30));
        assert_eq!(s.reinforce_units, t.reinforce_units);
        assert_eq!(scaled.router.repeat_window_s, config.router.repeat_window_s / 10);
        assert_eq!(scaled.router.speed_kmh(UnitType::PatrolCar), 300.0);
        assert_eq!(scaled.sim.speed, 10.0);
        let same = scaled_config(&config, 1.0);
        assert_eq!(same.sla[0].respond_s, config.sla[0].respond_s);
        // Huge speeds keep every target at least a second, in order.
        let fast = scaled_config(&config, 1e6);
        fast.validate().unwrap();
        assert!(fast.sla.iter().all(|s| s.respond_s >= 1));
    }

    #[test]
    fn options_for_a_target_mint_with_the_secret_or_use_the_token() {
        let mut config = Config::defaults();
        assert!(matches!(
            SimOptions::for_target(&config, "http://h:1", None),
            Err(SimError::NoCredentials)
        ));
        let o = SimOptions::for_target(&config, "http://h:1", Some("tok")).unwrap();
        assert_eq!(o.source_token, "tok");
        assert!(matches!(&o.unit_tokens, UnitTokens::Fixed(m) if m.is_empty()));
        config.auth.jwt_secret = Some("s3cret".into());
        let o = SimOptions::for_target(&config, "http://h:1", None).unwrap();
        let keys = TokenKeys::new("s3cret");
        assert_eq!(keys.verify(&o.source_token).unwrap().role, Role::Source);
        assert_eq!(
            keys.verify(o.stats_token.as_deref().unwrap()).unwrap().role,
            Role::Analyst
        );
        let UnitTokens::Mint(k) = &o.unit_tokens else {
            panic!("mints")
        };
        let grid = Grid::new(&config);
        let plans = plan_units(&config, &UnitTokens::Mint(k.clone()), &grid, 1).unwrap();
        assert_eq!(plans.len(), config.units.len());
        let claims = keys.verify(&plans[0].token).unwrap();
        assert_eq!(claims.role, Role::Unit);
        assert_eq!(claims.unit.as_deref(), Some(plans[0].id.as_str()));
        assert_eq!(claims.jurisdictions, [config.units[0].jurisdiction.clone()]);
        assert!(SimOptions::for_target(&config, "h:1", None).is_err());
    }

    #[test]
    fn fixed_tokens_simulate_exactly_their_units() {
        let config = Config::defaults();
        let grid = Grid::new(&config);
        let tokens = UnitTokens::Fixed(HashMap::from([
            ("quancheng-p1".to_owned(), "t1".to_owned()),
            ("stranger-9".to_owned(), "t2".to_owned()),
        ]));
        let plans = plan_units(&config, &tokens, &grid, 1).unwrap();
        assert_eq!(plans.len(), 2);
        let post = plans.iter().find(|p| p.id == "quancheng-p1").unwrap();
        assert_eq!(
            (post.unit_type, post.home, post.token.as_str()),
            (UnitType::Post, [36.6616, 117.0195], "t1")
        );
        let stranger = plans.iter().find(|p| p.id == "stranger-9").unwrap();
        assert_eq!(stranger.unit_type, UnitType::PatrolCar);
        assert!(grid.inside(stranger.home));
    }

    #[test]
    fn ws_urls_follow_the_base_url() {
        assert_eq!(ws_url("http://127.0.0.1:8080/").unwrap(), "ws://127.0.0.1:8080/ws");
        assert_eq!(ws_url("https://qzx.example").unwrap(), "wss://qzx.example/ws");
        assert!(ws_url("127.0.0.1:8080").is_err());
    }

    #[test]
    fn stages_are_read_from_the_stats() {
        let stats = serde_json::json!({"stages": {
            "respond": {"met": 8, "breached": 2, "pending": 1, "share_met": 0.8, "p50_s": 2.0, "p90_s": 7.5},
            "arrive": {"met": 0, "breached": 0, "pending": 3, "share_met": null, "p50_s": null, "p90_s": null}
        }});
        let stages = parse_stages(&stats).unwrap();
        assert_eq!(
            stages["respond"],
            StageOutcome {
                met: 8,
                breached: 2,
                pending: 1,
                share_met: Some(0.8),
                p50_s: Some(2.0),
                p90_s: Some(7.5)
            }
        );
        assert_eq!(stages["arrive"].share_met, None);
        assert!(parse_stages(&serde_json::json!({"other": 1})).is_none());
        let report = SimReport {
            stages: Some(stages),
            speed: 10.0,
            ..SimReport::default()
        };
        let text = report.to_string();
        assert!(
            text.contains("1-3-5 respond: met 8, breached 2, pending 1, share met 80%"),
            "{text}"
        );
        assert!(text.contains("p90 8 s (sim 75 s)"), "{text}");
    }

    #[test]
    fn unit_seeds_are_stable_and_distinct() {
        assert_eq!(unit_seed(1, "a"), unit_seed(1, "a"));
        assert_ne!(unit_seed(1, "a"), unit_seed(1, "b"));
        assert_ne!(unit_seed(1, "a"), unit_seed(2, "a"));
    }
}
