//! Turns a request path into the API endpoint it names, before any work is done.
//!
//! Repository names contain `/`, so the API cannot be routed by fixed segments. The path is
//! split once and matched from the end, where the endpoint's own words (`manifests`, `blobs`,
//! `uploads`, `tags/list`) sit in fixed positions; everything before them is the name. Names
//! and references are only *located* here; they are validated by the handlers' newtypes.
//!
//! [`Endpoint::path`] is the inverse of [`parse`]. The handlers write their `Location` and
//! `Link` URLs with it, so the paths berth hands out and the paths it accepts have a single
//! definition and cannot drift apart.

use std::fmt;

/// An endpoint of the Distribution API, with the raw path parts it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags {
        /// Repository name.
        name: &'a str,
    },
    /// `/v2/<name>/manifests/<reference>`
    Manifest {
        /// Repository name.
        name: &'a str,
        /// Tag or digest.
        reference: &'a str,
    },
    /// `/v2/<name>/blobs/<digest>`
    Blob {
        /// Repository name.
        name: &'a str,
        /// Digest.
        digest: &'a str,
    },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart {
        /// Repository name.
        name: &'a str,
    },
    /// `/v2/<name>/blobs/uploads/<uuid>`
    Upload {
        /// Repository name.
        name: &'a str,
        /// Session id.
        id: &'a str,
    },
    /// `/v2/<name>/referrers/<digest>`
    Referrers {
        /// Repository name.
        name: &'a str,
        /// Subject digest.
        digest: &'a str,
    },
}

impl Endpoint<'_> {
    /// A fixed label for logs and metrics (never the raw path, to keep cardinality bounded).
    pub fn label(&self) -> &'static str {
        match self {
            Endpoint::Base => "base",
            Endpoint::Catalog => "catalog",
            Endpoint::Tags { .. } => "tags",
            Endpoint::Manifest { .. } => "manifest",
            Endpoint::Blob { .. } => "blob",
            Endpoint::UploadStart { .. } => "upload_start",
            Endpoint::Upload { .. } => "upload",
            Endpoint::Referrers { .. } => "referrers",
        }
    }

    /// The repository the endpoint names, if any.
    pub fn repository(&self) -> Option<&str> {
        match self {
            Endpoint::Base | Endpoint::Catalog => None,
            Endpoint::Tags { name }
            | Endpoint::Manifest { name, .. }
            | Endpoint::Blob { name, .. }
            | Endpoint::UploadStart { name }
            | Endpoint::Upload { name, .. }
            | Endpoint::Referrers { name, .. } => Some(name),
        }
    }

    /// The canonical path of this endpoint, without query; the same text as its `Display`.
    ///
    /// For every endpoint [`parse`] returns, `parse(&e.path()) == Some(e)`, and a path that
    /// parses writes back as itself, with two exceptions: [`parse`] also accepts `/v2` and
    /// `/v2/<name>/blobs/uploads` without their trailing slash, and `path` always writes the
    /// slash, the form the Distribution spec uses (`GET /v2/`, `POST .../blobs/uploads/`).
    /// Nothing else is normalized, because [`parse`] normalizes nothing else: empty
    /// segments, `.`/`..` and percent-escapes are written back as they were found, so that
    /// the name the handlers validate is the name the client sent.
    ///
    /// An endpoint built by hand round-trips when it could have come from [`parse`]: a
    /// non-empty name, a last part (reference, digest, id) without `/`, a non-empty upload
    /// id and a blob digest other than `uploads`. The handlers' validated `RepoName`,
    /// `Digest` and `UploadId` always are.
    pub fn path(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Base => f.write_str("/v2/"),
            Endpoint::Catalog => f.write_str("/v2/_catalog"),
            Endpoint::Tags { name } => write!(f, "/v2/{name}/tags/list"),
            Endpoint::Manifest { name, reference } => write!(f, "/v2/{name}/manifests/{reference}"),
            Endpoint::Blob { name, digest } => write!(f, "/v2/{name}/blobs/{digest}"),
            Endpoint::UploadStart { name } => write!(f, "/v2/{name}/blobs/uploads/"),
            Endpoint::Upload { name, id } => write!(f, "/v2/{name}/blobs/uploads/{id}"),
            Endpoint::Referrers { name, digest } => write!(f, "/v2/{name}/referrers/{digest}"),
        }
    }
}

/// Parses a request path (without query). `None` when it is not an API path.
pub fn parse(path: &str) -> Option<Endpoint<'_>> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Endpoint::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Endpoint::Catalog);
    }
    // Split off the last three segments: `<name>/<a>/<b>/<c>`.
    let (head, c) = rest.rsplit_once('/')?;
    let (head2, b) = head.rsplit_once('/')?;
    if b == "tags" && c == "list" {
        return non_empty(head2).map(|name| Endpoint::Tags { name });
    }
    if b == "manifests" {
        return non_empty(head2).map(|name| Endpoint::Manifest { name, reference: c });
    }
    if b == "referrers" {
        return non_empty(head2).map(|name| Endpoint::Referrers { name, digest: c });
    }
    if b == "blobs" {
        return non_empty(head2).map(|name| {
            if c == "uploads" {
                Endpoint::UploadStart { name }
            } else {
                Endpoint::Blob { name, digest: c }
            }
        });
    }
    let (name, a) = head2.rsplit_once('/')?;
    if a == "blobs" && b == "uploads" {
        return non_empty(name).map(|name| {
            if c.is_empty() {
                Endpoint::UploadStart { name }
            } else {
                Endpoint::Upload { name, id: c }
            }
        });
    }
    None
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// The properties [`parse`] and [`Endpoint::path`] keep together, checked by the property
/// tests below and by the fuzz target `endpoint` (one definition for both): a found endpoint
/// writes back to a path that parses to it again, and that path is the one it came from (up
/// to the trailing slash [`Endpoint::path`] documents), so nothing was dropped or invented; a
/// located name, upload id or last part is never empty or split. `Err` describes a violation.
pub fn check_inverse(path: &str) -> Result<(), String> {
    let Some(endpoint) = parse(path) else {
        return Ok(());
    };
    let canonical = endpoint.path();
    if parse(&canonical).as_ref() != Some(&endpoint) {
        return Err(format!("{path:?} wrote back as {canonical:?}"));
    }
    let alias = match endpoint {
        Endpoint::Base | Endpoint::UploadStart { .. } => canonical.strip_suffix('/'),
        _ => None,
    };
    if path != canonical && Some(path) != alias {
        return Err(format!(
            "{path:?} parsed as {endpoint:?}, which writes back as {canonical:?}"
        ));
    }
    let name = match &endpoint {
        Endpoint::Base | Endpoint::Catalog => None,
        Endpoint::Tags { name }
        | Endpoint::Manifest { name, .. }
        | Endpoint::Blob { name, .. }
        | Endpoint::UploadStart { name }
        | Endpoint::Upload { name, .. }
        | Endpoint::Referrers { name, .. } => Some(name),
    };
    let last = match &endpoint {
        Endpoint::Manifest { reference: l, .. }
        | Endpoint::Blob { digest: l, .. }
        | Endpoint::Upload { id: l, .. }
        | Endpoint::Referrers { digest: l, .. } => Some(l),
        _ => None,
    };
    let empty_id = matches!(&endpoint, Endpoint::Upload { id, .. } if id.is_empty());
    if name.is_some_and(|n| n.is_empty()) || empty_id || last.is_some_and(|l| l.contains('/')) {
        return Err(format!("{path:?} parsed as {endpoint:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Endpoint::*;
    use super::*;

    #[test]
    fn table() {
        let d = "sha256:abc";
        let cases: &[(&str, Option<Endpoint>)] = &[
            ("/v2", Some(Base)),
            ("/v2/", Some(Base)),
            ("/v2/_catalog", Some(Catalog)),
            ("/v2/a/tags/list", Some(Tags { name: "a" })),
            ("/v2/a/b/c/tags/list", Some(Tags { name: "a/b/c" })),
            (
                "/v2/a/manifests/latest",
                Some(Manifest {
                    name: "a",
                    reference: "latest",
                }),
            ),
            (
                "/v2/x/blobs/manifests/v1",
                Some(Manifest {
                    name: "x/blobs",
                    reference: "v1",
                }),
            ),
            (
                "/v2/a/b/blobs/sha256:abc",
                Some(Blob {
                    name: "a/b",
                    digest: d,
                }),
            ),
            ("/v2/a/blobs/uploads/", Some(UploadStart { name: "a" })),
            ("/v2/a/blobs/uploads", Some(UploadStart { name: "a" })),
            (
                "/v2/a/b/blobs/uploads/1234",
                Some(Upload {
                    name: "a/b",
                    id: "1234",
                }),
            ),
            (
                "/v2/a/referrers/sha256:abc",
                Some(Referrers {
                    name: "a",
                    digest: d,
                }),
            ),
            (
                "/v2/a/manifests/",
                Some(Manifest {
                    name: "a",
                    reference: "",
                }),
            ),
            ("/v2/manifests/latest", None),
            ("/v2/blobs/uploads/", None),
            ("/v2/a", None),
            ("/v2/a/b", None),
            ("/v3/a/tags/list", None),
            ("/v2x/a/tags/list", None),
            ("/", None),
        ];
        for (path, want) in cases {
            assert_eq!(&parse(path), want, "{path}");
            if let Some(endpoint) = want {
                assert_eq!(parse(&endpoint.path()).as_ref(), Some(endpoint), "{path}");
            }
        }
    }

    #[test]
    fn path_writes_the_trailing_slash_parse_allows() {
        let cases = [
            ("/v2", "/v2/"),
            ("/v2/", "/v2/"),
            ("/v2/a/blobs/uploads", "/v2/a/blobs/uploads/"),
            ("/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/"),
            ("/v2/a/manifests/", "/v2/a/manifests/"),
            ("/v2/a/blobs/", "/v2/a/blobs/"),
            ("/v2//a/./b/tags/list", "/v2//a/./b/tags/list"),
        ];
        for (path, canonical) in cases {
            let endpoint = parse(path).unwrap();
            assert_eq!(endpoint.path(), canonical, "{path}");
            assert_eq!(endpoint.to_string(), canonical, "{path}");
        }
    }

    /// Property tests: `parse` is the first parser every request path meets, and `path` is
    /// what the `Location` URLs are written with. The fuzz target `endpoint` in `fuzz/`
    /// checks the same properties for longer, but needs cargo-fuzz; these run with every
    /// `cargo test`.
    mod props {
        use super::super::*;
        use proptest::prelude::*;

        fn config() -> ProptestConfig {
            ProptestConfig {
                cases: 4000,
                // The regressions file would land in src/, next to this module.
                failure_persistence: None,
                ..ProptestConfig::default()
            }
        }

        /// Paths built from the API's own words, names and hostile segments.
        fn path() -> impl Strategy<Value = String> {
            let segment = prop_oneof![
                3 => prop::sample::select(vec![
                    "v2", "manifests", "blobs", "uploads", "tags", "list", "referrers",
                    "_catalog", "", "..", ".", "%2e%2e", "a", "library", "ubuntu", "latest",
                    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                    "3f2b8a1e-8c4f-4a53-9d1e-2b6f7c9a0e11",
                ]).prop_map(str::to_owned),
                1 => "[a-zA-Z0-9._%:\\\\-]{0,12}",
                1 => "\\PC{0,8}",
            ];
            (
                prop::sample::select(vec!["/v2/", "/v2", "/", "", "/v3/", "//v2/"]),
                prop::collection::vec(segment, 0..8),
                prop::bool::ANY,
            )
                .prop_map(|(prefix, segs, slash)| {
                    let mut p = format!("{prefix}{}", segs.join("/"));
                    if slash {
                        p.push('/');
                    }
                    p
                })
        }

        fn check(path: &str) {
            if let Err(violation) = check_inverse(path) {
                panic!("{violation}");
            }
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn api_shaped_paths(p in path()) {
                check(&p);
            }

            #[test]
            fn any_text(p in "\\PC{0,120}") {
                check(&p);
                check(&format!("/v2/{p}"));
            }

            #[test]
            fn every_endpoint_finds_its_parts(
                name in "[a-z0-9]{1,5}(/[a-z0-9]{1,5}){0,3}",
                last in "[a-zA-Z0-9:._-]{1,20}",
            ) {
                let mut cases = vec![
                    (format!("/v2/{name}/tags/list"), Endpoint::Tags { name: &name }),
                    (
                        format!("/v2/{name}/manifests/{last}"),
                        Endpoint::Manifest { name: &name, reference: &last },
                    ),
                    (
                        format!("/v2/{name}/referrers/{last}"),
                        Endpoint::Referrers { name: &name, digest: &last },
                    ),
                    (format!("/v2/{name}/blobs/uploads/"), Endpoint::UploadStart { name: &name }),
                ];
                if last != "uploads" {
                    cases.push((
                        format!("/v2/{name}/blobs/{last}"),
                        Endpoint::Blob { name: &name, digest: &last },
                    ));
                    cases.push((
                        format!("/v2/{name}/blobs/uploads/{last}"),
                        Endpoint::Upload { name: &name, id: &last },
                    ));
                }
                for (path, endpoint) in cases {
                    prop_assert_eq!(parse(&path), Some(endpoint.clone()));
                    prop_assert_eq!(endpoint.path(), path);
                }
            }
        }
    }
}
