//! Who is calling and what they may do: the bearer token (header, or
//! `?token=` for WebSockets and pages) checked with `bus::auth`, and the
//! role rules of CONTRACT.md in one place, so REST, WebSocket subscribe,
//! push filtering and commands all decide the same way.
//!
//! The token is never logged, and a request without a valid token never
//! reaches a handler (nor a WebSocket upgrade).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use bus::auth::Claims;
use bus::model::Role;

use crate::AppState;
use crate::channel::ChannelName;
use crate::error::ApiError;

/// The verified claims of the caller.
#[derive(Debug, Clone)]
pub struct Principal(pub Arc<Claims>);

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).or_else(|| query_token(parts.uri.query()));
        let Some(token) = token else {
            return Err(ApiError::Unauthorized("a bearer token is required".into()));
        };
        state
            .keys
            .verify(&token)
            .map(|claims| Principal(Arc::new(claims)))
            .map_err(|e| ApiError::Unauthorized(format!("the token is not valid: {e}")))
    }
}

fn bearer(parts: &Parts) -> Option<String> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

fn query_token(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty())
}

/// May `claims` subscribe to `channel`?
pub fn may_subscribe(claims: &Claims, channel: &ChannelName) -> bool {
    match channel {
        ChannelName::Board => matches!(claims.role, Role::Operator | Role::Admin),
        ChannelName::Unit(id) => {
            claims.role == Role::Admin || (claims.role == Role::Unit && claims.unit.as_deref() == Some(id.as_str()))
        }
        ChannelName::Topic(_) => matches!(claims.role, Role::Analyst | Role::Admin),
    }
}

/// Roles that may read incidents, units, stats and coverage over REST.
pub fn may_read(claims: &Claims) -> bool {
    matches!(claims.role, Role::Operator | Role::Analyst | Role::Admin)
}

/// Roles that may command incidents (assign, divert, escalate, close,
/// update, note, reopen, merge, split, hold) and create them.
pub fn may_command_incidents(claims: &Claims) -> bool {
    matches!(claims.role, Role::Operator | Role::Admin)
}

/// May `claims` act for unit `unit` (ack, status, position, refuse, note)?
pub fn may_act_for_unit(claims: &Claims, unit: &str) -> bool {
    claims.role == Role::Admin || (claims.role == Role::Unit && claims.unit.as_deref() == Some(unit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bus::topics::Topic;

    fn claims(role: Role, unit: Option<&str>) -> Claims {
        Claims {
            sub: "x".into(),
            role,
            jurisdictions: vec!["quancheng".into()],
            unit: unit.map(str::to_owned),
            exp: i64::MAX,
        }
    }

    #[test]
    fn a_unit_subscribes_only_to_its_own_channel() {
        let unit = claims(Role::Unit, Some("u1"));
        assert!(may_subscribe(&unit, &ChannelName::Unit("u1".into())));
        assert!(!may_subscribe(&unit, &ChannelName::Unit("u2".into())));
        assert!(!may_subscribe(&unit, &ChannelName::Board));
        assert!(!may_subscribe(&unit, &ChannelName::Topic(Topic::Tasks)));
    }

    #[test]
    fn the_query_token_is_found_among_other_parameters() {
        assert_eq!(query_token(Some("lang=zh&token=abc")), Some("abc".into()));
        assert_eq!(query_token(Some("token=")), None);
        assert_eq!(query_token(None), None);
    }
}
