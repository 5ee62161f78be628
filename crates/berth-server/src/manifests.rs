//! `GET`, `HEAD`, `PUT` and `DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::response::Response;
use berth_notify::{Action, Target};
use berth_oci::{Manifest, Reference, RepoName};
use berth_registry::Error;
use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, Limited};

use crate::endpoint::Endpoint;
use crate::{ApiError, Ctx, cache_status, empty, error, set};

pub(crate) async fn handle(
    ctx: &Ctx<'_>,
    method: Method,
    repo: &RepoName,
    raw_reference: &str,
    body: Body,
) -> Result<Response, ApiError> {
    let reference = match Reference::parse(raw_reference) {
        Ok(r) => r,
        // Reading by something that cannot name a manifest finds none, as Distribution and
        // the conformance suite have it; only a digest-shaped one is a malformed digest.
        // Writing or deleting by it is the client's mistake: 400.
        Err(e)
            if matches!(method, Method::GET | Method::HEAD)
                && !matches!(e, berth_oci::NameError::InvalidDigest(_)) =>
        {
            return Err(ApiError::from(Error::ManifestUnknown {
                reference: raw_reference.to_owned(),
            }));
        }
        Err(e) => return Err(ApiError::from(Error::ReferenceInvalid(e))),
    };
    let registry = ctx.registry();
    match method {
        Method::GET | Method::HEAD => {
            let (manifest, cache) = match ctx.proxied(repo)? {
                Some((proxy, route)) => {
                    let (m, status) = proxy.manifest(&route, repo, &reference).await?;
                    (m, Some(status))
                }
                None => (registry.get_manifest(repo, &reference).await?, None),
            };
            // A pull, HEAD too: Distribution's GetManifest serves both and its listener
            // reports every read.
            if let Some(n) = ctx.notify()
                && n.wants(Action::Pull, &manifest.media_type)
            {
                let target = ctx.manifest_target(
                    n,
                    repo,
                    &reference,
                    &manifest.digest,
                    &manifest.media_type,
                    &manifest.body,
                );
                n.send(&[(Action::Pull, target)]).await;
            }
            let len = manifest.body.len();
            let mut r = if method == Method::HEAD {
                Response::new(Body::empty())
            } else {
                Response::new(Body::from(manifest.body))
            };
            set(&mut r, header::CONTENT_TYPE, &manifest.media_type);
            set(&mut r, header::CONTENT_LENGTH, len.to_string());
            let digest = manifest.digest.to_string();
            set(&mut r, header::ETAG, format!("\"{digest}\""));
            set(&mut r, "docker-content-digest", digest);
            if let Some(status) = cache {
                cache_status(&mut r, status);
            }
            Ok(r)
        }
        Method::PUT => {
            let limit = registry.options().max_manifest_size;
            let body = read_limited(body, limit).await?;
            let content_type = ctx.header(header::CONTENT_TYPE);
            let put = registry
                .put_manifest(repo, &reference, content_type, body.clone())
                .await?;
            if let Some(n) = ctx.notify() {
                // The manifest's own media type, as Distribution's event reports it (the
                // body was just validated, so it parses).
                let media_type = Manifest::parse(&body, content_type)
                    .map(|m| m.media_type().to_owned())
                    .unwrap_or_else(|_| Manifest::sniff_media_type(&body));
                if n.wants(Action::Push, &media_type) {
                    let target =
                        ctx.manifest_target(n, repo, &reference, &put.digest, &media_type, &body);
                    n.send(&[(Action::Push, target)]).await;
                }
            }
            let digest = put.digest.to_string();
            let mut r = empty(StatusCode::CREATED);
            set(
                &mut r,
                header::LOCATION,
                ctx.url(
                    &Endpoint::Manifest {
                        name: repo.as_str(),
                        reference: &digest,
                    }
                    .path(),
                ),
            );
            set(&mut r, "docker-content-digest", digest);
            if let Some(subject) = put.subject {
                set(&mut r, "oci-subject", subject.to_string());
            }
            Ok(r)
        }
        Method::DELETE => {
            let tags = registry.delete_manifest(repo, &reference).await?;
            if let Some(n) = ctx.notify()
                && n.wants(Action::Delete, "")
            {
                // By digest: the manifest, then each tag that pointed at it (Distribution
                // untags them through its tag service, which reports each); by tag: the tag.
                let mut events = Vec::with_capacity(tags.len() + 1);
                if let Reference::Digest(d) = &reference {
                    events.push((
                        Action::Delete,
                        Target::deleted(repo.as_str(), &d.to_string()),
                    ));
                }
                for tag in &tags {
                    events.push((
                        Action::Delete,
                        Target::deleted_tag(repo.as_str(), tag.as_str()),
                    ));
                }
                n.send(&events).await;
            }
            Ok(empty(StatusCode::ACCEPTED))
        }
        _ => Err(error::unsupported_method()),
    }
}

/// Reads a manifest body, refusing one larger than `limit` without buffering past it.
async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::from(
            Error::ManifestInvalid(format!("manifest is larger than the {limit} bytes allowed")),
        )),
        Err(e) => Err(ApiError::from(Error::ManifestInvalid(format!(
            "reading the request body failed: {e}"
        )))),
    }
}
