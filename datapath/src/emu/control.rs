//! The control side of the emulated backend: transactions, lifecycle,
//! counters and the in-memory ports.

use super::{Egress, EmuConfig, InjectError, worker};
use crate::compile::{Compiler, FlowKey, MAX_MASKS, hash_words};
use crate::datapath::{Capabilities, Datapath, DatapathError, LifecycleState, Transaction};
use crate::frame::Frame;
use crate::pipeline::{
    Bucket, Cached, Count, Counter, CounterBlock, Installed, Pipeline, Stats, StatsBlock,
    counts_by_id, parse,
};
use crate::rule::{MAX_PORTS, RuleSet};
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use crossbeam::queue::ArrayQueue;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

/// A worker's published state: the generation it processes, or one of these.
pub(super) const IDLE: u64 = u64::MAX;
/// Parked by a pause.
pub(super) const PARKED: u64 = u64::MAX - 1;
/// About to load a generation (treated as "any").
pub(super) const LOADING: u64 = 0;

pub(super) struct Shared {
    pub(super) config: EmuConfig,
    pub(super) current: ArcSwap<Installed>,
    pub(super) rx: Vec<ArrayQueue<(u16, Frame)>>,
    /// Per worker, per port index: frames sent out of that port. Each
    /// worker has its own queues (no producer contention); a queue is made
    /// on first use.
    pub(super) out: Vec<Vec<OnceLock<ArrayQueue<Egress>>>>,
    /// Per worker: frames handed to the host stack.
    pub(super) host: Vec<ArrayQueue<Egress>>,
    /// Where the next `recv` starts looking, for fairness between workers.
    next_worker: AtomicUsize,
    pub(super) overflow: Vec<Counter>,
    pub(super) stop: AtomicBool,
    /// Workers park at their next batch while set.
    pub(super) pause: AtomicBool,
    /// Per worker: the generation it is processing, [`IDLE`], [`PARKED`] or [`LOADING`].
    pub(super) active: Vec<AtomicU64>,
    /// A reading of the workers' flow caches, answered by each parked worker.
    pub(super) peek: Mutex<PeekAsk>,
    /// Moved on for each reading: a parked worker answers when it differs
    /// from the last it answered.
    pub(super) peek_seq: AtomicU64,
    clock: Instant,
}

/// A reading of the workers' flow caches: the key, and each worker's answer.
#[derive(Default)]
pub(super) struct PeekAsk {
    pub(super) key: FlowKey,
    pub(super) answers: Vec<Option<Cached>>,
}

impl Shared {
    /// Worker `worker`'s output queue for port index `port`.
    pub(super) fn out_queue(&self, worker: usize, port: u16) -> &ArrayQueue<Egress> {
        self.out[worker][usize::from(port)].get_or_init(|| ArrayQueue::new(self.config.queue_depth))
    }

    fn pop_any(&self, mut pop: impl FnMut(usize) -> Option<Egress>) -> Option<Egress> {
        let n = self.rx.len();
        let start = self.next_worker.fetch_add(1, Ordering::Relaxed);
        (0..n).find_map(|i| pop((start + i) % n))
    }

    pub(super) fn now_ns(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    /// The oldest generation any worker may still be counting under.
    fn min_active(&self) -> u64 {
        self.active
            .iter()
            .map(|a| a.load(Ordering::SeqCst))
            .map(|g| if g == PARKED { IDLE } else { g })
            .min()
            .unwrap_or(IDLE)
    }
}

struct Control {
    state: LifecycleState,
    compiler: Compiler,
    /// The desired generation in force (the control plane's number).
    desired: u64,
    /// Rule sets installed since the start.
    installs: u64,
}

/// The emulated datapath. Dropping it stops and joins its workers.
pub struct EmuDatapath {
    shared: Arc<Shared>,
    control: Mutex<Control>,
    stats: Vec<Arc<StatsBlock>>,
    counters: Vec<Arc<CounterBlock>>,
    threads: Vec<JoinHandle<()>>,
}

impl EmuDatapath {
    /// Compiles `rules` as generation 1 and starts the workers on the
    /// in-memory queues.
    ///
    /// # Errors
    /// [`DatapathError::Rules`] if the rules do not compile.
    pub fn start(rules: RuleSet, config: EmuConfig) -> Result<EmuDatapath, DatapathError> {
        Self::start_with(rules, config, |shared, i| {
            worker::QueueIo::new(Arc::clone(shared), i)
        })
    }

    /// As [`EmuDatapath::start`], with worker `i`'s frames coming and
    /// going through `io(shared, i)`.
    pub(super) fn start_with<I: worker::WorkerIo>(
        rules: RuleSet,
        config: EmuConfig,
        mut io: impl FnMut(&Arc<Shared>, usize) -> I,
    ) -> Result<EmuDatapath, DatapathError> {
        let config = EmuConfig {
            workers: config.workers.max(1),
            batch: config.batch.max(1),
            ..config
        };
        let compiler = Compiler::new(&rules)?;
        let installed = Installed::new(1, compiler.tables().clone(), None);
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(installed),
            rx: (0..config.workers)
                .map(|_| ArrayQueue::new(config.queue_depth))
                .collect(),
            out: (0..config.workers)
                .map(|_| (0..MAX_PORTS).map(|_| OnceLock::new()).collect())
                .collect(),
            host: (0..config.workers)
                .map(|_| ArrayQueue::new(config.queue_depth))
                .collect(),
            next_worker: AtomicUsize::new(0),
            overflow: (0..config.workers).map(|_| Counter::default()).collect(),
            stop: AtomicBool::new(false),
            pause: AtomicBool::new(false),
            active: (0..config.workers).map(|_| AtomicU64::new(IDLE)).collect(),
            peek: Mutex::default(),
            peek_seq: AtomicU64::new(0),
            clock: Instant::now(),
            config,
        });
        let mut stats = Vec::new();
        let mut counters = Vec::new();
        let mut threads = Vec::new();
        for i in 0..shared.config.workers {
            let pipeline = Pipeline::new(shared.config.cache_entries);
            stats.push(Arc::clone(pipeline.stats()));
            counters.push(Arc::clone(pipeline.counters()));
            let s = Arc::clone(&shared);
            let io = io(&shared, i);
            let t = std::thread::Builder::new()
                .name(format!("dse-emu-{i}"))
                .spawn(move || worker::run(&s, i, pipeline, io))
                .map_err(|source| DatapathError::Io {
                    what: format!("spawning worker {i}"),
                    source,
                })?;
            threads.push(t);
        }
        let control = Mutex::new(Control {
            state: LifecycleState::Running,
            compiler,
            desired: 1,
            installs: 1,
        });
        Ok(EmuDatapath {
            shared,
            control,
            stats,
            counters,
            threads,
        })
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        self.control
            .lock()
            .expect("control lock is never poisoned: no code panics while holding it")
    }

    /// Runs `f` with every worker parked between batches (frames wait in
    /// their queues; none is lost), for changes that renumber rule slots.
    fn paused<T>(&self, f: impl FnOnce() -> T) -> T {
        let held = self.shared.pause.swap(true, Ordering::SeqCst);
        self.wait_parked();
        let out = f();
        self.shared.pause.store(held, Ordering::SeqCst);
        out
    }

    /// What each worker's flow cache holds for `key`, in worker order: the
    /// workers park between batches while each reads its own (frames wait
    /// in their queues; none is lost), then go on.
    fn worker_caches(&self, key: &FlowKey) -> Vec<Cached> {
        // One reading at a time, and no transaction beside it.
        let _control = self.control();
        let ask = || {
            self.shared
                .peek
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        self.paused(|| {
            *ask() = PeekAsk {
                key: *key,
                answers: vec![None; self.threads.len()],
            };
            self.shared.peek_seq.fetch_add(1, Ordering::SeqCst);
            loop {
                if let Some(all) = ask().answers.iter().copied().collect::<Option<Vec<_>>>() {
                    return all;
                }
                // A worker waiting for frames is woken to answer.
                for t in &self.threads {
                    t.thread().unpark();
                }
                std::thread::yield_now();
            }
        })
    }

    /// Parks every worker between batches until [`EmuDatapath::release`];
    /// frames queue up meanwhile. Benchmarks use it to fill the queues first.
    pub fn hold(&self) {
        self.shared.pause.store(true, Ordering::SeqCst);
        self.wait_parked();
    }

    /// Lets the workers go on after [`EmuDatapath::hold`].
    pub fn release(&self) {
        self.shared.pause.store(false, Ordering::SeqCst);
        for t in &self.threads {
            t.thread().unpark();
        }
    }

    fn wait_parked(&self) {
        for (i, a) in self.shared.active.iter().enumerate() {
            while !matches!(a.load(Ordering::SeqCst), IDLE | PARKED) {
                self.threads[i].thread().unpark();
                std::thread::yield_now();
            }
        }
    }

    /// Replaces everything (new slots): workers are parked, counters move by rule id.
    fn rebuild(
        &self,
        c: &mut Control,
        compiler: Compiler,
        generation: u64,
        counts: Option<&BTreeMap<u32, Count>>,
        buckets: Option<(&BTreeMap<String, Bucket>, u64)>,
    ) {
        self.paused(|| {
            let current = self.shared.current.load_full();
            // With the workers parked, the counts read here are final.
            let live;
            let counts = match counts {
                Some(c) => c,
                None => {
                    live = counts_by_id(&current.tables, self.counters.iter().map(|b| &**b));
                    &live
                }
            };
            let next = Installed::new(generation, compiler.tables().clone(), Some(&current));
            for (slot, r) in next.tables.live_rules() {
                let carried = counts.get(&r.id).copied().unwrap_or_default();
                for (w, block) in self.counters.iter().enumerate() {
                    let value = if w == 0 { carried } else { Count::default() };
                    // Reading first leaves never-used slots on the shared zero page.
                    if block.get(slot) != value {
                        block.set(slot, value);
                    }
                }
            }
            if let Some((buckets, clock_ns)) = buckets {
                let now = self.shared.now_ns();
                for (name, b) in buckets {
                    // Rebase the bucket's refill time from the snapshot's clock to ours.
                    let age = clock_ns.saturating_sub(b.last_ns);
                    next.set_bucket(
                        name,
                        Bucket {
                            nano_tokens: b.nano_tokens,
                            last_ns: now.saturating_sub(age),
                        },
                    );
                }
            }
            self.shared.current.store(Arc::new(next));
            c.compiler = compiler;
        });
    }

    /// Which worker a frame goes to: a hash of its flow key, so that one
    /// flow always lands on the same worker and stays in order.
    pub fn worker_for(&self, frame: &[u8], in_port: u16) -> usize {
        match parse(frame, in_port, 0) {
            Ok((k, _)) => {
                let w = k.words();
                // IP addresses, protocol and ports: the RSS 5-tuple.
                (hash_words(&[w[0], w[1], w[2], w[3], w[6]]) % self.shared.rx.len() as u64) as usize
            }
            Err(_) => 0,
        }
    }

    /// Queues `frame` as arriving on port index `in_port`.
    ///
    /// # Errors
    /// [`InjectError::Full`] if that worker's queue is full (the frame is
    /// dropped; [`EmuDatapath::inject_blocking`] waits instead), or
    /// [`InjectError::UnknownPort`].
    pub fn inject(&self, in_port: u16, frame: Frame) -> Result<(), InjectError> {
        self.try_push(in_port, frame).map_err(|(e, _)| e)
    }

    /// Queues `frame`, waiting while the worker's queue is full.
    ///
    /// # Errors
    /// [`InjectError::UnknownPort`].
    pub fn inject_blocking(&self, in_port: u16, mut frame: Frame) -> Result<(), InjectError> {
        loop {
            match self.try_push(in_port, frame) {
                Err((InjectError::Full { .. }, back)) => {
                    frame = back;
                    std::thread::yield_now();
                }
                other => return other.map_err(|(e, _)| e),
            }
        }
    }

    /// Pushes onto the input queue of the frame's worker and wakes it; on
    /// failure, hands the frame back.
    fn try_push(&self, in_port: u16, frame: Frame) -> Result<(), (InjectError, Frame)> {
        if in_port >= MAX_PORTS
            || self.shared.current.load().tables.ports[usize::from(in_port)].present == 0
        {
            return Err((InjectError::UnknownPort(in_port), frame));
        }
        let worker = self.worker_for(frame.data(), in_port);
        let pushed = self.shared.rx[worker].push((in_port, frame));
        self.threads[worker].thread().unpark();
        pushed.map_err(|(_, frame)| (InjectError::Full { worker }, frame))
    }

    /// Takes the next frame sent out of port index `port`.
    pub fn recv(&self, port: u16) -> Option<Egress> {
        if port >= MAX_PORTS {
            return None;
        }
        self.shared
            .pop_any(|w| self.shared.out[w][usize::from(port)].get()?.pop())
    }

    /// Takes the next frame handed to the host stack.
    pub fn recv_host(&self) -> Option<Egress> {
        self.shared.pop_any(|w| self.shared.host[w].pop())
    }

    /// Packets whose processing has finished (every verdict), cheaply: the
    /// same number as [`Stats::processed`].
    pub fn processed(&self) -> u64 {
        self.stats.iter().map(|s| s.processed()).sum()
    }

    /// Frames lost because an output queue was full.
    pub fn output_overflows(&self) -> u64 {
        self.shared.overflow.iter().map(Counter::get).sum()
    }

    /// Whether every worker input queue is empty.
    pub fn idle(&self) -> bool {
        self.shared.rx.iter().all(ArrayQueue::is_empty)
    }

    /// Port index of the port named `name` in the rules in force.
    pub fn port_index(&self, name: &str) -> Option<u16> {
        self.control().compiler.port(name)
    }

    /// Counters by rule id. Takes the control guard so that no rebuild
    /// renumbers the slots while they are read.
    fn rule_counters_of(&self, _held: &Control) -> BTreeMap<u32, Count> {
        let current = self.shared.current.load_full();
        counts_by_id(&current.tables, self.counters.iter().map(|b| &**b))
    }

    fn patch(
        &self,
        c: &mut Control,
        upsert: Vec<crate::rule::Rule>,
        remove: &[u32],
    ) -> Result<(), DatapathError> {
        let generation = self.shared.current.load().generation + 1;
        // A rule replaced by id takes a new slot and keeps its counts.
        let leaving: Vec<(u32, u32)> = upsert
            .iter()
            .filter_map(|r| Some((r.id, c.compiler.slot_of(r.id)?)))
            .collect();
        let patched = c
            .compiler
            .patch(upsert, remove, generation, self.shared.min_active())?;
        // New slots start at zero; no worker counts into them until the new generation is published.
        for slot in &patched.new_slots {
            for block in &self.counters {
                if block.get(*slot) != Count::default() {
                    block.set(*slot, Count::default());
                }
            }
        }
        let publish = || {
            let current = self.shared.current.load_full();
            self.shared.current.store(Arc::new(Installed::new(
                generation,
                patched.tables,
                Some(&current),
            )));
        };
        if leaving.is_empty() {
            publish();
            return Ok(());
        }
        // With the workers parked, the old slots' counts are final and the
        // new ones are written by nobody else.
        let moves: Vec<(u32, u32)> = leaving
            .into_iter()
            .filter_map(|(id, old)| Some((old, c.compiler.slot_of(id)?)))
            .collect();
        self.paused(|| {
            for block in &self.counters {
                for &(from, to) in &moves {
                    block.set(to, block.get(from));
                }
            }
            publish();
        });
        Ok(())
    }
}

impl Datapath for EmuDatapath {
    fn cached(&self, key: &FlowKey) -> Result<Vec<Cached>, DatapathError> {
        Ok(self.worker_caches(key))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: "emu".into(),
            max_masks: MAX_MASKS,
            max_ports: MAX_PORTS,
            workers: self.shared.config.workers,
            hitless_upgrade: true,
        }
    }

    fn apply_as(&self, txn: Transaction, generation: u64) -> Result<(), DatapathError> {
        let mut c = self.control();
        c.state.require(
            LifecycleState::Running,
            "apply",
            "resume the datapath first",
        )?;
        match txn {
            Transaction::Patch { upsert, remove } => self.patch(&mut c, upsert, &remove)?,
            // A small change to the same ports and meters: patch, so that
            // unchanged rules keep their slots and workers never pause.
            Transaction::Replace(set)
                if c.compiler.same_frame(&set) && c.compiler.patch_is_small(&set) =>
            {
                set.validate()?;
                let (upsert, remove) = c.compiler.diff(&set);
                self.patch(&mut c, upsert, &remove)?
            }
            // Otherwise a rebuild is faster; counters move by rule id.
            Transaction::Replace(set) => {
                let compiler = Compiler::new(&set)?;
                let next = self.shared.current.load().generation + 1;
                self.rebuild(&mut c, compiler, next, None, None);
            }
        }
        c.desired = generation;
        c.installs += 1;
        Ok(())
    }

    fn generation(&self) -> u64 {
        self.control().desired
    }

    fn set_generation(&self, generation: u64) -> Result<(), DatapathError> {
        self.control().desired = generation;
        Ok(())
    }

    fn installs(&self) -> u64 {
        self.control().installs
    }

    fn rules(&self) -> RuleSet {
        self.control().compiler.rule_set()
    }

    fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for b in &self.stats {
            b.add_to(&mut s);
        }
        s
    }

    fn rule_counters(&self) -> BTreeMap<u32, Count> {
        let c = self.control();
        self.rule_counters_of(&c)
    }

    fn state(&self) -> LifecycleState {
        self.control().state
    }

    fn quiesce(&self) -> Result<(), DatapathError> {
        self.control().state = LifecycleState::Quiesced;
        Ok(())
    }

    fn snapshot(&self) -> Result<Snapshot, DatapathError> {
        let c = self.control();
        c.state.require(
            LifecycleState::Quiesced,
            "snapshot",
            "quiesce the datapath first",
        )?;
        let current = self.shared.current.load_full();
        Ok(Snapshot {
            backend: "emu".into(),
            generation: c.desired,
            rules: c.compiler.rule_set(),
            counters: self.rule_counters_of(&c),
            meters: current.buckets().into_iter().collect(),
            clock_ns: self.shared.now_ns(),
        })
    }

    fn restore(&self, snapshot: &Snapshot) -> Result<(), DatapathError> {
        let mut c = self.control();
        c.state.require(
            LifecycleState::Quiesced,
            "restore",
            "quiesce the datapath first",
        )?;
        let compiler = Compiler::new(&snapshot.rules)?;
        let next = self.shared.current.load().generation + 1;
        self.rebuild(
            &mut c,
            compiler,
            next,
            Some(&snapshot.counters),
            Some((&snapshot.meters, snapshot.clock_ns)),
        );
        c.desired = snapshot.generation;
        c.installs += 1;
        Ok(())
    }

    fn resume(&self) -> Result<(), DatapathError> {
        self.control().state = LifecycleState::Running;
        Ok(())
    }
}

impl Drop for EmuDatapath {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}
