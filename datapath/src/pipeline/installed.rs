//! One generation of installed state, and the per-rule counters that
//! outlive generations.

use super::{Bucket, Count, RuleCounter};
use crate::compile::{CompiledTables, MAX_RULES, compile};
use crate::rule::{RuleError, RuleSet};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// One generation of installed state: its tables and the meters' buckets.
///
/// A worker processes a whole batch under one `Installed`, so no packet is
/// ever classified by a mix of two generations.
pub struct Installed {
    /// Generation number, from 1.
    pub generation: u64,
    /// Unique per `Installed` in this process, never 0: what flow-cache
    /// entries are tagged with (a restore may reuse a generation number).
    pub(crate) epoch: u32,
    /// The compiled tables.
    pub tables: CompiledTables,
    /// Per meter index; a meter keeps its bucket across generations by name.
    pub(crate) meters: Vec<Arc<Mutex<Bucket>>>,
}

impl Installed {
    /// Generation `generation` of `tables`, carrying meter buckets over from
    /// `previous` by meter name.
    pub fn new(generation: u64, tables: CompiledTables, previous: Option<&Installed>) -> Installed {
        let old: HashMap<&str, &Arc<Mutex<Bucket>>> = previous
            .map(|p| {
                p.tables
                    .meter_names
                    .iter()
                    .map(String::as_str)
                    .zip(&p.meters)
                    .collect()
            })
            .unwrap_or_default();
        let meters = tables
            .meter_names
            .iter()
            .zip(tables.meters.iter())
            .map(|(name, cfg)| {
                old.get(name.as_str()).map_or_else(
                    || Arc::new(Mutex::new(Bucket::full(cfg))),
                    |b| Arc::clone(b),
                )
            })
            .collect();
        static EPOCH: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let epoch = EPOCH
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .max(1);
        Installed {
            generation,
            epoch,
            tables,
            meters,
        }
    }

    /// Compiles `rules` as generation `generation` with fresh meters.
    ///
    /// # Errors
    /// [`RuleError`] if the rules do not compile.
    pub fn build(generation: u64, rules: &RuleSet) -> Result<Installed, RuleError> {
        Ok(Installed::new(generation, compile(rules)?, None))
    }

    /// The bucket of each meter, by name.
    pub fn buckets(&self) -> Vec<(String, Bucket)> {
        self.tables
            .meter_names
            .iter()
            .zip(&self.meters)
            .map(|(n, b)| (n.clone(), *b.lock().expect("meter lock is never poisoned")))
            .collect()
    }

    /// Sets the bucket of the meter named `name`; returns whether it exists.
    pub fn set_bucket(&self, name: &str, bucket: Bucket) -> bool {
        match self.tables.meter_names.iter().position(|n| n == name) {
            Some(i) => {
                *self.meters[i].lock().expect("meter lock is never poisoned") = bucket;
                true
            }
            None => false,
        }
    }
}

/// One packet processor's per-rule counters, by rule slot, for every slot
/// there can be ([`MAX_RULES`]). The memory is zero-filled on demand by the
/// OS, so untouched slots cost no RAM.
pub struct CounterBlock {
    pub(crate) counters: Box<[RuleCounter]>,
}

impl Default for CounterBlock {
    fn default() -> Self {
        Self::new()
    }
}

impl CounterBlock {
    /// A block of zeroed counters.
    pub fn new() -> CounterBlock {
        let layout = std::alloc::Layout::array::<RuleCounter>(MAX_RULES)
            .expect("MAX_RULES counters fit in memory");
        // SAFETY: the layout is not zero-sized. All-zero bytes are a valid
        // RuleCounter (two AtomicU64 holding 0). The Box frees the memory with
        // Layout::array::<RuleCounter>(MAX_RULES), the layout allocated here.
        let counters = unsafe {
            let ptr = std::alloc::alloc_zeroed(layout).cast::<RuleCounter>();
            if ptr.is_null() {
                std::alloc::handle_alloc_error(layout);
            }
            // Random per-rule counting over 64 MiB: huge pages spare the TLB.
            crate::mem::advise_huge(ptr, layout.size());
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, MAX_RULES))
        };
        CounterBlock { counters }
    }

    /// The counter of `slot`.
    #[inline]
    pub fn slot(&self, slot: u32) -> &RuleCounter {
        &self.counters[slot as usize]
    }

    /// Reads `slot`.
    pub fn get(&self, slot: u32) -> Count {
        let c = self.slot(slot);
        Count {
            packets: c.packets.get(),
            bytes: c.bytes.get(),
        }
    }

    /// Overwrites `slot`. Only for a slot no packet processor is counting
    /// into (a new rule's slot before its generation is published, or a restore).
    pub fn set(&self, slot: u32, count: Count) {
        let c = self.slot(slot);
        c.packets.set(count.packets);
        c.bytes.set(count.bytes);
    }
}

/// Counters of the rules in `tables`, summed over `blocks`, by rule id.
pub fn counts_by_id<'a>(
    tables: &CompiledTables,
    blocks: impl IntoIterator<Item = &'a CounterBlock> + Clone,
) -> BTreeMap<u32, Count> {
    tables
        .live_rules()
        .map(|(slot, r)| {
            let mut c = Count::default();
            for b in blocks.clone() {
                c += b.get(slot);
            }
            (r.id, c)
        })
        .collect()
}
