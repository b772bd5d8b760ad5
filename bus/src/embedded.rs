//! The embedded broker: librdkafka's mock cluster, started in process for
//! the demo and fast tests. It speaks the Kafka protocol on loopback ports,
//! so any Kafka client can connect to [`EmbeddedBroker::bootstrap_servers`].
//! It is not durable: everything is lost when the process exits.
//!
//! The mock cluster handle is not `Send`, so it lives on a thread of its own
//! and is driven by messages; this also gives tests and `qzx broker`'s
//! control endpoint fault injection (`broker_down`, `request_errors`,
//! round-trip delay, leader moves) from any task. It must never be used
//! where durability is promised.
//!
//! Each broker listens on a loopback port the kernel picks: librdkafka's
//! mock binds port 0 and has no option for a chosen one
//! (`rd_kafka_mock_broker_new`; `rd_kafka_mock_broker_set_host_port` only
//! changes the advertised address, not the socket).

use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use crate::topics::{Topic, Topics};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("embedded broker failed to start: {0}")]
    Start(String),
    #[error("embedded broker: {0}")]
    Op(String),
    #[error("embedded broker thread has stopped")]
    Stopped,
}

type Reply = mpsc::Sender<Result<(), String>>;

enum Request {
    CreateTopic {
        name: String,
        partitions: i32,
        reply: Reply,
    },
    BrokerDown {
        id: i32,
        reply: Reply,
    },
    BrokerUp {
        id: i32,
        reply: Reply,
    },
    InjectErrors {
        api: RDKafkaApiKey,
        errors: Vec<RDKafkaRespErr>,
        reply: Reply,
    },
    ClearErrors {
        api: RDKafkaApiKey,
        reply: Reply,
    },
    RoundTripTime {
        id: i32,
        delay: Duration,
        reply: Reply,
    },
    PartitionLeader {
        topic: String,
        partition: i32,
        broker: i32,
        reply: Reply,
    },
    Stop,
}

/// A running mock cluster. Dropping it stops the cluster.
pub struct EmbeddedBroker {
    bootstrap: String,
    /// Broker ids are 1 to this, as the mock numbers them.
    brokers: i32,
    requests: Mutex<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("bootstrap", &self.bootstrap)
            .finish()
    }
}

impl EmbeddedBroker {
    /// Starts a cluster of `brokers` brokers on loopback.
    pub fn start(brokers: i32) -> Result<EmbeddedBroker, EmbeddedError> {
        let (tx, rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let thread = std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let cluster = match MockCluster::new(brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                serve(&cluster, rx);
            })
            .map_err(|e| EmbeddedError::Start(e.to_string()))?;
        let bootstrap = ready_rx
            .recv()
            .map_err(|_| EmbeddedError::Start("thread ended".into()))?
            .map_err(EmbeddedError::Start)?;
        tracing::warn!(%bootstrap, "embedded kafka broker started; it is not durable");
        Ok(EmbeddedBroker {
            bootstrap,
            brokers,
            requests: Mutex::new(tx),
            thread: Some(thread),
        })
    }

    /// The address any Kafka client can bootstrap from.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// How many brokers the cluster has; their ids are 1 to this.
    pub fn broker_count(&self) -> i32 {
        self.brokers
    }

    /// Creates a topic (the mock cluster has no CreateTopics API).
    /// Creating one that exists is not an error.
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), EmbeddedError> {
        self.call(|reply| Request::CreateTopic {
            name: name.to_owned(),
            partitions,
            reply,
        })
    }

    /// Creates every qzx topic under `topics`' prefix.
    pub fn create_topics(&self, topics: &Topics, partitions: i32) -> Result<(), EmbeddedError> {
        for topic in Topic::ALL {
            self.create_topic(&topics.name(topic), partitions)?;
        }
        Ok(())
    }

    /// Fault injection: the broker stops answering.
    pub fn broker_down(&self, id: i32) -> Result<(), EmbeddedError> {
        self.call(|reply| Request::BrokerDown { id, reply })
    }

    pub fn broker_up(&self, id: i32) -> Result<(), EmbeddedError> {
        self.call(|reply| Request::BrokerUp { id, reply })
    }

    /// Fault injection: the next requests of this kind fail with these
    /// errors, one each.
    pub fn request_errors(&self, api: RDKafkaApiKey, errors: &[RDKafkaRespErr]) -> Result<(), EmbeddedError> {
        let errors = errors.to_vec();
        self.call(|reply| Request::InjectErrors { api, errors, reply })
    }

    pub fn clear_request_errors(&self, api: RDKafkaApiKey) -> Result<(), EmbeddedError> {
        self.call(|reply| Request::ClearErrors { api, reply })
    }

    /// Fault injection: the broker answers every request `delay` late
    /// (zero restores it).
    pub fn round_trip_time(&self, id: i32, delay: Duration) -> Result<(), EmbeddedError> {
        self.call(|reply| Request::RoundTripTime { id, delay, reply })
    }

    /// Fault injection: the partition's leader moves to `broker`. Clients
    /// find out from the old leader's errors and their next metadata
    /// request. The mock creates a topic it does not know, so callers check
    /// the topic first.
    pub fn partition_leader(&self, topic: &str, partition: i32, broker: i32) -> Result<(), EmbeddedError> {
        let topic = topic.to_owned();
        self.call(|reply| Request::PartitionLeader {
            topic,
            partition,
            broker,
            reply,
        })
    }

    fn call(&self, make: impl FnOnce(Reply) -> Request) -> Result<(), EmbeddedError> {
        let (reply, answer) = mpsc::channel();
        self.requests
            .lock()
            .map_err(|_| EmbeddedError::Stopped)?
            .send(make(reply))
            .map_err(|_| EmbeddedError::Stopped)?;
        answer
            .recv()
            .map_err(|_| EmbeddedError::Stopped)?
            .map_err(EmbeddedError::Op)
    }
}

fn serve(cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>, rx: mpsc::Receiver<Request>) {
    for request in rx {
        let (result, reply) = match request {
            Request::CreateTopic {
                name,
                partitions,
                reply,
            } => match cluster.create_topic(&name, partitions, 1) {
                // As documented above: every service ensures its topics on
                // the one embedded broker, so an existing topic is fine.
                Err(e) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists) => {
                    (Ok(()), reply)
                }
                other => (other, reply),
            },
            Request::BrokerDown { id, reply } => (cluster.broker_down(id), reply),
            Request::BrokerUp { id, reply } => (cluster.broker_up(id), reply),
            Request::InjectErrors { api, errors, reply } => {
                cluster.request_errors(api, &errors);
                (Ok(()), reply)
            }
            Request::ClearErrors { api, reply } => {
                cluster.clear_request_errors(api);
                (Ok(()), reply)
            }
            Request::RoundTripTime { id, delay, reply } => (cluster.broker_round_trip_time(id, delay), reply),
            Request::PartitionLeader {
                topic,
                partition,
                broker,
                reply,
            } => (cluster.partition_leader(&topic, partition, Some(broker)), reply),
            Request::Stop => return,
        };
        let _ = reply.send(result.map_err(|e| e.to_string()));
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        if let Ok(tx) = self.requests.lock() {
            let _ = tx.send(Request::Stop);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
