//! One tuple-space subtable: the rules that share a mask, in compact
//! open-addressing hash tables keyed by the masked key's non-zero mask words.
//!
//! Only the words the mask touches are stored (a 5-tuple IPv4 mask keeps 3
//! of 8). The table is split into shards by the top bits of the hash; each
//! shard is shared between generations and copied only when a transaction
//! changes it, so a one-rule change copies one shard, not the table.

use super::filter::{Filter, filter_hash};
use super::key::{FlowKey, hash_words};
use std::sync::Arc;

/// Entries a shard is sized for when a subtable is built.
const SHARD_TARGET: usize = 2048;
/// Most shard bits.
const MAX_SHARD_BITS: u32 = 12;

/// Runs `$body` with the constant `$w` bound to the fixed width (2, 4, 6
/// or 8 words) that covers `$n` words. Each arm is then unrolled: a loop
/// over a run-time word count costs more than the hash itself. Everything
/// that hashes or filters a compressed key goes through it, so stored and
/// probed keys agree.
macro_rules! by_width {
    ($n:expr, $w:ident => $body:expr) => {
        match $n {
            0..=2 => {
                const $w: usize = 2;
                $body
            }
            3 | 4 => {
                const $w: usize = 4;
                $body
            }
            5 | 6 => {
                const $w: usize = 6;
                $body
            }
            _ => {
                const $w: usize = 8;
                $body
            }
        }
    };
}

/// The hash of a compressed key: its `n` words, zero-padded to eight.
#[inline(always)]
fn hash_compressed(words: &[u64; 8], n: usize) -> u64 {
    by_width!(n, W => hash_words(&words[..W]))
}

/// Words of an entry beyond its key: the rule's rank and its slot, beside
/// the key so that a match reads one line, not three (key, slot, record).
const EXTRA: usize = 2;

#[derive(Debug, Clone)]
struct Shard {
    /// Entries of `n_words + EXTRA` words: the compressed key, the rule's
    /// rank, its slot.
    entries: Vec<u64>,
    /// Number of entries.
    len: usize,
    /// 0 = empty; else hash tag (high 32 bits) and entry index + 1 (low 32 bits).
    index: Vec<u64>,
}

/// Rules sharing one mask.
#[derive(Debug, Clone)]
pub struct Subtable {
    mask: FlowKey,
    word_ix: [u8; 8],
    word_mask: [u64; 8],
    n_words: usize,
    shard_bits: u32,
    shards: Vec<Arc<Shard>>,
    /// Rules out most keys that are absent before the table is hashed.
    filter: Filter,
    len: usize,
    /// Rank of the best rule in the table (see [`super::rank`]).
    pub(crate) best_rank: u64,
    /// The compiler's identity for this mask.
    pub(crate) id: u32,
}

impl Shard {
    /// The hash of stored entry `e`.
    fn entry_hash(&self, n: usize, e: usize) -> u64 {
        let mut w = [0u64; 8];
        w[..n].copy_from_slice(self.key(n, e));
        hash_compressed(&w, n)
    }

    #[inline(always)]
    fn entry(&self, n: usize, e: usize) -> &[u64] {
        &self.entries[e * (n + EXTRA)..(e + 1) * (n + EXTRA)]
    }

    #[inline(always)]
    fn key(&self, n: usize, e: usize) -> &[u64] {
        &self.entry(n, e)[..n]
    }

    /// Entry `e`'s (slot, rank).
    #[inline(always)]
    fn rule(&self, n: usize, e: usize) -> (u32, u64) {
        let x = &self.entry(n, e)[n..];
        (x[1] as u32, x[0])
    }

    fn set_rule(&mut self, n: usize, e: usize, slot: u32, rank: u64) {
        let x = &mut self.entries[e * (n + EXTRA) + n..][..EXTRA];
        (x[0], x[1]) = (rank, u64::from(slot));
    }

    fn new(n_words: usize, capacity: usize) -> Shard {
        let slots = (capacity * 4 / 3 + 1).next_power_of_two().max(8);
        Shard {
            entries: Vec::with_capacity(capacity * (n_words + EXTRA)),
            len: 0,
            index: crate::mem::filled(slots, 0),
        }
    }

    #[inline]
    fn find(&self, n: usize, words: &[u64], hash: u64) -> Result<(usize, usize), usize> {
        let tag = hash >> 32;
        let m = self.index.len() - 1;
        let mut pos = hash as usize & m;
        loop {
            let s = self.index[pos];
            if s == 0 {
                return Err(pos);
            }
            if s >> 32 == tag {
                let e = (s as u32 - 1) as usize;
                // A word loop, not slice equality: that calls memcmp, costly for 1–8 words.
                if self
                    .key(n, e)
                    .iter()
                    .zip(words)
                    .fold(0, |acc, (a, b)| acc | (a ^ b))
                    == 0
                {
                    return Ok((pos, e));
                }
            }
            pos = (pos + 1) & m;
        }
    }

    fn grow(&mut self, n: usize) {
        self.index = crate::mem::filled(self.index.len() * 2, 0);
        let m = self.index.len() - 1;
        for e in 0..self.len {
            let hash = self.entry_hash(n, e);
            let mut pos = hash as usize & m;
            while self.index[pos] != 0 {
                pos = (pos + 1) & m;
            }
            self.index[pos] = (hash & !0xffff_ffff) | (e as u64 + 1);
        }
    }

    /// Removes the index slot at `pos` by backward-shift deletion, then the
    /// entry `e` by moving the last entry into its place.
    fn remove_at(&mut self, n: usize, mut pos: usize, e: usize) {
        let m = self.index.len() - 1;
        self.index[pos] = 0;
        let mut next = (pos + 1) & m;
        while self.index[next] != 0 {
            let s = self.index[next];
            let home = self.entry_hash(n, (s as u32 - 1) as usize) as usize & m;
            // Move `next` back into the hole unless its home lies cyclically in (pos, next].
            let stays = if pos <= next {
                pos < home && home <= next
            } else {
                pos < home || home <= next
            };
            if !stays {
                self.index[pos] = s;
                self.index[next] = 0;
                pos = next;
            }
            next = (next + 1) & m;
        }
        let last = self.len - 1;
        let stride = n + EXTRA;
        if e != last {
            let last_hash = self.entry_hash(n, last);
            let (lpos, _) = self
                .find(n, self.key(n, last), last_hash)
                .expect("the last entry is indexed");
            self.index[lpos] = (last_hash & !0xffff_ffff) | (e as u64 + 1);
            self.entries
                .copy_within(last * stride..(last + 1) * stride, e * stride);
        }
        self.entries.truncate(last * stride);
        self.len = last;
    }
}

impl Subtable {
    /// An empty subtable for `mask`, sized for `capacity` entries.
    pub fn new(mask: FlowKey, capacity: usize) -> Subtable {
        let mut word_ix = [0u8; 8];
        let mut word_mask = [0u64; 8];
        let mut n_words = 0;
        for (i, &w) in mask.words().iter().enumerate() {
            if w != 0 {
                word_ix[n_words] = i as u8;
                word_mask[n_words] = w;
                n_words += 1;
            }
        }
        let shard_bits = (capacity / SHARD_TARGET)
            .max(1)
            .next_power_of_two()
            .trailing_zeros()
            .min(MAX_SHARD_BITS);
        let per_shard = capacity.div_ceil(1 << shard_bits);
        let shards = (0..1usize << shard_bits)
            .map(|_| Arc::new(Shard::new(n_words, per_shard)))
            .collect();
        Subtable {
            mask,
            word_ix,
            word_mask,
            n_words,
            shard_bits,
            shards,
            filter: Filter::with_capacity(capacity),
            len: 0,
            best_rank: 0,
            id: 0,
        }
    }

    /// The mask.
    pub fn mask(&self) -> &FlowKey {
        &self.mask
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rank of the best rule it holds.
    pub fn best_rank(&self) -> u64 {
        self.best_rank
    }

    /// The words of `key` the mask touches, masked, packed to the front
    /// and zero-padded, and their hash. The steps past `n_words` read word
    /// 0 under a zero mask.
    #[inline(always)]
    fn compress(&self, key: &FlowKey) -> ([u64; 8], u64) {
        by_width!(self.n_words, W => self.compress_to::<W>(key))
    }

    #[inline(always)]
    fn compress_to<const W: usize>(&self, key: &FlowKey) -> ([u64; 8], u64) {
        let out = self.pack::<W>(key);
        (out, hash_words(&out[..W]))
    }

    #[inline(always)]
    fn pack<const W: usize>(&self, key: &FlowKey) -> [u64; 8] {
        let w = key.words();
        let mut out = [0u64; 8];
        for i in 0..W {
            out[i] = w[usize::from(self.word_ix[i] & 7)] & self.word_mask[i];
        }
        out
    }

    /// [`Subtable::compress`] for a probe: `None` when the filter rules the
    /// key out, before the table hash is computed.
    #[inline(always)]
    fn compress_probe(&self, key: &FlowKey) -> Option<([u64; 8], u64)> {
        by_width!(self.n_words, W => self.compress_probe_to::<W>(key))
    }

    #[inline(always)]
    fn compress_probe_to<const W: usize>(&self, key: &FlowKey) -> Option<([u64; 8], u64)> {
        let out = self.pack::<W>(key);
        self.filter
            .may_hold(filter_hash::<W>(&out))
            .then(|| (out, hash_words(&out[..W])))
    }

    /// The filter hash of packed words `out`.
    fn filter_hash_of(&self, out: &[u64; 8]) -> u64 {
        by_width!(self.n_words, W => filter_hash::<W>(out))
    }

    /// Rebuilds the filter from the entries, sized for them.
    #[cold]
    fn rebuild_filter(&mut self) {
        let n = self.n_words;
        let mut f = Filter::with_capacity(self.len);
        for shard in &self.shards {
            for e in 0..shard.len {
                let mut w = [0u64; 8];
                w[..n].copy_from_slice(shard.key(n, e));
                f.add(self.filter_hash_of(&w));
            }
        }
        self.filter = f;
    }

    #[inline]
    fn shard_of(&self, hash: u64) -> usize {
        if self.shard_bits == 0 {
            0
        } else {
            (hash >> (64 - self.shard_bits)) as usize
        }
    }

    /// The rule slot stored for `key & mask`, if any.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<u32> {
        let (c, hash) = self.compress_probe(key)?;
        let shard = &self.shards[self.shard_of(hash)];
        shard
            .find(self.n_words, &c[..self.n_words], hash)
            .ok()
            .map(|(_, e)| shard.rule(self.n_words, e).0)
    }

    /// The first half of a split lookup, so that a search can start the
    /// memory accesses of several subtables (or keys) before it probes
    /// any: hashes `key` and prefetches the index line it will probe.
    /// `None` when the prefilter rules the key out: nothing to probe.
    #[inline(always)]
    pub fn prefetch_for(&self, key: &FlowKey) -> Option<u64> {
        let (_, hash) = self.compress_probe(key)?;
        let shard = &self.shards[self.shard_of(hash)];
        crate::mem::prefetch(&shard.index[hash as usize & (shard.index.len() - 1)]);
        Some(hash)
    }

    /// The second half of [`Subtable::prefetch_for`]: the slot and rank of
    /// the rule stored for `key`, whose hash is `hash`.
    #[inline(always)]
    pub fn lookup_hashed(&self, key: &FlowKey, hash: u64) -> Option<(u32, u64)> {
        // Compressing again costs less than keeping the words.
        let (words, _) = self.compress(key);
        let shard = &self.shards[self.shard_of(hash)];
        shard
            .find(self.n_words, &words[..self.n_words], hash)
            .ok()
            .map(|(_, e)| shard.rule(self.n_words, e))
    }

    /// Adds `key & mask` for rule `slot` of rank `rank`; if the key is
    /// present, returns the slot stored for it and changes nothing.
    pub fn insert(&mut self, key: &FlowKey, slot: u32, rank: u64) -> Result<(), u32> {
        let (c, hash) = self.compress(key);
        let n = self.n_words;
        let s = self.shard_of(hash);
        let mut pos = match self.shards[s].find(n, &c[..n], hash) {
            Ok((_, e)) => return Err(self.shards[s].rule(n, e).0),
            Err(pos) => pos,
        };
        let shard = Arc::make_mut(&mut self.shards[s]);
        if (shard.len + 1) * 4 > shard.index.len() * 3 {
            shard.grow(n);
            pos = shard
                .find(n, &c[..n], hash)
                .expect_err("key absent: checked above");
        }
        shard.entries.extend_from_slice(&c[..n]);
        shard.entries.extend_from_slice(&[rank, u64::from(slot)]);
        shard.len += 1;
        shard.index[pos] = (hash & !0xffff_ffff) | shard.len as u64;
        self.len += 1;
        if !self.filter.add(self.filter_hash_of(&c)) {
            self.rebuild_filter();
        }
        Ok(())
    }

    /// Inserts the rules `rules` (slot, rank), whose keys `key_of` gives, as
    /// [`Subtable::insert`] in the given order would, and returns the slots
    /// refused because their key was already present. The rules are first
    /// grouped by shard (a counting sort, stable, so that the first of
    /// equal keys still wins): each shard's index is then filled while it
    /// is in the CPU's cache, rather than every insert missing it.
    pub fn insert_bulk<'k>(
        &mut self,
        rules: &[(u32, u64)],
        key_of: impl Fn(u32) -> &'k FlowKey,
    ) -> Vec<u32> {
        let shard_of: Vec<u32> = rules
            .iter()
            .map(|&(s, _)| self.shard_of(self.compress(key_of(s)).1) as u32)
            .collect();
        let mut start = vec![0usize; self.shards.len() + 1];
        for &s in &shard_of {
            start[s as usize + 1] += 1;
        }
        for i in 1..start.len() {
            start[i] += start[i - 1];
        }
        let mut grouped = vec![(0u32, 0u64); rules.len()];
        for (&rule, &s) in rules.iter().zip(&shard_of) {
            grouped[start[s as usize]] = rule;
            start[s as usize] += 1;
        }
        let mut refused = Vec::new();
        for (i, &(slot, rank)) in grouped.iter().enumerate() {
            if let Some(&(ahead, _)) = grouped.get(i + 8) {
                crate::mem::prefetch(key_of(ahead));
            }
            if self.insert(key_of(slot), slot, rank).is_err() {
                refused.push(slot);
            }
        }
        refused
    }

    /// Points `key & mask`'s entry at another rule, `slot` of rank `rank`;
    /// returns whether it existed.
    pub fn replace(&mut self, key: &FlowKey, slot: u32, rank: u64) -> bool {
        let (c, hash) = self.compress(key);
        let n = self.n_words;
        let s = self.shard_of(hash);
        match self.shards[s].find(n, &c[..n], hash) {
            Ok((_, e)) => {
                Arc::make_mut(&mut self.shards[s]).set_rule(n, e, slot, rank);
                true
            }
            Err(_) => false,
        }
    }

    /// Removes `key & mask`; returns the slot it held.
    pub fn remove(&mut self, key: &FlowKey) -> Option<u32> {
        let (c, hash) = self.compress(key);
        let n = self.n_words;
        let s = self.shard_of(hash);
        let (pos, e) = self.shards[s].find(n, &c[..n], hash).ok()?;
        let shard = Arc::make_mut(&mut self.shards[s]);
        let slot = shard.rule(n, e).0;
        shard.remove_at(n, pos, e);
        self.len -= 1;
        if !self.filter.remove() {
            self.rebuild_filter();
        }
        Some(slot)
    }

    /// Entries as (masked key, rule slot), for loaders of other backends.
    pub fn entries(&self) -> impl Iterator<Item = (FlowKey, u32)> + '_ {
        self.shards
            .iter()
            .flat_map(move |shard| (0..shard.len).map(move |e| self.decode(shard, e)))
    }

    fn decode(&self, shard: &Shard, e: usize) -> (FlowKey, u32) {
        let n = self.n_words;
        let mut w = [0u64; 8];
        for i in 0..n {
            w[usize::from(self.word_ix[i])] = shard.key(n, e)[i];
        }
        (FlowKey::from_words(w), shard.rule(n, e).0)
    }

    /// The entries that differ between `old` and `self` (same mask), as
    /// (masked key, slot in `old`, slot in `self`). Shards shared with `old`
    /// are skipped unread.
    pub fn diff(&self, old: &Subtable) -> Vec<(FlowKey, Option<u32>, Option<u32>)> {
        let pairs: Vec<(Option<&Shard>, Option<&Shard>)> = if self.shard_bits == old.shard_bits {
            self.shards
                .iter()
                .zip(&old.shards)
                .filter(|(a, b)| !Arc::ptr_eq(a, b))
                .map(|(a, b)| (Some(&**b), Some(&**a)))
                .collect()
        } else {
            let mut p: Vec<_> = old.shards.iter().map(|s| (Some(&**s), None)).collect();
            p.extend(self.shards.iter().map(|s| (None, Some(&**s))));
            p
        };
        let mut was: rustc_hash::FxHashMap<FlowKey, u32> = rustc_hash::FxHashMap::default();
        let mut now: rustc_hash::FxHashMap<FlowKey, u32> = rustc_hash::FxHashMap::default();
        for (o, n) in pairs {
            if let Some(o) = o {
                was.extend((0..o.len).map(|e| old.decode(o, e)));
            }
            if let Some(n) = n {
                now.extend((0..n.len).map(|e| self.decode(n, e)));
            }
        }
        let mut out: Vec<_> = now
            .iter()
            .filter(|(k, s)| was.get(*k) != Some(*s))
            .map(|(k, s)| (*k, was.get(k).copied(), Some(*s)))
            .collect();
        out.extend(
            was.iter()
                .filter(|(k, _)| !now.contains_key(*k))
                .map(|(k, s)| (*k, Some(*s), None)),
        );
        out
    }

    /// Heap bytes held (counting shared shards in full).
    pub fn heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.entries.capacity() * 8 + s.index.capacity() * 8 + 48)
            .sum::<usize>()
            + self.shards.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mask of the keys `key` makes.
    fn mask() -> FlowKey {
        FlowKey {
            l4_src: 0xffff,
            tun_id: u32::MAX,
            ..FlowKey::default()
        }
    }

    fn key(i: u32) -> FlowKey {
        FlowKey {
            l4_src: i as u16,
            tun_id: i,
            ..FlowKey::default()
        }
    }

    #[test]
    fn insert_remove_keep_every_other_entry_findable() {
        let mask = mask();
        let mut t = Subtable::new(mask, 100);
        for i in 0..5000 {
            t.insert(&key(i), i, u64::from(i)).unwrap();
        }
        assert_eq!(t.insert(&key(7), 99, 99), Err(7));
        for i in (0..5000).step_by(3) {
            assert_eq!(t.remove(&key(i)), Some(i));
        }
        for i in 0..5000 {
            let want = (i % 3 != 0).then_some(i);
            assert_eq!(t.lookup(&key(i)), want, "key {i}");
        }
        assert_eq!(t.len(), 5000 - 1667);
        assert!(t.replace(&key(1), 42, 42));
        assert_eq!(t.lookup(&key(1)), Some(42));
        // Enough removals that the prefilter is rebuilt from what is left:
        // it must still admit every remaining key.
        for i in (0..5000).filter(|i| i % 3 != 0 && i % 7 != 0) {
            assert!(t.remove(&key(i)).is_some());
        }
        for i in 0..5000 {
            let want = (i % 3 != 0 && i % 7 == 0).then_some(if i == 1 { 42 } else { i });
            assert_eq!(t.lookup(&key(i)), want, "key {i} after the rebuild");
        }
    }

    #[test]
    fn bulk_insert_matches_inserts_in_order_first_key_winning() {
        let mask = mask();
        // 20,000 rules over 12,000 distinct keys, across many shards: slot
        // s has key s % 12,000, so slots 12,000.. repeat earlier keys.
        let keys: Vec<FlowKey> = (0..20_000u32).map(|s| key(s % 12_000)).collect();
        let rules: Vec<(u32, u64)> = (0..20_000u32)
            .map(|s| (s, u64::from(100_000 - s)))
            .collect();
        let mut bulk = Subtable::new(mask, 20_000);
        let refused = bulk.insert_bulk(&rules, |s| &keys[s as usize]);
        let mut one_by_one = Subtable::new(mask, 20_000);
        let mut want_refused = Vec::new();
        for &(s, rank) in &rules {
            if one_by_one.insert(&keys[s as usize], s, rank).is_err() {
                want_refused.push(s);
            }
        }
        let mut refused_sorted = refused.clone();
        refused_sorted.sort_unstable();
        assert_eq!(refused_sorted, want_refused);
        assert_eq!(bulk.len(), 12_000);
        for i in 0..12_000u32 {
            assert_eq!(
                bulk.lookup(&key(i)),
                Some(i),
                "key {i}: the first slot wins"
            );
        }
        assert!(bulk.diff(&one_by_one).is_empty());
    }

    #[test]
    fn diff_names_exactly_what_changed() {
        let mask = mask();
        let mut a = Subtable::new(mask, 10_000);
        for i in 0..10_000 {
            a.insert(&key(i), i, u64::from(i)).unwrap();
        }
        let mut b = a.clone();
        b.remove(&key(5));
        b.replace(&key(6), 66, 66);
        b.insert(&key(20_000), 7, 7).unwrap();
        let mut d = b.diff(&a);
        d.sort_by_key(|(k, _, _)| k.tun_id);
        assert_eq!(
            d,
            vec![
                (key(5), Some(5), None),
                (key(6), Some(6), Some(66)),
                (key(20_000), None, Some(7)),
            ]
        );
        assert!(a.diff(&a.clone()).is_empty());
    }
}
