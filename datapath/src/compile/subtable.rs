//! One tuple-space subtable: the rules that share a mask, in a compact
//! open-addressing hash table keyed by the masked key's non-zero mask words.
//!
//! Only the words the mask touches are stored (a 5-tuple IPv4 mask keeps 3
//! of 8), so an installed exact flow costs about 40 bytes here.

use super::key::{FlowKey, hash_words};

/// Rules sharing one mask.
#[derive(Debug, Clone)]
pub struct Subtable {
    mask: FlowKey,
    /// Indices of the mask's non-zero words, then their mask values.
    word_ix: [u8; 8],
    word_mask: [u64; 8],
    n_words: usize,
    /// `n_words` words per entry.
    keys: Vec<u64>,
    /// Rule index per entry.
    rules: Vec<u32>,
    /// 0 = empty; else hash tag (high 32 bits) and entry index + 1 (low 32 bits).
    slots: Vec<u64>,
    /// Lowest (best) rule index in the table.
    best: u32,
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
        let slots = (capacity * 4 / 3 + 1).next_power_of_two().max(8);
        Subtable {
            mask,
            word_ix,
            word_mask,
            n_words,
            keys: Vec::with_capacity(capacity * n_words),
            rules: Vec::with_capacity(capacity),
            slots: crate::mem::filled(slots, 0),
            best: u32::MAX,
        }
    }

    /// The mask.
    pub fn mask(&self) -> &FlowKey {
        &self.mask
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether it has no entries.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The lowest (best) rule index it holds.
    pub fn best_rule(&self) -> u32 {
        self.best
    }

    #[inline]
    fn compress(&self, key: &FlowKey) -> [u64; 8] {
        let w = key.words();
        let mut out = [0u64; 8];
        for i in 0..self.n_words {
            out[i] = w[usize::from(self.word_ix[i])] & self.word_mask[i];
        }
        out
    }

    #[inline]
    fn find(&self, words: &[u64], hash: u64) -> Result<usize, usize> {
        let n = self.n_words;
        let tag = hash >> 32;
        let m = self.slots.len() - 1;
        let mut pos = hash as usize & m;
        loop {
            let s = self.slots[pos];
            if s == 0 {
                return Err(pos);
            }
            if s >> 32 == tag {
                let e = (s as u32 - 1) as usize;
                if self.keys[e * n..e * n + n] == *words {
                    return Ok(e);
                }
            }
            pos = (pos + 1) & m;
        }
    }

    /// Adds `key` (masked by this table) for `rule` unless an entry with the
    /// same masked key exists; returns whether it was added. Rules are
    /// inserted best first, so the entry that stays is the one that wins.
    pub fn insert(&mut self, key: &FlowKey, rule: u32) -> bool {
        let c = self.compress(key);
        let words = &c[..self.n_words];
        let hash = hash_words(words);
        match self.find(words, hash) {
            Ok(_) => false,
            Err(_) => {
                if (self.rules.len() + 1) * 4 > self.slots.len() * 3 {
                    self.grow();
                }
                let pos = self
                    .find(words, hash)
                    .expect_err("key absent: checked above");
                self.keys.extend_from_slice(words);
                self.rules.push(rule);
                self.slots[pos] = (hash & !0xffff_ffff) | self.rules.len() as u64;
                self.best = self.best.min(rule);
                true
            }
        }
    }

    fn grow(&mut self) {
        let n = self.n_words;
        self.slots = crate::mem::filled(self.slots.len() * 2, 0);
        for e in 0..self.rules.len() {
            let words = &self.keys[e * n..e * n + n];
            let hash = hash_words(words);
            let m = self.slots.len() - 1;
            let mut pos = hash as usize & m;
            while self.slots[pos] != 0 {
                pos = (pos + 1) & m;
            }
            self.slots[pos] = (hash & !0xffff_ffff) | (e as u64 + 1);
        }
    }

    /// The rule whose masked key equals `key & mask`, if any.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<u32> {
        let c = self.compress(key);
        let words = &c[..self.n_words];
        self.find(words, hash_words(words))
            .ok()
            .map(|e| self.rules[e])
    }

    /// Entries as (masked key, rule index), for loaders of other backends.
    pub fn entries(&self) -> impl Iterator<Item = (FlowKey, u32)> + '_ {
        let n = self.n_words;
        (0..self.rules.len()).map(move |e| {
            let mut w = [0u64; 8];
            for i in 0..n {
                w[usize::from(self.word_ix[i])] = self.keys[e * n + i];
            }
            (FlowKey::from_words(w), self.rules[e])
        })
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.keys.capacity() * 8 + self.rules.capacity() * 4 + self.slots.capacity() * 8
    }
}
