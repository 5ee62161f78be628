//! What every request leaves behind for operators: a request id, an access-log line and its
//! metrics. One middleware ([`observe`]) around the whole router, so no route is missed.
//!
//! - **Request id**: a UUID v4 per request, sent back as `X-Request-Id` and carried by every
//!   log line written while the request is handled (its handler *and* its response body) as
//!   the field `http.request.id` of a `request` span, as Distribution names it. The span is at
//!   error level so that no `log.level` hides it from the lines that matter most. An id the
//!   client sends is not believed: it could name someone else's request.
//! - **Access log** (`log.accesslog.disabled: false`, the default): one line per request on
//!   stdout in the format Distribution's (gorilla/handlers `CombinedLoggingHandler`, Apache's
//!   combined log format), with the request id appended so a line can be joined with the
//!   error log:
//!   `client - user [05/Dec/2026:05:00:00 +0000] "GET /v2/ HTTP/1.1" 200 2 "referer" "agent" <id>`.
//!   `client` is the peer address, or the address `X-Forwarded-For` gives when the peer is a
//!   trusted proxy (`http.trustedproxies`); `user` is the authenticated user (an htpasswd
//!   user or a token's subject) or `-`; the size is the response body bytes actually sent
//!   (0 for a HEAD). The line is written when the response body has finished or was cut,
//!   never before, and the body is counted as it streams, not buffered. No line ever holds a
//!   credential: the request target's query parameters whose names contain `password`,
//!   `token`, `secret`, `signature` or `credential` are written as `REDACTED`, userinfo is
//!   dropped, and no header other than `Referer` and `User-Agent` is written. Every field a
//!   client sent is quoted and escaped as gorilla does (`"` and `\` backslashed, control and
//!   invisible characters as `\xNN` or `\uNNNN`), so no client can forge a line.
//! - **Metrics** (`http.debug.prometheus.enabled`): `berth_metrics::HttpMetrics`, keyed by
//!   Distribution's route name for the path (`handler`), never the path itself. The probes
//!   (`/healthz`, `/readyz`) are not API requests: neither counted nor access-logged.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_metrics::{BodyCounter, Handler, Metrics, RequestMetrics};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use tracing::Instrument;

use crate::endpoint::{self, Endpoint};

/// The response header carrying the request id.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The authenticated caller's name, handed from `dispatch` to the access log in the
/// response's extensions.
#[derive(Debug, Clone)]
pub(crate) struct AuthenticatedUser(pub(crate) String);

/// The name the access log shows for `caller`: an htpasswd user, or a token's subject.
pub(crate) fn user_of(caller: Option<&crate::auth::Caller>) -> Option<AuthenticatedUser> {
    use crate::auth::Caller;
    match caller? {
        Caller::User(name) => Some(AuthenticatedUser(name.clone())),
        Caller::Token(grant) if !grant.subject.is_empty() => {
            Some(AuthenticatedUser(grant.subject.clone()))
        }
        Caller::Token(_) | Caller::Anonymous => None,
    }
}

/// Distribution's route for `path` (`None`: not an API request, not counted).
fn handler_of(path: &str) -> Option<Handler> {
    Some(match endpoint::parse(path) {
        Some(Endpoint::Base) => Handler::Base,
        Some(Endpoint::Catalog) => Handler::Catalog,
        Some(Endpoint::Tags { .. }) => Handler::Tags,
        Some(Endpoint::Manifest { .. }) => Handler::Manifest,
        Some(Endpoint::Blob { .. }) => Handler::Blob,
        Some(Endpoint::UploadStart { .. }) => Handler::BlobUpload,
        Some(Endpoint::Upload { .. }) => Handler::BlobUploadChunk,
        Some(Endpoint::Referrers { .. }) => Handler::Referrers,
        None if path == "/token" => Handler::Token,
        // The Kubernetes probes beside `dispatch` (health.rs).
        None if path == "/healthz" || path == "/readyz" => return None,
        None => Handler::Other,
    })
}

/// What the middleware needs of the configuration: a state of its own, so each request
/// clones one reference rather than the whole application state.
pub(crate) struct Observe {
    pub(crate) access_log: bool,
    pub(crate) metrics: Option<Arc<Metrics>>,
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
}

/// The middleware: see the module doc.
pub(crate) async fn observe(
    State(state): State<Arc<Observe>>,
    request: Request,
    next: Next,
) -> Response {
    let id = uuid::Uuid::new_v4();
    let span = tracing::error_span!("request", http.request.id = %id);
    // Probes come every few seconds from every load balancer and kubelet: an access line
    // each would bury the requests that matter.
    let probe = matches!(request.uri().path(), "/healthz" | "/readyz");
    let access = (state.access_log && !probe)
        .then(|| AccessLine::begin(&request, &state.trusted_proxies, &id));
    let metrics = state.metrics.as_deref().and_then(|m| {
        let handler = handler_of(request.uri().path())?;
        Some(start_metrics(m, handler, &request))
    });
    let (metrics, request) = match metrics {
        Some(mut m) if !request.body().is_end_stream() => {
            let counter = m.body_counter();
            let request = request.map(|body| Body::new(CountedRequest { body, counter }));
            (Some(m), request)
        }
        m => (m, request),
    };

    // The same id in notification events' `request.id` (`notify`).
    let mut request = request;
    request
        .extensions_mut()
        .insert(crate::notify::RequestId(id));
    let mut response = next.run(request).instrument(span.clone()).await;

    let mut buffer = uuid::Uuid::encode_buffer();
    let id_text = id.hyphenated().encode_lower(&mut buffer);
    if let Ok(value) = HeaderValue::from_str(id_text) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    let user = response.extensions_mut().remove::<AuthenticatedUser>();
    if access.is_none() && metrics.is_none() {
        return response;
    }
    let status = response.status().as_u16();
    let finish = Finish {
        status,
        metrics,
        access: access.map(|line| (line, user)),
    };
    response.map(|body| {
        Body::new(Observed {
            body,
            span,
            sent: 0,
            finish: Some(finish),
        })
    })
}

/// Starts a request's metrics, with its head's size estimated as promhttp does (target,
/// method, protocol, header names and values, host); the body is added as it arrives.
fn start_metrics(metrics: &Metrics, handler: Handler, request: &Request) -> RequestMetrics {
    let uri = request.uri();
    let mut head = uri.path().len() + uri.query().map_or(0, |q| q.len() + 1);
    head += request.method().as_str().len() + "HTTP/1.1".len();
    for (name, value) in request.headers() {
        head += name.as_str().len() + value.len();
    }
    metrics.http().start(handler, request.method(), head as u64)
}

/// A request body whose bytes are counted as they arrive.
struct CountedRequest {
    body: Body,
    counter: BodyCounter,
}

impl HttpBody for CountedRequest {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &frame
            && let Some(data) = f.data_ref()
        {
            this.counter.add(data.len() as u64);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// What is recorded once the response body is done.
struct Finish {
    status: u16,
    metrics: Option<RequestMetrics>,
    access: Option<(AccessLine, Option<AuthenticatedUser>)>,
}

/// A response body that counts what it sends, is polled inside the request's span, and
/// records the request when it ends or is dropped (cut).
struct Observed {
    body: Body,
    span: tracing::Span,
    sent: u64,
    finish: Option<Finish>,
}

impl Finish {
    /// Records the request, whose response sent `sent` body bytes.
    fn record(this: &mut Option<Finish>, sent: u64) {
        let Some(finish) = this.take() else {
            return;
        };
        if let Some(metrics) = finish.metrics {
            metrics.finish(finish.status, sent);
        }
        if let Some((line, user)) = finish.access {
            line.write(user.as_ref().map(|u| u.0.as_str()), finish.status, sent);
        }
    }
}

impl HttpBody for Observed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let _entered = this.span.enter();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(data) = f.data_ref() {
                    let n = data.len() as u64;
                    this.sent += n;
                    if let Some(m) = this.finish.as_ref().and_then(|f| f.metrics.as_ref()) {
                        m.sent(n);
                    }
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                Finish::record(&mut this.finish, this.sent);
            }
            Poll::Pending => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        let _entered = self.span.enter();
        Finish::record(&mut self.finish, self.sent);
    }
}

/// An access-log line, begun when the request arrives (its time, as gorilla's) and written
/// when the response is done.
struct AccessLine {
    client: Option<IpAddr>,
    /// `[time] "METHOD target PROTO"`, then (from `split`) ` "referer" "agent" id`.
    text: String,
    split: usize,
}

impl AccessLine {
    fn begin(request: &Request, trusted: &[ipnet::IpNet], id: &uuid::Uuid) -> AccessLine {
        let mut text = String::with_capacity(256);
        text.push('[');
        clf_time(&mut text, SystemTime::now());
        text.push_str("] \"");
        text.push_str(request.method().as_str());
        text.push(' ');
        quote_into(&mut text, redacted_target(request.uri()).as_bytes(), false);
        let _ = write!(text, " {:?}\"", request.version());
        let split = text.len();
        for name in [header::REFERER, header::USER_AGENT] {
            text.push_str(" \"");
            if let Some(value) = request.headers().get(name) {
                quote_into(&mut text, value.as_bytes(), false);
            }
            text.push('"');
        }
        let _ = write!(text, " {id}");
        AccessLine {
            client: crate::client_address(request, trusted),
            text,
            split,
        }
    }

    /// The whole line, newline included.
    fn render(&self, user: Option<&str>, status: u16, bytes: u64) -> String {
        let mut line = String::with_capacity(self.text.len() + 64);
        match self.client {
            Some(ip) => {
                let _ = write!(line, "{ip}");
            }
            None => line.push('-'),
        }
        line.push_str(" - ");
        match user.filter(|u| !u.is_empty()) {
            Some(user) => quote_into(&mut line, user.as_bytes(), true),
            None => line.push('-'),
        }
        line.push(' ');
        line.push_str(&self.text[..self.split]);
        let _ = write!(line, " {status} {bytes}");
        line.push_str(&self.text[self.split..]);
        line.push('\n');
        line
    }

    /// Writes the line to stdout in one write, so lines of concurrent requests never mix.
    fn write(self, user: Option<&str>, status: u16, bytes: u64) {
        use std::io::Write as _;
        let line = self.render(user, status, bytes);
        // Nowhere to report a failed write to stdout (a closed pipe): the request is done.
        let _ = std::io::stdout().lock().write_all(line.as_bytes());
    }
}

/// Query parameters whose value is a credential when their name contains one of these.
const SECRET_NAMES: [&str; 5] = ["password", "token", "secret", "signature", "credential"];

/// The request target as the access log writes it: path and query, with the values of
/// secret-looking query parameters replaced by `REDACTED`, and no userinfo.
fn redacted_target(uri: &http::Uri) -> String {
    let mut target = String::new();
    if let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) {
        // An absolute-form target: keep its host, never a `user:password@`.
        let host = authority.as_str().rsplit('@').next().unwrap_or_default();
        let _ = write!(target, "{scheme}://{host}");
    }
    target.push_str(uri.path());
    let Some(query) = uri.query() else {
        return target;
    };
    target.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            target.push('&');
        }
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        // Matched on the decoded name, so `pass%77ord` is a password too.
        let decoded = form_urlencoded::parse(name.as_bytes())
            .next()
            .map(|(n, _)| n.to_ascii_lowercase())
            .unwrap_or_default();
        if SECRET_NAMES.iter().any(|s| decoded.contains(s)) {
            target.push_str(name);
            target.push_str("=REDACTED");
        } else {
            target.push_str(pair);
        }
    }
    target
}

/// Appends `bytes` escaped as gorilla/handlers quotes client text: `"` and `\` backslashed,
/// `\n`, `\r`, `\t` as such, other control bytes and invalid UTF-8 as `\xNN`, and characters
/// a terminal would not show as themselves (C1 controls, line separators, bidirectional
/// overrides) as `\uNNNN`. With `space`, a space is escaped too (`\x20`): for the user field,
/// which is not quoted.
fn quote_into(out: &mut String, bytes: &[u8], space: bool) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                ' ' if space => out.push_str("\\x20"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control()
                    || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') =>
                {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// Appends `at` as the common log format writes time, in UTC: `05/Dec/2026:05:00:00 +0000`.
fn clf_time(out: &mut String, at: SystemTime) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's days_from_civil, inverted).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
}

/// The debug listener's Prometheus endpoint: `GET path` (and `HEAD`) answers every metric in
/// the text format; any other path is Go's 404, so the router can be merged with others
/// (`/debug/health`) whatever `path` is, without a route that could clash.
pub fn metrics_router(metrics: Arc<Metrics>, path: String) -> axum::Router {
    axum::Router::new().fallback(move |request: Request| {
        let metrics = metrics.clone();
        let path = path.clone();
        async move {
            if request.uri().path() != path {
                return (StatusCode::NOT_FOUND, "404 page not found\n").into_response();
            }
            if request.method() != Method::GET && request.method() != Method::HEAD {
                return StatusCode::METHOD_NOT_ALLOWED.into_response();
            }
            (
                [(header::CONTENT_TYPE, berth_metrics::CONTENT_TYPE)],
                metrics.encode(),
            )
                .into_response()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> String {
        redacted_target(&uri.parse().unwrap_or_else(|e| panic!("{uri}: {e}")))
    }

    #[test]
    fn secret_query_parameters_are_redacted() {
        assert_eq!(target("/v2/"), "/v2/");
        assert_eq!(
            target("/token?service=r&scope=repository:a:pull&account=alice"),
            "/token?service=r&scope=repository:a:pull&account=alice"
        );
        assert_eq!(
            target("/token?account=a&password=hunter2&refresh_token=abc&n=1"),
            "/token?account=a&password=REDACTED&refresh_token=REDACTED&n=1"
        );
        assert_eq!(
            target("/x?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA%2F1&Client_Secret=s"),
            "/x?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED&Client_Secret=REDACTED"
        );
        assert_eq!(
            target("/x?pass%77ord=p&token"),
            "/x?pass%77ord=REDACTED&token=REDACTED"
        );
        assert_eq!(
            target("http://user:pw@example.com/v2/?a=b"),
            "http://example.com/v2/?a=b"
        );
    }

    #[test]
    fn client_text_is_quoted_as_gorilla_does() {
        let quoted = |b: &[u8], space| {
            let mut s = String::new();
            quote_into(&mut s, b, space);
            s
        };
        assert_eq!(quoted(b"curl/8.0 (x)", false), "curl/8.0 (x)");
        assert_eq!(
            quoted(b"a\"b\\c\nd\re\tf\x1bg\x7f", false),
            "a\\\"b\\\\c\\nd\\re\\tf\\x1bg\\x7f"
        );
        assert_eq!(quoted(b"\xff\xfeok", false), "\\xff\\xfeok");
        assert_eq!(
            quoted("a\u{85}b\u{2028}c\u{202e}d é".as_bytes(), false),
            "a\\u0085b\\u2028c\\u202ed é"
        );
        assert_eq!(quoted(b"a b", true), "a\\x20b");
    }

    #[test]
    fn times_are_written_in_the_common_log_format() {
        let at = |secs| {
            let mut s = String::new();
            clf_time(
                &mut s,
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs),
            );
            s
        };
        assert_eq!(at(0), "01/Jan/1970:00:00:00 +0000");
        // 2026-12-05T05:00:00Z
        assert_eq!(at(1_796_446_800), "05/Dec/2026:05:00:00 +0000");
        // 2024-02-29T23:59:59Z, a leap day
        assert_eq!(at(1_709_251_199), "29/Feb/2024:23:59:59 +0000");
    }

    #[test]
    fn a_line_has_the_combined_format_and_the_request_id() {
        let request = http::Request::builder()
            .method("GET")
            .uri("/v2/a/manifests/latest?password=p")
            .header("user-agent", "docker/27 \"x\"")
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("{e}"));
        let id = uuid::Uuid::nil();
        let line = AccessLine::begin(&request, &[], &id);
        let text = line.render(Some("alice"), 200, 512);
        let (time, rest) = text
            .strip_prefix("- - alice [")
            .and_then(|t| t.split_once("] "))
            .unwrap_or_else(|| panic!("{text:?}"));
        assert_eq!(time.len(), "05/Dec/2026:05:00:00 +0000".len(), "{text:?}");
        assert_eq!(
            rest,
            "\"GET /v2/a/manifests/latest?password=REDACTED HTTP/1.1\" 200 512 \"\" \
             \"docker/27 \\\"x\\\"\" 00000000-0000-0000-0000-000000000000\n"
        );
        assert!(line.render(None, 404, 0).starts_with("- - - ["));
    }

    #[test]
    fn handlers_are_distributions_route_names() {
        let cases = [
            ("/v2/", Some("base")),
            ("/v2/_catalog", Some("catalog")),
            ("/v2/a/b/tags/list", Some("tags")),
            ("/v2/a/manifests/latest", Some("manifest")),
            ("/v2/a/blobs/sha256:00", Some("blob")),
            ("/v2/a/blobs/uploads/", Some("blob_upload")),
            ("/v2/a/blobs/uploads/0123", Some("blob_upload_chunk")),
            ("/v2/a/referrers/sha256:00", Some("referrers")),
            ("/token", Some("token")),
            ("/", Some("other")),
            ("/wp-admin.php", Some("other")),
            ("/healthz", None),
            ("/readyz", None),
        ];
        for (path, want) in cases {
            assert_eq!(handler_of(path).map(Handler::label), want, "{path}");
        }
    }
}
