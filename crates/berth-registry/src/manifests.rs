//! Manifests: validate on push, store as a blob, link the revision, then move the tag.
//!
//! Order of writes on PUT (each atomic and durable): the pins of what it names, the manifest
//! bytes into the blob store, then together the revision link, the tag's history (`index`)
//! link and, for a manifest with a `subject`, its referrer link, and last, once all of those
//! are durable, the tag's `current` link. A crash at any point leaves either the old tag or
//! the new one, never a tag naming a manifest that is not fully stored.

use berth_oci::{Algorithm, Digest, Hasher, Manifest, Reference, RepoName, Tag};
use bytes::Bytes;
use futures_util::{FutureExt, StreamExt};

use crate::pins::Holder;
use crate::{Error, Registry, Result, layout, read_link, write_link};

/// What a manifest PUT stored.
#[derive(Debug, Clone)]
pub struct PutManifest {
    /// The manifest's digest.
    pub digest: Digest,
    /// Its `subject`, for the `OCI-Subject` header.
    pub subject: Option<Digest>,
}

/// A manifest as read back.
#[derive(Debug, Clone)]
pub struct ManifestRead {
    /// Its digest.
    pub digest: Digest,
    /// The media type it is served with.
    pub media_type: String,
    /// The exact bytes that were pushed.
    pub body: Bytes,
}

fn ignore_not_found(r: std::result::Result<(), berth_storage::StorageError>) -> Result<()> {
    match r {
        Err(e) if !e.is_not_found() => Err(e.into()),
        _ => Ok(()),
    }
}

fn digest_of(body: &[u8], algorithm: Algorithm) -> Digest {
    let mut h = Hasher::new(algorithm);
    h.update(body);
    h.finish()
}

/// Reference checks in flight while a manifest PUT checks what it references. On S3 each
/// check is a round trip or two, and an image references tens of layers: checked one after
/// another they were most of the PUT's time.
const REFERENCE_CHECKS: usize = 16;

/// A digest and whether the repository has it. Boxed: the checks are built by closures over
/// borrowed descriptors, which the Send bound on handler futures cannot see through otherwise.
type ReferenceCheck<'a> = futures_util::future::BoxFuture<'a, Result<(&'a Digest, bool)>>;

/// The first digest, in the order given, whose check answers false. Checks run
/// [`REFERENCE_CHECKS`] at a time; those still running when a missing one is found are
/// dropped. That is safe: they only read, and the one thing they write, a link cache entry,
/// is inserted without an await in between, so a dropped check leaves it whole or absent.
async fn first_missing(checks: Vec<ReferenceCheck<'_>>) -> Result<Option<&Digest>> {
    let mut results = futures_util::stream::iter(checks).buffered(REFERENCE_CHECKS);
    while let Some(result) = results.next().await {
        let (digest, present) = result?;
        if !present {
            return Ok(Some(digest));
        }
    }
    Ok(None)
}

impl Registry {
    /// Validates and stores a manifest under a tag or digest.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PutManifest> {
        self.store_manifest(Holder::Push, repo, reference, content_type, body)
            .await
    }

    /// Stores a manifest on behalf of `holder`. For [`Holder::Cache`] the check that every
    /// blob and child it references is linked is skipped (a pull-through cache stores a
    /// manifest before its layers, which are fetched when asked for), and its pins are the
    /// cache's.
    pub(crate) async fn store_manifest(
        &self,
        holder: Holder,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<PutManifest> {
        self.check_writable()?;
        let max = self.options().max_manifest_size;
        if body.len() > max {
            return Err(Error::ManifestInvalid(format!(
                "manifest is {} bytes, more than the {max} bytes allowed",
                body.len()
            )));
        }
        let manifest = Manifest::parse(&body, content_type)?;
        let digest = match reference {
            Reference::Digest(want) => {
                let actual = digest_of(&body, want.algorithm());
                if &actual != want {
                    return Err(Error::DigestMismatch {
                        expected: want.clone(),
                        actual,
                    });
                }
                actual
            }
            Reference::Tag(_) => digest_of(&body, Algorithm::Sha256),
        };
        // Pin before checking (see `pins`): a garbage collector that has not yet seen the pin
        // has already set a blob aside, so the checks below find it missing and the PUT fails
        // cleanly instead of linking a blob that is about to be deleted.
        let pinned: Vec<&Digest> = manifest
            .required_blobs()
            .chain(&manifest.manifests)
            .map(|d| &d.digest)
            .chain([&digest])
            .collect();
        let mut lease = self.pin_for(holder, pinned.iter().copied()).await?;
        let _guard = loop {
            let blobs = manifest
                .required_blobs()
                .map(|b| {
                    let digest = &b.digest;
                    let (pin, window) = (lease.pins.get(digest).copied(), lease.window);
                    async move {
                        // Known linked and present since the very pin relied on now (`pins`).
                        if let Some(pin) = pin
                            && self.inner.pins.still_verified(repo.as_str(), digest, pin)
                        {
                            return Ok((digest, true));
                        }
                        let unlinks = self.inner.pins.unlinks();
                        let present = self.blob_linked_and_present(repo, digest).await?;
                        if let (true, Some(pin)) = (present, pin) {
                            self.inner
                                .pins
                                .verified(repo.as_str(), digest, pin, window, unlinks);
                        }
                        Ok((digest, present))
                    }
                    .boxed()
                })
                .collect();
            let children = manifest
                .manifests
                .iter()
                .map(|c| {
                    let digest = &c.digest;
                    async move { Ok((digest, self.revision_exists(repo, digest).await?)) }.boxed()
                })
                .collect();
            let missing = if holder == Holder::Cache {
                None
            } else {
                match first_missing(blobs).await? {
                    Some(digest) => Some(digest),
                    None => first_missing(children).await?,
                }
            };
            // The spec: a manifest refused for a missing reference, blob or manifest, "MUST
            // result in one or more MANIFEST_BLOB_UNKNOWN errors" (Distribution agrees).
            if let Some(digest) = missing {
                return Err(Error::ManifestBlobUnknown {
                    digest: digest.clone(),
                });
            }

            let guard = self.lock_manifests_shared(repo).await;
            // After the pin (a blob written before a collector re-reads the pins is kept by
            // it; one written after is a new file the collector never touches), so no presence
            // check is needed and a driver may skip it.
            self.driver()
                .put_addressed(&layout::blob_data(&digest), body.clone())
                .await?;
            // The links below must land while the pins still protect what they reference;
            // after a stall longer than the lease, pin and check again.
            if lease.is_valid() {
                break guard;
            }
            drop(guard);
            lease = self.pin_for(holder, pinned.iter().copied()).await?;
        };
        // With the content durable, the links that do not depend on each other are written
        // together; the tag's `current` link moves only after all of them are durable.
        let revision_link = layout::revision_link(repo, &digest);
        let revision = self.write_link_cached(&revision_link, &digest);
        let referrer = async {
            match &manifest.subject {
                Some(subject) => {
                    let link = layout::referrer_link(repo, &subject.digest, &digest);
                    write_link(self.driver(), &link, &digest).await
                }
                None => Ok(()),
            }
        };
        // The tag's history names the digest before `current` moves to it: that history is
        // how a delete by digest finds the tags to remove (`tagindex`).
        let history = async {
            match reference {
                Reference::Tag(tag) => {
                    let link = layout::tag_index_link(repo, tag, &digest);
                    write_link(self.driver(), &link, &digest).await
                }
                Reference::Digest(_) => Ok(()),
            }
        };
        let joined = tokio::try_join!(revision, referrer, history);
        if lease.overran() {
            tracing::warn!(%digest, "manifest links were written more than a garbage-collection grace period after pinning; storage is too slow for the configured graceperiod");
        }
        // A first manifest may be what makes this repository appear in the catalog.
        self.inner.caches.forget_catalog();
        joined?;
        if let Reference::Tag(tag) = reference {
            self.write_link_cached(&layout::tag_current_link(repo, tag), &digest)
                .await?;
        }
        Ok(PutManifest {
            digest,
            subject: manifest.subject.map(|s| s.digest),
        })
    }

    /// True when `repo` links `digest` as a layer and its content is in the blob store.
    pub(crate) async fn blob_linked_and_present(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<bool> {
        let linked = read_link(self.driver(), &layout::layer_link(repo, digest))
            .await?
            .is_some_and(|d| &d == digest);
        if !linked {
            return Ok(false);
        }
        match self.driver().stat_whole(&layout::blob_data(digest)).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn revision_exists(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        Ok(self
            .read_link_cached(&layout::revision_link(repo, digest))
            .await?
            .is_some_and(|d| &d == digest))
    }

    /// Resolves a reference to the digest of a manifest in the repository.
    pub async fn resolve(&self, repo: &RepoName, reference: &Reference) -> Result<Digest> {
        let unknown = || Error::ManifestUnknown {
            reference: reference.to_string(),
        };
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(tag) => self
                .read_link_cached(&layout::tag_current_link(repo, tag))
                .await?
                .ok_or_else(unknown)?,
        };
        if !self.revision_exists(repo, &digest).await? {
            return Err(unknown());
        }
        Ok(digest)
    }

    /// Reads a manifest by tag or digest, verifying its bytes against its digest.
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<ManifestRead> {
        let digest = self.resolve(repo, reference).await?;
        if let Some(hit) = self.inner.caches.manifest(&digest) {
            return Ok(ManifestRead {
                digest,
                media_type: hit.media_type.to_string(),
                body: hit.body,
            });
        }
        let body = match self.driver().get(&layout::blob_data(&digest)).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Err(Error::ManifestUnknown {
                    reference: reference.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        if digest_of(&body, digest.algorithm()) != digest {
            tracing::error!(%digest, "stored manifest does not match its digest");
            return Err(Error::Corrupt { digest });
        }
        let media_type = Manifest::sniff_media_type(&body);
        self.inner.caches.insert_manifest(
            digest.clone(),
            crate::cache::CachedManifest {
                body: body.clone(),
                media_type: media_type.as_str().into(),
            },
        );
        Ok(ManifestRead {
            media_type,
            digest,
            body,
        })
    }

    /// Deletes by digest (the revision and every tag pointing at it) or by tag (the tag only).
    /// Returns the tags that were removed.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Vec<Tag>> {
        self.check_delete()?;
        let _guard = self.lock_manifests_exclusive(repo).await;
        match reference {
            Reference::Tag(tag) => {
                self.resolve(repo, reference).await?;
                self.driver().delete(&layout::tag_dir(repo, tag)).await?;
                self.inner
                    .caches
                    .link_written(&layout::tag_current_link(repo, tag));
                Ok(vec![tag.clone()])
            }
            Reference::Digest(digest) => {
                if !self.revision_exists(repo, digest).await? {
                    return Err(Error::ManifestUnknown {
                        reference: reference.to_string(),
                    });
                }
                // Tags first: a crash midway leaves the revision, still reachable by digest,
                // rather than a tag naming a deleted revision.
                let tags = self.tags_pointing_at(repo, digest).await?;
                for tag in &tags {
                    ignore_not_found(self.driver().delete(&layout::tag_dir(repo, tag)).await)?;
                    self.inner
                        .caches
                        .link_written(&layout::tag_current_link(repo, tag));
                }
                // Drop it from its subject's referrers before the revision goes, so the
                // referrers list never names a manifest that cannot be fetched.
                if let Ok(body) = self.driver().get(&layout::blob_data(digest)).await
                    && let Ok(manifest) = Manifest::parse(&body, None)
                    && let Some(subject) = manifest.subject
                {
                    let link = layout::referrer_link(repo, &subject.digest, digest);
                    ignore_not_found(self.driver().delete(&link.parent()).await)?;
                }
                let deleted = ignore_not_found(
                    self.driver()
                        .delete(&layout::revision_dir(repo, digest))
                        .await,
                );
                self.inner
                    .caches
                    .link_written(&layout::revision_link(repo, digest));
                deleted.map(|()| tags)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn digests() -> [Digest; 3] {
        [b"a", b"b", b"c"].map(|d| Digest::sha256_of(d))
    }

    /// Checks finish out of order, yet the first missing one in the given order is named:
    /// the first check answers only after the second has answered "missing" too.
    #[tokio::test]
    async fn first_missing_is_first_in_order_not_first_to_finish() {
        let [a, b, c] = digests();
        let (tx, rx) = oneshot::channel::<()>();
        let checks: Vec<ReferenceCheck<'_>> = vec![
            async {
                rx.await.expect("the second check signals");
                Ok((&a, false))
            }
            .boxed(),
            async {
                tx.send(()).expect("the first check waits");
                Ok((&b, false))
            }
            .boxed(),
            async { Ok((&c, true)) }.boxed(),
        ];
        assert_eq!(first_missing(checks).await.unwrap(), Some(&a));
    }

    /// A storage error before the first missing reference is the answer, and one after it
    /// is not, as when the references were checked one after another.
    #[tokio::test]
    async fn errors_and_missing_references_keep_their_order() {
        let [a, b, c] = digests();
        let failing = || Error::UploadInvalid("storage failed".into());
        let checks: Vec<ReferenceCheck<'_>> = vec![
            async { Ok((&a, true)) }.boxed(),
            async { Err(failing()) }.boxed(),
            async { Ok((&c, false)) }.boxed(),
        ];
        assert!(first_missing(checks).await.is_err());
        let checks: Vec<ReferenceCheck<'_>> = vec![
            async { Ok((&a, true)) }.boxed(),
            async { Ok((&b, false)) }.boxed(),
            async { Err(failing()) }.boxed(),
        ];
        assert_eq!(first_missing(checks).await.unwrap(), Some(&b));
        let all_there: Vec<ReferenceCheck<'_>> = vec![
            async { Ok((&a, true)) }.boxed(),
            async { Ok((&b, true)) }.boxed(),
        ];
        assert_eq!(first_missing(all_there).await.unwrap(), None);
    }
}
