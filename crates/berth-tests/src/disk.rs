//! Checks a storage tree the way a crash would hurt it: every `blobs/**/data` must hash to
//! the digest its directory names (no half-written or mismatched blob), and every `link` file
//! in a repository (`_layers`, `_manifests/revisions`, tag `current` and `index`) must hold a
//! well-formed digest, agree with the directory it sits in, and point at a blob that exists.
//!
//! Blob files are hashed once per (size, mtime, inode): berth only ever renames whole files
//! into `blobs/`, so an unchanged identity means unchanged content, and a loop of fifty
//! restarts does not re-hash gigabytes.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::Digest as _;

/// `<root>/docker/registry/v2`
pub fn v2(root: &Path) -> PathBuf {
    root.join("docker/registry/v2")
}

/// What one walk found.
#[derive(Debug, Default)]
pub struct TreeReport {
    /// Everything wrong, one line each.
    pub problems: Vec<String>,
    /// Blob data files seen.
    pub blobs: usize,
    /// Blob data files hashed in this walk (the rest were unchanged since an earlier walk).
    pub hashed: usize,
    /// Link files checked.
    pub links: usize,
    /// `(repository, digest)` of every `_layers` link.
    pub layer_links: Vec<(String, String)>,
    /// `(repository, digest)` of every `_manifests/revisions` link.
    pub revision_links: Vec<(String, String)>,
    /// `(repository, tag, digest)` of every tag `current` link.
    pub tag_links: Vec<(String, String, String)>,
    /// Upload session directories under `_uploads`.
    pub sessions: usize,
    /// Temporary files (`.<name>.tmp-<id>`) left behind anywhere.
    pub temporaries: Vec<PathBuf>,
}

/// A tree checker remembering which blob files it already verified.
#[derive(Default)]
pub struct Checker {
    verified: HashMap<PathBuf, (u64, i64, i64, u64)>,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if e.file_type()?.is_dir() {
            files_under(&e.path(), out)?;
        } else {
            out.push(e.path());
        }
    }
    Ok(())
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

impl Checker {
    /// A checker that has verified nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Walks the tree under `root` (the configured `rootdirectory`).
    pub fn check(&mut self, root: &Path) -> TreeReport {
        let mut report = TreeReport::default();
        let v2 = v2(root);
        let blobs = self.check_blobs(&v2, &mut report);
        self.check_repositories(&v2, &blobs, &mut report);
        report
    }

    /// Verifies every blob file; returns the hex digests whose data is present and correct.
    fn check_blobs(&mut self, v2: &Path, report: &mut TreeReport) -> HashSet<String> {
        let mut good = HashSet::new();
        let mut files = Vec::new();
        if let Err(e) = files_under(&v2.join("blobs"), &mut files) {
            report.problems.push(format!("walking blobs/: {e}"));
        }
        for path in files {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') {
                report.temporaries.push(path);
                continue;
            }
            let rel = path.strip_prefix(v2).unwrap_or(&path);
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            // blobs/sha256/<xx>/<hex>/data
            let [b, alg, xx, hex, data] = parts.as_slice() else {
                report
                    .problems
                    .push(format!("unexpected file {}", rel.display()));
                continue;
            };
            if b != "blobs"
                || alg != "sha256"
                || data != "data"
                || !is_hex64(hex)
                || xx != &hex[..2]
            {
                report
                    .problems
                    .push(format!("unexpected file {}", rel.display()));
                continue;
            }
            report.blobs += 1;
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    report.problems.push(format!("stat {}: {e}", rel.display()));
                    continue;
                }
            };
            let identity = (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ino());
            if self.verified.get(&path) == Some(&identity) {
                good.insert(hex.clone());
                continue;
            }
            report.hashed += 1;
            match sha256_file(&path) {
                Ok(actual) if &actual == hex => {
                    self.verified.insert(path.clone(), identity);
                    good.insert(hex.clone());
                }
                Ok(actual) => report.problems.push(format!(
                    "{} holds {} bytes hashing to sha256:{actual}, not its name",
                    rel.display(),
                    meta.len()
                )),
                Err(e) => report.problems.push(format!("read {}: {e}", rel.display())),
            }
        }
        good
    }

    fn check_repositories(&self, v2: &Path, blobs: &HashSet<String>, report: &mut TreeReport) {
        let repos = v2.join("repositories");
        let mut files = Vec::new();
        if let Err(e) = files_under(&repos, &mut files) {
            report.problems.push(format!("walking repositories/: {e}"));
        }
        let mut sessions = HashSet::new();
        for path in files {
            let rel = path.strip_prefix(&repos).unwrap_or(&path);
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let Some(name) = parts.last() else { continue };
            if name.starts_with('.') {
                report.temporaries.push(path.clone());
                continue;
            }
            // The repository name is everything before the first `_`-prefixed component.
            let Some(split) = parts.iter().position(|p| p.starts_with('_')) else {
                report
                    .problems
                    .push(format!("file outside any _ directory: {}", rel.display()));
                continue;
            };
            let repo = parts[..split].join("/");
            let rest: Vec<&str> = parts[split..].iter().map(String::as_str).collect();
            if rest[0] == "_uploads" {
                if let Some(id) = rest.get(1) {
                    sessions.insert(format!("{repo}/{id}"));
                }
                continue;
            }
            if name != "link" {
                // Not links: an old berth's `_digesttags` entries, stray files.
                continue;
            }
            report.links += 1;
            let content = match fs::read(&path) {
                Ok(c) => c,
                Err(e) => {
                    report.problems.push(format!("read {}: {e}", rel.display()));
                    continue;
                }
            };
            let text = String::from_utf8_lossy(&content);
            let Some(hex) = text.strip_prefix("sha256:").filter(|h| is_hex64(h)) else {
                report.problems.push(format!(
                    "{} holds {text:?}, not a sha256 digest without newline",
                    rel.display()
                ));
                continue;
            };
            // The directory a link sits in names the digest for layers, revisions and tag
            // index entries: `.../sha256/<hex>/link`.
            let named = match rest.as_slice() {
                ["_layers", "sha256", h, "link"] => Some(*h),
                ["_manifests", "revisions", "sha256", h, "link"] => Some(*h),
                ["_manifests", "tags", _, "index", "sha256", h, "link"] => Some(*h),
                ["_manifests", "tags", tag, "current", "link"] => {
                    report.tag_links.push((
                        repo.clone(),
                        (*tag).to_owned(),
                        format!("sha256:{hex}"),
                    ));
                    None
                }
                _ => None,
            };
            if let Some(h) = named
                && h != hex
            {
                report.problems.push(format!(
                    "{} sits under {h} but holds sha256:{hex}",
                    rel.display()
                ));
            }
            match rest.as_slice() {
                ["_layers", ..] => report
                    .layer_links
                    .push((repo.clone(), format!("sha256:{hex}"))),
                ["_manifests", "revisions", ..] => report
                    .revision_links
                    .push((repo.clone(), format!("sha256:{hex}"))),
                _ => {}
            }
            if !blobs.contains(hex) {
                report.problems.push(format!(
                    "{} points at sha256:{hex}, whose blob data is missing or wrong",
                    rel.display()
                ));
            }
        }
        report.sessions = sessions.len();
    }
}
