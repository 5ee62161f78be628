//! Distribution's storage layout, byte for byte; the only module that builds storage paths.
//!
//! ```text
//! <root>/docker/registry/v2/
//! ├── blobs/<alg>/<first two hex>/<hex>/data            content, manifests included
//! └── repositories/<name>/
//!     ├── _layers/<alg>/<hex>/link                      blobs this repository may serve
//!     ├── _manifests/
//!     │   ├── revisions/<alg>/<hex>/link                every manifest pushed here
//!     │   └── tags/<tag>/
//!     │       ├── current/link                          what the tag points at now
//!     │       └── index/<alg>/<hex>/link                everything it has pointed at
//!     ├── _uploads/<uuid>/{data,startedat}              upload sessions in progress
//!     └── _referrers/<alg>/<hex>/<alg>/<hex>/link       berth only: manifests whose
//!                                                       `subject` is the first digest
//! ```
//! `_referrers` is berth's addition. Distribution skips `_`-prefixed directories when it walks
//! repositories and never reads this one, and the manifests it indexes are ordinary revisions,
//! so Distribution's garbage collector keeps them as it keeps any other revision.
//! Earlier berth releases also kept `_digesttags/<alg>/<hex>/<tag>`, a reverse tag index; it
//! is neither written nor read now (`tagindex` reads the tags' own history instead), and what
//! is left of it is as harmless to Distribution as it is to berth.
//!
//! Garbage collection keeps its own state beside the two trees, where neither Distribution's
//! catalog (which walks `repositories/`) nor its blob enumeration (which walks `blobs/` for
//! files named `data`) looks:
//! ```text
//! <root>/docker/registry/v2/_berth/
//! ├── pins/<alg>/<hex>/<uuid>                           "about to reference this blob"
//! ├── gc/<run>/started                               one collection run in progress
//! └── notifications/<instance>/                      one process's webhook event log
//!     ├── lease                                      who delivers it, and since when
//!     ├── events/<seq>                               one group commit of events
//!     └── cursors/<endpoint>                         how far an endpoint has got
//! ```
//! (`berth-notify` owns the notification log's format; see its module doc.)
//! While a run holds a blob, revision link or layer link aside (its quarantine), the file is
//! renamed `gc-<run>` in its own directory, a name Distribution never reads:
//! ```text
//! blobs/<alg>/<xx>/<hex>/gc-<run>, _manifests/revisions/<alg>/<hex>/gc-<run>, _layers/<alg>/<hex>/gc-<run>
//! ```
//! Link files hold `<alg>:<hex>` without a newline. The tree is Distribution's
//! (`registry/storage/paths.go`), so either program serves a directory the other wrote.

use berth_oci::{Digest, RepoName, Tag};
use berth_storage::StoragePath;

use crate::uploads::UploadId;

/// The prefix every path lives under.
const V2: &str = "docker/registry/v2";

fn path(parts: &[&str]) -> StoragePath {
    let mut p = StoragePath::parse(V2).expect("constant path is valid");
    for part in parts {
        for component in part.split('/') {
            // Every part comes from a checked newtype (RepoName, Tag, Digest, UploadId) or a
            // constant, all of which satisfy StoragePath's grammar.
            p = p
                .join(component)
                .expect("checked names are valid path components");
        }
    }
    p
}

/// `blobs/<alg>/<xx>/<hex>`
pub fn blob_dir(digest: &Digest) -> StoragePath {
    let hex = digest.hex();
    path(&["blobs", digest.algorithm().as_str(), &hex[..2], hex])
}

/// `blobs/<alg>/<xx>/<hex>/data`
pub fn blob_data(digest: &Digest) -> StoragePath {
    path(&[
        "blobs",
        digest.algorithm().as_str(),
        &digest.hex()[..2],
        digest.hex(),
        "data",
    ])
}

/// `repositories`
pub fn repositories_root() -> StoragePath {
    path(&["repositories"])
}

/// `repositories/<name>`
pub fn repository(repo: &RepoName) -> StoragePath {
    path(&["repositories", repo.as_str()])
}

/// `repositories/<name>/_layers/<alg>/<hex>/link`
pub fn layer_link(repo: &RepoName, digest: &Digest) -> StoragePath {
    path(&[
        "repositories",
        repo.as_str(),
        "_layers",
        digest.algorithm().as_str(),
        digest.hex(),
        "link",
    ])
}

/// `repositories/<name>/_manifests/revisions/<alg>/<hex>/link`
pub fn revision_link(repo: &RepoName, digest: &Digest) -> StoragePath {
    path(&[
        "repositories",
        repo.as_str(),
        "_manifests/revisions",
        digest.algorithm().as_str(),
        digest.hex(),
        "link",
    ])
}

/// `repositories/<name>/_manifests/revisions/<alg>/<hex>`
pub fn revision_dir(repo: &RepoName, digest: &Digest) -> StoragePath {
    revision_link(repo, digest).parent()
}

/// `repositories/<name>/_manifests/tags`
pub fn tags_dir(repo: &RepoName) -> StoragePath {
    path(&["repositories", repo.as_str(), "_manifests/tags"])
}

/// `repositories/<name>/_manifests/tags/<tag>`
pub fn tag_dir(repo: &RepoName, tag: &Tag) -> StoragePath {
    path(&[
        "repositories",
        repo.as_str(),
        "_manifests/tags",
        tag.as_str(),
    ])
}

/// `repositories/<name>/_manifests/tags/<tag>/current/link`
pub fn tag_current_link(repo: &RepoName, tag: &Tag) -> StoragePath {
    path(&[
        "repositories",
        repo.as_str(),
        "_manifests/tags",
        tag.as_str(),
        "current/link",
    ])
}

/// `repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link`
pub fn tag_index_link(repo: &RepoName, tag: &Tag, digest: &Digest) -> StoragePath {
    path(&[
        "repositories",
        repo.as_str(),
        "_manifests/tags",
        tag.as_str(),
        "index",
        digest.algorithm().as_str(),
        digest.hex(),
        "link",
    ])
}

/// `repositories/<name>/_uploads`
pub fn uploads_dir(repo: &RepoName) -> StoragePath {
    path(&["repositories", repo.as_str(), "_uploads"])
}

/// `repositories/<name>/_uploads/<uuid>`
pub fn upload_dir(repo: &RepoName, id: &UploadId) -> StoragePath {
    path(&["repositories", repo.as_str(), "_uploads", id.as_str()])
}

/// `repositories/<name>/_uploads/<uuid>/data`
pub fn upload_data(repo: &RepoName, id: &UploadId) -> StoragePath {
    path(&[
        "repositories",
        repo.as_str(),
        "_uploads",
        id.as_str(),
        "data",
    ])
}

/// `repositories/<name>/_uploads/<uuid>/startedat`
pub fn upload_started_at(repo: &RepoName, id: &UploadId) -> StoragePath {
    path(&[
        "repositories",
        repo.as_str(),
        "_uploads",
        id.as_str(),
        "startedat",
    ])
}

/// `repositories/<name>/_referrers/<alg>/<hex>`: the referrers of `subject`.
pub fn referrers_dir(repo: &RepoName, subject: &Digest) -> StoragePath {
    path(&[
        "repositories",
        repo.as_str(),
        "_referrers",
        subject.algorithm().as_str(),
        subject.hex(),
    ])
}

/// `repositories/<name>/_referrers/<alg>/<hex>/<alg>/<hex>/link`
pub fn referrer_link(repo: &RepoName, subject: &Digest, referrer: &Digest) -> StoragePath {
    path(&[
        "repositories",
        repo.as_str(),
        "_referrers",
        subject.algorithm().as_str(),
        subject.hex(),
        referrer.algorithm().as_str(),
        referrer.hex(),
        "link",
    ])
}

/// `_berth/pins`: every pin, one walk for the whole registry.
pub fn pins_root() -> StoragePath {
    path(&["_berth/pins"])
}

/// `_berth/pins/<alg>/<hex>`: the pins of one digest.
pub fn pin_dir(digest: &Digest) -> StoragePath {
    path(&["_berth/pins", digest.algorithm().as_str(), digest.hex()])
}

/// `_berth/pins/<alg>/<hex>/<id>`: one pin, named uniquely so that removing an old pin can
/// never remove a newer one.
pub fn pin(digest: &Digest, id: &uuid::Uuid) -> StoragePath {
    pin_dir(digest)
        .join(&id.simple().to_string())
        .expect("a simple UUID is a valid path component")
}

/// `_berth/pins/<alg>/<hex>/cache-<id>`: a pin written by a pull-through cache's fill. The
/// garbage collector honours it like any pin; cache eviction does not (see `proxied`).
pub fn cache_pin(digest: &Digest, id: &uuid::Uuid) -> StoragePath {
    pin_dir(digest)
        .join(&format!("{CACHE_PIN_PREFIX}{}", id.simple()))
        .expect("a prefixed simple UUID is a valid path component")
}

const CACHE_PIN_PREFIX: &str = "cache-";

/// True for a pin written by [`cache_pin`].
pub fn is_cache_pin(p: &StoragePath) -> bool {
    p.as_str()
        .rsplit('/')
        .next()
        .is_some_and(|name| name.starts_with(CACHE_PIN_PREFIX))
}

/// `_berth/gc`: one directory per garbage-collection run.
pub fn gc_runs_root() -> StoragePath {
    path(&["_berth/gc"])
}

/// `_berth/gc/<run>`
pub fn gc_run(run: &uuid::Uuid) -> StoragePath {
    gc_runs_root()
        .join(&run.simple().to_string())
        .expect("a simple UUID is a valid path component")
}

/// `_berth/gc/<run>/started`: written first; its modification time is the run's start on the
/// storage's own clock, the clock every age is compared on.
pub fn gc_run_started(run: &uuid::Uuid) -> StoragePath {
    gc_run(run).join("started").expect("constant")
}

/// `_berth/notifications`: every process's notification log.
pub fn notifications_root() -> StoragePath {
    path(&["_berth/notifications"])
}

/// `_berth/notifications/<instance>`: the notification log one berth process started.
pub fn notification_log(instance: &uuid::Uuid) -> StoragePath {
    notifications_root()
        .join(&instance.simple().to_string())
        .expect("a simple UUID is a valid path component")
}

/// `_berth/notifications/<instance>/lease`: who delivers the log, rewritten as a heartbeat.
pub fn notification_lease(instance: &uuid::Uuid) -> StoragePath {
    notification_log(instance).join("lease").expect("constant")
}

/// `_berth/notifications/<instance>/events`: the log's batches.
pub fn notification_batches(instance: &uuid::Uuid) -> StoragePath {
    notification_log(instance).join("events").expect("constant")
}

/// `_berth/notifications/<instance>/events/<seq>`: one batch, its sequence number written
/// with 20 digits so names sort as numbers.
pub fn notification_batch(instance: &uuid::Uuid, seq: u64) -> StoragePath {
    notification_batches(instance)
        .join(&format!("{seq:020}"))
        .expect("digits are a valid path component")
}

/// `_berth/notifications/<instance>/cursors/<key>`: an endpoint's progress through the log.
/// The key is a hash of the endpoint's name, which may hold any character.
pub fn notification_cursor(instance: &uuid::Uuid, endpoint: &str) -> StoragePath {
    let key = Digest::sha256_of(endpoint.as_bytes());
    notification_log(instance)
        .join("cursors")
        .and_then(|p| p.join(&key.hex()[..32]))
        .expect("hex is a valid path component")
}

/// The name a file gets while a garbage-collection run holds it aside: `gc-<run>`, in the
/// same directory. Renaming within a directory needs no new directories (one fsync on a
/// filesystem); Distribution reads only files named `data` and `link` and so never sees it.
fn quarantine_name(run: &uuid::Uuid) -> String {
    format!("gc-{}", run.simple())
}

/// `blobs/<alg>/<xx>/<hex>/gc-<run>`: a blob set aside before it is deleted.
pub fn quarantined_blob(run: &uuid::Uuid, digest: &Digest) -> StoragePath {
    blob_dir(digest)
        .join(&quarantine_name(run))
        .expect("a simple UUID is a valid path component")
}

/// `repositories/<name>/_manifests/revisions/<alg>/<hex>/gc-<run>`: an untagged revision
/// link set aside.
pub fn quarantined_revision(run: &uuid::Uuid, repo: &RepoName, digest: &Digest) -> StoragePath {
    revision_dir(repo, digest)
        .join(&quarantine_name(run))
        .expect("a simple UUID is a valid path component")
}

/// `repositories/<name>/_layers/<alg>/<hex>/gc-<run>`: a layer link to a swept blob, set
/// aside.
pub fn quarantined_layer(run: &uuid::Uuid, repo: &RepoName, digest: &Digest) -> StoragePath {
    layer_link(repo, digest)
        .parent()
        .join(&quarantine_name(run))
        .expect("a simple UUID is a valid path component")
}

/// What a file found by walking the tree is, read back from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// `blobs/<alg>/<xx>/<hex>/data`
    Blob(Digest),
    /// `repositories/<name>/_layers/<alg>/<hex>/link`
    Layer(RepoName, Digest),
    /// `repositories/<name>/_manifests/revisions/<alg>/<hex>/link`
    Revision(RepoName, Digest),
    /// `repositories/<name>/_manifests/tags/<tag>/current/link`
    TagCurrent(RepoName, Tag),
    /// `repositories/<name>/_manifests/tags/<tag>/index/<alg>/<hex>/link`
    TagIndex(RepoName, Tag, Digest),
    /// `repositories/<name>/_referrers/<alg>/<hex>/<alg>/<hex>/link`: subject, referrer.
    Referrer(RepoName, Digest, Digest),
    /// `repositories/<name>/_uploads/<uuid>/<file>`
    Upload(RepoName, UploadId, String),
    /// `_berth/pins/<alg>/<hex>/<id>`
    Pin(Digest),
    /// `blobs/<alg>/<xx>/<hex>/gc-<run>`
    QuarantinedBlob(String, Digest),
    /// `repositories/<name>/_manifests/revisions/<alg>/<hex>/gc-<run>`
    QuarantinedRevision(String, RepoName, Digest),
    /// `repositories/<name>/_layers/<alg>/<hex>/gc-<run>`
    QuarantinedLayer(String, RepoName, Digest),
    /// `_berth/gc/<run>/started`
    RunStarted(String),
}

fn digest_of(alg: &str, hex: &str) -> Option<Digest> {
    Digest::parse(&format!("{alg}:{hex}")).ok()
}

/// Classifies a path under the v2 root; `None` for anything the layout does not name
/// (an old `_digesttags` index, stray files), which callers leave alone.
pub fn classify(p: &StoragePath) -> Option<Entry> {
    let rest = p.as_str().strip_prefix(V2)?.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["blobs", alg, xx, hex, "data"] if hex.starts_with(xx) => {
            digest_of(alg, hex).map(Entry::Blob)
        }
        ["_berth", "pins", alg, hex, _] => digest_of(alg, hex).map(Entry::Pin),
        ["_berth", "gc", run, "started"] => Some(Entry::RunStarted((*run).to_owned())),
        ["blobs", alg, xx, hex, name] if hex.starts_with(xx) && name.starts_with("gc-") => {
            digest_of(alg, hex).map(|d| Entry::QuarantinedBlob(name[3..].to_owned(), d))
        }
        ["repositories", tail @ ..] => {
            let split = tail.iter().position(|c| c.starts_with('_'))?;
            let repo = RepoName::parse(&tail[..split].join("/")).ok()?;
            match &tail[split..] {
                ["_layers", alg, hex, "link"] => digest_of(alg, hex).map(|d| Entry::Layer(repo, d)),
                ["_layers", alg, hex, name] if name.starts_with("gc-") => digest_of(alg, hex)
                    .map(|d| Entry::QuarantinedLayer(name[3..].to_owned(), repo, d)),
                ["_manifests", "revisions", alg, hex, name] if name.starts_with("gc-") => {
                    digest_of(alg, hex)
                        .map(|d| Entry::QuarantinedRevision(name[3..].to_owned(), repo, d))
                }
                ["_manifests", "revisions", alg, hex, "link"] => {
                    digest_of(alg, hex).map(|d| Entry::Revision(repo, d))
                }
                ["_manifests", "tags", tag, "current", "link"] => {
                    Tag::parse(tag).ok().map(|t| Entry::TagCurrent(repo, t))
                }
                ["_manifests", "tags", tag, "index", alg, hex, "link"] => {
                    let tag = Tag::parse(tag).ok()?;
                    digest_of(alg, hex).map(|d| Entry::TagIndex(repo, tag, d))
                }
                ["_referrers", sa, sh, ra, rh, "link"] => Some(Entry::Referrer(
                    repo,
                    digest_of(sa, sh)?,
                    digest_of(ra, rh)?,
                )),
                ["_uploads", id, file] => {
                    let id = UploadId::parse(id).ok()?;
                    Some(Entry::Upload(repo, id, (*file).to_owned()))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The v2 root itself: what garbage collection and `check` walk.
pub fn v2_root() -> StoragePath {
    path(&[])
}

/// `blobs`
pub fn blobs_root() -> StoragePath {
    path(&["blobs"])
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn d() -> Digest {
        Digest::parse(&format!("sha256:{HEX}")).unwrap()
    }
    fn r() -> RepoName {
        RepoName::parse("library/ubuntu").unwrap()
    }

    #[test]
    fn every_path_kind_matches_distribution() {
        let v2 = "docker/registry/v2";
        let id = UploadId::parse("3f1b2c4d-0000-4000-8000-000000000001").unwrap();
        let t = Tag::parse("latest").unwrap();
        let cases = [
            (blob_data(&d()), format!("{v2}/blobs/sha256/e3/{HEX}/data")),
            (blob_dir(&d()), format!("{v2}/blobs/sha256/e3/{HEX}")),
            (repositories_root(), format!("{v2}/repositories")),
            (
                repository(&r()),
                format!("{v2}/repositories/library/ubuntu"),
            ),
            (
                layer_link(&r(), &d()),
                format!("{v2}/repositories/library/ubuntu/_layers/sha256/{HEX}/link"),
            ),
            (
                revision_link(&r(), &d()),
                format!("{v2}/repositories/library/ubuntu/_manifests/revisions/sha256/{HEX}/link"),
            ),
            (
                tags_dir(&r()),
                format!("{v2}/repositories/library/ubuntu/_manifests/tags"),
            ),
            (
                tag_current_link(&r(), &t),
                format!("{v2}/repositories/library/ubuntu/_manifests/tags/latest/current/link"),
            ),
            (
                tag_index_link(&r(), &t, &d()),
                format!(
                    "{v2}/repositories/library/ubuntu/_manifests/tags/latest/index/sha256/{HEX}/link"
                ),
            ),
            (
                upload_data(&r(), &id),
                format!(
                    "{v2}/repositories/library/ubuntu/_uploads/{}/data",
                    id.as_str()
                ),
            ),
            (
                upload_started_at(&r(), &id),
                format!(
                    "{v2}/repositories/library/ubuntu/_uploads/{}/startedat",
                    id.as_str()
                ),
            ),
            (
                referrer_link(&r(), &d(), &d()),
                format!(
                    "{v2}/repositories/library/ubuntu/_referrers/sha256/{HEX}/sha256/{HEX}/link"
                ),
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got.as_str(), want);
        }
    }

    #[test]
    fn notification_paths_stay_under_berths_own_directory() {
        let v2 = "docker/registry/v2";
        let id = uuid::Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let log = format!("{v2}/_berth/notifications/0123456789abcdef0123456789abcdef");
        assert_eq!(notification_log(&id).as_str(), log);
        assert_eq!(notification_lease(&id).as_str(), format!("{log}/lease"));
        assert_eq!(
            notification_batch(&id, 42).as_str(),
            format!("{log}/events/00000000000000000042")
        );
        // Any name, even one no path may hold, gets a fixed-length key of its own.
        let odd = notification_cursor(&id, "../a b/é");
        assert!(
            odd.as_str().starts_with(&format!("{log}/cursors/")),
            "{odd}"
        );
        assert_eq!(odd.as_str().len(), log.len() + "/cursors/".len() + 32);
        assert_ne!(odd, notification_cursor(&id, "other"));
        assert_eq!(classify(&odd), None);
    }

    #[test]
    fn classify_reads_back_every_path_it_builds() {
        let id = UploadId::parse("3f1b2c4d-0000-4000-8000-000000000001").unwrap();
        let t = Tag::parse("latest").unwrap();
        let run = uuid::Uuid::new_v4();
        let run_name = run.simple().to_string();
        let cases = [
            (blob_data(&d()), Entry::Blob(d())),
            (layer_link(&r(), &d()), Entry::Layer(r(), d())),
            (revision_link(&r(), &d()), Entry::Revision(r(), d())),
            (
                tag_current_link(&r(), &t),
                Entry::TagCurrent(r(), t.clone()),
            ),
            (tag_index_link(&r(), &t, &d()), Entry::TagIndex(r(), t, d())),
            (
                referrer_link(&r(), &d(), &d()),
                Entry::Referrer(r(), d(), d()),
            ),
            (
                upload_data(&r(), &id),
                Entry::Upload(r(), id.clone(), "data".into()),
            ),
            (pin(&d(), &uuid::Uuid::new_v4()), Entry::Pin(d())),
            (cache_pin(&d(), &uuid::Uuid::new_v4()), Entry::Pin(d())),
            (
                quarantined_blob(&run, &d()),
                Entry::QuarantinedBlob(run_name.clone(), d()),
            ),
            (
                quarantined_revision(&run, &r(), &d()),
                Entry::QuarantinedRevision(run_name.clone(), r(), d()),
            ),
            (
                quarantined_layer(&run, &r(), &d()),
                Entry::QuarantinedLayer(run_name.clone(), r(), d()),
            ),
            (gc_run_started(&run), Entry::RunStarted(run_name)),
        ];
        for (p, want) in cases {
            assert_eq!(classify(&p), Some(want), "{p}");
        }
        assert_eq!(classify(&blob_dir(&d())), None);
    }
}
