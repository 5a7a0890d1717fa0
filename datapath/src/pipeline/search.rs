//! The tuple-space search: the best-ranked rule over all subtables,
//! subtables taken best first with an early exit, for one key or for a
//! batch of keys at once.

use crate::compile::{CompiledTables, FlowKey, NO_RULE};

/// What the search saw, subtable by subtable (for `dse trace`); `()`
/// watches nothing and costs nothing.
pub trait SearchObserver {
    /// Subtable `index` was probed: its entry for the key (slot and rank),
    /// or none; `filtered` when its prefilter ruled the key out unread.
    fn probed(&mut self, index: usize, filtered: bool, found: Option<(u32, u64)>);
    /// The search stopped before subtable `index`: none of its rules ranks
    /// above the best found.
    fn stopped(&mut self, index: usize);
}

impl SearchObserver for () {
    #[inline(always)]
    fn probed(&mut self, _: usize, _: bool, _: Option<(u32, u64)>) {}
    #[inline(always)]
    fn stopped(&mut self, _: usize) {}
}

/// The tuple-space search: the best-ranked rule's slot over all subtables,
/// stopping once no later subtable holds a better rule.
#[inline]
pub fn search(tables: &CompiledTables, key: &FlowKey) -> u32 {
    search_observed(tables, key, &mut ())
}

/// [`search`], telling `observer` of each subtable probed and where it
/// stopped.
#[inline(always)]
pub fn search_observed(
    tables: &CompiledTables,
    key: &FlowKey,
    observer: &mut impl SearchObserver,
) -> u32 {
    // Hash and prefetch the index line of a few subtables ahead of the one
    // being probed, so that they load while it is probed; the early exit
    // then wastes at most that many hashes. `None`: the subtable's
    // prefilter ruled the key out.
    const AHEAD: usize = 3;
    const RING: usize = 4;
    const _: () = assert!(RING > AHEAD && RING.is_power_of_two());
    let subtables = &tables.subtables;
    let mut hashes = [None; RING];
    for (i, st) in subtables.iter().take(AHEAD).enumerate() {
        hashes[i] = st.prefetch_for(key);
    }
    let mut best = NO_RULE;
    let mut best_rank = 0;
    for (i, st) in subtables.iter().enumerate() {
        if best != NO_RULE && st.best_rank() <= best_rank {
            observer.stopped(i);
            break;
        }
        if let Some(next) = subtables.get(i + AHEAD) {
            hashes[(i + AHEAD) % RING] = next.prefetch_for(key);
        }
        let hash = hashes[i % RING];
        let found = hash.and_then(|h| st.lookup_hashed(key, h));
        observer.probed(i, hash.is_none(), found);
        if let Some((slot, r)) = found
            && (best == NO_RULE || r > best_rank)
        {
            (best, best_rank) = (slot, r);
        }
    }
    best
}

/// Most keys [`search_batch`] takes at once.
pub const MAX_SEARCH_BATCH: usize = 64;

/// [`search`] for each of `keys` (at most [`MAX_SEARCH_BATCH`]): `out[j]`
/// is `search(tables, keys[j])`.
///
/// Subtable by subtable, as Open vSwitch's classifier does: each subtable
/// is prepared for every key still open (masked, hashed, index line
/// prefetched) before any of them is probed, so that the memory accesses
/// of different keys overlap instead of each key waiting for its own. A
/// key leaves the batch once no later subtable can hold a better rule.
///
/// # Panics
/// If `keys` and `out` differ in length or hold more than
/// [`MAX_SEARCH_BATCH`] keys.
pub fn search_batch(tables: &CompiledTables, keys: &[&FlowKey], out: &mut [u32]) {
    let n = keys.len();
    assert!(
        n <= MAX_SEARCH_BATCH && out.len() == n,
        "search_batch: {n} keys, {} results",
        out.len()
    );
    out.fill(NO_RULE);
    let mut best_rank = [0u64; MAX_SEARCH_BATCH];
    let mut hashes = [0u64; MAX_SEARCH_BATCH];
    let mut open: u64 = if n == 64 { !0 } else { (1 << n) - 1 };
    for st in tables.subtables.iter() {
        let limit = st.best_rank();
        let (mut still, mut probe) = (0u64, 0u64);
        for j in bits(open) {
            // Subtables come best first: a key that no later subtable can
            // improve on leaves for good.
            if out[j] == NO_RULE || limit > best_rank[j] {
                still |= 1 << j;
                if let Some(h) = st.prefetch_for(keys[j]) {
                    hashes[j] = h;
                    probe |= 1 << j;
                }
            }
        }
        open = still;
        if open == 0 {
            break;
        }
        for j in bits(probe) {
            if let Some((slot, r)) = st.lookup_hashed(keys[j], hashes[j])
                && (out[j] == NO_RULE || r > best_rank[j])
            {
                (out[j], best_rank[j]) = (slot, r);
            }
        }
    }
}

/// The indices of the set bits of `mask`, lowest first.
#[inline]
fn bits(mut mask: u64) -> impl Iterator<Item = usize> {
    core::iter::from_fn(move || {
        (mask != 0).then(|| {
            let j = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            j
        })
    })
}
