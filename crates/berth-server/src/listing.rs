//! `GET /v2/_catalog` and `GET /v2/<name>/tags/list`, with the spec's `n`/`last` pagination
//! and `Link: <...>; rel="next"` when more entries remain.

use axum::body::Body;
use axum::response::Response;
use berth_oci::RepoName;
use berth_registry::{Error, Page, path_order};
use http::header;

use crate::endpoint::Endpoint;
use crate::{ApiError, Ctx, set};

/// Default and maximum page size of the catalog (`catalog.maxentries`), as in Distribution.
pub const DEFAULT_CATALOG_MAX_ENTRIES: usize = 1000;

fn page_size(ctx: &Ctx<'_>) -> Result<Option<usize>, ApiError> {
    match ctx.query_param("n") {
        None => Ok(None),
        Some(n) if n.is_empty() => Ok(None),
        Some(n) => n.parse::<usize>().map(Some).map_err(|_| {
            ApiError::from(Error::PaginationInvalid(format!(
                "n must be a non-negative integer, not {:?}",
                n.chars().take(20).collect::<String>()
            )))
        }),
    }
}

/// The body of a listing, serialized straight from the page (a `serde_json::Value` would copy
/// every name once more).
#[derive(serde::Serialize)]
struct Listing<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repositories: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<&'a [String]>,
}

fn json_response(value: &Listing<'_>, next: Option<String>) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Body::from(body));
    set(
        &mut r,
        header::CONTENT_TYPE,
        "application/json; charset=utf-8",
    );
    if let Some(next) = next {
        set(&mut r, header::LINK, format!("<{next}>; rel=\"next\""));
    }
    r
}

fn next_link(path: &str, page: &Page, n: Option<usize>) -> Option<String> {
    let (true, Some(last), Some(n)) = (page.more, page.items().last(), n) else {
        return None;
    };
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("last", last)
        .append_pair("n", &n.to_string())
        .finish();
    Some(format!("{path}?{query}"))
}

pub(crate) async fn catalog(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let max = ctx.state.catalog_max_entries;
    let n = match page_size(ctx)? {
        Some(n) if n > max => {
            return Err(ApiError::from(Error::PaginationInvalid(format!(
                "n={n} is more than catalog.maxentries={max}"
            ))));
        }
        Some(n) => n,
        None => max,
    };
    let last = ctx.query_param("last");
    let page = if ctx.catalog_filtered() {
        // Filtered before paginating, so pages are full and `last` works on what is shown.
        let all = ctx.registry().all_repositories().await?;
        let mut items = all
            .iter()
            .filter(|r| last.as_deref().is_none_or(|l| path_order(r, l).is_gt()))
            .filter(|r| ctx.may_list(r));
        let page_items: Vec<String> = items.by_ref().take(n).cloned().collect();
        Page::new(page_items, items.next().is_some())
    } else {
        ctx.registry().catalog(Some(n), last.as_deref()).await?
    };
    let next = next_link(&Endpoint::Catalog.path(), &page, Some(n));
    let body = Listing {
        name: None,
        repositories: Some(page.items()),
        tags: None,
    };
    Ok(json_response(&body, next))
}

pub(crate) async fn tags(ctx: &Ctx<'_>, repo: &RepoName) -> Result<Response, ApiError> {
    let n = page_size(ctx)?;
    let last = ctx.query_param("last");
    let (page, cache) = match ctx.proxied(repo)? {
        Some((proxy, route)) => {
            let (page, status) = proxy.tags(&route, repo, n, last.as_deref()).await?;
            (page, Some(status))
        }
        None => (
            ctx.registry().list_tags(repo, n, last.as_deref()).await?,
            None,
        ),
    };
    let next = next_link(
        &Endpoint::Tags {
            name: repo.as_str(),
        }
        .path(),
        &page,
        n,
    );
    let body = Listing {
        name: Some(repo.as_str()),
        repositories: None,
        tags: Some(page.items()),
    };
    let mut r = json_response(&body, next);
    if let Some(status) = cache {
        crate::cache_status(&mut r, status);
    }
    Ok(r)
}
