//! The web UI at `/ui/`: browse repositories, tags and manifests, delete tags and manifests,
//! and see what storage holds and what a garbage collection would free.
//!
//! Server-rendered HTML (`html.rs`), a stylesheet and a small script compiled into the binary;
//! every page reads without JavaScript, and deleting is a form POST after a confirmation page.
//!
//! **Access.** Each page is the API endpoint whose data it shows, and is authorized exactly as
//! that endpoint is, by the same function ([`crate::authorize`]: `auth::need` then
//! `Auth::authorize`) before anything is read:
//! - the repository list is `GET /v2/_catalog` (any signed-in user), filtered to the
//!   repositories the caller may pull (`Auth::may_list`, as the catalog is);
//! - a repository page is `GET /v2/<name>/tags/list`, a manifest page `GET
//!   /v2/<name>/manifests/<reference>` (pull on that repository);
//! - the delete confirmation and the delete itself are `DELETE /v2/<name>/manifests/<reference>`
//!   (delete on that repository), and the delete runs through the API's own handler, so
//!   notifications and `storage.delete.enabled` apply as they do there;
//! - the storage page shows totals over every repository, which no single API call reveals: it
//!   needs the catalog's access *and* pull on every repository (everyone, without auth).
//!
//! Refusals keep the API's status (401, 403, 429); the 401 carries a `Basic` challenge when
//! berth checks passwords itself (htpasswd), since that is the one browsers answer, so the
//! same users sign in with the same passwords; curl and scripts send Basic credentials as
//! they do to the API. With an external token server, pages take `Authorization: Bearer`.
//!
//! **Forged requests.** GET pages never change anything. The delete POST is refused when the
//! browser says it came from another site (`Sec-Fetch-Site`) or another origin (`Origin`), so a
//! page elsewhere cannot make a signed-in browser delete. Every page is sent with a strict
//! `Content-Security-Policy` (no inline script or style, no framing).

mod html;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use berth_oci::{Manifest, Reference, RepoName};
use berth_registry::{GcOptions, TagInfo};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, stream};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::endpoint::Endpoint;
use crate::{ApiError, AppState, auth};
use html::{Frame, bytes, esc, short_digest, size_cell, time, url_part};

/// `ui` (berth's own section of the configuration).
#[derive(Debug, Clone)]
pub struct UiOptions {
    /// `ui.enabled`: serve the UI (default true).
    pub enabled: bool,
    /// The grace period the storage page's garbage-collection dry run uses (the collector's
    /// own, `storage.maintenance.garbagecollect.graceperiod`).
    pub gc_grace_period: Duration,
}

impl Default for UiOptions {
    fn default() -> Self {
        UiOptions {
            enabled: true,
            gc_grace_period: Duration::from_secs(3600),
        }
    }
}

/// The UI's own state: the last garbage-collection dry run and storage totals, reused for a
/// while so reloading the storage page (or many loading it at once: they queue behind one
/// walk) does not walk and read the whole store each time.
#[derive(Default)]
pub(crate) struct UiState {
    gc: tokio::sync::Mutex<Option<(Instant, Result<GcDryRun, String>)>>,
    summary: tokio::sync::Mutex<Option<(Instant, berth_registry::StorageSummary)>>,
}

#[derive(Clone)]
struct GcDryRun {
    blobs: usize,
    bytes: u64,
    manifests_marked: usize,
    blobs_spared: usize,
    took: Duration,
}

/// How long storage totals are shown before the store is walked again.
const SUMMARY_REUSE: Duration = Duration::from_secs(10);

/// How long a dry run's result is shown before another runs.
const GC_DRY_RUN_REUSE: Duration = Duration::from_secs(60);
/// Repositories per page of the list.
const REPOSITORIES_PER_PAGE: usize = 50;
/// Tags a repository page reads and sorts; beyond, the page says so.
const MAX_TAGS_SHOWN: usize = 1000;
/// Repositories the storage chart draws.
const CHART_BARS: usize = 12;

const CSS: &str = include_str!("ui.css");
const JS: &str = include_str!("ui.js");

/// Whether `path` belongs to the UI.
pub(crate) fn owns(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// `/` for a browser (one that accepts HTML): where the UI is. API clients get `None`.
pub(crate) fn root_redirect(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    (state.http.ui.enabled && wants_html).then(|| redirect("/ui/"))
}

/// Answers one request under `/ui`.
pub(crate) async fn handle(state: &AppState, request: Request) -> Response {
    if !state.http.ui.enabled {
        return crate::error::not_found();
    }
    let (parts, body) = request.into_parts();
    let request = &parts;
    let path = request.uri.path().to_owned();
    let method = request.method.clone();
    let mut response = match (path.as_str(), &method) {
        ("/ui", _) => redirect("/ui/"),
        ("/ui/static/ui.css", &Method::GET) => asset(CSS, "text/css; charset=utf-8"),
        ("/ui/static/ui.js", &Method::GET) => asset(JS, "text/javascript; charset=utf-8"),
        ("/ui/", &Method::GET) => repositories(state, request).await,
        ("/ui/storage", &Method::GET) => storage(state, request).await,
        (p, &Method::GET) if p.starts_with("/ui/r/") => {
            let rest = &p["/ui/r/".len()..];
            match rest.rsplit_once('@') {
                Some((name, reference)) => manifest(state, request, name, reference).await,
                None => repository(state, request, rest).await,
            }
        }
        (p, &Method::GET | &Method::POST) if p.starts_with("/ui/delete/") => {
            match p["/ui/delete/".len()..].rsplit_once('@') {
                Some((name, reference)) => {
                    let (name, reference) = (name.to_owned(), reference.to_owned());
                    delete(state, request, body, &name, &reference).await
                }
                None => message_page(StatusCode::NOT_FOUND, "Not found", "No such page."),
            }
        }
        (_, &Method::GET) => message_page(StatusCode::NOT_FOUND, "Not found", "No such page."),
        _ => message_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "This page does not take that method.",
        ),
    };
    security_headers(response.headers_mut());
    response
}

/// Headers every UI response carries: no inline script or style, no framing, no sniffing,
/// no caching of pages that depend on who asked.
fn security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = Response::new(Body::from(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

fn redirect(to: &str) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn html_response(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = html::page(
        &Frame {
            title,
            user: None,
            crumbs: &[],
            storage: false,
        },
        &format!("<p>{}</p>", esc(text)),
    );
    html_response(status, body)
}

/// A registry error as a page, with the API's status; an internal error's detail stays in
/// the log (`dispatch` logs it from the extension the API rendering attaches).
fn error_page(error: ApiError) -> Response {
    let message = if error.error().is_internal() {
        "The registry could not answer; the error is in its log.".to_owned()
    } else {
        error.error().to_string()
    };
    let (parts, _) = error.into_response().into_parts();
    let mut r = message_page(parts.status, "Error", &message);
    *r.extensions_mut() = parts.extensions;
    r
}

/// Who asked, once authorized.
struct Viewer {
    caller: Option<auth::Caller>,
}

impl Viewer {
    fn name(&self) -> Option<&str> {
        self.caller.as_ref().and_then(auth::Caller::name)
    }
}

/// Authorizes the request as the API endpoint `endpoint` with `method`, through the API's own
/// check. A refusal becomes a page with the API's status (and a Basic challenge a browser can
/// answer, where berth checks passwords).
async fn authorize(
    state: &AppState,
    request: &Parts,
    endpoint: &Endpoint<'_>,
    method: &Method,
) -> Result<Viewer, Response> {
    let peer = crate::client_address(&bodiless(request), &state.http.trusted_proxies);
    match crate::authorize(state, endpoint, method, &request.headers, peer).await {
        Ok(caller) => Ok(Viewer { caller }),
        Err(refusal) => {
            let status = refusal.status();
            let (title, text) = match status {
                StatusCode::UNAUTHORIZED => (
                    "Sign in",
                    "Sign in with your registry user name and password to see this page.",
                ),
                StatusCode::FORBIDDEN => ("Forbidden", "You may not see or do this."),
                StatusCode::TOO_MANY_REQUESTS => (
                    "Too many attempts",
                    "Too many failed sign-ins; try again later.",
                ),
                _ => ("Refused", "The registry refused this request."),
            };
            let mut page = message_page(status, title, text);
            let headers = page.headers_mut();
            if let Some(retry) = refusal.headers().get(header::RETRY_AFTER) {
                headers.insert(header::RETRY_AFTER, retry.clone());
            }
            if status == StatusCode::UNAUTHORIZED {
                let basic = state.http.auth.as_ref().and_then(|a| a.basic_realm());
                let challenge = match basic {
                    Some(realm) => HeaderValue::from_str(&format!(
                        "Basic realm=\"{}\", charset=\"UTF-8\"",
                        realm.replace(['"', '\\'], "")
                    ))
                    .ok(),
                    None => refusal.headers().get(header::WWW_AUTHENTICATE).cloned(),
                };
                if let Some(c) = challenge {
                    headers.insert(header::WWW_AUTHENTICATE, c);
                }
            }
            Err(page)
        }
    }
}

/// Whether `repository` mirrors an upstream: read-only here, as the API's `handle` has it.
fn mirrored(state: &AppState, repository: &str) -> bool {
    state
        .http
        .proxy
        .as_ref()
        .is_some_and(|proxy| proxy.route(repository).is_some())
}

/// Whether the viewer may pull from `repository`: what the API asks before it shows any of
/// the repository's content (tags, sizes, times).
fn may_pull(state: &AppState, viewer: &Viewer, repository: &str) -> bool {
    state.may_pull(viewer.caller.as_ref(), repository)
}

/// Whether the viewer may see `repository` in lists (the catalog's filter).
fn may_list(state: &AppState, viewer: &Viewer, repository: &str) -> bool {
    state.may_list(viewer.caller.as_ref(), repository)
}

/// Whether the viewer may delete in `repository` and deleting is enabled: the delete
/// buttons are shown only then.
fn may_delete(state: &AppState, viewer: &Viewer, repository: &str) -> bool {
    let options = state.registry.options();
    if !options.delete_enabled || options.read_only || mirrored(state, repository) {
        return false;
    }
    let endpoint = Endpoint::Manifest {
        name: repository,
        reference: "latest",
    };
    match (&state.http.auth, &viewer.caller) {
        (Some(auth), Some(caller)) => auth.permits(caller, &auth::need(&endpoint, &Method::DELETE)),
        _ => true,
    }
}

/// The request without its body, for the API's helpers that take one (handlers keep the parts:
/// a body is not `Sync`, so a reference to a whole request cannot cross an await).
fn bodiless(parts: &Parts) -> Request {
    Request::from_parts(parts.clone(), Body::empty())
}

fn query_param(request: &Parts, key: &str) -> Option<String> {
    form_urlencoded::parse(request.uri.query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn frame<'a>(title: &'a str, viewer: &'a Viewer, crumbs: &'a [(String, String)]) -> Frame<'a> {
    Frame {
        title,
        user: viewer.name(),
        crumbs,
        storage: true,
    }
}

fn repo_href(name: &str) -> String {
    format!("/ui/r/{}", url_part(name))
}

fn manifest_href(name: &str, reference: &str) -> String {
    format!("/ui/r/{}@{}", url_part(name), url_part(reference))
}

fn delete_href(name: &str, reference: &str) -> String {
    format!("/ui/delete/{}@{}", url_part(name), url_part(reference))
}

// ------------------------------------------------------------------ repositories --

async fn repositories(state: &AppState, request: &Parts) -> Response {
    let viewer = match authorize(state, request, &Endpoint::Catalog, &Method::GET).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let q = query_param(request, "q").unwrap_or_default();
    let needle = q.trim().to_ascii_lowercase();
    let page_no = query_param(request, "page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let all = match state.registry.all_repositories().await {
        Ok(all) => all,
        Err(e) => return error_page(e.into()),
    };
    let matching: Vec<&String> = all
        .iter()
        .filter(|r| needle.is_empty() || r.contains(needle.as_str()))
        .filter(|r| may_list(state, &viewer, r))
        .collect();
    let pages = matching.len().div_ceil(REPOSITORIES_PER_PAGE).max(1);
    let page_no = page_no.min(pages);
    let shown: Vec<&String> = matching
        .iter()
        .skip((page_no - 1) * REPOSITORIES_PER_PAGE)
        .take(REPOSITORIES_PER_PAGE)
        .copied()
        .collect();
    // Boxed: a stream of futures borrowing the names is otherwise not provably `Send` for
    // every lifetime, which axum's handler bound asks.
    let lookups: Vec<BoxFuture<'_, Option<berth_registry::RepositorySummary>>> = shown
        .iter()
        .map(|name| {
            let name = (*name).clone();
            let viewer = &viewer;
            async move {
                // Names are the catalog's; what is in a repository is for those who may pull.
                if !may_pull(state, viewer, &name) {
                    return None;
                }
                let repo = RepoName::parse(&name).ok()?;
                state.registry.repository_summary(&repo).await.ok()
            }
            .boxed()
        })
        .collect();
    let summaries: Vec<_> = stream::iter(lookups).buffered(8).collect().await;

    let mut body = String::new();
    let _ = write!(
        body,
        "<form class=\"search\" role=\"search\" method=\"get\" action=\"/ui/\">\
         <label for=\"q\">Search repositories</label> \
         <input id=\"q\" name=\"q\" type=\"search\" value=\"{}\" autocomplete=\"off\"> \
         <button type=\"submit\">Search</button></form>",
        esc(&q)
    );
    let _ = write!(
        body,
        "<p id=\"count\" aria-live=\"polite\">{} {}{}</p>",
        matching.len(),
        if matching.len() == 1 {
            "repository"
        } else {
            "repositories"
        },
        if needle.is_empty() {
            String::new()
        } else {
            format!(" matching “{}”", esc(&q))
        }
    );
    if !shown.is_empty() {
        body.push_str(
            "<div class=\"scroll\"><table id=\"repositories\"><caption class=\"sr\">Repositories\
             </caption><thead><tr><th scope=\"col\">Repository</th>\
             <th scope=\"col\" class=\"num\">Tags</th><th scope=\"col\" class=\"num\">Size</th>\
             <th scope=\"col\">Last push</th></tr></thead><tbody>",
        );
        for (name, summary) in shown.iter().zip(&summaries) {
            let _ = write!(
                body,
                "<tr data-name=\"{}\"><th scope=\"row\">{}</th>",
                esc(name),
                html::link(&repo_href(name), name)
            );
            match summary {
                Some(s) => {
                    let _ = write!(
                        body,
                        "<td class=\"num\">{}</td>{}<td>{}</td>",
                        s.tags,
                        size_cell(s.size, if s.partial { "≥ " } else { "" }),
                        time(s.last_push)
                    );
                }
                None => body.push_str("<td class=\"num\">—</td><td class=\"num\">—</td><td>—</td>"),
            }
            body.push_str("</tr>");
        }
        body.push_str("</tbody></table></div>");
    }
    if pages > 1 {
        let href = |p: usize| {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if !q.is_empty() {
                query.append_pair("q", &q);
            }
            query.append_pair("page", &p.to_string());
            format!("/ui/?{}", esc(&query.finish()))
        };
        body.push_str("<nav class=\"pages\" aria-label=\"Pages\">");
        if page_no > 1 {
            let _ = write!(
                body,
                "<a rel=\"prev\" href=\"{}\">← Previous</a> ",
                href(page_no - 1)
            );
        }
        let _ = write!(body, "<span>Page {page_no} of {pages}</span>");
        if page_no < pages {
            let _ = write!(
                body,
                " <a rel=\"next\" href=\"{}\">Next →</a>",
                href(page_no + 1)
            );
        }
        body.push_str("</nav>");
    }
    html_response(
        StatusCode::OK,
        html::page(&frame("Repositories", &viewer, &[]), &body),
    )
}

// -------------------------------------------------------------------- repository --

/// The columns the tag table sorts by.
#[derive(Clone, Copy, PartialEq)]
enum TagSort {
    Tag,
    Size,
    Type,
    Pushed,
}

impl TagSort {
    const ALL: [(TagSort, &'static str, &'static str); 4] = [
        (TagSort::Tag, "tag", "Tag"),
        (TagSort::Type, "type", "Media type"),
        (TagSort::Size, "size", "Size"),
        (TagSort::Pushed, "pushed", "Pushed"),
    ];

    fn parse(s: &str) -> TagSort {
        Self::ALL
            .iter()
            .find(|(_, key, _)| *key == s)
            .map_or(TagSort::Tag, |(sort, _, _)| *sort)
    }

    fn sort(self, tags: &mut [TagInfo], descending: bool) {
        tags.sort_by(|a, b| {
            let order = match self {
                TagSort::Tag => a.tag.cmp(&b.tag),
                TagSort::Size => a.size.cmp(&b.size),
                TagSort::Type => a.media_type.cmp(&b.media_type),
                TagSort::Pushed => a.pushed.cmp(&b.pushed),
            }
            .then_with(|| a.tag.cmp(&b.tag));
            if descending { order.reverse() } else { order }
        });
    }
}

async fn repository(state: &AppState, request: &Parts, name: &str) -> Response {
    let viewer = match authorize(state, request, &Endpoint::Tags { name }, &Method::GET).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let repo = match crate::repo(name) {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let tags = match state.registry.list_tags(&repo, None, None).await {
        Ok(page) => page,
        Err(e) => return error_page(e.into()),
    };
    let total = tags.items().len();
    let parsed: Vec<berth_oci::Tag> = tags
        .items()
        .iter()
        .take(MAX_TAGS_SHOWN)
        .filter_map(|t| berth_oci::Tag::parse(t).ok())
        .collect();
    let lookups: Vec<BoxFuture<'_, Option<TagInfo>>> = parsed
        .into_iter()
        .map(|tag| {
            let repo = &repo;
            async move { state.registry.tag_info(repo, &tag).await.ok() }.boxed()
        })
        .collect();
    let mut infos: Vec<TagInfo> = stream::iter(lookups)
        .buffered(16)
        .filter_map(std::future::ready)
        .collect()
        .await;
    let sort = TagSort::parse(&query_param(request, "sort").unwrap_or_default());
    let descending = query_param(request, "order").as_deref() == Some("desc");
    sort.sort(&mut infos, descending);
    let deletable = may_delete(state, &viewer, name);

    let mut body = String::new();
    if let Some(deleted) = query_param(request, "deleted") {
        let _ = write!(
            body,
            "<p class=\"notice\" role=\"status\">Deleted {}.</p>",
            esc(&deleted)
        );
    }
    let _ = write!(
        body,
        "<p>{total} {}{}</p>",
        if total == 1 { "tag" } else { "tags" },
        if total > MAX_TAGS_SHOWN {
            format!(" (the first {MAX_TAGS_SHOWN} are shown)")
        } else {
            String::new()
        }
    );
    if !infos.is_empty() {
        body.push_str(
            "<div class=\"scroll\"><table id=\"tags\"><caption class=\"sr\">Tags, sortable by \
             the column headers</caption><thead><tr>",
        );
        for (column, key, label) in TagSort::ALL {
            let (aria, next) = match (column == sort, descending) {
                (true, false) => (" aria-sort=\"ascending\"", "desc"),
                (true, true) => (" aria-sort=\"descending\"", "asc"),
                (false, _) => ("", "asc"),
            };
            let arrow = match (column == sort, descending) {
                (true, false) => " ▲",
                (true, true) => " ▼",
                _ => "",
            };
            let class = if column == TagSort::Size {
                " class=\"num\""
            } else {
                ""
            };
            let _ = write!(
                body,
                "<th scope=\"col\"{class}{aria}><a href=\"{}?sort={key}&amp;order={next}\">\
                 {label}{arrow}</a></th>",
                repo_href(name)
            );
            if column == TagSort::Tag {
                body.push_str("<th scope=\"col\">Digest</th>");
            }
            if column == TagSort::Size {
                body.push_str("<th scope=\"col\">Platforms</th>");
            }
        }
        if deletable {
            body.push_str("<th scope=\"col\"><span class=\"sr\">Actions</span></th>");
        }
        body.push_str("</tr></thead><tbody>");
        for info in &infos {
            let digest = info.digest.to_string();
            let _ = write!(
                body,
                "<tr data-tag=\"{tag}\" data-digest=\"{digest}\"><th scope=\"row\">{}</th>\
                 <td><a href=\"{}\" title=\"{digest}\"><code>{}</code></a></td>\
                 <td title=\"{mt}\">{}</td>{}<td>{}</td><td>{}</td>",
                html::link(&manifest_href(name, &info.tag), &info.tag),
                manifest_href(name, &digest),
                esc(&short_digest(&digest)),
                html::kind(&info.media_type),
                size_cell(info.size, ""),
                esc(&info.platforms.join(", ")),
                time(info.pushed),
                tag = esc(&info.tag),
                digest = esc(&digest),
                mt = esc(&info.media_type),
            );
            if deletable {
                let _ = write!(
                    body,
                    "<td><a class=\"danger\" href=\"{}\">Delete<span class=\"sr\"> tag {}</span>\
                     </a></td>",
                    delete_href(name, &info.tag),
                    esc(&info.tag)
                );
            }
            body.push_str("</tr>");
        }
        body.push_str("</tbody></table></div>");
    }
    let crumbs = [("/ui/".to_owned(), "Repositories".to_owned())];
    html_response(
        StatusCode::OK,
        html::page(&frame(name, &viewer, &crumbs), &body),
    )
}

// ---------------------------------------------------------------------- manifest --

/// The host clients pull from: `http.host`, else what the request was addressed to.
fn pull_host(state: &AppState, request: &Parts) -> (String, bool) {
    let ctx = crate::Ctx::new(state, &bodiless(request), None);
    let url = ctx.url("/");
    let (tls, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme == "https", rest),
        None => (ctx.tls, "registry.example/"),
    };
    (rest.trim_end_matches('/').to_owned(), tls)
}

fn commands(host: &str, tls: bool, name: &str, reference: &Reference) -> String {
    let image = match reference {
        Reference::Tag(t) => format!("{host}/{name}:{t}"),
        Reference::Digest(d) => format!("{host}/{name}@{d}"),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let (podman_flag, skopeo_flag) = if tls {
        ("", "")
    } else {
        (" --tls-verify=false", " --src-tls-verify=false")
    };
    let mut out = String::from("<section aria-labelledby=\"pull\"><h2 id=\"pull\">Pull</h2>");
    out.push_str(&html::command("docker", &format!("docker pull {image}")));
    out.push_str(&html::command(
        "podman",
        &format!("podman pull{podman_flag} {image}"),
    ));
    out.push_str(&html::command(
        "skopeo",
        &format!("skopeo copy{skopeo_flag} docker://{image} oci:{last}"),
    ));
    out.push_str("</section>");
    out
}

async fn manifest(state: &AppState, request: &Parts, name: &str, raw: &str) -> Response {
    let endpoint = Endpoint::Manifest {
        name,
        reference: raw,
    };
    let viewer = match authorize(state, request, &endpoint, &Method::GET).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let repo = match crate::repo(name) {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    let reference = match Reference::parse(raw) {
        Ok(r) => r,
        Err(_) => {
            return error_page(
                berth_registry::Error::ManifestUnknown {
                    reference: raw.to_owned(),
                }
                .into(),
            );
        }
    };
    let registry = &state.registry;
    let read = match registry.get_manifest(&repo, &reference).await {
        Ok(r) => r,
        Err(e) => return error_page(e.into()),
    };
    let digest = read.digest.to_string();
    let parsed = Manifest::parse(&read.body, Some(&read.media_type)).ok();
    let mut body = String::new();
    let _ = write!(
        body,
        "<dl class=\"facts\"><dt>Digest</dt><dd><code id=\"digest\">{}</code></dd>\
         <dt>Media type</dt><dd id=\"media-type\">{}</dd><dt>Manifest size</dt><dd>{}</dd>",
        esc(&digest),
        esc(&read.media_type),
        bytes(read.body.len() as u64)
    );
    if let Some(t) = parsed.as_ref().and_then(|m| m.artifact_type.as_deref()) {
        let _ = write!(
            body,
            "<dt>Artifact type</dt><dd id=\"artifact-type\">{}</dd>",
            esc(t)
        );
    }
    if let Some(subject) = parsed.as_ref().and_then(|m| m.subject.as_ref()) {
        let s = subject.digest.to_string();
        let _ = write!(
            body,
            "<dt>Refers to</dt><dd><a href=\"{}\"><code>{}</code></a></dd>",
            manifest_href(name, &s),
            esc(&short_digest(&s))
        );
    }
    body.push_str("</dl>");
    let (host, tls) = pull_host(state, request);
    body.push_str(&commands(&host, tls, name, &reference));

    match &parsed {
        Some(m) if m.kind.is_index() => {
            body.push_str(
                "<section aria-labelledby=\"platforms-h\"><h2 id=\"platforms-h\">Platforms</h2>\
                 <div class=\"scroll\"><table id=\"platforms\"><thead><tr>\
                 <th scope=\"col\">Platform</th><th scope=\"col\">Manifest</th>\
                 <th scope=\"col\">Media type</th><th scope=\"col\" class=\"num\">Size</th>\
                 </tr></thead><tbody>",
            );
            for child in &m.manifests {
                let d = child.digest.to_string();
                let platform = child
                    .platform
                    .as_ref()
                    .and_then(|p| {
                        let os = p.get("os")?.as_str()?;
                        let arch = p.get("architecture")?.as_str()?;
                        Some(match p.get("variant").and_then(|v| v.as_str()) {
                            Some(v) => format!("{os}/{arch}/{v}"),
                            None => format!("{os}/{arch}"),
                        })
                    })
                    .unwrap_or_else(|| "—".to_owned());
                let _ = write!(
                    body,
                    "<tr data-digest=\"{}\"><th scope=\"row\">{}</th><td><a href=\"{}\">\
                     <code>{}</code></a></td><td>{}</td>{}</tr>",
                    esc(&d),
                    esc(&platform),
                    manifest_href(name, &d),
                    esc(&short_digest(&d)),
                    esc(&child.media_type),
                    size_cell(child.size, "")
                );
            }
            body.push_str("</tbody></table></div></section>");
        }
        Some(m) => {
            if let Some(config) = &m.config {
                let image_config = registry
                    .image_config(&repo, &config.digest)
                    .await
                    .ok()
                    .flatten();
                body.push_str(&config_section(config, image_config.as_ref()));
            }
            let total = m.layers.iter().fold(0u64, |t, l| t.saturating_add(l.size));
            let _ = write!(
                body,
                "<section aria-labelledby=\"layers-h\"><h2 id=\"layers-h\">Layers</h2>\
                 <p>{} {}, <span id=\"total-size\" data-bytes=\"{total}\">{}</span> compressed \
                 ({total} bytes).</p>",
                m.layers.len(),
                if m.layers.len() == 1 {
                    "layer"
                } else {
                    "layers"
                },
                bytes(total)
            );
            if !m.layers.is_empty() {
                body.push_str(
                    "<div class=\"scroll\"><table id=\"layers\"><thead><tr>\
                     <th scope=\"col\" class=\"num\">#</th><th scope=\"col\">Digest</th>\
                     <th scope=\"col\">Media type</th><th scope=\"col\" class=\"num\">Size</th>\
                     </tr></thead><tbody>",
                );
                for (i, layer) in m.layers.iter().enumerate() {
                    let d = layer.digest.to_string();
                    let _ = write!(
                        body,
                        "<tr data-digest=\"{d}\"><td class=\"num\">{}</td><td><code title=\"{d}\">\
                         {}</code></td><td>{}</td>{}</tr>",
                        i + 1,
                        esc(&short_digest(&d)),
                        esc(&layer.media_type),
                        size_cell(layer.size, ""),
                        d = esc(&d),
                    );
                }
                body.push_str("</tbody></table></div>");
            }
            body.push_str("</section>");
        }
        None => body.push_str("<p>This manifest could not be parsed for display.</p>"),
    }

    // Referrers: signatures, SBOMs, attestations naming this manifest as their subject.
    match registry.referrers(&repo, &read.digest, None).await {
        Ok(index) => {
            body.push_str(
                "<section aria-labelledby=\"referrers-h\"><h2 id=\"referrers-h\">Referrers</h2>",
            );
            if index.manifests.is_empty() {
                body.push_str("<p>No signatures, SBOMs or attestations refer to it.</p>");
            } else {
                body.push_str(
                    "<div class=\"scroll\"><table id=\"referrers\"><thead><tr>\
                     <th scope=\"col\">Artifact type</th><th scope=\"col\">Manifest</th>\
                     <th scope=\"col\" class=\"num\">Size</th></tr></thead><tbody>",
                );
                for r in &index.manifests {
                    let d = r.digest.to_string();
                    let _ = write!(
                        body,
                        "<tr data-digest=\"{}\"><th scope=\"row\">{}</th><td><a href=\"{}\">\
                         <code>{}</code></a></td>{}</tr>",
                        esc(&d),
                        esc(r.artifact_type.as_deref().unwrap_or("—")),
                        manifest_href(name, &d),
                        esc(&short_digest(&d)),
                        size_cell(r.size, "")
                    );
                }
                body.push_str("</tbody></table></div>");
            }
            body.push_str("</section>");
        }
        Err(e) => tracing::warn!(error = %e, "the UI could not list referrers"),
    }

    if may_delete(state, &viewer, name) {
        body.push_str("<section aria-labelledby=\"delete-h\"><h2 id=\"delete-h\">Delete</h2><p>");
        if let Reference::Tag(t) = &reference {
            let _ = write!(
                body,
                "<a class=\"button danger\" href=\"{}\">Delete tag {}</a> ",
                delete_href(name, t.as_str()),
                esc(t.as_str())
            );
        }
        let _ = write!(
            body,
            "<a class=\"button danger\" href=\"{}\">Delete manifest</a></p></section>",
            delete_href(name, &digest)
        );
    }
    let crumbs = [
        ("/ui/".to_owned(), "Repositories".to_owned()),
        (repo_href(name), name.to_owned()),
    ];
    let title = match &reference {
        Reference::Tag(t) => format!("{name}:{t}"),
        Reference::Digest(d) => format!("{name}@{}", short_digest(&d.to_string())),
    };
    html_response(
        StatusCode::OK,
        html::page(&frame(&title, &viewer, &crumbs), &body),
    )
}

fn config_section(
    descriptor: &berth_oci::Descriptor,
    config: Option<&berth_registry::ImageConfig>,
) -> String {
    let mut out = String::from(
        "<section aria-labelledby=\"config-h\"><h2 id=\"config-h\">Configuration</h2>\
         <dl class=\"facts\" id=\"config\">",
    );
    let fact = |out: &mut String, id: &str, label: &str, value: &str| {
        let _ = write!(
            out,
            "<dt>{label}</dt><dd id=\"config-{id}\">{}</dd>",
            esc(value)
        );
    };
    let d = descriptor.digest.to_string();
    let _ = write!(
        out,
        "<dt>Config</dt><dd><code title=\"{}\">{}</code> ({}, {})</dd>",
        esc(&d),
        esc(&short_digest(&d)),
        esc(&descriptor.media_type),
        bytes(descriptor.size)
    );
    let Some(c) = config else {
        out.push_str("</dl></section>");
        return out;
    };
    if let Some(created) = &c.created {
        fact(&mut out, "created", "Created", created);
    }
    if let Some(p) = c.platform() {
        fact(&mut out, "platform", "Platform", &p);
    }
    let runtime = c.config.clone().unwrap_or_default();
    let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_default();
    if let Some(e) = &runtime.entrypoint {
        fact(&mut out, "entrypoint", "Entrypoint", &json(e));
    }
    if let Some(cmd) = &runtime.cmd {
        fact(&mut out, "cmd", "Cmd", &json(cmd));
    }
    if let Some(w) = runtime.working_dir.as_deref().filter(|w| !w.is_empty()) {
        fact(&mut out, "workdir", "Working directory", w);
    }
    if let Some(u) = runtime.user.as_deref().filter(|u| !u.is_empty()) {
        fact(&mut out, "user", "User", u);
    }
    out.push_str("</dl>");
    if let Some(env) = runtime.env.as_ref().filter(|e| !e.is_empty()) {
        out.push_str("<h3>Environment</h3><ul id=\"config-env\" class=\"plain\">");
        for e in env {
            let _ = write!(out, "<li><code>{}</code></li>", esc(e));
        }
        out.push_str("</ul>");
    }
    if let Some(labels) = runtime.labels.as_ref().filter(|l| !l.is_empty()) {
        out.push_str(
            "<h3>Labels</h3><div class=\"scroll\"><table id=\"config-labels\"><thead><tr>\
             <th scope=\"col\">Label</th><th scope=\"col\">Value</th></tr></thead><tbody>",
        );
        for (k, v) in labels {
            let _ = write!(
                out,
                "<tr><th scope=\"row\"><code>{}</code></th><td>{}</td></tr>",
                esc(k),
                esc(v)
            );
        }
        out.push_str("</tbody></table></div>");
    }
    if !c.history.is_empty() {
        out.push_str(
            "<h3>History</h3><div class=\"scroll\"><table id=\"config-history\"><thead><tr>\
             <th scope=\"col\">Created</th><th scope=\"col\">Step</th></tr></thead><tbody>",
        );
        for h in &c.history {
            let step = h
                .created_by
                .as_deref()
                .or(h.comment.as_deref())
                .unwrap_or("");
            let _ = write!(
                out,
                "<tr{}><td>{}</td><td><code>{}</code></td></tr>",
                if h.empty_layer {
                    " class=\"empty-layer\""
                } else {
                    ""
                },
                esc(h.created.as_deref().unwrap_or("—")),
                esc(step)
            );
        }
        out.push_str("</tbody></table></div>");
    }
    out.push_str("</section>");
    out
}

// ------------------------------------------------------------------------ delete --

/// Whether a POST may be acted on: not sent by another site. Browsers send `Sec-Fetch-Site`
/// (and `Origin` on every POST); a client that sends neither (curl) is not a browser a page
/// could drive.
fn same_origin(request: &Parts) -> bool {
    let headers = &request.headers;
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    if let Some(origin) = text("origin") {
        let host = text("x-forwarded-host")
            .and_then(|h| h.split(',').next())
            .or_else(|| text("host"))
            // HTTP/2 carries the host as `:authority`, which lands in the URI, not `Host`.
            .or_else(|| request.uri.authority().map(|a| a.as_str()))
            .map(str::trim);
        let origin_host = origin.split_once("://").map(|(_, h)| h);
        return host.is_some() && origin_host == host;
    }
    true
}

async fn delete(state: &AppState, request: &Parts, form: Body, name: &str, raw: &str) -> Response {
    let method = request.method.clone();
    let endpoint = Endpoint::Manifest {
        name,
        reference: raw,
    };
    // The API's DELETE, for the confirmation as for the deed.
    let viewer = match authorize(state, request, &endpoint, &Method::DELETE).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let options = state.registry.options();
    if !options.delete_enabled || options.read_only {
        return message_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Deleting is disabled",
            "This registry does not delete (storage.delete.enabled is off, or it is read-only).",
        );
    }
    let repo = match crate::repo(name) {
        Ok(r) => r,
        Err(e) => return error_page(e),
    };
    if mirrored(state, name) {
        return message_page(
            StatusCode::METHOD_NOT_ALLOWED,
            "Read-only mirror",
            "This repository mirrors an upstream registry (proxy): delete at the upstream instead.",
        );
    }
    let reference = match Reference::parse(raw) {
        Ok(r) => r,
        Err(e) => return error_page(berth_registry::Error::ReferenceInvalid(e).into()),
    };
    if method == Method::POST {
        if !same_origin(request) {
            return message_page(
                StatusCode::FORBIDDEN,
                "Refused",
                "This delete was sent from another site.",
            );
        }
        let ctx = crate::Ctx::new(state, &bodiless(request), viewer.caller.clone());
        let form = match http_body_util::BodyExt::collect(http_body_util::Limited::new(form, 4096))
            .await
        {
            Ok(c) => c.to_bytes(),
            Err(_) => {
                return message_page(StatusCode::BAD_REQUEST, "Bad request", "Unreadable form.");
            }
        };
        let confirmed = form_urlencoded::parse(&form).any(|(k, v)| k == "confirm" && v == "yes");
        if !confirmed {
            return message_page(
                StatusCode::BAD_REQUEST,
                "Not confirmed",
                "The delete was not confirmed.",
            );
        }
        return match crate::manifests::handle(&ctx, Method::DELETE, &repo, raw, Body::empty()).await
        {
            Ok(_) => {
                let mut query = form_urlencoded::Serializer::new(String::new());
                query.append_pair("deleted", &format!("{name}@{raw}"));
                let r = redirect(&format!("{}?{}", repo_href(name), query.finish()));
                tracing::info!(repository = name, reference = raw, user = ?viewer.name(),
                    "deleted through the web UI");
                r
            }
            Err(e) => error_page(e),
        };
    }
    // The confirmation: what would go, and a form that does it.
    let target = match state.registry.resolve(&repo, &reference).await {
        Ok(d) => d.to_string(),
        Err(e) => return error_page(e.into()),
    };
    // What a tag points at is the pull side's to know; delete rights alone do not tell it.
    let points_at = if may_pull(state, &viewer, name) {
        format!("it points at <code>{}</code>; ", esc(&target))
    } else {
        String::new()
    };
    let what = match &reference {
        Reference::Tag(t) => format!(
            "the tag <strong>{}</strong> of <strong>{}</strong> ({points_at}\
             the manifest stays, reachable by digest and by any other tag)",
            esc(t.as_str()),
            esc(name),
        ),
        Reference::Digest(d) => format!(
            "the manifest <code>{}</code> of <strong>{}</strong>, and every tag that points at it",
            esc(&d.to_string()),
            esc(name)
        ),
    };
    let body = format!(
        "<p>Delete {what}? This cannot be undone.</p>\
         <form method=\"post\" action=\"{action}\" class=\"confirm\">\
         <input type=\"hidden\" name=\"confirm\" value=\"yes\">\
         <button type=\"submit\" class=\"danger\" id=\"confirm-delete\">Delete</button> \
         <a href=\"{back}\">Cancel</a></form>",
        action = delete_href(name, raw),
        back = manifest_href(name, raw),
    );
    let crumbs = [
        ("/ui/".to_owned(), "Repositories".to_owned()),
        (repo_href(name), name.to_owned()),
    ];
    html_response(
        StatusCode::OK,
        html::page(&frame("Confirm delete", &viewer, &crumbs), &body),
    )
}

// ----------------------------------------------------------------------- storage --

async fn storage_summary(
    state: &AppState,
) -> berth_registry::Result<berth_registry::StorageSummary> {
    let mut last = state.ui.summary.lock().await;
    if let Some((at, summary)) = last.as_ref()
        && at.elapsed() < SUMMARY_REUSE
    {
        return Ok(summary.clone());
    }
    let summary = state.registry.storage_summary().await?;
    *last = Some((Instant::now(), summary.clone()));
    Ok(summary)
}

async fn gc_dry_run(state: &AppState) -> Result<GcDryRun, String> {
    let mut last = state.ui.gc.lock().await;
    if let Some((at, result)) = last.as_ref()
        && at.elapsed() < GC_DRY_RUN_REUSE
    {
        return result.clone();
    }
    let options = GcOptions {
        dry_run: true,
        delete_untagged: false,
        grace_period: state.http.ui.gc_grace_period,
        upload_age: None,
    };
    let result = state
        .registry
        .garbage_collect(&options)
        .await
        .map(|report| GcDryRun {
            blobs: report.blobs_swept.len(),
            bytes: report.bytes_freed,
            manifests_marked: report.manifests_marked,
            blobs_spared: report.blobs_spared,
            took: report.duration,
        })
        .map_err(|e| e.to_string());
    *last = Some((Instant::now(), result.clone()));
    result
}

async fn storage(state: &AppState, request: &Parts) -> Response {
    let viewer = match authorize(state, request, &Endpoint::Catalog, &Method::GET).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    // Totals over every repository: only for whoever may pull every one.
    let all = match state.registry.all_repositories().await {
        Ok(all) => all,
        Err(e) => return error_page(e.into()),
    };
    if !all.iter().all(|r| may_pull(state, &viewer, r)) {
        return message_page(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "The storage page shows totals over every repository: it needs pull access to all of them.",
        );
    }
    let (summary, gc) = tokio::join!(storage_summary(state), gc_dry_run(state));
    let summary = match summary {
        Ok(s) => s,
        Err(e) => return error_page(e.into()),
    };
    let mut body = String::new();
    let upload_bytes: u64 = summary.uploads.iter().map(|u| u.2).sum();
    let _ = write!(
        body,
        "<dl class=\"facts\" id=\"storage\"><dt>Repositories</dt><dd id=\"repositories\">{}</dd>\
         <dt>Blobs stored</dt><dd id=\"blobs\">{}</dd>\
         <dt>Bytes stored</dt><dd id=\"bytes\" data-bytes=\"{}\">{} ({} bytes)</dd>\
         <dt>Uploads in flight</dt><dd id=\"uploads\">{} ({})</dd>",
        all.len(),
        summary.blobs,
        summary.bytes,
        bytes(summary.bytes),
        summary.bytes,
        summary.uploads.len(),
        bytes(upload_bytes)
    );
    match &gc {
        Ok(gc) => {
            let _ = write!(
                body,
                "<dt>A garbage collection would free</dt><dd id=\"gc\" data-blobs=\"{}\" \
                 data-bytes=\"{}\">{} in {} {} (dry run: {} manifests kept, {} unreferenced \
                 blobs younger than the grace period spared; took {} ms)</dd>",
                gc.blobs,
                gc.bytes,
                bytes(gc.bytes),
                gc.blobs,
                if gc.blobs == 1 { "blob" } else { "blobs" },
                gc.manifests_marked,
                gc.blobs_spared,
                gc.took.as_millis()
            );
        }
        Err(e) => {
            let _ = write!(
                body,
                "<dt>A garbage collection would free</dt><dd id=\"gc\">unknown: the dry run \
                 failed ({})</dd>",
                esc(e)
            );
        }
    }
    body.push_str("</dl>");

    let mut by_size: Vec<(&String, u64)> = summary
        .repository_bytes
        .iter()
        .map(|(k, v)| (k, *v))
        .collect();
    by_size.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    by_size.truncate(CHART_BARS);
    if !by_size.is_empty() {
        body.push_str(
            "<section aria-labelledby=\"sizes-h\"><h2 id=\"sizes-h\">Largest repositories</h2>",
        );
        body.push_str(&chart(&by_size));
        body.push_str(
            "<div class=\"scroll\"><table id=\"sizes\"><caption class=\"sr\">Bytes linked by \
             each repository</caption><thead><tr><th scope=\"col\">Repository</th>\
             <th scope=\"col\" class=\"num\">Size</th></tr></thead><tbody>",
        );
        for (name, size) in &by_size {
            let _ = write!(
                body,
                "<tr><th scope=\"row\">{}</th>{}</tr>",
                html::link(&repo_href(name), name),
                size_cell(*size, "")
            );
        }
        body.push_str("</tbody></table></div></section>");
    }
    if !summary.uploads.is_empty() {
        body.push_str(
            "<section aria-labelledby=\"uploads-h\"><h2 id=\"uploads-h\">Uploads in flight</h2>\
             <div class=\"scroll\"><table id=\"upload-sessions\"><thead><tr>\
             <th scope=\"col\">Repository</th>\
             <th scope=\"col\" class=\"num\">Received</th></tr></thead><tbody>",
        );
        // No session id: with push rights on the repository, an id is enough to append to
        // or cancel the upload, and the API never lists them. A repository holding only an
        // upload is not in the catalog, so its name is shown only to who may pull it.
        for (repo, _id, size) in &summary.uploads {
            let repo = if may_pull(state, &viewer, repo) {
                esc(repo)
            } else {
                "—".to_owned()
            };
            let _ = write!(
                body,
                "<tr><th scope=\"row\">{repo}</th>{}</tr>",
                size_cell(*size, "")
            );
        }
        body.push_str("</tbody></table></div></section>");
    }
    let crumbs = [("/ui/".to_owned(), "Repositories".to_owned())];
    html_response(
        StatusCode::OK,
        html::page(&frame("Storage", &viewer, &crumbs), &body),
    )
}

/// A horizontal bar chart of repository sizes as inline SVG (attributes only, so the
/// stylesheet-only CSP allows it); the table after it carries the same numbers in text.
fn chart(bars: &[(&String, u64)]) -> String {
    const ROW: usize = 26;
    let max = bars.iter().map(|b| b.1).max().unwrap_or(1).max(1);
    let height = bars.len() * ROW + 4;
    let mut out = format!(
        "<figure class=\"chart\"><svg id=\"sizes-chart\" viewBox=\"0 0 640 {height}\" \
         role=\"img\" aria-labelledby=\"chart-title\" preserveAspectRatio=\"xMinYMin meet\">\
         <title id=\"chart-title\">Bytes linked by the {} largest repositories</title>",
        bars.len()
    );
    for (i, (name, size)) in bars.iter().enumerate() {
        let y = i * ROW + 2;
        let width = ((*size as f64 / max as f64) * 300.0).max(1.0);
        let label: String = if name.chars().count() > 30 {
            format!("{}…", name.chars().take(29).collect::<String>())
        } else {
            (*name).clone()
        };
        let _ = write!(
            out,
            "<text x=\"0\" y=\"{ty}\" class=\"label\">{}</text>\
             <rect x=\"230\" y=\"{y}\" width=\"{width:.1}\" height=\"{h}\" class=\"bar\"></rect>\
             <text x=\"{vx:.1}\" y=\"{ty}\" class=\"value\">{}</text>",
            esc(&label),
            bytes(*size),
            ty = y + 16,
            h = ROW - 8,
            vx = 236.0 + width,
        );
    }
    out.push_str("</svg></figure>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_from_other_sites_are_refused() {
        let request = |uri: &str, pairs: &[(&'static str, &'static str)]| {
            let mut builder = http::Request::builder().method(Method::POST).uri(uri);
            for (k, v) in pairs {
                builder = builder.header(*k, HeaderValue::from_static(v));
            }
            builder
                .body(())
                .unwrap_or_else(|e| panic!("{e}"))
                .into_parts()
                .0
        };
        let headers = |pairs: &[(&'static str, &'static str)]| request("/ui/x", pairs);
        // HTTP/2: no Host header, the host is the URI's authority.
        assert!(same_origin(&request(
            "https://reg:5000/ui/x",
            &[
                ("sec-fetch-site", "same-origin"),
                ("origin", "https://reg:5000")
            ]
        )));
        assert!(!same_origin(&request(
            "https://reg:5000/ui/x",
            &[("origin", "https://evil.example")]
        )));
        assert!(same_origin(&headers(&[])), "curl sends neither header");
        assert!(same_origin(&headers(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://reg:5000"),
            ("host", "reg:5000"),
        ])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(!same_origin(&headers(&[
            ("origin", "http://evil.example"),
            ("host", "reg:5000"),
        ])));
        assert!(!same_origin(&headers(&[("origin", "null")])));
    }

    #[test]
    fn commands_name_the_host_and_skip_tls_only_over_http() {
        let tag = Reference::parse("v1").unwrap_or_else(|e| panic!("{e}"));
        let plain = commands("reg:5000", false, "team/app", &tag);
        assert!(plain.contains("docker pull reg:5000/team/app:v1"));
        assert!(plain.contains("podman pull --tls-verify=false reg:5000/team/app:v1"));
        assert!(
            plain.contains(
                "skopeo copy --src-tls-verify=false docker://reg:5000/team/app:v1 oci:app"
            )
        );
        let tls = commands("reg.example", true, "<x>", &tag);
        assert!(tls.contains("podman pull reg.example/&lt;x&gt;:v1"));
    }

    #[test]
    fn the_chart_escapes_names() {
        let name = "<script>".to_owned();
        let svg = chart(&[(&name, 10)]);
        assert!(!svg.contains("<script>") && svg.contains("&lt;script&gt;"));
    }
}
