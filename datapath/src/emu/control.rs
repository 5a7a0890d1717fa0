//! The control side of the emulated backend: transactions, lifecycle,
//! counters and the in-memory ports.

use super::{Egress, EmuConfig, InjectError, worker};
use crate::compile::{MAX_MASKS, hash_words};
use crate::datapath::{Capabilities, Datapath, DatapathError, LifecycleState, Transaction};
use crate::frame::Frame;
use crate::pipeline::{Bucket, Count, Counter, Installed, Pipeline, Stats, StatsBlock, parse};
use crate::rule::{MAX_PORTS, RuleSet};
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use crossbeam::queue::ArrayQueue;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Instant;

pub(super) struct Shared {
    pub(super) config: EmuConfig,
    pub(super) current: ArcSwap<Installed>,
    pub(super) rx: Vec<ArrayQueue<(u16, Frame)>>,
    pub(super) out: Vec<ArrayQueue<Egress>>,
    pub(super) host: ArrayQueue<Egress>,
    pub(super) overflow: Vec<Counter>,
    pub(super) stop: AtomicBool,
    clock: Instant,
}

impl Shared {
    pub(super) fn now_ns(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }
}

struct Control {
    state: LifecycleState,
    /// Generations replaced but maybe still held by a worker mid-batch.
    retired: Vec<Arc<Installed>>,
    /// Counts of retired generations no worker holds any more, by rule id.
    folded: HashMap<u32, Count>,
}

/// The emulated datapath. Dropping it stops and joins its workers.
pub struct EmuDatapath {
    shared: Arc<Shared>,
    control: Mutex<Control>,
    stats: Vec<Arc<StatsBlock>>,
    threads: Vec<JoinHandle<()>>,
}

impl EmuDatapath {
    /// Compiles `rules` as generation 1 and starts the workers.
    ///
    /// # Errors
    /// [`DatapathError::Rules`] if the rules do not compile.
    pub fn start(rules: RuleSet, config: EmuConfig) -> Result<EmuDatapath, DatapathError> {
        let config = EmuConfig {
            workers: config.workers.max(1),
            batch: config.batch.max(1),
            ..config
        };
        let installed = Installed::build(1, rules, config.workers, None)?;
        let shared = Arc::new(Shared {
            current: ArcSwap::from_pointee(installed),
            rx: (0..config.workers)
                .map(|_| ArrayQueue::new(config.queue_depth))
                .collect(),
            out: (0..MAX_PORTS)
                .map(|_| ArrayQueue::new(config.queue_depth))
                .collect(),
            host: ArrayQueue::new(config.queue_depth),
            overflow: (0..config.workers).map(|_| Counter::default()).collect(),
            stop: AtomicBool::new(false),
            clock: Instant::now(),
            config,
        });
        let mut stats = Vec::new();
        let mut threads = Vec::new();
        for i in 0..shared.config.workers {
            let pipeline = Pipeline::new(i, shared.config.cache_entries);
            stats.push(Arc::clone(pipeline.stats()));
            let s = Arc::clone(&shared);
            let t = std::thread::Builder::new()
                .name(format!("dse-emu-{i}"))
                .spawn(move || worker::run(&s, i, pipeline))
                .map_err(|source| DatapathError::Io {
                    what: format!("spawning worker {i}"),
                    source,
                })?;
            threads.push(t);
        }
        let control = Mutex::new(Control {
            state: LifecycleState::Running,
            retired: Vec::new(),
            folded: HashMap::new(),
        });
        Ok(EmuDatapath {
            shared,
            control,
            stats,
            threads,
        })
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        self.control
            .lock()
            .expect("control lock is never poisoned: no code panics while holding it")
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
    /// handed back inside nothing; retry with a copy), or
    /// [`InjectError::UnknownPort`].
    pub fn inject(&self, in_port: u16, frame: Frame) -> Result<(), InjectError> {
        if in_port >= MAX_PORTS
            || self.shared.current.load().tables.ports[usize::from(in_port)].present == 0
        {
            return Err(InjectError::UnknownPort(in_port));
        }
        let worker = self.worker_for(frame.data(), in_port);
        self.shared.rx[worker]
            .push((in_port, frame))
            .map_err(|_| InjectError::Full { worker })?;
        self.threads[worker].thread().unpark();
        Ok(())
    }

    /// Queues `frame`, waiting while the worker's queue is full.
    ///
    /// # Errors
    /// [`InjectError::UnknownPort`].
    pub fn inject_blocking(&self, in_port: u16, frame: Frame) -> Result<(), InjectError> {
        let mut frame = Some(frame);
        loop {
            let f = frame.take().expect("frame is put back on every retry");
            if in_port >= MAX_PORTS
                || self.shared.current.load().tables.ports[usize::from(in_port)].present == 0
            {
                return Err(InjectError::UnknownPort(in_port));
            }
            let worker = self.worker_for(f.data(), in_port);
            match self.shared.rx[worker].push((in_port, f)) {
                Ok(()) => {
                    self.threads[worker].thread().unpark();
                    return Ok(());
                }
                Err((_, f)) => {
                    frame = Some(f);
                    self.threads[worker].thread().unpark();
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Takes the next frame sent out of port index `port`.
    pub fn recv(&self, port: u16) -> Option<Egress> {
        self.shared.out.get(usize::from(port))?.pop()
    }

    /// Takes the next frame handed to the host stack.
    pub fn recv_host(&self) -> Option<Egress> {
        self.shared.host.pop()
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
        self.shared.current.load().rules.port(name).map(|p| p.index)
    }

    /// Folds the counters of retired generations that no worker holds any more.
    fn reap(c: &mut Control, current: &Installed) {
        let mut keep = Vec::new();
        for old in c.retired.drain(..) {
            if Arc::strong_count(&old) == 1 {
                for (id, n) in old.counts() {
                    *c.folded.entry(id).or_default() += n;
                }
            } else {
                keep.push(old);
            }
        }
        c.retired = keep;
        let live: std::collections::HashSet<u32> =
            current.tables.rules.iter().map(|r| r.id).collect();
        c.folded.retain(|id, _| live.contains(id));
    }

    fn swap(&self, c: &mut Control, next: Installed) {
        let old = self.shared.current.swap(Arc::new(next));
        c.retired.push(old);
        let current = self.shared.current.load_full();
        Self::reap(c, &current);
    }
}

impl Datapath for EmuDatapath {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: "emu".into(),
            max_masks: MAX_MASKS,
            max_ports: MAX_PORTS,
            workers: self.shared.config.workers,
            hitless_upgrade: true,
        }
    }

    fn apply(&self, txn: Transaction) -> Result<u64, DatapathError> {
        let mut c = self.control();
        if c.state != LifecycleState::Running {
            return Err(DatapathError::State {
                operation: "apply",
                state: c.state,
                hint: "resume the datapath first",
            });
        }
        let current = self.shared.current.load_full();
        let rules = txn.resolve(&current.rules)?;
        let next = Installed::build(
            current.generation + 1,
            rules,
            self.shared.config.workers,
            Some(&current),
        )?;
        let generation = next.generation;
        drop(current);
        self.swap(&mut c, next);
        Ok(generation)
    }

    fn generation(&self) -> u64 {
        self.shared.current.load().generation
    }

    fn rules(&self) -> RuleSet {
        self.shared.current.load().rules.clone()
    }

    fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for b in &self.stats {
            b.add_to(&mut s);
        }
        s
    }

    fn rule_counters(&self) -> BTreeMap<u32, Count> {
        let mut c = self.control();
        let current = self.shared.current.load_full();
        Self::reap(&mut c, &current);
        let mut out: BTreeMap<u32, Count> = current.counts().into_iter().collect();
        for old in &c.retired {
            for (id, n) in old.counts() {
                if let Some(slot) = out.get_mut(&id) {
                    *slot += n;
                }
            }
        }
        for (id, n) in &c.folded {
            if let Some(slot) = out.get_mut(id) {
                *slot += *n;
            }
        }
        out
    }

    fn state(&self) -> LifecycleState {
        self.control().state
    }

    fn quiesce(&self) -> Result<(), DatapathError> {
        self.control().state = LifecycleState::Quiesced;
        Ok(())
    }

    fn snapshot(&self) -> Result<Snapshot, DatapathError> {
        if self.state() != LifecycleState::Quiesced {
            return Err(DatapathError::State {
                operation: "snapshot",
                state: LifecycleState::Running,
                hint: "quiesce the datapath first",
            });
        }
        let counters = self.rule_counters();
        let current = self.shared.current.load_full();
        Ok(Snapshot {
            backend: "emu".into(),
            generation: current.generation,
            rules: current.rules.clone(),
            counters,
            meters: current.buckets().into_iter().collect(),
            clock_ns: self.shared.now_ns(),
        })
    }

    fn restore(&self, snapshot: &Snapshot) -> Result<(), DatapathError> {
        let mut c = self.control();
        if c.state != LifecycleState::Quiesced {
            return Err(DatapathError::State {
                operation: "restore",
                state: c.state,
                hint: "quiesce the datapath first",
            });
        }
        let next = Installed::build(
            snapshot.generation,
            snapshot.rules.clone(),
            self.shared.config.workers,
            None,
        )?;
        for (id, n) in &snapshot.counters {
            next.add_count(*id, *n);
        }
        let now = self.shared.now_ns();
        for (name, b) in &snapshot.meters {
            // Rebase the bucket's refill time from the snapshot's clock to ours.
            let age = snapshot.clock_ns.saturating_sub(b.last_ns);
            next.set_bucket(
                name,
                Bucket {
                    nano_tokens: b.nano_tokens,
                    last_ns: now.saturating_sub(age),
                },
            );
        }
        self.swap(&mut c, next);
        // Counts of the replaced generations belong to the state being discarded.
        c.folded.clear();
        c.retired.clear();
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
