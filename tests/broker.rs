//! `qzx broker` as a chaos run or a developer meets it: a process of its
//! own that any Kafka client reaches at the address it prints, whose
//! control endpoint takes brokers down and up, delays and fails requests,
//! and refuses bad input naming the field; and a `qzx all` in another
//! process runs on it, with the topics the broker created.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};

/// A child process killed when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn qzx(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qzx"));
    // Only what the test sets: a stray QZX_* would change the answers.
    for (k, _) in std::env::vars() {
        if k.starts_with("QZX_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit());
    cmd
}

/// A started `qzx broker` and the two lines it printed.
struct Broker {
    process: Process,
    bootstrap: String,
    control: String,
}

fn start_broker(args: &[&str]) -> Broker {
    let mut child = qzx(&[&["broker"], args].concat(), &[])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let bootstrap = lines.next().unwrap_or_default();
        let control = lines.next().unwrap_or_default();
        let _ = tx.send((bootstrap, control));
        // Keep reading so the broker never blocks on a full pipe.
        lines.for_each(drop);
    });
    let process = Process(child);
    let (bootstrap, control) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("qzx broker prints its addresses");
    let bootstrap = bootstrap
        .strip_prefix("bootstrap ")
        .unwrap_or_else(|| panic!("first line: {bootstrap}"))
        .to_owned();
    let control = control
        .strip_prefix("control ")
        .unwrap_or_else(|| panic!("second line: {control}"))
        .to_owned();
    assert!(control.starts_with("http://127.0.0.1:"), "{control}");
    Broker {
        process,
        bootstrap,
        control,
    }
}

fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "2000")
        // Back after a broker comes up within half a second, not ten.
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "500")
        .set("log_level", "0")
        .create()
        .unwrap()
}

async fn produce(producer: &FutureProducer, topic: &str, payload: &str) -> Result<(i32, i64), RDKafkaErrorCode> {
    producer
        .send(
            FutureRecord::to(topic).key("k").payload(payload),
            Duration::from_secs(0),
        )
        .await
        .map(|d| (d.partition, d.offset))
        .map_err(|(e, _)| e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail))
}

/// Reads `topic` from the beginning until `found` accepts a payload.
fn consume_until(bootstrap: &str, topic: &str, partitions: i32, within: Duration, found: impl Fn(&[u8]) -> bool) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "broker-test-reader")
        .set("log_level", "0")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let until = Instant::now() + within;
    loop {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200))
            && found(m.payload().unwrap_or_default())
        {
            return;
        }
        assert!(Instant::now() < until, "not found on {topic} within {within:?}");
    }
}

async fn post(http: &reqwest::Client, url: String) -> (u16, Value) {
    let r = http.post(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_endpoint_injects_faults_a_kafka_client_sees() {
    let dir = std::env::temp_dir().join(format!("qzx-broker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bootstrap");
    let broker = start_broker(&["--partitions", "2", "--bootstrap-file", file.to_str().unwrap()]);
    let http = reqwest::Client::new();
    let c = &broker.control;
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim(),
        broker.bootstrap,
        "the bootstrap file holds the printed address"
    );

    let state: Value = http.get(c).send().await.unwrap().json().await.unwrap();
    assert_eq!(state["durable"], false, "{state}");
    assert_eq!(state["brokers"], json!([{"id": 1, "up": true, "rtt_ms": 0}]), "{state}");
    assert_eq!(state["topics"]["qzx.events"]["partitions"], 2, "{state}");

    // Any Kafka client produces and consumes through it.
    let producer = producer(&broker.bootstrap);
    let (partition, _) = produce(&producer, "qzx.events", "first").await.expect("produce");
    assert!((0..2).contains(&partition));
    consume_until(&broker.bootstrap, "qzx.events", 2, Duration::from_secs(20), |p| {
        p == b"first"
    });

    // Down: a produce fails within its delivery timeout. Up: it succeeds.
    let (status, state) = post(&http, format!("{c}/brokers/1/down")).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["brokers"][0]["up"], false, "{state}");
    let started = Instant::now();
    let failed = produce(&producer, "qzx.events", "while down").await;
    assert_eq!(failed, Err(RDKafkaErrorCode::MessageTimedOut));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let (status, _) = post(&http, format!("{c}/brokers/1/up")).await;
    assert_eq!(status, 200);
    let until = Instant::now() + Duration::from_secs(20);
    while produce(&producer, "qzx.events", "back up").await.is_err() {
        assert!(Instant::now() < until, "produce after the broker came back up");
    }

    // Round-trip delay: every answer comes that much later.
    let (status, state) = post(&http, format!("{c}/brokers/1/rtt?ms=400")).await;
    assert_eq!(status, 200);
    assert_eq!(state["brokers"][0]["rtt_ms"], 400);
    let started = Instant::now();
    produce(&producer, "qzx.events", "slow").await.expect("slow produce");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(post(&http, format!("{c}/brokers/1/rtt?ms=0")).await.0, 200);

    // Request errors: the next produce request fails with the one pushed.
    let r = http
        .post(format!("{c}/request-errors"))
        .json(&json!({"api": "Produce", "errors": ["MessageSizeTooLarge"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let state: Value = r.json().await.unwrap();
    assert_eq!(state["request_errors_pushed"]["Produce"], 1, "{state}");
    assert_eq!(
        produce(&producer, "qzx.events", "refused").await,
        Err(RDKafkaErrorCode::MessageSizeTooLarge)
    );
    produce(&producer, "qzx.events", "after")
        .await
        .expect("the error was used up");

    // A leader move (one broker: to itself) is recorded.
    let (status, state) = post(&http, format!("{c}/topics/qzx.events/partitions/1/leader?broker=1")).await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["topics"]["qzx.events"]["leaders_moved"]["1"], 1, "{state}");

    // Bad input: 400 naming the field (404 for a topic it did not create).
    for (path, field) in [
        ("/brokers/2/down", "id"),
        ("/brokers/x/up", "id"),
        ("/brokers/1/rtt?ms=soon", "ms"),
        ("/brokers/1/rtt", "ms"),
        ("/topics/qzx.events/partitions/2/leader?broker=1", "partition"),
        ("/topics/qzx.events/partitions/0/leader?broker=3", "broker"),
        ("/topics/qzx.events/partitions/0/leader", "broker"),
    ] {
        let (status, body) = post(&http, format!("{c}{path}")).await;
        assert_eq!((status, body["field"].as_str()), (400, Some(field)), "{path}: {body}");
        assert_eq!(body["error"], "bad_request");
    }
    let (status, body) = post(&http, format!("{c}/topics/other/partitions/0/leader?broker=1")).await;
    assert_eq!((status, body["field"].as_str()), (404, Some("name")), "{body}");
    let r = http
        .post(format!("{c}/request-errors"))
        .json(&json!({"api": "Produce", "errors": ["NoSuchError"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "errors[0]");

    // SIGTERM stops it gracefully, and the bootstrap file goes with it.
    let mut broker = broker;
    let pid = broker.process.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = broker.process.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < until, "qzx broker did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(!file.exists(), "the bootstrap file is removed on exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qzx_all_in_another_process_runs_on_it() {
    let broker = start_broker(&[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let secret = "broker-test-secret-of-thirty-two-bytes";
    let _all = Process(
        qzx(
            &["all"],
            &[
                ("QZX_KAFKA_BROKERS", &broker.bootstrap),
                ("QZX_JWT_SECRET", secret),
                ("QZX_LISTEN", &listen),
            ],
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let http = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("http://{listen}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < until, "qzx all did not get ready on qzx broker");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let token = bus::auth::TokenKeys::new(secret)
        .mint(
            "broker-test",
            bus::model::Role::Source,
            &["*".to_owned()],
            None,
            Duration::from_secs(600),
        )
        .unwrap();
    let r = http
        .post(format!("http://{listen}/v1/events"))
        .bearer_auth(&token)
        .json(&json!({
            "source": "call110", "source_id": "broker-test-1", "kind": "robbery",
            "location": {"lat": 36.6683, "lon": 117.0204, "address": "历下区泉城路1号"},
            "text": "两名男子持刀抢劫路人"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    let id = accepted["accepted"][0]["id"].as_str().unwrap().to_owned();

    // The router's incident for it reaches the incidents topic.
    let state: Value = http.get(&broker.control).send().await.unwrap().json().await.unwrap();
    let partitions = state["topics"]["qzx.incidents"]["partitions"].as_i64().unwrap() as i32;
    let bootstrap = broker.bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        consume_until(
            &bootstrap,
            "qzx.incidents",
            partitions,
            Duration::from_secs(60),
            |payload| {
                serde_json::from_slice::<Value>(payload)
                    .is_ok_and(|incident| incident["events"].as_array().is_some_and(|e| e.contains(&json!(id))))
            },
        );
    })
    .await
    .unwrap();
}
