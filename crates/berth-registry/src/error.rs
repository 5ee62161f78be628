//! The one error type the HTTP layer renders.
//!
//! Variants name the condition, carry what the client needs to know, and map to exactly one
//! spec error code in [`Error::code`]. Storage errors stay internal (`Storage`) unless the
//! caller, who knows what a missing path means, translates them first.

use berth_oci::{Digest, DigestError, ErrorCode, ManifestError, NameError};
use berth_storage::StorageError;

/// Everything a registry operation can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The repository name breaks the grammar.
    #[error("{0}")]
    NameInvalid(NameError),
    /// A tag or digest reference breaks the grammar.
    #[error("{0}")]
    ReferenceInvalid(NameError),
    /// A digest in the URL or query breaks the grammar.
    #[error("{0}")]
    DigestSyntax(DigestError),
    /// Uploaded or pushed content does not hash to the digest given.
    #[error("digest {expected} does not match the content, which hashes to {actual}")]
    DigestMismatch {
        /// What the client claimed.
        expected: Digest,
        /// What the content hashes to.
        actual: Digest,
    },
    /// The repository has no such blob.
    #[error("blob unknown to registry: {digest}")]
    BlobUnknown {
        /// The blob asked for.
        digest: Digest,
    },
    /// No such upload session.
    #[error("blob upload unknown to registry")]
    UploadUnknown,
    /// The upload request is malformed.
    #[error("blob upload invalid: {0}")]
    UploadInvalid(String),
    /// A chunk does not start where the upload ends.
    #[error("chunk does not start at the upload's current size {size}")]
    RangeInvalid {
        /// The upload's current size: the next chunk must start here.
        size: u64,
    },
    /// A requested byte range lies outside the blob.
    #[error("requested range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable {
        /// The blob's size.
        size: u64,
    },
    /// A length did not match the content.
    #[error("{0}")]
    SizeInvalid(String),
    /// The manifest body is unacceptable.
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    /// A manifest references a blob or manifest the repository does not have.
    #[error("manifest references {digest}, which is unknown to this repository")]
    ManifestBlobUnknown {
        /// The missing blob.
        digest: Digest,
    },
    /// No such manifest.
    #[error("manifest unknown: {reference}")]
    ManifestUnknown {
        /// The tag or digest asked for.
        reference: String,
    },
    /// No such repository.
    #[error("repository name not known to registry: {name}")]
    NameUnknown {
        /// The repository.
        name: String,
    },
    /// `n` or `last` is unusable.
    #[error("{0}")]
    PaginationInvalid(String),
    /// The operation is switched off.
    #[error("{0}")]
    Unsupported(&'static str),
    /// Stored data is damaged (a digest mismatch on read). Never the client's fault.
    #[error("stored content for {digest} is corrupt")]
    Corrupt {
        /// The blob whose bytes no longer match.
        digest: Digest,
    },
    /// A pull-through cache's upstream failed (unreachable, too slow, refused, or sent bytes
    /// that do not match their digest) and the content is not cached.
    #[error("{0}")]
    Upstream(String),
    /// The storage backend failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Error {
    /// The spec error code this error is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::NameInvalid(_) => ErrorCode::NameInvalid,
            Error::ReferenceInvalid(NameError::InvalidDigest(_)) => ErrorCode::DigestInvalid,
            Error::ReferenceInvalid(_) => ErrorCode::TagInvalid,
            Error::DigestSyntax(_) | Error::DigestMismatch { .. } => ErrorCode::DigestInvalid,
            Error::BlobUnknown { .. } => ErrorCode::BlobUnknown,
            Error::UploadUnknown => ErrorCode::BlobUploadUnknown,
            Error::UploadInvalid(_) => ErrorCode::BlobUploadInvalid,
            Error::RangeInvalid { .. } | Error::RangeNotSatisfiable { .. } => {
                ErrorCode::RangeInvalid
            }
            Error::SizeInvalid(_) => ErrorCode::SizeInvalid,
            Error::ManifestInvalid(_) => ErrorCode::ManifestInvalid,
            Error::ManifestBlobUnknown { .. } => ErrorCode::ManifestBlobUnknown,
            Error::ManifestUnknown { .. } => ErrorCode::ManifestUnknown,
            Error::NameUnknown { .. } => ErrorCode::NameUnknown,
            Error::PaginationInvalid(_) => ErrorCode::PaginationNumberInvalid,
            Error::Unsupported(_) => ErrorCode::Unsupported,
            Error::Corrupt { .. } => ErrorCode::Unknown,
            Error::Upstream(_) => ErrorCode::Unavailable,
            // 503 and not 500: clients (docker, containerd) retry it, and it is the truth.
            Error::Storage(e) if e.is_out_of_space() || e.is_unavailable() => {
                ErrorCode::Unavailable
            }
            Error::Storage(_) => ErrorCode::Unknown,
        }
    }

    /// True for failures that are not the client's doing and must be logged in full.
    pub fn is_internal(&self) -> bool {
        matches!(self, Error::Storage(_) | Error::Corrupt { .. })
    }

    /// Structured detail for the error body, where there is something useful to say.
    pub fn detail(&self) -> Option<serde_json::Value> {
        match self {
            Error::DigestMismatch { expected, actual } => Some(serde_json::json!({
                "expected": expected.to_string(), "actual": actual.to_string()
            })),
            Error::BlobUnknown { digest } | Error::ManifestBlobUnknown { digest } => {
                Some(serde_json::json!({ "digest": digest.to_string() }))
            }
            Error::ManifestUnknown { reference } => {
                Some(serde_json::json!({ "reference": reference }))
            }
            Error::NameUnknown { name } => Some(serde_json::json!({ "name": name })),
            Error::RangeInvalid { size } | Error::RangeNotSatisfiable { size } => {
                Some(serde_json::json!({ "size": size }))
            }
            _ => None,
        }
    }
}

impl From<ManifestError> for Error {
    fn from(e: ManifestError) -> Self {
        Error::ManifestInvalid(e.to_string())
    }
}

/// Result alias for registry operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
