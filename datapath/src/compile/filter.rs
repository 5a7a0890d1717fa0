//! A subtable's prefilter: a one-hash Bloom filter over its compressed
//! keys. A key whose bit is clear is certainly absent, so most probes that
//! would miss cost a multiply or two and one word of a small bitmap (which
//! stays in the L2 cache) instead of the full key hash and a line of the
//! subtable's index. A tuple-space search probes every subtable better than
//! the one that matches, and nearly all of those probes miss.
//!
//! Removals leave their bits set: a stale bit only costs a wasted probe,
//! never a wrong answer. The owner rebuilds the filter when it grows too
//! full or too stale.

use std::sync::Arc;

/// Filter bits per entry when (re)built: about 6% false positives.
const BITS_PER_ENTRY: usize = 16;
const MIN_BITS: usize = 1 << 12;
const MAX_BITS: usize = 1 << 24;

/// The filter's hash of a compressed key's first `W` words: a multiply per
/// word, much cheaper than the table hash.
#[inline(always)]
pub(super) fn filter_hash<const W: usize>(words: &[u64; 8]) -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for w in &words[..W] {
        x = (x ^ w).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    }
    x ^ (x >> 31)
}

/// The bitmap, shared between generations until one changes it.
#[derive(Debug, Clone)]
pub(super) struct Filter {
    bits: Arc<Vec<u64>>,
    /// `64 - log2(bit count)`: a hash's top bits pick its bit.
    shift: u32,
    /// Entries whose bits are set (inserted since the last build).
    set: usize,
    /// Removals since the last build.
    stale: usize,
}

impl Filter {
    /// An empty filter sized for `entries`.
    pub(super) fn with_capacity(entries: usize) -> Filter {
        let n = (entries * BITS_PER_ENTRY)
            .next_power_of_two()
            .clamp(MIN_BITS, MAX_BITS);
        Filter {
            bits: Arc::new(vec![0; n / 64]),
            shift: 64 - n.trailing_zeros(),
            set: 0,
            stale: 0,
        }
    }

    /// Whether a key of filter hash `h` may be present.
    #[inline(always)]
    pub(super) fn may_hold(&self, h: u64) -> bool {
        let bit = (h >> self.shift) as usize;
        self.bits[bit >> 6] >> (bit & 63) & 1 != 0
    }

    /// Records a key of filter hash `h`. Returns false when the filter is
    /// too full to stay useful: the owner should rebuild it larger.
    pub(super) fn add(&mut self, h: u64) -> bool {
        let bit = (h >> self.shift) as usize;
        Arc::make_mut(&mut self.bits)[bit >> 6] |= 1 << (bit & 63);
        self.set += 1;
        self.set * BITS_PER_ENTRY / 2 <= self.bits.len() * 64 || self.bits.len() * 64 >= MAX_BITS
    }

    /// Notes a removal. Returns false when enough bits are stale that the
    /// owner should rebuild the filter.
    pub(super) fn remove(&mut self) -> bool {
        self.stale += 1;
        self.stale
            <= self
                .set
                .saturating_sub(self.stale)
                .max(MIN_BITS / BITS_PER_ENTRY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_added_key_may_be_held_and_most_others_not() {
        let mut f = Filter::with_capacity(1000);
        let key = |i: u64| {
            let mut w = [0u64; 8];
            (w[0], w[1]) = (i, i * 7);
            filter_hash::<2>(&w)
        };
        for i in 0..1000 {
            assert!(f.add(key(i)));
        }
        assert!((0..1000).all(|i| f.may_hold(key(i))));
        let false_positives = (1000..101_000).filter(|&i| f.may_hold(key(i))).count();
        assert!(
            false_positives < 10_000,
            "{false_positives} of 100000 absent keys pass"
        );
    }
}
