//! `GET /v2/<name>/referrers/<digest>[?artifactType=...]` (OCI Distribution 1.1).

use axum::body::Body;
use axum::response::Response;
use berth_oci::{RepoName, media_types};
use http::header;

use crate::{ApiError, Ctx, digest, set};

pub(crate) async fn get(
    ctx: &Ctx<'_>,
    repo: &RepoName,
    raw_digest: &str,
) -> Result<Response, ApiError> {
    let subject = digest(raw_digest)?;
    let artifact_type = ctx.query_param("artifactType").filter(|a| !a.is_empty());
    let index = ctx
        .registry()
        .referrers(repo, &subject, artifact_type.as_deref())
        .await?;
    let json = serde_json::to_vec(&index).map_err(|e| {
        ApiError::from(berth_registry::Error::ManifestInvalid(format!(
            "cannot encode referrers: {e}"
        )))
    })?;
    let mut r = Response::new(Body::from(json));
    set(&mut r, header::CONTENT_TYPE, media_types::OCI_INDEX);
    if artifact_type.is_some() {
        set(&mut r, "oci-filters-applied", "artifactType");
    }
    Ok(r)
}
