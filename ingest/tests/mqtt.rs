//! The MQTT sensor bridge against a real Mosquitto (TEST_MQTT_URL): a
//! sensor message becomes an event with the topic's sensor type and device,
//! a broken one a dead letter on channel mqtt. Skipped when no broker is
//! configured and TEST_STACK is unset.

mod common;

use std::time::Duration;

use bus::Topic;
use bus::model::DeadLetter;
use bus::testing::{self, BrokerChoice};
use common::unique;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::json;

#[tokio::test]
async fn sensor_messages_become_events_and_broken_ones_dead_letters() {
    let Some(url) = testing::mqtt_url() else {
        eprintln!("TEST_MQTT_URL not set; skipping the mqtt bridge test");
        return;
    };
    let h = common::start("ingest-mqtt", BrokerChoice::RealIfAvailable, |c| {
        c.mqtt.url = Some(url.clone())
    })
    .await;
    let (host, port) = ingest::mqtt::parse_url(&url).unwrap();
    let (client, mut eventloop) = AsyncClient::new(MqttOptions::new(unique("pub"), host, port), 16);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });

    let source_id = unique("cam");
    let good = json!({"source_id": source_id, "kind": "video_alarm", "location": {"lat": 36.6683, "lon": 117.0204}});
    let broken = format!("{{\"source_id\": \"{source_id}\", oops");
    // The bridge subscribes once connected; publish the same message a few
    // times to be sure one arrives after that (idempotency keeps it one).
    for _ in 0..6 {
        client
            .publish(
                "qzx/sensors/video/cam-9",
                QoS::AtLeastOnce,
                false,
                serde_json::to_vec(&good).unwrap(),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let events = h.read(Topic::Events, 1, Duration::from_secs(20)).await;
    assert!(!events.is_empty(), "no event from mqtt");
    let e = &events[0].value;
    assert_eq!(e["source"], "sensor");
    assert_eq!(e["source_id"], source_id.as_str());
    assert_eq!(e["sensor"], json!({"type": "video", "device_id": "cam-9"}));

    client
        .publish(
            "qzx/sensors/fence/f-1",
            QoS::AtLeastOnce,
            false,
            broken.clone().into_bytes(),
        )
        .await
        .unwrap();
    let dead = h.read(Topic::DeadLetter, 1, Duration::from_secs(20)).await;
    assert_eq!(dead.len(), 1);
    let dl: DeadLetter = serde_json::from_value(dead[0].value.clone()).unwrap();
    assert_eq!(dl.channel.as_str(), "mqtt");
    assert_eq!(dl.raw, broken);
    assert_eq!(dl.source.as_deref(), Some("sensor"));

    // Repeats of the good message (the publish loop) stayed one event.
    assert_eq!(h.read(Topic::Events, 2, Duration::from_secs(2)).await.len(), 1);
    h.sup.token().cancel();
    h.sup.wait(Duration::from_secs(10)).await.unwrap();
}
