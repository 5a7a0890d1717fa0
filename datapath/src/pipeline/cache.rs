//! The exact-match flow cache in front of the tuple-space search.
//!
//! A 4-way set-associative table of full flow keys, owned by one worker.
//! Each set has one 64-byte head line holding its four ways' tags, results
//! and epochs, and four 64-byte key lines. A lookup touches the head line
//! and then only the one key line whose tag matches; a batch prefetches
//! both a stage ahead. Each way carries the (low 16 bits of the) epoch of
//! the generation it was filled under; a way of another epoch is a miss, so
//! a new generation invalidates the cache without a flush. The cache is
//! flushed only when the epoch's upper bits move on, so that a 16-bit epoch
//! can never alias an old one. Misses are cached too (as [`NO_RULE`]).

use crate::compile::{FlowKey, NO_RULE};
use crate::mem::prefetch;

const WAYS: usize = 4;

/// What a classification found: the rule's slot and where its actions are,
/// so that a cache hit reaches the actions without reading the rule record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// Rule slot, or [`NO_RULE`].
    pub slot: u32,
    /// Index of the rule's first action.
    pub first_action: u32,
    /// Number of actions.
    pub n_actions: u16,
}

impl Default for Hit {
    fn default() -> Self {
        Hit::MISS
    }
}

impl Hit {
    /// No rule matched.
    pub const MISS: Hit = Hit {
        slot: NO_RULE,
        first_action: 0,
        n_actions: 0,
    };
}

/// One set's tags and results: exactly one cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct SetHead {
    /// 0 marks an empty way.
    tags: [u32; WAYS],
    slots: [u32; WAYS],
    first_actions: [u32; WAYS],
    /// Low 16 bits of the epoch each way was filled under.
    epochs: [u16; WAYS],
    n_actions: [u16; WAYS],
}

/// One way's key, alone on its cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct KeyLine(FlowKey);

const _: () = assert!(size_of::<SetHead>() == 64 && size_of::<KeyLine>() == 64);

/// A per-worker exact-match cache.
pub struct FlowCache {
    heads: Vec<SetHead>,
    keys: Vec<KeyLine>,
    set_mask: usize,
    /// The epoch bits above the 16 kept per way, for every way filled since
    /// the last flush.
    window: u32,
}

#[inline]
fn tag_of(hash: u64) -> u32 {
    // Never 0, which marks an empty way.
    (hash >> 32) as u32 | 1
}

impl FlowCache {
    /// A cache of at least `capacity` entries (rounded up to a power of two, at least 4).
    pub fn new(capacity: usize) -> FlowCache {
        let sets = capacity.div_ceil(WAYS).next_power_of_two().max(1);
        FlowCache {
            heads: crate::mem::filled(sets, SetHead::default()),
            keys: crate::mem::filled(sets * WAYS, KeyLine::default()),
            set_mask: sets - 1,
            window: 0,
        }
    }

    /// Number of entries.
    pub fn capacity(&self) -> usize {
        self.keys.len()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.keys.capacity() * size_of::<KeyLine>() + self.heads.capacity() * size_of::<SetHead>()
    }

    #[inline]
    fn set(&self, hash: u64) -> usize {
        hash as usize & self.set_mask
    }

    /// Stage 1 of a batched lookup: prefetch the head line of `hash`'s set.
    #[inline]
    pub fn prefetch_tags(&self, hash: u64) {
        prefetch(&self.heads[self.set(hash)]);
    }

    /// Stage 2: the way whose tag matches, its key line prefetched; `None`
    /// if no tag matches.
    #[inline]
    pub fn probe(&self, hash: u64) -> Option<usize> {
        let set = self.set(hash);
        let tag = tag_of(hash);
        let way = self.heads[set].tags.iter().position(|&t| t == tag)?;
        let i = set * WAYS + way;
        prefetch(&self.keys[i]);
        Some(i)
    }

    /// The result in way `i` if it holds `key` under `epoch`.
    #[inline(always)]
    fn hit_at(&self, i: usize, key: &FlowKey, epoch: u32) -> Option<Hit> {
        let (h, w) = (&self.heads[i / WAYS], i % WAYS);
        (h.epochs[w] == epoch as u16 && epoch >> 16 == self.window && self.keys[i].0 == *key).then(
            || Hit {
                slot: h.slots[w],
                first_action: h.first_actions[w],
                n_actions: h.n_actions[w],
            },
        )
    }

    /// Stage 3: what is cached at way `probed` (from [`FlowCache::probe`])
    /// if it is `key`'s under `epoch`, else a full lookup.
    #[inline]
    pub fn lookup_probed(
        &self,
        probed: Option<usize>,
        key: &FlowKey,
        hash: u64,
        epoch: u32,
    ) -> Option<Hit> {
        if let Some(hit) = probed.and_then(|i| self.hit_at(i, key, epoch)) {
            return Some(hit);
        }
        self.lookup(key, hash, epoch)
    }

    /// The cached result ([`Hit::MISS`] for a cached miss) for `key` under `epoch`.
    #[inline]
    pub fn lookup(&self, key: &FlowKey, hash: u64, epoch: u32) -> Option<Hit> {
        let set = self.set(hash);
        let tag = tag_of(hash);
        (0..WAYS).find_map(|w| {
            (self.heads[set].tags[w] == tag)
                .then(|| self.hit_at(set * WAYS + w, key, epoch))
                .flatten()
        })
    }

    /// Caches `hit` for `key` under `epoch`: into the way already holding
    /// `key`'s tag, else an empty way, else one picked by the hash.
    #[inline]
    pub fn insert(&mut self, key: &FlowKey, hash: u64, epoch: u32, hit: Hit) {
        if epoch >> 16 != self.window {
            self.flush(epoch >> 16);
        }
        let set = self.set(hash);
        let tag = tag_of(hash);
        let h = &mut self.heads[set];
        let way = h
            .tags
            .iter()
            .position(|&t| t == tag)
            .or_else(|| h.tags.iter().position(|&t| t == 0))
            .unwrap_or((hash >> 30) as usize & (WAYS - 1));
        h.tags[way] = tag;
        h.slots[way] = hit.slot;
        h.first_actions[way] = hit.first_action;
        h.n_actions[way] = hit.n_actions;
        h.epochs[way] = epoch as u16;
        self.keys[set * WAYS + way] = KeyLine(*key);
    }

    /// Empties every way and starts epoch window `window`.
    #[cold]
    fn flush(&mut self, window: u32) {
        self.heads.fill(SetHead::default());
        self.window = window;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_only_its_own_key_and_epoch() {
        let mut c = FlowCache::new(16);
        let k = FlowKey {
            l4_dst: 53,
            ..FlowKey::default()
        };
        let h = k.hash();
        assert_eq!(c.lookup(&k, h, 1), None);
        let hit = Hit {
            slot: 7,
            first_action: 3,
            n_actions: 2,
        };
        c.insert(&k, h, 1, hit);
        assert_eq!(c.lookup(&k, h, 1), Some(hit));
        assert_eq!(c.lookup_probed(c.probe(h), &k, h, 1), Some(hit));
        assert_eq!(c.lookup(&k, h, 2), None, "another epoch misses");
        let other = FlowKey {
            l4_dst: 54,
            ..FlowKey::default()
        };
        assert_eq!(c.lookup(&other, h, 1), None, "same hash, other key misses");
    }

    #[test]
    fn an_epoch_16_bits_apart_never_aliases() {
        let mut c = FlowCache::new(16);
        let k = FlowKey::default();
        let h = k.hash();
        let hit = Hit {
            slot: 1,
            first_action: 0,
            n_actions: 1,
        };
        c.insert(&k, h, 5, hit);
        assert_eq!(c.lookup(&k, h, 5 + (1 << 16)), None);
        c.insert(&k, h, 6 + (1 << 16), hit);
        assert_eq!(c.lookup(&k, h, 6), None, "the window moved on: flushed");
        assert_eq!(c.lookup(&k, h, 6 + (1 << 16)), Some(hit));
    }
}
