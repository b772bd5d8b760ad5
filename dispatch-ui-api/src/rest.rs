//! REST reads and the REST form of the commands. Every handler takes the
//! caller's [`Principal`] and shows only what the role and jurisdictions
//! allow. Reads come from the Store (the router's hot state) and the local
//! view; nothing here writes state.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bus::config::{AreaType, DispatchMode};
use bus::model::{Incident, Recommendation, Role, Unit};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AppState;
use crate::auth::{Principal, may_read};
use crate::error::{ApiError, ErrorBody};
use crate::stats::{self, CoverageBody, StatsBody};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

fn require_read(p: &Principal) -> Result<(), ApiError> {
    if may_read(&p.0) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            format!("role {:?} may not read this", p.0.role).to_lowercase(),
        ))
    }
}

/// An incident from the Store, else the local view (closed ones).
pub async fn find_incident(state: &AppState, id: &str) -> Result<Incident, ApiError> {
    let stored = state.store.incident(id).await?;
    let local = state.view.incident(id);
    match (stored, local) {
        (Some(a), Some(b)) => Ok(if b.version > a.version { b } else { a }),
        (Some(a), None) => Ok(a),
        (None, Some(b)) => Ok(b),
        (None, None) => Err(ApiError::NotFound(format!("incident {id} not found"))),
    }
}

/// Open incidents from the Store merged with the view's, newest version wins.
pub async fn all_incidents(state: &AppState, include_closed: bool) -> Result<Vec<Incident>, ApiError> {
    let mut by_id: HashMap<String, Incident> = HashMap::new();
    for incident in state
        .store
        .open_incidents()
        .await?
        .into_iter()
        .chain(state.view.incidents())
    {
        if !include_closed && !incident.status.is_open() {
            continue;
        }
        match by_id.get(&incident.id) {
            Some(held) if held.version >= incident.version => {}
            _ => {
                by_id.insert(incident.id.clone(), incident);
            }
        }
    }
    // A newer closed version in the view hides a stale open one.
    Ok(by_id
        .into_values()
        .filter(|i| include_closed || i.status.is_open())
        .collect())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct IncidentQuery {
    /// open (default), closed or all
    status: Option<String>,
    jurisdiction: Option<String>,
    /// 1 to 1000, default 100
    limit: Option<String>,
}

/// `GET /api/v1/incidents`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IncidentList {
    /// Visible to the caller, newest first.
    pub incidents: Vec<Incident>,
}

#[utoipa::path(get, path = "/api/v1/incidents", params(IncidentQuery),
    responses((status = 200, description = "incidents visible to the caller, newest first", body = IncidentList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_incidents(
    State(state): State<AppState>,
    p: Principal,
    Query(q): Query<IncidentQuery>,
) -> Result<Json<IncidentList>, ApiError> {
    require_read(&p)?;
    let status = q.status.as_deref().unwrap_or("open");
    let (open, closed) = match status {
        "open" => (true, false),
        "closed" => (false, true),
        "all" => (true, true),
        _ => return Err(ApiError::bad_field("status", "must be open, closed or all")),
    };
    let limit = match &q.limit {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => return Err(ApiError::bad_field("limit", "must be 1 to 1000")),
        },
    };
    if let Some(j) = &q.jurisdiction {
        if state.config.jurisdiction(j).is_none() {
            return Err(ApiError::bad_field("jurisdiction", format!("unknown jurisdiction {j}")));
        }
        if !p.0.covers(j) {
            return Err(ApiError::Forbidden(format!("jurisdiction {j} is not yours")));
        }
    }
    let mut incidents: Vec<Incident> = all_incidents(&state, closed)
        .await?
        .into_iter()
        .filter(|i| if i.status.is_open() { open } else { closed })
        .filter(|i| p.0.covers(&i.jurisdiction))
        .filter(|i| q.jurisdiction.as_ref().is_none_or(|j| *j == i.jurisdiction))
        .collect();
    incidents.sort_by_key(|i| std::cmp::Reverse(i.created_at));
    incidents.truncate(limit);
    if p.0.role == bus::model::Role::Analyst {
        incidents.iter_mut().for_each(crate::privacy::for_analyst);
    }
    Ok(Json(IncidentList { incidents }))
}

#[utoipa::path(get, path = "/api/v1/incidents/{id}",
    params(("id" = String, Path, description = "incident id")),
    responses((status = 200, description = "one incident with its timeline", body = Incident),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_incident(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Incident>, ApiError> {
    let mut incident = visible_incident(&state, &p, &id).await?;
    if p.0.role == bus::model::Role::Analyst {
        crate::privacy::for_analyst(&mut incident);
    }
    Ok(Json(incident))
}

/// An incident the caller may read.
async fn visible_incident(state: &AppState, p: &Principal, id: &str) -> Result<Incident, ApiError> {
    require_read(p)?;
    let incident = find_incident(state, id).await?;
    if !p.0.covers(&incident.jurisdiction) {
        return Err(ApiError::Forbidden(format!(
            "incident {id} is not in your jurisdictions"
        )));
    }
    Ok(incident)
}

/// The router's ranking of units for one incident.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CandidatesBody {
    pub incident: String,
    /// Automatic dispatch is held for the incident.
    pub hold: bool,
    /// The configured dispatch mode of the incident's priority.
    pub mode: Mode,
    /// Best first, as the router wrote them on the incident.
    pub candidates: Vec<Recommendation>,
}

/// A priority's dispatch mode (`dispatch.mode`): `auto`, the router sends
/// the units; `recommend`, it ranks them and an operator assigns.
// Serialises as `bus::config::DispatchMode` does, which has no schema: the
// exhaustive `From` keeps the two in step.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = DispatchMode)]
pub enum Mode {
    Auto,
    Recommend,
}

impl From<DispatchMode> for Mode {
    fn from(mode: DispatchMode) -> Self {
        match mode {
            DispatchMode::Auto => Mode::Auto,
            DispatchMode::Recommend => Mode::Recommend,
        }
    }
}

/// The units the router recommends for an incident. The api never ranks
/// units itself: it serves what the router last wrote on the incident.
#[utoipa::path(get, path = "/api/v1/incidents/{id}/candidates",
    params(("id" = String, Path, description = "incident id")),
    responses((status = 200, description = "the router's ranked candidates, empty when it is not waiting for an operator", body = CandidatesBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_candidates(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<CandidatesBody>, ApiError> {
    let incident = visible_incident(&state, &p, &id).await?;
    Ok(Json(CandidatesBody {
        mode: state.config.dispatch.mode(incident.priority).into(),
        incident: incident.id,
        hold: incident.hold,
        candidates: incident.candidates,
    }))
}

/// `GET /api/v1/units`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnitList {
    pub units: Vec<Unit>,
}

#[utoipa::path(get, path = "/api/v1/units",
    responses((status = 200, description = "units visible to the caller; a unit sees itself", body = UnitList),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn list_units(State(state): State<AppState>, p: Principal) -> Result<Json<UnitList>, ApiError> {
    let claims = &p.0;
    let units: Vec<Unit> = match claims.role {
        Role::Unit => state
            .store
            .units()
            .await?
            .into_iter()
            .filter(|u| claims.unit.as_deref() == Some(u.id.as_str()))
            .collect(),
        _ => {
            require_read(&p)?;
            state
                .store
                .units()
                .await?
                .into_iter()
                .filter(|u| claims.covers(&u.jurisdiction))
                .collect()
        }
    };
    Ok(Json(UnitList { units }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StatsQuery {
    /// e.g. 30m, 1h (default), 7d
    window: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/stats", params(StatsQuery),
    responses((status = 200, description = "1-3-5 KPIs over the window", body = StatsBody),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn get_stats(
    State(state): State<AppState>,
    p: Principal,
    Query(q): Query<StatsQuery>,
) -> Result<Json<StatsBody>, ApiError> {
    require_read(&p)?;
    let text = q.window.as_deref().unwrap_or("1h");
    let window = bus::auth::parse_ttl(text)
        .filter(|w| !w.is_zero() && w.as_secs() <= 31 * 86400)
        .ok_or_else(|| ApiError::bad_field("window", "must be like 30m, 1h or 7d, at most 31d"))?;
    let stats = stats::compute(&state, &p.0, window).await?;
    Ok(Json(stats))
}

#[utoipa::path(get, path = "/api/v1/coverage",
    responses((status = 200, description = "per grid cell: reachable within 60/180/300 s by an available unit",
        body = CoverageBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn get_coverage(State(state): State<AppState>, p: Principal) -> Result<Json<CoverageBody>, ApiError> {
    require_read(&p)?;
    let units = state.store.units().await?;
    let claims = p.0.clone();
    let cells = state.cells.clone();
    let road_factor = state.config.router.road_factor;
    let speeds = state.config.router.clone();
    let coverage = tokio::task::spawn_blocking(move || stats::coverage(&cells, &units, road_factor, &speeds, &claims))
        .await
        .map_err(|e| ApiError::Internal(format!("coverage task failed: {e}")))?;
    Ok(Json(coverage))
}

/// `GET /api/v1/info`: what this instance runs with.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InfoBody {
    /// The qzx version.
    pub version: &'static str,
    pub kafka: KafkaInfo,
    /// The Store's kind (`redis` or `memory`).
    pub store: &'static str,
    /// Topic names by suffix (`events`, `actions`, …), with the prefix.
    pub topics: BTreeMap<String, String>,
    pub instance: String,
    pub dispatch: DispatchInfo,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KafkaInfo {
    /// The bootstrap servers.
    pub brokers: String,
    /// The embedded broker, not a real Kafka.
    pub embedded: bool,
}

/// The `[dispatch]` settings the board needs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DispatchInfo {
    /// A unit not heard from for longer is not dispatched: the board marks
    /// it stale.
    pub stale_after_s: u64,
    /// By priority, `"1"` to `"4"`, every one of them.
    pub mode: BTreeMap<String, Mode>,
    /// Priorities whose incidents may take a unit off another task.
    pub preempt_for: Vec<u8>,
    /// Only tasks of this priority or lower (a higher number) are taken.
    pub preempt_from: u8,
}

#[utoipa::path(get, path = "/api/v1/info",
    responses((status = 200, description = "version, brokers, store kind, topics; `dispatch`: `stale_after_s` \
(a unit not heard from for longer is not dispatched: the board marks it stale), `mode` by priority \
(`auto` or `recommend`), `preempt_for`, `preempt_from`", body = InfoBody), (status = 401, body = ErrorBody)))]
pub async fn get_info(State(state): State<AppState>, _p: Principal) -> Json<InfoBody> {
    let topics = bus::topics::Topic::ALL
        .into_iter()
        .map(|t| (t.suffix().to_owned(), state.topics.name(t)))
        .collect();
    let dispatch = &state.config.dispatch;
    // Every priority, also those the configuration leaves at the default.
    let mode = (1..=4u8).map(|p| (p.to_string(), dispatch.mode(p).into())).collect();
    Json(InfoBody {
        version: env!("CARGO_PKG_VERSION"),
        kafka: KafkaInfo {
            brokers: state.brokers.bootstrap().to_owned(),
            embedded: state.brokers.is_embedded(),
        },
        store: state.store.kind(),
        topics,
        instance: state.instance.clone(),
        dispatch: DispatchInfo {
            stale_after_s: dispatch.stale_after_s,
            mode,
            preempt_for: dispatch.preempt_for.clone(),
            preempt_from: dispatch.preempt_from,
        },
    })
}

/// `GET /api/v1/jurisdictions`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JurisdictionList {
    pub jurisdictions: Vec<JurisdictionBody>,
}

/// A station area as the board draws it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JurisdictionBody {
    pub id: String,
    pub name: String,
    pub name_en: String,
    pub centre: LatLon,
    pub area_type: AreaKind,
    /// The polygon; empty for the fallback (the city command centre).
    pub area: Vec<LatLon>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

/// A jurisdiction's area type, which sets its 1-3-5 targets.
// Serialises as `bus::config::AreaType` does, which has no schema: the
// exhaustive `From` keeps the two in step.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = AreaType)]
pub enum AreaKind {
    Urban,
    Suburban,
    Rural,
}

impl From<AreaType> for AreaKind {
    fn from(area: AreaType) -> Self {
        match area {
            AreaType::Urban => AreaKind::Urban,
            AreaType::Suburban => AreaKind::Suburban,
            AreaType::Rural => AreaKind::Rural,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/jurisdictions",
    responses((status = 200, description = "id, name, name_en, centre and area of each jurisdiction",
        body = JurisdictionList), (status = 401, body = ErrorBody)))]
pub async fn get_jurisdictions(State(state): State<AppState>, _p: Principal) -> Json<JurisdictionList> {
    let point = |[lat, lon]: [f64; 2]| LatLon { lat, lon };
    let jurisdictions = state
        .config
        .city
        .jurisdictions
        .iter()
        .map(|j| JurisdictionBody {
            id: j.id.clone(),
            name: j.name.clone(),
            name_en: j.name_en.clone(),
            centre: point(j.centre),
            area_type: j.area_type.into(),
            area: j.area.iter().copied().map(point).collect(),
        })
        .collect();
    Json(JurisdictionList { jurisdictions })
}

/// Parses a command body: empty means `{}`; it must be a JSON object.
fn body_object(body: &Bytes) -> Result<serde_json::Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::BadRequest("the body must be a JSON object".into())),
        Err(e) => Err(ApiError::BadRequest(format!("the body is not JSON: {e}"))),
    }
}

async fn command(
    state: &AppState,
    p: &Principal,
    op: &str,
    id_field: Option<(&str, String)>,
    body: &Bytes,
    unit: Option<&str>,
) -> Result<Response, ApiError> {
    let mut map = body_object(body)?;
    map.insert("op".into(), Value::String(op.into()));
    if let Some((field, id)) = id_field {
        map.insert(field.into(), Value::String(id));
    }
    let command = crate::commands::parse(Value::Object(map))?;
    let published = crate::commands::execute(state, &p.0, command, unit).await?;
    let body = AcceptedBody {
        ok: true,
        action: published.action,
        event: published.event,
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// The reply to a command: published, not yet applied (the router's new
/// state arrives as pushes).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AcceptedBody {
    pub ok: bool,
    /// The action's id on the actions topic; for `create`, the event's.
    pub action: String,
    /// `create` only: the id of the `report` event on the events topic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

/// The ops of `POST /api/v1/incidents/{id}/{op}`.
const INCIDENT_OPS: [&str; 10] = [
    "assign", "divert", "escalate", "close", "update", "note", "reopen", "merge", "split", "hold",
];

#[utoipa::path(post, path = "/api/v1/incidents/{id}/{op}",
    params(("id" = String, Path, description = "incident id"),
        ("op" = String, Path, description = "assign, divert, escalate, close, update, note, reopen, merge, split or hold; \
the body holds the command's other fields (see asyncapi.yaml)")),
    responses((status = 202, description = "published to the actions topic", body = AcceptedBody),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn incident_command(
    State(state): State<AppState>,
    p: Principal,
    Path((id, op)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !INCIDENT_OPS.contains(&op.as_str()) {
        return Err(ApiError::NotFound(format!("no command {op} on incidents")));
    }
    command(&state, &p, &op, Some(("incident", id)), &body, None).await
}

/// `create`: an operator opens an incident for a walk-in or radio report.
/// Not an action: a `report` event on the events topic, the operator as
/// `attrs.reporter`; the router makes the incident as from any event.
#[utoipa::path(post, path = "/api/v1/incidents",
    request_body(content = Object, description = "`kind` (a configured category) and `text` required; optional \
`location` {lat, lon, address} in one of the caller's jurisdictions (without one the report goes to the fallback \
jurisdiction, unlocated) and `caller` {phone, name}"),
    responses((status = 202, description = "the report event is on the events topic", body = AcceptedBody),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn create_incident(State(state): State<AppState>, p: Principal, body: Bytes) -> Result<Response, ApiError> {
    command(&state, &p, "create", None, &body, None).await
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/ack",
    params(("id" = String, Path, description = "task id")),
    responses((status = 202, description = "published to the actions topic", body = AcceptedBody),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn task_ack(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    // An admin acks for the task's own unit.
    let unit = crate::commands::acting_unit_for_task(&state, &p.0, &id);
    command(&state, &p, "ack", Some(("task", id)), &body, unit.as_deref()).await
}

/// `refuse`: a unit refuses a task it has not reached, with a `reason`;
/// the router cancels it and sends another unit.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/refuse",
    params(("id" = String, Path, description = "task id")),
    request_body(content = Object, description = "`reason` (required)"),
    responses((status = 202, description = "published to the actions topic", body = AcceptedBody),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn task_refuse(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    // An admin refuses for the task's own unit.
    let unit = crate::commands::acting_unit_for_task(&state, &p.0, &id);
    command(&state, &p, "refuse", Some(("task", id)), &body, unit.as_deref()).await
}

/// `note` about a task: from its unit, or from an operator (the note goes
/// on the task's incident).
#[utoipa::path(post, path = "/api/v1/tasks/{id}/note",
    params(("id" = String, Path, description = "task id")),
    request_body(content = Object, description = "`text` (required)"),
    responses((status = 202, description = "published to the actions topic", body = AcceptedBody),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn task_note(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    command(&state, &p, "note", Some(("task", id)), &body, None).await
}

#[utoipa::path(post, path = "/api/v1/units/{id}/status",
    params(("id" = String, Path, description = "unit id")),
    responses((status = 202, description = "published to the actions topic", body = AcceptedBody),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn unit_status(
    State(state): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    command(&state, &p, "status", None, &body, Some(&id)).await
}
