//! `qzx demo` as a new user meets it: one command, nothing else running.
//! Within a few minutes of start the simulated city has produced incidents
//! that were dispatched, acknowledged and closed, 1-3-5 stages were met and
//! breached, and an outside Kafka client can read the topics at the
//! address the demo printed.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the demo prints for the user.
#[derive(Debug, Default)]
struct Banner {
    board: String,
    analyst: String,
    kafka: String,
    topics: String,
}

fn read_banner(child: &mut Child) -> Banner {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut banner = Banner::default();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["board", url, ..] => banner.board = (*url).to_owned(),
                ["analyst", "token", token, ..] => banner.analyst = (*token).to_owned(),
                ["kafka", address, ..] => banner.kafka = (*address).to_owned(),
                ["topics", prefix, ..] => {
                    banner.topics = prefix.trim_end_matches('*').to_owned();
                    let _ = tx.send(std::mem::take(&mut banner));
                }
                _ => {}
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the demo prints its banner")
}

fn stage(stats: &serde_json::Value, name: &str, outcome: &str) -> u64 {
    stats["stages"][name][outcome].as_u64().unwrap_or(0)
}

#[test]
fn the_demo_runs_a_city_whose_incidents_are_dispatched_and_closed() {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qzx"));
    for (k, _) in std::env::vars() {
        if k.starts_with("QZX_") {
            cmd.env_remove(k);
        }
    }
    let started = Instant::now();
    let mut child = cmd
        .args(["demo", "--speed", "30", "--seed", "7"])
        .env("QZX_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let banner = read_banner(&mut child);
    let _demo = Demo(child);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "ready in {:?}",
        started.elapsed()
    );
    assert!(banner.board.contains("token="), "{banner:?}");
    assert!(!banner.analyst.is_empty() && !banner.kafka.is_empty(), "{banner:?}");

    // The stats fill up as the city runs: dispatched, acknowledged (respond
    // met or breached), closed, and both outcomes of the clock.
    let http = reqwest::blocking_client();
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut stats = serde_json::Value::Null;
    loop {
        if let Some(s) = http.get(port, "/api/v1/stats", &banner.analyst) {
            stats = s;
        }
        let closed = stats["by_status"]["closed"].as_u64().unwrap_or(0);
        let acknowledged = stage(&stats, "respond", "met") + stage(&stats, "respond", "breached");
        let met: u64 = ["respond", "arrive", "reinforce"]
            .iter()
            .map(|s| stage(&stats, s, "met"))
            .sum();
        let breached: u64 = ["respond", "arrive", "reinforce"]
            .iter()
            .map(|s| stage(&stats, s, "breached"))
            .sum();
        if closed > 0 && acknowledged > 0 && met > 0 && breached > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the city did not get there in time: {stats:#}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(stats["incidents"].as_u64().unwrap_or(0) >= 3, "{stats:#}");

    // Any Kafka client can read the topics at the printed address.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &banner.kafka)
        .set("group.id", "demo-test-outside-client")
        .create()
        .unwrap();
    let topic = format!("{}incidents", banner.topics);
    let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).unwrap();
    let partitions = metadata.topics()[0].partitions().len() as i32;
    assert!(partitions > 0);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    let message = loop {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            break m.detach();
        }
        assert!(Instant::now() < until, "no incident record on {topic}");
    };
    let incident: serde_json::Value = serde_json::from_slice(message.payload().unwrap()).unwrap();
    assert!(
        incident["id"].is_string() && incident["priority"].is_u64(),
        "{incident}"
    );
    let headers = message.headers().unwrap();
    assert!(
        headers
            .iter()
            .any(|h| h.key == "ce_type" && h.value == Some(&b"qzx.incident.v1"[..]))
    );
}

/// A tiny blocking HTTP client over the async one, for a sync test.
mod reqwest {
    pub struct Client {
        runtime: tokio::runtime::Runtime,
        inner: ::reqwest::Client,
    }

    pub fn blocking_client() -> Client {
        Client {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            inner: ::reqwest::Client::new(),
        }
    }

    impl Client {
        pub fn get(&self, port: u16, path: &str, token: &str) -> Option<serde_json::Value> {
            self.runtime.block_on(async {
                let r = self
                    .inner
                    .get(format!("http://127.0.0.1:{port}{path}"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .ok()?;
                r.json().await.ok()
            })
        }
    }
}
