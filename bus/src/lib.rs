//! `bus`: the event model of qzx and the plumbing every service shares —
//! topics, CloudEvents headers, the Kafka producer and consumer, the embedded
//! broker, configuration, and the [`store::Store`] for hot state.
//!
//! This crate knows nothing of HTTP or WebSocket: those belong to `ingest`
//! and `dispatch-ui-api`.

pub mod auth;
pub mod cloudevents;
pub mod config;
pub mod embedded;
pub mod geo;
pub mod kafka;
pub mod metrics;
pub mod model;
pub mod service;
pub mod stats;
pub mod store;
pub mod testing;
pub mod topics;
pub mod validate;

pub use config::Config;
pub use kafka::{Brokers, Consumer, Producer};
pub use service::{ServiceContext, Supervisor};
pub use store::{SharedStore, Store};
pub use topics::{Topic, Topics};

/// Category codes the contract requires the configuration to define.
pub const REQUIRED_KINDS: [&str; 14] = [
    "robbery",
    "assault",
    "theft",
    "fraud",
    "traffic_accident",
    "fire",
    "missing_person",
    "dispute",
    "noise",
    "utility_outage",
    "efence_breach",
    "video_alarm",
    "smoke_alarm",
    "unknown",
];
