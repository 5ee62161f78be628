//! berth's HTTP layer: the OCI Distribution API on axum.
//!
//! Every request under `/v2` goes through one function, [`dispatch`]: parse the path into an
//! [`endpoint::Endpoint`], validate the names it carries, call the registry, and shape the
//! answer — status, headers, body — the way the spec and Distribution do. Logging and the
//! headers every response carries are added here too, once. Handlers never decide policy;
//! that lives in `berth-registry`. Access is decided here too, once, before any handler runs
//! ([`auth`]).

pub mod auth;
mod blobs;
mod body;
pub mod connections;
pub mod endpoint;
mod error;
pub mod health;
mod listing;
mod manifests;
mod notify;
mod observe;
mod referrers;
mod serve;
pub mod tls;
mod ui;
mod uploads;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use berth_oci::{Digest, RepoName};
use berth_registry::{Error, Registry};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

pub use auth::Auth;
pub use connections::Limits;
pub use error::ApiError;
pub use observe::{X_REQUEST_ID, metrics_router};
pub use serve::{ServeOptions, serve, serve_with};
pub use ui::UiOptions;

/// HTTP settings from the `http` section of the configuration.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// `http.host`: the externally visible base URL used in `Location` headers.
    pub host: Option<String>,
    /// `http.relativeurls`: send `Location` headers as paths only.
    pub relative_urls: bool,
    /// `http.headers`: extra headers on every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `catalog.maxentries`: the largest catalog page (and the default one).
    pub catalog_max_entries: usize,
    /// `http.bodyidletimeout` (berth's own): how long an upload body may stall.
    pub body_idle_timeout: Duration,
    /// `auth`: access control; `None` serves everyone everything.
    pub auth: Option<Arc<auth::Auth>>,
    /// `http.trustedproxies` (berth's own): peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `health`: while one of its checks fails, every request is answered 503 ([`health`]).
    pub health: Option<health::Health>,
    /// `log.accesslog.disabled` unset: one access-log line per request on stdout (`observe.rs`).
    pub access_log: bool,
    /// `http.debug.prometheus.enabled`: the metrics requests are recorded into.
    pub metrics: Option<Arc<berth_metrics::Metrics>>,
    /// `notifications`: where successful requests' events go (`None`: nowhere, and no
    /// request does anything for them).
    pub notifier: Option<berth_notify::Notifier>,
    /// `proxy`: the pull-through cache, for the repositories its upstreams serve.
    pub proxy: Option<Arc<berth_proxy::Proxy>>,
    /// `ui` (berth's own): the web UI at `/ui/` ([`ui`]).
    pub ui: UiOptions,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            host: None,
            relative_urls: false,
            headers: Vec::new(),
            catalog_max_entries: listing::DEFAULT_CATALOG_MAX_ENTRIES,
            body_idle_timeout: Duration::from_secs(60),
            auth: None,
            trusted_proxies: Vec::new(),
            health: None,
            access_log: false,
            metrics: None,
            notifier: None,
            proxy: None,
            ui: UiOptions::default(),
        }
    }
}

/// Shared state of the HTTP layer.
#[derive(Clone)]
pub struct AppState {
    registry: Registry,
    http: Arc<HttpOptions>,
    catalog_max_entries: usize,
    /// `/readyz`'s storage probe ([`health`]).
    readiness: Arc<health::Readiness>,
    /// The web UI's own state ([`ui`]).
    ui: Arc<ui::UiState>,
}

impl AppState {
    /// Whether `caller` may see `repository` in the catalog (always, without auth).
    fn may_list(&self, caller: Option<&auth::Caller>, repository: &str) -> bool {
        match (&self.http.auth, caller) {
            (Some(auth), Some(caller)) => auth.may_list(caller, repository),
            _ => true,
        }
    }

    /// Whether `caller` may pull `repository` (always, without auth).
    fn may_pull(&self, caller: Option<&auth::Caller>, repository: &str) -> bool {
        match (&self.http.auth, caller) {
            (Some(auth), Some(caller)) => auth.allows(caller, repository, auth::Action::Pull),
            _ => true,
        }
    }
}

/// The whole HTTP application: mount it on any listener.
pub fn app(registry: Registry, http: HttpOptions) -> axum::Router {
    let state = AppState {
        registry,
        catalog_max_entries: http.catalog_max_entries.max(1),
        http: Arc::new(http),
        readiness: Arc::default(),
        ui: Arc::default(),
    };
    // The probes for Kubernetes, beside `dispatch`: no auth, no health gate, no request log.
    let probes = axum::Router::new()
        .route("/healthz", axum::routing::get(health::healthz))
        .route("/readyz", axum::routing::get(health::readyz));
    // Request ids, the access log and metrics around everything (observe.rs).
    let observed = Arc::new(observe::Observe {
        access_log: state.http.access_log,
        metrics: state.http.metrics.clone(),
        trusted_proxies: state.http.trusted_proxies.clone(),
    });
    let observe = axum::middleware::from_fn_with_state(observed, observe::observe);
    probes.fallback(dispatch).layer(observe).with_state(state)
}

const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
const API_VERSION_VALUE: HeaderValue = HeaderValue::from_static("registry/2.0");

/// Answers one request.
async fn dispatch(State(state): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let endpoint = endpoint::parse(&path);
    let label = endpoint.as_ref().map_or("other", |e| e.label());
    let mut response = match endpoint {
        // While a `health` check fails, every request is refused, as Distribution does.
        _ if state
            .http
            .health
            .as_ref()
            .is_some_and(health::Health::failing) =>
        {
            health::unavailable()
        }
        Some(endpoint) => match authorize(
            &state,
            &endpoint,
            request.method(),
            request.headers(),
            client_address(&request, &state.http.trusted_proxies),
        )
        .await
        {
            Ok(caller) => {
                // Who the access log names (observe.rs).
                let user = state
                    .http
                    .access_log
                    .then(|| observe::user_of(caller.as_ref()))
                    .flatten();
                let mut response = handle(&state, endpoint, request, caller)
                    .await
                    .unwrap_or_else(IntoResponse::into_response);
                if let Some(user) = user {
                    response.extensions_mut().insert(user);
                }
                response
            }
            Err(refusal) => refusal,
        },
        // berth's own token server (auth.tokenserver), outside /v2 as token servers are.
        None if path == "/token" => match &state.http.auth {
            Some(auth) => {
                let query = request.uri().query().unwrap_or("");
                auth.token_endpoint(
                    request.headers(),
                    client_address(&request, &state.http.trusted_proxies),
                    query,
                )
                .await
                .unwrap_or_else(error::not_found)
            }
            None => error::not_found(),
        },
        // The web UI: its pages are authorized by the same `authorize` (ui/mod.rs).
        None if ui::owns(&path) => ui::handle(&state, request).await,
        // A browser asking for `/` is sent to the UI; API clients get the empty 200.
        None if path == "/" => ui::root_redirect(&state, request.headers())
            .unwrap_or_else(|| StatusCode::OK.into_response()),
        None => error::not_found(),
    };
    let headers = response.headers_mut();
    headers.insert(API_VERSION, API_VERSION_VALUE);
    for (name, value) in &state.http.headers {
        headers.insert(name.clone(), value.clone());
    }
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    // The one log line of an internal error, with the request it failed.
    if let Some(error::InternalError(error)) = response.extensions_mut().remove() {
        tracing::error!(%method, endpoint = label, status, elapsed_ms, error, "request failed");
    } else if status >= 500 {
        tracing::warn!(%method, endpoint = label, status, elapsed_ms, "request failed");
    } else {
        tracing::debug!(%method, endpoint = label, status, elapsed_ms, "request");
    }
    response
}

/// The one access check: every endpoint and method passes here before its handler runs.
/// `Ok(None)` when no auth is configured.
async fn authorize(
    state: &AppState,
    endpoint: &endpoint::Endpoint<'_>,
    method: &Method,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<Option<auth::Caller>, Response> {
    let Some(auth) = &state.http.auth else {
        return Ok(None);
    };
    let need = auth::need(endpoint, method);
    auth.authorize(headers, peer, &need).await.map(Some)
}

/// The client's address, for the failed-login limits: the peer the accept loop recorded, or,
/// when that peer is a trusted proxy, the address `X-Forwarded-For` gives, read from the right
/// (each proxy appends the address it saw) up to the first hop that is not itself trusted. No
/// one else's `X-Forwarded-For` is believed: a client could name any address in it.
fn client_address(request: &Request, trusted: &[ipnet::IpNet]) -> Option<std::net::IpAddr> {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_canonical())?;
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut client = peer;
    if !is_trusted(&client) {
        return Some(client);
    }
    // Split as bytes: a client's own non-ASCII entry on the left must not void the entries
    // the proxies appended on its right.
    let hops = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        // An entry that does not parse was written by whoever the last trusted hop heard
        // from: stop at that hop rather than guess.
        let Some(ip) = forwarded_address(hop) else {
            break;
        };
        let ip = ip.to_canonical();
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Some(client)
}

/// One `X-Forwarded-For` entry: an address, or an address with a port as some load
/// balancers write it (`1.2.3.4:5678`, `[2001:db8::1]:5678`).
fn forwarded_address(entry: &[u8]) -> Option<std::net::IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    text.parse::<std::net::IpAddr>()
        .or_else(|_| text.parse::<std::net::SocketAddr>().map(|a| a.ip()))
        .ok()
}

async fn handle(
    state: &AppState,
    endpoint: endpoint::Endpoint<'_>,
    request: Request,
    caller: Option<auth::Caller>,
) -> Result<Response, ApiError> {
    use endpoint::Endpoint as E;
    let method = request.method().clone();
    let ctx = Ctx::new(state, &request, caller);
    // Every handler's body is drained if the handler refuses it unread (see `body.rs`).
    let body = body::drain_on_drop(request.into_body());
    // A repository that mirrors an upstream is read-only here, as Distribution's proxy is.
    if let Some(name) = endpoint.repository()
        && !matches!(method, Method::GET | Method::HEAD)
        && ctx.proxied(&repo(name)?)?.is_some()
    {
        return Err(Error::Unsupported(
            "this repository mirrors an upstream registry (proxy): push to the upstream instead",
        )
        .into());
    }
    match (endpoint, method) {
        (E::Base, Method::GET | Method::HEAD) => Ok(base()),
        (E::Catalog, Method::GET) => listing::catalog(&ctx).await,
        (E::Tags { name }, Method::GET) => listing::tags(&ctx, &repo(name)?).await,
        (E::Manifest { name, reference }, m) => {
            manifests::handle(&ctx, m, &repo(name)?, reference, body).await
        }
        (E::Blob { name, digest }, m) => blobs::handle(&ctx, m, &repo(name)?, digest).await,
        (E::UploadStart { name }, Method::POST) => uploads::start(&ctx, &repo(name)?, body).await,
        (E::Upload { name, id }, m) => uploads::handle(&ctx, m, &repo(name)?, id, body).await,
        (E::Referrers { name, digest }, Method::GET) => {
            referrers::get(&ctx, &repo(name)?, digest).await
        }
        _ => Err(error::unsupported_method()),
    }
}

/// What every handler needs from the request besides its body.
pub(crate) struct Ctx<'a> {
    state: &'a AppState,
    headers: HeaderMap,
    query: String,
    /// The authenticated caller, when auth is configured.
    caller: Option<auth::Caller>,
    /// The connection is TLS: URLs default to `https`.
    tls: bool,
    /// The request URI's authority (HTTP/2 sends `:authority`, not `Host`).
    authority: Option<String>,
    /// Notifications, when configured ([`notify`]).
    notify: Option<notify::Notify>,
}

/// Marks requests that arrived over TLS (set by the accept loop).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServedOverTls;

impl<'a> Ctx<'a> {
    /// The context of `request`, from `caller`'s point of view.
    fn new(state: &'a AppState, request: &Request, caller: Option<auth::Caller>) -> Ctx<'a> {
        let notify =
            state.http.notifier.as_ref().map(|n| {
                notify::Notify::new(n, request, caller.as_ref(), &state.http.trusted_proxies)
            });
        Ctx {
            state,
            headers: request.headers().clone(),
            tls: request.extensions().get::<ServedOverTls>().is_some(),
            authority: request.uri().authority().map(|a| a.to_string()),
            query: request.uri().query().unwrap_or("").to_owned(),
            caller,
            notify,
        }
    }

    /// Whether the caller may see `repository` in the catalog (always, without auth).
    fn may_list(&self, repository: &str) -> bool {
        self.state.may_list(self.caller.as_ref(), repository)
    }

    /// Whether the caller may pull `repository` (always, without auth).
    fn may_pull(&self, repository: &str) -> bool {
        self.state.may_pull(self.caller.as_ref(), repository)
    }

    /// Whether the catalog must be filtered for this caller.
    fn catalog_filtered(&self) -> bool {
        self.state.http.auth.is_some()
    }

    fn registry(&self) -> &Registry {
        &self.state.registry
    }

    /// The pull-through cache and the route to `repo`'s upstream, when an upstream serves it.
    fn proxied(
        &self,
        repo: &RepoName,
    ) -> Result<Option<(&Arc<berth_proxy::Proxy>, berth_proxy::Route)>, ApiError> {
        let Some(proxy) = &self.state.http.proxy else {
            return Ok(None);
        };
        match proxy.route(repo.as_str()) {
            None => Ok(None),
            Some(Ok(route)) => Ok(Some((proxy, route))),
            Some(Err(e)) => Err(e.into()),
        }
    }

    /// The request body as a stream, with the configured idle timeout.
    fn body(&self, body: Body) -> berth_registry::ByteStream {
        body::body_stream(body, self.state.http.body_idle_timeout)
    }

    /// The first value of a query parameter.
    fn query_param(&self, key: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    fn header(&self, name: HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// An absolute URL for `path`, as Distribution builds it: `http.host` when configured,
    /// else the request's scheme and host (honouring `X-Forwarded-Proto`/`-Host`), or just the
    /// path with `http.relativeurls`.
    fn url(&self, path: &str) -> String {
        let http = &self.state.http;
        if http.relative_urls {
            return path.to_owned();
        }
        if let Some(host) = &http.host {
            return format!("{}{}", host.trim_end_matches('/'), path);
        }
        let first = |name: &str| {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let scheme = first("x-forwarded-proto")
            .unwrap_or_else(|| if self.tls { "https" } else { "http" }.to_owned());
        match first("x-forwarded-host")
            .or_else(|| first("host"))
            .or_else(|| self.authority.clone())
        {
            Some(host) => format!("{scheme}://{host}{path}"),
            None => path.to_owned(),
        }
    }
}

/// Marks a response served by the pull-through cache with where it came from; a stale one
/// also gets RFC 9111's `Warning: 110` for clients and proxies that read it.
fn cache_status(r: &mut Response, status: berth_proxy::CacheStatus) {
    set(r, "x-berth-cache", status.as_str());
    if status == berth_proxy::CacheStatus::Stale {
        set(r, header::WARNING, "110 - \"Response is Stale\"");
    }
}

fn repo(name: &str) -> Result<RepoName, ApiError> {
    RepoName::parse(name).map_err(|e| Error::NameInvalid(e).into())
}

fn digest(s: &str) -> Result<Digest, ApiError> {
    Digest::parse(s).map_err(|e| Error::DigestSyntax(e).into())
}

fn base() -> Response {
    let mut r = Response::new(Body::from("{}"));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// A response with a status, no body, and `Content-Length: 0`.
fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

fn set(r: &mut Response, name: impl header::IntoHeaderName, value: impl AsRef<str>) {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        r.headers_mut().insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_forwarded_for_is_believed_from_trusted_proxies_only() {
        let trusted: Vec<ipnet::IpNet> =
            vec!["10.0.0.0/8".parse().unwrap_or_else(|e| panic!("{e}"))];
        let address = |peer: &str, forwarded: &[&str]| {
            let mut request = Request::new(Body::empty());
            let peer: std::net::SocketAddr = peer.parse().unwrap_or_else(|e| panic!("{e}"));
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            for f in forwarded {
                request.headers_mut().append(
                    "x-forwarded-for",
                    HeaderValue::from_str(f).unwrap_or_else(|e| panic!("{e}")),
                );
            }
            client_address(&request, &trusted).map(|ip| ip.to_string())
        };
        let some = |s: &str| Some(s.to_owned());
        // Not from a trusted proxy: whatever it claims, the peer is the client.
        assert_eq!(
            address("203.0.113.9:1", &["198.51.100.1"]),
            some("203.0.113.9")
        );
        // From a trusted proxy: the rightmost hop it did not add itself.
        assert_eq!(
            address("10.0.0.2:1", &["198.51.100.1"]),
            some("198.51.100.1")
        );
        assert_eq!(
            address("10.0.0.2:1", &["1.1.1.1, 198.51.100.1", "10.0.0.5"]),
            some("198.51.100.1"),
            "a client's own forged entry on the left is not believed"
        );
        assert_eq!(
            address("[::ffff:10.0.0.2]:1", &["198.51.100.1"]),
            some("198.51.100.1")
        );
        // Nothing, or garbage, from the proxy: the proxy itself.
        assert_eq!(address("10.0.0.2:1", &[]), some("10.0.0.2"));
        assert_eq!(address("10.0.0.2:1", &["1.1.1.1, bogus"]), some("10.0.0.2"));
        // With ports; and a client's own non-ASCII entry does not hide what the proxy added.
        assert_eq!(
            address("10.0.0.2:1", &["198.51.100.1:5678"]),
            some("198.51.100.1")
        );
        assert_eq!(
            address("10.0.0.2:1", &["[2001:db8::1]:443"]),
            some("2001:db8::1")
        );
        let mut request = Request::new(Body::empty());
        request.extensions_mut().insert(axum::extract::ConnectInfo(
            "10.0.0.2:1"
                .parse::<std::net::SocketAddr>()
                .unwrap_or_else(|e| panic!("{e}")),
        ));
        request.headers_mut().append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe, 198.51.100.7").unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(
            client_address(&request, &trusted).map(|ip| ip.to_string()),
            some("198.51.100.7")
        );
    }
}
