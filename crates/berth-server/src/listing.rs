//! `GET /v2/_catalog` and `GET /v2/<name>/tags/list`, with the spec's `n`/`last` pagination
//! and `Link: <...>; rel="next"` when more entries remain.

use axum::body::Body;
use axum::response::Response;
use berth_oci::RepoName;
use berth_registry::{Error, Page};
use http::header;

use crate::{ApiError, Ctx, set};

/// Default and maximum page size of the catalog (`catalog.maxentries`), as in Distribution.
pub const DEFAULT_CATALOG_MAX_ENTRIES: usize = 1000;

fn page_size(ctx: &Ctx<'_>) -> Result<Option<usize>, ApiError> {
    match ctx.query_param("n") {
        None => Ok(None),
        Some(n) if n.is_empty() => Ok(None),
        Some(n) => n.parse::<usize>().map(Some).map_err(|_| {
            ApiError(Error::PaginationInvalid(format!(
                "n must be a non-negative integer, not {:?}",
                n.chars().take(20).collect::<String>()
            )))
        }),
    }
}

fn json_response(value: serde_json::Value, next: Option<String>) -> Response {
    let mut r = Response::new(Body::from(value.to_string()));
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
    let (true, Some(last), Some(n)) = (page.more, page.items.last(), n) else {
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
            return Err(ApiError(Error::PaginationInvalid(format!(
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
        Page {
            items: page_items,
            more: items.next().is_some(),
        }
    } else {
        ctx.registry().catalog(Some(n), last.as_deref()).await?
    };
    let next = next_link("/v2/_catalog", &page, Some(n));
    Ok(json_response(
        serde_json::json!({ "repositories": page.items }),
        next,
    ))
}

/// The catalog's order: component by component, as `berth-registry` sorts it.
fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

pub(crate) async fn tags(ctx: &Ctx<'_>, repo: &RepoName) -> Result<Response, ApiError> {
    let n = page_size(ctx)?;
    let last = ctx.query_param("last");
    let page = ctx.registry().list_tags(repo, n, last.as_deref()).await?;
    let next = next_link(&format!("/v2/{repo}/tags/list"), &page, n);
    Ok(json_response(
        serde_json::json!({ "name": repo.as_str(), "tags": page.items }),
        next,
    ))
}
