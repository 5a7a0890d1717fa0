//! The reference pipeline: parse -> flow cache -> tuple-space search ->
//! actions -> verdict, executing [`CompiledTables`] exactly as every backend
//! must. It does no I/O and reads no clock: `now` is passed in.

mod actions;
mod cache;
mod counters;
mod installed;
mod meter;
mod parse;
mod search;

pub use actions::entropy_port;
pub use cache::{Cached, FlowCache, Hit};
pub use counters::{Count, Counter, DropReason, RuleCounter, Stats, StatsBlock};
pub use installed::{CounterBlock, Installed, counts_by_id};
pub use meter::Bucket;
pub use parse::{Layout, parse, parse_hashed, parse_into};
pub use search::{MAX_SEARCH_BATCH, SearchObserver, search, search_batch, search_observed};

use crate::compile::{CompiledTables, FlowKey, NO_RULE, TUNNEL_PRESENT, encap as enc, op};
use crate::frame::FrameBuf;
use crate::mem::prefetch;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What happens to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Send out of the port with this index.
    Output(u16),
    /// Hand to the host stack.
    Pass,
    /// Send back out of the port it came in on.
    Tx,
    /// Drop, for this reason.
    Drop(DropReason),
}

/// The per-worker state of the pipeline: its flow cache, its rule counters
/// and its statistics.
pub struct Pipeline {
    cache: FlowCache,
    counters: Arc<CounterBlock>,
    stats: Arc<StatsBlock>,
    /// The batch stages' per-packet state, kept between batches so that a
    /// batch does not clear kilobytes of arrays first.
    scratch: Option<Box<[Parsed; RING]>>,
}

/// Frames between two stages of the software-pipelined batch.
const STAGE_DISTANCE: usize = 6;

/// Per-frame state slots of the batch pipeline: more than the frames in
/// flight between its first and last stage.
const RING: usize = 32;
const _: () = assert!(RING > 2 * STAGE_DISTANCE);

/// A frame's parse and classification, between the batch stages.
#[derive(Clone, Copy, Default)]
struct Parsed {
    key: FlowKey,
    layout: Layout,
    hash: u64,
    ok: bool,
    probe: Option<(usize, u32)>,
    /// The search's result, when a batched search of a window of likely
    /// misses already ran for this frame.
    searched: Option<u32>,
    hit: Hit,
}

/// Default flow-cache entries per worker.
pub const DEFAULT_CACHE_ENTRIES: usize = 1 << 16;

/// Where a rule's actions left a frame.
pub(crate) enum Step {
    /// With this verdict.
    Done(Verdict),
    /// Decapsulated, with this VNI: to be classified again.
    Recirculate(u32),
}

impl Pipeline {
    /// A pipeline with a flow cache of `cache_entries`.
    pub fn new(cache_entries: usize) -> Pipeline {
        Pipeline {
            scratch: Some(Box::new([Parsed::default(); RING])),
            cache: FlowCache::new(cache_entries),
            counters: Arc::new(CounterBlock::new()),
            stats: Arc::new(StatsBlock::default()),
        }
    }

    /// This pipeline's statistics.
    pub fn stats(&self) -> &Arc<StatsBlock> {
        &self.stats
    }

    /// This pipeline's rule counters.
    pub fn counters(&self) -> &Arc<CounterBlock> {
        &self.counters
    }

    /// This pipeline's counters of the rules in `inst`, by rule id.
    pub fn counts(&self, inst: &Installed) -> BTreeMap<u32, Count> {
        counts_by_id(&inst.tables, [&*self.counters])
    }

    /// The flow cache.
    pub fn cache(&self) -> &FlowCache {
        &self.cache
    }

    /// What this pipeline's flow cache holds for `key` under `inst`, read
    /// without touching it; a hit names its rule.
    pub fn peek(&self, inst: &Installed, key: &FlowKey) -> Cached {
        match self.cache.peek(key, key.hash(), inst.epoch) {
            Cached::Hit { slot, .. } => match inst.tables.rules.try_get(slot as usize) {
                Some(r) if r.live != 0 => Cached::Hit { slot, rule: r.id },
                // A slot the tables no longer hold under this epoch cannot
                // be cached; said as what the next frame meets.
                _ => Cached::Miss,
            },
            other => other,
        }
    }

    /// Classifies `key` under `inst`: the cache, else the tuple-space search.
    #[inline]
    pub fn classify(&mut self, inst: &Installed, key: &FlowKey, hash: u64) -> Hit {
        let cached = self.cache.lookup(key, hash, inst.epoch);
        self.resolve(inst, key, hash, cached)
    }

    #[inline(always)]
    fn resolve(&mut self, inst: &Installed, key: &FlowKey, hash: u64, cached: Option<Hit>) -> Hit {
        match cached {
            Some(hit) => {
                self.stats.cache_hits.add(1);
                hit
            }
            None => self.miss(inst, key, hash),
        }
    }

    /// The tuple-space search after a cache miss, and the cache fill. Kept
    /// out of line so that the hit path stays small.
    #[cold]
    #[inline(never)]
    fn miss(&mut self, inst: &Installed, key: &FlowKey, hash: u64) -> Hit {
        let slot = search(&inst.tables, key);
        self.fill(inst, key, hash, slot)
    }

    /// Counts a cache miss whose search found `slot`, and caches the result.
    fn fill(&mut self, inst: &Installed, key: &FlowKey, hash: u64, slot: u32) -> Hit {
        self.stats.cache_misses.add(1);
        let hit = match inst.tables.rules.try_get(slot as usize) {
            Some(r) => {
                let first = inst.tables.actions.get(r.first_action as usize);
                Hit::new(slot, r.n_actions, first.op, first.arg16)
            }
            None => Hit::MISS,
        };
        self.cache.insert(key, hash, inst.epoch, hit);
        hit
    }

    /// Processes one frame that arrived on port `in_port` at `now_ns`,
    /// rewriting it in place, and returns its verdict.
    pub fn process<F: FrameBuf>(
        &mut self,
        inst: &Installed,
        frame: &mut F,
        in_port: u16,
        now_ns: u64,
    ) -> Verdict {
        self.stats.rx_packets.add(1);
        self.stats.rx_bytes.add(frame.len() as u64);
        let verdict = match self.parse_and_classify(inst, frame, in_port, 0) {
            Some(p) => self.finish(inst, frame, in_port, now_ns, &p),
            None => Verdict::Drop(DropReason::Malformed),
        };
        let mut tally = Tally::default();
        tally.count(verdict);
        tally.add_to(&self.stats);
        verdict
    }

    /// Processes a batch from one port, with the same result as
    /// [`Pipeline::process`] on each frame in turn. Verdicts are appended
    /// to `verdicts`.
    ///
    /// The cache lookups are software-pipelined: each step parses and
    /// hashes one frame and prefetches its cache set's head line, probes
    /// the head of the frame [`STAGE_DISTANCE`] behind it and prefetches
    /// the matching key line and the rule's counter, and finishes the frame
    /// twice that distance behind (compare the key, count, act). A steady
    /// number of cache misses is thus in flight while other frames compute,
    /// rather than a burst per stage that overflows the CPU's miss buffers.
    pub fn process_batch<F: FrameBuf>(
        &mut self,
        inst: &Installed,
        frames: &mut [F],
        in_port: u16,
        now_ns: u64,
        verdicts: &mut Vec<Verdict>,
    ) {
        const D: usize = STAGE_DISTANCE;
        // Taken out for the batch (so `finish` can borrow `self`), never reallocated.
        let mut ring = self
            .scratch
            .take()
            .expect("the scratch is put back after every batch");
        let n = frames.len();
        let mut rx_bytes = 0;
        let mut tally = Tally::default();
        verdicts.reserve(n);
        for step in 0..n + 2 * D {
            if let Some(f) = frames.get(step) {
                if let Some(ahead) = frames.get(step + D) {
                    // Frames arrive from another core: start loading their headers early.
                    prefetch(ahead.data().as_ptr());
                }
                rx_bytes += f.len() as u64;
                let p = &mut ring[step % RING];
                match parse_hashed(f.data(), in_port, 0, &mut p.key, &mut p.layout) {
                    Ok(hash) => {
                        p.ok = true;
                        p.hash = hash;
                        p.searched = None;
                        self.cache.prefetch_tags(hash);
                    }
                    Err(_) => p.ok = false,
                }
            }
            if let Some(i) = step.checked_sub(D).filter(|&i| i < n) {
                let p = &mut ring[i % RING];
                if p.ok {
                    p.probe = self.cache.probe(p.hash);
                    if let Some(c) = p
                        .probe
                        .and_then(|(_, slot)| self.counters.counters.get(slot as usize))
                    {
                        // The rule the cache will most likely name.
                        prefetch(c);
                    }
                }
            }
            if let Some(i) = step.checked_sub(2 * D).filter(|&i| i < n) {
                let v = if ring[i % RING].ok {
                    let p = &ring[i % RING];
                    let hit = match self
                        .cache
                        .lookup_probed(p.probe, &p.key, p.hash, inst.epoch)
                    {
                        Some(hit) => {
                            tally.cache_hits += 1;
                            hit
                        }
                        None => {
                            let slot = match p.searched {
                                Some(slot) => slot,
                                None => {
                                    search_window(&inst.tables, &mut ring, i, (step - D).min(n - 1))
                                }
                            };
                            let p = &ring[i % RING];
                            self.fill(inst, &p.key, p.hash, slot)
                        }
                    };
                    let p = &mut ring[i % RING];
                    p.hit = hit;
                    self.finish(inst, &mut frames[i], in_port, now_ns, p)
                } else {
                    Verdict::Drop(DropReason::Malformed)
                };
                tally.count(v);
                verdicts.push(v);
            }
        }
        self.stats.rx_packets.add(n as u64);
        self.stats.rx_bytes.add(rx_bytes);
        tally.add_to(&self.stats);
        self.scratch = Some(ring);
    }

    /// Parses one frame and classifies it (the cache, else the search);
    /// `None` if it is malformed.
    fn parse_and_classify<F: FrameBuf>(
        &mut self,
        inst: &Installed,
        frame: &F,
        in_port: u16,
        tun_id: u32,
    ) -> Option<Parsed> {
        let mut p = Parsed::default();
        p.hash = parse_hashed(frame.data(), in_port, tun_id, &mut p.key, &mut p.layout).ok()?;
        p.ok = true;
        p.hit = self.classify(inst, &p.key, p.hash);
        Some(p)
    }

    /// Everything after the first classification: count, run the actions,
    /// and on `decap` classify the inner frame once more.
    #[inline(always)]
    fn finish<F: FrameBuf>(
        &mut self,
        inst: &Installed,
        frame: &mut F,
        in_port: u16,
        now_ns: u64,
        first: &Parsed,
    ) -> Verdict {
        match self.apply(inst, frame, in_port, now_ns, first) {
            Step::Done(v) => v,
            Step::Recirculate(vni) => self.recirculate(inst, frame, in_port, now_ns, vni),
        }
    }

    /// Counts the packet against its rule and runs the rule's actions (or
    /// the port's miss action when no rule matched).
    #[inline(always)]
    fn apply<F: FrameBuf>(
        &mut self,
        inst: &Installed,
        frame: &mut F,
        in_port: u16,
        now_ns: u64,
        p: &Parsed,
    ) -> Step {
        if p.hit.slot == NO_RULE {
            return Step::Done(if inst.tables.miss_drops(in_port) {
                Verdict::Drop(DropReason::Miss)
            } else {
                Verdict::Pass
            });
        }
        let c = self.counters.slot(p.hit.slot);
        c.packets.add(1);
        c.bytes.add(frame.len() as u64);
        if let Some((op, port)) = p.hit.inline() {
            // Most rules only forward or drop: no action record, no action loop.
            return Step::Done(terminal(op, port).expect("only terminal actions are inline"));
        }
        run_actions(inst, p.hit.slot, frame, p.layout, &p.key, now_ns, &mut ())
    }

    /// The decapsulated inner frame's classification and actions; a second
    /// decap drops.
    #[cold]
    #[inline(never)]
    fn recirculate<F: FrameBuf>(
        &mut self,
        inst: &Installed,
        frame: &mut F,
        in_port: u16,
        now_ns: u64,
        vni: u32,
    ) -> Verdict {
        let Some(inner) = self.parse_and_classify(inst, frame, in_port, TUNNEL_PRESENT | vni)
        else {
            return Verdict::Drop(DropReason::Malformed);
        };
        match self.apply(inst, frame, in_port, now_ns, &inner) {
            Step::Done(v) => v,
            Step::Recirculate(_) => Verdict::Drop(DropReason::Recirculation),
        }
    }
}

/// Searches, in one batch, frame `i` (a cache miss) and every frame up to
/// `last` that was probed and found no tag in the cache (a likely miss),
/// recording each result in its `searched`; returns frame `i`'s. The
/// search is pure, so a frame that turns out to hit the cache (an earlier
/// frame of its flow filled it) just leaves its result unused.
#[cold]
#[inline(never)]
fn search_window(tables: &CompiledTables, ring: &mut [Parsed; RING], i: usize, last: usize) -> u32 {
    let mut which = [0usize; RING];
    let mut found = [NO_RULE; RING];
    let mut n = 0;
    {
        let mut keys: [&FlowKey; RING] = [&ring[0].key; RING];
        for j in i..=last {
            let p = &ring[j % RING];
            if j == i || (p.ok && p.probe.is_none() && p.searched.is_none()) {
                (which[n], keys[n]) = (j, &p.key);
                n += 1;
            }
        }
        search_batch(tables, &keys[..n], &mut found[..n]);
    }
    for (&j, &slot) in which[..n].iter().zip(&found[..n]) {
        ring[j % RING].searched = Some(slot);
    }
    found[0]
}

/// The verdict statistics of a batch (or of one frame), kept in registers
/// and added to the shared block at once.
#[derive(Default)]
struct Tally {
    cache_hits: u64,
    output: u64,
    pass: u64,
    tx: u64,
    drops: [u64; DropReason::ALL.len()],
}

impl Tally {
    #[inline(always)]
    fn count(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Output(_) => self.output += 1,
            Verdict::Pass => self.pass += 1,
            Verdict::Tx => self.tx += 1,
            Verdict::Drop(r) => self.drops[r as usize] += 1,
        }
    }

    /// Adds the tally to `stats`, the verdicts last and with release
    /// ordering (see [`StatsBlock::processed`]).
    fn add_to(&self, stats: &StatsBlock) {
        stats.cache_hits.add(self.cache_hits);
        for (c, &n) in stats.drops.iter().zip(&self.drops) {
            if n != 0 {
                c.add_release(n);
            }
        }
        stats.output.add_release(self.output);
        stats.pass.add_release(self.pass);
        stats.tx.add_release(self.tx);
    }
}

/// The verdict of a terminal action, `None` for any other.
#[inline(always)]
fn terminal(opcode: u8, port: u16) -> Option<Verdict> {
    match opcode {
        op::OUTPUT => Some(Verdict::Output(port)),
        op::DROP => Some(Verdict::Drop(DropReason::Rule)),
        op::PASS => Some(Verdict::Pass),
        op::TX => Some(Verdict::Tx),
        _ => None,
    }
}

/// What the actions did, one by one (for `dse trace`); `()` watches
/// nothing and costs nothing.
pub(crate) trait ActionObserver {
    /// Action `index` of the rule ran and left `frame`.
    fn ran(&mut self, index: usize, frame: &[u8]);
}

impl ActionObserver for () {
    #[inline(always)]
    fn ran(&mut self, _: usize, _: &[u8]) {}
}

/// Runs the actions of the rule in `slot` on `frame`, telling `observer`
/// of each that does not end them.
pub(crate) fn run_actions<F: FrameBuf>(
    inst: &Installed,
    slot: u32,
    frame: &mut F,
    mut layout: Layout,
    key: &FlowKey,
    now_ns: u64,
    observer: &mut impl ActionObserver,
) -> Step {
    let tables = &inst.tables;
    let rule = tables.rules.get(slot as usize);
    let first = rule.first_action as usize;
    for i in first..first + usize::from(rule.n_actions) {
        let a = tables.actions.get(i);
        match a.op {
            op::SET_ETH_SRC => frame.data_mut()[6..12].copy_from_slice(&a.data[..6]),
            op::SET_ETH_DST => frame.data_mut()[0..6].copy_from_slice(&a.data[..6]),
            op::SET_IP_SRC => actions::set_ip(frame, &layout, a, true),
            op::SET_IP_DST => actions::set_ip(frame, &layout, a, false),
            op::SET_L4_SRC => actions::set_l4(frame, &layout, a.arg16, true),
            op::SET_L4_DST => actions::set_l4(frame, &layout, a.arg16, false),
            op::PUSH_VLAN | op::POP_VLAN | op::ENCAP_VXLAN | op::ENCAP_GENEVE => {
                let room = match a.op {
                    op::PUSH_VLAN => actions::push_vlan(frame, a.arg16, a.arg32 as u16),
                    op::POP_VLAN => {
                        actions::pop_vlan(frame);
                        true
                    }
                    _ => {
                        let off =
                            u32::from_le_bytes(a.data[enc::OPT_OFF].try_into().expect("4 bytes"))
                                as usize;
                        let len = usize::from(u16::from_le_bytes(
                            a.data[enc::OPT_LEN].try_into().expect("2 bytes"),
                        ));
                        actions::encap(
                            frame,
                            a,
                            key,
                            &tables.options[off..off + len],
                            a.op == op::ENCAP_GENEVE,
                        )
                    }
                };
                if !room {
                    // As the XDP datapath drops a frame bpf_xdp_adjust_head fails on.
                    return Step::Done(Verdict::Drop(DropReason::Malformed));
                }
                // The frame was valid and only gained or lost whole headers.
                layout = actions::relayout(frame, key).unwrap_or_default();
            }
            op::DECAP => {
                return match actions::decap(frame, &layout) {
                    Some(vni) => Step::Recirculate(vni),
                    None => Step::Done(Verdict::Drop(DropReason::Tunnel)),
                };
            }
            op::METER => {
                let i = a.arg32 as usize;
                let cfg = &tables.meters[i];
                let ok = inst.meters[i]
                    .lock()
                    .expect("meter lock is never poisoned")
                    .admit(cfg, frame.len(), now_ns);
                if !ok {
                    return Step::Done(Verdict::Drop(DropReason::Meter));
                }
            }
            op::OUTPUT | op::DROP | op::PASS | op::TX => {
                return Step::Done(terminal(a.op, a.arg16).expect("a terminal opcode"));
            }
            other => unreachable!("compiler emitted unknown opcode {other}"),
        }
        observer.ran(i - first, frame.data());
    }
    unreachable!("validation guarantees every action list ends with a terminal action")
}
