//! The words of the OCI Distribution and Image specifications as Rust types.
//!
//! Everything a request names — a repository, a tag, a digest, a byte range — is parsed here
//! into a newtype whose constructor enforces the spec's grammar. Code further in takes the
//! newtype, so it never re-checks and never sees a string that could climb out of the storage
//! root. This crate does no IO and is not async: it is the part of berth that is easiest to
//! test exhaustively and to fuzz.
#![deny(missing_docs)]

pub mod digest;
pub mod error_code;
pub mod manifest;
pub mod name;
pub mod range;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use error_code::ErrorCode;
pub use manifest::{Descriptor, Manifest, ManifestError, ManifestKind, media_types};
pub use name::{NameError, Reference, RepoName, Tag};
pub use range::{ByteRange, ContentRange, RangeError, RangeRequest};
