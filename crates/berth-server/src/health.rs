//! Health: Distribution's `health` checks, and the probes Kubernetes asks for.
//!
//! Why this exists: an operator of `registry:2` takes a replica out of rotation by touching a
//! file, lets it refuse traffic while its storage or a service it needs is down, and watches
//! `/debug/health`; berth must behave the same under the same `config.yml`. Kubernetes also
//! wants a liveness and a readiness probe that need no credentials and are no API calls.
//!
//! Checks ([`Check`]) run in the background, each on its own tokio task at its interval
//! (the first run at start, not one interval later as Distribution's ticker does). A check
//! *fails* after `threshold` consecutive failures (0 or 1: the first), and passes again at
//! the first success, as Distribution's threshold updater. The request path reads one atomic
//! counter of failing checks; only `/debug/health` reads the error texts.
//!
//! What is served, and where (Distribution's `health` package and `registry/registry.go`):
//! - **The gate** (main listener): while any check fails, `dispatch` answers *every* request
//!   (`/v2/...`, `/`, `/token`, unknown paths) with 503 and Distribution's body
//!   `{"errors":[{"code":"UNAVAILABLE","message":"service unavailable","detail":"health check
//!   failed: please see /debug/health"}]}`, as `health.Handler` wrapping Distribution's whole
//!   application does. Unlike Distribution, it still carries the headers every berth response
//!   carries (`Docker-Distribution-API-Version`, `http.headers`).
//! - **`/debug/health`** (the *debug* listener, `http.debug.addr`, as in Distribution, which
//!   registers it on the default mux only the debug server serves; never on the main
//!   listener, where check names would show file paths and internal URLs to anyone):
//!   `GET` answers a JSON object from each failing check's name to its last error, `{}` with
//!   200 when none fails, else 503; other methods 404. Mount [`Health::debug_router`] there.
//! - **`/healthz`** (main listener): 200 whenever the process can answer at all.
//! - **`/readyz`** (main listener): 200 when the storage answers a probe now and no check
//!   fails; else 503 with a short JSON reason that names no path or backend detail (the
//!   details go to the log and `/debug/health`). The probe's answer is reused for a second
//!   and one probe runs at a time, so a flood of `/readyz` cannot become a flood of storage
//!   requests.
//!
//! `/healthz` and `/readyz` are routes of their own beside `dispatch`: no auth, no gate, no
//! request log line, no API-request accounting.
//!
//! Check names and error texts are Distribution's: `storagedriver_<driver>`, a file check
//! by its path (`file exists`), an HTTP check by its URI (`<uri>: downstream service returned
//! unexpected status: 500`), a TCP check by its address (`<addr>: connection failed: ...`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use berth_oci::ErrorCode;
use berth_registry::Registry;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::AppState;

/// Distribution's interval when a check names none (or zero).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// How long one run of a check may take when it names no timeout (Go would wait forever,
/// freezing the check at its last answer; a hung backend is a failing one).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Intervals below this are raised to it (a zero-length interval would spin).
const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// Redirects an HTTP check follows, as Go's client.
const MAX_REDIRECTS: usize = 10;
/// How long `/readyz` reuses a storage probe's answer.
const READY_REUSE: Duration = Duration::from_secs(1);
/// How long `/readyz` waits for the storage.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// One configured check.
#[derive(Debug, Clone)]
pub struct Check {
    /// The name `/debug/health` reports it under.
    pub name: String,
    /// What it asks.
    pub probe: Probe,
    /// Time between runs.
    pub interval: Duration,
    /// Consecutive failures before it counts as failing (0 and 1: the first).
    pub threshold: u32,
}

/// What a check asks.
#[derive(Debug, Clone)]
pub enum Probe {
    /// The storage answers a listing of its root ([`Registry::probe_storage`]).
    Storage,
    /// The file does *not* exist (an operator creates it to take the registry out of
    /// rotation).
    File(PathBuf),
    /// A `HEAD` request answers the expected status.
    Http(HttpProbe),
    /// A TCP connection to `addr` (`host:port`) opens.
    Tcp {
        /// Where to connect.
        addr: String,
        /// How long connecting may take ([`DEFAULT_TIMEOUT`] when `None`).
        timeout: Option<Duration>,
    },
}

/// An HTTP check's request.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    /// `http://` or `https://` (system roots).
    pub uri: Uri,
    /// Sent with every request (and after a redirect to the same host).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The status that means healthy.
    pub status: StatusCode,
    /// How long the request, redirects included, may take ([`DEFAULT_TIMEOUT`] when `None`).
    pub timeout: Option<Duration>,
}

fn interval_or_default(interval: Duration) -> Duration {
    if interval.is_zero() {
        DEFAULT_INTERVAL
    } else {
        interval.max(MIN_INTERVAL)
    }
}

fn nonzero(timeout: Option<Duration>) -> Option<Duration> {
    timeout.filter(|t| !t.is_zero())
}

impl Check {
    /// Distribution's storage-driver check, named `storagedriver_<driver>` (`filesystem`,
    /// `s3`) as Distribution names it after the configured driver.
    pub fn storage(driver: &str, interval: Duration, threshold: u32) -> Check {
        Check {
            name: format!("storagedriver_{driver}"),
            probe: Probe::Storage,
            interval: interval_or_default(interval),
            threshold,
        }
    }

    /// A file check, named by its path as configured; it fails at the first sighting.
    pub fn file(path: &str, interval: Duration) -> Result<Check, String> {
        if path.is_empty() {
            return Err("health.file: file is required".into());
        }
        Ok(Check {
            name: path.to_owned(),
            probe: Probe::File(PathBuf::from(path)),
            interval: interval_or_default(interval),
            threshold: 1,
        })
    }

    /// An HTTP check, named by its URI as configured. `status` 0 means 200.
    pub fn http(
        uri: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        status: u16,
        timeout: Option<Duration>,
        interval: Duration,
        threshold: u32,
    ) -> Result<Check, String> {
        let parsed: Uri = uri
            .parse()
            .map_err(|e| format!("health.http: invalid uri {uri:?}: {e}"))?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
            return Err(format!(
                "health.http: uri {uri:?} must be an http:// or https:// URL with a host"
            ));
        }
        let status = match status {
            0 => StatusCode::OK,
            n => StatusCode::from_u16(n)
                .map_err(|_| format!("health.http: invalid statuscode {n} for {uri:?}"))?,
        };
        Ok(Check {
            name: uri.to_owned(),
            probe: Probe::Http(HttpProbe {
                uri: parsed,
                headers,
                status,
                timeout: nonzero(timeout),
            }),
            interval: interval_or_default(interval),
            threshold,
        })
    }

    /// A TCP check, named by its address.
    pub fn tcp(
        addr: &str,
        timeout: Option<Duration>,
        interval: Duration,
        threshold: u32,
    ) -> Result<Check, String> {
        if addr.is_empty() {
            return Err("health.tcp: addr is required".into());
        }
        Ok(Check {
            name: addr.to_owned(),
            probe: Probe::Tcp {
                addr: addr.to_owned(),
                timeout: nonzero(timeout),
            },
            interval: interval_or_default(interval),
            threshold,
        })
    }
}

/// The checks and their state; cheap to clone. Dropping every clone stops the checks.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("checks", &self.inner.checks.len())
            .field("failing", &self.inner.failing.load(Ordering::Relaxed))
            .finish()
    }
}

struct Inner {
    registry: Registry,
    checks: Vec<CheckState>,
    /// How many checks fail now: all the request path reads.
    failing: AtomicUsize,
}

/// One check's state. Only the check's own task writes it.
struct CheckState {
    check: Check,
    /// Consecutive failures, counted up to the threshold.
    failures: AtomicU32,
    failing: AtomicBool,
    /// The last failure's text, for `/debug/health`.
    error: Mutex<String>,
}

impl Health {
    /// The checks, not yet running (see [`Health::start`]); every one passes until it runs.
    pub fn new(registry: Registry, checks: Vec<Check>) -> Health {
        let checks = checks
            .into_iter()
            .map(|check| CheckState {
                check,
                failures: AtomicU32::new(0),
                failing: AtomicBool::new(false),
                error: Mutex::new(String::new()),
            })
            .collect();
        Health {
            inner: Arc::new(Inner {
                registry,
                checks,
                failing: AtomicUsize::new(0),
            }),
        }
    }

    /// The checks, each running on its own task from now on (the first run at once). Must
    /// be called on a tokio runtime. The tasks end once every clone of the result is gone.
    pub fn start(registry: Registry, checks: Vec<Check>) -> Health {
        let health = Health::new(registry, checks);
        for (index, state) in health.inner.checks.iter().enumerate() {
            let weak: Weak<Inner> = Arc::downgrade(&health.inner);
            let interval = state.check.interval;
            tracing::info!(
                check = state.check.name,
                interval = ?interval,
                threshold = state.check.threshold,
                "health check configured"
            );
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    let result = inner.run(index).await;
                    inner.record(index, result);
                }
            });
        }
        health
    }

    /// Whether any check fails now: one atomic load, for every request.
    pub fn failing(&self) -> bool {
        self.inner.failing.load(Ordering::Relaxed) > 0
    }

    /// Each failing check's name and last error (Distribution's `CheckStatus`).
    pub fn status(&self) -> BTreeMap<String, String> {
        self.inner
            .checks
            .iter()
            .filter(|c| c.failing.load(Ordering::Acquire))
            .map(|c| {
                let error = c.error.lock().map(|e| e.clone()).unwrap_or_else(|p| {
                    // A panic while holding the lock left a whole String behind.
                    p.into_inner().clone()
                });
                (c.check.name.clone(), error)
            })
            .collect()
    }

    /// `/debug/health` for the debug server: merge it into the debug listener's router.
    pub fn debug_router(&self) -> axum::Router {
        let health = self.clone();
        axum::Router::new().route(
            "/debug/health",
            axum::routing::any(move |request: Request| {
                let health = health.clone();
                async move { health.debug_health(request.method()) }
            }),
        )
    }

    /// Distribution's `/debug/health` answer to a request with `method`.
    pub fn debug_health(&self, method: &Method) -> Response {
        if method != Method::GET && method != Method::HEAD {
            let mut r = Response::new(Body::from("404 page not found\n"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return r;
        }
        let status = self.status();
        let code = if status.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = serde_json::to_string(&status).unwrap_or_else(|_| "{}".to_owned());
        json_response(code, body)
    }

    /// Records one run's result (test hook for the threshold rules, without tasks).
    #[cfg(test)]
    fn record_for_test(&self, index: usize, result: Result<(), String>) {
        self.inner.record(index, result);
    }
}

impl Inner {
    /// One run of check `index`, bounded by its timeout.
    async fn run(&self, index: usize) -> Result<(), String> {
        let Some(state) = self.checks.get(index) else {
            return Ok(());
        };
        match &state.check.probe {
            Probe::Storage => {
                let limit = DEFAULT_TIMEOUT;
                match tokio::time::timeout(limit, self.registry.probe_storage()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(error_chain(&e)),
                    Err(_) => Err(format!("storage did not answer within {limit:?}")),
                }
            }
            Probe::File(path) => probe_file(path).await,
            Probe::Http(probe) => probe_http(probe).await,
            Probe::Tcp { addr, timeout } => probe_tcp(addr, *timeout).await,
        }
    }

    /// Counts one result as Distribution's threshold updater does: a success resets, a
    /// failure counts up to the threshold, and at the threshold the check fails.
    fn record(&self, index: usize, result: Result<(), String>) {
        let Some(state) = self.checks.get(index) else {
            return;
        };
        let name = &state.check.name;
        let was_failing = state.failing.load(Ordering::Relaxed);
        match result {
            Ok(()) => {
                state.failures.store(0, Ordering::Relaxed);
                if was_failing {
                    state.failing.store(false, Ordering::Release);
                    self.failing.fetch_sub(1, Ordering::Release);
                    tracing::info!(check = name, "health check passes again");
                }
            }
            Err(error) => {
                let threshold = state.check.threshold.max(1);
                let failures = (state.failures.load(Ordering::Relaxed) + 1).min(threshold);
                state.failures.store(failures, Ordering::Relaxed);
                match state.error.lock() {
                    Ok(mut e) => *e = error.clone(),
                    Err(p) => *p.into_inner() = error.clone(),
                }
                if failures >= threshold && !was_failing {
                    state.failing.store(true, Ordering::Release);
                    self.failing.fetch_add(1, Ordering::Release);
                    tracing::warn!(
                        check = name,
                        error,
                        "health check fails: every request is answered 503 until it passes"
                    );
                } else {
                    tracing::debug!(check = name, error, failures, "health check failed");
                }
            }
        }
    }
}

/// An error and its sources, one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// Fails while the file exists, as Distribution's `FileChecker`.
async fn probe_file(path: &std::path::Path) -> Result<(), String> {
    let absolute = std::path::absolute(path)
        .map_err(|e| format!("failed to get absolute path for {path:?}: {e}"))?;
    let stat = tokio::time::timeout(DEFAULT_TIMEOUT, tokio::fs::metadata(&absolute)).await;
    match stat {
        Ok(Ok(_)) => Err("file exists".to_owned()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("stat did not answer within {DEFAULT_TIMEOUT:?}")),
    }
}

/// Connects and closes, as Distribution's `TCPChecker`.
async fn probe_tcp(addr: &str, timeout: Option<Duration>) -> Result<(), String> {
    let limit = timeout.unwrap_or(DEFAULT_TIMEOUT);
    match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(_connection)) => Ok(()),
        Ok(Err(e)) => Err(format!("{addr}: connection failed: {e}")),
        Err(_) => Err(format!(
            "{addr}: connection failed: timed out after {limit:?}"
        )),
    }
}

/// A `HEAD` whose final status (after redirects) must be the expected one, as
/// Distribution's `HTTPChecker`.
async fn probe_http(probe: &HttpProbe) -> Result<(), String> {
    let uri = &probe.uri;
    let limit = probe.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let status = match tokio::time::timeout(limit, head_following(probe)).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(format!("{uri}: error while checking: {e}")),
        Err(_) => {
            return Err(format!(
                "{uri}: error while checking: timed out after {limit:?}"
            ));
        }
    };
    if status != probe.status {
        return Err(format!(
            "{uri}: downstream service returned unexpected status: {}",
            status.as_u16()
        ));
    }
    Ok(())
}

/// The status of a `HEAD` of the probe's URI, following up to [`MAX_REDIRECTS`] redirects.
/// Headers that carry credentials are not sent on to another host (as Go's client).
async fn head_following(probe: &HttpProbe) -> Result<StatusCode, String> {
    let mut uri = probe.uri.clone();
    let mut headers = probe.headers.clone();
    for _ in 0..=MAX_REDIRECTS {
        let (status, location) = head(&uri, &headers).await?;
        let redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
        let Some(location) = location.filter(|_| redirect) else {
            return Ok(status);
        };
        let next = resolve(&uri, &location)?;
        if next.authority() != uri.authority() {
            headers.retain(|(name, _)| {
                name != header::AUTHORIZATION
                    && name != header::COOKIE
                    && name != header::WWW_AUTHENTICATE
            });
        }
        uri = next;
    }
    Err(format!("stopped after {MAX_REDIRECTS} redirects"))
}

/// Where a `Location` points, from `base`: absolute, or a path on the same origin.
fn resolve(base: &Uri, location: &str) -> Result<Uri, String> {
    if location.starts_with('/') && !location.starts_with("//") {
        let mut parts = base.clone().into_parts();
        parts.path_and_query = Some(
            location
                .parse()
                .map_err(|e| format!("invalid redirect {location:?}: {e}"))?,
        );
        return Uri::from_parts(parts).map_err(|e| format!("invalid redirect {location:?}: {e}"));
    }
    let uri: Uri = location
        .parse()
        .map_err(|e| format!("invalid redirect {location:?}: {e}"))?;
    if uri.scheme().is_none() || uri.host().is_none() {
        return Err(format!("unsupported redirect {location:?}"));
    }
    Ok(uri)
}

/// One `HEAD` request on a new connection: its status and `Location`.
async fn head(
    uri: &Uri,
    headers: &[(HeaderName, HeaderValue)],
) -> Result<(StatusCode, Option<String>), String> {
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        other => return Err(format!("unsupported protocol scheme {other:?}")),
    };
    let host = uri.host().ok_or("no host in the URL")?;
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    // The Host header without any user information.
    let authority = uri
        .authority()
        .map(|a| a.as_str().rsplit('@').next().unwrap_or(a.as_str()))
        .unwrap_or(host);
    let mut request = http::Request::builder()
        .method(Method::HEAD)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(header::HOST, authority)
        .header(
            header::USER_AGENT,
            concat!("berth/", env!("CARGO_PKG_VERSION"), " (health check)"),
        )
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    for (name, value) in headers {
        if name == header::USER_AGENT || name == header::HOST {
            request.headers_mut().insert(name.clone(), value.clone());
        } else {
            request.headers_mut().append(name.clone(), value.clone());
        }
    }
    let tcp = TcpStream::connect((bare_host, port))
        .await
        .map_err(|e| format!("dial tcp {bare_host}:{port}: {e}"))?;
    let response = if https {
        let name = rustls::pki_types::ServerName::try_from(bare_host.to_owned())
            .map_err(|e| format!("invalid TLS server name {bare_host:?}: {e}"))?;
        let tls = tls_connector()?
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        send(tls, request).await?
    } else {
        send(tcp, request).await?
    };
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((response.status(), location))
}

/// Sends `request` over `io` (HTTP/1.1) and waits for the response head.
async fn send<T>(
    io: T,
    request: http::Request<http_body_util::Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    let response = sender.send_request(request);
    tokio::pin!(connection, response);
    tokio::select! {
        biased;
        answer = &mut response => answer.map_err(|e| error_chain(&e)),
        ended = &mut connection => match response.await {
            // The response head may have been read just before the connection closed.
            Ok(answer) => Ok(answer),
            Err(e) => Err(match ended {
                Ok(()) => error_chain(&e),
                Err(ended) => error_chain(&ended),
            }),
        },
    }
}

/// The TLS client of HTTPS checks: the system's trusted roots, loaded once.
fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err("no trusted root certificates found on this system".to_owned());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    });
    config.clone().map(tokio_rustls::TlsConnector::from)
}

/// The body of every request refused while a check fails: Distribution's, word for word.
pub(crate) fn unavailable() -> Response {
    crate::error::body(
        ErrorCode::Unavailable,
        ErrorCode::Unavailable.message(),
        Some(serde_json::Value::from(
            "health check failed: please see /debug/health",
        )),
    )
}

/// `/healthz`: the process answers.
pub(crate) async fn healthz() -> Response {
    json_response(StatusCode::OK, r#"{"status":"ok"}"#.to_owned())
}

/// `/readyz`: no check fails and the storage answers now.
pub(crate) async fn readyz(State(state): State<AppState>) -> Response {
    let not_ready = |reason: &str| {
        let body = serde_json::json!({ "status": "unavailable", "reason": reason });
        json_response(StatusCode::SERVICE_UNAVAILABLE, body.to_string())
    };
    if state.http.health.as_ref().is_some_and(Health::failing) {
        return not_ready("a health check fails");
    }
    if !state.readiness.storage_answers(&state.registry).await {
        return not_ready("storage unreachable");
    }
    json_response(StatusCode::OK, r#"{"status":"ready"}"#.to_owned())
}

/// `/readyz`'s last storage probe, reused for [`READY_REUSE`]; the lock makes concurrent
/// callers share one probe.
#[derive(Default)]
pub(crate) struct Readiness {
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl Readiness {
    async fn storage_answers(&self, registry: &Registry) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = *last
            && at.elapsed() < READY_REUSE
        {
            return answer;
        }
        let answer = match tokio::time::timeout(READY_TIMEOUT, registry.probe_storage()).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = error_chain(&e), "readiness: storage probe failed");
                false
            }
            Err(_) => {
                tracing::warn!(timeout = ?READY_TIMEOUT, "readiness: storage did not answer");
                false
            }
        };
        *last = Some((Instant::now(), answer));
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn registry(root: &std::path::Path) -> Registry {
        let driver = berth_storage::FsDriver::new(root).unwrap_or_else(|e| panic!("{e}"));
        Registry::new(Arc::new(driver), berth_registry::Options::default())
    }

    fn never_run(name: &str, threshold: u32) -> Check {
        Check {
            name: name.to_owned(),
            probe: Probe::Storage,
            interval: DEFAULT_INTERVAL,
            threshold,
        }
    }

    async fn body(r: Response) -> String {
        let bytes = http_body_util::BodyExt::collect(r.into_body())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Distribution's threshold updater: failing after `threshold` consecutive failures, a
    /// success in between starts the count again, 0 and 1 both mean the first failure, and
    /// the reported error is the latest.
    #[tokio::test]
    async fn thresholds_count_consecutive_failures() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let health = Health::new(
            registry(dir.path()),
            vec![
                never_run("three", 3),
                never_run("zero", 0),
                never_run("one", 1),
            ],
        );
        let fail = |n: &str| Err(n.to_owned());
        assert!(!health.failing());
        health.record_for_test(0, fail("a"));
        health.record_for_test(0, fail("b"));
        health.record_for_test(0, Ok(()));
        health.record_for_test(0, fail("c"));
        health.record_for_test(0, fail("d"));
        assert!(!health.failing(), "two in a row is under the threshold");
        health.record_for_test(0, fail("e"));
        assert!(health.failing());
        assert_eq!(health.status().get("three").map(String::as_str), Some("e"));
        health.record_for_test(0, fail("f"));
        assert_eq!(health.status().get("three").map(String::as_str), Some("f"));

        health.record_for_test(1, fail("z"));
        health.record_for_test(2, fail("o"));
        assert_eq!(health.status().len(), 3);
        health.record_for_test(0, Ok(()));
        health.record_for_test(1, Ok(()));
        assert!(health.failing(), "one check still fails");
        health.record_for_test(2, Ok(()));
        assert!(!health.failing());
        assert!(health.status().is_empty());
    }

    #[tokio::test]
    async fn debug_health_is_distributions_answer() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let health = Health::new(registry(dir.path()), vec![never_run("/x/down", 1)]);
        let r = health.debug_health(&Method::GET);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r).await, "{}");
        health.record_for_test(0, Err("file exists".into()));
        let r = health.debug_health(&Method::GET);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body(r).await, r#"{"/x/down":"file exists"}"#);
        assert_eq!(
            health.debug_health(&Method::POST).status(),
            StatusCode::NOT_FOUND
        );
        let r = unavailable();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let v: serde_json::Value =
            serde_json::from_str(&body(r).await).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["errors"][0]["code"], "UNAVAILABLE");
        assert_eq!(
            v["errors"][0]["detail"],
            "health check failed: please see /debug/health"
        );
    }

    #[tokio::test]
    async fn running_checks_report_and_recover() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let marker = dir.path().join("down");
        let marker_text = marker.display().to_string();
        let check =
            Check::file(&marker_text, Duration::from_millis(20)).unwrap_or_else(|e| panic!("{e}"));
        let health = Health::start(registry(&dir.path().join("root")), vec![check]);
        let wait = |want: bool| {
            let health = health.clone();
            async move {
                for _ in 0..200 {
                    if health.failing() == want {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("failing never became {want}");
            }
        };
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(!health.failing());
        std::fs::write(&marker, b"").unwrap_or_else(|e| panic!("{e}"));
        wait(true).await;
        assert_eq!(
            health.status().get(&marker_text).map(String::as_str),
            Some("file exists")
        );
        std::fs::remove_file(&marker).unwrap_or_else(|e| panic!("{e}"));
        wait(false).await;
    }

    /// A tiny HTTP/1.1 server answering each connection with the next canned response.
    async fn canned(
        responses: Vec<&'static str>,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let task = tokio::spawn(async move {
            let mut heads = Vec::new();
            for response in responses {
                let (mut s, _) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                heads.push(String::from_utf8_lossy(&head).into_owned());
                let _ = s.write_all(response.as_bytes()).await;
            }
            heads
        });
        (addr, task)
    }

    #[tokio::test]
    async fn http_probe_follows_redirects_and_compares_the_status() {
        let (addr, server) = canned(vec![
            "HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
        ])
        .await;
        let headers = vec![(
            HeaderName::from_static("x-token"),
            HeaderValue::from_static("t"),
        )];
        let uri = format!("http://{addr}/start");
        let Check {
            probe: Probe::Http(probe),
            ..
        } = Check::http(&uri, headers, 0, None, Duration::ZERO, 0)
            .unwrap_or_else(|e| panic!("{e}"))
        else {
            panic!("not an HTTP probe");
        };
        assert_eq!(probe_http(&probe).await, Ok(()));
        assert_eq!(
            probe_http(&probe).await,
            Err(format!(
                "{uri}: downstream service returned unexpected status: 503"
            ))
        );
        let heads = server.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            heads[0].starts_with("HEAD /start HTTP/1.1\r\n"),
            "{}",
            heads[0]
        );
        assert!(
            heads[1].starts_with("HEAD /ok HTTP/1.1\r\n"),
            "{}",
            heads[1]
        );
        assert!(
            heads[1].to_ascii_lowercase().contains("x-token: t"),
            "{}",
            heads[1]
        );
        // Nothing listens there any more.
        assert!(probe_http(&probe).await.is_err());
        assert!(
            probe_tcp(&addr.to_string(), Some(Duration::from_secs(2)))
                .await
                .is_err()
        );
    }

    #[test]
    fn checks_are_named_and_validated_as_distribution_does() {
        assert_eq!(
            Check::storage("filesystem", Duration::ZERO, 3).name,
            "storagedriver_filesystem"
        );
        assert_eq!(
            Check::storage("s3", Duration::ZERO, 3).interval,
            DEFAULT_INTERVAL
        );
        assert!(Check::file("", Duration::ZERO).is_err());
        assert!(Check::http("ftp://x/", vec![], 0, None, Duration::ZERO, 0).is_err());
        assert!(Check::http("/relative", vec![], 0, None, Duration::ZERO, 0).is_err());
        assert!(Check::http("http://x/", vec![], 1000, None, Duration::ZERO, 0).is_err());
        assert!(Check::tcp("", None, Duration::ZERO, 0).is_err());
        let c = Check::tcp(
            "redis:6379",
            Some(Duration::ZERO),
            Duration::from_nanos(1),
            2,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.interval, MIN_INTERVAL);
        assert!(matches!(c.probe, Probe::Tcp { timeout: None, .. }));
    }
}
