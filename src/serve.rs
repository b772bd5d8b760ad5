//! The HTTP edge every `qzx` process shares: `/healthz`, `/readyz` and
//! `/metrics` next to whatever the services route, and serving with a
//! connection cap, a header read timeout and graceful shutdown (stop
//! accepting, finish in-flight requests). Service routes live in their
//! crates, never here.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bus::ServiceContext;
use bus::config::HttpConfig;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::Semaphore;
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
/// requests finish. The edge a police system needs and `axum::serve` does
/// not give: at most `http.max_connections` connections are served at
/// once (a WebSocket, once upgraded, no longer counts: the api bounds its
/// own), and a request whose headers do not arrive within
/// `http.header_read_timeout_s` closes its connection, so a client that
/// trickles header bytes on thousands of sockets starves nobody.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: HttpConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let max = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max));
    let header_timeout = Duration::from_secs(limits.header_read_timeout_s.max(1));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit?,
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    // In-flight requests finish: every permit back means every connection
    // done (the supervisor bounds how long this may take).
    let _all = permits.acquire_many(u32::try_from(max).unwrap_or(u32::MAX)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(max_connections: usize) -> (std::net::SocketAddr, CancellationToken) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", get(|| async { "ok" }));
        let limits = HttpConfig {
            max_connections,
            header_read_timeout_s: 1,
            body_read_timeout_s: 1,
        };
        let token = CancellationToken::new();
        tokio::spawn(serve(listener, app, limits, token.clone()));
        (addr, token)
    }

    /// Sends a whole request on a fresh connection; the response's first
    /// line, or None when nothing came within `wait`.
    async fn get_root(addr: std::net::SocketAddr, wait: Duration) -> Option<String> {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 256];
        let n = tokio::time::timeout(wait, s.read(&mut buf)).await.ok()?.ok()?;
        String::from_utf8_lossy(&buf[..n]).lines().next().map(str::to_owned)
    }

    #[tokio::test]
    async fn a_client_trickling_header_bytes_is_cut_off() {
        let (addr, _token) = start(16).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: ").await.unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 256];
        // The server answers (408) or just closes: either way within the
        // timeout, and nothing after it.
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match slow.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the connection is closed at the header timeout");
        assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
        assert_eq!(
            get_root(addr, Duration::from_secs(2)).await.as_deref(),
            Some("HTTP/1.1 200 OK")
        );
    }

    #[tokio::test]
    async fn connections_past_the_cap_wait_until_one_is_freed() {
        let (addr, _token) = start(2).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
            held.push(s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Both slots are held: a third client waits (in the backlog) ...
        assert_eq!(get_root(addr, Duration::from_millis(300)).await, None);
        // ... and is served once the header timeout frees a slot.
        assert_eq!(
            get_root(addr, Duration::from_secs(3)).await.as_deref(),
            Some("HTTP/1.1 200 OK")
        );
        drop(held);
    }
}
