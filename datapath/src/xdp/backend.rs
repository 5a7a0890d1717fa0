//! The XDP backend behind the [`Datapath`] trait: rule transactions through
//! the compiler into the maps, ports bound to interfaces by name, and the
//! lifecycle hooks with the same snapshot format as the emulated backend.

use super::{Program, XdpError, XdpInstance, XdpLimits};
use crate::compile::{Compiler, FlowKey, MAX_MASKS};
use crate::datapath::{
    Capabilities, Datapath, DatapathError, Fingerprint, LifecycleState, Transaction,
};
use crate::pipeline::{Bucket, Cached, Count, Stats};
use crate::rule::{MAX_PORTS, RuleSet};
use crate::snapshot::Snapshot;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What an upgrade did and how long each step took.
#[derive(Debug, Clone, Copy)]
pub struct UpgradeReport {
    /// Loading and verifying the new program over the pinned maps.
    pub load: Duration,
    /// Moving the links: the only step traffic could notice, and it does not.
    pub switch: Duration,
    /// Links moved.
    pub links: usize,
    /// The grace period and merging the counters into a migrated map.
    pub migrate: Duration,
    /// Counters migrated (0 when no map changed layout).
    pub migrated: usize,
}

/// A program loaded over a datapath's maps, ready to take over from the
/// running one ([`XdpDatapath::commit_upgrade`]).
pub struct PreparedUpgrade {
    next: XdpInstance,
    /// The staged counters map's pin, when the layout changes.
    migrate: Option<PathBuf>,
    load: Duration,
}

impl PreparedUpgrade {
    /// The program it runs.
    pub fn program(&self) -> Program {
        self.next.program()
    }
}

/// How to bring up an XDP datapath.
#[derive(Debug, Clone)]
pub struct XdpConfig {
    /// The bpffs directory the maps are pinned in (one per datapath).
    pub pin_dir: PathBuf,
    /// Interface of each port, by port name. Ports without one still
    /// classify and count, but `output` to them drops.
    pub interfaces: BTreeMap<String, String>,
    /// Attach in generic (skb) mode instead of native: slower, for
    /// interfaces whose driver has no XDP support.
    pub skb_mode: bool,
    /// Map sizes.
    pub limits: XdpLimits,
    /// The program version to load.
    pub program: Program,
}

struct Control {
    xdp: XdpInstance,
    compiler: Compiler,
    /// The desired generation in force (the control plane's number).
    generation: u64,
    /// Installs since this datapath started: the compiler's clock for
    /// reusing freed slots.
    epoch: u64,
    state: LifecycleState,
    /// Interface index of each bound port, by port name.
    bound: BTreeMap<String, u32>,
}

/// The XDP datapath.
pub struct XdpDatapath {
    control: Mutex<Control>,
    config: XdpConfig,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DatapathError {
    let what = what.into();
    move |source| DatapathError::Io { what, source }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl XdpDatapath {
    /// Loads the program, installs `rules` as generation 1, binds the ports
    /// named in `config.interfaces` and attaches to their interfaces.
    ///
    /// # Errors
    /// [`DatapathError::Rules`] for invalid rules; [`DatapathError::Xdp`]
    /// if loading, installing or attaching fails; [`DatapathError::Io`]
    /// for an interface that does not exist.
    pub fn start(rules: RuleSet, config: XdpConfig) -> Result<XdpDatapath, DatapathError> {
        let dp = Self::start_detached(rules, config)?;
        dp.attach()?;
        Ok(dp)
    }

    /// As [`XdpDatapath::start`], but attaches to no interface until
    /// [`XdpDatapath::attach`]: state can be restored before the first
    /// packet arrives.
    ///
    /// # Errors
    /// As [`XdpDatapath::start`].
    pub fn start_detached(rules: RuleSet, config: XdpConfig) -> Result<XdpDatapath, DatapathError> {
        let compiler = Compiler::new(&rules)?;
        let mut xdp =
            XdpInstance::load_object(&config.pin_dir, config.limits, config.program, &[])?;
        if xdp.generation() != 0 {
            // Maps another run left: their banks are not what this one knows.
            xdp.recover()?;
        }
        xdp.install_as(compiler.tables(), None, &[], 1)?;
        let dp = XdpDatapath {
            control: Mutex::new(Control {
                xdp,
                compiler,
                generation: 1,
                epoch: 1,
                state: LifecycleState::Running,
                bound: BTreeMap::new(),
            }),
            config,
        };
        dp.bind_ports(&mut dp.control())?;
        Ok(dp)
    }

    /// A datapath rebuilt from `snapshot` (after its DPU rebooted): its
    /// rules compiled and installed once, its counters, meter buckets and
    /// generation set, quiesced, attached to no interface until
    /// [`XdpDatapath::attach`].
    ///
    /// # Errors
    /// As [`XdpDatapath::start`].
    pub fn start_restored(
        snapshot: &Snapshot,
        config: XdpConfig,
    ) -> Result<XdpDatapath, DatapathError> {
        let dp = Self::start_detached(snapshot.rules.clone(), config)?;
        {
            let mut c = dp.control();
            carry_counts(&mut c.xdp, &snapshot.counters)?;
            let buckets = rebased_buckets(snapshot);
            for (i, name) in c.compiler.tables().meter_names.clone().iter().enumerate() {
                if let Some(b) = buckets.get(name) {
                    c.xdp.set_meter_bucket(i as u32, *b)?;
                }
            }
            c.xdp.set_desired(snapshot.generation)?;
            c.generation = snapshot.generation;
            c.state = LifecycleState::Quiesced;
        }
        Ok(dp)
    }

    /// Attaches the program to every interface of `config.interfaces`.
    ///
    /// # Errors
    /// [`DatapathError::Xdp`] if attaching fails.
    pub fn attach(&self) -> Result<(), DatapathError> {
        if self.config.skb_mode {
            tracing::warn!(
                "attaching in generic (skb) mode: every packet pays for an skb; native mode is much faster"
            );
        }
        let mut c = self.control();
        for ifname in self.config.interfaces.values() {
            c.xdp.attach(ifname, self.config.skb_mode)?;
        }
        Ok(())
    }

    /// Detaches the program from every interface (its pinned links go);
    /// the maps stay, so the state can still be read. Frames that arrive
    /// afterwards go to the kernel. Returns once runs that started before
    /// have ended.
    ///
    /// # Errors
    /// [`DatapathError::Io`] if a link pin cannot be removed.
    pub fn detach(&self) -> Result<(), DatapathError> {
        let _c = self.control();
        for ifname in self.config.interfaces.values() {
            let pin = super::link_pin(&self.config.pin_dir, ifname);
            match std::fs::remove_file(&pin) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("removing the link pin {}", pin.display()))(e)),
            }
        }
        std::thread::sleep(super::journal::GRACE);
        Ok(())
    }

    /// Adds `counts` (by rule id) to the counters of the rules in force,
    /// with atomic adds: what another path counted for these rules while
    /// it carried their traffic. Ids not in force are ignored.
    ///
    /// # Errors
    /// [`DatapathError::Xdp`] if the counters cannot be written.
    pub fn add_counts(&self, counts: &BTreeMap<u32, Count>) -> Result<(), DatapathError> {
        let mut c = self.control();
        c.xdp.settle()?;
        carry_counts(&mut c.xdp, counts)?;
        Ok(())
    }

    /// Runs the program once on `frame` as if it came in on port `in_port`
    /// (BPF_PROG_TEST_RUN), counting like real traffic. Returns the verdict
    /// and the frame as the program left it.
    ///
    /// # Errors
    /// [`DatapathError::Xdp`] if the kernel refuses the run (a frame
    /// shorter than an Ethernet header, for one).
    pub fn run_frame(
        &self,
        in_port: u16,
        frame: &[u8],
    ) -> Result<(crate::pipeline::Verdict, Vec<u8>), DatapathError> {
        Ok(self.control().xdp.run(in_port, frame)?)
    }

    /// Takes over a datapath that another process started (and may have
    /// left, even killed, at any point of an install) under
    /// `config.pin_dir`: loads `config.program` over the pinned maps,
    /// finishes what the other process left undone (see
    /// [`XdpInstance::recover`]), installs `rules` as desired generation
    /// `generation` from a fresh compile into the other slot half, keeps
    /// the counts of every rule it keeps, and moves the pinned links to
    /// the new program. Traffic keeps flowing throughout, and from the flip
    /// on it meets exactly `rules`.
    ///
    /// `rules` need not be the rules recorded in the maps: a control plane
    /// that died mid-change adopts with the rules it wants, and the drift
    /// converges in the same step. Rules in both keep their counts; meter
    /// buckets carry over (by position) only when the rule ids agree, else
    /// every bucket starts full.
    ///
    /// # Errors
    /// [`DatapathError::Xdp`] if the maps or links cannot be taken over;
    /// [`DatapathError::Rules`] for invalid rules.
    pub fn adopt(
        rules: RuleSet,
        generation: u64,
        config: XdpConfig,
    ) -> Result<XdpDatapath, DatapathError> {
        let counter_pin = config.pin_dir.join(dse_ebpf::maps::COUNTERS);
        let pinned_size = aya::maps::MapInfo::from_pin(&counter_pin)
            .map_err(|e| XdpError::Link {
                what: "finding the pinned counters map",
                path: counter_pin.clone(),
                reason: e.to_string(),
            })?
            .value_size();
        if pinned_size != config.program.counter_size() {
            return Err(XdpError::Link {
                what: "adopting maps of another program version",
                path: counter_pin,
                reason: format!(
                    "the pinned counters hold {pinned_size}-byte values, {:?} expects {}: adopt with the program that made them, then upgrade",
                    config.program,
                    config.program.counter_size()
                ),
            }
            .into());
        }
        let compiler = Compiler::new(&rules)?;
        let mut xdp =
            XdpInstance::load_object(&config.pin_dir, config.limits, config.program, &[])?;
        xdp.recover()?;
        let recorded = xdp.recorded_rules()?;
        let wanted: std::collections::BTreeSet<u32> =
            compiler.tables().live_rules().map(|(_, r)| r.id).collect();
        let found: std::collections::BTreeSet<u32> = recorded.iter().map(|(id, _)| *id).collect();
        let same_rules = wanted == found;
        if !same_rules || xdp.desired() != generation {
            tracing::info!(
                pinned = found.len(),
                wanted = wanted.len(),
                pinned_generation = xdp.desired(),
                generation,
                "adopting {}: converging to the desired rules",
                config.pin_dir.display()
            );
        }
        let buckets = if same_rules {
            xdp.meter_buckets(compiler.tables().meters.len())?
        } else {
            Vec::new()
        };
        let moves = moves_by_id(&compiler, &recorded);
        xdp.install_as(compiler.tables(), None, &moves, generation)?;
        for (i, b) in buckets.into_iter().enumerate() {
            xdp.set_meter_bucket(i as u32, b)?;
        }
        xdp.switch_links()?;
        let dp = XdpDatapath {
            control: Mutex::new(Control {
                xdp,
                compiler,
                generation,
                epoch: 1,
                state: LifecycleState::Running,
                bound: BTreeMap::new(),
            }),
            config,
        };
        {
            let mut c = dp.control();
            dp.bind_ports(&mut c)?;
        }
        Ok(dp)
    }

    /// Whether a datapath is pinned under `pin_dir` (one that
    /// [`XdpDatapath::adopt`] can take over).
    pub fn is_pinned(pin_dir: &std::path::Path) -> bool {
        pin_dir.join(dse_ebpf::maps::COUNTERS).exists()
    }

    /// Replaces the running program with `program`, hitlessly: the new
    /// program is loaded over the pinned maps, a map whose layout changed
    /// (the rule counters) is created anew, the links move to the new
    /// program with one atomic update each, and the old counters are then
    /// merged into the new map with atomic adds. No packet goes unprocessed
    /// and no count is lost.
    ///
    /// # Errors
    /// [`DatapathError::Xdp`] naming the step that failed; before the link
    /// switch, the old program keeps running untouched.
    pub fn upgrade(&self, program: Program) -> Result<UpgradeReport, DatapathError> {
        let prepared = self.prepare_upgrade(program)?;
        self.commit_upgrade(prepared)
    }

    /// The slow half of [`XdpDatapath::upgrade`], done ahead: loads and
    /// verifies `program` over the pinned maps (and creates the map whose
    /// layout changes), without running it. Rules may change meanwhile.
    ///
    /// # Errors
    /// [`DatapathError::Xdp`]; nothing changed.
    pub fn prepare_upgrade(&self, program: Program) -> Result<PreparedUpgrade, DatapathError> {
        let started = Instant::now();
        let pin_dir = &self.config.pin_dir;
        let migrate = self.program().counter_size() != program.counter_size();
        let staged_pin = pin_dir.join(format!("next_{}", dse_ebpf::maps::COUNTERS));
        let _ = std::fs::remove_file(&staged_pin);
        let staged: Vec<(&'static str, PathBuf)> = if migrate {
            vec![(dse_ebpf::maps::COUNTERS, staged_pin.clone())]
        } else {
            Vec::new()
        };
        let next = XdpInstance::load_object(pin_dir, self.config.limits, program, &staged)?;
        Ok(PreparedUpgrade {
            next,
            migrate: migrate.then_some(staged_pin),
            load: started.elapsed(),
        })
    }

    /// The fast half of [`XdpDatapath::upgrade`]: moves the links to the
    /// prepared program and migrates the counters if their layout changed.
    ///
    /// # Errors
    /// [`DatapathError::Xdp`] naming the step that failed; before the link
    /// switch, the old program keeps running untouched.
    pub fn commit_upgrade(
        &self,
        prepared: PreparedUpgrade,
    ) -> Result<UpgradeReport, DatapathError> {
        let PreparedUpgrade {
            mut next,
            migrate,
            load,
        } = prepared;
        let mut c = self.control();
        let started = Instant::now();
        c.xdp.settle()?;
        next.take_over(&c.xdp);
        let links = next.switch_links()?;
        let switched = Instant::now();
        let mut migrated = 0;
        if let Some(staged_pin) = migrate {
            // In-flight runs of the old program end within microseconds.
            std::thread::sleep(std::time::Duration::from_millis(20));
            let slots = c.xdp.installed_slots();
            let old = c.xdp.slot_counts(&slots)?;
            next.merge_counts(&slots, &old)?;
            migrated = slots.len();
            let live = self.config.pin_dir.join(dse_ebpf::maps::COUNTERS);
            std::fs::rename(&staged_pin, &live).map_err(io(format!(
                "moving the migrated counters pin {} to {}",
                staged_pin.display(),
                live.display()
            )))?;
        }
        c.xdp = next;
        Ok(UpgradeReport {
            load,
            switch: switched - started,
            links,
            migrate: switched.elapsed(),
            migrated,
        })
    }

    /// The program version running.
    pub fn program(&self) -> Program {
        self.control().xdp.program()
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().expect("control lock is never poisoned")
    }

    /// Binds every port of the installed rule set that has an interface.
    fn bind_ports(&self, c: &mut Control) -> Result<(), DatapathError> {
        for p in c.compiler.ports().to_vec() {
            let Some(ifname) = self.config.interfaces.get(&p.name) else {
                continue;
            };
            let ifindex = crate::netdev::interface_index(ifname)?;
            if c.bound.get(&p.name) != Some(&ifindex) {
                c.xdp.bind_port(p.index, ifindex)?;
                c.bound.insert(p.name.clone(), ifindex);
            }
        }
        Ok(())
    }

    /// Installs `set` from a fresh compile into the other slot half, as
    /// desired generation `generation`.
    fn replace(
        &self,
        c: &mut Control,
        set: &RuleSet,
        generation: u64,
    ) -> Result<(), DatapathError> {
        let compiler = Compiler::new(set)?;
        let moves = moves_by_id(&compiler, &c.xdp.installed_rules());
        let buckets = Self::buckets(c)?;
        self.rebuild(c, compiler, generation, Carry::Moves(moves), buckets)
    }

    fn patch(
        &self,
        c: &mut Control,
        upsert: Vec<crate::rule::Rule>,
        remove: &[u32],
        generation: u64,
    ) -> Result<(), DatapathError> {
        let next = c.epoch + 1;
        // A rule replaced by id takes a new slot and keeps its counts.
        let base = c.xdp.slot_base();
        let leaving: Vec<(u32, u32)> = upsert
            .iter()
            .filter_map(|r| Some((r.id, c.compiler.slot_of(r.id)?)))
            .collect();
        // Slots freed by the active generation are reused only after the
        // next flip: no packet still classifies under an older one.
        let patched = c.compiler.patch(upsert, remove, next, c.epoch)?;
        let moves: Vec<(u32, u32)> = leaving
            .into_iter()
            .filter_map(|(id, old)| Some((base + old, c.compiler.slot_of(id)?)))
            .collect();
        c.xdp.install_as(
            &patched.tables,
            Some(&patched.new_slots),
            &moves,
            generation,
        )?;
        c.epoch = next;
        c.generation = generation;
        Ok(())
    }

    /// Installs `compiler`'s tables as `generation` from scratch, carrying
    /// counters by rule id and meter buckets by name.
    fn rebuild(
        &self,
        c: &mut Control,
        compiler: Compiler,
        generation: u64,
        carry: Carry,
        buckets: BTreeMap<String, Bucket>,
    ) -> Result<(), DatapathError> {
        match carry {
            Carry::Moves(moves) => {
                c.xdp
                    .install_as(compiler.tables(), None, &moves, generation)?;
            }
            Carry::Given(counts) => {
                c.xdp.install_as(compiler.tables(), None, &[], generation)?;
                carry_counts(&mut c.xdp, &counts)?;
            }
        }
        for (i, name) in compiler.tables().meter_names.iter().enumerate() {
            if let Some(b) = buckets.get(name) {
                c.xdp.set_meter_bucket(i as u32, *b)?;
            }
        }
        c.compiler = compiler;
        c.generation = generation;
        c.epoch += 1;
        self.bind_ports(c)
    }

    fn counts(c: &mut Control) -> Result<BTreeMap<u32, Count>, XdpError> {
        c.xdp.settle()?;
        c.xdp.rule_counters(c.compiler.tables())
    }

    fn buckets(c: &Control) -> Result<BTreeMap<String, Bucket>, XdpError> {
        let names = &c.compiler.tables().meter_names;
        Ok(names
            .iter()
            .cloned()
            .zip(c.xdp.meter_buckets(names.len())?)
            .collect())
    }
}

/// What `compiler` holds with `upsert` added or replacing by id and `remove`
/// gone.
///
/// # Errors
/// [`crate::rule::RuleError`] for removing a rule that is not installed.
fn patched_set(
    compiler: &Compiler,
    upsert: Vec<crate::rule::Rule>,
    remove: &[u32],
) -> Result<RuleSet, DatapathError> {
    if let Some(&id) = remove.iter().find(|&&id| compiler.slot_of(id).is_none()) {
        return Err(crate::rule::RuleError::Rule {
            rule: id,
            field: "id".into(),
            reason: "no rule with this id to remove".into(),
        }
        .into());
    }
    let mut set = compiler.rule_set();
    let gone: std::collections::HashSet<u32> = remove
        .iter()
        .copied()
        .chain(upsert.iter().map(|r| r.id))
        .collect();
    set.rules.retain(|r| !gone.contains(&r.id));
    set.rules.extend(upsert);
    Ok(set)
}

/// Where the counts of a rebuilt generation's rules come from.
enum Carry {
    /// Moved from the replaced generation's slots: (slot it leaves, slot
    /// in the new tables).
    Moves(Vec<(u32, u32)>),
    /// These counts, by rule id (a snapshot's).
    Given(BTreeMap<u32, Count>),
}

/// The counter moves that keep the counts of every rule of `installed`
/// (rule id, counters slot) that `compiler` holds too.
fn moves_by_id(compiler: &Compiler, installed: &[(u32, u32)]) -> Vec<(u32, u32)> {
    installed
        .iter()
        .filter_map(|&(id, from)| Some((from, compiler.slot_of(id)?)))
        .collect()
}

/// `snapshot`'s meter buckets with each refill time moved from the
/// snapshot's clock to the kernel's.
fn rebased_buckets(snapshot: &Snapshot) -> BTreeMap<String, Bucket> {
    let now = monotonic_ns();
    snapshot
        .meters
        .iter()
        .map(|(name, b)| {
            let age = snapshot.clock_ns.saturating_sub(b.last_ns);
            (
                name.clone(),
                Bucket {
                    nano_tokens: b.nano_tokens,
                    last_ns: now.saturating_sub(age),
                },
            )
        })
        .collect()
}

/// Adds `counts` (by rule id) into the counters of the rules installed,
/// with atomic adds: they are already counting.
fn carry_counts(xdp: &mut XdpInstance, counts: &BTreeMap<u32, Count>) -> Result<(), XdpError> {
    let now: BTreeMap<u32, u32> = xdp.installed_rules().into_iter().collect();
    let (slots, counts): (Vec<u32>, Vec<Vec<Count>>) = counts
        .iter()
        .filter_map(|(id, c)| now.get(id).map(|s| (*s, vec![*c])))
        .unzip();
    xdp.merge_counts(&slots, &counts)
}

impl Datapath for XdpDatapath {
    fn cached(&self, key: &FlowKey) -> Result<Vec<Cached>, DatapathError> {
        Ok(vec![super::cached(&self.config.pin_dir, key)?])
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: "xdp".into(),
            max_masks: MAX_MASKS,
            max_ports: MAX_PORTS,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
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
        let fits = |c: &Control, upsert: &[crate::rule::Rule]| {
            let actions = upsert.iter().map(|r| r.actions.len()).sum();
            c.xdp.patch_fits(c.compiler.tables(), upsert.len(), actions)
        };
        match txn {
            Transaction::Patch { upsert, remove } if fits(&c, &upsert) => {
                self.patch(&mut c, upsert, &remove, generation)
            }
            // Too many new rules for the active half beside the old ones:
            // the whole result, compiled afresh into the other half.
            Transaction::Patch { upsert, remove } => {
                let set = patched_set(&c.compiler, upsert, &remove)?;
                self.replace(&mut c, &set, generation)
            }
            Transaction::Replace(set)
                if c.compiler.same_frame(&set) && c.compiler.patch_is_small(&set) =>
            {
                set.validate()?;
                let (upsert, remove) = c.compiler.diff(&set);
                if fits(&c, &upsert) {
                    self.patch(&mut c, upsert, &remove, generation)
                } else {
                    let set = patched_set(&c.compiler, upsert, &remove)?;
                    self.replace(&mut c, &set, generation)
                }
            }
            // New ports or meters, or a large change: a fresh compile into
            // the other slot half.
            Transaction::Replace(set) => self.replace(&mut c, &set, generation),
        }
    }

    fn generation(&self) -> u64 {
        self.control().generation
    }

    fn set_generation(&self, generation: u64) -> Result<(), DatapathError> {
        let mut c = self.control();
        c.xdp.set_desired(generation)?;
        c.generation = generation;
        Ok(())
    }

    fn installs(&self) -> u64 {
        self.control().epoch
    }

    fn rules(&self) -> RuleSet {
        self.control().compiler.rule_set()
    }

    fn stats(&self) -> Stats {
        self.control().xdp.stats().unwrap_or_else(|e| {
            tracing::error!("reading the XDP statistics: {e}");
            Stats::default()
        })
    }

    fn rule_counters(&self) -> BTreeMap<u32, Count> {
        Self::counts(&mut self.control()).unwrap_or_else(|e| {
            tracing::error!("reading the XDP rule counters: {e}");
            BTreeMap::new()
        })
    }

    fn fingerprint(&self) -> Fingerprint {
        let mut c = self.control();
        if let Err(e) = c.xdp.settle() {
            tracing::error!("moving the XDP rule counters: {e}");
        }
        let total = c.xdp.counter_total().unwrap_or_else(|e| {
            tracing::error!("reading the XDP rule counters: {e}");
            Count::default()
        });
        Fingerprint {
            generation: c.generation,
            rules: c.xdp.installed_rules().len(),
            packets: total.packets,
            bytes: total.bytes,
        }
    }

    fn state(&self) -> LifecycleState {
        self.control().state
    }

    fn quiesce(&self) -> Result<(), DatapathError> {
        self.control().state = LifecycleState::Quiesced;
        Ok(())
    }

    fn snapshot(&self) -> Result<Snapshot, DatapathError> {
        let mut c = self.control();
        c.state.require(
            LifecycleState::Quiesced,
            "snapshot",
            "quiesce the datapath first",
        )?;
        Ok(Snapshot {
            backend: "xdp".into(),
            generation: c.generation,
            rules: c.compiler.rule_set(),
            counters: Self::counts(&mut c)?,
            meters: Self::buckets(&c)?,
            clock_ns: monotonic_ns(),
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
        self.rebuild(
            &mut c,
            compiler,
            snapshot.generation,
            Carry::Given(snapshot.counters.clone()),
            rebased_buckets(snapshot),
        )
    }

    fn resume(&self) -> Result<(), DatapathError> {
        self.control().state = LifecycleState::Running;
        Ok(())
    }
}
