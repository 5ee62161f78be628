//! How access is refused: the `WWW-Authenticate` challenge each auth method sends, the
//! 403 and 429 bodies, and Distribution's error detail naming the access that was needed.

use std::time::Duration;

use axum::response::Response;
use berth_oci::ErrorCode;
use http::{HeaderValue, header};

use super::{Auth, Method_, Need, limiter, token};
use crate::error;

impl Auth {
    /// A 401 with the challenge for this auth method (and, for tokens, the scope needed).
    pub(super) fn challenge(
        &self,
        need: &Need<'_>,
        message: &str,
        token_error: Option<&str>,
    ) -> Response {
        let mut r = error::body(ErrorCode::Unauthorized, message, Some(detail(need)));
        let (realm, service) = match (&self.method, &self.issuer) {
            (Method_::Htpasswd { realm, .. }, None) => {
                set_challenge(&mut r, format!("Basic realm={}", quote(realm)));
                return r;
            }
            (Method_::Htpasswd { .. }, Some(issuer)) => (&issuer.realm, token::OWN_ISSUER),
            (Method_::Token(v), _) => (&v.realm, v.service.as_str()),
        };
        let mut value = format!("Bearer realm={},service={}", quote(realm), quote(service));
        let scope = match need {
            Need::Login => None,
            Need::Catalog => Some("registry:catalog:*".to_owned()),
            Need::Repository { name, actions } => {
                let words: Vec<&str> = Self::token_actions(actions)
                    .iter()
                    .map(|a| a.as_str())
                    .collect();
                Some(format!("repository:{name}:{}", words.join(",")))
            }
        };
        if let Some(scope) = scope {
            value.push_str(&format!(",scope={}", quote(&scope)));
        }
        if let Some(e) = token_error {
            value.push_str(&format!(",error={}", quote(e)));
        }
        set_challenge(&mut r, value);
        r
    }
}

pub(super) fn set_challenge(r: &mut Response, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
}

pub(super) fn denied(need: &Need<'_>) -> Response {
    error::body(
        ErrorCode::Denied,
        ErrorCode::Denied.message(),
        Some(detail(need)),
    )
}

pub(super) fn too_many(left: Duration) -> Response {
    let mut r = error::body(
        ErrorCode::TooManyRequests,
        "too many failed authentication attempts; try again later",
        None,
    );
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(limiter::retry_after_secs(left)),
    );
    r
}

/// Distribution's error detail: the access that was required.
fn detail(need: &Need<'_>) -> serde_json::Value {
    match need {
        Need::Login => serde_json::json!(null),
        Need::Catalog => serde_json::json!([{"Type": "registry", "Name": "catalog", "Action": "*"}]),
        Need::Repository { name, actions } => serde_json::Value::Array(
            actions
                .iter()
                .map(|a| serde_json::json!({"Type": "repository", "Name": name, "Action": a.as_str()}))
                .collect(),
        ),
    }
}

/// A quoted-string for a challenge parameter.
pub(super) fn quote(s: &str) -> String {
    let escaped: String = s
        .chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parameters_are_quoted() {
        assert_eq!(quote("a\"b"), "\"a\\\"b\"");
    }
}
