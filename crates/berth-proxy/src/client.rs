//! The client side of the Distribution API against one upstream: GET and HEAD with the
//! upstream's authentication, and a time limit on every wait.
//!
//! Authentication is learned from the upstream's first 401, as Docker's client does: `Basic`
//! sends the configured credentials; `Bearer realm=…,service=…,scope=…` fetches a token from
//! the realm (with the credentials as Basic if there are any, anonymously otherwise, which is
//! what Docker Hub gives everyone) and keeps it per scope until shortly before it expires.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use berth_client::Connector;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;

/// Every manifest format berth stores, offered to the upstream so that it answers with the
/// manifest as pushed (an index stays an index).
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.oci.artifact.manifest.v1+json";

/// Largest token answer and error body read.
const SMALL_BODY_LIMIT: usize = 1024 * 1024;

/// Why a request to the upstream did not give an answer to use.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The upstream says it does not have it (404).
    NotFound,
    /// Anything else: unreachable, too slow, refused (401/403 after authenticating, 429, 5xx),
    /// or an answer that breaks the protocol. The cache answers from what it has.
    Failed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NotFound => f.write_str("not found upstream"),
            Failure::Failed(why) => f.write_str(why),
        }
    }
}

/// What the upstream asked for in its last 401.
#[derive(Debug, Clone)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Default)]
struct AuthState {
    challenge: Option<Challenge>,
    /// Bearer tokens by scope, with when to stop using them.
    tokens: HashMap<String, (String, Instant)>,
}

/// One upstream registry.
pub(crate) struct UpstreamClient {
    /// `scheme://host[:port]`, no trailing slash.
    base: String,
    credentials: Option<(String, String)>,
    timeout: Duration,
    client: Client<Connector, Empty<Bytes>>,
    auth: Mutex<AuthState>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl UpstreamClient {
    pub(crate) fn new(
        base: &str,
        credentials: Option<(String, String)>,
        timeout: Duration,
    ) -> Result<Arc<UpstreamClient>, String> {
        let client = berth_client::build(berth_client::Options {
            system_roots: true,
            serving: "https upstreams",
            connect_timeout: Some(timeout),
        })?;
        Ok(Arc::new(UpstreamClient {
            base: base.trim_end_matches('/').to_owned(),
            credentials,
            timeout,
            client,
            auth: Mutex::new(AuthState::default()),
        }))
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `method` to `path` (starting with `/v2/`) for repository `remote`, with the
    /// upstream's authentication; answers with the response (whatever its status, except
    /// that a 401 is answered once by authenticating and retrying).
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        remote: &str,
        accept: Option<&str>,
    ) -> Result<Response<Incoming>, Failure> {
        let scope = format!("repository:{remote}:pull");
        let url: Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|e| Failure::Failed(format!("bad upstream URL: {e}")))?;
        let mut authenticated = false;
        loop {
            let authorization = self.authorization(&scope, authenticated).await?;
            let mut request = Request::builder()
                .method(method.clone())
                .uri(url.clone())
                .body(Empty::new())
                .map_err(|e| Failure::Failed(e.to_string()))?;
            let h = request.headers_mut();
            h.insert(
                header::USER_AGENT,
                HeaderValue::from_static(concat!("berth/", env!("CARGO_PKG_VERSION"))),
            );
            if let Some(value) = accept.and_then(|a| HeaderValue::from_str(a).ok()) {
                h.insert(header::ACCEPT, value);
            }
            if let Some(value) = authorization {
                h.insert(header::AUTHORIZATION, value);
            }
            let response =
                match tokio::time::timeout(self.timeout, self.client.request(request)).await {
                    Err(_) => {
                        return Err(Failure::Failed(format!(
                            "no answer from {} within {:?}",
                            self.base, self.timeout
                        )));
                    }
                    Ok(Err(e)) => {
                        return Err(Failure::Failed(format!(
                            "{} unreachable: {}",
                            self.base,
                            error_chain(&e)
                        )));
                    }
                    Ok(Ok(r)) => r,
                };
            if response.status() == StatusCode::UNAUTHORIZED && !authenticated {
                let challenge = response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge);
                let Some(challenge) = challenge else {
                    return Err(Failure::Failed(format!(
                        "{} answered 401 without a usable WWW-Authenticate",
                        self.base
                    )));
                };
                {
                    let mut auth = lock(&self.auth);
                    auth.challenge = Some(challenge);
                    auth.tokens.remove(&scope);
                }
                authenticated = true;
                continue;
            }
            return Ok(response);
        }
    }

    /// Follows a redirect of a blob GET: without the upstream's credentials (the target is
    /// a presigned URL or a CDN, which must not see them). A relative location is resolved
    /// against the upstream.
    pub(crate) async fn get_redirected(
        &self,
        location: &str,
    ) -> Result<Response<Incoming>, Failure> {
        let url = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.to_owned()
        };
        let uri: Uri = url
            .parse()
            .map_err(|e| Failure::Failed(format!("bad redirect {location:?}: {e}")))?;
        let request = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .body(Empty::new())
            .map_err(|e| Failure::Failed(e.to_string()))?;
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => Err(Failure::Failed(format!(
                "no answer from the redirect target within {:?}",
                self.timeout
            ))),
            Ok(Err(e)) => Err(Failure::Failed(format!(
                "redirect target unreachable: {}",
                error_chain(&e)
            ))),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// The Authorization header for `scope` (fetching a token if the upstream wants one and
    /// none is kept). `force` after a 401: a kept token was not enough.
    async fn authorization(
        &self,
        scope: &str,
        force: bool,
    ) -> Result<Option<HeaderValue>, Failure> {
        let (challenge, token) = {
            let auth = lock(&self.auth);
            let token = auth
                .tokens
                .get(scope)
                .filter(|(_, until)| Instant::now() < *until)
                .map(|(t, _)| t.clone());
            (auth.challenge.clone(), token)
        };
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.basic()),
            Some(Challenge::Bearer { realm, service }) => {
                let token = match token {
                    Some(t) if !force => t,
                    _ => {
                        let (token, lifetime) =
                            self.fetch_token(&realm, service.as_deref(), scope).await?;
                        // Used until a little before it expires, so it is not refused in flight.
                        let until = Instant::now() + lifetime.saturating_sub(lifetime / 10);
                        lock(&self.auth)
                            .tokens
                            .insert(scope.to_owned(), (token.clone(), until));
                        token
                    }
                };
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .map(Some)
                    .map_err(|_| {
                        Failure::Failed("the upstream's token is not a header value".into())
                    })
            }
        }
    }

    fn basic(&self) -> Option<HeaderValue> {
        let (user, password) = self.credentials.as_ref()?;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).ok()
    }

    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Duration), Failure> {
        let mut url = realm.to_owned();
        let mut query = Vec::new();
        if let Some(service) = service {
            query.push(format!("service={}", encode(service)));
        }
        query.push(format!("scope={}", encode(scope)));
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&query.join("&"));
        let uri: Uri = url
            .parse()
            .map_err(|e| Failure::Failed(format!("bad token realm {realm:?}: {e}")))?;
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .body(Empty::new())
            .map_err(|e| Failure::Failed(e.to_string()))?;
        if let Some(basic) = self.basic() {
            request.headers_mut().insert(header::AUTHORIZATION, basic);
        }
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("token realm {realm} unreachable: {}", error_chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), SMALL_BODY_LIMIT)
                .collect()
                .await
                .map_err(|e| format!("reading the token: {e}"))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("token realm {realm} answered {status}"));
            }
            #[derive(serde::Deserialize)]
            struct Answer {
                token: Option<String>,
                access_token: Option<String>,
                expires_in: Option<u64>,
            }
            let answer: Answer = serde_json::from_slice(&body)
                .map_err(|e| format!("token realm {realm} answered no token: {e}"))?;
            let token = answer
                .token
                .or(answer.access_token)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| format!("token realm {realm} answered no token"))?;
            // The spec's default lifetime when none is given.
            let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(60).max(1));
            Ok((token, lifetime))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(Failure::Failed(format!(
                "no token from {realm} within {:?}",
                self.timeout
            ))),
            Ok(r) => r.map_err(Failure::Failed),
        }
    }
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A failure and its causes, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Reads `WWW-Authenticate`: `Basic realm="…"` or `Bearer realm="…",service="…",scope="…"`.
fn parse_challenge(value: &str) -> Option<Challenge> {
    let (scheme, params) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(params);
    let realm = params.get("realm")?.clone();
    Some(Challenge::Bearer {
        realm,
        service: params.get("service").cloned(),
    })
}

/// `key="value",key=value` pairs; quoted values may hold commas and escaped quotes.
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_read_as_docker_hub_and_distribution_write_them() {
        let hub = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#;
        match parse_challenge(hub) {
            Some(Challenge::Bearer { realm, service }) => {
                assert_eq!(realm, "https://auth.docker.io/token");
                assert_eq!(service.as_deref(), Some("registry.docker.io"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        ));
        assert!(parse_challenge("Negotiate abc").is_none());
        assert!(parse_challenge("Bearer service=\"x\"").is_none());
        let p = parse_params(r#"realm="a,b",scope="x \"y\"", plain=z"#);
        assert_eq!(p["realm"], "a,b");
        assert_eq!(p["scope"], "x \"y\"");
        assert_eq!(p["plain"], "z");
    }
}
