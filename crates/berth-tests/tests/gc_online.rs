//! Online garbage collection under load (issue 7): berth collects every 20 ms with a 5 s grace
//! period while clients push, tag, delete and re-push images whose layers are shared across
//! repositories, some of them pausing longer than the grace period between uploading blobs
//! and pushing the manifest. A manifest PUT may then fail with MANIFEST_BLOB_UNKNOWN (the
//! clean outcome of losing the race), never succeed over a deleted blob. Afterwards every tag
//! pulls byte-identical, the blob store holds exactly what the remaining manifests reference,
//! no pin, quarantine or upload is left over, and `berth check` finds nothing wrong.
//!
//! Runs for `GC_TORTURE_SECS` seconds (default 60).
#![allow(clippy::unwrap_used)] // A test: a panic is a failed test, with its message.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use berth_tests::client::{Client, Fail, UploadKind};
use berth_tests::disk::v2;
use berth_tests::process::{Berth, Setup, berth_bin};
use berth_tests::{Desc, content, image_manifest, sha256};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const CLIENTS: u64 = 8;
const SHARED_LAYERS: u64 = 6;
/// Short, but long enough that on a loaded two-core CI machine a manifest PUT writes its links
/// well within half of it after pinning, which the safety argument assumes (gc.rs);
/// berth warns when a PUT overruns, and the test fails on that warning.
const GRACE: Duration = Duration::from_secs(5);

/// What a client left behind: per (repository, tag), the manifest bytes and its blobs.
type Expected = HashMap<(String, String), (Bytes, Vec<(String, u64)>)>;

#[derive(Default)]
struct Counts {
    pushed: usize,
    blob_unknown: usize,
    deleted: usize,
}

async fn client_loop(c: Client, id: u64, deadline: Instant) -> (Expected, Counts) {
    let mut rng = StdRng::seed_from_u64(0x6763 + id);
    let mut expected = Expected::new();
    let mut counts = Counts::default();
    let repo = format!("gc/client{id}");
    let mut round = 0u64;
    while Instant::now() < deadline {
        round += 1;
        let mut blobs = Vec::new();
        let shared: Vec<u64> = (0..2).map(|_| rng.random_range(0..SHARED_LAYERS)).collect();
        let unique = id * 1_000_000 + round;
        let parts = [
            content(unique * 2, 300),
            content(5000 + shared[0], 4096 + shared[0] as usize),
            content(5000 + shared[1], 4096 + shared[1] as usize),
            content(unique * 2 + 1, 2048),
        ];
        for data in &parts {
            let digest = c
                .push_blob(&repo, data, UploadKind::Monolithic, &|_| {})
                .await
                .unwrap();
            blobs.push((digest, data.len() as u64));
        }
        // Sometimes stall past the grace period, so the unique blobs become collectable.
        if rng.random_ratio(1, 8) {
            tokio::time::sleep(GRACE + Duration::from_millis(rng.random_range(0..1500))).await;
        }
        let desc = |(d, s): &(String, u64)| Desc {
            digest: d.clone(),
            size: *s,
        };
        let layers: Vec<Desc> = blobs[1..].iter().map(desc).collect();
        let body = image_manifest(&desc(&blobs[0]), &layers, &format!("{id}-{round}"), false);
        let tag = format!("t{}", round % 3);
        match c.put_manifest(&repo, &tag, &body).await {
            Ok(_) => {
                counts.pushed += 1;
                expected.insert((repo.clone(), tag.clone()), (body.clone().into(), blobs));
            }
            Err(Fail::Status {
                status: 400, body, ..
            }) if body.contains("MANIFEST_BLOB_UNKNOWN") => {
                counts.blob_unknown += 1;
                continue;
            }
            Err(e) => panic!("manifest PUT failed: {e}"),
        }
        if rng.random_ratio(1, 4) {
            let r = c.delete_manifest(&repo, &sha256(&body)).await.unwrap();
            assert_eq!(r.status, 202, "DELETE by digest");
            expected.remove(&(repo.clone(), tag));
            counts.deleted += 1;
        }
    }
    (expected, counts)
}

/// Every file under `dir`, recursively. The collector deletes directories while this walks
/// (a run's `_berth/gc/<run>`, emptied blob and pin directories), so one that vanished
/// between its listing and its reading is skipped; any other error fails the test. The type
/// comes from the directory entry, so a vanished directory is never taken for a file.
fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => panic!("listing {}: {e}", dir.display()),
    };
    for e in entries {
        let e = match e {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("listing {}: {e}", dir.display()),
        };
        let file_type = match e.file_type() {
            Ok(t) => t,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => panic!("{}: {err}", e.path().display()),
        };
        if file_type.is_dir() {
            files_under(&e.path(), out);
        } else {
            out.push(e.path());
        }
    }
}

/// True for what one collection pass killed mid-way can leave under `_berth`: its run
/// directory `_berth/gc/<run>/` holding its `started` marker, or the marker's temporary file
/// `.started.tmp-<uuid>` when killed while writing it. Nothing else: no pin, no other file.
fn run_marker(berth_dir: &Path, p: &Path) -> bool {
    let name_ok = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        n == "started"
            || n.strip_prefix(".started.tmp-")
                .is_some_and(|u| !u.is_empty())
    });
    let in_run_dir = p
        .parent()
        .and_then(Path::parent)
        .is_some_and(|runs| runs == berth_dir.join("gc"));
    name_ok && in_run_dir
}

/// Digests of the blobs on disk, and of everything the stored revisions reference.
fn disk_state(root: &Path) -> (HashSet<String>, HashSet<String>) {
    let v2 = v2(root);
    let mut files = Vec::new();
    files_under(&v2.join("blobs"), &mut files);
    let on_disk: HashSet<String> = files
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "data"))
        .map(|p| {
            let hex = p.parent().unwrap().file_name().unwrap().to_string_lossy();
            format!("sha256:{hex}")
        })
        .collect();
    let mut links = Vec::new();
    files_under(&v2.join("repositories"), &mut links);
    let mut referenced = HashSet::new();
    for link in links {
        let s = link.to_string_lossy();
        if !s.contains("/_manifests/revisions/") || !s.ends_with("/link") {
            continue;
        }
        let digest = std::fs::read_to_string(&link).unwrap();
        let hex = digest.trim_start_matches("sha256:");
        let body = std::fs::read(v2.join(format!("blobs/sha256/{}/{hex}/data", &hex[..2])))
            .unwrap_or_else(|e| panic!("revision {digest} has no manifest blob: {e}"));
        let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
        referenced.insert(digest.clone());
        referenced.insert(m["config"]["digest"].as_str().unwrap().to_owned());
        for l in m["layers"].as_array().unwrap() {
            referenced.insert(l["digest"].as_str().unwrap().to_owned());
        }
    }
    (on_disk, referenced)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_gc_while_clients_push_tag_delete_and_repush() {
    let secs: u64 = std::env::var("GC_TORTURE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let berth = Berth::start_setup(
        work.path(),
        &Setup {
            maintenance: "{uploadpurging: {enabled: false}, garbagecollect: {enabled: true, interval: 20ms, graceperiod: 5s}}".to_owned(),
            ..Setup::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for id in 0..CLIENTS {
        let c = Client::new(&berth.base()).unwrap();
        tasks.push(tokio::spawn(client_loop(c, id, deadline)));
    }
    let mut expected = Expected::new();
    let mut totals = Counts::default();
    for t in tasks {
        let (e, c) = t.await.unwrap();
        expected.extend(e);
        totals.pushed += c.pushed;
        totals.blob_unknown += c.blob_unknown;
        totals.deleted += c.deleted;
    }
    eprintln!(
        "{} manifests pushed, {} deleted, {} refused with MANIFEST_BLOB_UNKNOWN, {} tags remain",
        totals.pushed,
        totals.deleted,
        totals.blob_unknown,
        expected.len()
    );
    assert!(totals.pushed > 40, "too little traffic to mean anything");
    assert!(totals.deleted > 5, "too few deletes to make garbage");

    // Every tag pulls byte-identical, while the collector keeps running.
    let c = Client::new(&berth.base()).unwrap();
    for ((repo, tag), (body, blobs)) in &expected {
        let r = c.get_manifest(repo, tag).await.unwrap();
        assert_eq!(r.status, 200, "{repo}:{tag}\n{}", berth.log_tail());
        assert_eq!(&r.body, body, "{repo}:{tag} manifest bytes");
        for (digest, size) in blobs {
            let got = c.blob_digest(repo, digest).await.unwrap();
            assert_eq!(
                got,
                Some((*size, digest.clone())),
                "{repo}:{tag} blob {digest}"
            );
        }
    }

    // Once everything is older than the grace period, passes leave exactly what the remaining
    // manifests reference, and every pin expires. Wait for that (a pass starts every 20 ms),
    // checking on every round that nothing referenced was ever deleted.
    let berth_dir = v2(&root).join("_berth");
    let waited = Instant::now();
    let wait_deadline = waited + Duration::from_secs(60);
    loop {
        let (on_disk, referenced) = disk_state(&root);
        let missing: Vec<_> = referenced.difference(&on_disk).collect();
        assert!(missing.is_empty(), "referenced but deleted: {missing:?}");
        let garbage: Vec<_> = on_disk.difference(&referenced).collect();
        let mut pins = Vec::new();
        files_under(&berth_dir.join("pins"), &mut pins);
        if garbage.is_empty() && pins.is_empty() {
            break;
        }
        assert!(
            Instant::now() < wait_deadline,
            "after 60 s, unreferenced and not collected: {garbage:?}; pins not expired: \
             {pins:?}\n{}",
            berth.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "no garbage and no pin left {:.1} s after the pulls",
        waited.elapsed().as_secs_f64()
    );

    let log = berth.log_text();
    assert!(
        !log.contains("more than a garbage-collection grace period after pinning"),
        "a PUT overran the grace period: the run proves nothing"
    );
    assert!(
        !log.contains("revision names a manifest that is not stored"),
        "a revision lost its manifest"
    );
    let passes = log.matches("garbage collection finished").count();
    let swept: usize = log
        .lines()
        .filter(|l| l.contains("garbage collection finished"))
        .filter_map(|l| l.split("blobs_swept=").nth(1))
        .filter_map(|s| s.split_whitespace().next()?.parse::<usize>().ok())
        .sum();
    eprintln!("{passes} collection passes swept {swept} blobs");
    assert!(passes > 20, "the collector hardly ran: {passes} passes");
    assert!(swept > 0, "the collector never swept anything");
    drop(berth);

    // berth is killed and reaped: nothing moves any more. It may have been killed in the
    // middle of a pass, which leaves that run's marker (or its temporary file) and nothing
    // else under `_berth`.
    let mut files = Vec::new();
    files_under(&berth_dir, &mut files);
    let (markers, leftovers): (Vec<_>, Vec<_>) =
        files.into_iter().partition(|p| run_marker(&berth_dir, p));
    eprintln!("the killed pass left {markers:?}");
    assert!(
        leftovers.is_empty(),
        "pins or quarantine left: {leftovers:?}"
    );

    let out = std::process::Command::new(berth_bin(false))
        .arg("check")
        .arg(work.path().join("config.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "berth check: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
