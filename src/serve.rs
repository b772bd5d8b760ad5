//! The HTTP edge every `qzx` process shares: `/healthz`, `/readyz` and
//! `/metrics` next to whatever the services route, and serving with
//! graceful shutdown (stop accepting, finish in-flight requests). Service
//! routes live in their crates, never here.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bus::ServiceContext;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Bucket bounds for every histogram of durations in seconds: buckets,
/// unlike summaries, add up across replicas, so a dashboard can show the
/// cluster's p99 rather than the worst replica's.
const SECONDS_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Bucket bounds for the one count histogram, records per router batch.
const BATCH_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Installs the Prometheus recorder for the process.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    use metrics_exporter_prometheus::Matcher;
    Ok(PrometheusBuilder::new()
        .set_buckets(&SECONDS_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(bus::metrics::ROUTER_BATCH_RECORDS.to_owned()),
            &BATCH_BUCKETS,
        )?
        .install_recorder()?)
}

#[derive(Clone)]
struct Common {
    ctx: ServiceContext,
    metrics: PrometheusHandle,
}

pub fn with_common_routes(app: Router, ctx: ServiceContext, metrics: PrometheusHandle) -> Router {
    let common = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(Common { ctx, metrics });
    app.merge(common)
}

/// Ready when the store answers and Kafka's metadata can be read.
async fn readyz(State(common): State<Common>) -> Response {
    match common.ctx.ready().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({"error": "unavailable", "message": why})),
        )
            .into_response(),
    }
}

async fn render_metrics(State(common): State<Common>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        common.metrics.render(),
    )
        .into_response()
}

/// Serves until `shutdown`, then stops accepting and lets in-flight
/// requests finish.
pub async fn serve(listener: tokio::net::TcpListener, app: Router, shutdown: CancellationToken) -> anyhow::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}
