//! The Kafka plumbing against both brokers: CloudEvents headers on every
//! record, an outside client reading the embedded broker, and at-least-once
//! delivery across a consumer restart.

use std::time::Duration;

use bus::cloudevents::CeAttributes;
use bus::kafka::{Consumer, OutRecord, Producer, Received};
use bus::testing::{self, BrokerChoice};
use bus::{ServiceContext, Topic};
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

fn producer(ctx: &ServiceContext) -> Producer {
    Producer::new(&ctx.brokers, &ctx.config.kafka, ctx.topics.clone(), "/qzx/test").unwrap()
}

/// Reads every record of a topic with a bare rdkafka consumer that shares
/// nothing with our wrapper: what any Kafka client would see.
fn read_with_plain_client(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    want: usize,
) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("plain-{}", bus::model::new_id()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < want && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            got.push(m.detach());
        }
    }
    got
}

async fn headers_arrive(choice: BrokerChoice) {
    let ctx = testing::context("ce", choice, |_| {}).await;
    let p = producer(&ctx);
    let event = serde_json::json!({"id": "e-1", "source": "call110"});
    let delivered = p.send_json(Topic::Events, "quancheng", "e-1", &event).await.unwrap();
    assert!(delivered.offset >= 0);

    let topic = ctx.topics.name(Topic::Events);
    let bootstrap = ctx.brokers.bootstrap().to_owned();
    let partitions = ctx.config.kafka.partitions;
    let got = tokio::task::spawn_blocking(move || read_with_plain_client(&bootstrap, &topic, partitions, 1))
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "the record arrives");
    let m = &got[0];
    assert_eq!(m.key(), Some(&b"quancheng"[..]));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(m.payload().unwrap()).unwrap(),
        event
    );
    let headers = m.headers().expect("headers");
    let names: Vec<&str> = headers.iter().map(|h| h.key).collect();
    for required in [
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "content-type",
    ] {
        assert!(names.contains(&required), "{required} missing from {names:?}");
    }
    let ce = CeAttributes::from_headers(headers).unwrap();
    assert_eq!(ce.id, "e-1");
    assert_eq!(ce.source, "/qzx/test");
    assert_eq!(ce.ce_type, "qzx.event.v1");
    assert_eq!(ce.content_type.as_deref(), Some("application/json"));
}

#[tokio::test(flavor = "multi_thread")]
async fn records_carry_cloudevents_headers_on_the_embedded_broker() {
    headers_arrive(BrokerChoice::Embedded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn records_carry_cloudevents_headers_on_the_real_broker() {
    if testing::real_brokers().is_none() {
        eprintln!("skipped: no TEST_KAFKA_BROKERS (run through scripts/test.sh)");
        return;
    }
    headers_arrive(BrokerChoice::RealIfAvailable).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outside_client_reads_the_embedded_broker_by_its_address() {
    let ctx = testing::context("outside", BrokerChoice::Embedded, |_| {}).await;
    let bootstrap = ctx.brokers.bootstrap().to_owned();
    assert!(
        bootstrap.starts_with("127.0.0.1:") || bootstrap.starts_with("localhost:"),
        "{bootstrap}"
    );
    let p = producer(&ctx);
    for i in 0..5 {
        p.send_json(
            Topic::Incidents,
            &format!("i-{i}"),
            &format!("i-{i}:1"),
            &serde_json::json!({"id": i}),
        )
        .await
        .unwrap();
    }
    let topic = ctx.topics.name(Topic::Incidents);
    let partitions = ctx.config.kafka.partitions;
    let got = tokio::task::spawn_blocking(move || read_with_plain_client(&bootstrap, &topic, partitions, 5))
        .await
        .unwrap();
    assert_eq!(got.len(), 5);
}

/// Handles records in order; fails (without storing the offset) at `fail_at`.
async fn consume_until(
    ctx: &ServiceContext,
    group: &str,
    fail_at: Option<i64>,
    seen: &mut Vec<i64>,
    want_last: i64,
) -> Consumer {
    let consumer = Consumer::new(
        &ctx.brokers,
        &ctx.config.kafka,
        ctx.topics.clone(),
        group,
        &[Topic::Events],
    )
    .unwrap();
    let stop = CancellationToken::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let record: Received = tokio::time::timeout_at(deadline, consumer.next(&stop))
            .await
            .expect("records arrive in time")
            .unwrap()
            .unwrap();
        let n: i64 = record.json::<serde_json::Value>().unwrap()["n"].as_i64().unwrap();
        seen.push(n);
        if Some(n) == fail_at {
            // The handler failed: the offset is not stored; the process dies.
            return consumer;
        }
        consumer.done(&record);
        if n == want_last {
            return consumer;
        }
    }
}

async fn at_least_once(choice: BrokerChoice) {
    let ctx = testing::context("alo", choice, |c| {
        // One partition: the test checks order as well as completeness.
        c.kafka.partitions = 1;
        c.kafka.session_timeout_ms = 6000;
        c.kafka.drain_timeout_ms = 1000;
    })
    .await;
    let p = producer(&ctx);
    for n in 0..10i64 {
        p.send_json(
            Topic::Events,
            "quancheng",
            &format!("e-{n}"),
            &serde_json::json!({ "n": n }),
        )
        .await
        .unwrap();
    }
    let group = format!("{}alo", ctx.topics.prefix());

    let mut first = Vec::new();
    let crashed = consume_until(&ctx, &group, Some(6), &mut first, 9).await;
    assert_eq!(first, (0..=6).collect::<Vec<_>>());
    // A crash: whatever was stored may be committed, record 6 was not.
    crashed.commit();
    drop(crashed);

    let mut second = Vec::new();
    let restarted = consume_until(&ctx, &group, None, &mut second, 9).await;
    assert_eq!(
        second,
        (6..=9).collect::<Vec<_>>(),
        "the failed record comes again, nothing is skipped"
    );
    restarted.commit();
    drop(restarted);

    // Everything handled was committed on shutdown: a third start sees
    // only what is new.
    p.send_json(Topic::Events, "quancheng", "e-10", &serde_json::json!({ "n": 10 }))
        .await
        .unwrap();
    let mut third = Vec::new();
    drop(consume_until(&ctx, &group, None, &mut third, 10).await);
    assert_eq!(third, vec![10]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_record_is_redelivered_after_restart_on_the_real_broker() {
    if testing::real_brokers().is_none() {
        eprintln!("skipped: no TEST_KAFKA_BROKERS (run through scripts/test.sh)");
        return;
    }
    at_least_once(BrokerChoice::RealIfAvailable).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_record_is_redelivered_after_restart_on_the_embedded_broker() {
    at_least_once(BrokerChoice::Embedded).await;
}

/// The `run` loop retries a failing handler on the same record and
/// commits what it handled when shut down.
#[tokio::test(flavor = "multi_thread")]
async fn run_retries_a_failing_handler_without_skipping() {
    struct FlakyHandler {
        seen: Vec<i64>,
        failures_left: u32,
        done: tokio::sync::mpsc::UnboundedSender<()>,
    }
    #[async_trait::async_trait]
    impl bus::kafka::Handler for FlakyHandler {
        async fn handle(&mut self, record: &Received) -> anyhow::Result<()> {
            let n = record.json::<serde_json::Value>()?["n"].as_i64().unwrap_or(-1);
            if n == 2 && self.failures_left > 0 {
                self.failures_left -= 1;
                anyhow::bail!("transient failure");
            }
            self.seen.push(n);
            if n == 4 {
                let _ = self.done.send(());
            }
            Ok(())
        }
    }

    let ctx = testing::context("run", BrokerChoice::Embedded, |c| c.kafka.partitions = 1).await;
    let p = producer(&ctx);
    for n in 0..5i64 {
        p.send_json(Topic::Events, "k", &format!("e-{n}"), &serde_json::json!({ "n": n }))
            .await
            .unwrap();
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut handler = FlakyHandler {
        seen: Vec::new(),
        failures_left: 2,
        done: tx,
    };
    let consumer = Consumer::new(
        &ctx.brokers,
        &ctx.config.kafka,
        ctx.topics.clone(),
        "run-group",
        &[Topic::Events],
    )
    .unwrap();
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(WAIT, rx.recv()).await;
        stopper.cancel();
    });
    consumer.run(&mut handler, stop).await.unwrap();
    assert_eq!(handler.seen, vec![0, 1, 2, 3, 4]);
    assert_eq!(handler.failures_left, 0);
}

/// The producer reports a broker outage instead of pretending success.
#[tokio::test(flavor = "multi_thread")]
async fn a_broker_outage_is_an_error_not_a_delivery() {
    let ctx = testing::context("down", BrokerChoice::Embedded, |c| c.kafka.delivery_timeout_ms = 1500).await;
    let p = producer(&ctx);
    p.send_json(Topic::Events, "k", "warm", &serde_json::json!({}))
        .await
        .unwrap();
    let broker = ctx.brokers.embedded().unwrap();
    broker.broker_down(1).unwrap();
    let err = p
        .send(&OutRecord::json(Topic::Events, "k", "lost?", &serde_json::json!({})).unwrap())
        .await
        .unwrap_err();
    assert!(err.is_retriable(), "{err}");
    broker.broker_up(1).unwrap();
}

/// Topics that exist are left alone: no CreateTopics call is made, so a
/// cluster without that API (the mock cluster) works as an external broker.
#[tokio::test(flavor = "multi_thread")]
async fn ensure_topics_leaves_existing_topics_alone() {
    let ctx = testing::context("exist", BrokerChoice::Embedded, |_| {}).await;
    let external = bus::Brokers::External(ctx.brokers.bootstrap().to_owned());
    bus::kafka::ensure_topics(&external, &ctx.config.kafka, &ctx.topics, &Topic::ALL)
        .await
        .unwrap();
}

/// Events and actions with different partition counts break
/// co-partitioning: the service stops with an error naming the topic.
#[tokio::test(flavor = "multi_thread")]
async fn mismatched_partitions_are_an_error_naming_the_topic() {
    let Some(bootstrap) = testing::real_brokers() else {
        eprintln!("skipped: no TEST_KAFKA_BROKERS (run through scripts/test.sh)");
        return;
    };
    let brokers = bus::Brokers::External(bootstrap);
    let topics = bus::Topics::new(testing::unique_prefix("copart"));
    let mut config = bus::Config::defaults().kafka;
    config.partitions = 3;
    bus::kafka::ensure_topics(&brokers, &config, &topics, &[Topic::Events])
        .await
        .unwrap();
    config.partitions = 2;
    bus::kafka::ensure_topics(&brokers, &config, &topics, &[Topic::Actions])
        .await
        .unwrap();
    let err = bus::kafka::ensure_topics(&brokers, &config, &topics, &[Topic::Events, Topic::Actions])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&topics.name(Topic::Actions)), "{err}");
    assert!(err.contains("co-partitioned"), "{err}");
}
