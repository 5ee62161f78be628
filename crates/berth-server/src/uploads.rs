//! Upload sessions: `POST /blobs/uploads/` (start, monolithic, mount), and `PATCH`, `PUT`,
//! `GET`, `DELETE` on `/blobs/uploads/<uuid>`.

use axum::body::Body;
use axum::response::Response;
use berth_notify::{Action, BLOB_MEDIA_TYPE};
use berth_oci::{ContentRange, RepoName};
use berth_registry::{Error, UploadId, UploadStatus};
use http::{Method, StatusCode, header};

use crate::endpoint::Endpoint;
use crate::{ApiError, Ctx, digest, empty, error, set};

/// `POST /v2/<name>/blobs/uploads/`
pub(crate) async fn start(
    ctx: &Ctx<'_>,
    repo: &RepoName,
    body: Body,
) -> Result<Response, ApiError> {
    let registry = ctx.registry();
    if let Some(mount) = ctx.query_param("mount") {
        // An unusable mount request falls back to a plain upload, as the spec allows.
        if let Ok(d) = berth_oci::Digest::parse(&mount) {
            let mounted = match ctx.query_param("from") {
                // From a repository the caller may not pull: a plain upload, so the blob's
                // presence there is not revealed.
                Some(from) => match RepoName::parse(&from) {
                    Ok(from) if ctx.may_pull(from.as_str()) => {
                        registry.mount_blob(repo, &from, &d).await?.then_some(from)
                    }
                    _ => None,
                },
                None => {
                    registry
                        .mount_blob_from_any(repo, &d, |name| ctx.may_pull(name))
                        .await?
                }
            };
            if let Some(from) = mounted {
                if let Some(n) = ctx.notify()
                    && n.wants(Action::Mount, BLOB_MEDIA_TYPE)
                {
                    let size = registry.stat_blob(repo, &d).await?;
                    let mut target = ctx.blob_target(repo, &d.to_string(), size);
                    target.from_repository = from.as_str().to_owned();
                    n.send(&[(Action::Mount, target)]).await;
                }
                return Ok(blob_created(ctx, repo, &d.to_string()));
            }
        }
    } else if let Some(raw) = ctx.query_param("digest") {
        let d = digest(&raw)?;
        let size = registry.push_blob(repo, &d, ctx.body(body)).await?;
        pushed(ctx, repo, &raw, size).await;
        return Ok(blob_created(ctx, repo, &raw));
    }
    let status = registry.start_upload(repo).await?;
    Ok(upload_response(ctx, repo, StatusCode::ACCEPTED, &status))
}

/// Methods on `/v2/<name>/blobs/uploads/<uuid>`.
pub(crate) async fn handle(
    ctx: &Ctx<'_>,
    method: Method,
    repo: &RepoName,
    raw_id: &str,
    body: Body,
) -> Result<Response, ApiError> {
    let id = UploadId::parse(raw_id)?;
    let registry = ctx.registry();
    match method {
        Method::GET | Method::HEAD => {
            let status = registry.upload_status(repo, &id).await?;
            Ok(upload_response(ctx, repo, StatusCode::NO_CONTENT, &status))
        }
        Method::PATCH => {
            let start = match ctx.header(header::CONTENT_RANGE) {
                None => None,
                Some(h) => match ContentRange::parse(h) {
                    Ok(range) => {
                        let length = ctx
                            .header(header::CONTENT_LENGTH)
                            .and_then(|l| l.parse::<u64>().ok());
                        // `end - start` cannot underflow (the parser checks end >= start),
                        // but adding one can overflow at u64::MAX: compare without it.
                        if let Some(length) = length
                            && length.checked_sub(1) != Some(range.end - range.start)
                        {
                            return Err(ApiError::from(Error::SizeInvalid(format!(
                                "Content-Length {length} does not match Content-Range {}-{}",
                                range.start, range.end
                            ))));
                        }
                        Some(range.start)
                    }
                    Err(_) => {
                        let size = registry.upload_status(repo, &id).await?.size;
                        return Err(range_invalid(ctx, repo, &id, size));
                    }
                },
            };
            match registry
                .append_chunk(repo, &id, start, ctx.body(body))
                .await
            {
                Ok(status) => Ok(upload_response(ctx, repo, StatusCode::ACCEPTED, &status)),
                Err(Error::RangeInvalid { size }) => Err(range_invalid(ctx, repo, &id, size)),
                Err(e) => Err(e.into()),
            }
        }
        Method::PUT => {
            let raw = ctx.query_param("digest").ok_or_else(|| {
                ApiError::from(Error::DigestSyntax(berth_oci::DigestError::Malformed(
                    "missing ?digest= parameter".into(),
                )))
            })?;
            let d = digest(&raw)?;
            let size = registry
                .finish_upload(repo, &id, &d, Some(ctx.body(body)))
                .await?;
            pushed(ctx, repo, &raw, size).await;
            Ok(blob_created(ctx, repo, &raw))
        }
        Method::DELETE => {
            registry.cancel_upload(repo, &id).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        _ => Err(error::unsupported_method()),
    }
}

/// A completed blob upload (Distribution's `BlobPushed`, from the writer's commit).
async fn pushed(ctx: &Ctx<'_>, repo: &RepoName, digest: &str, size: u64) {
    if let Some(n) = ctx.notify()
        && n.wants(Action::Push, BLOB_MEDIA_TYPE)
    {
        let target = ctx.blob_target(repo, digest, size);
        n.send(&[(Action::Push, target)]).await;
    }
}

fn blob_created(ctx: &Ctx<'_>, repo: &RepoName, digest: &str) -> Response {
    let mut r = empty(StatusCode::CREATED);
    set(
        &mut r,
        header::LOCATION,
        ctx.url(
            &Endpoint::Blob {
                name: repo.as_str(),
                digest,
            }
            .path(),
        ),
    );
    set(&mut r, "docker-content-digest", digest);
    r
}

/// Distribution's `Range` form for an upload: `0-<last byte>`, and `0-0` when empty.
fn range_value(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

/// Where an upload session continues: both its progress responses and a refused chunk send
/// the client there.
fn upload_path(repo: &RepoName, id: &str) -> String {
    Endpoint::Upload {
        name: repo.as_str(),
        id,
    }
    .path()
}

fn upload_response(
    ctx: &Ctx<'_>,
    repo: &RepoName,
    status: StatusCode,
    s: &UploadStatus,
) -> Response {
    let mut r = empty(status);
    set(
        &mut r,
        header::LOCATION,
        ctx.url(&upload_path(repo, s.id.as_str())),
    );
    set(&mut r, header::RANGE, range_value(s.size));
    set(&mut r, "docker-upload-uuid", s.id.as_str());
    r
}

/// 416 for a chunk that does not continue the upload, with where it stands.
fn range_invalid(ctx: &Ctx<'_>, repo: &RepoName, id: &UploadId, size: u64) -> ApiError {
    ApiError::from(Error::RangeInvalid { size })
        .with_header(header::LOCATION, ctx.url(&upload_path(repo, id.as_str())))
        .with_header(header::RANGE, range_value(size))
        .with_header(
            http::HeaderName::from_static("docker-upload-uuid"),
            id.as_str().to_owned(),
        )
}
