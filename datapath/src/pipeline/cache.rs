//! The exact-match flow cache in front of the tuple-space search.
//!
//! A 4-way set-associative table of full flow keys, owned by one worker.
//! Each entry carries the generation it was made under; an entry of another
//! generation is a miss, so a new generation invalidates the cache without a
//! flush. Misses are cached too (as [`NO_RULE`]).

use crate::compile::{FlowKey, NO_RULE};

const WAYS: usize = 4;

#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Entry {
    key: FlowKey,
    /// Generation (low 32 bits); 0 marks an empty entry.
    generation: u32,
    rule: u32,
}

/// A per-worker exact-match cache.
pub struct FlowCache {
    entries: Vec<Entry>,
    set_mask: usize,
}

impl FlowCache {
    /// A cache of at least `capacity` entries (rounded up to a power of two, at least 4).
    pub fn new(capacity: usize) -> FlowCache {
        let sets = capacity.div_ceil(WAYS).next_power_of_two().max(1);
        let empty = Entry {
            key: FlowKey::default(),
            generation: 0,
            rule: NO_RULE,
        };
        FlowCache {
            entries: vec![empty; sets * WAYS],
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
    }

    #[inline]
    fn set(&self, hash: u64) -> usize {
        (hash as usize & self.set_mask) * WAYS
    }

    /// The cached rule index ([`NO_RULE`] for a cached miss) for `key` under `generation`.
    #[inline]
    pub fn lookup(&self, key: &FlowKey, hash: u64, generation: u32) -> Option<u32> {
        let s = self.set(hash);
        self.entries[s..s + WAYS]
            .iter()
            .find(|e| e.generation == generation && e.key == *key)
            .map(|e| e.rule)
    }

    /// Caches `rule` for `key`, evicting a stale entry or else one picked by the hash.
    #[inline]
    pub fn insert(&mut self, key: &FlowKey, hash: u64, generation: u32, rule: u32) {
        let s = self.set(hash);
        let set = &mut self.entries[s..s + WAYS];
        let way = set
            .iter()
            .position(|e| e.generation != generation)
            .unwrap_or((hash >> 62) as usize);
        set[way] = Entry {
            key: *key,
            generation,
            rule,
        };
    }

    /// Hints the CPU to load the set `hash` falls in.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let p = self.entries[self.set(hash)..].as_ptr().cast::<i8>();
            // SAFETY: prefetch is a hint; it never faults, and p points into the table.
            unsafe {
                core::arch::x86_64::_mm_prefetch(p, core::arch::x86_64::_MM_HINT_T0);
                core::arch::x86_64::_mm_prefetch(p.add(64), core::arch::x86_64::_MM_HINT_T0);
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }
}
