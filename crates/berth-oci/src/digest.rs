//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and the hasher that produces them.
//!
//! Only the algorithms the OCI Image spec registers are accepted, with the exact encoded
//! length and lowercase hex: a digest is also a storage path component, so anything looser
//! would let two spellings name one blob, or a crafted one name something else.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// A digest algorithm registered by the OCI Image specification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the default everywhere.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as written in a digest.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// No `algorithm:` prefix.
    #[error("digest {0:?} has no algorithm prefix")]
    Malformed(String),
    /// An algorithm berth does not implement.
    #[error("digest algorithm {0:?} is not supported (use sha256 or sha512)")]
    UnsupportedAlgorithm(String),
    /// The encoded part is not lowercase hex of the algorithm's length.
    #[error("digest {0:?} is not {1} lowercase hex characters after the algorithm")]
    BadEncoding(String, usize),
}

/// A verified-syntax content digest such as `sha256:e3b0c442…`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Parses `algorithm:hex`, refusing anything but the exact registered forms.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::Malformed(truncate(s)))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => {
                // The spec's algorithm grammar is [a-z0-9]+([+._-][a-z0-9]+)*; anything
                // else is a malformed digest, not merely an unsupported one.
                let valid_grammar = !other.is_empty()
                    && other.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b)
                    });
                return Err(if valid_grammar {
                    DigestError::UnsupportedAlgorithm(truncate(other))
                } else {
                    DigestError::Malformed(truncate(s))
                });
            }
        };
        let valid = hex.len() == algorithm.hex_len()
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return Err(DigestError::BadEncoding(truncate(s), algorithm.hex_len()));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    /// The SHA-256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        let mut hasher = Hasher::new(Algorithm::Sha256);
        hasher.update(data);
        hasher.finish()
    }

    /// The algorithm part.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The encoded (hex) part, safe to use as a path component.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

fn truncate(s: &str) -> String {
    // Error messages echo client input; keep them bounded.
    s.chars().take(160).collect()
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An incremental hasher for one algorithm.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// A fresh hasher.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The algorithm this hasher computes.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Hasher::Sha256(_) => Algorithm::Sha256,
            Hasher::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints_round_trip() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(Digest::sha256_of(b""), d);
    }

    #[test]
    fn sha512_is_accepted() {
        let s = format!("sha512:{}", "a".repeat(128));
        assert!(Digest::parse(&s).is_ok());
    }

    #[test]
    fn refuses_bad_forms() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "sha256:abc",
            &EMPTY.to_uppercase(),
            &EMPTY.replace("sha256", "SHA256"),
            &format!("{EMPTY}0"),
            "sha256:../../../../etc/passwd",
            &format!("sha512:{}", "a".repeat(64)),
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            ":abc",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85\0",
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn unsupported_algorithm_is_distinguished() {
        assert!(matches!(
            Digest::parse("md5:abc"),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            Digest::parse("MD5:abc"),
            Err(DigestError::Malformed(_))
        ));
    }
}

/// Properties of `Digest::parse` over generated input (the fuzz target `digest` in `fuzz/`
/// checks the same ones for longer): no panic, one spelling per digest, a hex part that is a
/// safe path component.
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

    /// Strings near the digest grammar: an algorithm-ish prefix, maybe a colon, hex-ish text
    /// with the characters that matter for paths.
    fn near_digest() -> impl Strategy<Value = String> {
        "(sha256|sha512|SHA256|md5|sha256\\+b64|[a-z0-9+._-]{0,8}|)(:|::|)[0-9a-fA-F./%\\\\\0 é-]{0,130}"
    }

    fn check(s: &str) {
        if let Ok(d) = Digest::parse(s) {
            assert_eq!(d.to_string(), s);
            assert!(
                d.hex()
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
            assert_eq!(d.hex().len(), d.algorithm().hex_len());
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn valid_digests_round_trip(
            sha256 in "[0-9a-f]{64}",
            sha512 in "[0-9a-f]{128}",
        ) {
            for s in [format!("sha256:{sha256}"), format!("sha512:{sha512}")] {
                let d = Digest::parse(&s).unwrap();
                prop_assert_eq!(d.to_string(), s);
            }
        }

        #[test]
        fn near_digests_never_panic(s in near_digest()) {
            check(&s);
        }

        #[test]
        fn any_text_never_panics(s in "\\PC{0,200}") {
            check(&s);
        }

        #[test]
        fn one_changed_character_is_refused(hex in "[0-9a-f]{64}", at in 0usize..71, c in "[^0-9a-f]") {
            let mut s = format!("sha256:{hex}");
            let at = at.min(s.len() - 1).max(7);
            s.replace_range(at..at + 1, &c);
            prop_assert!(Digest::parse(&s).is_err(), "{:?} accepted", s);
        }
    }
}
