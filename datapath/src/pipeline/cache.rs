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

use crate::compile::{FlowKey, NO_RULE, op};
use crate::mem::prefetch;

const WAYS: usize = 4;

/// What a classification found: the rule's slot and, for the common rule
/// whose one action is terminal, that action inline, so that a cache hit on
/// it reads neither the rule record nor an action record.
///
/// Eight bytes, aligned as one word: it is copied as one load and one store
/// (a copy in pieces stalls on store forwarding in the hot path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(8))]
pub struct Hit {
    /// Rule slot, or [`NO_RULE`].
    pub slot: u32,
    /// The rule's only action when it is terminal (`output`, `drop`,
    /// `pass`, `tx`), as `opcode << 16 | arg16`; 0 otherwise.
    pub inline: u32,
}

impl Default for Hit {
    fn default() -> Self {
        Hit::MISS
    }
}

impl Hit {
    /// The hit of the rule at `slot` with `n_actions` actions, the first
    /// being `first_op` with argument `arg16`.
    pub fn new(slot: u32, n_actions: u16, first_op: u8, arg16: u16) -> Hit {
        let inline = if n_actions == 1 && op::is_terminal(first_op) {
            u32::from(first_op) << 16 | u32::from(arg16)
        } else {
            0
        };
        Hit { slot, inline }
    }

    /// The inline terminal action as (opcode, argument), if any.
    #[inline(always)]
    pub fn inline(&self) -> Option<(u8, u16)> {
        (self.inline != 0).then_some(((self.inline >> 16) as u8, self.inline as u16))
    }

    /// No rule matched.
    pub const MISS: Hit = Hit {
        slot: NO_RULE,
        inline: 0,
    };
}

/// What a datapath's flow cache holds for a key: the XDP program's (read
/// from its pins), or each host-path worker's. In JSON, `{"state":
/// "hit", "slot": 3, "rule": 7}` and the like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum Cached {
    /// Nothing: the next frame of the flow takes the search.
    Miss,
    /// Another flow's entry in its place (the same hash): a miss too.
    Other,
    /// An entry from an earlier version of the tables: a miss, which the
    /// search refills. The XDP program tags an entry with the tables'
    /// generation; the host path with their epoch (a restore may reuse a
    /// generation number, never an epoch).
    Stale {
        /// The entry's generation (XDP) or epoch (host path).
        generation: u32,
        /// The tables'.
        current: u32,
    },
    /// A hit: the rule in this slot, with this id.
    Hit {
        /// The rule's slot.
        slot: u32,
        /// The rule's id.
        rule: u32,
    },
    /// A hit on a search that found no rule (the host path caches those):
    /// the frame takes its port's default action.
    NoRule,
}

/// One set's tags and results: exactly one cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct SetHead {
    /// 0 marks an empty way.
    tags: [u32; WAYS],
    slots: [u32; WAYS],
    inline: [u32; WAYS],
    /// Low 16 bits of the epoch each way was filled under.
    epochs: [u16; WAYS],
    pad: [u16; WAYS],
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

/// The first way of `tags` holding `tag`: four compares folded into a bit
/// mask, no branch per way (which way matches is random under random
/// traffic, and a mispredicted branch costs more than the four compares).
#[inline(always)]
fn way_of(tags: &[u32; WAYS], tag: u32) -> Option<usize> {
    let hits = (0..WAYS).fold(0u32, |m, w| m | u32::from(tags[w] == tag) << w);
    (hits != 0).then(|| hits.trailing_zeros() as usize)
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

    /// Stage 2: the way whose tag matches, its key line prefetched, and
    /// the rule slot it holds (to prefetch what the rule will touch); `None`
    /// if no tag matches.
    #[inline]
    pub fn probe(&self, hash: u64) -> Option<(usize, u32)> {
        let set = self.set(hash);
        let tag = tag_of(hash);
        let head = &self.heads[set];
        let way = way_of(&head.tags, tag)?;
        let i = set * WAYS + way;
        prefetch(&self.keys[i]);
        Some((i, head.slots[way]))
    }

    /// The result in way `i` if it holds `key` under `epoch`.
    #[inline(always)]
    fn hit_at(&self, i: usize, key: &FlowKey, epoch: u32) -> Option<Hit> {
        let (h, w) = (&self.heads[i / WAYS], i % WAYS);
        (h.epochs[w] == epoch as u16 && epoch >> 16 == self.window && self.keys[i].0 == *key).then(
            || Hit {
                slot: h.slots[w],
                inline: h.inline[w],
            },
        )
    }

    /// Stage 3: what is cached at way `probed` (from [`FlowCache::probe`])
    /// if it is `key`'s under `epoch`, else a full lookup.
    #[inline]
    pub fn lookup_probed(
        &self,
        probed: Option<(usize, u32)>,
        key: &FlowKey,
        hash: u64,
        epoch: u32,
    ) -> Option<Hit> {
        if let Some(hit) = probed.and_then(|(i, _)| self.hit_at(i, key, epoch)) {
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

    /// What is cached for `key` (whose hash is `hash`) when the tables'
    /// epoch is `epoch`, read without touching anything; a hit's slot is
    /// given as [`Cached::Hit`] with `rule` 0, for the caller to name.
    pub fn peek(&self, key: &FlowKey, hash: u64, epoch: u32) -> Cached {
        let set = self.set(hash);
        let tag = tag_of(hash);
        let head = &self.heads[set];
        let ways: Vec<usize> = (0..WAYS).filter(|&w| head.tags[w] == tag).collect();
        let Some(&way) = ways.iter().find(|&&w| self.keys[set * WAYS + w].0 == *key) else {
            return if ways.is_empty() {
                Cached::Miss
            } else {
                Cached::Other
            };
        };
        let filled = self.window << 16 | u32::from(head.epochs[way]);
        if filled != epoch {
            return Cached::Stale {
                generation: filled,
                current: epoch,
            };
        }
        match head.slots[way] {
            NO_RULE => Cached::NoRule,
            slot => Cached::Hit { slot, rule: 0 },
        }
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
        let way = way_of(&h.tags, tag)
            .or_else(|| way_of(&h.tags, 0))
            .unwrap_or((hash >> 30) as usize & (WAYS - 1));
        h.tags[way] = tag;
        h.slots[way] = hit.slot;
        h.inline[way] = hit.inline;
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
        let hit = Hit::new(7, 2, op::SET_ETH_DST, 0);
        assert_eq!(hit.inline(), None);
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
        let hit = Hit::new(1, 1, op::OUTPUT, 2);
        assert_eq!(hit.inline(), Some((op::OUTPUT, 2)));
        c.insert(&k, h, 5, hit);
        assert_eq!(c.lookup(&k, h, 5 + (1 << 16)), None);
        c.insert(&k, h, 6 + (1 << 16), hit);
        assert_eq!(c.lookup(&k, h, 6), None, "the window moved on: flushed");
        assert_eq!(c.lookup(&k, h, 6 + (1 << 16)), Some(hit));
    }
}
