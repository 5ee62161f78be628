//! Reading blobs out of a repository, and unlinking them.
//!
//! A repository serves a blob only if it links it: `_layers/<alg>/<hex>/link` for layers and
//! configs, or a manifest revision link for manifests fetched through the blob endpoint. The
//! blob store itself is global and content-addressed; links are what keep repositories apart.

use berth_oci::{ByteRange, Digest, RangeRequest, RepoName};

use crate::{ByteStream, Error, Registry, Result, layout, read_link};

/// An open blob, ready to stream.
pub struct BlobRead {
    /// The blob's digest.
    pub digest: Digest,
    /// Its full size.
    pub size: u64,
    /// The part being sent, if a range was asked for.
    pub range: Option<ByteRange>,
    /// The bytes (all of them, or the range).
    pub body: ByteStream,
}

impl Registry {
    /// True when `repo` links `digest` as a layer or manifest.
    pub(crate) async fn is_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        if read_link(self.driver(), &layout::layer_link(repo, digest))
            .await?
            .is_some_and(|d| &d == digest)
        {
            return Ok(true);
        }
        Ok(
            read_link(self.driver(), &layout::revision_link(repo, digest))
                .await?
                .is_some_and(|d| &d == digest),
        )
    }

    /// The size of a blob the repository links. BlobUnknown otherwise.
    pub async fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        if !self.is_linked(repo, digest).await? {
            return Err(Error::BlobUnknown {
                digest: digest.clone(),
            });
        }
        match self.driver().stat_whole(&layout::blob_data(digest)).await {
            Ok(m) => Ok(m.size),
            Err(e) if e.is_not_found() => Err(Error::BlobUnknown {
                digest: digest.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Opens a blob for streaming, all of it or the `range` asked for.
    pub async fn read_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<RangeRequest>,
    ) -> Result<BlobRead> {
        let size = self.stat_blob(repo, digest).await?;
        let range = range
            .map(|r| r.resolve(size))
            .transpose()
            .map_err(|_| Error::RangeNotSatisfiable { size })?;
        let (offset, len) = range.map_or((0, size), |r| (r.start, r.len()));
        let body = match self
            .driver()
            .reader(&layout::blob_data(digest), offset, Some(len))
            .await
        {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Err(Error::BlobUnknown {
                    digest: digest.clone(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        Ok(BlobRead {
            digest: digest.clone(),
            size,
            range,
            body,
        })
    }

    /// Whether blob GETs should first ask [`Registry::blob_redirect`] (the driver can hand
    /// out URLs to its bytes and is configured to).
    pub fn redirects_blobs(&self) -> bool {
        self.driver().redirects()
    }

    /// A URL the client may fetch the blob from directly (a presigned S3 URL), after the
    /// same link check as a read, and the blob's size. `None`: serve it through
    /// [`Registry::read_blob`].
    pub async fn blob_redirect(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<(String, u64)>> {
        let size = self.stat_blob(repo, digest).await?;
        let url = self
            .driver()
            .redirect_url(&layout::blob_data(digest))
            .await?;
        Ok(url.map(|url| (url, size)))
    }

    /// Unlinks a blob from a repository; the content stays until garbage collection.
    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.check_delete()?;
        match self.unlink_layer(repo, digest).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Err(Error::BlobUnknown {
                digest: digest.clone(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes `repo`'s layer link to `digest` (NotFound when there is none), and forgets
    /// that this process verified it (`pins`): before and after the delete, so that a check
    /// that read the link while it was going is voided either way.
    pub(crate) async fn unlink_layer(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> berth_storage::Result<()> {
        self.inner.pins.unlinked(repo.as_str(), digest);
        let link = layout::layer_link(repo, digest);
        let deleted = self.driver().delete(&link.parent()).await;
        self.inner.pins.unlinked(repo.as_str(), digest);
        deleted
    }
}
