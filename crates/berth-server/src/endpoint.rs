//! Turns a request path into the API endpoint it names, before any work is done.
//!
//! Repository names contain `/`, so the API cannot be routed by fixed segments. The path is
//! split once and matched from the end, where the endpoint's own words (`manifests`, `blobs`,
//! `uploads`, `tags/list`) sit in fixed positions; everything before them is the name. Names
//! and references are only *located* here; they are validated by the handlers' newtypes.

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
        }
    }
}
