//! The exact-match flow cache in front of the tuple-space search.
//!
//! A 4-way set-associative table of full flow keys, owned by one worker. A
//! set's four 32-bit tags sit together (four sets to a cache line), apart
//! from the 72-byte entries, so a lookup touches the tag line and then only
//! the one entry whose tag matches; a batch prefetches both a stage ahead.
//! Each entry carries the epoch of the generation it was made under; an
//! entry of another epoch is a miss, so a new generation invalidates the
//! cache without a flush. Misses are cached too (as [`NO_RULE`]).

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

#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Entry {
    key: FlowKey,
    /// Epoch of the generation; 0 marks an empty entry.
    epoch: u32,
    slot: u32,
    first_action: u32,
    n_actions: u16,
    pad: u16,
}

impl Entry {
    fn hit(&self) -> Hit {
        Hit {
            slot: self.slot,
            first_action: self.first_action,
            n_actions: self.n_actions,
        }
    }
}

/// A per-worker exact-match cache.
pub struct FlowCache {
    tags: Vec<[u32; WAYS]>,
    entries: Vec<Entry>,
    set_mask: usize,
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
        let empty = Entry {
            key: FlowKey::default(),
            epoch: 0,
            slot: NO_RULE,
            first_action: 0,
            n_actions: 0,
            pad: 0,
        };
        FlowCache {
            tags: crate::mem::filled(sets, [0; WAYS]),
            entries: crate::mem::filled(sets * WAYS, empty),
            set_mask: sets - 1,
        }
    }

    /// Number of entries.
    pub fn capacity(&self) -> usize {
        self.entries.len()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * size_of::<Entry>()
            + self.tags.capacity() * size_of::<[u32; WAYS]>()
    }

    #[inline]
    fn set(&self, hash: u64) -> usize {
        hash as usize & self.set_mask
    }

    /// Stage 1 of a batched lookup: prefetch the tag line of `hash`'s set.
    #[inline]
    pub fn prefetch_tags(&self, hash: u64) {
        prefetch(&self.tags[self.set(hash)]);
    }

    /// Stage 2: the entry whose tag matches, prefetched; `None` if no tag matches.
    #[inline]
    pub fn probe(&self, hash: u64) -> Option<usize> {
        let set = self.set(hash);
        let tag = tag_of(hash);
        let way = self.tags[set].iter().position(|&t| t == tag)?;
        let i = set * WAYS + way;
        let p = &self.entries[i] as *const Entry;
        prefetch(p);
        prefetch(p.cast::<u8>().wrapping_add(64));
        Some(i)
    }

    /// Stage 3: what is cached at `slot` (from [`FlowCache::probe`]) if it is `key`'s under `epoch`,
    /// else a full lookup.
    #[inline]
    pub fn lookup_probed(
        &self,
        slot: Option<usize>,
        key: &FlowKey,
        hash: u64,
        epoch: u32,
    ) -> Option<Hit> {
        if let Some(i) = slot {
            let e = &self.entries[i];
            if e.epoch == epoch && e.key == *key {
                return Some(e.hit());
            }
        }
        self.lookup(key, hash, epoch)
    }

    /// The cached result ([`Hit::MISS`] for a cached miss) for `key` under `epoch`.
    #[inline]
    pub fn lookup(&self, key: &FlowKey, hash: u64, epoch: u32) -> Option<Hit> {
        let set = self.set(hash);
        let tag = tag_of(hash);
        (0..WAYS).find_map(|w| {
            let e = &self.entries[set * WAYS + w];
            (self.tags[set][w] == tag && e.epoch == epoch && e.key == *key).then(|| e.hit())
        })
    }

    /// Caches `hit` for `key`: into the way already holding `key`'s tag, else
    /// an empty way, else one picked by the hash.
    #[inline]
    pub fn insert(&mut self, key: &FlowKey, hash: u64, epoch: u32, hit: Hit) {
        let set = self.set(hash);
        let tag = tag_of(hash);
        let tags = &mut self.tags[set];
        let way = tags
            .iter()
            .position(|&t| t == tag)
            .or_else(|| tags.iter().position(|&t| t == 0))
            .unwrap_or((hash >> 30) as usize & (WAYS - 1));
        tags[way] = tag;
        self.entries[set * WAYS + way] = Entry {
            key: *key,
            epoch,
            slot: hit.slot,
            first_action: hit.first_action,
            n_actions: hit.n_actions,
            pad: 0,
        };
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
}
