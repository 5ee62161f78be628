//! Crash safety: berth is SIGKILLed at random moments while eight clients push images
//! (monolithic, chunked and streamed blob uploads, then manifests by tag), sixty times in a
//! row on one storage root, with a fixed seed. After every restart nothing acknowledged may be
//! lost or damaged, no link may dangle, no half-written blob may be visible, and the upload
//! sessions the kill interrupted must resume from the offset berth reports (or be gone, in
//! which case a new upload must work). ARCHITECTURE.md's "Order of writes" promises exactly
//! this; the test holds it to that.
#![allow(clippy::unwrap_used)] // A test: a panic is a failed test, with its message.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_tests::client::{Client, Fail, UploadEvent, UploadKind, range_size};
use berth_tests::disk::Checker;
use berth_tests::process::Berth;
use berth_tests::{Desc, content, image_manifest, sha256};
use bytes::Bytes;
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const SEED: u64 = 0x6265_7274_685f_6b39;
/// Kills per run; `BERTH_TORTURE_KILLS` overrides it for a longer soak.
const ITERATIONS: usize = 60;
const CLIENTS: u64 = 8;
const REPOS: [&str; 3] = ["torture/alpha", "torture/beta", "gamma"];
const TAGS: [&str; 4] = ["latest", "v1", "v2", "stable"];
const KILL_AFTER_MS: std::ops::RangeInclusive<u64> = 20..=400;

/// A blob berth answered 201 for.
#[derive(Clone)]
struct Blob {
    repo: &'static str,
    digest: String,
    len: u64,
    seed: u64,
}

/// An upload session a client had open.
#[derive(Clone)]
struct Session {
    repo: &'static str,
    path: String,
    seed: u64,
    len: usize,
    /// Bytes berth acknowledged with a 202.
    acked: u64,
}

/// One manifest PUT by tag, acknowledged or cut off by the kill.
struct TagPut {
    digest: String,
    started: Instant,
    /// When the 201 arrived; `None` if it never did.
    acked: Option<Instant>,
    /// The kill that cut it off, for a PUT never acknowledged.
    killed: Option<Instant>,
}

impl TagPut {
    /// The latest moment its write can have happened.
    fn ended(&self) -> Instant {
        self.acked.or(self.killed).unwrap_or_else(Instant::now)
    }
}

#[derive(Default)]
struct Ledger {
    blobs: Vec<Blob>,
    blob_keys: HashSet<(String, String)>,
    /// `(repo, digest)` → bytes, for every acknowledged manifest.
    manifests: HashMap<(String, String), Bytes>,
    tag_puts: HashMap<(String, String), Vec<TagPut>>,
    /// Open sessions by client.
    sessions: HashMap<u64, Session>,
    /// Failures that are berth's fault.
    errors: Vec<String>,
    acked_this_round: usize,
    manifests_this_round: usize,
}

impl Ledger {
    fn add_blob(&mut self, b: Blob) {
        self.acked_this_round += 1;
        if self.blob_keys.insert((b.repo.to_owned(), b.digest.clone())) {
            self.blobs.push(b);
        }
    }
}

type Shared = Arc<Mutex<Ledger>>;
/// A blob GET: 404 as `None`, else its length and digest.
type BlobRead = Result<Option<(u64, String)>, Fail>;

/// Log-uniform between 1 KiB and 4 MiB: many small blobs, some large.
fn blob_len(rng: &mut StdRng) -> usize {
    let (lo, hi) = ((1024f64).ln(), ((4 << 20) as f64).ln());
    rng.random_range(lo..=hi).exp() as usize
}

fn upload_kind(rng: &mut StdRng) -> UploadKind {
    match rng.random_range(0..3) {
        0 => UploadKind::Monolithic,
        1 => UploadKind::Chunked {
            chunk: rng.random_range(64 << 10..=1 << 20),
            last_in_put: rng.random_bool(0.3),
        },
        _ => UploadKind::Streamed {
            piece: rng.random_range(16 << 10..=256 << 10),
        },
    }
}

/// One client's handles: its connection, the shared ledger, and the kill flag.
struct Worker {
    c: Client,
    ledger: Shared,
    killed: Arc<AtomicBool>,
    id: u64,
}

impl Worker {
    /// Records a failure unless it is the connection dying after the kill.
    fn failed(&self, e: &Fail) {
        if e.is_transport() && self.killed.load(Ordering::SeqCst) {
            return;
        }
        let when = if self.killed.load(Ordering::SeqCst) {
            "after the kill"
        } else {
            "before the kill"
        };
        self.ledger
            .lock()
            .unwrap()
            .errors
            .push(format!("client {} {when}: {e}", self.id));
    }

    /// Pushes one blob, keeping the ledger's view of its session current. `None` when the
    /// client should stop (the kill, or a failure already recorded).
    async fn push(
        &self,
        repo: &'static str,
        seed: u64,
        len: usize,
        kind: UploadKind,
    ) -> Option<Desc> {
        let data = content(seed, len);
        let (l, id) = (self.ledger.clone(), self.id);
        let on = move |ev: UploadEvent| {
            let mut l = l.lock().unwrap();
            match ev {
                UploadEvent::Opened { path } => {
                    l.sessions.insert(
                        id,
                        Session {
                            repo,
                            path,
                            seed,
                            len,
                            acked: 0,
                        },
                    );
                }
                UploadEvent::Acked { offset } => {
                    if let Some(s) = l.sessions.get_mut(&id) {
                        s.acked = offset;
                    }
                }
            }
        };
        match self.c.push_blob(repo, &data, kind, &on).await {
            Ok(digest) => {
                let mut l = self.ledger.lock().unwrap();
                l.sessions.remove(&id);
                l.add_blob(Blob {
                    repo,
                    digest: digest.clone(),
                    len: len as u64,
                    seed,
                });
                Some(Desc {
                    digest,
                    size: len as u64,
                })
            }
            Err(e) => {
                self.failed(&e);
                None
            }
        }
    }

    /// Pushes images (config, one to three layers, a manifest by tag) until berth dies.
    async fn run(self, seed: u64) {
        let (c, ledger, id) = (&self.c, &self.ledger, self.id);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut n = 0u64;
        while !self.killed.load(Ordering::SeqCst) {
            n += 1;
            let repo = REPOS[rng.random_range(0..REPOS.len())];
            let mut descs = Vec::new();
            for i in 0..rng.random_range(2..=4) {
                // Now and then reuse a blob acknowledged earlier, possibly before a restart:
                // reference it after a HEAD as docker does, or push the same bytes again.
                let old = {
                    let l = ledger.lock().unwrap();
                    let mine: Vec<&Blob> = l.blobs.iter().filter(|b| b.repo == repo).collect();
                    (!mine.is_empty() && rng.random_bool(0.2))
                        .then(|| mine[rng.random_range(0..mine.len())].clone())
                };
                let desc = match old {
                    Some(b) if rng.random_bool(0.5) => match c.blob_head(repo, &b.digest).await {
                        Ok(200) => Desc {
                            digest: b.digest,
                            size: b.len,
                        },
                        Ok(status) => {
                            ledger.lock().unwrap().errors.push(format!(
                                "client {id}: HEAD of acknowledged {repo}@{} gave {status}",
                                b.digest
                            ));
                            return;
                        }
                        Err(e) => return self.failed(&e),
                    },
                    Some(b) => {
                        let kind = upload_kind(&mut rng);
                        match self.push(repo, b.seed, b.len as usize, kind).await {
                            Some(d) => d,
                            None => return,
                        }
                    }
                    None => {
                        let len = if i == 0 {
                            rng.random_range(256..=4096)
                        } else {
                            blob_len(&mut rng)
                        };
                        let (seed, kind) = (rng.random(), upload_kind(&mut rng));
                        match self.push(repo, seed, len, kind).await {
                            Some(d) => d,
                            None => return,
                        }
                    }
                };
                descs.push(desc);
            }
            let body = image_manifest(
                &descs[0],
                &descs[1..],
                &format!("{seed:x}/{n}"),
                rng.random_bool(0.5),
            );
            let digest = sha256(&body);
            let tag = TAGS[rng.random_range(0..TAGS.len())];
            let key = (repo.to_owned(), tag.to_owned());
            let index = {
                let mut l = ledger.lock().unwrap();
                let puts = l.tag_puts.entry(key.clone()).or_default();
                puts.push(TagPut {
                    digest: digest.clone(),
                    started: Instant::now(),
                    acked: None,
                    killed: None,
                });
                puts.len() - 1
            };
            match c.put_manifest(repo, tag, &body).await {
                Ok(_) => {
                    let mut l = ledger.lock().unwrap();
                    l.tag_puts.get_mut(&key).unwrap()[index].acked = Some(Instant::now());
                    l.manifests.insert((repo.to_owned(), digest), body.into());
                    l.manifests_this_round += 1;
                }
                Err(e) => return self.failed(&e),
            }
        }
    }
}

#[derive(Default, Debug)]
struct Figures {
    kills: usize,
    blob_reads: usize,
    manifest_reads: usize,
    tag_reads: usize,
    unacked_layer_reads: usize,
    unacked_manifest_reads: usize,
    resumed: usize,
    resumed_bytes_already_held: u64,
    /// Sessions holding more than was acknowledged: part of a PATCH cut off by the kill.
    resumed_past_ack: usize,
    restarted: usize,
    min_acked_per_round: usize,
    total_acked_pushes: usize,
    total_acked_manifests: usize,
    max_sessions_on_disk: usize,
    temporaries_seen: usize,
    blob_files_hashed: usize,
}

/// Everything that must hold right after a restart. Returns the failures.
async fn verify(
    c: &Client,
    root: &std::path::Path,
    ledger: &Shared,
    checker: &mut Checker,
    http_checked: &mut HashSet<(String, String)>,
    figures: &mut Figures,
) -> Vec<String> {
    let mut errors = Vec::new();
    let (blobs, manifests, tags) = {
        let l = ledger.lock().unwrap();
        let tags: Vec<((String, String), Vec<String>, bool)> = l
            .tag_puts
            .iter()
            .map(|(k, puts)| {
                // A PUT may be current unless an acknowledged PUT began after it ended.
                let candidates = puts
                    .iter()
                    .filter(|p| {
                        !puts
                            .iter()
                            .any(|q| q.acked.is_some() && q.started > p.ended())
                    })
                    .map(|p| p.digest.clone())
                    .collect();
                (
                    k.clone(),
                    candidates,
                    puts.iter().any(|p| p.acked.is_some()),
                )
            })
            .collect();
        (l.blobs.clone(), l.manifests.clone(), tags)
    };

    // Every acknowledged blob reads back whole, in its repository.
    let results: Vec<(Blob, BlobRead)> = futures_util::stream::iter(blobs)
        .map(|b| async move {
            let r = c.blob_digest(b.repo, &b.digest).await;
            (b, r)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for (b, r) in results {
        figures.blob_reads += 1;
        match r {
            Ok(Some((len, digest))) if len == b.len && digest == b.digest => {}
            Ok(Some((len, digest))) => errors.push(format!(
                "acknowledged blob {}@{} ({} bytes) reads back as {len} bytes hashing to {digest}",
                b.repo, b.digest, b.len
            )),
            Ok(None) => errors.push(format!(
                "acknowledged blob {}@{} is gone (404)",
                b.repo, b.digest
            )),
            Err(e) => errors.push(format!("acknowledged blob: {e}")),
        }
    }

    // Every acknowledged manifest, by digest, byte for byte.
    for ((repo, digest), body) in &manifests {
        figures.manifest_reads += 1;
        match c.get_manifest(repo, digest).await {
            Ok(r) if r.status == 200 && r.body == *body => {}
            Ok(r) => errors.push(format!(
                "acknowledged manifest {repo}@{digest}: HTTP {} with {} bytes (expected {})",
                r.status,
                r.body.len(),
                body.len()
            )),
            Err(e) => errors.push(format!("acknowledged manifest: {e}")),
        }
    }

    // Every tag names a manifest that may be its latest, or nothing if none was acknowledged.
    for ((repo, tag), candidates, any_acked) in &tags {
        figures.tag_reads += 1;
        match c.get_manifest(repo, tag).await {
            Ok(r) if r.status == 200 => {
                let digest = sha256(&r.body);
                if r.h("docker-content-digest") != digest {
                    errors.push(format!(
                        "{repo}:{tag} served with Docker-Content-Digest {} but hashes to {digest}",
                        r.h("docker-content-digest")
                    ));
                }
                if !candidates.contains(&digest) {
                    errors.push(format!(
                        "{repo}:{tag} resolves to {digest}, which is none of the {} manifests \
                         that may be its latest: {candidates:?}",
                        candidates.len()
                    ));
                }
            }
            Ok(r) if r.status == 404 && !any_acked => {}
            Ok(r) => errors.push(format!(
                "{repo}:{tag}: HTTP {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            )),
            Err(e) => errors.push(format!("tag: {e}")),
        }
    }

    // The tree itself: no half-written blob, no dangling or mismatched link.
    let report = checker.check(root);
    figures.blob_files_hashed += report.hashed;
    figures.temporaries_seen = figures.temporaries_seen.max(report.temporaries.len());
    figures.max_sessions_on_disk = figures.max_sessions_on_disk.max(report.sessions);
    errors.extend(report.problems.iter().map(|p| format!("on disk: {p}")));
    // Blobs linked by pushes whose 201 never arrived are served too: they must be whole.
    let acked: HashSet<(String, String)> = ledger.lock().unwrap().blob_keys.clone();
    for (repo, digest) in report.layer_links {
        let key = (repo.clone(), digest.clone());
        if acked.contains(&key) || http_checked.contains(&key) {
            continue;
        }
        figures.unacked_layer_reads += 1;
        match c.blob_digest(&repo, &digest).await {
            Ok(Some((_, d))) if d == digest => {
                http_checked.insert(key);
            }
            Ok(other) => errors.push(format!(
                "linked blob {repo}@{digest} pushed without a 201 reads as {other:?}"
            )),
            Err(e) => errors.push(format!("linked blob: {e}")),
        }
    }
    // Manifests stored by PUTs whose 201 never arrived are served by digest: whole too.
    let acked_manifests: HashSet<(String, String)> = manifests.keys().cloned().collect();
    for (repo, digest) in report.revision_links {
        let key = (repo.clone(), digest.clone());
        if acked_manifests.contains(&key) || http_checked.contains(&key) {
            continue;
        }
        figures.unacked_manifest_reads += 1;
        match c.get_manifest(&repo, &digest).await {
            Ok(r) if r.status == 200 && sha256(&r.body) == digest => {
                http_checked.insert(key);
            }
            Ok(r) => errors.push(format!(
                "linked manifest {repo}@{digest} pushed without a 201: HTTP {} hashing to {}",
                r.status,
                sha256(&r.body)
            )),
            Err(e) => errors.push(format!("linked manifest: {e}")),
        }
    }
    errors
}

/// Finishes the sessions the kill interrupted, from where berth says they stand, or starts
/// over when berth no longer has them.
async fn resume_sessions(c: &Client, ledger: &Shared, figures: &mut Figures) -> Vec<String> {
    let sessions: Vec<Session> = ledger
        .lock()
        .unwrap()
        .sessions
        .drain()
        .map(|(_, s)| s)
        .collect();
    let mut errors = Vec::new();
    for s in sessions {
        let data = content(s.seed, s.len);
        let digest = sha256(&data);
        let outcome: Result<(), String> = async {
            match c.upload_status(&s.path).await.map_err(|e| e.to_string())? {
                Some(range) => {
                    let mut held = range_size(&range)
                        .ok_or_else(|| format!("GET {}: unusable Range {range:?}", s.path))?;
                    if held < s.acked {
                        return Err(format!(
                            "session {} reports {held} bytes after the restart, but {} were \
                             acknowledged with 202 before the kill",
                            s.path, s.acked
                        ));
                    }
                    if held > s.len as u64 {
                        return Err(format!(
                            "session {} reports {held} bytes, more than the {} ever sent",
                            s.path, s.len
                        ));
                    }
                    figures.resumed_bytes_already_held += held;
                    if held > s.acked {
                        figures.resumed_past_ack += 1;
                    }
                    let rest = data[held as usize..].to_vec();
                    let patched = match c.patch(&s.path, held, rest.clone()).await {
                        // `0-0` means 0 or 1 bytes; berth's 416 settles it.
                        Err(Fail::Status { status: 416, .. }) if range == "0-0" => {
                            held = 1;
                            c.patch(&s.path, 1, data[1..].to_vec()).await
                        }
                        other => other,
                    }
                    .map_err(|e| format!("resuming: {e}"))?;
                    if patched != s.len as u64 {
                        return Err(format!(
                            "session {} holds {patched} bytes after the last PATCH from {held}, \
                             expected {}",
                            s.path, s.len
                        ));
                    }
                    c.finish(&s.path, &digest, Bytes::new())
                        .await
                        .map_err(|e| format!("finishing a resumed session: {e}"))?;
                    figures.resumed += 1;
                }
                None => {
                    c.push_blob(s.repo, &data, UploadKind::Monolithic, &|_| {})
                        .await
                        .map_err(|e| format!("new upload after the session vanished: {e}"))?;
                    figures.restarted += 1;
                }
            }
            match c.blob_digest(s.repo, &digest).await {
                Ok(Some((len, d))) if len == s.len as u64 && d == digest => Ok(()),
                other => Err(format!("{}@{digest} after resuming: {other:?}", s.repo)),
            }
        }
        .await;
        match outcome {
            Ok(()) => ledger.lock().unwrap().add_blob(Blob {
                repo: s.repo,
                digest,
                len: s.len as u64,
                seed: s.seed,
            }),
            Err(e) => errors.push(e),
        }
    }
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_pushes_loses_nothing_acknowledged() {
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let ledger: Shared = Arc::default();
    let mut checker = Checker::new();
    let mut http_checked = HashSet::new();
    let mut figures = Figures {
        min_acked_per_round: usize::MAX,
        ..Figures::default()
    };
    let mut rng = StdRng::seed_from_u64(SEED);

    let iterations = std::env::var("BERTH_TORTURE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ITERATIONS);
    let mut berth = Berth::start_on(&root, work.path());
    for iteration in 0..=iterations {
        let c = Client::new(&berth.base()).unwrap();
        if iteration > 0 {
            let mut errors = verify(
                &c,
                &root,
                &ledger,
                &mut checker,
                &mut http_checked,
                &mut figures,
            )
            .await;
            errors.extend(resume_sessions(&c, &ledger, &mut figures).await);
            assert!(
                errors.is_empty(),
                "after kill {iteration}: {} failures:\n{}\nberth log:\n{}",
                errors.len(),
                errors.join("\n"),
                berth.log_tail()
            );
        }
        if iteration == iterations {
            break;
        }

        let killed = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|id| {
                let seed = SEED ^ ((iteration as u64) << 16) ^ id;
                let worker = Worker {
                    c: Client::new(&berth.base()).unwrap(),
                    ledger: ledger.clone(),
                    killed: killed.clone(),
                    id,
                };
                tokio::spawn(worker.run(seed))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(KILL_AFTER_MS))).await;
        killed.store(true, Ordering::SeqCst);
        let log = berth.log_tail();
        berth
            .sigkill()
            .unwrap_or_else(|e| panic!("iteration {iteration}: {e}\nlog:\n{log}"));
        // Only now, with the process reaped, has berth certainly written its last byte: a PUT
        // cut off by this kill may have landed at any moment up to here, and one acknowledged
        // meanwhile may have started after the flag was set.
        let kill_time = Instant::now();
        figures.kills += 1;
        for c in clients {
            tokio::time::timeout(Duration::from_secs(60), c)
                .await
                .expect("a client hung after the kill")
                .unwrap();
        }
        {
            let mut l = ledger.lock().unwrap();
            for puts in l.tag_puts.values_mut() {
                for p in puts
                    .iter_mut()
                    .filter(|p| p.acked.is_none() && p.killed.is_none())
                {
                    p.killed = Some(kill_time);
                }
            }
            assert!(
                l.errors.is_empty(),
                "iteration {iteration}: {}\nberth log:\n{log}",
                l.errors.join("\n")
            );
            figures.min_acked_per_round = figures.min_acked_per_round.min(l.acked_this_round);
            figures.total_acked_pushes += l.acked_this_round;
            figures.total_acked_manifests += l.manifests_this_round;
            l.acked_this_round = 0;
            l.manifests_this_round = 0;
        }
        berth = Berth::start_on(&root, work.path());
    }
    let l = ledger.lock().unwrap();
    println!(
        "crash torture: {} kills survived in {:.1} s; {} distinct acknowledged blobs and {} \
         manifests at the end; {figures:?}",
        figures.kills,
        started.elapsed().as_secs_f64(),
        l.blobs.len(),
        l.manifests.len()
    );
    assert!(figures.kills >= iterations.min(50));
    assert!(figures.total_acked_pushes > 0 && figures.total_acked_manifests > 0);
}
