//! The OpenAPI document of the REST api, generated from the handlers'
//! annotations (utoipa) and served at `/api/v1/openapi.json` without a
//! token. Never hand-written: a route without an annotation is missing
//! here, which the tests check.

use axum::Json;
use utoipa::OpenApi;

use crate::error::ErrorBody;
use crate::rest;

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
    components(schemas(ErrorBody, rest::AcceptedBody, rest::CandidatesBody)),
    modifiers(&BearerAuth),
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

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
