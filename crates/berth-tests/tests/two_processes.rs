//! Two berth processes on one data directory (two replicas on a shared filesystem, or berth
//! beside Distribution): a tag one of them has acknowledged is in the other's tag list at
//! once, even when the other listed the same directory a moment before the write. This is
//! the case directory stamps must get right: the second process caches its listing with the
//! stamp it took, and only a stamp changed by the write makes it list again. Where the kernel
//! gives fine-grained directory times (Linux 6.13 and later), the cached listing is a
//! millisecond old when the write lands, well within one tick of the coarse clock.
#![allow(clippy::unwrap_used)] // A test: a panic is a failed test, with its message.

use berth_tests::client::Client;
use berth_tests::image_manifest;
use berth_tests::process::Berth;

const ROUNDS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_written_by_one_process_is_listed_by_the_other_at_once() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    let (dir_a, dir_b) = (work.path().join("a"), work.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let a = Berth::start_on(&root, &dir_a);
    let b = Berth::start_on(&root, &dir_b);
    let (ca, cb) = (
        Client::new(&a.base()).unwrap(),
        Client::new(&b.base()).unwrap(),
    );
    let repo = "shared/tags";

    let (config, layer) = ca.push_config_and_layer(repo, 1).await.unwrap();

    for i in 0..ROUNDS {
        // Alternate the writer, so each process is both the one that caches and the one
        // whose write must invalidate the other's cache.
        let (writer, reader) = if i % 2 == 0 { (&ca, &cb) } else { (&cb, &ca) };
        let before = reader.tags(repo).await;
        let tag = format!("t{i:04}");
        let body = image_manifest(&config, std::slice::from_ref(&layer), &tag, false);
        writer.put_manifest(repo, &tag, &body).await.unwrap();
        let after = reader.tags(repo).await.unwrap();
        assert!(
            after.contains(&tag),
            "round {i}: {tag} acknowledged by one process, missing from the other's list \
             (listed {} tags before the write, {} after)\nlog A:\n{}\nlog B:\n{}",
            before.map_or(0, |t| t.len()),
            after.len(),
            a.log_tail(),
            b.log_tail()
        );
        assert_eq!(after.len(), i + 1, "round {i}: {after:?}");
    }
    println!("two processes: {ROUNDS} tags, each listed by the other process at once");
}
