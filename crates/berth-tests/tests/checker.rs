//! The storage-tree checker the other tests rely on must catch what it claims to: a blob
//! whose content does not match its name, a link to a missing blob, a malformed link, a link
//! disagreeing with its directory, and left-over temporaries. Without this, a silent checker
//! would make the crash test pass for the wrong reason.
#![allow(clippy::unwrap_used)] // A test: a panic is a failed test, with its message.

use std::fs;
use std::path::Path;

use berth_tests::disk::{Checker, v2};
use berth_tests::{hex_of, sha256};

fn put(root: &Path, rel: &str, content: &[u8]) {
    let p = v2(root).join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, content).unwrap();
}

fn blob(root: &Path, content: &[u8]) -> String {
    let d = sha256(content);
    let h = hex_of(&d);
    put(root, &format!("blobs/sha256/{}/{h}/data", &h[..2]), content);
    d
}

#[test]
fn checker_finds_what_a_crash_could_break() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let good = blob(root, b"good");
    let h = hex_of(&good).to_owned();
    put(
        root,
        &format!("repositories/a/b/_layers/sha256/{h}/link"),
        good.as_bytes(),
    );
    put(
        root,
        &format!("repositories/a/b/_manifests/revisions/sha256/{h}/link"),
        good.as_bytes(),
    );
    put(
        root,
        "repositories/a/b/_manifests/tags/t/current/link",
        good.as_bytes(),
    );
    put(
        root,
        &format!("repositories/a/b/_manifests/tags/t/index/sha256/{h}/link"),
        good.as_bytes(),
    );
    put(root, "repositories/a/b/_uploads/u1/startedat", b"x");
    put(root, "repositories/a/b/_digesttags/x/t", b"");

    let mut checker = Checker::new();
    let clean = checker.check(root);
    assert!(clean.problems.is_empty(), "{:?}", clean.problems);
    assert_eq!(
        (clean.blobs, clean.hashed, clean.links, clean.sessions),
        (1, 1, 4, 1)
    );
    assert_eq!(clean.layer_links, [("a/b".to_owned(), good.clone())]);
    assert_eq!(clean.revision_links, [("a/b".to_owned(), good.clone())]);
    assert_eq!(clean.tag_links, [("a/b".into(), "t".into(), good.clone())]);
    // Unchanged blob files are not hashed again.
    assert_eq!(checker.check(root).hashed, 0);

    // A half-written blob: the name of one content, part of it inside.
    let whole = sha256(b"whole content");
    let wh = hex_of(&whole);
    put(
        root,
        &format!("blobs/sha256/{}/{wh}/data", &wh[..2]),
        b"whole",
    );
    // A layer link to nothing, a link with a newline, a revision link in the wrong directory.
    let missing = sha256(b"missing");
    put(
        root,
        &format!("repositories/c/_layers/sha256/{}/link", hex_of(&missing)),
        missing.as_bytes(),
    );
    put(
        root,
        "repositories/c/_manifests/tags/t/current/link",
        format!("{good}\n").as_bytes(),
    );
    put(
        root,
        &format!(
            "repositories/c/_manifests/revisions/sha256/{}/link",
            hex_of(&missing)
        ),
        good.as_bytes(),
    );
    put(
        root,
        &format!("blobs/sha256/{}/{h}/.data.tmp-123", &h[..2]),
        b"",
    );

    let r = checker.check(root);
    let all = r.problems.join("\n");
    assert_eq!(r.problems.len(), 4, "{all}");
    assert!(all.contains(&format!("{wh}/data holds 5 bytes")), "{all}");
    assert!(all.contains("whose blob data is missing or wrong"), "{all}");
    assert!(all.contains("not a sha256 digest without newline"), "{all}");
    assert!(
        all.contains(&format!("sits under {} but holds {good}", hex_of(&missing))),
        "{all}"
    );
    assert_eq!(r.temporaries.len(), 1);
}
