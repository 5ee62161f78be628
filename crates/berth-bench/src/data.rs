//! Deterministic pseudo-random blob content. Blobs that are pushed are generated once, in
//! memory, before the clock starts ([`Blob::content`]): generating them while sending cost
//! the load generator a fifth of a core at 1 GB/s, CPU the registry under test then lacked
//! on a two-core machine. Sending slices of one buffer costs only the socket copy.

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

/// Generation granularity. Blob sizes and PATCH chunk sizes are whole multiples of it, so a
/// chunk boundary always falls on a block boundary.
pub const BLOCK: u64 = 1 << 20;

/// A blob of `len` bytes whose content is a pure function of `seed`.
#[derive(Clone, Copy, Debug)]
pub struct Blob {
    pub seed: u64,
    pub len: u64,
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Blob {
    pub fn new(seed: u64, len: u64) -> Self {
        Blob { seed, len }
    }

    pub fn blocks(&self) -> u64 {
        self.len.div_ceil(BLOCK)
    }

    /// Block `index` (the last one may be short).
    pub fn block(&self, index: u64) -> Vec<u8> {
        let start = index * BLOCK;
        let len = BLOCK.min(self.len.saturating_sub(start)) as usize;
        let mut out = vec![0u8; BLOCK as usize];
        let base = self
            .seed
            .wrapping_mul(0xD1B5_4A32_D192_ED03)
            .wrapping_add(start / 8);
        for (i, word) in out.chunks_exact_mut(8).enumerate() {
            word.copy_from_slice(&splitmix64(base.wrapping_add(i as u64)).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Bytes `[start, start + len)`; both must be multiples of [`BLOCK`] except at the end.
    pub fn range(&self, start: u64, len: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len as usize);
        let mut index = start / BLOCK;
        while (out.len() as u64) < len && index < self.blocks() {
            out.extend_from_slice(&self.block(index));
            index += 1;
        }
        out.truncate(len as usize);
        out
    }

    /// The whole blob in memory, with its digest: the untimed preparation of a push.
    pub fn content(&self) -> Content {
        let mut bytes = Vec::with_capacity(self.len as usize);
        let mut hasher = Sha256::new();
        for i in 0..self.blocks() {
            let block = self.block(i);
            hasher.update(&block);
            bytes.extend_from_slice(&block);
        }
        Content {
            bytes: Bytes::from(bytes),
            digest: format!("sha256:{}", hex::encode(hasher.finalize())),
        }
    }
}

/// A blob ready to send: slices of `bytes` are sent without copying.
#[derive(Clone)]
pub struct Content {
    pub bytes: Bytes,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
}

impl Content {
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
}

/// `sha256:<hex>` of a byte slice.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_deterministic_and_distinct() {
        let a = Blob::new(1, 3 * BLOCK + 5);
        assert_eq!(a.blocks(), 4);
        assert_eq!(a.block(0), a.block(0));
        assert_ne!(a.block(0), a.block(1));
        assert_ne!(a.block(0), Blob::new(2, BLOCK).block(0));
        assert_eq!(a.block(3).len(), 5);
        assert_eq!(a.range(BLOCK, 2 * BLOCK), [a.block(1), a.block(2)].concat());
    }

    #[test]
    fn content_is_the_blocks_with_their_digest() {
        let a = Blob::new(7, 2 * BLOCK + 100);
        let all = a.range(0, a.len);
        assert_eq!(all.len() as u64, a.len);
        let c = a.content();
        assert_eq!(c.bytes, all);
        assert_eq!(c.digest, digest_of(&all));
    }
}
