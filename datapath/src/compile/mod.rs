//! The compiler: `RuleSet -> CompiledTables`, pure and backend-agnostic.
//!
//! Rules are ranked by (priority descending, id ascending), a total order.
//! Each distinct mask gets a subtable; subtables are ordered by their best
//! rank, which lets the classifier stop once no later subtable can beat what
//! it has found. Where two rules have the same masked key, only the better
//! is in the subtable; the other waits in a shadow list until it is exposed.
//!
//! [`compile`] builds tables from scratch. A [`Compiler`] also keeps the
//! index that lets [`Compiler::patch`] build the next generation in time
//! proportional to the change: the tables share everything unchanged.

mod chunked;
mod encode;
mod filter;
mod key;
mod subtable;
mod tables;

pub use chunked::Chunked;
pub use key::{
    FLAG_IP, FLAG_L4, FlowKey, MaskedKey, TUNNEL_PRESENT, VLAN_PRESENT, hash_words, portable_hash,
};
pub use subtable::Subtable;
pub use tables::*;

use crate::rule::{MeterUnit, Packed, Rule, RuleError, RuleSet};
use encode::{OptionPool, encode_action};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// Compiles a rule set, validating it first.
///
/// # Errors
/// [`RuleError`] for invalid input, or when the rules need more than
/// [`MAX_MASKS`] distinct masks (naming the first rule over the limit).
pub fn compile(set: &RuleSet) -> Result<CompiledTables, RuleError> {
    set.validate()?;
    let mut order: Vec<&Rule> = set.rules.iter().collect();
    order.sort_unstable_by_key(|r| core::cmp::Reverse(rank(r.priority, r.id)));
    let mut c = Compiler::empty(set);
    c.build(&order)?;
    Ok(c.tables)
}

#[derive(Default)]
struct MaskState {
    mask: FlowKey,
    /// Ranks of the rules with this mask (shadowed ones included).
    ranks: BTreeMap<u64, ()>,
}

/// The compiler with its index of what is installed, for incremental patches.
pub struct Compiler {
    /// Ports and meters (no rules): what rules are checked and encoded against.
    frame: RuleSet,
    /// Rule id -> slot.
    placed: FxHashMap<u32, u32>,
    /// The installed rules by slot, packed: a copy of the rule set costs
    /// a seventh of the rules themselves.
    sources: Vec<Option<Packed>>,
    masks: Vec<MaskState>,
    mask_ids: FxHashMap<FlowKey, u32>,
    /// Slots of rules hidden behind a better rule with the same mask and masked key.
    shadow: FxHashMap<(u32, FlowKey), Vec<u32>>,
    interned: FxHashMap<Vec<ActionRecord>, u32>,
    options: OptionPool,
    scratch: Vec<ActionRecord>,
    /// The last action list interned, and where.
    last_list: Option<(Vec<ActionRecord>, u32)>,
    /// Freed slots and the generation that freed them.
    free: VecDeque<(u64, u32)>,
    tables: CompiledTables,
}

/// The result of a patch.
pub struct Patched {
    /// The next generation's tables.
    pub tables: CompiledTables,
    /// Slots that now hold a rule they did not hold before: their counters start at zero.
    pub new_slots: Vec<u32>,
}

fn too_many_masks(rule: u32) -> RuleError {
    RuleError::Rule {
        rule,
        field: "match".into(),
        reason: format!(
            "this rule's combination of matched fields and masks would be one more than the {MAX_MASKS} distinct masks allowed"
        ),
    }
}

impl Compiler {
    /// Validates and compiles `set` from scratch, keeping its rules
    /// (packed).
    ///
    /// # Errors
    /// As [`compile`].
    pub fn new(set: &RuleSet) -> Result<Compiler, RuleError> {
        set.validate()?;
        let mut order: Vec<&Rule> = set.rules.iter().collect();
        order.sort_unstable_by_key(|r| core::cmp::Reverse(rank(r.priority, r.id)));
        let mut c = Compiler::empty(set);
        c.build(&order)?;
        c.sources = order.iter().map(|r| Some(Packed::new(r))).collect();
        Ok(c)
    }

    /// Installs `order` (validated, best first) into an empty compiler, rule i in slot i.
    fn build(&mut self, order: &[&Rule]) -> Result<(), RuleError> {
        if order.len() > MAX_RULES {
            return Err(RuleError::Document {
                field: "rules".into(),
                reason: format!("{} rules, at most {MAX_RULES}", order.len()),
            });
        }
        // Each rule's masked value, kept until the subtables are filled
        // (its mask only until its mask id is known: half the memory).
        let mut keys: Vec<FlowKey> = Vec::with_capacity(order.len());
        let mut counts: Vec<usize> = Vec::new();
        let mut mask_of = Vec::with_capacity(order.len());
        let mut last: Option<(FlowKey, u32)> = None;
        for r in order {
            let k = MaskedKey::from_match(&r.matches, &self.frame);
            keys.push(k.value);
            // Neighbouring rules usually share a mask: skip hashing it again.
            if let Some((mask, m)) = last
                && mask == k.mask
            {
                counts[m as usize] += 1;
                mask_of.push(m);
                continue;
            }
            let next = self.masks.len() as u32;
            let m = *self.mask_ids.entry(k.mask).or_insert(next);
            last = Some((k.mask, m));
            if m == next {
                if next as usize == MAX_MASKS {
                    return Err(too_many_masks(r.id));
                }
                self.masks.push(MaskState {
                    mask: k.mask,
                    ranks: BTreeMap::new(),
                });
                counts.push(0);
            }
            counts[m as usize] += 1;
            mask_of.push(m);
        }
        let mut subtables: Vec<Subtable> = self
            .masks
            .iter()
            .zip(&counts)
            .enumerate()
            .map(|(i, (m, n))| {
                let mut st = Subtable::new(m.mask, *n);
                st.id = i as u32;
                st
            })
            .collect();
        let mut ranks: Vec<Vec<u64>> = counts.iter().map(|n| Vec::with_capacity(*n)).collect();
        let mut members: Vec<Vec<(u32, u64)>> =
            counts.iter().map(|n| Vec::with_capacity(*n)).collect();
        self.placed.reserve(order.len());
        for (slot, r) in order.iter().enumerate() {
            let (m, slot) = (mask_of[slot], slot as u32);
            let record = self.record(r, None);
            self.tables.rules.push(record);
            let rk = rank(r.priority, r.id);
            ranks[m as usize].push(rk);
            members[m as usize].push((slot, rk));
            let st = &mut subtables[m as usize];
            st.best_rank = st.best_rank.max(rk);
            self.placed.insert(r.id, slot);
        }
        for (m, (st, members)) in subtables.iter_mut().zip(&members).enumerate() {
            // Rules come best first: the one already there wins.
            for hidden in st.insert_bulk(members, |s| &keys[s as usize]) {
                let key = (m as u32, keys[hidden as usize]);
                self.shadow.entry(key).or_default().push(hidden);
            }
        }
        for (state, mut list) in self.masks.iter_mut().zip(ranks) {
            list.reverse();
            // Sorted input: a bulk build.
            state.ranks = list.into_iter().map(|r| (r, ())).collect();
        }
        self.tables.subtables = subtables.into_iter().map(Arc::new).collect();
        self.tables.options = Arc::new(self.options.bytes.clone());
        Ok(())
    }

    fn empty(set: &RuleSet) -> Compiler {
        let mut ports = vec![PortRecord::default(); CompiledTables::port_slots()];
        for p in &set.ports {
            ports[usize::from(p.index)] = PortRecord {
                present: 1,
                default_drop: u8::from(p.default == crate::rule::DefaultAction::Drop),
            };
        }
        let meters = set
            .meters
            .iter()
            .map(|m| MeterRecord {
                rate: m.rate,
                burst: m.burst,
                bits: u8::from(m.unit == MeterUnit::Bps),
                pad: [0; 7],
            })
            .collect();
        Compiler {
            frame: RuleSet {
                ports: set.ports.clone(),
                meters: set.meters.clone(),
                rules: Vec::new(),
            },
            placed: FxHashMap::default(),
            sources: Vec::new(),
            masks: Vec::new(),
            mask_ids: FxHashMap::default(),
            shadow: FxHashMap::default(),
            interned: FxHashMap::default(),
            options: OptionPool::default(),
            scratch: Vec::new(),
            last_list: None,
            free: VecDeque::new(),
            tables: CompiledTables {
                rules: Chunked::default(),
                actions: Chunked::default(),
                options: Arc::new(Vec::new()),
                subtables: Vec::new(),
                ports: Arc::new(ports),
                port_names: Arc::new(
                    set.ports
                        .iter()
                        .map(|p| (p.name.clone(), p.index))
                        .collect(),
                ),
                meters: Arc::new(meters),
                meter_names: Arc::new(set.meters.iter().map(|m| m.name.clone()).collect()),
            },
        }
    }

    /// The rule's record, interning its action list. `set` supplies ports
    /// and meters (the compiler's own frame when `None`).
    fn record(&mut self, r: &Rule, set: Option<&RuleSet>) -> RuleRecord {
        let set = set.unwrap_or(&self.frame);
        let lookup = |name: &str| {
            set.meters
                .iter()
                .position(|m| m.name == name)
                .expect("validated meter") as u32
        };
        self.scratch.clear();
        for a in &r.actions {
            self.scratch
                .push(encode_action(a, set, &lookup, &mut self.options));
        }
        let n_actions = self.scratch.len() as u16;
        // Neighbouring rules often share an action list: skip hashing it again.
        let first = match &self.last_list {
            Some((list, first)) if *list == self.scratch => *first,
            _ => {
                let first = match self.interned.get(self.scratch.as_slice()) {
                    Some(&f) => f,
                    None => {
                        let f = self.tables.actions.len() as u32;
                        for a in &self.scratch {
                            self.tables.actions.push(*a);
                        }
                        self.interned.insert(self.scratch.clone(), f);
                        f
                    }
                };
                self.last_list = Some((self.scratch.clone(), first));
                first
            }
        };
        RuleRecord {
            id: r.id,
            priority: r.priority,
            first_action: first,
            n_actions,
            live: 1,
        }
    }

    /// The compiled tables of what is installed.
    pub fn tables(&self) -> &CompiledTables {
        &self.tables
    }

    /// The slot of rule `id`.
    pub fn slot_of(&self, id: u32) -> Option<u32> {
        self.placed.get(&id).copied()
    }

    /// Number of installed rules.
    pub fn len(&self) -> usize {
        self.placed.len()
    }

    /// Whether no rule is installed.
    pub fn is_empty(&self) -> bool {
        self.placed.is_empty()
    }

    /// The index of the installed port named `name`.
    pub fn port(&self, name: &str) -> Option<u16> {
        self.frame.port(name).map(|p| p.index)
    }

    /// The installed ports.
    pub fn ports(&self) -> &[crate::rule::PortDef] {
        &self.frame.ports
    }

    /// The installed rule set (rules in id order).
    pub fn rule_set(&self) -> RuleSet {
        let mut rules: Vec<Rule> = self.sources.iter().flatten().map(Packed::unpack).collect();
        rules.sort_unstable_by_key(|r| r.id);
        RuleSet {
            ports: self.frame.ports.clone(),
            meters: self.frame.meters.clone(),
            rules,
        }
    }

    /// Whether `set` has the same ports and meters as what is installed, so
    /// that it can be reached by a patch.
    pub fn same_frame(&self, set: &RuleSet) -> bool {
        set.ports == self.frame.ports && set.meters == self.frame.meters
    }

    /// How many rules a patch to `set` would add, replace or remove.
    pub fn change_size(&self, set: &RuleSet) -> usize {
        let mut kept = 0;
        let mut upserts = 0;
        for r in &set.rules {
            match self.placed.get(&r.id) {
                Some(&s) => {
                    kept += 1;
                    if !self.holds(s, r) {
                        upserts += 1;
                    }
                }
                None => upserts += 1,
            }
        }
        upserts + (self.placed.len() - kept)
    }

    /// Whether reaching `set` (same ports and meters) by a patch beats a
    /// fresh compile: it changes at most 1024 rules or a quarter of them.
    pub fn patch_is_small(&self, set: &RuleSet) -> bool {
        let n = self.change_size(set);
        n <= 1024 || n * 4 <= self.len()
    }

    /// The patch that turns what is installed into `set` (same ports and meters).
    pub fn diff(&self, set: &RuleSet) -> (Vec<Rule>, Vec<u32>) {
        let wanted: FxHashSet<u32> = set.rules.iter().map(|r| r.id).collect();
        let remove = self
            .placed
            .keys()
            .copied()
            .filter(|id| !wanted.contains(id))
            .collect();
        let upsert = set
            .rules
            .iter()
            .filter(|r| self.placed.get(&r.id).is_none_or(|&s| !self.holds(s, r)))
            .cloned()
            .collect();
        (upsert, remove)
    }

    /// Whether slot `slot` holds `rule`.
    fn holds(&self, slot: u32, rule: &Rule) -> bool {
        self.sources[slot as usize]
            .as_ref()
            .is_some_and(|p| p.is(rule))
    }

    fn key_of(&self, rule: &Rule) -> (u32, FlowKey) {
        let mk = MaskedKey::from_match(&rule.matches, &self.frame);
        (self.mask_ids[&mk.mask], mk.value)
    }

    /// Removes the rules `remove` and adds or replaces (by id) the rules in
    /// `upsert`, as generation `generation`. A slot freed by generation G is
    /// reused only once `min_active >= G`, that is once no packet processor
    /// still works under an older generation that counts into it.
    ///
    /// # Errors
    /// [`RuleError`] naming the rule and field; on error nothing changes.
    pub fn patch(
        &mut self,
        upsert: Vec<Rule>,
        remove: &[u32],
        generation: u64,
        min_active: u64,
    ) -> Result<Patched, RuleError> {
        let frame = RuleSet {
            ports: self.frame.ports.clone(),
            meters: self.frame.meters.clone(),
            rules: upsert,
        };
        frame.validate()?;
        for id in remove {
            if !self.placed.contains_key(id) {
                return Err(RuleError::Rule {
                    rule: *id,
                    field: "id".into(),
                    reason: "no rule with this id to remove".into(),
                });
            }
        }
        let keys: Vec<MaskedKey> = frame
            .rules
            .iter()
            .map(|r| MaskedKey::from_match(&r.matches, &frame))
            .collect();
        // Masks in use afterwards, and slots needed.
        let leaving: FxHashSet<u32> = remove
            .iter()
            .chain(frame.rules.iter().map(|r| &r.id))
            .filter(|id| self.placed.contains_key(id))
            .copied()
            .collect();
        let mut delta: FxHashMap<FlowKey, i64> = FxHashMap::default();
        for id in &leaving {
            let rule = self.sources[self.placed[id] as usize]
                .as_ref()
                .expect("placed rules have sources")
                .unpack();
            let (m, _) = self.key_of(&rule);
            *delta.entry(self.masks[m as usize].mask).or_default() -= 1;
        }
        let live = |m: &FlowKey, delta: &FxHashMap<FlowKey, i64>| {
            let now = self
                .mask_ids
                .get(m)
                .map_or(0, |&i| self.masks[i as usize].ranks.len() as i64);
            now + delta.get(m).copied().unwrap_or(0) > 0
        };
        let mut in_use: FxHashSet<FlowKey> = self
            .mask_ids
            .keys()
            .filter(|m| live(m, &delta))
            .copied()
            .collect();
        for (r, k) in frame.rules.iter().zip(&keys) {
            *delta.entry(k.mask).or_default() += 1;
            if in_use.insert(k.mask) && in_use.len() > MAX_MASKS {
                return Err(too_many_masks(r.id));
            }
        }
        if self.placed.len() - leaving.len() + frame.rules.len() > MAX_RULES {
            return Err(RuleError::Document {
                field: "rules".into(),
                reason: format!("more than {MAX_RULES} rules"),
            });
        }

        // Validated: from here on nothing fails.
        let mut touched: FxHashSet<u32> = FxHashSet::default();
        for id in leaving {
            touched.insert(self.unplace(id, generation));
        }
        let mut new_slots = Vec::with_capacity(frame.rules.len());
        for (r, k) in frame.rules.into_iter().zip(keys) {
            let slot = self.take_slot(min_active);
            let record = self.record(&r, None);
            if slot as usize == self.tables.rules.len() {
                self.tables.rules.push(record);
                self.sources.push(None);
            } else {
                self.tables.rules.set(slot as usize, record);
            }
            touched.insert(self.place(r, slot, k));
            new_slots.push(slot);
        }
        if self.tables.options.len() != self.options.bytes.len() {
            self.tables.options = Arc::new(self.options.bytes.clone());
        }
        self.refresh_subtables(&touched);
        Ok(Patched {
            tables: self.tables.clone(),
            new_slots,
        })
    }

    fn take_slot(&mut self, min_active: u64) -> u32 {
        match self.free.front() {
            Some(&(freed_by, slot)) if min_active >= freed_by => {
                self.free.pop_front();
                slot
            }
            _ => self.tables.rules.len() as u32,
        }
    }

    fn subtable_mut(&mut self, m: u32) -> &mut Subtable {
        let pos = match self.tables.subtables.iter().position(|s| s.id == m) {
            Some(pos) => pos,
            None => {
                let mut st = Subtable::new(self.masks[m as usize].mask, 0);
                st.id = m;
                self.tables.subtables.push(Arc::new(st));
                self.tables.subtables.len() - 1
            }
        };
        Arc::make_mut(&mut self.tables.subtables[pos])
    }

    fn place(&mut self, rule: Rule, slot: u32, k: MaskedKey) -> u32 {
        let next = self.masks.len() as u32;
        let m = *self.mask_ids.entry(k.mask).or_insert(next);
        if m == next {
            self.masks.push(MaskState {
                mask: k.mask,
                ranks: BTreeMap::new(),
            });
        }
        let rk = rank(rule.priority, rule.id);
        self.masks[m as usize].ranks.insert(rk, ());
        let st = self.subtable_mut(m);
        if let Err(holder) = st.insert(&k.value, slot, rk) {
            let holder_rank = self.tables.rules.get(holder as usize).rank();
            let hidden = if rk > holder_rank {
                self.subtable_mut(m).replace(&k.value, slot, rk);
                holder
            } else {
                slot
            };
            self.shadow.entry((m, k.value)).or_default().push(hidden);
        }
        self.placed.insert(rule.id, slot);
        self.sources[slot as usize] = Some(Packed::new(&rule));
        m
    }

    /// Takes rule `id` out; returns its mask.
    fn unplace(&mut self, id: u32, generation: u64) -> u32 {
        let slot = self.placed.remove(&id).expect("checked by the caller");
        let rule = self.sources[slot as usize]
            .take()
            .expect("placed rules have sources")
            .unpack();
        let (m, value) = self.key_of(&rule);
        self.masks[m as usize]
            .ranks
            .remove(&rank(rule.priority, rule.id));
        let key = (m, value);
        let in_table = self
            .tables
            .subtables
            .iter()
            .find(|s| s.id == m)
            .and_then(|s| s.lookup(&value))
            == Some(slot);
        if in_table {
            // Expose the best rule it was hiding, if any.
            let promoted = self.shadow.get_mut(&key).and_then(|hidden| {
                let rules = &self.tables.rules;
                let best =
                    (0..hidden.len()).max_by_key(|&i| rules.get(hidden[i] as usize).rank())?;
                Some(hidden.swap_remove(best))
            });
            let promoted = promoted.map(|s| (s, self.tables.rules.get(s as usize).rank()));
            let st = self.subtable_mut(m);
            match promoted {
                Some((s, rk)) => {
                    st.replace(&value, s, rk);
                }
                None => {
                    st.remove(&value);
                }
            }
        } else if let Some(hidden) = self.shadow.get_mut(&key) {
            hidden.retain(|&s| s != slot);
        }
        if self.shadow.get(&key).is_some_and(Vec::is_empty) {
            self.shadow.remove(&key);
        }
        self.tables.rules.set(slot as usize, RuleRecord::EMPTY);
        self.free.push_back((generation, slot));
        m
    }

    fn refresh_subtables(&mut self, touched: &FxHashSet<u32>) {
        for &m in touched {
            let best = self.masks[m as usize]
                .ranks
                .last_key_value()
                .map(|(r, _)| *r);
            match best {
                Some(b) => {
                    if let Some(pos) = self.tables.subtables.iter().position(|s| s.id == m)
                        && self.tables.subtables[pos].best_rank != b
                    {
                        Arc::make_mut(&mut self.tables.subtables[pos]).best_rank = b;
                    }
                }
                None => self.tables.subtables.retain(|s| s.id != m),
            }
        }
        self.tables
            .subtables
            .sort_by_key(|s| core::cmp::Reverse(s.best_rank));
    }
}
