//! Tokens: HS256 JWTs with the claims of the contract (`sub`, `role`,
//! `jurisdictions`, `unit`, `exp`), minted by `qzx token` and checked by
//! ingest and the api. Only HS256 is accepted; a token without `exp`,
//! expired, signed with another key or with `alg: none` is refused. What a
//! role may do is decided by the services, not here.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::model::Role;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    /// Jurisdiction ids, or `["*"]` for all.
    #[serde(default)]
    pub jurisdictions: Vec<String>,
    /// The unit id, for role `unit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

impl Claims {
    /// True when the claims cover jurisdiction `id`.
    pub fn covers(&self, id: &str) -> bool {
        self.role == Role::Admin || self.jurisdictions.iter().any(|j| j == "*" || j == id)
    }

    pub fn all_jurisdictions(&self) -> bool {
        self.role == Role::Admin || self.jurisdictions.iter().any(|j| j == "*")
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AuthError {
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("a unit token needs a unit id")]
    UnitMissing,
}

/// Signs and checks tokens with one secret.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(<secret>)")
    }
}

impl TokenKeys {
    pub fn new(secret: &str) -> TokenKeys {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// A token for `role` valid for `ttl`.
    pub fn mint(
        &self,
        sub: &str,
        role: Role,
        jurisdictions: &[String],
        unit: Option<&str>,
        ttl: Duration,
    ) -> Result<String, AuthError> {
        if role == Role::Unit && unit.is_none() {
            return Err(AuthError::UnitMissing);
        }
        let claims = Claims {
            sub: sub.to_owned(),
            role,
            jurisdictions: jurisdictions.to_vec(),
            unit: unit.map(str::to_owned),
            exp: chrono::Utc::now().timestamp() + ttl.as_secs() as i64,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// Checks signature, algorithm and expiry; returns the claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?
            .claims;
        if claims.role == Role::Unit && claims.unit.is_none() {
            return Err(AuthError::UnitMissing);
        }
        Ok(claims)
    }
}

/// Parses `30s`, `15m`, `8h`, `7d` (the `--ttl` of `qzx token`).
pub fn parse_ttl(text: &str) -> Option<Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = number.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// Shortest HS256 secret a service accepts: RFC 7518 asks for a key as
/// long as the hash (32 bytes).
pub const MIN_SECRET_BYTES: usize = 32;

/// Why `secret` must not sign a police system's tokens, if it must not:
/// too short to resist guessing, or a placeholder left from a manifest
/// (`REPLACE-ME…` in `deploy/k8s/config.yaml`).
pub fn weak_secret(secret: &str) -> Option<String> {
    if secret.to_ascii_uppercase().contains("REPLACE-ME") || secret.to_ascii_lowercase().contains("changeme") {
        return Some("is a placeholder from an example manifest: generate a random one".to_owned());
    }
    if secret.len() < MIN_SECRET_BYTES {
        return Some(format!(
            "is {} bytes; use at least {MIN_SECRET_BYTES} random bytes",
            secret.len()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn keys() -> TokenKeys {
        TokenKeys::new("test-secret")
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn a_minted_token_verifies() {
        let t = keys()
            .mint(
                "op-1",
                Role::Operator,
                &["quancheng".into()],
                None,
                Duration::from_secs(60),
            )
            .unwrap();
        let c = keys().verify(&t).unwrap();
        assert_eq!(c.sub, "op-1");
        assert_eq!(c.role, Role::Operator);
        assert!(c.covers("quancheng"));
        assert!(!c.covers("daminghu"));
    }

    #[test]
    fn wrong_key_expired_none_and_missing_exp_are_refused() {
        let t = keys()
            .mint("a", Role::Admin, &[], None, Duration::from_secs(60))
            .unwrap();
        assert!(TokenKeys::new("other").verify(&t).is_err());

        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "a", "role": "admin", "jurisdictions": ["*"], "exp": chrono::Utc::now().timestamp() - 5}),
            &EncodingKey::from_secret(b"test-secret"),
        )
        .unwrap();
        assert!(keys().verify(&expired).is_err());

        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "a", "role": "admin", "jurisdictions": ["*"]}),
            &EncodingKey::from_secret(b"test-secret"),
        )
        .unwrap();
        assert!(keys().verify(&no_exp).is_err());

        let exp = chrono::Utc::now().timestamp() + 60;
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(
                r#"{{"sub":"a","role":"admin","jurisdictions":["*"],"exp":{exp}}}"#
            ))
        );
        assert!(keys().verify(&none).is_err());

        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"sub": "a", "role": "admin", "jurisdictions": ["*"], "exp": exp}),
            &EncodingKey::from_secret(b"test-secret"),
        )
        .unwrap();
        assert!(keys().verify(&hs512).is_err());
    }

    #[test]
    fn unit_tokens_need_a_unit() {
        assert_eq!(
            keys().mint("u", Role::Unit, &[], None, Duration::from_secs(60)),
            Err(AuthError::UnitMissing)
        );
    }

    #[test]
    fn wildcard_and_admin_cover_everything() {
        let t = keys()
            .mint("an", Role::Analyst, &["*".into()], None, Duration::from_secs(60))
            .unwrap();
        assert!(keys().verify(&t).unwrap().covers("anything"));
        let t = keys()
            .mint("ad", Role::Admin, &[], None, Duration::from_secs(60))
            .unwrap();
        assert!(keys().verify(&t).unwrap().all_jurisdictions());
    }

    #[test]
    fn ttls_parse() {
        assert_eq!(parse_ttl("8h"), Some(Duration::from_secs(28800)));
        assert_eq!(parse_ttl("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_ttl("2d"), Some(Duration::from_secs(172800)));
        assert_eq!(parse_ttl("h"), None);
        assert_eq!(parse_ttl("5w"), None);
    }

    #[test]
    fn short_and_placeholder_secrets_are_weak() {
        assert!(weak_secret("REPLACE-ME-with-48-random-bytes-base64").is_some());
        assert!(weak_secret("s3cret").unwrap().contains("6 bytes"));
        assert!(weak_secret(&"x".repeat(32)).is_none());
    }
}
