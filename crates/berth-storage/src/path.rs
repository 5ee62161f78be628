//! Storage paths that cannot name anything outside the driver's root.

use std::fmt;

/// A path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid storage path component {0:?}")]
pub struct InvalidPath(pub String);

/// A relative path of components matching `[A-Za-z0-9._-]+`, none of them `.` or `..`
/// (Distribution's `PathRegexp`). Built by appending checked components only.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct StoragePath(String);

impl StoragePath {
    /// The root itself.
    pub fn root() -> Self {
        StoragePath(String::new())
    }

    /// Parses a `/`-separated relative path.
    pub fn parse(s: &str) -> Result<Self, InvalidPath> {
        let mut p = StoragePath::root();
        for c in s.split('/') {
            p = p.join(c)?;
        }
        Ok(p)
    }

    /// This path with one more component.
    pub fn join(&self, component: &str) -> Result<Self, InvalidPath> {
        let valid = !component.is_empty()
            && component != "."
            && component != ".."
            && component
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if !valid {
            return Err(InvalidPath(component.chars().take(80).collect()));
        }
        Ok(if self.0.is_empty() {
            StoragePath(component.to_owned())
        } else {
            StoragePath(format!("{}/{}", self.0, component))
        })
    }

    /// The path as a `/`-separated string, empty for the root.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path without its last component; the root for single-component paths.
    pub fn parent(&self) -> StoragePath {
        match self.0.rsplit_once('/') {
            Some((p, _)) => StoragePath(p.to_owned()),
            None => StoragePath::root(),
        }
    }

    /// The last component, empty for the root.
    pub fn file_name(&self) -> &str {
        self.0.rsplit_once('/').map_or(self.0.as_str(), |(_, n)| n)
    }
}

impl fmt::Display for StoragePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}", self.0)
    }
}

impl fmt::Debug for StoragePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_escapes() {
        for bad in [
            "", "a//b", "..", "a/../b", ".", "/a", "a/", "a\0b", "a b", "ä", "a%2fb",
        ] {
            assert!(StoragePath::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn joins_and_splits() {
        let p = StoragePath::parse("docker/registry/v2")
            .unwrap()
            .join("blobs")
            .unwrap();
        assert_eq!(p.as_str(), "docker/registry/v2/blobs");
        assert_eq!(p.file_name(), "blobs");
        assert_eq!(p.parent().as_str(), "docker/registry/v2");
        assert_eq!(
            StoragePath::parse("a").unwrap().parent(),
            StoragePath::root()
        );
    }
}
