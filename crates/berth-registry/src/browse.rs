//! What the web UI shows about stored content, computed from the same reads the API serves:
//! a tag's manifest with its sizes and platforms and when it was pushed, a repository's
//! summary (tags, bytes, last push), an image's config, and the storage totals.
//!
//! Everything here reads; nothing writes. A repository's summary costs a tag listing (cached
//! by its directory stamp), one link read and one stat per tag, and the manifests (cached by
//! digest), so a page of repositories costs what its own repositories hold, never a walk of
//! the whole store. Only [`Registry::storage_summary`] walks everything, for the storage page.

use std::collections::{BTreeMap, HashSet};
use std::time::SystemTime;

use berth_oci::{Digest, Manifest, Reference, RepoName, Tag};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, stream};

use crate::layout::{self, Entry};
use crate::{Registry, Result};

/// Tags read at once when summarising a repository.
const CONCURRENCY: usize = 16;

/// A repository's summary counts the bytes of at most this many tags; beyond, the size is
/// marked partial rather than making one page cost thousands of reads.
pub const SUMMARY_MAX_TAGS: usize = 200;

/// A config blob larger than this is not parsed for display.
const MAX_CONFIG_SIZE: u64 = 1024 * 1024;

/// A tag's push time and the blobs it reaches, on its way.
type TagReach<'a> = BoxFuture<'a, Option<(Option<SystemTime>, Vec<(Digest, u64)>)>>;

/// One tag, as the repository page lists it.
#[derive(Debug, Clone)]
pub struct TagInfo {
    /// The tag.
    pub tag: String,
    /// The manifest it points at.
    pub digest: Digest,
    /// The manifest's media type.
    pub media_type: String,
    /// Compressed bytes a pull of everything it names fetches: the manifest, its config and
    /// layers, or for an index the index and each child's.
    pub size: u64,
    /// `os/arch[/variant]` of each image it holds.
    pub platforms: Vec<String>,
    /// When the tag last moved (its `current` link was written).
    pub pushed: Option<SystemTime>,
}

/// A repository, as the repository list shows it.
#[derive(Debug, Clone, Default)]
pub struct RepositorySummary {
    /// Number of tags.
    pub tags: usize,
    /// Distinct bytes the tags reach (manifests, configs, layers, index children).
    pub size: u64,
    /// More tags than [`SUMMARY_MAX_TAGS`]: `size` and `last_push` cover the first ones.
    pub partial: bool,
    /// The latest tag move.
    pub last_push: Option<SystemTime>,
}

/// Totals over the whole store, for the storage page.
#[derive(Debug, Clone, Default)]
pub struct StorageSummary {
    /// Blobs stored (manifests included).
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Upload sessions in progress: repository, session id, bytes received.
    pub uploads: Vec<(String, String, u64)>,
    /// Bytes of the distinct blobs each repository links (layers, configs, manifests).
    pub repository_bytes: BTreeMap<String, u64>,
}

/// The parts of an image config (OCI image-spec `config.json`) the UI shows.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ImageConfig {
    /// Creation time as written by the builder.
    pub created: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// CPU architecture.
    pub architecture: Option<String>,
    /// CPU variant.
    pub variant: Option<String>,
    /// The runtime configuration.
    pub config: Option<RuntimeConfig>,
    /// How each layer was made.
    #[serde(default)]
    pub history: Vec<History>,
}

/// `config` inside an image config.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    /// `Entrypoint`
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`
    pub cmd: Option<Vec<String>>,
    /// `Env`
    pub env: Option<Vec<String>>,
    /// `Labels`
    pub labels: Option<BTreeMap<String, String>>,
    /// `WorkingDir`
    pub working_dir: Option<String>,
    /// `User`
    pub user: Option<String>,
}

/// One `history` entry of an image config.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct History {
    /// When.
    pub created: Option<String>,
    /// The build step.
    pub created_by: Option<String>,
    /// A note.
    pub comment: Option<String>,
    /// The step added no layer.
    #[serde(default)]
    pub empty_layer: bool,
}

/// `os/arch[/variant]` from an index entry's `platform` object.
fn platform_of(value: &serde_json::Value) -> Option<String> {
    let os = value.get("os")?.as_str()?;
    let arch = value.get("architecture")?.as_str()?;
    Some(match value.get("variant").and_then(|v| v.as_str()) {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    })
}

impl ImageConfig {
    /// `os/arch[/variant]`, when the config names them.
    pub fn platform(&self) -> Option<String> {
        let (os, arch) = (self.os.as_deref()?, self.architecture.as_deref()?);
        Some(match self.variant.as_deref() {
            Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
            _ => format!("{os}/{arch}"),
        })
    }
}

impl Registry {
    /// When `tag` last moved: its `current` link's modification time.
    pub async fn tag_pushed(&self, repo: &RepoName, tag: &Tag) -> Option<SystemTime> {
        self.driver()
            .stat_file(&layout::tag_current_link(repo, tag))
            .await
            .ok()
            .map(|m| m.modified)
    }

    /// A tag's manifest, sizes, platforms and push time. `ManifestUnknown` when the tag names
    /// nothing (deleted since it was listed).
    pub async fn tag_info(&self, repo: &RepoName, tag: &Tag) -> Result<TagInfo> {
        let reference = Reference::Tag(tag.clone());
        let (read, pushed) = tokio::join!(
            self.get_manifest(repo, &reference),
            self.tag_pushed(repo, tag)
        );
        let read = read?;
        let mut size = read.body.len() as u64;
        let mut platforms = Vec::new();
        if let Ok(manifest) = Manifest::parse(&read.body, Some(&read.media_type)) {
            if manifest.kind.is_index() {
                for child in &manifest.manifests {
                    size = size.saturating_add(child.size);
                    if let Ok(m) = self
                        .get_manifest(repo, &Reference::Digest(child.digest.clone()))
                        .await
                        && let Ok(m) = Manifest::parse(&m.body, Some(&m.media_type))
                    {
                        size = size.saturating_add(sizes_of(m.required_blobs()));
                    }
                    if let Some(p) = child.platform.as_ref().and_then(platform_of) {
                        platforms.push(p);
                    }
                }
            } else {
                size = size.saturating_add(sizes_of(manifest.required_blobs()));
                if let Some(config) = &manifest.config
                    && let Ok(Some(c)) = self.image_config(repo, &config.digest).await
                    && let Some(p) = c.platform()
                {
                    platforms.push(p);
                }
            }
        }
        Ok(TagInfo {
            tag: tag.to_string(),
            digest: read.digest,
            media_type: read.media_type,
            size,
            platforms,
            pushed,
        })
    }

    /// An image config blob the repository links, parsed; `None` when it is not an image
    /// config (an artifact's), too large, or not JSON.
    pub async fn image_config(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ImageConfig>> {
        let blob = self.read_blob(repo, digest, None).await?;
        if blob.size > MAX_CONFIG_SIZE {
            return Ok(None);
        }
        let mut body = Vec::with_capacity(blob.size as usize);
        let mut chunks = blob.body;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| {
                berth_storage::StorageError::from_io(
                    self.driver().name(),
                    "read",
                    &layout::blob_data(digest),
                    e,
                )
            })?;
            body.extend_from_slice(&chunk);
            if body.len() as u64 > MAX_CONFIG_SIZE {
                return Ok(None);
            }
        }
        Ok(serde_json::from_slice(&body).ok())
    }

    /// Tag count, distinct bytes and last push of a repository, from its first
    /// [`SUMMARY_MAX_TAGS`] tags. `NameUnknown` when it does not exist.
    pub async fn repository_summary(&self, repo: &RepoName) -> Result<RepositorySummary> {
        let tags = self.tag_names(repo).await?;
        let parsed: Vec<Tag> = tags
            .iter()
            .take(SUMMARY_MAX_TAGS)
            .filter_map(|t| Tag::parse(t).ok())
            .collect();
        // Boxed: a stream of futures borrowing the tags is otherwise not provably `Send` for
        // every lifetime, which the server's handlers need.
        let reaches: Vec<TagReach<'_>> = parsed
            .into_iter()
            .map(|tag| async move { self.tag_reach(repo, &tag).await }.boxed())
            .collect();
        let infos: Vec<_> = stream::iter(reaches)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut seen = HashSet::new();
        let mut summary = RepositorySummary {
            tags: tags.len(),
            partial: tags.len() > SUMMARY_MAX_TAGS,
            ..Default::default()
        };
        for (pushed, blobs) in infos.into_iter().flatten() {
            summary.last_push = summary.last_push.max(pushed);
            for (digest, size) in blobs {
                if seen.insert(digest) {
                    summary.size = summary.size.saturating_add(size);
                }
            }
        }
        Ok(summary)
    }

    /// A tag's push time and every blob it reaches with its size (manifests included).
    /// `None` when the tag names nothing readable.
    async fn tag_reach(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> Option<(Option<SystemTime>, Vec<(Digest, u64)>)> {
        let reference = Reference::Tag(tag.clone());
        let (read, pushed) = tokio::join!(
            self.get_manifest(repo, &reference),
            self.tag_pushed(repo, tag)
        );
        let read = read.ok()?;
        let mut blobs = vec![(read.digest.clone(), read.body.len() as u64)];
        let manifest = Manifest::parse(&read.body, Some(&read.media_type)).ok()?;
        let mut images = vec![manifest];
        if images[0].kind.is_index() {
            for child in std::mem::take(&mut images[0].manifests) {
                blobs.push((child.digest.clone(), child.size));
                if let Ok(m) = self
                    .get_manifest(repo, &Reference::Digest(child.digest))
                    .await
                    && let Ok(m) = Manifest::parse(&m.body, Some(&m.media_type))
                {
                    images.push(m);
                }
            }
        }
        for image in &images {
            blobs.extend(image.required_blobs().map(|d| (d.digest.clone(), d.size)));
        }
        Some((pushed, blobs))
    }

    /// Blobs and bytes stored, upload sessions in progress, and the bytes each repository
    /// links: two walks of the whole store (one LIST each on object storage).
    pub async fn storage_summary(&self) -> Result<StorageSummary> {
        let (blobs_root, repositories_root) = (layout::blobs_root(), layout::repositories_root());
        let (blobs, repositories) = tokio::join!(
            self.driver().walk(&blobs_root),
            self.driver().walk(&repositories_root)
        );
        let or_empty = |r: berth_storage::Result<Vec<berth_storage::FileInfo>>| match r {
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            r => r,
        };
        let mut summary = StorageSummary::default();
        let mut sizes = std::collections::HashMap::new();
        for file in or_empty(blobs)? {
            if let Some(Entry::Blob(digest)) = layout::classify(&file.path) {
                summary.blobs += 1;
                summary.bytes += file.size;
                sizes.insert(digest, file.size);
            }
        }
        for file in or_empty(repositories)? {
            match layout::classify(&file.path) {
                Some(Entry::Upload(repo, id, name)) if name == "data" => {
                    summary
                        .uploads
                        .push((repo.to_string(), id.as_str().to_owned(), file.size));
                }
                Some(Entry::Layer(repo, digest) | Entry::Revision(repo, digest)) => {
                    *summary
                        .repository_bytes
                        .entry(repo.to_string())
                        .or_default() += sizes.get(&digest).copied().unwrap_or(0);
                }
                _ => {}
            }
        }
        Ok(summary)
    }
}

/// The sum of descriptors' sizes, saturating: a manifest's sizes are its pusher's claims, and
/// a page must not wrap (or panic) on absurd ones.
fn sizes_of<'a>(descriptors: impl Iterator<Item = &'a berth_oci::Descriptor>) -> u64 {
    descriptors.fold(0u64, |total, d| total.saturating_add(d.size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_read_from_index_entries_and_configs() {
        let p = serde_json::json!({"os": "linux", "architecture": "arm64", "variant": "v8"});
        assert_eq!(platform_of(&p).as_deref(), Some("linux/arm64/v8"));
        let p = serde_json::json!({"os": "linux", "architecture": "amd64"});
        assert_eq!(platform_of(&p).as_deref(), Some("linux/amd64"));
        assert_eq!(platform_of(&serde_json::json!({"os": "linux"})), None);
        let c: ImageConfig = serde_json::from_str(
            r#"{"os":"linux","architecture":"amd64","config":{"Cmd":["/bin/true"],"Labels":{"a":"b"}},"history":[{"created_by":"x","empty_layer":true}]}"#,
        )
        .unwrap_or_default();
        assert_eq!(c.platform().as_deref(), Some("linux/amd64"));
        assert_eq!(
            c.config.and_then(|c| c.cmd),
            Some(vec!["/bin/true".to_owned()])
        );
        assert!(c.history[0].empty_layer);
    }
}
