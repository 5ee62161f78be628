//! Garbage collection's rules on a real filesystem, through the registry's own API: what
//! `delete_untagged` keeps (tagged images, an index's untagged children, the referrers of a
//! kept manifest) and removes, that the grace period and pins spare blobs, and that a blob
//! swept away makes a later manifest PUT fail with MANIFEST_BLOB_UNKNOWN instead of linking it.
#![allow(clippy::unwrap_used)] // Test helpers: a panic is a failed test.

use std::sync::Arc;
use std::time::Duration;

use berth_oci::{Digest, Reference, RepoName};
use berth_registry::{Error, GcOptions, Options, Registry};
use berth_storage::{FsDriver, StorageDriver, StoragePath};
use bytes::Bytes;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn registry(dir: &std::path::Path) -> Registry {
    registry_on(Arc::new(FsDriver::new(dir).unwrap()))
}

fn registry_on(driver: Arc<dyn StorageDriver>) -> Registry {
    let options = Options {
        delete_enabled: true,
        ..Options::default()
    };
    Registry::new(driver, options)
}

fn gc(delete_untagged: bool, grace_secs: u64) -> GcOptions {
    GcOptions {
        dry_run: false,
        delete_untagged,
        grace_period: Duration::from_secs(grace_secs),
        upload_age: None,
    }
}

async fn blob(reg: &Registry, repo: &RepoName, data: &str) -> (Digest, usize) {
    let (digest, body) = stream_of(data);
    reg.push_blob(repo, &digest, body).await.unwrap();
    (digest, data.len())
}

/// A blob as a pull-through cache stores what it fetched.
async fn cached_blob(reg: &Registry, repo: &RepoName, data: &str) -> (Digest, usize) {
    let (digest, body) = stream_of(data);
    reg.cache_blob(repo, &digest, body).await.unwrap();
    (digest, data.len())
}

fn stream_of(data: &str) -> (Digest, berth_registry::ByteStream) {
    let bytes = Bytes::from(data.to_owned());
    let digest = Digest::sha256_of(&bytes);
    (
        digest,
        Box::pin(futures_util::stream::once(async move { Ok(bytes) })),
    )
}

fn image(config: &(Digest, usize), layer: &(Digest, usize), subject: Option<&Bytes>) -> Bytes {
    let mut v = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0.to_string(), "size": config.1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.0.to_string(), "size": layer.1}],
    });
    if let Some(s) = subject {
        v["subject"] = serde_json::json!({"mediaType": OCI_MANIFEST, "digest": Digest::sha256_of(s).to_string(), "size": s.len()});
    }
    Bytes::from(serde_json::to_vec(&v).unwrap())
}

async fn put(reg: &Registry, repo: &RepoName, reference: &str, body: &Bytes, media: &str) {
    reg.put_manifest(
        repo,
        &Reference::parse(reference).unwrap(),
        Some(media),
        body.clone(),
    )
    .await
    .unwrap();
}

fn blob_exists(dir: &std::path::Path, d: &Digest) -> bool {
    dir.join(format!(
        "docker/registry/v2/blobs/sha256/{}/{}/data",
        &d.hex()[..2],
        d.hex()
    ))
    .exists()
}

/// Sets every file's modification time two hours back, so nothing is within a grace period.
fn age_everything(dir: &std::path::Path) {
    let status = std::process::Command::new("find")
        .arg(dir)
        .args(["-exec", "touch", "-h", "-d", "2 hours ago", "{}", "+"])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn delete_untagged_keeps_tags_index_children_and_referrers() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let repo = RepoName::parse("team/app").unwrap();
    let cfg = blob(&reg, &repo, "{}").await;
    let (l1, l2, l3, l4) = (
        blob(&reg, &repo, "tagged layer").await,
        blob(&reg, &repo, "child layer").await,
        blob(&reg, &repo, "orphan layer").await,
        blob(&reg, &repo, "signature layer").await,
    );
    let tagged = image(&cfg, &l1, None);
    put(&reg, &repo, "v1", &tagged, OCI_MANIFEST).await;
    let child = image(&cfg, &l2, None);
    put(
        &reg,
        &repo,
        &Digest::sha256_of(&child).to_string(),
        &child,
        OCI_MANIFEST,
    )
    .await;
    let index = Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": Digest::sha256_of(&child).to_string(), "size": child.len()}],
        }))
        .unwrap(),
    );
    put(&reg, &repo, "multi", &index, OCI_INDEX).await;
    let orphan = image(&cfg, &l3, None);
    put(
        &reg,
        &repo,
        &Digest::sha256_of(&orphan).to_string(),
        &orphan,
        OCI_MANIFEST,
    )
    .await;
    let signature = image(&cfg, &l4, Some(&tagged));
    put(
        &reg,
        &repo,
        &Digest::sha256_of(&signature).to_string(),
        &signature,
        OCI_MANIFEST,
    )
    .await;

    // Young: the grace period keeps even the untagged orphan.
    let report = reg.garbage_collect(&gc(true, 3600)).await.unwrap();
    assert!(report.manifests_deleted.is_empty() && report.blobs_swept.is_empty());

    age_everything(dir.path());
    let report = reg.garbage_collect(&gc(true, 60)).await.unwrap();
    let orphan_digest = Digest::sha256_of(&orphan);
    assert_eq!(
        report.manifests_deleted,
        vec![(repo.clone(), orphan_digest.clone())]
    );
    let swept: Vec<&Digest> = report.blobs_swept.iter().map(|(d, _)| d).collect();
    assert_eq!(
        swept.len(),
        2,
        "the orphan manifest and its layer: {swept:?}"
    );
    assert!(swept.contains(&&orphan_digest) && swept.contains(&&l3.0));
    for kept in [&l1.0, &l2.0, &l4.0, &cfg.0] {
        assert!(blob_exists(dir.path(), kept), "{kept} was swept");
    }
    for m in [&tagged, &child, &index, &signature] {
        let d = Digest::sha256_of(m);
        reg.get_manifest(&repo, &Reference::Digest(d))
            .await
            .unwrap();
    }
    assert!(matches!(
        reg.get_manifest(&repo, &Reference::Digest(orphan_digest))
            .await,
        Err(Error::ManifestUnknown { .. })
    ));
    // Referrers still list the kept signature.
    let referrers = reg
        .referrers(&repo, &Digest::sha256_of(&tagged), None)
        .await
        .unwrap();
    assert_eq!(referrers.manifests.len(), 1);
}

#[tokio::test]
async fn swept_blob_makes_a_later_manifest_put_fail_cleanly_and_pins_spare_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let repo = RepoName::parse("team/app").unwrap();
    let cfg = blob(&reg, &repo, "{}").await;
    let layer = blob(&reg, &repo, "uploaded, never referenced").await;
    age_everything(dir.path());
    // Aged files stand for hours this process did not see pass: a registry that saw its pins
    // written a moment ago would rightly reuse them (see `pins`).
    let reg = registry(dir.path());

    // Dry run: lists both blobs and the bytes, deletes nothing.
    let mut dry = gc(false, 60);
    dry.dry_run = true;
    let report = reg.garbage_collect(&dry).await.unwrap();
    assert_eq!(report.blobs_swept.len(), 2);
    assert_eq!(report.bytes_freed, (cfg.1 + layer.1) as u64);
    assert!(blob_exists(dir.path(), &layer.0));

    // A mount pins the config; the layer, unpinned and old, goes.
    let other = RepoName::parse("team/other").unwrap();
    assert!(reg.mount_blob(&other, &repo, &cfg.0).await.unwrap());
    let report = reg.garbage_collect(&gc(false, 60)).await.unwrap();
    assert_eq!(report.blobs_swept, vec![(layer.0.clone(), layer.1 as u64)]);
    assert!(
        blob_exists(dir.path(), &cfg.0),
        "the pinned config was swept"
    );

    let body = image(&cfg, &layer, None);
    let refused = reg
        .put_manifest(
            &repo,
            &Reference::parse("v1").unwrap(),
            Some(OCI_MANIFEST),
            body,
        )
        .await;
    assert!(
        matches!(refused, Err(Error::ManifestBlobUnknown { ref digest }) if *digest == layer.0),
        "{refused:?}"
    );
}

/// A manifest PUT may skip checking a layer this process linked moments ago under the same
/// pin (`pins`), but not one unlinked since: the PUT is refused as if the check had run.
#[tokio::test]
async fn a_layer_unlinked_after_its_push_is_missing_for_the_next_manifest_put() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let repo = RepoName::parse("team/app").unwrap();
    let cfg = blob(&reg, &repo, "{}").await;
    let layer = blob(&reg, &repo, "pushed, then unlinked").await;
    reg.delete_blob(&repo, &layer.0).await.unwrap();
    let refused = reg
        .put_manifest(
            &repo,
            &Reference::parse("v1").unwrap(),
            Some(OCI_MANIFEST),
            image(&cfg, &layer, None),
        )
        .await;
    assert!(
        matches!(refused, Err(Error::ManifestBlobUnknown { ref digest }) if *digest == layer.0),
        "{refused:?}"
    );
    // Pushed again, the same PUT is taken.
    blob(&reg, &repo, "pushed, then unlinked").await;
    reg.put_manifest(
        &repo,
        &Reference::parse("v1").unwrap(),
        Some(OCI_MANIFEST),
        image(&cfg, &layer, None),
    )
    .await
    .unwrap();
}

/// Files under `_berth/pins`.
fn pin_files(dir: &std::path::Path) -> usize {
    fn count(p: &std::path::Path) -> usize {
        std::fs::read_dir(p).map_or(0, |entries| {
            entries
                .map(|e| e.unwrap().path())
                .map(|p| if p.is_dir() { count(&p) } else { 1 })
                .sum()
        })
    }
    count(&dir.join("docker/registry/v2/_berth/pins"))
}

/// What `serve` does when online collection is off: pins older than the grace period go,
/// younger ones stay, and nothing else changes.
#[tokio::test]
async fn expired_pins_are_removed_without_a_collection() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let repo = RepoName::parse("pins/expire").unwrap();
    let (config, layer) = (blob(&reg, &repo, "c1").await, blob(&reg, &repo, "l1").await);
    put(
        &reg,
        &repo,
        "old",
        &image(&config, &layer, None),
        OCI_MANIFEST,
    )
    .await;
    let old = pin_files(dir.path());
    assert!(old >= 3, "the push pinned its blobs and manifest: {old}");
    let hour = Duration::from_secs(3600);
    assert_eq!(
        reg.expire_pins(hour).await.unwrap(),
        0,
        "nothing is old yet"
    );
    assert_eq!(pin_files(dir.path()), old);

    age_everything(dir.path());
    let (config, layer) = (blob(&reg, &repo, "c2").await, blob(&reg, &repo, "l2").await);
    put(
        &reg,
        &repo,
        "new",
        &image(&config, &layer, None),
        OCI_MANIFEST,
    )
    .await;
    let fresh = pin_files(dir.path()) - old;
    assert!(fresh >= 3);
    assert_eq!(
        reg.expire_pins(Duration::MAX).await.unwrap(),
        0,
        "no age is older"
    );
    assert_eq!(reg.expire_pins(hour).await.unwrap(), old);
    assert_eq!(pin_files(dir.path()), fresh, "the fresh pins stay");
    for tag in ["old", "new"] {
        let reference = Reference::parse(tag).unwrap();
        reg.get_manifest(&repo, &reference).await.unwrap();
    }
}

/// `check` with a grace period of an hour.
fn check_options(repair: bool) -> berth_registry::CheckOptions {
    berth_registry::CheckOptions {
        repair,
        grace_period: Duration::from_secs(3600),
        upload_age: Duration::from_secs(7 * 24 * 3600),
        cached_prefixes: Vec::new(),
    }
}

/// The kinds of problem a check reported.
fn kinds(r: &berth_registry::CheckReport) -> Vec<&str> {
    r.problems.iter().map(|p| p.kind).collect()
}

/// A temporary file younger than the grace period may be a write still in flight (a
/// collection pass's marker when berth was stopped mid-write, or another replica's put):
/// `check` leaves it unreported; once older, it is reported, and `--repair` removes it.
#[tokio::test]
async fn check_reports_temporaries_only_past_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let repo = RepoName::parse("team/app").unwrap();
    blob(&reg, &repo, "a layer").await;
    let tmp = dir
        .path()
        .join("docker/registry/v2/_berth/gc/run/.started.tmp-0123456789abcdef");
    std::fs::create_dir_all(tmp.parent().unwrap()).unwrap();
    std::fs::write(&tmp, b"").unwrap();

    let young = reg.check(&check_options(false)).await.unwrap();
    assert!(young.problems.is_empty(), "{:?}", kinds(&young));

    age_everything(dir.path());
    let old = reg.check(&check_options(false)).await.unwrap();
    assert_eq!(kinds(&old), ["temporary-file"]);
    assert!(tmp.exists(), "check without --repair removed it");
    let repaired = reg.check(&check_options(true)).await.unwrap();
    assert!(repaired.problems.iter().all(|p| p.repaired));
    assert!(!tmp.exists(), "--repair left it");
}

/// A blob a collection set aside is judged by its run's `started` marker, not by its own
/// modification time (a rename keeps that, so it is always old): while the run's marker is
/// fresh the run may be in progress (here, or in another replica) and nothing is reported;
/// once the run has no marker, it died, and `--repair` puts the blob back.
#[tokio::test]
async fn check_reports_a_quarantine_only_when_its_run_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let repo = RepoName::parse("team/app").unwrap();
    let (digest, _) = blob(&reg, &repo, "a layer set aside").await;
    age_everything(dir.path());
    let v2 = dir.path().join("docker/registry/v2");
    let run = "0123456789abcdef0123456789abcdef";
    let data = v2.join(format!(
        "blobs/sha256/{}/{}/data",
        &digest.hex()[..2],
        digest.hex()
    ));
    let aside = data.with_file_name(format!("gc-{run}"));
    std::fs::rename(&data, &aside).unwrap();
    let marker = v2.join(format!("_berth/gc/{run}/started"));
    std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
    std::fs::write(&marker, b"").unwrap();

    let running = reg.check(&check_options(false)).await.unwrap();
    assert!(
        !kinds(&running).contains(&"quarantined"),
        "{:?}",
        kinds(&running)
    );

    std::fs::remove_dir_all(marker.parent().unwrap()).unwrap();
    let died = reg.check(&check_options(true)).await.unwrap();
    assert!(kinds(&died).contains(&"quarantined"), "{:?}", kinds(&died));
    assert!(
        data.exists() && !aside.exists(),
        "--repair did not put it back"
    );
}

/// A collector that died after setting a manifest's own blob aside: the next run puts it back
/// before it reads the manifests, so the config and layer that manifest references stay
/// marked. (Put back only during the sweep, the manifest would read as missing, its blobs
/// would go unmarked, and old as they are, they would be swept under a tag that still points
/// at it.)
#[tokio::test]
async fn a_manifest_set_aside_by_a_dead_collector_keeps_its_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let repo = RepoName::parse("team/app").unwrap();
    let cfg = blob(&reg, &repo, "{\"os\":\"linux\"}").await;
    let layer = blob(&reg, &repo, "the only layer").await;
    let manifest = image(&cfg, &layer, None);
    put(&reg, &repo, "v1", &manifest, OCI_MANIFEST).await;
    let manifest_digest = Digest::sha256_of(&manifest);
    age_everything(dir.path());
    let data = dir.path().join(format!(
        "docker/registry/v2/blobs/sha256/{}/{}/data",
        &manifest_digest.hex()[..2],
        manifest_digest.hex()
    ));
    // A run whose marker is gone: it died.
    std::fs::rename(
        &data,
        data.with_file_name("gc-0123456789abcdef0123456789abcdef"),
    )
    .unwrap();

    reg.garbage_collect(&gc(false, 3600)).await.unwrap();
    for d in [&manifest_digest, &cfg.0, &layer.0] {
        assert!(blob_exists(dir.path(), d), "{d} was swept");
    }
    // A fresh registry: no cache in memory, the bytes come from storage.
    let read = registry(dir.path())
        .get_manifest(&repo, &Reference::parse("v1").unwrap())
        .await
        .unwrap();
    assert_eq!(read.body, manifest);
}

/// A pull-through cache stores a manifest before its layers; eviction unlinks what the cache
/// holds and deletes a blob only when no repository outside the cache links it; `check`
/// does not call a cache's unfetched layers damage.
#[tokio::test]
async fn cached_manifests_evictions_and_check() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry(dir.path());
    let cached = RepoName::parse("hub/library/app").unwrap();
    let local = RepoName::parse("team/app").unwrap();
    let config = (Digest::sha256_of(b"{}"), 2);
    let layer = (Digest::sha256_of(b"layer"), 5);
    let body = image(&config, &layer, None);
    let digest = Digest::sha256_of(&body);
    let tag = berth_oci::Tag::parse("v1").unwrap();
    // Stored without its blobs, which a push would refuse.
    reg.cache_manifest(&cached, Some(&tag), &digest, body.clone())
        .await
        .unwrap();
    assert!(matches!(
        reg.put_manifest(
            &local,
            &Reference::parse("v1").unwrap(),
            Some(OCI_MANIFEST),
            body.clone()
        )
        .await,
        Err(Error::ManifestBlobUnknown { .. })
    ));
    let wrong = Digest::sha256_of(b"something else");
    assert!(matches!(
        reg.cache_manifest(&cached, None, &wrong, body.clone())
            .await,
        Err(Error::DigestMismatch { .. })
    ));
    let (got, _) = reg.tag_confirmed_at(&cached, &tag).await.unwrap().unwrap();
    assert_eq!(got, digest);
    let mut options = check_options(false);
    assert_eq!(
        kinds(&reg.check(&options).await.unwrap()),
        vec!["missing-blob", "missing-blob"]
    );
    options.cached_prefixes = vec!["hub".into()];
    assert!(kinds(&reg.check(&options).await.unwrap()).is_empty());

    // The layer, cached and also pushed to a local repository; the config only cached.
    let layer = cached_blob(&reg, &cached, "layer").await;
    blob(&reg, &local, "layer").await;
    let config = cached_blob(&reg, &cached, "{}").await;
    let others = [local.clone()];
    use berth_registry::Evicted;
    assert_eq!(
        reg.evict(&layer.0, std::slice::from_ref(&cached), &others)
            .await
            .unwrap(),
        Evicted::Kept
    );
    assert!(
        blob_exists(dir.path(), &layer.0),
        "a local repository links it"
    );
    assert!(
        reg.stat_blob(&cached, &layer.0).await.is_err(),
        "unlinked from the cache"
    );
    assert!(reg.stat_blob(&local, &layer.0).await.is_ok());
    // A push's pin keeps a blob even where the link it is about to write is not seen yet
    // (here a mount into a repository missing from `others`); the cache's own pins, written
    // when it stores and links what it fetched, do not.
    let pinned = cached_blob(&reg, &cached, "pinned by a push").await;
    let newcomer = RepoName::parse("team/new").unwrap();
    assert!(reg.mount_blob(&newcomer, &cached, &pinned.0).await.unwrap());
    assert_eq!(
        reg.evict(&pinned.0, std::slice::from_ref(&cached), &[])
            .await
            .unwrap(),
        Evicted::Kept
    );
    assert!(reg.stat_blob(&newcomer, &pinned.0).await.is_ok());
    let fetched = cached_blob(&reg, &cached, "fetched just now").await;
    assert!(reg.link_stored_blob(&cached, &fetched.0).await.unwrap());
    assert_eq!(
        reg.evict(&fetched.0, std::slice::from_ref(&cached), &[])
            .await
            .unwrap(),
        Evicted::Deleted
    );
    assert!(!blob_exists(dir.path(), &fetched.0));
    // The refused local PUT above pinned the config and the manifest as any push does.
    assert_eq!(
        reg.evict(&config.0, std::slice::from_ref(&cached), &[])
            .await
            .unwrap(),
        Evicted::Kept
    );
    reg.expire_pins(Duration::ZERO).await.unwrap();
    assert!(reg.link_stored_blob(&cached, &config.0).await.unwrap());
    assert_eq!(
        reg.evict(&config.0, std::slice::from_ref(&cached), &[])
            .await
            .unwrap(),
        Evicted::Deleted
    );
    assert!(!blob_exists(dir.path(), &config.0));
    // The manifest: its tag and revision go with it.
    assert_eq!(
        reg.evict(&digest, std::slice::from_ref(&cached), &[])
            .await
            .unwrap(),
        Evicted::Deleted
    );
    assert!(reg.tag_confirmed_at(&cached, &tag).await.unwrap().is_none());
    assert!(
        reg.get_manifest(&cached, &Reference::Digest(digest.clone()))
            .await
            .is_err()
    );
}

/// A grace period of 0s gives pushes a zero pin lease; a manifest PUT used to re-pin forever
/// (100 % CPU, no answer). It completes.
#[tokio::test]
async fn a_zero_pin_lease_does_not_stall_manifest_puts() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        pin_lease: Duration::ZERO,
        ..Options::default()
    };
    let reg = Registry::new(Arc::new(FsDriver::new(dir.path()).unwrap()), options);
    let repo = RepoName::parse("team/app").unwrap();
    let config = blob(&reg, &repo, "{}").await;
    let layer = blob(&reg, &repo, "layer").await;
    let tag = Reference::parse("v1").unwrap();
    let put = reg.put_manifest(
        &repo,
        &tag,
        Some(OCI_MANIFEST),
        image(&config, &layer, None),
    );
    tokio::time::timeout(Duration::from_secs(10), put)
        .await
        .expect("the PUT answers")
        .unwrap();
}

/// A filesystem driver that, the first time a tag's history entry is deleted, stops before
/// deleting it until the test says go: a point inside a collector's sweep of a revision.
struct PauseAtHistoryDelete {
    inner: FsDriver,
    pause: std::sync::Mutex<
        Option<(
            tokio::sync::oneshot::Sender<()>,
            tokio::sync::oneshot::Receiver<()>,
        )>,
    >,
}

#[async_trait::async_trait]
impl StorageDriver for PauseAtHistoryDelete {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn get(&self, path: &StoragePath) -> berth_storage::Result<Bytes> {
        self.inner.get(path).await
    }
    async fn put(&self, path: &StoragePath, content: Bytes) -> berth_storage::Result<()> {
        self.inner.put(path, content).await
    }
    async fn reader(
        &self,
        path: &StoragePath,
        offset: u64,
        len: Option<u64>,
    ) -> berth_storage::Result<berth_storage::ByteStream> {
        self.inner.reader(path, offset, len).await
    }
    async fn writer(
        &self,
        path: &StoragePath,
        append: bool,
    ) -> berth_storage::Result<Box<dyn berth_storage::FileWriter>> {
        self.inner.writer(path, append).await
    }
    async fn publisher(
        &self,
        path: &StoragePath,
    ) -> berth_storage::Result<Box<dyn berth_storage::FileWriter>> {
        self.inner.publisher(path).await
    }
    async fn stat(&self, path: &StoragePath) -> berth_storage::Result<berth_storage::Metadata> {
        self.inner.stat(path).await
    }
    async fn list(&self, path: &StoragePath) -> berth_storage::Result<Vec<String>> {
        self.inner.list(path).await
    }
    async fn walk(
        &self,
        path: &StoragePath,
    ) -> berth_storage::Result<Vec<berth_storage::FileInfo>> {
        self.inner.walk(path).await
    }
    async fn move_to(&self, from: &StoragePath, to: &StoragePath) -> berth_storage::Result<()> {
        self.inner.move_to(from, to).await
    }
    async fn delete(&self, path: &StoragePath) -> berth_storage::Result<()> {
        if path.as_str().contains("/_manifests/tags/") && path.as_str().contains("/index/") {
            let pause = self.pause.lock().unwrap().take();
            if let Some((paused, go)) = pause {
                paused.send(()).unwrap();
                go.await.unwrap();
            }
        }
        self.inner.delete(path).await
    }
}

/// A registry on `dir` where `t` moved from manifest `m` to `n` (so `m` is untagged and in
/// `t`'s history), everything aged past the grace period, and a collection with
/// `delete_untagged` started and paused just before it deletes `t`'s history of `m`. Returns
/// the registry, `m`, the collection, and the sender that lets it go on.
async fn collection_paused_at_history_delete(
    dir: &std::path::Path,
) -> (
    Registry,
    Bytes,
    tokio::task::JoinHandle<berth_registry::Result<berth_registry::GcReport>>,
    tokio::sync::oneshot::Sender<()>,
) {
    let repo = RepoName::parse("team/app").unwrap();
    let m = {
        let reg = registry(dir);
        let cfg = blob(&reg, &repo, "{}").await;
        let layer = blob(&reg, &repo, "layer").await;
        // Two manifests on the same blobs.
        let m = image(&cfg, &layer, None);
        let n = image(&cfg, &layer, Some(&Bytes::from_static(b"another subject")));
        put(&reg, &repo, "t", &m, OCI_MANIFEST).await;
        put(&reg, &repo, "t", &n, OCI_MANIFEST).await;
        put(&reg, &repo, "n", &n, OCI_MANIFEST).await;
        m
    };
    age_everything(dir);
    let (paused_tx, paused) = tokio::sync::oneshot::channel();
    let (go, go_rx) = tokio::sync::oneshot::channel();
    let driver = PauseAtHistoryDelete {
        inner: FsDriver::new(dir).unwrap(),
        pause: std::sync::Mutex::new(Some((paused_tx, go_rx))),
    };
    // A registry of its own: pins the set-up wrote are not reused.
    let reg = registry_on(Arc::new(driver));
    let collector = {
        let reg = reg.clone();
        tokio::spawn(async move { reg.garbage_collect(&gc(true, 60)).await })
    };
    paused.await.unwrap();
    (reg, m, collector, go)
}

/// A PUT moving a tag back onto an untagged manifest while a collection removes that
/// manifest's revision (and with it the tag's history of it) leaves the manifest in the tag's
/// history, so that a later delete by digest still finds the tag and removes it.
#[tokio::test]
async fn a_tag_moved_back_during_a_collection_keeps_it_in_its_history() {
    let dir = tempfile::tempdir().unwrap();
    let repo = RepoName::parse("team/app").unwrap();
    let (reg, m, collector, go) = collection_paused_at_history_delete(dir.path()).await;
    put(&reg, &repo, "t", &m, OCI_MANIFEST).await;
    go.send(()).unwrap();
    collector.await.unwrap().unwrap();

    reg.delete_manifest(&repo, &Reference::Digest(Digest::sha256_of(&m)))
        .await
        .unwrap();
    let tags = reg.list_tags(&repo, None, None).await.unwrap();
    assert_eq!(
        tags.items(),
        ["n"],
        "the tag moved back went with its manifest"
    );
}

/// The collector puts a tag's history back only while the tag exists: a tag deleted during
/// the sweep does not come back into the tag list as a history without a `current` link.
#[tokio::test]
async fn a_tag_deleted_during_a_collection_stays_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let repo = RepoName::parse("team/app").unwrap();
    let (reg, m, collector, go) = collection_paused_at_history_delete(dir.path()).await;
    // A pin for `m` the collector will see, then the tag goes.
    put(&reg, &repo, "t", &m, OCI_MANIFEST).await;
    reg.delete_manifest(&repo, &Reference::parse("t").unwrap())
        .await
        .unwrap();
    go.send(()).unwrap();
    collector.await.unwrap().unwrap();

    let tags = reg.list_tags(&repo, None, None).await.unwrap();
    assert_eq!(tags.items(), ["n"]);
}
