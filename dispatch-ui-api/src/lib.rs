//! `dispatch-ui-api`: what operators, patrol units and analysts talk to.
//! REST reads, commands (published to the actions topic, applied by the
//! router), and the WebSocket fan-out of what the router publishes, with
//! per-channel history in the Store for resume.
//!
//! Invariants: the api never writes incident or unit state (only the
//! router does); every request is authorised by role and jurisdiction; a
//! slow WebSocket client never slows the others; a token is never logged.

mod auth;
// Public for the criterion benches (`benches/push.rs`): the pure parts of
// the fan-out, no IO.
pub mod channel;
mod commands;
mod error;
mod fanout;
pub mod hub;
mod openapi;
mod pages;
pub mod privacy;
mod rest;
mod stats;
mod view;
mod ws;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::routing::{get, post};
use bus::auth::TokenKeys;
use bus::geo::CityMap;
use bus::kafka::{Consumer, Producer, ensure_topics};
use bus::store::{HistoryLimits, SharedStore};
use bus::topics::{Topic, Topics};
use bus::validate::InputRules;
use bus::{Brokers, Config, ServiceContext, Supervisor};
use tokio_util::sync::CancellationToken;

pub use crate::error::{ApiError, ErrorBody};

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState {
    pub config: Arc<Config>,
    pub keys: Arc<TokenKeys>,
    pub store: SharedStore,
    pub producer: Producer,
    pub hub: Arc<hub::Hub>,
    pub view: Arc<view::View>,
    pub city: Arc<CityMap>,
    /// Ingest's validation rules: `create` makes its event through them.
    pub rules: Arc<InputRules>,
    pub cells: Arc<Vec<stats::Cell>>,
    pub topics: Topics,
    pub brokers: Brokers,
    pub instance: String,
    /// The process's cancellation: connections close with 1001 on it.
    pub shutdown: CancellationToken,
    pub next_conn: Arc<AtomicU64>,
}

/// The topics the api reads or writes.
const TOPICS: [Topic; 7] = [
    Topic::Actions,
    Topic::Incidents,
    Topic::Tasks,
    Topic::Units,
    Topic::Escalations,
    Topic::Events,
    Topic::Positions,
];

/// Starts the api: creates its topics, starts the fan-out consumer (group
/// `{group_prefix}-api-{instance}`, so every instance sees every record)
/// under `sup`, and returns the router with `/ws` and `/api/v1/*`. The
/// caller serves it (with `/healthz`, `/readyz`, `/metrics`) and shuts it
/// down through `sup.token()`.
pub async fn start(ctx: &ServiceContext, sup: &mut Supervisor) -> anyhow::Result<Router> {
    let config = Arc::clone(&ctx.config);
    let secret = config
        .auth
        .jwt_secret
        .as_deref()
        .filter(|s| !s.is_empty())
        .context("the api needs auth.jwt_secret (QZX_JWT_SECRET)")?;
    ensure_topics(&ctx.brokers, &config.kafka, &ctx.topics, &TOPICS)
        .await
        .context("creating the api's topics")?;
    let producer = Producer::new(&ctx.brokers, &config.kafka, ctx.topics.clone(), "/qzx/api")
        .context("creating the api's kafka producer")?;
    let group = format!("{}-api-{}", config.kafka.group_prefix, ctx.instance);
    let consumer = Consumer::new(
        &ctx.brokers,
        &config.kafka,
        ctx.topics.clone(),
        &group,
        &fanout::CONSUMED,
    )
    .context("creating the api's kafka consumer")?;
    let city = Arc::new(CityMap::new(&config));
    let cells = Arc::new(stats::city_cells(&city));
    let state = AppState {
        keys: Arc::new(TokenKeys::new(secret)),
        store: Arc::clone(&ctx.store),
        producer: producer.clone(),
        hub: Arc::new(hub::Hub::default()),
        view: Arc::new(view::View::default()),
        city,
        rules: Arc::new(InputRules::new(&config)),
        cells,
        topics: ctx.topics.clone(),
        brokers: ctx.brokers.clone(),
        instance: ctx.instance.clone(),
        shutdown: sup.token(),
        next_conn: Arc::new(AtomicU64::new(1)),
        config: Arc::clone(&config),
    };
    let fanout = fanout::Fanout {
        consumer,
        store: Arc::clone(&ctx.store),
        hub: Arc::clone(&state.hub),
        view: Arc::clone(&state.view),
        limits: HistoryLimits {
            max_age: Duration::from_secs(config.api.history_max_age_s),
            max_len: config.api.history_max_len,
        },
        _brokers: ctx.brokers.clone(),
    };
    let token = sup.token();
    sup.spawn("api-fanout", async move { fanout.run(token).await });
    let token = sup.token();
    let drain = config.kafka.drain_timeout();
    // The producer is dropped before the broker handle (field order).
    let keep = ProducerGuard {
        producer,
        _brokers: ctx.brokers.clone(),
    };
    sup.spawn("api-producer", async move {
        token.cancelled().await;
        // Commands in flight get their acknowledgement before exit.
        let flushed = tokio::task::spawn_blocking(move || keep.producer.flush(drain)).await;
        flushed.context("flushing the api's producer")
    });
    tracing::info!(%group, instance = %ctx.instance, "api started");
    Ok(router(state))
}

/// A producer with the brokers it needs, dropped in that order.
struct ProducerGuard {
    producer: Producer,
    _brokers: Brokers,
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route(
            "/api/v1/incidents",
            get(rest::list_incidents).post(rest::create_incident),
        )
        .route("/api/v1/incidents/{id}", get(rest::get_incident))
        .route("/api/v1/incidents/{id}/candidates", get(rest::get_candidates))
        .route("/api/v1/incidents/{id}/{op}", post(rest::incident_command))
        .route("/api/v1/tasks/{id}/ack", post(rest::task_ack))
        .route("/api/v1/tasks/{id}/refuse", post(rest::task_refuse))
        .route("/api/v1/tasks/{id}/note", post(rest::task_note))
        .route("/api/v1/units", get(rest::list_units))
        .route("/api/v1/units/{id}/status", post(rest::unit_status))
        .route("/api/v1/stats", get(rest::get_stats))
        .route("/api/v1/coverage", get(rest::get_coverage))
        .route("/api/v1/info", get(rest::get_info))
        .route("/api/v1/jurisdictions", get(rest::get_jurisdictions))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/", get(pages::board))
        .route("/terminal", get(pages::terminal))
        .route("/web/{name}", get(pages::asset))
        .layer(axum::middleware::from_fn(count_requests))
        .with_state(state)
}

/// Counts requests by route template and status (bounded labels).
async fn count_requests(
    path: Option<axum::extract::MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = path.map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    ::metrics::counter!(bus::metrics::API_HTTP_REQUESTS_TOTAL, "route" => route, "status" => response.status().as_u16().to_string())
        .increment(1);
    response
}
