//! `GET`, `HEAD` and `DELETE /v2/<name>/blobs/<digest>`.

use axum::body::Body;
use axum::response::Response;
use berth_notify::{Action, BLOB_MEDIA_TYPE, Target};
use berth_oci::{Digest, RepoName};
use http::{Method, StatusCode, header};

use crate::{ApiError, Ctx, cache_status, digest, empty, error, set};

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
            let (size, cache) = match ctx.proxied(repo)? {
                Some((proxy, route)) => {
                    let (size, status) = proxy.blob_size(&route, repo, &digest).await?;
                    (size, Some(status))
                }
                None => (registry.stat_blob(repo, &digest).await?, None),
            };
            pulled(ctx, repo, &digest, size).await;
            let mut r = empty(StatusCode::OK);
            set(&mut r, header::CONTENT_LENGTH, size.to_string());
            blob_headers(&mut r, &digest.to_string());
            if let Some(status) = cache {
                cache_status(&mut r, status);
            }
            Ok(r)
        }
        Method::GET if ctx.proxied(repo)?.is_some() => {
            let Some((proxy, route)) = ctx.proxied(repo)? else {
                return Err(error::unsupported_method());
            };
            // A malformed Range header is ignored, as RFC 9110 §14.2 says.
            let range = ctx
                .header(header::RANGE)
                .and_then(|h| berth_oci::RangeRequest::parse(h).ok().flatten());
            // Cached on object storage with redirects on: the bucket serves it. One still
            // arriving exists only here and is served through berth.
            if registry.redirects_blobs() {
                match registry.blob_redirect(repo, &digest).await {
                    Ok(Some((url, size))) => {
                        proxy.served_elsewhere(&route, repo, &digest, size);
                        pulled(ctx, repo, &digest, size).await;
                        let mut r = empty(StatusCode::TEMPORARY_REDIRECT);
                        set(&mut r, header::LOCATION, url);
                        set(&mut r, "docker-content-digest", digest.to_string());
                        cache_status(&mut r, berth_proxy::CacheStatus::Hit);
                        return Ok(r);
                    }
                    Ok(None) | Err(berth_registry::Error::BlobUnknown { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let (blob, status) = proxy.blob(&route, repo, &digest, range).await?;
            pulled(ctx, repo, &digest, blob.size).await;
            let mut r = blob_response(blob);
            cache_status(&mut r, status);
            Ok(r)
        }
        Method::GET => {
            // Object storage with redirects on (Distribution's `storage.redirect`): the bytes
            // go from the bucket to the client, berth only checks the link.
            if registry.redirects_blobs()
                && let Some((url, size)) = registry.blob_redirect(repo, &digest).await?
            {
                pulled(ctx, repo, &digest, size).await;
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
            pulled(ctx, repo, &digest, blob.size).await;
            Ok(blob_response(blob))
        }
        Method::DELETE => {
            registry.delete_blob(repo, &digest).await?;
            if let Some(n) = ctx.notify()
                && n.wants(Action::Delete, "")
            {
                let target = Target::deleted(repo.as_str(), &digest.to_string());
                n.send(&[(Action::Delete, target)]).await;
            }
            let mut r = empty(StatusCode::ACCEPTED);
            set(&mut r, "docker-content-digest", digest.to_string());
            Ok(r)
        }
        _ => Err(error::unsupported_method()),
    }
}

/// The answer to a GET: the bytes, with the headers of the whole blob or of the range.
fn blob_response(blob: berth_registry::BlobRead) -> Response {
    let digest = blob.digest.to_string();
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
    blob_headers(&mut r, &digest);
    r
}

/// A blob read (GET, a redirect, or HEAD: Distribution's blob HEAD serves through the same
/// `ServeBlob` that reports pulls).
async fn pulled(ctx: &Ctx<'_>, repo: &RepoName, digest: &Digest, size: u64) {
    if let Some(n) = ctx.notify()
        && n.wants(Action::Pull, BLOB_MEDIA_TYPE)
    {
        let target = ctx.blob_target(repo, &digest.to_string(), size);
        n.send(&[(Action::Pull, target)]).await;
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
