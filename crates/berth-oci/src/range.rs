//! Byte ranges: the `Range` request header on blob GETs and `Content-Range` on upload PATCHes.
//!
//! Blob GETs accept one `bytes=a-b`, `bytes=a-` or `bytes=-n` range (what clients send to
//! resume a pull); a multi-range request is answered as if no range was given, which RFC 9110
//! allows. Upload PATCHes carry `Content-Range: a-b` (the spec's form, without a unit) and,
//! from some clients, `bytes a-b/*`; both are accepted.

/// Why a range header could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// The header does not parse.
    #[error("malformed range {0:?}")]
    Malformed(String),
    /// The range starts beyond the end of the content.
    #[error("range not satisfiable")]
    Unsatisfiable,
}

/// A resolved, inclusive byte range within content of known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte, inclusive.
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Always false: a resolved range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Parses a `Range` request header against content of `total` bytes. `Ok(None)` means
    /// "serve the whole content" (a form we do not honour, such as several ranges).
    pub fn parse_request(header: &str, total: u64) -> Result<Option<ByteRange>, RangeError> {
        let malformed = || RangeError::Malformed(header.chars().take(80).collect());
        let spec = header.trim().strip_prefix("bytes=").ok_or_else(malformed)?;
        if spec.contains(',') {
            return Ok(None);
        }
        let (a, b) = spec.trim().split_once('-').ok_or_else(malformed)?;
        let num = |s: &str| -> Result<u64, RangeError> {
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                return Err(malformed());
            }
            s.parse().map_err(|_| malformed())
        };
        if a.is_empty() {
            // Suffix range: the last n bytes.
            let n = num(b)?;
            if n == 0 || total == 0 {
                return Err(RangeError::Unsatisfiable);
            }
            let n = n.min(total);
            return Ok(Some(ByteRange {
                start: total - n,
                end: total - 1,
            }));
        }
        let start = num(a)?;
        let end = if b.is_empty() { u64::MAX } else { num(b)? };
        if end < start {
            return Err(malformed());
        }
        if start >= total {
            return Err(RangeError::Unsatisfiable);
        }
        Ok(Some(ByteRange {
            start,
            end: end.min(total - 1),
        }))
    }
}

/// The `Content-Range` of an upload chunk: the inclusive offsets the chunk claims to cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// Offset of the chunk's first byte.
    pub start: u64,
    /// Offset of its last byte, inclusive.
    pub end: u64,
}

impl ContentRange {
    /// Parses `a-b`, `bytes a-b`, `bytes a-b/*` or `bytes a-b/total`.
    pub fn parse(header: &str) -> Result<ContentRange, RangeError> {
        let malformed = || RangeError::Malformed(header.chars().take(80).collect());
        let mut s = header.trim();
        if let Some(rest) = s.strip_prefix("bytes") {
            s = rest.trim_start_matches([' ', '=']);
        }
        let s = s.split_once('/').map_or(s, |(r, _)| r);
        let (a, b) = s.split_once('-').ok_or_else(malformed)?;
        let num = |s: &str| -> Result<u64, RangeError> {
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                return Err(malformed());
            }
            s.parse().map_err(|_| malformed())
        };
        let (start, end) = (num(a)?, num(b)?);
        if end < start {
            return Err(malformed());
        }
        Ok(ContentRange { start, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ranges() {
        let r = |h| ByteRange::parse_request(h, 100);
        assert_eq!(r("bytes=0-9"), Ok(Some(ByteRange { start: 0, end: 9 })));
        assert_eq!(r("bytes=90-"), Ok(Some(ByteRange { start: 90, end: 99 })));
        assert_eq!(
            r("bytes=90-1000"),
            Ok(Some(ByteRange { start: 90, end: 99 }))
        );
        assert_eq!(r("bytes=-10"), Ok(Some(ByteRange { start: 90, end: 99 })));
        assert_eq!(r("bytes=-1000"), Ok(Some(ByteRange { start: 0, end: 99 })));
        assert_eq!(r("bytes=0-1,5-6"), Ok(None));
        assert_eq!(r("bytes=100-"), Err(RangeError::Unsatisfiable));
        assert_eq!(r("bytes=-0"), Err(RangeError::Unsatisfiable));
        assert!(matches!(r("bytes=5-1"), Err(RangeError::Malformed(_))));
        assert!(matches!(r("items=0-1"), Err(RangeError::Malformed(_))));
        assert!(matches!(r("bytes=a-b"), Err(RangeError::Malformed(_))));
        assert!(matches!(r("bytes=+1-2"), Err(RangeError::Malformed(_))));
        assert!(matches!(
            r("bytes=0-99999999999999999999999"),
            Err(RangeError::Malformed(_))
        ));
    }

    #[test]
    fn content_ranges() {
        let want = ContentRange { start: 0, end: 9 };
        assert_eq!(ContentRange::parse("0-9"), Ok(want));
        assert_eq!(ContentRange::parse("bytes 0-9/*"), Ok(want));
        assert_eq!(ContentRange::parse("bytes=0-9"), Ok(want));
        assert_eq!(ContentRange::parse("bytes 0-9/10"), Ok(want));
        assert!(ContentRange::parse("9-0").is_err());
        assert!(ContentRange::parse("-1").is_err());
        assert!(ContentRange::parse("").is_err());
    }
}
