//! Authentication and authorization: who is calling, and may they do what this request does.
//!
//! [`crate::dispatch`] calls [`Auth::authorize`] once per request, after the endpoint is parsed
//! and before any handler runs, with the [`Need`] computed from the endpoint and method by
//! [`need`]. That is the one place access is decided; handlers only ask the resulting
//! [`Caller`] about a second repository (a mount's `from`) and filter the catalog.
//!
//! - `htpasswd` (+ berth's own [`policy`]): Basic credentials checked against bcrypt hashes;
//!   the policy says which user may do what on which repository (without a policy every
//!   authenticated user may do everything, as in Distribution).
//! - `token` ([`token`]): bearer JWTs from an external token server; their `access` claim
//!   says what the request may do. As in Distribution, writes need `pull` and `push`, and a
//!   token without the access a request needs gets a 401 `insufficient_scope` challenge
//!   naming the scope, so clients fetch a better token.
//! - `tokenserver` (berth's own, with htpasswd): [`Auth::token_endpoint`] serves `/token`,
//!   issuing tokens whose `access` is the policy's answer for the scopes asked; challenges
//!   then point there, and those tokens are checked with the policy's semantics (push
//!   alone needs no pull). Basic credentials keep working.
//! - Failed passwords are counted before they are checked, per client address and user name
//!   and per address ([`limiter`], applied in `basic.rs`); over the limit, the client's
//!   guesses for that name are refused with 429 `TOOMANYREQUESTS` and a `Retry-After` of the
//!   time left.
//! - Unauthenticated callers get 401 `UNAUTHORIZED` with a `WWW-Authenticate` challenge;
//!   htpasswd users without the right get 403 `DENIED`, token holders 401 with
//!   `error="insufficient_scope"` (what token clients expect); `refusals.rs` shapes them all.
//!
//! This file decides; `basic.rs` checks passwords, `token.rs` verifies and issues tokens,
//! `token_server.rs` answers `/token`, `policy.rs` holds berth's rules.

mod basic;
pub mod htpasswd;
pub mod limiter;
pub mod policy;
mod refusals;
pub mod token;
mod token_server;

use std::net::IpAddr;
use std::sync::Arc;

use axum::response::Response;
use http::{HeaderMap, HeaderValue, Method, header};

use crate::endpoint::Endpoint;
use basic::Refusal;
use refusals::{denied, too_many};

pub use htpasswd::Htpasswd;
pub use limiter::{FAILURE_WINDOW, MAX_FAILURES, MAX_FAILURES_PER_ADDRESS};
pub use policy::{Policy, PolicyConfig, RuleConfig};
pub use token::{
    Grant, ResourceActions, TokenIssuer, TokenOptions, TokenServerOptions, TokenVerifier,
};

/// An action on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Read manifests, blobs, tags, referrers.
    Pull,
    /// Upload blobs, put manifests.
    Push,
    /// Delete manifests, tags, blobs.
    Delete,
}

impl Action {
    /// The token-spec word.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// Parses a token-spec word.
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need<'a> {
    /// `/v2/`: any authenticated caller (so `docker login` can test credentials).
    Login,
    /// `/v2/_catalog`: an authenticated caller; the list is filtered to what they may pull.
    Catalog,
    /// These actions on this repository.
    Repository {
        /// The raw repository name from the path.
        name: &'a str,
        /// Every action needed.
        actions: &'static [Action],
    },
}

/// The access a request to `endpoint` with `method` needs. Every endpoint and method has an
/// answer, including methods the handler will refuse with 405: nothing is open by omission.
pub fn need<'a>(endpoint: &Endpoint<'a>, method: &Method) -> Need<'a> {
    const PULL: &[Action] = &[Action::Pull];
    const PUSH: &[Action] = &[Action::Push];
    const DELETE: &[Action] = &[Action::Delete];
    let read_write_delete = |name| Need::Repository {
        name,
        actions: match *method {
            Method::GET | Method::HEAD => PULL,
            Method::DELETE => DELETE,
            _ => PUSH,
        },
    };
    match *endpoint {
        Endpoint::Base => Need::Login,
        Endpoint::Catalog => Need::Catalog,
        Endpoint::Tags { name } | Endpoint::Referrers { name, .. } => Need::Repository {
            name,
            actions: match *method {
                Method::GET | Method::HEAD => PULL,
                // Not served (405), but never answered to someone without push.
                _ => PUSH,
            },
        },
        Endpoint::Manifest { name, .. } | Endpoint::Blob { name, .. } => read_write_delete(name),
        // Every method on upload sessions, including GET (status) and DELETE (cancel).
        Endpoint::UploadStart { name } | Endpoint::Upload { name, .. } => Need::Repository {
            name,
            actions: PUSH,
        },
    }
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No credentials.
    Anonymous,
    /// An htpasswd user.
    User(String),
    /// A verified bearer token.
    Token(Grant),
}

impl Caller {
    /// Who the caller is, for display: the htpasswd user or the token's subject.
    pub fn name(&self) -> Option<&str> {
        match self {
            Caller::Anonymous => None,
            Caller::User(u) => Some(u),
            Caller::Token(g) => Some(g.subject.as_str()).filter(|s| !s.is_empty()),
        }
    }

    fn user(&self) -> Option<&str> {
        match self {
            Caller::Anonymous | Caller::Token(_) => None,
            Caller::User(u) => Some(u),
        }
    }
}

/// The configured access control.
pub struct Auth {
    method: Method_,
    policy: Option<Policy>,
    /// berth's own token server (`auth.tokenserver`), with htpasswd only.
    issuer: Option<TokenIssuer>,
    limiter: limiter::Limiter,
    checks: limiter::SharedChecks,
}

enum Method_ {
    Htpasswd { realm: String, file: Arc<Htpasswd> },
    Token(TokenVerifier),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.method {
            Method_::Htpasswd { .. } => "htpasswd",
            Method_::Token(_) => "token",
        };
        f.debug_struct("Auth")
            .field("kind", &kind)
            .field("policy", &self.policy.is_some())
            .finish()
    }
}

impl Auth {
    /// htpasswd authentication, with an optional policy (else every user may do everything).
    pub fn htpasswd(realm: String, file: Htpasswd, policy: Option<Policy>) -> Auth {
        Auth {
            method: Method_::Htpasswd {
                realm,
                file: Arc::new(file),
            },
            policy,
            issuer: None,
            limiter: limiter::Limiter::default(),
            checks: limiter::SharedChecks::default(),
        }
    }

    /// Adds berth's own token server: challenges become Bearer ones pointing at `/token`,
    /// which issues tokens to htpasswd users with the access the policy gives them; Basic
    /// credentials keep working too.
    pub fn with_token_server(mut self, issuer: TokenIssuer) -> Auth {
        self.issuer = Some(issuer);
        self
    }

    /// Token authentication: bearer JWTs verified by `verifier`.
    pub fn token(verifier: TokenVerifier) -> Auth {
        Auth {
            method: Method_::Token(verifier),
            policy: None,
            issuer: None,
            limiter: limiter::Limiter::default(),
            checks: limiter::SharedChecks::default(),
        }
    }

    /// Whether `caller` may do `action` on `repository`.
    pub fn allows(&self, caller: &Caller, repository: &str, action: Action) -> bool {
        match (&self.policy, caller) {
            (_, Caller::Token(grant)) => grant.allows(repository, action),
            (Some(p), c) => p.allows(c.user(), repository, action),
            (None, Caller::Anonymous) => false,
            (None, Caller::User(_)) => true,
        }
    }

    /// Whether `caller`, allowed to list the catalog, sees `repository` in it: a token with
    /// `registry:catalog:*` sees everything (as in Distribution), a user what they may pull.
    pub fn may_list(&self, caller: &Caller, repository: &str) -> bool {
        match caller {
            Caller::Token(g) if g.issued_here => {
                let user = if g.subject.is_empty() {
                    Caller::Anonymous
                } else {
                    Caller::User(g.subject.clone())
                };
                self.allows(&user, repository, Action::Pull)
            }
            Caller::Token(_) => true,
            c => self.allows(c, repository, Action::Pull),
        }
    }

    /// The actions a token must grant for `actions`: as in Distribution, a write needs pull
    /// too.
    fn token_actions(actions: &[Action]) -> Vec<Action> {
        let mut all = actions.to_vec();
        if all.contains(&Action::Push) && !all.contains(&Action::Pull) {
            all.insert(0, Action::Pull);
        }
        all
    }

    /// Authenticates the request and checks it may do what it `need`s: the caller, or the
    /// refusal to send (401, 403 or 429).
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        need: &Need<'_>,
    ) -> Result<Caller, Response> {
        let caller = self.authenticate(headers, peer, need).await?;
        let allowed = self.permits(&caller, need);
        match caller {
            _ if allowed => Ok(caller),
            Caller::Anonymous => Err(self.challenge(need, "authentication required", None)),
            Caller::Token(grant) => {
                tracing::debug!(subject = ?grant.subject, "token lacks the scope");
                Err(self.challenge(
                    need,
                    "the token does not grant this access",
                    Some("insufficient_scope"),
                ))
            }
            Caller::User(_) => Err(denied(need)),
        }
    }

    /// Whether an authenticated `caller` has what `need` asks for: the judgement
    /// [`Auth::authorize`] makes, without refusing. The web UI asks it which buttons to show.
    pub fn permits(&self, caller: &Caller, need: &Need<'_>) -> bool {
        match (need, caller) {
            (Need::Login, c) => !matches!(c, Caller::Anonymous),
            (Need::Catalog, Caller::Token(grant)) => grant.allows_catalog(),
            (Need::Catalog, c) => !matches!(c, Caller::Anonymous),
            // berth's own tokens carry exactly what the policy gave: its semantics apply.
            (Need::Repository { name, actions }, Caller::Token(grant)) if grant.issued_here => {
                actions.iter().all(|a| grant.allows(name, *a))
            }
            (Need::Repository { name, actions }, Caller::Token(grant)) => {
                Self::token_actions(actions)
                    .iter()
                    .all(|a| grant.allows(name, *a))
            }
            (Need::Repository { name, actions }, c) => {
                actions.iter().all(|a| self.allows(c, name, *a))
            }
        }
    }

    /// The realm of a Basic challenge, when passwords are checked here (htpasswd, with or
    /// without the token server): browsers can answer only a Basic challenge, so the web UI
    /// sends one. `None` with an external token server, which berth cannot log anyone into.
    pub fn basic_realm(&self) -> Option<&str> {
        match &self.method {
            Method_::Htpasswd { realm, .. } => Some(realm),
            Method_::Token(_) => None,
        }
    }

    async fn authenticate(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        need: &Need<'_>,
    ) -> Result<Caller, Response> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(Caller::Anonymous);
        };
        match &self.method {
            Method_::Htpasswd { file, .. } => {
                if let (Some(issuer), Some(token)) = (&self.issuer, bearer(value)) {
                    return match issuer.verify(token) {
                        Ok(grant) => Ok(Caller::Token(grant)),
                        Err(e) => {
                            tracing::info!(peer = ?peer, error = %e, "token refused");
                            Err(self.challenge(need, "invalid token", Some("invalid_token")))
                        }
                    };
                }
                self.basic_login(file, value, peer)
                    .await
                    .map_err(|refusal| match refusal {
                        Refusal::TooMany(left) => too_many(left),
                        Refusal::Wrong(message) => self.challenge(need, message, None),
                    })
            }
            Method_::Token(verifier) => {
                let result = match bearer(value) {
                    Some(t) => verifier.verify(t),
                    None => Err("expected a Bearer token".to_owned()),
                };
                match result {
                    Ok(grant) => Ok(Caller::Token(grant)),
                    // Not counted as a failed login: a signed token cannot be guessed, and
                    // expired tokens are routine for clients behind one address.
                    Err(e) => {
                        tracing::info!(peer = ?peer, error = %e, "token refused");
                        Err(self.challenge(need, "invalid token", Some("invalid_token")))
                    }
                }
            }
        }
    }
}

/// The token of a `Bearer` authorization header.
fn bearer(value: &HeaderValue) -> Option<&str> {
    value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_and_method_needs_something() {
        let eps = [
            Endpoint::Tags { name: "a" },
            Endpoint::Manifest {
                name: "a",
                reference: "t",
            },
            Endpoint::Blob {
                name: "a",
                digest: "d",
            },
            Endpoint::UploadStart { name: "a" },
            Endpoint::Upload { name: "a", id: "u" },
            Endpoint::Referrers {
                name: "a",
                digest: "d",
            },
        ];
        for ep in &eps {
            for m in [
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ] {
                match need(ep, &m) {
                    Need::Repository { name, actions } => {
                        assert_eq!(name, "a");
                        assert!(!actions.is_empty());
                    }
                    other => panic!("{ep:?} {m}: {other:?}"),
                }
            }
        }
        assert_eq!(need(&Endpoint::Base, &Method::GET), Need::Login);
        assert_eq!(need(&Endpoint::Catalog, &Method::GET), Need::Catalog);
    }
}
