//! Races between clients of one berth process: sixteen pushes of the same blob (monolithic,
//! chunked and streamed mixed), sixteen PUTs of one manifest to one tag, sixteen different
//! manifests racing for one tag while readers watch it, and a DELETE by digest racing PUTs of
//! that manifest and tag, fifty times. Every request must get a proper answer (never a 500),
//! and the state afterwards must be one that some order of the requests explains; once the
//! racing tag PUTs are all answered, GET by tag must serve what the tag's link stores.
#![allow(clippy::unwrap_used)] // A test: a panic is a failed test, with its message.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use berth_tests::client::{Client, UploadKind};
use berth_tests::disk::{Checker, v2};
use berth_tests::process::Berth;
use berth_tests::{content, hex_of, image_manifest, sha256};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const SEED: u64 = 0x7261_6365_7321;
const CLIENTS: usize = 16;

async fn start() -> (tempfile::TempDir, Berth, Client) {
    let work = tempfile::tempdir().unwrap();
    let berth = Berth::start_on(&work.path().join("root"), work.path());
    let c = Client::new(&berth.base()).unwrap();
    (work, berth, c)
}

/// Nothing on disk is wrong, and (optionally) no session or temporary file was left.
fn assert_clean_tree(work: &tempfile::TempDir, berth: &Berth, no_leftovers: bool) {
    let report = Checker::new().check(&work.path().join("root"));
    assert!(
        report.problems.is_empty(),
        "{}\nberth log:\n{}",
        report.problems.join("\n"),
        berth.log_tail()
    );
    if no_leftovers {
        assert_eq!(
            report.sessions, 0,
            "upload sessions left after every push got 201"
        );
        assert!(
            report.temporaries.is_empty(),
            "temporary files left: {:?}",
            report.temporaries
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_pushes_of_one_blob() {
    let (work, berth, c) = start().await;
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut pushes = 0;
    // Same repository, then one blob into four repositories at once.
    for (round, len) in [1024usize, 300 << 10, 2 << 20, 4 << 20, 1 << 20]
        .into_iter()
        .enumerate()
    {
        let data = content(rng.random(), len);
        let digest = sha256(&data);
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (c, data) = (c.clone(), data.clone());
                let repo = if round == 4 {
                    format!("race/blob{}", i % 4)
                } else {
                    "race/blob".to_owned()
                };
                let kind = match i % 3 {
                    0 => UploadKind::Monolithic,
                    1 => UploadKind::Chunked {
                        chunk: 256 << 10,
                        last_in_put: i % 2 == 0,
                    },
                    _ => UploadKind::Streamed { piece: 64 << 10 },
                };
                tokio::spawn(async move {
                    let r = c.push_blob(&repo, &data, kind, &|_| {}).await;
                    (repo, kind, r)
                })
            })
            .collect();
        for t in tasks {
            let (repo, kind, r) = t.await.unwrap();
            match r {
                Ok(d) => assert_eq!(d, digest),
                Err(e) => panic!(
                    "round {round}: {kind:?} push to {repo} failed: {e}\nlog:\n{}",
                    berth.log_tail()
                ),
            }
            pushes += 1;
        }
        // One blob file, whole, and every repository serves it.
        let hex = hex_of(&digest);
        let file =
            v2(&work.path().join("root")).join(format!("blobs/sha256/{}/{hex}/data", &hex[..2]));
        assert_eq!(std::fs::read(&file).unwrap(), data);
        let dir = file.parent().unwrap();
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["data"], "{} holds {names:?}", dir.display());
        let repos: HashSet<String> = (0..CLIENTS)
            .map(|i| {
                if round == 4 {
                    format!("race/blob{}", i % 4)
                } else {
                    "race/blob".to_owned()
                }
            })
            .collect();
        for repo in repos {
            assert_eq!(
                c.blob_digest(&repo, &digest).await.unwrap(),
                Some((len as u64, digest.clone()))
            );
        }
    }
    assert_clean_tree(&work, &berth, true);
    println!("same-blob race: {pushes} concurrent pushes in 5 rounds of {CLIENTS}, all 201");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_puts_of_one_manifest_to_one_tag() {
    let (work, berth, c) = start().await;
    let repo = "race/same";
    let (config, layer) = c.push_config_and_layer(repo, SEED).await.unwrap();
    for round in 0..5 {
        let tag = format!("t{round}");
        let body = image_manifest(
            &config,
            std::slice::from_ref(&layer),
            &format!("same {round}"),
            true,
        );
        let digest = sha256(&body);
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (c, body, tag) = (c.clone(), body.clone(), tag.clone());
                tokio::spawn(async move { c.put_manifest(repo, &tag, &body).await })
            })
            .collect();
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                panic!("round {round}: {e}\nlog:\n{}", berth.log_tail());
            }
        }
        let r = c.get_manifest(repo, &tag).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body);
        assert_eq!(r.h("docker-content-digest"), digest);
        let tags = c.tags(repo).await.unwrap();
        assert_eq!(
            tags.iter().filter(|t| **t == tag).count(),
            1,
            "tags/list: {tags:?}"
        );
    }
    assert_eq!(c.tags(repo).await.unwrap(), ["t0", "t1", "t2", "t3", "t4"]);
    assert_clean_tree(&work, &berth, true);
    println!("same-manifest race: 5 rounds of {CLIENTS} PUTs, all 201");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_different_manifests_race_for_one_tag() {
    let (work, berth, c) = start().await;
    let repo = "race/different";
    let (config, layer) = c.push_config_and_layer(repo, SEED + 10).await.unwrap();
    let reads = Arc::new(AtomicUsize::new(0));
    for round in 0..10 {
        let tag = "contested";
        let bodies: Vec<Bytes> = (0..=CLIENTS)
            .map(|i| {
                image_manifest(
                    &config,
                    std::slice::from_ref(&layer),
                    &format!("round {round} client {i}"),
                    i % 2 == 0,
                )
                .into()
            })
            .collect();
        // The tag exists before the race (manifest 16), so readers always expect a 200.
        c.put_manifest(repo, tag, &bodies[CLIENTS]).await.unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (c, bodies, done, reads) =
                    (c.clone(), bodies.clone(), done.clone(), reads.clone());
                tokio::spawn(async move {
                    while !done.load(Ordering::SeqCst) {
                        let r = c.get_manifest(repo, tag).await.unwrap();
                        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                        assert!(bodies.contains(&r.body), "a tag read returned a stranger");
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let writers: Vec<_> = bodies[..CLIENTS]
            .iter()
            .map(|body| {
                let (c, body) = (c.clone(), body.clone());
                tokio::spawn(async move { c.put_manifest(repo, tag, &body).await })
            })
            .collect();
        for w in writers {
            if let Err(e) = w.await.unwrap() {
                panic!("round {round}: {e}\nlog:\n{}", berth.log_tail());
            }
        }
        done.store(true, Ordering::SeqCst);
        for r in readers {
            r.await.unwrap();
        }
        // The tag names one of the sixteen, and is listed once.
        let r = c.get_manifest(repo, tag).await.unwrap();
        assert_eq!(r.status, 200);
        assert!(
            bodies[..CLIENTS].contains(&r.body),
            "round {round}: the tag names none of the 16 manifests"
        );
        let tags = c.tags(repo).await.unwrap();
        assert_eq!(tags, [tag], "tags/list: {tags:?}");
        // Every one of the sixteen is stored and served by digest.
        for body in &bodies {
            let r = c.get_manifest(repo, &sha256(body)).await.unwrap();
            assert_eq!((r.status, &r.body), (200, body));
        }
    }
    assert_clean_tree(&work, &berth, true);
    println!(
        "different-manifest race: 10 rounds of {CLIENTS} PUTs to one tag, all 201, {} \
         concurrent tag reads",
        reads.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_by_digest_races_puts_of_the_same_manifest() {
    let (work, berth, c) = start().await;
    let repo = "race/delete";
    let tag = "racing";
    let (config, layer) = c.push_config_and_layer(repo, SEED + 20).await.unwrap();
    let mut rng = StdRng::seed_from_u64(SEED + 21);
    let (mut kept, mut gone, mut deleted_202) = (0, 0, 0);
    let started = Instant::now();
    for rep in 0..50 {
        let body = image_manifest(
            &config,
            std::slice::from_ref(&layer),
            &format!("rep {rep}"),
            false,
        );
        let digest = sha256(&body);
        // Three PUTs and three DELETEs, each after its own short random delay.
        let ops: Vec<_> = (0..6)
            .map(|i| {
                let (c, body, digest) = (c.clone(), body.clone(), digest.clone());
                let delay = Duration::from_micros(rng.random_range(0..4000));
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    if i % 2 == 0 {
                        ("PUT", c.put_manifest(repo, tag, &body).await.map(|_| 201))
                    } else {
                        let r = c.delete_manifest(repo, &digest).await;
                        ("DELETE", r.map(|r| r.status))
                    }
                })
            })
            .collect();
        for op in ops {
            match op.await.unwrap() {
                ("PUT", Ok(201)) => {}
                ("DELETE", Ok(202)) => deleted_202 += 1,
                ("DELETE", Ok(404)) => {}
                (what, r) => panic!(
                    "rep {rep}: {what} gave {r:?}\nberth log:\n{}",
                    berth.log_tail()
                ),
            }
        }
        let by_tag = c.get_manifest(repo, tag).await.unwrap();
        let by_digest = c.get_manifest(repo, &digest).await.unwrap();
        match (by_tag.status, by_digest.status) {
            (200, 200) => {
                assert_eq!(
                    by_tag.body, body,
                    "rep {rep}: the tag names another manifest"
                );
                assert_eq!(by_digest.body, body);
                kept += 1;
            }
            (404, 404) => gone += 1,
            (t, d) => panic!(
                "rep {rep}: tag answers {t} ({}), digest answers {d} ({}): neither both there \
                 nor both gone\nberth log:\n{}",
                String::from_utf8_lossy(&by_tag.body),
                String::from_utf8_lossy(&by_digest.body),
                berth.log_tail()
            ),
        }
        let tags = c.tags(repo).await;
        match (&tags, by_tag.status) {
            (Ok(t), 200) => assert_eq!(t, &[tag], "rep {rep}"),
            // A repository without tags may answer an empty list or NAME_UNKNOWN.
            (Ok(t), _) => assert!(
                t.is_empty(),
                "rep {rep}: tags/list {t:?} after the tag went"
            ),
            (Err(e), _) => assert_eq!(e.status(), Some(404), "rep {rep}: tags/list: {e}"),
        }
    }
    assert_clean_tree(&work, &berth, false);
    println!(
        "delete/put race: 50 repetitions in {:.1} s; tag and manifest both kept {kept}, both \
         gone {gone}; {deleted_202} deletes answered 202",
        started.elapsed().as_secs_f64()
    );
}

/// After PUTs racing for one tag have all been answered, GET by tag must serve the manifest
/// the tag's `current` link names, and keep serving it: nothing writes any more, so what a
/// client reads must not change. (A second process, or Distribution, reads the link.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_read_after_racing_puts_is_the_stored_one() {
    let (work, _berth, c) = start().await;
    let repo = "race/settled";
    let tag = "contested";
    let (config, layer) = c.push_config_and_layer(repo, SEED + 30).await.unwrap();
    let link = v2(&work.path().join("root")).join(format!(
        "repositories/{repo}/_manifests/tags/{tag}/current/link"
    ));
    const ROUNDS: usize = 30;
    let mut mismatches = Vec::new();
    for round in 0..ROUNDS {
        let bodies: Vec<Bytes> = (0..CLIENTS)
            .map(|i| {
                let note = format!("settled {round} {i}");
                image_manifest(&config, std::slice::from_ref(&layer), &note, false).into()
            })
            .collect();
        let writers: Vec<_> = bodies
            .iter()
            .map(|body| {
                let (c, body) = (c.clone(), body.clone());
                tokio::spawn(async move { c.put_manifest(repo, tag, &body).await })
            })
            .collect();
        for w in writers {
            w.await.unwrap().unwrap();
        }
        let served = sha256(&c.get_manifest(repo, tag).await.unwrap().body);
        let stored = std::fs::read_to_string(&link).unwrap();
        if served != stored {
            // What the same GET says once berth's 1 s link cache has expired.
            tokio::time::sleep(Duration::from_millis(1200)).await;
            let later = sha256(&c.get_manifest(repo, tag).await.unwrap().body);
            mismatches.push(format!(
                "round {round}: GET by tag served {served} while the tag's link names \
                 {stored}; 1.2 s later, with no write in between, GET serves {later}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {ROUNDS} rounds of {CLIENTS} racing tag PUTs left GET by tag serving another \
         manifest than the stored tag (the link cache kept the insert of a PUT whose rename \
         was not the last):\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
