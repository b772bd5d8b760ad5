//! The OpenAPI document of the REST api, generated from the handlers'
//! annotations (utoipa) and served at `/api/v1/openapi.json` without a
//! token. Never hand-written: a route without an annotation is missing
//! here, which the tests check. Every reply names its body's schema, and
//! `tests/schema.rs` checks what the api serves against the document.

use axum::Json;
use bus::model;
use utoipa::OpenApi;

use crate::error::ErrorBody;
use crate::{rest, stats};

#[derive(OpenApi)]
#[openapi(
    info(title = "qzx dispatch-ui-api", description = "REST api of qzx; the WebSocket at /ws is described in asyncapi.yaml"),
    paths(
        rest::list_incidents,
        rest::get_incident,
        rest::get_candidates,
        rest::incident_command,
        rest::create_incident,
        rest::task_ack,
        rest::task_refuse,
        rest::task_note,
        rest::list_units,
        rest::unit_status,
        rest::get_stats,
        rest::get_coverage,
        rest::get_info,
        rest::get_jurisdictions,
    ),
    components(schemas(
        ErrorBody,
        rest::AcceptedBody,
        rest::CandidatesBody,
        rest::IncidentList,
        rest::UnitList,
        rest::InfoBody,
        rest::JurisdictionList,
        stats::StatsBody,
        stats::CoverageBody,
        // Not REST replies: what the WebSocket pushes (`task`,
        // `escalation`) and the commands clients send, REST bodies being
        // a command without its `op` and id (asyncapi.yaml).
        model::Task,
        model::Escalation,
        model::Command,
    )),
    modifiers(&BearerAuth, &CommandsDenyUnknownFields),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// `Command` is `#[serde(deny_unknown_fields)]`: a command with a field its
/// `op` does not have is refused. utoipa says so for structs but not for the
/// variants of an internally tagged enum, so each variant is closed here.
struct CommandsDenyUnknownFields;

impl utoipa::Modify for CommandsDenyUnknownFields {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::RefOr;
        use utoipa::openapi::schema::{AdditionalProperties, Schema};
        let command = openapi.components.as_mut().and_then(|c| c.schemas.get_mut("Command"));
        let Some(RefOr::T(Schema::OneOf(one_of))) = command else {
            return;
        };
        for variant in &mut one_of.items {
            if let RefOr::T(Schema::Object(object)) = variant {
                object.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
            }
        }
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
