//! The referrers API (OCI Distribution 1.1): which manifests in a repository name a given
//! manifest as their `subject` — signatures, SBOMs, attestations.
//!
//! Distribution answers this by scanning every manifest; berth keeps an index written at
//! manifest PUT (`_referrers/<subject>/<referrer>/link`, see `layout`), so a listing reads
//! only the referrers themselves. Each entry is re-read from the stored manifest, which keeps
//! the descriptor exact and skips entries whose manifest has since been deleted.

use std::collections::BTreeMap;

use berth_oci::{Descriptor, Digest, Manifest, RepoName, media_types};
use serde::Serialize;

use crate::{Registry, Result, layout, read_link};

/// The referrers of one subject, as an OCI image index.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrersIndex {
    /// Always 2.
    pub schema_version: u32,
    /// Always the OCI index media type.
    pub media_type: &'static str,
    /// One descriptor per referrer.
    pub manifests: Vec<Descriptor>,
}

impl Registry {
    /// Lists the manifests whose subject is `subject`, optionally only those of one artifact
    /// type. An unknown subject has no referrers: an empty index, not an error.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<ReferrersIndex> {
        let dir = layout::referrers_dir(repo, subject);
        let mut manifests = Vec::new();
        let algorithms = match self.driver().list(&dir).await {
            Ok(a) => a,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let mut digests = Vec::new();
        for alg in algorithms {
            let Ok(alg_dir) = dir.join(&alg) else {
                continue;
            };
            let hexes = match self.driver().list(&alg_dir).await {
                Ok(h) => h,
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e.into()),
            };
            for hex in hexes {
                if let Ok(d) = Digest::parse(&format!("{alg}:{hex}")) {
                    digests.push(d);
                }
            }
        }
        digests.sort();
        for digest in digests {
            let link = layout::referrer_link(repo, subject, &digest);
            if read_link(self.driver(), &link).await?.as_ref() != Some(&digest) {
                continue;
            }
            let Some(descriptor) = self.referrer_descriptor(repo, &digest).await? else {
                continue;
            };
            if artifact_type.is_some_and(|want| descriptor.artifact_type.as_deref() != Some(want)) {
                continue;
            }
            manifests.push(descriptor);
        }
        Ok(ReferrersIndex {
            schema_version: 2,
            media_type: media_types::OCI_INDEX,
            manifests,
        })
    }

    async fn referrer_descriptor(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<Descriptor>> {
        let read = match self
            .get_manifest(repo, &berth_oci::Reference::Digest(digest.clone()))
            .await
        {
            Ok(m) => m,
            Err(crate::Error::ManifestUnknown { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Ok(manifest) = Manifest::parse(&read.body, Some(&read.media_type)) else {
            return Ok(None);
        };
        Ok(Some(Descriptor {
            media_type: read.media_type,
            digest: read.digest,
            size: read.body.len() as u64,
            urls: None,
            annotations: manifest
                .annotations
                .clone()
                .filter(|a: &BTreeMap<_, _>| !a.is_empty()),
            artifact_type: manifest.effective_artifact_type().map(str::to_owned),
            platform: None,
        }))
    }
}
