//! `ingest`: the way every inbound signal enters qzx. 110 calls and sensor
//! events over HTTP (JSON, arrays, NDJSON), OASIS CAP 1.2 alerts, unit
//! positions (AVL) and the MQTT sensor bridge are validated, normalised,
//! made idempotent on (`source`, `source_id`) and produced to Kafka; every
//! rejected input goes to the dead-letter topic with its raw bytes.
//!
//! Invariants: a 202 means Kafka acknowledged every accepted event (acks=all);
//! when Kafka cannot take them in bounded time the client gets 503 with
//! Retry-After and no event of that request is reported accepted. Nothing a
//! client sends disappears without trace. This crate never writes incident
//! state or the units topic (only the router does: positions go to the
//! positions topic and move the unit in the Store, never its status) and
//! never speaks WebSocket.
//!
//! Entry point: [`start`]. The binary serves the returned router and adds
//! `/healthz`, `/readyz` and `/metrics` itself.

pub mod body;
pub mod cap;
pub mod error;
pub mod mqtt;
pub mod native;
pub mod pipeline;
pub mod positions;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bus::auth::{Claims, TokenKeys};
use bus::config::{Config, RosterUnit};
use bus::geo::CityMap;
use bus::kafka::ensure_topics;
use bus::model::{Channel, Role, Source};
use bus::validate::InputRules;
use bus::{Producer, ServiceContext, SharedStore, Supervisor, Topic};
use futures::StreamExt as _;

use crate::body::Framing;
pub use crate::error::IngestError;
pub use crate::native::accept_kafka_native;
use crate::pipeline::{Origin, Outcome, Submission};

/// Bodies above this are parsed off the async runtime.
const BLOCKING_PARSE_BYTES: usize = 64 * 1024;

/// Everything a request needs, shared by the HTTP handlers and the MQTT
/// bridge.
pub struct Ingest {
    pub(crate) config: Arc<Config>,
    pub(crate) rules: InputRules,
    pub(crate) city: CityMap,
    keys: TokenKeys,
    pub(crate) producer: Producer,
    pub(crate) store: SharedStore,
    /// Roster units by id: a position from a unit the store does not know
    /// yet takes its type and jurisdiction from here.
    pub(crate) roster: HashMap<String, RosterUnit>,
    pub(crate) idempotency_ttl: Duration,
    /// How long a pending idempotency marker protects its owner: well past
    /// the longest a produce can take, so only a dead owner's marker
    /// expires.
    pub(crate) pending_expiry: Duration,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest").field("producer", &self.producer).finish()
    }
}

impl Ingest {
    /// Builds the shared state. Fails without a JWT secret: ingest never
    /// runs unauthenticated.
    pub fn new(ctx: &ServiceContext) -> anyhow::Result<Ingest> {
        let config = ctx.config.clone();
        let secret = config
            .auth
            .jwt_secret
            .as_deref()
            .filter(|s| !s.is_empty())
            .context("auth.jwt_secret (QZX_JWT_SECRET) is not set; ingest refuses to run without it")?;
        let producer = Producer::new(&ctx.brokers, &config.kafka, ctx.topics.clone(), "/qzx/ingest")
            .context("creating the ingest kafka producer")?;
        let delivery = config.kafka.delivery_timeout();
        Ok(Ingest {
            rules: InputRules::new(&config),
            city: CityMap::new(&config),
            keys: TokenKeys::new(secret),
            producer,
            store: ctx.store.clone(),
            roster: config.units.iter().map(|u| (u.id.clone(), u.clone())).collect(),
            idempotency_ttl: Duration::from_secs(config.ingest.idempotency_window_s),
            pending_expiry: delivery * 2 + Duration::from_secs(5),
            config,
        })
    }

    /// Checks the bearer token: only `source` and `admin` may post.
    ///
    /// Auth failures are not dead-lettered: without a valid token the body
    /// is not a source's data, and recording it would let anyone fill the
    /// dead-letter topic.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<Claims, IngestError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| IngestError::Unauthorized("missing Authorization: Bearer <token>".into()))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| IngestError::Unauthorized("the Authorization header is not 'Bearer <token>'".into()))?;
        let claims = self
            .keys
            .verify(token)
            .map_err(|_| IngestError::Unauthorized("invalid or expired token".into()))?;
        match claims.role {
            Role::Source | Role::Admin => Ok(claims),
            other => Err(IngestError::Forbidden(format!(
                "role {} may not post to ingest",
                serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ))),
        }
    }

    pub fn producer(&self) -> &Producer {
        &self.producer
    }
}

/// Creates the topics ingest writes, starts the MQTT bridge when
/// `mqtt.url` is set, and returns the HTTP routes (`POST /v1/events`,
/// `POST /v1/alerts/cap`, `POST /v1/positions`).
pub async fn start(ctx: &ServiceContext, sup: &mut Supervisor) -> anyhow::Result<Router> {
    ensure_topics(
        &ctx.brokers,
        &ctx.config.kafka,
        &ctx.topics,
        &[Topic::Events, Topic::DeadLetter, Topic::Positions],
    )
    .await
    .context("creating the ingest topics")?;
    let ingest = Arc::new(Ingest::new(ctx)?);

    if let Some(url) = ctx.config.mqtt.url.clone().filter(|u| !u.trim().is_empty()) {
        mqtt::parse_url(&url)?;
        let client_id = format!("{}-{}", ctx.config.mqtt.client_id, ctx.instance);
        sup.spawn("ingest-mqtt", mqtt::run(ingest.clone(), url, client_id, sup.token()));
    }

    // Requests wait for their own acks; this only flushes what is still in
    // flight when the process stops.
    let token = sup.token();
    let producer = ingest.producer.clone();
    let drain = ctx.config.kafka.drain_timeout();
    sup.spawn("ingest-producer", async move {
        token.cancelled().await;
        tokio::task::spawn_blocking(move || producer.flush(drain))
            .await
            .context("flushing the ingest producer")
    });

    Ok(router(ingest))
}

/// The HTTP routes over a built [`Ingest`].
pub fn router(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route("/v1/events", post(post_events))
        .route("/v1/alerts/cap", post(post_cap))
        .route("/v1/positions", post(post_positions))
        .route_layer(middleware::from_fn(track))
        .with_state(ingest)
}

/// Request duration by route template and status (bounded labels).
async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    ::metrics::histogram!(
        bus::metrics::INGEST_REQUEST_SECONDS,
        "route" => route,
        "status" => response.status().as_u16().to_string()
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// The media type of the request, lowercased, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
}

/// How reading a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    Complete,
    /// There was more than the limit (the rest is not read: a client cannot
    /// make us buffer more than the limit).
    Oversize,
    /// The client did not send it all in time (`http.body_read_timeout_s`):
    /// a trickled body holds a connection and a buffer for no longer.
    TimedOut,
}

/// Reads the body up to `limit` bytes within `timeout`. Returns the bytes
/// read and how it ended.
async fn read_limited(body: Body, limit: usize, timeout: Duration) -> Result<(Vec<u8>, BodyEnd), IngestError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Ok((buf, BodyEnd::TimedOut)),
            Ok(None) => return Ok((buf, BodyEnd::Complete)),
            Ok(Some(chunk)) => chunk,
        };
        let chunk = chunk.map_err(|e| {
            IngestError::bad_request("body_unreadable", format!("reading the body failed: {e}"), vec![])
        })?;
        let room = limit - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf, BodyEnd::Oversize));
        }
        buf.extend_from_slice(&chunk);
    }
}

/// Dead-letters a body that is refused as a whole, then returns the error
/// for the client; or 503 when the dead letter itself could not be written
/// (the client must resend: its data is not on record).
async fn refuse(ingest: &Ingest, raw: &[u8], error: IngestError, origin: &Origin) -> IngestError {
    let mut errors = error.field_errors();
    if let IngestError::TooLarge { limit } = &error {
        errors = vec![bus::model::FieldError::new(
            "",
            format!("body over the limit of {limit} bytes; the bytes read up to the limit are kept here"),
        )];
    }
    tracing::debug!(
        code = error.code(),
        channel = origin.channel.as_str(),
        "request refused"
    );
    match ingest.dead_letter_body(raw, errors, origin).await {
        Ok(()) => error,
        Err(unavailable) => unavailable,
    }
}

fn respond(outcome: Outcome) -> Response {
    let status = if outcome.accepted.is_empty() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::ACCEPTED
    };
    (status, axum::Json(outcome)).into_response()
}

/// Runs a parser on the body, off the runtime when the body is large.
async fn parse<T, F>(raw: Arc<Vec<u8>>, f: F) -> Result<T, IngestError>
where
    T: Send + 'static,
    F: FnOnce(&[u8]) -> Result<T, IngestError> + Send + 'static,
{
    if raw.len() < BLOCKING_PARSE_BYTES {
        return f(&raw);
    }
    tokio::task::spawn_blocking(move || f(&raw))
        .await
        .map_err(|e| IngestError::Internal(format!("parser task failed: {e}")))?
}

struct Read {
    raw: Arc<Vec<u8>>,
    origin: Origin,
    media: Option<String>,
}

/// What every endpoint does first: authorise, read the body within the
/// limit, and refuse (with a dead letter) an oversize body.
async fn read_request(
    ingest: &Ingest,
    headers: &HeaderMap,
    body: Body,
    channel: Channel,
    default_source: Option<Source>,
) -> Result<Read, IngestError> {
    let claims = ingest.authorize(headers)?;
    let media = media_type(headers);
    let origin = Origin {
        channel,
        default_source,
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        jurisdictions: (!claims.all_jurisdictions() && claims.role != bus::model::Role::Admin)
            .then(|| claims.jurisdictions.clone()),
        sender: Some(claims.sub),
    };
    let limit = ingest.config.ingest.max_body_bytes;
    let timeout = Duration::from_secs(ingest.config.http.body_read_timeout_s.max(1));
    let (raw, end) = read_limited(body, limit, timeout).await?;
    match end {
        BodyEnd::Complete => {}
        BodyEnd::Oversize => return Err(refuse(ingest, &raw, IngestError::TooLarge { limit }, &origin).await),
        BodyEnd::TimedOut => {
            let seconds = timeout.as_secs();
            return Err(refuse(ingest, &raw, IngestError::BodyTimeout { seconds }, &origin).await);
        }
    }
    Ok(Read {
        raw: Arc::new(raw),
        origin,
        media,
    })
}

fn json_framing(media: Option<&str>) -> Option<Framing> {
    match media {
        // A client that names no type gets the benefit of the doubt.
        None | Some("application/json") => Some(Framing::Json),
        Some("application/x-ndjson" | "application/ndjson" | "application/jsonl") => Some(Framing::Ndjson),
        Some(_) => None,
    }
}

async fn post_events(
    State(ingest): State<Arc<Ingest>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, IngestError> {
    let read = read_request(&ingest, &headers, body, Channel::Http, None).await?;
    let Some(framing) = json_framing(read.media.as_deref()) else {
        let e = IngestError::UnsupportedMediaType(format!(
            "'{}' is not supported here: use application/json or application/x-ndjson",
            read.media.unwrap_or_default()
        ));
        return Err(refuse(&ingest, &read.raw, e, &read.origin).await);
    };
    let max_batch = ingest.config.ingest.max_batch;
    let items = match parse(read.raw.clone(), move |b| body::split(b, framing, max_batch)).await {
        Ok(items) => items,
        Err(e) => return Err(refuse(&ingest, &read.raw, e, &read.origin).await),
    };
    let submissions = items
        .into_iter()
        .map(|i| Submission {
            index: i.index,
            raw: Arc::new(i.raw),
            value: i.value,
        })
        .collect();
    Ok(respond(ingest.submit(submissions, &read.origin).await?))
}

async fn post_cap(State(ingest): State<Arc<Ingest>>, headers: HeaderMap, body: Body) -> Result<Response, IngestError> {
    let read = read_request(&ingest, &headers, body, Channel::Cap, Some(Source::Alert)).await?;
    if !matches!(
        read.media.as_deref(),
        Some("application/cap+xml" | "application/xml" | "text/xml")
    ) {
        let e = IngestError::UnsupportedMediaType(format!(
            "'{}' is not supported here: use application/cap+xml or application/xml",
            read.media.unwrap_or_default()
        ));
        return Err(refuse(&ingest, &read.raw, e, &read.origin).await);
    }
    let max_text = ingest.config.ingest.max_text_chars;
    let max_infos = ingest.config.ingest.max_cap_infos;
    let values = match parse(read.raw.clone(), move |b| cap::alert_to_inputs(b, max_text, max_infos)).await {
        Ok(v) => v,
        Err(e) => return Err(refuse(&ingest, &read.raw, e, &read.origin).await),
    };
    let submissions = values
        .into_iter()
        .enumerate()
        .map(|(index, value)| Submission {
            index,
            // A rejected info is recorded with the whole alert: the XML is
            // what the sender can fix. Shared, never copied per info.
            raw: read.raw.clone(),
            value: Ok(value),
        })
        .collect();
    Ok(respond(ingest.submit(submissions, &read.origin).await?))
}

async fn post_positions(
    State(ingest): State<Arc<Ingest>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, IngestError> {
    let read = read_request(&ingest, &headers, body, Channel::Http, None).await?;
    let Some(framing) = json_framing(read.media.as_deref()) else {
        let e = IngestError::UnsupportedMediaType(format!(
            "'{}' is not supported here: use application/json",
            read.media.unwrap_or_default()
        ));
        return Err(refuse(&ingest, &read.raw, e, &read.origin).await);
    };
    let max_batch = ingest.config.ingest.max_batch;
    let items = match parse(read.raw.clone(), move |b| body::split(b, framing, max_batch)).await {
        Ok(items) => items,
        Err(e) => return Err(refuse(&ingest, &read.raw, e, &read.origin).await),
    };
    Ok(respond(ingest.submit_positions(items, &read.origin).await?))
}
