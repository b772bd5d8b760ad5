//! The MQTT sensor bridge: subscribes `qzx/sensors/#` and sends every
//! message (topic `qzx/sensors/<type>/<device_id>`, payload an input event)
//! through the same pipeline as HTTP, dead letters on channel `mqtt`.
//!
//! QoS 1 with manual acks: a message is acknowledged to the MQTT broker
//! only once its event (or its dead letter) is in Kafka; while Kafka is
//! down the worker retries and the broker holds the rest (it sends at most
//! its in-flight limit of unacknowledged messages). The session is clean and
//! the client id is per process, so messages unacknowledged at shutdown are
//! not redelivered to the next process: acknowledged ones are never lost.
//! This module must never ack a message before Kafka has it.

use std::sync::Arc;
use std::time::Duration;

use bus::model::{Channel, FieldError, Source};
use rumqttc::{AsyncClient, Event as MqttEvent, EventLoop, MqttOptions, Packet, Publish, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Ingest;
use crate::error::IngestError;
use crate::pipeline::{Origin, Submission};

/// Messages handed from the network loop to the worker. Small: the broker
/// never has more than its in-flight limit of unacked messages out.
const QUEUE: usize = 64;
const REQUESTS: usize = 1024;
/// Far above any sane sensor message: a packet over this breaks the
/// connection in rumqttc, so the real limit (`ingest.max_body_bytes`) is
/// checked per message and dead-lettered instead.
const MAX_PACKET_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt url '{0}' is not mqtt://host[:port]")]
    Url(String),
}

/// Host and port of `mqtt://host[:port]` (also `tcp://`, or bare).
pub fn parse_url(url: &str) -> Result<(String, u16), MqttError> {
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("tcp://"))
        .unwrap_or(url)
        .trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| MqttError::Url(url.to_owned()))?),
        None => (rest, 1883),
    };
    if host.is_empty() || host.contains('/') {
        return Err(MqttError::Url(url.to_owned()));
    }
    Ok((host.to_owned(), port))
}

/// Starts the bridge; runs until `shutdown`.
pub async fn run(
    ingest: Arc<Ingest>,
    url: String,
    client_id: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (host, port) = parse_url(&url)?;
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_manual_acks(true)
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET_BYTES, 64 * 1024);
    // The request channel carries our acks to the network loop. It must
    // not fill while that loop waits for room in the worker queue, or the
    // two would wait on each other: acks outstanding are bounded by the
    // broker's in-flight limit (Mosquitto: 20), far below this.
    let (client, eventloop) = AsyncClient::new(options, REQUESTS);
    let topic = ingest.config.mqtt.topic.clone();
    let (tx, rx) = mpsc::channel::<Publish>(QUEUE);

    let worker = tokio::spawn(work(ingest, client.clone(), rx, shutdown.clone()));
    let network = poll(eventloop, client.clone(), topic, tx, shutdown.clone()).await;
    // The worker ends when the network loop drops the sender or on
    // shutdown.
    let _ = worker.await;
    let _ = client.disconnect().await;
    network
}

async fn poll(
    mut eventloop: EventLoop,
    client: AsyncClient,
    topic: String,
    tx: mpsc::Sender<Publish>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(200);
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            e = eventloop.poll() => e,
        };
        match event {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(200);
                tracing::info!(%topic, "mqtt connected; subscribing");
                // Subscribe on every connect: the session is clean.
                client.subscribe(topic.clone(), QoS::AtLeastOnce).await?;
            }
            Ok(MqttEvent::Incoming(Packet::Publish(publish))) => {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    sent = tx.send(publish) => if sent.is_err() { return Ok(()) },
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "mqtt connection failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn work(ingest: Arc<Ingest>, client: AsyncClient, mut rx: mpsc::Receiver<Publish>, shutdown: CancellationToken) {
    loop {
        let publish = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = rx.recv() => match p { Some(p) => p, None => return },
        };
        let mut backoff = Duration::from_millis(500);
        loop {
            match handle(&ingest, &publish).await {
                Ok(()) => {
                    if let Err(e) = client.ack(&publish).await {
                        tracing::warn!(error = %e, "could not ack an mqtt message");
                    }
                    break;
                }
                Err(e @ (IngestError::Unavailable { .. } | IngestError::Internal(_))) => {
                    tracing::warn!(topic = %publish.topic, error = %e, "mqtt message not ingested yet; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                // Whole-message problems were dead-lettered by `handle`.
                Err(_) => {
                    if let Err(e) = client.ack(&publish).await {
                        tracing::warn!(error = %e, "could not ack an mqtt message");
                    }
                    break;
                }
            }
        }
    }
}

/// Ingests one message. Ok once its event or its dead letter is in Kafka.
pub async fn handle(ingest: &Ingest, publish: &Publish) -> Result<(), IngestError> {
    let origin = Origin {
        channel: Channel::Mqtt,
        default_source: Some(Source::Sensor),
        content_type: None,
        sender: Some(publish.topic.clone()),
        jurisdictions: None,
    };
    let limit = ingest.config.ingest.max_body_bytes;
    let value = if publish.payload.len() > limit {
        Err(vec![FieldError::new(
            "",
            format!(
                "payload of {} bytes is over the limit of {limit}",
                publish.payload.len()
            ),
        )])
    } else {
        serde_json::from_slice::<Value>(&publish.payload)
            .map(|v| with_topic_defaults(v, &publish.topic))
            .map_err(|e| vec![FieldError::new("", format!("invalid JSON: {e}"))])
    };
    let outcome = ingest
        .submit(
            vec![Submission {
                index: 0,
                raw: std::sync::Arc::new(publish.payload.to_vec()),
                value,
            }],
            &origin,
        )
        .await?;
    if let Some(r) = outcome.rejected.first() {
        tracing::debug!(topic = %publish.topic, errors = r.errors.len(), "mqtt message rejected");
    }
    Ok(())
}

/// Fills `sensor.type` and `sensor.device_id` from the topic
/// `qzx/sensors/<type>/<device_id>` where the payload leaves them out.
pub fn with_topic_defaults(mut value: Value, topic: &str) -> Value {
    let parts: Vec<&str> = topic.split('/').collect();
    let (Some(kind), Some(device)) = (parts.get(2), parts.get(3)) else {
        return value;
    };
    let Some(obj) = value.as_object_mut() else {
        return value;
    };
    let sensor = obj.entry("sensor").or_insert_with(|| json!({}));
    if let Some(sensor) = sensor.as_object_mut() {
        sensor.entry("type").or_insert_with(|| json!(kind));
        sensor.entry("device_id").or_insert_with(|| json!(device));
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed() {
        assert_eq!(parse_url("mqtt://127.0.0.1:1884").unwrap(), ("127.0.0.1".into(), 1884));
        assert_eq!(parse_url("tcp://broker").unwrap(), ("broker".into(), 1883));
        assert!(parse_url("mqtt://:x").is_err());
        assert!(parse_url("mqtt://a/b").is_err());
    }

    #[test]
    fn the_topic_fills_what_the_payload_leaves_out() {
        let v = with_topic_defaults(json!({"source_id": "1"}), "qzx/sensors/video/cam-7");
        assert_eq!(v["sensor"], json!({"type": "video", "device_id": "cam-7"}));
        let v = with_topic_defaults(json!({"sensor": {"type": "fence"}}), "qzx/sensors/video/cam-7");
        assert_eq!(v["sensor"], json!({"type": "fence", "device_id": "cam-7"}));
        assert_eq!(with_topic_defaults(json!(1), "qzx/sensors/a/b"), json!(1));
        assert_eq!(with_topic_defaults(json!({}), "qzx/sensors"), json!({}));
    }
}
