//! `GET`, `HEAD` and `DELETE /v2/<name>/blobs/<digest>`.

use axum::body::Body;
use axum::response::Response;
use berth_oci::RepoName;
use http::{Method, StatusCode, header};

use crate::{ApiError, Ctx, digest, empty, error, set};

pub(crate) async fn handle(
    ctx: &Ctx<'_>,
    method: Method,
    repo: &RepoName,
    raw_digest: &str,
) -> Result<Response, ApiError> {
    let digest = digest(raw_digest)?;
    let registry = ctx.registry();
    match method {
        Method::HEAD => {
            let size = registry.stat_blob(repo, &digest).await?;
            let mut r = empty(StatusCode::OK);
            set(&mut r, header::CONTENT_LENGTH, size.to_string());
            blob_headers(&mut r, &digest.to_string());
            Ok(r)
        }
        Method::GET => {
            // Object storage with redirects on (Distribution's `storage.redirect`): the bytes
            // go from the bucket to the client, berth only checks the link.
            if registry.redirects_blobs()
                && let Some(url) = registry.blob_redirect(repo, &digest).await?
            {
                let mut r = empty(StatusCode::TEMPORARY_REDIRECT);
                set(&mut r, header::LOCATION, url);
                set(&mut r, "docker-content-digest", digest.to_string());
                return Ok(r);
            }
            // A malformed Range header is ignored, as RFC 9110 §14.2 says.
            let range = ctx
                .header(header::RANGE)
                .and_then(|h| berth_oci::RangeRequest::parse(h).ok().flatten());
            let blob = registry.read_blob(repo, &digest, range).await?;
            let mut r = Response::new(Body::from_stream(blob.body));
            match blob.range {
                Some(range) => {
                    *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                    set(&mut r, header::CONTENT_LENGTH, range.len().to_string());
                    set(
                        &mut r,
                        header::CONTENT_RANGE,
                        format!("bytes {}-{}/{}", range.start, range.end, blob.size),
                    );
                }
                None => set(&mut r, header::CONTENT_LENGTH, blob.size.to_string()),
            }
            blob_headers(&mut r, &digest.to_string());
            Ok(r)
        }
        Method::DELETE => {
            registry.delete_blob(repo, &digest).await?;
            let mut r = empty(StatusCode::ACCEPTED);
            set(&mut r, "docker-content-digest", digest.to_string());
            Ok(r)
        }
        _ => Err(error::unsupported_method()),
    }
}

fn blob_headers(r: &mut Response, digest: &str) {
    set(r, "docker-content-digest", digest);
    set(r, header::ACCEPT_RANGES, "bytes");
    set(r, header::CONTENT_TYPE, "application/octet-stream");
    set(r, header::ETAG, format!("\"{digest}\""));
    // Content-addressed: the bytes behind a digest never change.
    set(r, header::CACHE_CONTROL, "max-age=31536000");
}
