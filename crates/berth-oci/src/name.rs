//! Repository names, tags and manifest references, checked against the spec's grammar.
//!
//! Name: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most
//! 255 characters (Distribution's limit). Tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
//! Hand-written matchers rather than a regex: they are on every request's path, and their
//! shape makes plain that no `.`/`..` component, `%`, NUL or non-ASCII byte can pass.

use std::fmt;

use crate::digest::{Digest, DigestError};

/// Longest repository name accepted, as in Distribution.
pub const MAX_NAME_LEN: usize = 255;
/// Longest tag accepted by the spec's grammar.
pub const MAX_TAG_LEN: usize = 128;

/// Why a name, tag or reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The repository name breaks the grammar.
    #[error("invalid repository name {0:?}")]
    InvalidName(String),
    /// The repository name is longer than 255 characters.
    #[error("repository name is longer than {MAX_NAME_LEN} characters")]
    NameTooLong,
    /// The tag breaks the grammar.
    #[error("invalid tag {0:?}")]
    InvalidTag(String),
    /// A reference that contains `:` but is not a valid digest.
    #[error(transparent)]
    InvalidDigest(#[from] DigestError),
}

fn echo(s: &str) -> String {
    s.chars().take(160).collect()
}

/// A repository name such as `library/ubuntu`; safe to use as a sequence of path components.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// Parses a repository name.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::NameTooLong);
        }
        if s.is_empty() || !s.split('/').all(is_name_component) {
            return Err(NameError::InvalidName(echo(s)));
        }
        Ok(RepoName(s.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `/`-separated components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_name_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    let run = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && alnum(b[*i]) {
            *i += 1;
        }
        *i > start
    };
    if !run(&mut i) {
        return false;
    }
    while i < b.len() {
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if !run(&mut i) {
            return false;
        }
    }
    true
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A tag such as `latest` or `v1.2.3`; safe to use as a path component.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// Parses a tag.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_TAG_LEN
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b[1..]
                .iter()
                .all(|&x| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-');
        if ok {
            Ok(Tag(s.to_owned()))
        } else {
            Err(NameError::InvalidTag(echo(s)))
        }
    }

    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// What follows `/manifests/` in a URL: a tag or a digest.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A tag.
    Tag(Tag),
    /// A digest.
    Digest(Digest),
}

impl Reference {
    /// Parses a reference: anything containing `:` must be a digest, anything else a tag.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.contains(':') {
            Ok(Reference::Digest(Digest::parse(s)?))
        } else {
            Ok(Reference::Tag(Tag::parse(s)?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accepted() {
        for ok in [
            "a",
            "my_test",
            "library/ubuntu",
            "a/b/c/d/e/f/g/h",
            "foo__bar",
            "foo---bar",
            "foo.bar",
            "0",
            "e2e/skopeo",
        ] {
            assert!(RepoName::parse(ok).is_ok(), "{ok:?} refused");
        }
        assert!(RepoName::parse(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn names_refused() {
        for bad in [
            "",
            "A",
            "a/",
            "/a",
            "a//b",
            "..",
            "a/../b",
            "a/./b",
            ".a",
            "a.",
            "a..b",
            "a___b",
            "a_-b",
            "-a",
            "a-",
            "%2e%2e",
            "a\0b",
            "ä",
            "a b",
            "_uploads",
            "a/_layers",
        ] {
            assert!(RepoName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            RepoName::parse(&"a".repeat(256)),
            Err(NameError::NameTooLong)
        );
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(Tag::parse(ok).is_ok(), "{ok:?} refused");
        }
        for bad in [
            "",
            ".x",
            "-x",
            "a/b",
            "..",
            "a:b",
            "ü",
            &"a".repeat(129),
            "a\0",
        ] {
            assert!(Tag::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn references() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        let d = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(Reference::parse(&d), Ok(Reference::Digest(_))));
        assert!(matches!(
            Reference::parse("sha256:xyz"),
            Err(NameError::InvalidDigest(_))
        ));
    }
}

/// Properties of the name, tag and reference parsers over generated input (the fuzz targets
/// `repo_name`, `tag` and `reference` in `fuzz/` check the same ones for longer): no panic,
/// what is accepted prints back unchanged and cannot climb out of a storage directory.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 2000,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    const COMPONENT: &str = "[a-z0-9]{1,6}((\\.|_|__|-{1,3})[a-z0-9]{1,6}){0,3}";

    /// Text built from the characters that matter: separators, dots, escapes, case, NUL,
    /// non-ASCII.
    fn hostile() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9/._%\\\\:\0 äü-]{0,300}"
    }

    fn check_name(s: &str) {
        if let Ok(name) = RepoName::parse(s) {
            assert_eq!(name.to_string(), s);
            assert!(s.len() <= MAX_NAME_LEN);
            for c in name.components() {
                assert!(!c.is_empty() && c != "." && c != "..", "{s:?}");
                assert!(
                    c.bytes().all(|b| b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b"._-".contains(&b)),
                    "{s:?}"
                );
                assert!(c.as_bytes()[0].is_ascii_alphanumeric(), "{s:?}");
            }
        }
    }

    fn check_tag(s: &str) {
        if let Ok(tag) = Tag::parse(s) {
            assert_eq!(tag.to_string(), s);
            assert!(!s.is_empty() && s.len() <= MAX_TAG_LEN);
            assert!(s.as_bytes()[0] != b'.' && s.as_bytes()[0] != b'-', "{s:?}");
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
                "{s:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn grammatical_names_are_accepted(parts in prop::collection::vec(COMPONENT, 1..6)) {
            let s = parts.join("/");
            let parsed = RepoName::parse(&s);
            if s.len() <= MAX_NAME_LEN {
                prop_assert_eq!(parsed.unwrap().to_string(), s);
            } else {
                prop_assert_eq!(parsed, Err(NameError::NameTooLong));
            }
        }

        #[test]
        fn hostile_names_never_escape(s in hostile()) {
            check_name(&s);
        }

        #[test]
        fn any_text_as_name(s in "\\PC{0,300}") {
            check_name(&s);
        }

        #[test]
        fn grammatical_tags_are_accepted(s in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}") {
            prop_assert_eq!(Tag::parse(&s).unwrap().to_string(), s);
        }

        #[test]
        fn hostile_tags_never_escape(s in hostile()) {
            check_tag(&s);
        }

        #[test]
        fn references_round_trip(s in prop_oneof![
            hostile(),
            "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,130}",
            "sha(256|512):[0-9a-f]{60,130}",
        ]) {
            if let Ok(r) = Reference::parse(&s) {
                prop_assert_eq!(r.to_string(), s.clone());
                prop_assert_eq!(matches!(r, Reference::Digest(_)), s.contains(':'));
                check_tag(&s);
            }
        }
    }
}
