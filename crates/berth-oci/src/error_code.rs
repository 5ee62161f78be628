//! The error codes of the OCI Distribution spec and Distribution, with their HTTP statuses.
//!
//! One table, one line per code: the wire string, the status and the default message can
//! never drift apart because they are written side by side. Statuses are Distribution's
//! (`registry/api/errcode/register.go` and `registry/api/v2/errors.go`), so clients that
//! branch on them behave the same against berth.

macro_rules! error_codes {
    ($($variant:ident => $wire:literal, $status:literal, $message:literal;)*) => {
        /// An error code as sent in `{"errors":[{"code": ...}]}`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = $message] $variant,)*
        }

        impl ErrorCode {
            /// Every code, for tests and documentation.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as written on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $wire,)* }
            }

            /// The HTTP status this code is sent with.
            pub fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// The spec's one-line message for this code.
            pub fn message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $message,)* }
            }
        }
    };
}

error_codes! {
    BlobUnknown => "BLOB_UNKNOWN", 404, "blob unknown to registry";
    BlobUploadInvalid => "BLOB_UPLOAD_INVALID", 400, "blob upload invalid";
    BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry";
    DigestInvalid => "DIGEST_INVALID", 400, "provided digest did not match uploaded content";
    ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN", 400, "manifest references a manifest or blob unknown to registry";
    ManifestInvalid => "MANIFEST_INVALID", 400, "manifest invalid";
    ManifestUnknown => "MANIFEST_UNKNOWN", 404, "manifest unknown";
    ManifestUnverified => "MANIFEST_UNVERIFIED", 400, "manifest failed signature verification";
    NameInvalid => "NAME_INVALID", 400, "invalid repository name";
    NameUnknown => "NAME_UNKNOWN", 404, "repository name not known to registry";
    PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested";
    RangeInvalid => "RANGE_INVALID", 416, "invalid content range";
    SizeInvalid => "SIZE_INVALID", 400, "provided length did not match content length";
    TagInvalid => "TAG_INVALID", 400, "manifest tag did not match URI";
    Unauthorized => "UNAUTHORIZED", 401, "authentication required";
    Denied => "DENIED", 403, "requested access to the resource is denied";
    Unsupported => "UNSUPPORTED", 405, "The operation is unsupported.";
    TooManyRequests => "TOOMANYREQUESTS", 429, "too many requests";
    Unknown => "UNKNOWN", 500, "unknown error";
    Unavailable => "UNAVAILABLE", 503, "service unavailable";
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn wire_strings_are_unique_and_upper_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()));
            assert_eq!(code.as_str(), code.as_str().to_uppercase());
            assert!((400..600).contains(&code.status()));
        }
    }

    #[test]
    fn statuses_match_distribution() {
        assert_eq!(ErrorCode::BlobUnknown.status(), 404);
        assert_eq!(ErrorCode::DigestInvalid.status(), 400);
        assert_eq!(ErrorCode::Unsupported.status(), 405);
        assert_eq!(ErrorCode::TooManyRequests.status(), 429);
        assert_eq!(ErrorCode::RangeInvalid.status(), 416);
        assert_eq!(ErrorCode::ManifestBlobUnknown.status(), 400);
    }
}
