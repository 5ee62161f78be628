//! The driver conformance suite: one set of checks every [`StorageDriver`] must pass, run
//! against each driver by a file of its own (`fs_driver.rs`, `s3_driver.rs`), in the manner of
//! Distribution's `registry/storage/driver/testsuites`. It asserts the contract the trait's
//! docs state, so a driver that passes can sit under the registry unchanged.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use berth_storage::{StorageDriver, StorageError, StoragePath};
use bytes::Bytes;
use futures_util::TryStreamExt;

pub type Driver = Arc<dyn StorageDriver>;

pub fn p(s: &str) -> StoragePath {
    StoragePath::parse(s).unwrap()
}

/// Incompressible-looking, position-dependent bytes, so a misplaced range shows.
pub fn pattern(seed: u8, len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

pub async fn read(d: &Driver, path: &StoragePath, offset: u64, len: Option<u64>) -> Vec<u8> {
    let stream = d.reader(path, offset, len).await.unwrap();
    let parts: Vec<Bytes> = stream.try_collect().await.unwrap();
    parts.concat()
}

async fn sorted_list(d: &Driver, path: &StoragePath) -> Vec<String> {
    let mut names = d.list(path).await.unwrap();
    names.sort();
    names
}

async fn walked(d: &Driver, path: &StoragePath) -> Vec<String> {
    let mut files: Vec<String> = d
        .walk(path)
        .await
        .unwrap()
        .into_iter()
        .map(|f| format!("{}:{}", f.path.as_str(), f.size))
        .collect();
    files.sort();
    files
}

async fn write_all(d: &Driver, path: &StoragePath, append: bool, chunks: &[&[u8]]) -> u64 {
    let mut w = d.writer(path, append).await.unwrap();
    for c in chunks {
        w.write(Bytes::copy_from_slice(c)).await.unwrap();
    }
    let size = w.size();
    w.commit().await.unwrap();
    size
}

/// Small objects: put, get, overwrite, stat, and NotFound where nothing is.
pub async fn small_objects(d: Driver) {
    assert!(d.get(&p("t/a/b")).await.unwrap_err().is_not_found());
    assert!(d.stat(&p("t/a/b")).await.unwrap_err().is_not_found());
    d.put(&p("t/a/b/c"), Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(d.get(&p("t/a/b/c")).await.unwrap(), "hello");
    d.put(&p("t/a/b/c"), Bytes::from_static(b"bye"))
        .await
        .unwrap();
    assert_eq!(d.get(&p("t/a/b/c")).await.unwrap(), "bye");
    // A directory is not an object.
    assert!(d.get(&p("t/a/b")).await.unwrap_err().is_not_found());
    let file = d.stat(&p("t/a/b/c")).await.unwrap();
    assert_eq!((file.size, file.is_dir), (3, false));
    let age = std::time::SystemTime::now()
        .duration_since(file.modified)
        .unwrap_or_default();
    assert!(age.as_secs() < 300, "modification time is now-ish: {age:?}");
    assert!(d.stat(&p("t/a/b")).await.unwrap().is_dir);
    assert!(d.stat(&p("t/a")).await.unwrap().is_dir);
    d.put(&p("t/a/empty"), Bytes::new()).await.unwrap();
    assert_eq!(d.get(&p("t/a/empty")).await.unwrap(), "");
    assert_eq!(d.stat(&p("t/a/empty")).await.unwrap().size, 0);
    assert_eq!(read(&d, &p("t/a/empty"), 0, None).await, b"");
    assert_eq!(read(&d, &p("t/a/empty"), 0, Some(5)).await, b"");
    assert_eq!(read(&d, &p("t/a/b/c"), 0, Some(2)).await, b"by");
    assert_eq!(read(&d, &p("t/a/b/c"), 0, Some(0)).await, b"");
    assert_eq!(read(&d, &p("t/a/b/c"), 1, None).await, b"ye");
    assert!(matches!(
        d.reader(&p("t/a/b/c"), 4, None).await.err().unwrap(),
        StorageError::InvalidOffset { .. }
    ));
    // A name that only starts like another is not the other.
    assert!(d.stat(&p("t/a/b/cc")).await.unwrap_err().is_not_found());
    assert!(d.stat(&p("t/a/bb")).await.unwrap_err().is_not_found());

    // A content-addressed file: written where absent or of another size (a torn leftover),
    // and the same bytes afterwards whether or not the driver wrote again.
    let addressed = p("t/addressed/data");
    for content in [&b"manifest"[..], b"manifest", b"a longer manifest"] {
        d.put_addressed(&addressed, Bytes::copy_from_slice(content))
            .await
            .unwrap();
        assert_eq!(d.get(&addressed).await.unwrap(), content);
    }
}

/// list is direct children only; walk is every file below, with sizes.
pub async fn listing(d: Driver) {
    for (path, content) in [
        ("t/l/x/1", "a"),
        ("t/l/x/2", "bb"),
        ("t/l/y/z/3", "ccc"),
        ("t/l/f", "dddd"),
        ("t/l-sibling/g", "e"),
    ] {
        d.put(&p(path), Bytes::from(content)).await.unwrap();
    }
    write_all(&d, &p("t/l/w"), false, &[b"written"]).await;
    assert_eq!(sorted_list(&d, &p("t/l")).await, ["f", "w", "x", "y"]);
    assert_eq!(sorted_list(&d, &p("t/l/y")).await, ["z"]);
    assert!(d.list(&p("t/l/nothing")).await.unwrap_err().is_not_found());
    assert_eq!(
        walked(&d, &p("t/l")).await,
        [
            "t/l/f:4",
            "t/l/w:7",
            "t/l/x/1:1",
            "t/l/x/2:2",
            "t/l/y/z/3:3"
        ]
    );
    assert!(d.walk(&p("t/l/nothing")).await.unwrap_err().is_not_found());
    // Many children: past one page of a paginated listing.
    for i in 0..1050 {
        d.put(&p(&format!("t/many/{i:04}")), Bytes::new())
            .await
            .unwrap();
    }
    assert_eq!(d.list(&p("t/many")).await.unwrap().len(), 1050);
    assert_eq!(d.walk(&p("t/many")).await.unwrap().len(), 1050);
}

/// A writer truncates or appends; what it committed is visible to stat and reader, including
/// to writers opened later (another process, for the registry's upload sessions).
pub async fn writers_append_and_readers_range(d: Driver) {
    let f = p("t/w/data");
    // An empty commit creates an empty file (an upload session's start).
    assert_eq!(write_all(&d, &f, false, &[]).await, 0);
    assert_eq!(d.stat(&f).await.unwrap().size, 0);
    assert_eq!(read(&d, &f, 0, None).await, b"");
    assert_eq!(sorted_list(&d, &p("t/w")).await, ["data"]);
    assert_eq!(write_all(&d, &f, true, &[b"0123"]).await, 4);
    let mut w = d.writer(&f, true).await.unwrap();
    assert_eq!(w.size(), 4);
    w.write(Bytes::from_static(b"45")).await.unwrap();
    w.write(Bytes::from_static(b"67")).await.unwrap();
    assert_eq!(w.size(), 8);
    w.commit().await.unwrap();
    assert_eq!(d.stat(&f).await.unwrap().size, 8);
    assert_eq!(read(&d, &f, 0, None).await, b"01234567");
    assert_eq!(read(&d, &f, 2, Some(3)).await, b"234");
    assert_eq!(read(&d, &f, 6, Some(100)).await, b"67");
    assert_eq!(read(&d, &f, 8, None).await, b"");
    assert!(matches!(
        d.reader(&f, 9, None).await.err().unwrap(),
        StorageError::InvalidOffset { .. }
    ));
    // Opening an appending writer and committing nothing changes nothing.
    assert_eq!(write_all(&d, &f, true, &[]).await, 8);
    assert_eq!(read(&d, &f, 0, None).await, b"01234567");
    // Truncating.
    assert_eq!(write_all(&d, &f, false, &[b"new"]).await, 3);
    assert_eq!(read(&d, &f, 0, None).await, b"new");
    assert_eq!(d.stat(&f).await.unwrap().size, 3);
    assert!(
        d.reader(&p("t/w/none"), 0, None)
            .await
            .err()
            .unwrap()
            .is_not_found()
    );
    // Appending to an object stored by put.
    d.put(&p("t/w/plain"), Bytes::from_static(b"abc"))
        .await
        .unwrap();
    assert_eq!(write_all(&d, &p("t/w/plain"), true, &[b"def"]).await, 6);
    assert_eq!(read(&d, &p("t/w/plain"), 0, None).await, b"abcdef");
    assert_eq!(read(&d, &p("t/w/plain"), 1, Some(4)).await, b"bcde");
}

/// `append_to`, `stat_file` and `delete_dir`: the cheaper questions a caller asks when it knows
/// whether it expects a file or a directory.
pub async fn looks_that_know_what_they_expect(d: Driver) {
    let f = p("t/known/session/data");
    // Appending to nothing creates nothing.
    assert!(d.append_to(&f).await.err().unwrap().is_not_found());
    assert!(d.stat(&f).await.err().unwrap().is_not_found());
    assert!(d.stat_file(&f).await.err().unwrap().is_not_found());
    d.create_empty(&f).await.unwrap();
    assert_eq!(d.stat_file(&f).await.unwrap().size, 0);
    assert_eq!(read(&d, &f, 0, None).await, b"");
    for (piece, size) in [(&b"abc"[..], 3), (&b"defg"[..], 7)] {
        let mut w = d.append_to(&f).await.unwrap();
        assert_eq!(w.size(), size - piece.len() as u64);
        w.write(Bytes::copy_from_slice(piece)).await.unwrap();
        w.commit().await.unwrap();
        let m = d.stat_file(&f).await.unwrap();
        assert_eq!((m.size, m.is_dir), (size, false));
    }
    assert_eq!(read(&d, &f, 0, None).await, b"abcdefg");
    // A plain object is appended to as well.
    let plain = p("t/known/session/plain");
    d.put(&plain, Bytes::from_static(b"xy")).await.unwrap();
    assert_eq!(d.stat_file(&plain).await.unwrap().size, 2);
    let mut w = d.append_to(&plain).await.unwrap();
    assert_eq!(w.size(), 2);
    w.write(Bytes::from_static(b"z")).await.unwrap();
    w.commit().await.unwrap();
    assert_eq!(read(&d, &plain, 0, None).await, b"xyz");
    // A moved segmented file is one whole file at its target.
    let target = p("t/known/blob");
    d.move_to(&f, &target).await.unwrap();
    assert_eq!(d.stat_file(&target).await.unwrap().size, 7);
    assert_eq!(read(&d, &target, 0, None).await, b"abcdefg");
    // The directory goes with everything in it.
    d.delete_dir(&p("t/known/session")).await.unwrap();
    assert!(d.stat(&plain).await.err().unwrap().is_not_found());
    assert!(
        d.delete_dir(&p("t/known/session"))
            .await
            .err()
            .unwrap()
            .is_not_found()
    );
    d.delete(&p("t/known")).await.unwrap();
}

/// Large appends in uneven pieces across several writers, read back whole and in ranges, then
/// moved into place: what an upload session spread over replicas does. `unit` is the driver's
/// buffering unit (S3's chunk size), so the sizes straddle its boundaries.
pub async fn large_appends_and_move(d: Driver, unit: usize) {
    let f = p("t/big/_uploads/s/data");
    write_all(&d, &f, false, &[]).await;
    let content = pattern(7, 3 * unit + unit / 2 + 12_345);
    // A short first append (under S3's 5 MiB minimum part), a second that crosses a unit,
    // then one in many small writes that crosses several.
    let cuts = [unit / 3, unit + unit / 4, content.len()];
    let mut start = 0;
    for cut in cuts {
        let mut w = d.writer(&f, true).await.unwrap();
        assert_eq!(w.size(), start as u64);
        for piece in content[start..cut].chunks(256 * 1024 + 7) {
            w.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        w.commit().await.unwrap();
        assert_eq!(d.stat(&f).await.unwrap().size, cut as u64);
        start = cut;
    }
    assert!(
        read(&d, &f, 0, None).await == content,
        "appended content differs"
    );
    let (off, len) = (unit as u64 - 10, unit as u64 + 20);
    assert!(
        read(&d, &f, off, Some(len)).await == content[off as usize..(off + len) as usize],
        "a range across pieces differs"
    );
    let target = p("t/big/blobs/x/data");
    d.put(&target, Bytes::from_static(b"replaced"))
        .await
        .unwrap();
    d.move_to(&f, &target).await.unwrap();
    assert!(d.stat(&f).await.unwrap_err().is_not_found());
    let moved = d.stat(&target).await.unwrap();
    assert_eq!(moved.size, content.len() as u64);
    assert!(
        read(&d, &target, 0, None).await == content,
        "moved content differs"
    );
    assert!(read(&d, &target, off, Some(len)).await == content[off as usize..(off + len) as usize]);
    // The session directory holds nothing of the data any more (an empty directory may
    // remain where directories exist).
    match d.list(&p("t/big/_uploads/s")).await {
        Ok(names) => assert!(names.is_empty(), "left behind: {names:?}"),
        Err(e) => assert!(e.is_not_found(), "{e}"),
    }
    // Moving an ordinary object, large or small.
    let plain = pattern(9, unit + 1);
    d.put(&p("t/big/p1"), Bytes::from(plain.clone()))
        .await
        .unwrap();
    d.move_to(&p("t/big/p1"), &p("t/big/p2")).await.unwrap();
    assert!(read(&d, &p("t/big/p2"), 0, None).await == plain);
    assert!(d.get(&p("t/big/p1")).await.unwrap_err().is_not_found());
    d.put(&p("t/big/s1"), Bytes::from_static(b"small"))
        .await
        .unwrap();
    d.move_to(&p("t/big/s1"), &p("t/big/deeper/s2"))
        .await
        .unwrap();
    assert_eq!(d.get(&p("t/big/deeper/s2")).await.unwrap(), "small");
    assert!(
        d.move_to(&p("t/big/s1"), &p("t/big/s3"))
            .await
            .unwrap_err()
            .is_not_found()
    );
}

/// A file whose last piece is a few bytes after whole units (an upload whose final PATCH
/// was tiny) moves into place: on S3 that piece is too small for a server-side part copy on
/// some servers (Garage keeps it inline), so it must go up some other way.
pub async fn a_tiny_last_piece_moves(d: Driver, unit: usize) {
    for tail in [1, 1000, 3072] {
        let f = p(&format!("t/tiny/_uploads/{tail}/data"));
        write_all(&d, &f, false, &[]).await;
        let content = pattern(tail as u8, 2 * unit + tail);
        write_all(&d, &f, true, &[&content[..2 * unit]]).await;
        write_all(&d, &f, true, &[&content[2 * unit..]]).await;
        let target = p(&format!("t/tiny/blobs/{tail}/data"));
        d.move_to(&f, &target).await.unwrap();
        assert_eq!(d.stat(&target).await.unwrap().size, content.len() as u64);
        assert!(
            read(&d, &target, 0, None).await == content,
            "moved content with a {tail}-byte last piece differs"
        );
    }
    d.delete(&p("t/tiny")).await.unwrap();
}

/// A publisher's file appears whole at commit and not before, replacing what was there; one
/// dropped uncommitted leaves the old content (or nothing) and nothing else in the directory.
/// Sizes: empty, small (one object on S3) and over two units (a multipart upload on S3, whose
/// parts must stay invisible until the commit).
pub async fn publishers_publish_whole_or_nothing(d: Driver, unit: usize) {
    for (i, len) in [0, 3000, 2 * unit + 17].into_iter().enumerate() {
        let target = p(&format!("t/pub/{i}/data"));
        let content = pattern(i as u8 + 40, len);
        let mut w = d.publisher(&target).await.unwrap();
        for piece in content.chunks(unit / 2 + 1) {
            w.write(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        assert_eq!(w.size(), len as u64);
        assert!(
            d.stat_file(&target).await.unwrap_err().is_not_found(),
            "a {len}-byte publication is visible before its commit"
        );
        w.commit().await.unwrap();
        assert_eq!(d.stat_file(&target).await.unwrap().size, len as u64);
        assert!(
            read(&d, &target, 0, None).await == content,
            "{len} bytes differ"
        );

        // Dropped uncommitted: the published content stays, nothing else appears.
        let mut w = d.publisher(&target).await.unwrap();
        w.write(Bytes::from(pattern(9, 2 * unit + 1)))
            .await
            .unwrap();
        drop(w);
        assert!(read(&d, &target, 0, None).await == content);
        assert_eq!(d.walk(&p(&format!("t/pub/{i}"))).await.unwrap().len(), 1);
        // The clean-up runs on the writer's own thread or task once it sees the drop.
        let mut leftovers = Vec::new();
        for _ in 0..50 {
            leftovers = d.temporaries(&p(&format!("t/pub/{i}"))).await.unwrap();
            if leftovers.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            leftovers.is_empty(),
            "a dropped publisher left {leftovers:?}"
        );

        // A second publication replaces the first.
        let again = pattern(i as u8 + 80, len + 5);
        let mut w = d.publisher(&target).await.unwrap();
        w.write(Bytes::from(again.clone())).await.unwrap();
        w.commit().await.unwrap();
        assert!(read(&d, &target, 0, None).await == again);
    }
    d.delete(&p("t/pub")).await.unwrap();

    // A publication dropped at a new place leaves no directory made for it either (a blob's
    // own, for a digest a client claimed and never sent).
    let mut w = d.publisher(&p("t/pubgone/x/data")).await.unwrap();
    w.write(Bytes::from(pattern(7, 1000))).await.unwrap();
    drop(w);
    let mut left = Vec::new();
    for _ in 0..50 {
        left = match d.list(&p("t/pubgone")).await {
            Ok(names) => names,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => panic!("{e}"),
        };
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(left.is_empty(), "a dropped publisher left {left:?}");
    let _ = d.delete(&p("t/pubgone")).await;
}

/// delete removes a file or a whole tree, written by put or by a writer.
pub async fn deletes(d: Driver) {
    d.put(&p("t/d/keep"), Bytes::from_static(b"k"))
        .await
        .unwrap();
    d.put(&p("t/d/tree/a"), Bytes::from_static(b"a"))
        .await
        .unwrap();
    d.put(&p("t/d/tree/b/c"), Bytes::from_static(b"c"))
        .await
        .unwrap();
    write_all(&d, &p("t/d/tree/w"), false, &[b"w"]).await;
    write_all(&d, &p("t/d/w2"), false, &[b"w2"]).await;
    d.delete(&p("t/d/w2")).await.unwrap();
    assert!(d.stat(&p("t/d/w2")).await.unwrap_err().is_not_found());
    d.delete(&p("t/d/tree/a")).await.unwrap();
    assert_eq!(sorted_list(&d, &p("t/d/tree")).await, ["b", "w"]);
    d.delete(&p("t/d/tree")).await.unwrap();
    assert!(d.stat(&p("t/d/tree")).await.unwrap_err().is_not_found());
    assert!(d.delete(&p("t/d/tree")).await.unwrap_err().is_not_found());
    assert_eq!(sorted_list(&d, &p("t/d")).await, ["keep"]);
    assert_eq!(d.get(&p("t/d/keep")).await.unwrap(), "k");
}

/// `list_stamped` lists like `list`, in order and with NotFound per missing directory; a
/// stamp, where a driver gives one, changes when a child is added or removed (the catalog and
/// tag-list caches trust an unchanged stamp to mean unchanged children).
pub async fn stamped_listing(d: Driver) {
    d.put(&p("st/a/x"), Bytes::from_static(b"1")).await.unwrap();
    d.put(&p("st/b/y"), Bytes::from_static(b"2")).await.unwrap();
    let dirs = [p("st/a"), p("st/missing"), p("st/b")];
    // Stamps are only given for directories that settled before the listing.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let listed = d.list_stamped(&dirs).await;
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].as_ref().unwrap().names, ["x"]);
    assert!(listed[1].as_ref().unwrap_err().is_not_found());
    assert_eq!(listed[2].as_ref().unwrap().names, ["y"]);
    let before = d.stamps(&dirs).await;
    assert_eq!(before.len(), 3);
    assert_eq!(before[1], None, "a missing directory has no stamp");
    if let Some(stamp) = listed[0].as_ref().unwrap().stamp {
        assert_eq!(
            before[0],
            Some(stamp),
            "unchanged directory, unchanged stamp"
        );
    }
    d.put(&p("st/a/z"), Bytes::from_static(b"3")).await.unwrap();
    d.delete(&p("st/b/y")).await.unwrap();
    let after = d.stamps(&dirs).await;
    if before[0].is_some() {
        assert_ne!(after[0], before[0], "a child was added");
    }
    if before[2].is_some() {
        assert_ne!(after[2], before[2], "a child was removed");
    }
    d.delete(&p("st")).await.unwrap();
}

/// A stamp given for a directory that changed a moment ago is exact too: a change made right
/// after the listing, within the same tick of any coarse clock, still alters it. (Drivers may
/// withhold stamps that young; the filesystem gives them where the kernel's timestamps are
/// fine-grained.)
pub async fn fresh_stamps_are_exact(d: Driver) {
    let dir = p("fresh");
    let dirs = std::slice::from_ref(&dir);
    for i in 0..50 {
        d.put(&p(&format!("fresh/a{i}")), Bytes::from_static(b"1"))
            .await
            .unwrap();
        let listed = d.list_stamped(dirs).await.pop().unwrap().unwrap();
        assert_eq!(listed.names.len(), 2 * i + 1);
        d.put(&p(&format!("fresh/b{i}")), Bytes::from_static(b"2"))
            .await
            .unwrap();
        if let Some(stamp) = listed.stamp {
            let now = d.stamps(dirs).await.pop().unwrap();
            assert_ne!(now, Some(stamp), "change {i} right after the listing");
        }
    }
    d.delete(&dir).await.unwrap();
}

/// Every check, in one call.
pub async fn run_all(d: Driver, unit: usize) {
    small_objects(d.clone()).await;
    listing(d.clone()).await;
    stamped_listing(d.clone()).await;
    fresh_stamps_are_exact(d.clone()).await;
    writers_append_and_readers_range(d.clone()).await;
    large_appends_and_move(d.clone(), unit).await;
    a_tiny_last_piece_moves(d.clone(), unit).await;
    publishers_publish_whole_or_nothing(d.clone(), unit).await;
    looks_that_know_what_they_expect(d.clone()).await;
    deletes(d).await;
}
