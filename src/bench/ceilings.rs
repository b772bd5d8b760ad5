//! Ceilings: what the parts qzx is built on can do on this machine, in the
//! same run, with the same payloads — a bare rdkafka producer and consumer
//! on the same broker, a bare HTTP-to-Kafka relay, Redis round trips, and a
//! bare WebSocket broadcast. Pipeline figures are reported as a share of
//! these. Nothing here touches qzx's own services.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::{SinkExt as _, StreamExt as _};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub messages: u64,
    pub seconds: f64,
    pub per_second: f64,
}

impl Throughput {
    pub(super) fn new(messages: u64, elapsed: Duration) -> Throughput {
        let seconds = elapsed.as_secs_f64();
        Throughput {
            messages,
            seconds,
            per_second: if seconds > 0.0 { messages as f64 / seconds } else { 0.0 },
        }
    }
}

/// The settings qzx's producer uses that matter for speed.
fn producer_config(bootstrap: &str, linger_ms: u64) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", bus::kafka::PARTITIONER)
        .set("linger.ms", linger_ms.to_string())
        .set("log_level", "3");
    config
}

/// Produces `count` copies of `payload` with the settings qzx's producer
/// uses (idempotent, `acks=all`, the same linger), all in flight at once.
pub async fn raw_produce(
    bootstrap: &str,
    topic: &str,
    payload: &[u8],
    count: u64,
    linger_ms: u64,
) -> anyhow::Result<Throughput> {
    let producer: FutureProducer = producer_config(bootstrap, linger_ms)
        .create()
        .context("creating the ceiling producer")?;
    // The first send waits for metadata and a producer id: not throughput.
    producer
        .send(
            FutureRecord::to(topic).key("warm-up").payload(payload),
            Timeout::After(Duration::from_secs(30)),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("ceiling produce failed: {e}"))?;
    let started = Instant::now();
    let sends = (0..count).map(|i| {
        let key = format!("k{}", i % 64);
        let producer = &producer;
        async move {
            producer
                .send(
                    FutureRecord::to(topic).key(&key).payload(payload),
                    Timeout::After(Duration::from_secs(30)),
                )
                .await
                .map_err(|(e, _)| e)
        }
    });
    // Bounded concurrency keeps memory flat while keeping the pipe full.
    let results: Vec<_> = futures::stream::iter(sends).buffer_unordered(10_000).collect().await;
    let elapsed = started.elapsed();
    if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
        anyhow::bail!("ceiling produce failed: {e}");
    }
    Ok(Throughput::new(count, elapsed))
}

/// A bare HTTP-to-Kafka relay: an axum handler that produces each line of
/// the request body to a topic with qzx's producer settings and answers 202
/// once every ack is in. No validation, idempotency, metrics or consumers:
/// what any ingest on this machine and broker pays before doing its own
/// work. Served from this process; the bench drives it with the client the
/// ingest figures use, so the two compare like for like. Stops on drop.
pub struct HttpRelay {
    pub url: String,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

type RelayState = std::sync::Arc<(FutureProducer, String)>;

impl HttpRelay {
    pub async fn start(bootstrap: &str, topic: &str, linger_ms: u64) -> anyhow::Result<HttpRelay> {
        let producer: FutureProducer = producer_config(bootstrap, linger_ms)
            .create()
            .context("creating the relay producer")?;
        let state: RelayState = std::sync::Arc::new((producer, topic.to_owned()));
        let app = axum::Router::new()
            .route("/v1/events", axum::routing::post(relay))
            .with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/v1/events", listener.local_addr()?);
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(HttpRelay { url, server })
    }
}

impl Drop for HttpRelay {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn relay(
    axum::extract::State(state): axum::extract::State<RelayState>,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let (producer, topic) = &*state;
    let sends = body.split(|b| *b == b'\n').filter(|line| !line.is_empty()).map(|line| {
        producer.send(
            FutureRecord::<(), [u8]>::to(topic).payload(line),
            Timeout::After(Duration::from_secs(30)),
        )
    });
    if futures::future::join_all(sends).await.iter().all(Result::is_ok) {
        axum::http::StatusCode::ACCEPTED
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Reads `count` records of `topic` from the beginning with a bare consumer.
pub async fn raw_consume(bootstrap: &str, topic: &str, partitions: i32, count: u64) -> anyhow::Result<Throughput> {
    let bootstrap = bootstrap.to_owned();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", format!("bench-ceiling-{}", bus::model::new_id()))
            .set("enable.auto.commit", "false")
            .set("log_level", "3")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = 0u64;
        let mut started = None;
        while seen < count && Instant::now() < deadline {
            if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
                started.get_or_insert_with(Instant::now);
                seen += 1;
            }
        }
        anyhow::ensure!(seen == count, "ceiling consume read {seen} of {count} records");
        Ok(Throughput::new(seen, started.map_or(Duration::ZERO, |s| s.elapsed())))
    })
    .await?
}

#[derive(Debug, Clone, Serialize)]
pub struct RoundTrips {
    pub count: u64,
    pub per_second: f64,
    pub mean_us: f64,
}

/// Sequential PINGs over one connection: the Store's floor per call.
pub async fn redis_round_trips(url: &str, count: u64) -> anyhow::Result<RoundTrips> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let started = Instant::now();
    for _ in 0..count {
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(RoundTrips {
        count,
        per_second: count as f64 / elapsed,
        mean_us: elapsed * 1e6 / count as f64,
    })
}

/// A bare tokio-tungstenite server broadcasting `messages` frames of
/// `payload` to `clients` local clients: deliveries per second.
pub async fn ws_broadcast(clients: usize, messages: usize, payload: &str) -> anyhow::Result<Throughput> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, _) = tokio::sync::broadcast::channel::<Message>(messages.max(16));
    let server_tx = tx.clone();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(clients);
    let server = tokio::spawn(async move {
        for _ in 0..clients {
            let Ok((stream, _)) = listener.accept().await else {
                break;
            };
            let mut rx = server_tx.subscribe();
            let ready = ready_tx.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                let _ = ready.send(()).await;
                while let Ok(m) = rx.recv().await {
                    if ws.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mut readers = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/")).await?;
        readers.push(tokio::spawn(async move {
            let mut n = 0usize;
            while n < messages {
                match ws.next().await {
                    Some(Ok(Message::Text(_))) => n += 1,
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            n
        }));
    }
    for _ in 0..clients {
        ready_rx.recv().await.context("broadcast clients connect")?;
    }
    let started = Instant::now();
    let frame = Message::text(payload.to_owned());
    for _ in 0..messages {
        // Sent once, cloned by reference for each client: like qzx's push.
        let _ = tx.send(frame.clone());
        tokio::task::yield_now().await;
    }
    let mut delivered = 0u64;
    for r in readers {
        delivered += r.await.unwrap_or(0) as u64;
    }
    let elapsed = started.elapsed();
    server.abort();
    Ok(Throughput::new(delivered, elapsed))
}
