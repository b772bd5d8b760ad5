//! `qzx broker`'s control endpoint: the mock cluster's fault injection over
//! HTTP (brokers down and up, round-trip delay, request errors, leader
//! moves) and what it has done so far. It is bound to loopback only and
//! must never be exposed: whoever reaches it can take the broker down. It
//! changes the cluster only through `EmbeddedBroker`, off the async workers
//! (each call waits on the mock's thread).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bus::embedded::{EmbeddedBroker, EmbeddedError};
use rdkafka::types::{RDKafkaApiKey, RDKafkaErrorCode, RDKafkaRespErr};
use serde::Serialize;
use serde_json::{Value, json};

/// Longest round-trip delay taken: far past any delivery timeout already.
const MAX_RTT_MS: u64 = 600_000;
/// Most errors one request may push: the mock keeps each until a request
/// of that kind uses it up.
const MAX_ERRORS: u64 = 100_000;

/// The request kinds the mock answers (`rdkafka_mock_handlers.c`), so the
/// only ones an error can be injected into.
const MOCK_APIS: [RDKafkaApiKey; 18] = [
    RDKafkaApiKey::Produce,
    RDKafkaApiKey::Fetch,
    RDKafkaApiKey::ListOffsets,
    RDKafkaApiKey::Metadata,
    RDKafkaApiKey::OffsetCommit,
    RDKafkaApiKey::OffsetFetch,
    RDKafkaApiKey::FindCoordinator,
    RDKafkaApiKey::JoinGroup,
    RDKafkaApiKey::Heartbeat,
    RDKafkaApiKey::LeaveGroup,
    RDKafkaApiKey::SyncGroup,
    RDKafkaApiKey::ApiVersion,
    RDKafkaApiKey::InitProducerId,
    RDKafkaApiKey::OffsetForLeaderEpoch,
    RDKafkaApiKey::AddPartitionsToTxn,
    RDKafkaApiKey::AddOffsetsToTxn,
    RDKafkaApiKey::EndTxn,
    RDKafkaApiKey::TxnOffsetCommit,
];

#[derive(Clone)]
struct Control {
    broker: Arc<EmbeddedBroker>,
    state: Arc<Mutex<ClusterState>>,
}

/// What the endpoint has done to the cluster, kept here because the mock
/// cannot be asked.
#[derive(Clone, Debug, Serialize)]
struct ClusterState {
    bootstrap: String,
    durable: bool,
    brokers: Vec<BrokerState>,
    topics: BTreeMap<String, TopicState>,
    /// Errors pushed per request kind since its last clear. The mock uses
    /// one per request and cannot say how many are left.
    request_errors_pushed: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Serialize)]
struct BrokerState {
    id: i32,
    up: bool,
    rtt_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
struct TopicState {
    partitions: i32,
    /// Partitions whose leader was moved through this endpoint, to which
    /// broker; the others keep the mock's own placement.
    leaders_moved: BTreeMap<i32, i32>,
}

/// The control routes over `broker`, whose qzx topics are `topics` (name,
/// partitions): only those can have their leaders moved, since the mock
/// would quietly create any other.
pub fn router(broker: Arc<EmbeddedBroker>, topics: &[(String, i32)]) -> Router {
    let state = ClusterState {
        bootstrap: broker.bootstrap_servers().to_owned(),
        durable: false,
        brokers: (1..=broker.broker_count())
            .map(|id| BrokerState {
                id,
                up: true,
                rtt_ms: 0,
            })
            .collect(),
        topics: topics
            .iter()
            .map(|(name, partitions)| {
                (
                    name.clone(),
                    TopicState {
                        partitions: *partitions,
                        leaders_moved: BTreeMap::new(),
                    },
                )
            })
            .collect(),
        request_errors_pushed: BTreeMap::new(),
    };
    Router::new()
        .route("/", get(show))
        .route("/brokers/{id}/down", post(broker_down))
        .route("/brokers/{id}/up", post(broker_up))
        .route("/brokers/{id}/rtt", post(broker_rtt))
        .route("/request-errors", post(push_request_errors))
        .route("/request-errors/{api}", delete(clear_request_errors))
        .route("/topics/{name}/partitions/{partition}/leader", post(move_leader))
        .with_state(Control {
            broker,
            state: Arc::new(Mutex::new(state)),
        })
}

impl Control {
    fn state(&self) -> MutexGuard<'_, ClusterState> {
        // A panic while holding it left plain data, still worth showing.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A broker id from the path: 1 to the broker count.
    fn broker_id(&self, raw: &str, field: &'static str) -> Result<i32, ControlError> {
        let count = self.broker.broker_count();
        match raw.parse::<i32>() {
            Ok(id) if (1..=count).contains(&id) => Ok(id),
            _ => Err(ControlError::bad(
                field,
                format!("{raw:?} is not a broker id (1 to {count})"),
            )),
        }
    }

    async fn apply(
        &self,
        op: impl FnOnce(&EmbeddedBroker) -> Result<(), EmbeddedError> + Send + 'static,
    ) -> Result<(), ControlError> {
        let broker = self.broker.clone();
        tokio::task::spawn_blocking(move || op(&broker))
            .await
            .map_err(|e| ControlError::Internal(e.to_string()))?
            .map_err(|e| ControlError::Internal(e.to_string()))
    }

    /// Records a change that the cluster took, and answers the new state.
    fn record(&self, change: impl FnOnce(&mut ClusterState)) -> Json<ClusterState> {
        let mut state = self.state();
        change(&mut state);
        Json(state.clone())
    }
}

async fn show(State(control): State<Control>) -> Json<ClusterState> {
    Json(control.state().clone())
}

async fn broker_down(
    State(control): State<Control>,
    Path(id): Path<String>,
) -> Result<Json<ClusterState>, ControlError> {
    let id = control.broker_id(&id, "id")?;
    control.apply(move |b| b.broker_down(id)).await?;
    tracing::info!(broker = id, "broker down");
    Ok(control.record(|s| set_broker(s, id, |b| b.up = false)))
}

async fn broker_up(State(control): State<Control>, Path(id): Path<String>) -> Result<Json<ClusterState>, ControlError> {
    let id = control.broker_id(&id, "id")?;
    control.apply(move |b| b.broker_up(id)).await?;
    tracing::info!(broker = id, "broker up");
    Ok(control.record(|s| set_broker(s, id, |b| b.up = true)))
}

async fn broker_rtt(
    State(control): State<Control>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<ClusterState>, ControlError> {
    let id = control.broker_id(&id, "id")?;
    let ms = query_number(&query, "ms", 0, MAX_RTT_MS)?;
    control
        .apply(move |b| b.round_trip_time(id, Duration::from_millis(ms)))
        .await?;
    tracing::info!(broker = id, rtt_ms = ms, "broker round-trip delay set");
    Ok(control.record(|s| set_broker(s, id, |b| b.rtt_ms = ms)))
}

/// `{"api": "Produce", "errors": ["NotLeaderForPartition", …], "count": N}`:
/// the next requests of that kind fail with these errors, one each, the
/// list repeated `count` times (default 1).
async fn push_request_errors(State(control): State<Control>, body: Bytes) -> Result<Json<ClusterState>, ControlError> {
    let (api, errors) = parse_request_errors(&body)?;
    let pushed = errors.len() as u64;
    control.apply(move |b| b.request_errors(api, &errors)).await?;
    let name = api_name(api);
    tracing::info!(api = %name, errors = pushed, "request errors pushed");
    Ok(control.record(|s| *s.request_errors_pushed.entry(name).or_default() += pushed))
}

async fn clear_request_errors(
    State(control): State<Control>,
    Path(api): Path<String>,
) -> Result<Json<ClusterState>, ControlError> {
    let api = parse_api(&api).ok_or_else(|| unknown_api("api", &api))?;
    control.apply(move |b| b.clear_request_errors(api)).await?;
    let name = api_name(api);
    tracing::info!(api = %name, "request errors cleared");
    Ok(control.record(|s| {
        s.request_errors_pushed.remove(&name);
    }))
}

async fn move_leader(
    State(control): State<Control>,
    Path((topic, partition)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<ClusterState>, ControlError> {
    let Some(partitions) = control.state().topics.get(&topic).map(|t| t.partitions) else {
        return Err(ControlError::NotFound {
            field: "name",
            message: format!("no topic {topic:?} (only the topics qzx broker created)"),
        });
    };
    let partition = match partition.parse::<i32>() {
        Ok(p) if (0..partitions).contains(&p) => p,
        _ => {
            return Err(ControlError::bad(
                "partition",
                format!("{partition:?} is not a partition of {topic} (0 to {})", partitions - 1),
            ));
        }
    };
    let raw = query
        .get("broker")
        .ok_or_else(|| ControlError::bad("broker", "missing (?broker=N)"))?;
    let broker = control.broker_id(raw, "broker")?;
    let name = topic.clone();
    control
        .apply(move |b| b.partition_leader(&name, partition, broker))
        .await?;
    tracing::info!(%topic, partition, broker, "partition leader moved");
    Ok(control.record(|s| {
        if let Some(t) = s.topics.get_mut(&topic) {
            t.leaders_moved.insert(partition, broker);
        }
    }))
}

fn set_broker(state: &mut ClusterState, id: i32, change: impl FnOnce(&mut BrokerState)) {
    if let Some(broker) = state.brokers.iter_mut().find(|b| b.id == id) {
        change(broker);
    }
}

fn query_number(query: &HashMap<String, String>, field: &'static str, min: u64, max: u64) -> Result<u64, ControlError> {
    let raw = query
        .get(field)
        .ok_or_else(|| ControlError::bad(field, format!("missing (?{field}=N)")))?;
    match raw.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ControlError::bad(
            field,
            format!("{raw:?} is not a number from {min} to {max}"),
        )),
    }
}

/// The body of `POST /request-errors`, each mistake named by its field.
fn parse_request_errors(body: &[u8]) -> Result<(RDKafkaApiKey, Vec<RDKafkaRespErr>), ControlError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ControlError::bad("body", format!("not JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(ControlError::bad("body", "must be a JSON object"));
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !["api", "errors", "count"].contains(&k.as_str()))
    {
        return Err(ControlError::bad(unknown.clone(), "unknown field"));
    }
    let api = match fields.get("api") {
        Some(Value::String(name)) => parse_api(name).ok_or_else(|| unknown_api("api", name))?,
        Some(_) => return Err(ControlError::bad("api", "must be a string")),
        None => return Err(ControlError::bad("api", "missing")),
    };
    let Some(Value::Array(names)) = fields.get("errors") else {
        return Err(ControlError::bad("errors", "missing or not an array of error names"));
    };
    if names.is_empty() {
        return Err(ControlError::bad("errors", "empty"));
    }
    let mut errors = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let field = format!("errors[{i}]");
        let Value::String(name) = name else {
            return Err(ControlError::bad(field, "must be a string"));
        };
        let error = parse_error(name).ok_or_else(|| {
            ControlError::bad(
                field.clone(),
                format!("{name:?} is not a librdkafka error name (e.g. NotLeaderForPartition, RequestTimedOut)"),
            )
        })?;
        errors.push(error);
    }
    let count = match fields.get("count") {
        None => 1,
        Some(n) => match n.as_u64() {
            Some(n) if n >= 1 && n.saturating_mul(errors.len() as u64) <= MAX_ERRORS => n,
            _ => {
                return Err(ControlError::bad(
                    "count",
                    format!("must be a whole number from 1, at most {MAX_ERRORS} errors in all"),
                ));
            }
        },
    };
    let errors = errors.repeat(count as usize);
    Ok((api, errors))
}

fn api_name(api: RDKafkaApiKey) -> String {
    format!("{api:?}")
}

fn parse_api(name: &str) -> Option<RDKafkaApiKey> {
    MOCK_APIS.into_iter().find(|api| api_name(*api) == name)
}

fn unknown_api(field: &'static str, name: &str) -> ControlError {
    let known: Vec<String> = MOCK_APIS.into_iter().map(api_name).collect();
    ControlError::bad(
        field,
        format!("{name:?} is not a request kind the mock answers ({})", known.join(", ")),
    )
}

/// An error by the name rdkafka gives it (`RDKafkaErrorCode`), local
/// errors included: `BrokerTransportFailure` makes the mock drop the
/// connection.
fn parse_error(name: &str) -> Option<RDKafkaRespErr> {
    // librdkafka's local errors are -199 to -101 and the protocol's from 1
    // up; -200, -100 and the end mark are bounds, not errors.
    (-199..-100)
        .chain(1..1000)
        .filter_map(|code| RDKafkaRespErr::try_from(code).ok())
        .find(|err| {
            let code = RDKafkaErrorCode::from(*err);
            code != RDKafkaErrorCode::EndAll && format!("{code:?}") == name
        })
}

/// The control endpoint's one error type: bad input is a 4xx naming the
/// field; a failure of the cluster is a 500 whose detail is logged.
#[derive(Debug)]
enum ControlError {
    BadRequest { field: String, message: String },
    NotFound { field: &'static str, message: String },
    Internal(String),
}

impl ControlError {
    fn bad(field: impl Into<String>, message: impl Into<String>) -> ControlError {
        ControlError::BadRequest {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl IntoResponse for ControlError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ControlError::BadRequest { field, message } => (
                StatusCode::BAD_REQUEST,
                json!({"error": "bad_request", "field": field, "message": message}),
            ),
            ControlError::NotFound { field, message } => (
                StatusCode::NOT_FOUND,
                json!({"error": "not_found", "field": field, "message": message}),
            ),
            ControlError::Internal(detail) => {
                tracing::warn!(error = %detail, "control request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": "internal", "message": "the embedded broker did not take the change; see its log"}),
                )
            }
        };
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> String {
        match parse_request_errors(body.as_bytes()) {
            Err(ControlError::BadRequest { field, .. }) => field,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn request_errors_parse_by_name_and_repeat() {
        let (api, errors) = parse_request_errors(
            br#"{"api":"Produce","errors":["NotLeaderForPartition","RequestTimedOut"],"count":2}"#,
        )
        .unwrap();
        assert_eq!(api, RDKafkaApiKey::Produce);
        assert_eq!(errors.len(), 4);
        assert_eq!(
            RDKafkaErrorCode::from(errors[2]),
            RDKafkaErrorCode::NotLeaderForPartition
        );
        assert_eq!(
            parse_error("BrokerTransportFailure"),
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT)
        );
    }

    #[test]
    fn each_bad_request_errors_body_names_its_field() {
        assert_eq!(field_of("nope"), "body");
        assert_eq!(field_of(r#"{"errors":["RequestTimedOut"]}"#), "api");
        assert_eq!(
            field_of(r#"{"api":"CreateTopics","errors":["RequestTimedOut"]}"#),
            "api"
        );
        assert_eq!(field_of(r#"{"api":"Produce","errors":[]}"#), "errors");
        assert_eq!(
            field_of(r#"{"api":"Produce","errors":["RequestTimedOut","Nope"]}"#),
            "errors[1]"
        );
        assert_eq!(field_of(r#"{"api":"Produce","errors":["EndAll"]}"#), "errors[0]");
        assert_eq!(
            field_of(r#"{"api":"Produce","errors":["RequestTimedOut"],"count":0}"#),
            "count"
        );
        assert_eq!(
            field_of(r#"{"api":"Produce","errors":["RequestTimedOut"],"cuont":2}"#),
            "cuont"
        );
    }
}
