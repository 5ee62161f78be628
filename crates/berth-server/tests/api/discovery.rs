//! OCI 1.1 content discovery and management, beyond what `listing`, `delete` and `referrers`
//! cover: pagination edges of both listings, tag history across deletes, the referrers API
//! with several artifact types, a cosign-style flow, and delete by digest among many tags.

use berth_registry::Options;
use serde_json::{Value, json};

use crate::common::*;

// ---- pagination ---------------------------------------------------------------------------

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Fetches one page of a listing (`key` is `tags` or `repositories`): its entries, which must
/// be a JSON array (never null, even when empty), and the `Link` target if any.
async fn page(s: &TestServer, target: &str, key: &str) -> (Vec<String>, Option<String>) {
    let r = s.get(target).await;
    r.assert_status(200);
    assert!(
        r.h("content-type").starts_with("application/json"),
        "{}",
        r.describe()
    );
    let v = r.json();
    let items = v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not an array: {}", r.describe()))
        .iter()
        .map(|e| e.as_str().expect("entry is a string").to_owned())
        .collect();
    (items, r.next_link())
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The pagination edges of one listing at `path` (`/v2/_catalog` or `/v2/<name>/tags/list`),
/// whose complete, sorted content is `all`. `past_end` sorts after every entry;
/// `not_entries` are values of `last` that are not entries, with what follows each.
async fn check_pagination_edges(
    s: &TestServer,
    path: &str,
    key: &str,
    all: &[String],
    past_end: &str,
    not_entries: &[(&str, Vec<String>)],
) {
    let n_all = all.len();
    assert!(n_all >= 3);
    let first = &all[0];
    let last_entry = &all[n_all - 1];
    let second_last = &all[n_all - 2];

    // Unpaginated: everything, in order, no Link.
    assert_eq!(page(s, path, key).await, (all.to_vec(), None), "{path}");

    // n=0: the spec says the registry SHOULD return an empty list. berth does, and sends no
    // Link header (a page with no entries has no `last` to continue from), with or without
    // `last`.
    for query in ["n=0".to_owned(), format!("n=0&last={}", enc(first))] {
        assert_eq!(
            page(s, &format!("{path}?{query}"), key).await,
            (vec![], None),
            "{path}?{query}"
        );
    }

    // Exactly one page (n = number of entries) and larger pages: everything and NO Link.
    for n in [n_all, n_all + 1, 1000] {
        assert_eq!(
            page(s, &format!("{path}?n={n}"), key).await,
            (all.to_vec(), None),
            "{path}?n={n}"
        );
    }

    // One short of everything: a Link to the last entry alone.
    let n = n_all - 1;
    let (items, link) = page(s, &format!("{path}?n={n}"), key).await;
    assert_eq!(items, all[..n], "{path}?n={n}");
    assert_eq!(
        link.as_deref(),
        Some(format!("{path}?last={}&n={n}", enc(second_last)).as_str()),
        "{path}?n={n}"
    );
    assert_eq!(
        page(s, &link.expect("link"), key).await,
        (vec![last_entry.clone()], None)
    );

    // `last` at or past the final entry: an empty list and no Link, whatever n is.
    for last in [last_entry.as_str(), past_end] {
        for n in ["", "&n=1", "&n=5", "&n=0"] {
            let target = format!("{path}?last={}{n}", enc(last));
            assert_eq!(page(s, &target, key).await, (vec![], None), "{target}");
        }
    }

    // The remaining entries exactly fill the page: no Link.
    let target = format!("{path}?n=1&last={}", enc(second_last));
    assert_eq!(
        page(s, &target, key).await,
        (vec![last_entry.clone()], None),
        "{target}"
    );
    let target = format!("{path}?n=2&last={}", enc(&all[n_all - 3]));
    assert_eq!(
        page(s, &target, key).await,
        (all[n_all - 2..].to_vec(), None),
        "{target}"
    );

    // `last` that is not an entry: the entries sorting after it.
    for (last, after) in not_entries {
        let target = format!("{path}?last={}", enc(last));
        assert_eq!(
            page(s, &target, key).await,
            (after.clone(), None),
            "{target}"
        );
        if after.len() > 1 {
            let target = format!("{path}?last={}&n=1", enc(last));
            let (items, link) = page(s, &target, key).await;
            assert_eq!(items, after[..1], "{target}");
            assert!(link.is_some(), "{target}");
        }
    }

    // Walking every page by following Link reproduces the whole list: every page but the
    // last is full and links on; the last is not empty and has no Link.
    for n in [1, 2, 4, 5, 7, n_all - 1, n_all] {
        let mut walked = Vec::new();
        let mut target = format!("{path}?n={n}");
        let mut pages = 0;
        loop {
            let (items, link) = page(s, &target, key).await;
            pages += 1;
            assert!(pages <= n_all + 1, "{path} n={n}: runaway walk at {target}");
            assert!(!items.is_empty(), "{target}: empty page while walking");
            walked.extend(items.iter().cloned());
            match link {
                Some(next) => {
                    assert_eq!(items.len(), n, "{target}: short page with a Link");
                    assert_eq!(
                        next,
                        format!("{path}?last={}&n={n}", enc(items.last().expect("item"))),
                        "{target}"
                    );
                    target = next;
                }
                None => break,
            }
        }
        assert_eq!(walked, all, "{path} walked with n={n}");
        assert_eq!(pages, n_all.div_ceil(n), "{path} pages with n={n}");
    }
}

#[tokio::test]
async fn tags_list_pagination_edges() {
    let s = TestServer::start(Options::default()).await;
    let names = [
        "latest",
        "v1",
        "v1.0",
        "v1.0.1",
        "v1.10",
        "v1.2",
        "v2",
        "V2",
        "A",
        "Z",
        "_x",
        "0",
        "1",
        "10",
        "2",
        "9",
        "a-b",
        "a.b",
        "a_b",
        "a",
        "ab",
        "sha256-0123.sig",
        "stable",
    ];
    assert_eq!(names.len(), 23);
    let image = s.push_image("lib/app", names[0], 150).await;
    for tag in &names[1..] {
        s.put_manifest_ok("lib/app", tag, DOCKER_MANIFEST, &image.manifest)
            .await;
    }
    // Byte-wise lexical order.
    let mut all = strings(&names);
    all.sort();
    assert_eq!(
        all,
        strings(&[
            "0",
            "1",
            "10",
            "2",
            "9",
            "A",
            "V2",
            "Z",
            "_x",
            "a",
            "a-b",
            "a.b",
            "a_b",
            "ab",
            "latest",
            "sha256-0123.sig",
            "stable",
            "v1",
            "v1.0",
            "v1.0.1",
            "v1.10",
            "v1.2",
            "v2",
        ])
    );
    check_pagination_edges(
        &s,
        "/v2/lib/app/tags/list",
        "tags",
        &all,
        "zzz",
        &[
            ("v1.1", strings(&["v1.10", "v1.2", "v2"])),
            ("V", all[6..].to_vec()),
            ("00", all[1..].to_vec()),
            ("", all.clone()),
        ],
    )
    .await;
}

#[tokio::test]
async fn catalog_pagination_edges() {
    let s = TestServer::start(Options::default()).await;
    // Distribution orders the catalog as a walk of the tree visits it: `/` sorts before
    // every other character, so `a/b/c` comes before `a-b`, and `c/d/e` before `c-d`.
    let all = strings(&[
        "a",
        "a/b",
        "a/b/c",
        "a-b",
        "a.c",
        "a0",
        "b",
        "b/a",
        "c/d/e",
        "c-d",
        "library/alpine",
        "library/busybox",
    ]);
    let config = br#"{"os":"linux"}"#;
    let body = to_body(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [],
    }));
    // Pushed in an order unrelated to the listing's.
    for name in all.iter().rev().step_by(2).chain(all.iter().step_by(2)) {
        s.push_blob(name, config).await;
        s.put_manifest_ok(name, "latest", OCI_MANIFEST, &body).await;
    }
    check_pagination_edges(
        &s,
        "/v2/_catalog",
        "repositories",
        &all,
        "zzz",
        &[
            // Between `a/b/c` and `a-b`.
            ("a/bb", all[3..].to_vec()),
            // Directories that are not repositories themselves.
            ("c/d", all[8..].to_vec()),
            ("library", all[10..].to_vec()),
            ("a/b/c/d", all[3..].to_vec()),
            ("", all.clone()),
        ],
    )
    .await;
}

// ---- tag history across deletes ------------------------------------------------------------

/// A small OCI image manifest (config only), distinct per seed, with its config pushed.
async fn push_small_manifest(s: &TestServer, repo: &str, seed: u32) -> Vec<u8> {
    let config = to_body(&json!({ "os": "linux", "seed": seed }));
    s.push_blob(repo, &config).await;
    to_body(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [],
    }))
}

async fn tag_digest(s: &TestServer, repo: &str, tag: &str) -> String {
    let r = s.head(&format!("/v2/{repo}/manifests/{tag}")).await;
    r.assert_status(200);
    r.h("docker-content-digest").to_owned()
}

#[tokio::test]
async fn deleting_a_tag_that_two_manifests_had() {
    let s = TestServer::start(delete_enabled()).await;
    let a = s.push_image("r", "t", 151).await;
    let b = s.push_image("r", "other", 152).await;
    // `t` moves A -> B: its index now holds both.
    s.put_manifest_ok("r", "t", DOCKER_MANIFEST, &b.manifest)
        .await;
    assert_eq!(tag_digest(&s, "r", "t").await, b.digest);

    s.delete("/v2/r/manifests/t").await.assert_status(202);
    for image in [&a, &b] {
        let g = s.get(&format!("/v2/r/manifests/{}", image.digest)).await;
        g.assert_status(200);
        assert_eq!(g.body, image.manifest);
    }
    s.get("/v2/r/manifests/t")
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
    assert_eq!(s.tags("r").await, ["other"]);

    // Pushing `t` again works, at either manifest.
    s.put_manifest_ok("r", "t", DOCKER_MANIFEST, &a.manifest)
        .await;
    assert_eq!(tag_digest(&s, "r", "t").await, a.digest);
    s.put_manifest_ok("r", "t", DOCKER_MANIFEST, &b.manifest)
        .await;
    assert_eq!(tag_digest(&s, "r", "t").await, b.digest);
    assert_eq!(s.tags("r").await, ["other", "t"]);

    // A is in `t`'s history but `t` points at B now: deleting A leaves `t` alone.
    s.delete(&format!("/v2/r/manifests/{}", a.digest))
        .await
        .assert_status(202);
    assert_eq!(tag_digest(&s, "r", "t").await, b.digest);
    assert_eq!(s.get("/v2/r/manifests/t").await.body, b.manifest);
    assert_eq!(s.tags("r").await, ["other", "t"]);
    s.get(&format!("/v2/r/manifests/{}", a.digest))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");

    // And deleting B takes both its tags.
    s.delete(&format!("/v2/r/manifests/{}", b.digest))
        .await
        .assert_status(202);
    assert_eq!(s.tags("r").await, Vec::<String>::new());
}

#[tokio::test]
async fn delete_by_digest_among_many_tags_removes_exactly_its_tags() {
    let s = TestServer::start(delete_enabled()).await;
    let doomed = push_small_manifest(&s, "many", 1).await;
    let kept1 = push_small_manifest(&s, "many", 2).await;
    let kept2 = push_small_manifest(&s, "many", 3).await;
    let doomed_tags = ["t042", "t117", "t199"];
    let mut want_kept = Vec::new();
    for i in 0..200 {
        let tag = format!("t{i:03}");
        let body = if doomed_tags.contains(&tag.as_str()) {
            &doomed
        } else if i % 2 == 0 {
            want_kept.push((tag.clone(), sha256(&kept1)));
            &kept1
        } else {
            want_kept.push((tag.clone(), sha256(&kept2)));
            &kept2
        };
        s.put_manifest_ok("many", &tag, OCI_MANIFEST, body).await;
    }
    // Tags that pointed at the doomed manifest once and moved away survive.
    for tag in ["t000", "t001", "t100"] {
        s.put_manifest_ok("many", tag, OCI_MANIFEST, &doomed).await;
        let back = if tag == "t001" { &kept2 } else { &kept1 };
        s.put_manifest_ok("many", tag, OCI_MANIFEST, back).await;
    }
    assert_eq!(s.tags("many").await.len(), 200);

    let digest = sha256(&doomed);
    s.delete(&format!("/v2/many/manifests/{digest}"))
        .await
        .assert_status(202);

    let want: Vec<String> = want_kept.iter().map(|(t, _)| t.clone()).collect();
    assert_eq!(want.len(), 197);
    assert_eq!(s.tags("many").await, want);
    for tag in doomed_tags {
        s.get(&format!("/v2/many/manifests/{tag}"))
            .await
            .assert_error(404, "MANIFEST_UNKNOWN");
    }
    for (tag, d) in &want_kept {
        assert_eq!(&tag_digest(&s, "many", tag).await, d, "{tag}");
    }
    s.get(&format!("/v2/many/manifests/{digest}"))
        .await
        .assert_error(404, "MANIFEST_UNKNOWN");
}

// ---- referrers -----------------------------------------------------------------------------

const COSIGN_SIG: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
const COSIGN_SIMPLESIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SPDX: &str = "application/spdx+json";
const EXAMPLE_CONFIG: &str = "application/vnd.example.config+json";
const BUNDLE: &str = "application/vnd.example.bundle.v1+json";

/// A cosign-style signature manifest for `subject` (whose bytes are `subject_body`), with
/// its blobs pushed to `repo`.
async fn signature_for(s: &TestServer, repo: &str, subject_body: &[u8], note: &str) -> Vec<u8> {
    let payload = to_body(&json!({
        "critical": {
            "identity": { "docker-reference": format!("example.com/{repo}") },
            "image": { "docker-manifest-digest": sha256(subject_body) },
            "type": "cosign container image signature",
        },
        "optional": { "note": note },
    }));
    s.push_blob(repo, b"{}").await;
    s.push_blob(repo, &payload).await;
    let mut layer = descriptor(COSIGN_SIMPLESIGNING, &payload);
    layer["annotations"] = json!({ "dev.cosignproject.cosign/signature": "MEUCIQDexample" });
    to_body(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": COSIGN_SIG,
        "config": descriptor(OCI_EMPTY, b"{}"),
        "layers": [layer],
        "subject": descriptor(DOCKER_MANIFEST, subject_body),
        "annotations": { "org.opencontainers.image.created": "2024-01-02T03:04:05Z" },
    }))
}

/// `GET <target>` on a referrers endpoint: checks the index shape and returns its
/// descriptors sorted by digest, and the `OCI-Filters-Applied` header.
async fn referrers(s: &TestServer, target: &str) -> (Vec<Value>, Option<String>) {
    let r = s.get(target).await;
    r.assert_status(200);
    assert_eq!(r.h("content-type"), OCI_INDEX, "{}", r.describe());
    let v = r.json();
    assert_eq!(v["schemaVersion"], 2, "{}", r.describe());
    assert_eq!(v["mediaType"], OCI_INDEX, "{}", r.describe());
    let mut manifests = v["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("manifests is not an array: {}", r.describe()))
        .clone();
    manifests.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
    (
        manifests,
        r.header("oci-filters-applied").map(str::to_owned),
    )
}

/// What a referrers descriptor for a pushed manifest must say.
struct Referrer {
    media_type: &'static str,
    body: Vec<u8>,
    artifact_type: &'static str,
    annotations: Option<Value>,
}

impl Referrer {
    fn digest(&self) -> String {
        sha256(&self.body)
    }

    fn check(&self, d: &Value) {
        assert_eq!(d["mediaType"], self.media_type, "{d}");
        assert_eq!(d["digest"], self.digest(), "{d}");
        assert_eq!(d["size"], self.body.len(), "{d}");
        assert_eq!(d["artifactType"], self.artifact_type, "{d}");
        match &self.annotations {
            Some(a) => assert_eq!(&d["annotations"], a, "{d}"),
            None => assert!(
                d.get("annotations")
                    .is_none_or(|a| a.is_null() || a.as_object().is_some_and(|o| o.is_empty())),
                "{d}"
            ),
        }
    }
}

/// Checks that `got` (sorted by digest) describes exactly `want`.
fn check_referrers(got: &[Value], want: &[&Referrer]) {
    let mut want = want.to_vec();
    want.sort_by_key(|r| r.digest());
    assert_eq!(
        got.iter()
            .map(|d| d["digest"].as_str().unwrap_or("").to_owned())
            .collect::<Vec<_>>(),
        want.iter().map(|r| r.digest()).collect::<Vec<_>>(),
        "{got:?}"
    );
    for (d, r) in got.iter().zip(&want) {
        r.check(d);
    }
}

#[tokio::test]
async fn referrers_with_several_artifact_types_and_the_filter() {
    let s = TestServer::start(Options::default()).await;
    let image = s.push_image("app", "v1", 153).await;
    let subject = descriptor(DOCKER_MANIFEST, &image.manifest);

    let sig = Referrer {
        media_type: OCI_MANIFEST,
        body: signature_for(&s, "app", &image.manifest, "sig").await,
        artifact_type: COSIGN_SIG,
        annotations: Some(json!({ "org.opencontainers.image.created": "2024-01-02T03:04:05Z" })),
    };

    let sbom_doc = to_body(&json!({ "spdxVersion": "SPDX-2.3", "name": "app" }));
    s.push_blob("app", &sbom_doc).await;
    let sbom = Referrer {
        media_type: OCI_MANIFEST,
        body: to_body(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SPDX,
            "config": descriptor(OCI_EMPTY, b"{}"),
            "layers": [descriptor(SPDX, &sbom_doc)],
            "subject": subject,
            "annotations": { "org.example.sbom.format": "spdx", "org.example.n": "2" },
        })),
        artifact_type: SPDX,
        annotations: Some(json!({ "org.example.sbom.format": "spdx", "org.example.n": "2" })),
    };

    // No artifactType: the config's media type stands in for it.
    let config = br#"{"example":true}"#;
    s.push_blob("app", config).await;
    let typed_by_config = Referrer {
        media_type: OCI_MANIFEST,
        body: to_body(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(EXAMPLE_CONFIG, config),
            "layers": [],
            "subject": subject,
        })),
        artifact_type: EXAMPLE_CONFIG,
        annotations: None,
    };

    // An index can refer to a subject too.
    let bundle = Referrer {
        media_type: OCI_INDEX,
        body: to_body(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": BUNDLE,
            "manifests": [descriptor(OCI_MANIFEST, &sbom.body)],
            "subject": subject,
            "annotations": { "org.example.bundle": "yes" },
        })),
        artifact_type: BUNDLE,
        annotations: Some(json!({ "org.example.bundle": "yes" })),
    };

    // Each PUT names its subject in OCI-Subject; by digest or by tag alike.
    for (referrer, reference) in [
        (&sig, sig.digest()),
        (&sbom, sbom.digest()),
        (&typed_by_config, "by-config".to_owned()),
        (&bundle, "bundle".to_owned()),
    ] {
        let r = s
            .put_manifest("app", &reference, Some(referrer.media_type), &referrer.body)
            .await;
        r.assert_status(201);
        assert_eq!(r.h("docker-content-digest"), referrer.digest());
        assert_eq!(r.h("oci-subject"), image.digest, "{}", r.describe());
    }

    let base = format!("/v2/app/referrers/{}", image.digest);
    let (got, filters) = referrers(&s, &base).await;
    assert_eq!(filters, None);
    check_referrers(&got, &[&sig, &sbom, &typed_by_config, &bundle]);

    // Filtered: only the matching type, and the header says a filter was applied.
    for (artifact_type, want) in [
        (SPDX, &sbom),
        (COSIGN_SIG, &sig),
        (EXAMPLE_CONFIG, &typed_by_config),
        (BUNDLE, &bundle),
    ] {
        let (got, filters) =
            referrers(&s, &format!("{base}?artifactType={}", enc(artifact_type))).await;
        assert_eq!(filters.as_deref(), Some("artifactType"), "{artifact_type}");
        check_referrers(&got, &[want]);
    }
    // Matching nothing: an empty list, still with the header.
    for artifact_type in ["application/vnd.example.none", "application/spdx"] {
        let (got, filters) =
            referrers(&s, &format!("{base}?artifactType={}", enc(artifact_type))).await;
        assert_eq!(filters.as_deref(), Some("artifactType"), "{artifact_type}");
        assert_eq!(got, Vec::<Value>::new(), "{artifact_type}");
    }

    // The image itself, and each referrer, have no referrers.
    for d in [sig.digest(), bundle.digest()] {
        assert_eq!(
            referrers(&s, &format!("/v2/app/referrers/{d}")).await,
            (vec![], None)
        );
    }
}

#[tokio::test]
async fn referrers_are_per_repository_and_may_precede_their_subject() {
    let s = TestServer::start(Options::default()).await;
    let image = s.push_image("a", "v1", 154).await;
    let in_a = Referrer {
        media_type: OCI_MANIFEST,
        body: signature_for(&s, "a", &image.manifest, "in a").await,
        artifact_type: COSIGN_SIG,
        annotations: Some(json!({ "org.opencontainers.image.created": "2024-01-02T03:04:05Z" })),
    };
    s.put_manifest_ok("a", &in_a.digest(), OCI_MANIFEST, &in_a.body)
        .await;

    // Repository b names a's image as its subject; the image is not in b.
    let in_b = Referrer {
        media_type: OCI_MANIFEST,
        body: signature_for(&s, "b", &image.manifest, "in b").await,
        artifact_type: COSIGN_SIG,
        annotations: Some(json!({ "org.opencontainers.image.created": "2024-01-02T03:04:05Z" })),
    };
    let r = s
        .put_manifest("b", "sig", Some(OCI_MANIFEST), &in_b.body)
        .await;
    r.assert_status(201);
    assert_eq!(r.h("oci-subject"), image.digest);

    let (got, _) = referrers(&s, &format!("/v2/a/referrers/{}", image.digest)).await;
    check_referrers(&got, &[&in_a]);
    let (got, _) = referrers(&s, &format!("/v2/b/referrers/{}", image.digest)).await;
    check_referrers(&got, &[&in_b]);
    // A repository with nothing referring to it (or that does not exist) lists nothing.
    for repo in ["c", "a/b"] {
        assert_eq!(
            referrers(&s, &format!("/v2/{repo}/referrers/{}", image.digest)).await,
            (vec![], None),
            "{repo}"
        );
    }

    // A referrer pushed before its subject is accepted and listed, before and after the
    // subject arrives.
    let later = push_small_manifest(&s, "a", 155).await;
    let early = Referrer {
        media_type: OCI_MANIFEST,
        body: to_body(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SPDX,
            "config": descriptor(OCI_EMPTY, b"{}"),
            "layers": [descriptor(OCI_EMPTY, b"{}")],
            "subject": descriptor(OCI_MANIFEST, &later),
        })),
        artifact_type: SPDX,
        annotations: None,
    };
    let r = s
        .put_manifest("a", &early.digest(), Some(OCI_MANIFEST), &early.body)
        .await;
    r.assert_status(201);
    assert_eq!(r.h("oci-subject"), sha256(&later));
    let target = format!("/v2/a/referrers/{}", sha256(&later));
    check_referrers(&referrers(&s, &target).await.0, &[&early]);
    s.put_manifest_ok("a", "later", OCI_MANIFEST, &later).await;
    check_referrers(&referrers(&s, &target).await.0, &[&early]);
    // The image's own referrers are unchanged.
    let (got, _) = referrers(&s, &format!("/v2/a/referrers/{}", image.digest)).await;
    check_referrers(&got, &[&in_a]);
}

/// cosign: an image, a signature manifest with `subject` under cosign's tag scheme
/// (`sha256-<hex>.sig`), then the image deleted.
#[tokio::test]
async fn cosign_style_signature_survives_its_image() {
    let s = TestServer::start(delete_enabled()).await;
    let image = s.push_image("app", "v1", 156).await;
    s.put_manifest_ok("app", "stable", DOCKER_MANIFEST, &image.manifest)
        .await;
    let sig = Referrer {
        media_type: OCI_MANIFEST,
        body: signature_for(&s, "app", &image.manifest, "cosign").await,
        artifact_type: COSIGN_SIG,
        annotations: Some(json!({ "org.opencontainers.image.created": "2024-01-02T03:04:05Z" })),
    };
    let sig_tag = format!("sha256-{}.sig", hex_of(&image.digest));
    let r = s
        .put_manifest("app", &sig_tag, Some(OCI_MANIFEST), &sig.body)
        .await;
    r.assert_status(201);
    assert_eq!(r.h("oci-subject"), image.digest);
    assert_eq!(s.tags("app").await, [sig_tag.as_str(), "stable", "v1"]);

    let target = format!("/v2/app/referrers/{}", image.digest);
    check_referrers(&referrers(&s, &target).await.0, &[&sig]);

    s.delete(&format!("/v2/app/manifests/{}", image.digest))
        .await
        .assert_status(202);
    for reference in [image.digest.as_str(), "v1", "stable"] {
        s.get(&format!("/v2/app/manifests/{reference}"))
            .await
            .assert_error(404, "MANIFEST_UNKNOWN");
    }
    assert_eq!(s.tags("app").await, [sig_tag.as_str()]);

    // A deliberate choice: berth does not cascade a delete to the manifests that refer to
    // it (the spec leaves that to the registry; Distribution does not either). The
    // signature is a revision of its own, still fetchable by digest and by its tag, and the
    // referrers list of the deleted image still lists it.
    for reference in [sig.digest(), sig_tag.clone()] {
        let g = s.get(&format!("/v2/app/manifests/{reference}")).await;
        g.assert_status(200);
        assert_eq!(g.body, sig.body);
    }
    check_referrers(&referrers(&s, &target).await.0, &[&sig]);

    // Deleting the signature empties the list and takes its tag.
    s.delete(&format!("/v2/app/manifests/{}", sig.digest()))
        .await
        .assert_status(202);
    assert_eq!(referrers(&s, &target).await, (vec![], None));
    assert_eq!(s.tags("app").await, Vec::<String>::new());
}
