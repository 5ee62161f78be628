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
        match RangeRequest::parse(header)? {
            None => Ok(None),
            Some(request) => request.resolve(total).map(Some),
        }
    }
}

/// A `Range` request header as the client wrote it, before the content's length is known:
/// what the HTTP layer hands the registry, which resolves it against the blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// `bytes=a-b`, or `bytes=a-` (`end` is `None`): from `start` on.
    From {
        /// First byte.
        start: u64,
        /// Last byte, inclusive, if given.
        end: Option<u64>,
    },
    /// `bytes=-n`: the last `n` bytes.
    Suffix(u64),
}

impl RangeRequest {
    /// Parses a `Range` header. `Ok(None)` for a form served as the whole content (several
    /// ranges, which RFC 9110 lets a server ignore).
    pub fn parse(header: &str) -> Result<Option<RangeRequest>, RangeError> {
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
            return Ok(Some(RangeRequest::Suffix(num(b)?)));
        }
        let start = num(a)?;
        let end = if b.is_empty() { None } else { Some(num(b)?) };
        if end.is_some_and(|end| end < start) {
            return Err(malformed());
        }
        Ok(Some(RangeRequest::From { start, end }))
    }

    /// The bytes this asks for of content `total` bytes long.
    pub fn resolve(self, total: u64) -> Result<ByteRange, RangeError> {
        match self {
            RangeRequest::Suffix(n) => {
                if n == 0 || total == 0 {
                    return Err(RangeError::Unsatisfiable);
                }
                let n = n.min(total);
                Ok(ByteRange {
                    start: total - n,
                    end: total - 1,
                })
            }
            RangeRequest::From { start, end } => {
                // `parse` never builds an inverted range; one built by hand is malformed.
                if end.is_some_and(|end| end < start) {
                    return Err(RangeError::Malformed(format!("bytes={start}-{end:?}")));
                }
                if start >= total {
                    return Err(RangeError::Unsatisfiable);
                }
                Ok(ByteRange {
                    start,
                    end: end.unwrap_or(u64::MAX).min(total - 1),
                })
            }
        }
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

/// Properties of the range parsers over generated headers (the fuzz targets `range` and
/// `content_range` in `fuzz/` check the same ones for longer): no panic, and a resolved range
/// always lies inside the content.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 3000,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Headers near the grammar: units, signs, spaces, commas, big numbers.
    fn header() -> impl Strategy<Value = String> {
        prop_oneof![
            "(bytes|BYTES|items|bytes )?[= ]?-?[0-9]{0,22}[ ]?-?[ ]?[0-9]{0,22}(,[0-9]{0,3}-[0-9]{0,3})?(/[0-9*]{0,4})?",
            "\\PC{0,40}",
        ]
    }

    fn total() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..4, 0u64..1000, any::<u64>(), Just(u64::MAX)]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn resolved_ranges_lie_inside_the_content(h in header(), total in total()) {
            match ByteRange::parse_request(&h, total) {
                Ok(Some(r)) => {
                    prop_assert!(r.start <= r.end && r.end < total, "{:?} for {:?} of {}", r, h, total);
                    prop_assert!((1..=total).contains(&r.len()));
                }
                Ok(None) => prop_assert!(h.contains(',')),
                Err(_) => {}
            }
        }

        #[test]
        fn explicit_ranges_resolve_exactly(total in 1u64..10_000, a in 0u64..10_000, len in 1u64..10_000) {
            let b = a.saturating_add(len - 1);
            let got = ByteRange::parse_request(&format!("bytes={a}-{b}"), total);
            if a >= total {
                prop_assert_eq!(got, Err(RangeError::Unsatisfiable));
            } else {
                prop_assert_eq!(got, Ok(Some(ByteRange { start: a, end: b.min(total - 1) })));
            }
        }

        #[test]
        fn suffix_ranges_are_the_last_bytes(total in 1u64..10_000, n in 1u64..20_000) {
            let r = ByteRange::parse_request(&format!("bytes=-{n}"), total).unwrap().unwrap();
            prop_assert_eq!(r.end, total - 1);
            prop_assert_eq!(r.len(), n.min(total));
        }

        #[test]
        fn content_ranges_are_ordered(h in header()) {
            if let Ok(r) = ContentRange::parse(&h) {
                prop_assert!(r.start <= r.end, "{:?} from {:?}", r, h);
                prop_assert_eq!(ContentRange::parse(&format!("{}-{}", r.start, r.end)), Ok(r));
            }
        }

        #[test]
        fn content_range_forms_agree(a in any::<u64>(), b in any::<u64>()) {
            let (a, b) = (a.min(b), a.max(b));
            let want = Ok(ContentRange { start: a, end: b });
            prop_assert_eq!(ContentRange::parse(&format!("{a}-{b}")), want.clone());
            prop_assert_eq!(ContentRange::parse(&format!("bytes {a}-{b}/*")), want.clone());
            prop_assert_eq!(ContentRange::parse(&format!("bytes={a}-{b}")), want);
        }
    }
}
