//! berth's own token server (`auth.tokenserver`): `GET /token` issues htpasswd users the
//! access berth's policy gives them, as a JWT the bearer-token path then checks.

use axum::response::Response;
use berth_oci::ErrorCode;
use http::{HeaderMap, HeaderValue, header};
use std::net::IpAddr;

use super::basic::Refusal;
use super::refusals::{quote, set_challenge, too_many};
use super::{Action, Auth, Caller, Method_, ResourceActions};
use crate::error;

impl Auth {
    /// berth's own token endpoint, `GET /token?service=...&scope=...` (Docker token spec):
    /// `None` when no token server is configured. Basic credentials are optional (anonymous
    /// callers get what the anonymous rules give); each requested scope is cut down to what
    /// the policy allows the caller, and `registry:catalog:*` is given to authenticated
    /// users (the catalog is still filtered by the policy).
    pub async fn token_endpoint(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        query: &str,
    ) -> Option<Response> {
        let issuer = self.issuer.as_ref()?;
        let Method_::Htpasswd { file, realm } = &self.method else {
            return None;
        };
        let caller = match headers.get(header::AUTHORIZATION) {
            None => Caller::Anonymous,
            Some(value) => match self.basic_login(file, value, peer).await {
                Ok(c) => c,
                Err(Refusal::TooMany(left)) => return Some(too_many(left)),
                Err(Refusal::Wrong(message)) => {
                    let mut r = error::body(ErrorCode::Unauthorized, message, None);
                    set_challenge(&mut r, format!("Basic realm={}", quote(realm)));
                    return Some(r);
                }
            },
        };
        let mut access: Vec<ResourceActions> = Vec::new();
        let scopes = form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.into_owned())
            .collect::<Vec<_>>();
        for item in scopes.iter().flat_map(|s| s.split(' ')) {
            let Some((kind, rest)) = item.split_once(':') else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            let granted: Vec<String> = match kind {
                "repository" => {
                    let mut wanted: Vec<Action> = Vec::new();
                    for a in actions.split(',') {
                        match a {
                            "*" => wanted.extend([Action::Pull, Action::Push, Action::Delete]),
                            a => wanted.extend(Action::parse(a)),
                        }
                    }
                    wanted.sort();
                    wanted.dedup();
                    wanted
                        .into_iter()
                        .filter(|a| self.allows(&caller, name, *a))
                        .map(|a| a.as_str().to_owned())
                        .collect()
                }
                "registry" if name == "catalog" && !matches!(caller, Caller::Anonymous) => {
                    vec!["*".to_owned()]
                }
                _ => Vec::new(),
            };
            if !granted.is_empty() {
                access.push(ResourceActions {
                    kind: kind.to_owned(),
                    name: name.to_owned(),
                    actions: granted,
                });
            }
        }
        let subject = caller.user().unwrap_or_default().to_owned();
        let token = match issuer.issue(&subject, access) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!("{e}");
                return Some(error::body(
                    ErrorCode::Unknown,
                    ErrorCode::Unknown.message(),
                    None,
                ));
            }
        };
        let body = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": issuer.expires_in(),
        })
        .to_string();
        let mut r = Response::new(axum::body::Body::from(body));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Some(r)
    }
}
