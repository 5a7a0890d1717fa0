//! Loading the XDP object, writing compiled tables into its maps, and
//! running it on a frame with BPF_PROG_TEST_RUN.

use super::records::Records;
use super::{batch, counters, mirror};
use crate::compile::{Chunked, FlowKey, Subtable};
use crate::compile::{CompiledTables, NO_RULE};
use crate::pipeline::{Bucket, Count, DropReason, Stats, Verdict};
use aya::maps::{Array, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use dse_ebpf::{SubKey, SubValue, maps, verdict};
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What went wrong in the XDP backend, with the step and the object named.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The object did not load (the verifier's log is in the source).
    #[error("loading the XDP object (maps pinned under {pin_dir}): {source}")]
    Load {
        /// The instance's bpffs directory.
        pin_dir: PathBuf,
        /// aya's error.
        source: Box<aya::EbpfError>,
    },
    /// A program operation failed.
    #[error("XDP program: {what}: {source}")]
    Program {
        /// The operation.
        what: &'static str,
        /// aya's error.
        source: Box<aya::programs::ProgramError>,
    },
    /// A map operation failed.
    #[error("map {map}: {what}: {source}")]
    Map {
        /// The map's name.
        map: &'static str,
        /// The operation.
        what: &'static str,
        /// aya's error.
        source: Box<aya::maps::MapError>,
    },
    /// A raw map syscall (a batch update) failed.
    #[error("map {map}: {what}: {source}")]
    MapIo {
        /// The map's name.
        map: &'static str,
        /// The operation.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kernel refused an interface as an output port.
    #[error("port {port}: interface {ifindex} refused as a redirect target: {reason}")]
    Devmap {
        /// The port index.
        port: u16,
        /// The interface.
        ifindex: u32,
        /// The kernel's reason.
        reason: String,
    },
    /// A link could not be pinned, opened or moved.
    #[error("{what} ({path}): {reason}")]
    Link {
        /// The step.
        what: &'static str,
        /// The pin.
        path: PathBuf,
        /// The kernel's or aya's reason.
        reason: String,
    },
    /// The tables do not fit the object's build-time limits.
    #[error("the tables need {need} {what}, the XDP object holds {have}")]
    TooLarge {
        /// What overflowed.
        what: &'static str,
        /// What the tables need.
        need: usize,
        /// What the maps hold.
        have: usize,
    },
    /// A file-system step failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io_err(map: &'static str, what: &'static str) -> impl FnOnce(std::io::Error) -> XdpError {
    move |source| XdpError::MapIo { map, what, source }
}

fn map_err(map: &'static str, what: &'static str) -> impl FnOnce(aya::maps::MapError) -> XdpError {
    move |e| XdpError::Map {
        map,
        what,
        source: Box::new(e),
    }
}

/// A version of the XDP program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// The current program (`dse_ebpf::object`).
    V1,
    /// The same program with a last-seen time in each rule counter
    /// (`dse_ebpf::object_v2`): the counters map's layout differs.
    V2,
    /// An object built elsewhere from `ebpf/src` (for A/B measurements of
    /// a change to the program), with the counter layout of version 1.
    Custom(&'static [u8]),
}

impl Program {
    /// The compiled object.
    pub fn object(self) -> &'static [u8] {
        match self {
            Program::V1 => dse_ebpf::object(),
            Program::V2 => dse_ebpf::object_v2(),
            Program::Custom(bytes) => bytes,
        }
    }

    /// The program whose object is `bytes`, if this build knows it: only
    /// an object whose map layouts this build knows can be loaded over
    /// pinned maps or migrated to.
    pub fn identify(bytes: &[u8]) -> Option<Program> {
        [Program::V1, Program::V2]
            .into_iter()
            .find(|p| p.object() == bytes)
    }

    /// The version number the object reports.
    pub fn version(self) -> u32 {
        match self {
            Program::V1 | Program::Custom(_) => 1,
            Program::V2 => 2,
        }
    }

    /// The value size of the counters map (the one map whose layout differs).
    pub fn counter_size(self) -> u32 {
        match self {
            Program::V1 | Program::Custom(_) => size_of::<dse_ebpf::RuleCounter>() as u32,
            Program::V2 => size_of::<dse_ebpf::RuleCounterV2>() as u32,
        }
    }
}

/// Map sizes chosen at load time (at most the object's build-time limits).
#[derive(Debug, Clone, Copy)]
pub struct XdpLimits {
    /// Rule slots.
    pub rules: u32,
    /// Action records.
    pub action_records: u32,
    /// Flow-cache entries per CPU.
    pub cache_entries: u32,
    /// Whether the flow cache is used (off: every packet is searched, as
    /// the benchmarks of the search path need).
    pub flow_cache: bool,
}

impl Default for XdpLimits {
    fn default() -> Self {
        XdpLimits {
            rules: dse_ebpf::limits::MAX_RULES,
            action_records: dse_ebpf::limits::MAX_ACTION_RECORDS,
            cache_entries: dse_ebpf::limits::CACHE_ENTRIES,
            flow_cache: true,
        }
    }
}

impl XdpLimits {
    /// Small maps, for tests: thousands of rules.
    pub fn small() -> XdpLimits {
        XdpLimits {
            rules: 1 << 14,
            action_records: 1 << 14,
            cache_entries: 1 << 12,
            flow_cache: true,
        }
    }
}

/// Tables in a bank, and the half of the rule and action slot space their
/// records were written into.
#[derive(Clone)]
struct Loaded {
    /// Shared, so that reading a bank for a patch copies no chunk table.
    tables: Arc<CompiledTables>,
    half: u32,
}

/// One loaded XDP datapath: its program and maps, pinned under `pin_dir`.
pub struct XdpInstance {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    limits: XdpLimits,
    program: Program,
    generation: u32,
    /// The slot half of records found in the maps at load (before this
    /// instance installed anything).
    adopted_half: u32,
    /// Rule slots written in each half: beyond them every record is empty.
    high_water: [u32; 2],
    /// What each bank of masks and subtable entries holds.
    banks: [Option<Loaded>; 2],
    /// Rule records by slot.
    rules: Records<dse_ebpf::RuleRecord>,
    /// Action records by index.
    actions: Records<dse_ebpf::ActionRecord>,
    /// The install journal as last written (see [`dse_ebpf::Journal`]).
    pub(super) journal: dse_ebpf::Journal,
    /// The journaled counter moves, for a process that takes over.
    pub(super) moves: Records<dse_ebpf::MoveEntry>,
    /// The last install's counter moves, due once no packet can still be
    /// counting under the generation before it.
    pub(super) pending: Option<Pending>,
    /// Subtable keys each bank holds that no tables of this instance
    /// describe (found in maps another process left): emptied from that
    /// bank by the next install into it.
    pub(super) foreign: [Vec<SubKey>; 2],
    /// The active bank's slot of each key, while the active generation is
    /// one another process installed (until this instance's first flip).
    pub(super) foreign_active: Option<FxHashMap<SubKey, u32>>,
    /// The port a test run's frame arrives on, as last set.
    arrives_on: Option<u16>,
    /// Whether the program returns each test run's verdict rather than an
    /// XDP action (see [`XdpInstance::load_for_test_runs`]).
    verdict_in_retval: bool,
}

/// Counter moves that follow a flip.
#[derive(Clone)]
pub(super) struct Pending {
    pub(super) flipped: std::time::Instant,
    pub(super) moves: Vec<dse_ebpf::MoveEntry>,
}

impl XdpInstance {
    /// Loads the object with its maps pinned under `pin_dir` (created if
    /// missing; maps already pinned there are reused).
    ///
    /// # Errors
    /// [`XdpError`] naming the step that failed.
    pub fn load(pin_dir: impl AsRef<Path>, limits: XdpLimits) -> Result<XdpInstance, XdpError> {
        Self::load_object(pin_dir.as_ref(), limits, Program::V1, &[])
    }

    /// Loads `program` with its maps pinned under `pin_dir`, except the maps
    /// in `staged`, created fresh and pinned at the paths given (for an
    /// upgrade that migrates them).
    ///
    /// # Errors
    /// [`XdpError`] naming the step that failed.
    pub fn load_object(
        pin_dir: &Path,
        limits: XdpLimits,
        program: Program,
        staged: &[(&'static str, PathBuf)],
    ) -> Result<XdpInstance, XdpError> {
        Self::load_with(pin_dir, limits, program, staged, false)
    }

    /// Loads `program` for test runs only ([`XdpInstance::run`],
    /// [`XdpInstance::run_many`]): it returns each verdict rather than an
    /// XDP action, which saves a map read a frame. Never attach it to an
    /// interface.
    ///
    /// # Errors
    /// [`XdpError`] naming the step that failed.
    pub fn load_for_test_runs(
        pin_dir: &Path,
        limits: XdpLimits,
        program: Program,
    ) -> Result<XdpInstance, XdpError> {
        Self::load_with(pin_dir, limits, program, &[], true)
    }

    fn load_with(
        pin_dir: &Path,
        limits: XdpLimits,
        program: Program,
        staged: &[(&'static str, PathBuf)],
        verdict_in_retval: bool,
    ) -> Result<XdpInstance, XdpError> {
        let pin_dir = pin_dir.to_path_buf();
        std::fs::create_dir_all(&pin_dir).map_err(|source| XdpError::Io {
            what: "creating the pin directory",
            path: pin_dir.clone(),
            source,
        })?;
        let use_cache = u32::from(limits.flow_cache);
        let mut loader = EbpfLoader::new();
        // The full verifier log takes seconds to write for this program.
        loader
            .verifier_log_level(aya::VerifierLogLevel::STATS)
            .default_map_pin_directory(&pin_dir)
            .map_max_entries(maps::RULES, limits.rules)
            .map_max_entries(maps::COUNTERS, limits.rules)
            .map_max_entries(maps::SUBTABLES, limits.rules)
            .map_max_entries(maps::ACTIONS, limits.action_records)
            .map_max_entries(maps::MOVES, limits.rules)
            .map_max_entries(maps::CACHE, limits.cache_entries)
            .override_global("dse_use_cache", &use_cache, true);
        let in_meta = u32::from(verdict_in_retval);
        if verdict_in_retval {
            loader.override_global("dse_verdict_in_retval", &in_meta, true);
        }
        for (name, path) in staged {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(program.object()).map_err(|e| XdpError::Load {
            pin_dir: pin_dir.clone(),
            source: Box::new(e),
        })?;
        for (name, what) in [
            (dse_ebpf::PROGRAM, "load the datapath program"),
            (dse_ebpf::MERGE_PROGRAM, "load the counter merge program"),
            (dse_ebpf::MOVE_PROGRAM, "load the counter move program"),
        ] {
            xdp_program_mut(&mut ebpf, name)
                .load()
                .map_err(|e| XdpError::Program {
                    what,
                    source: Box::new(e),
                })?;
        }
        // Objects built before the sum program have none: totals are then
        // read with batch lookups.
        if let Some(sum) = ebpf.program_mut(dse_ebpf::SUM_PROGRAM) {
            let sum: &mut Xdp = sum.try_into().map_err(|e| XdpError::Program {
                what: "the counter sum program as XDP",
                source: Box::new(e),
            })?;
            sum.load().map_err(|e| XdpError::Program {
                what: "load the counter sum program",
                source: Box::new(e),
            })?;
        }
        let state = Array::<_, dse_ebpf::State>::try_from(
            ebpf.map(maps::STATE).expect("the object has its maps"),
        )
        .and_then(|a| a.get(&0, 0))
        .map_err(map_err(maps::STATE, "read"))?;
        let rules = Records::open(map_fd(&ebpf, maps::RULES), limits.rules)
            .map_err(io_err(maps::RULES, "duplicating the descriptor"))?;
        let actions = Records::open(map_fd(&ebpf, maps::ACTIONS), limits.action_records)
            .map_err(io_err(maps::ACTIONS, "duplicating the descriptor"))?;
        let journal = Array::<_, dse_ebpf::Journal>::try_from(
            ebpf.map(maps::JOURNAL).expect("the object has its maps"),
        )
        .and_then(|a| a.get(&0, 0))
        .map_err(map_err(maps::JOURNAL, "read"))?;
        let moves = Records::open(map_fd(&ebpf, maps::MOVES), limits.rules)
            .map_err(io_err(maps::MOVES, "duplicating the descriptor"))?;
        if !rules.is_mapped() || !actions.is_mapped() {
            tracing::warn!(
                pin_dir = %pin_dir.display(),
                "rule or action records not mmapable (maps pinned by an older object): writing them with syscalls"
            );
        }
        Ok(XdpInstance {
            ebpf,
            pin_dir,
            limits,
            program,
            generation: state.generation,
            adopted_half: state.half,
            // Maps found in use may hold records anywhere.
            high_water: if state.generation == 0 {
                [0, 0]
            } else {
                [limits.rules / 2; 2]
            },
            banks: [None, None],
            rules,
            actions,
            journal,
            moves,
            pending: None,
            foreign: [Vec::new(), Vec::new()],
            foreign_active: None,
            arrives_on: None,
            verdict_in_retval,
        })
    }

    /// The program version loaded.
    pub fn program(&self) -> Program {
        self.program
    }

    /// The bpffs directory of the maps.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The active generation.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    fn map(&mut self, name: &'static str) -> &mut aya::maps::Map {
        self.ebpf.map_mut(name).expect("the object has its maps")
    }

    pub(super) fn map_mut(&mut self, name: &'static str) -> &mut aya::maps::Map {
        self.map(name)
    }

    fn fd(&self, name: &'static str) -> BorrowedFd<'_> {
        map_fd(&self.ebpf, name)
    }

    pub(super) fn fd_of(&self, name: &'static str) -> BorrowedFd<'_> {
        self.fd(name)
    }

    /// Installs `tables` as the next generation: what changed since the
    /// active generation is written (rule and action records into slots no
    /// active generation reads, masks and subtable entries into the inactive
    /// bank), then one write of the generation word makes it active. Rule
    /// slots in `new_slots` get zeroed counters. Returns the new generation.
    ///
    /// # Errors
    /// [`XdpError::TooLarge`] before anything is written if the tables do
    /// not fit; [`XdpError::Map`] if the kernel refuses an update (the
    /// active generation is then untouched).
    pub fn install(&mut self, tables: &CompiledTables, new_slots: &[u32]) -> Result<u32, XdpError> {
        let desired = self.desired() + 1;
        self.install_as(tables, Some(new_slots), &[], desired)
    }

    /// Installs `tables` from a fresh compiler (one that shares no slots
    /// with what is installed) as the next generation. Its records go into
    /// the other half of the rule and action slot space, so the active
    /// generation's records stay untouched until the flip. Every rule's
    /// counter starts from zero.
    ///
    /// # Errors
    /// As [`XdpInstance::install`].
    pub fn install_rebuilt(&mut self, tables: &CompiledTables) -> Result<u32, XdpError> {
        let desired = self.desired() + 1;
        self.install_as(tables, None, &[], desired)
    }

    /// Installs `tables` as the next generation, labelled desired
    /// generation `desired`: a patch of what is installed with `new_slots`
    /// (as [`XdpInstance::install`]), or with `None` a fresh compile (as
    /// [`XdpInstance::install_rebuilt`]). After the flip each rule in
    /// `moves`, (counters slot it leaves, slot it takes in `tables`),
    /// keeps its counts. The install is journaled in the maps, so that a
    /// process taking over after a crash at any point knows which
    /// generation runs and finishes the moves ([`XdpInstance::recover`]).
    ///
    /// # Errors
    /// As [`XdpInstance::install`].
    pub fn install_as(
        &mut self,
        tables: &CompiledTables,
        new_slots: Option<&[u32]>,
        moves: &[(u32, u32)],
        desired: u64,
    ) -> Result<u32, XdpError> {
        match new_slots {
            Some(slots) => self.install_into(tables, slots, self.active_half(), moves, desired),
            None => {
                let slots: Vec<u32> = tables.live_rules().map(|(s, _)| s).collect();
                self.install_into(tables, &slots, 1 - self.active_half(), moves, desired)
            }
        }
    }

    /// The first counters slot of the active generation's half: a rule in
    /// compiler slot `s` counts into slot `slot_base() + s`.
    pub fn slot_base(&self) -> u32 {
        self.rule_base(self.active_half())
    }

    /// The half of the slot space the active generation's records are in.
    fn active_half(&self) -> u32 {
        self.banks[(self.generation & 1) as usize]
            .as_ref()
            .map_or(self.adopted_half, |l| l.half)
    }

    fn rule_base(&self, half: u32) -> u32 {
        half * (self.limits.rules / 2)
    }

    fn action_base(&self, half: u32) -> u32 {
        half * (self.limits.action_records / 2)
    }

    fn install_into(
        &mut self,
        tables: &CompiledTables,
        new_slots: &[u32],
        half: u32,
        moves: &[(u32, u32)],
        desired: u64,
    ) -> Result<u32, XdpError> {
        self.check_fits(tables)?;
        self.settle()?;
        let next = self.generation.wrapping_add(1);
        let bank = (next & 1) as usize;
        let active = self.banks[1 - bank].clone();
        let (rbase, abase) = (self.rule_base(half), self.action_base(half));
        // Counters beyond what this half ever held are still zero.
        let written_before = self.high_water[half as usize];
        let (no_rules, no_actions) = (Chunked::default(), Chunked::default());
        let same_half = active.as_ref().filter(|l| l.half == half);
        let before_rules = same_half.map_or(&no_rules, |l| &l.tables.rules);
        let before_actions = same_half.map_or(&no_actions, |l| &l.tables.actions);

        let mut freed = Vec::new();
        let (mut slots, mut records): (Vec<u32>, Vec<dse_ebpf::RuleRecord>) = tables
            .rules
            .changed_since(before_rules)
            .filter(|(i, r)| {
                // Emptied after the flip: the active generation may read them.
                if r.live == 0 {
                    freed.push(rbase + *i as u32);
                }
                r.live != 0
            })
            .map(|(i, r)| {
                let mut rec = mirror::rule(r);
                rec.first_action += abase;
                (rbase + i as u32, rec)
            })
            .unzip();
        let len = tables.rules.len() as u32;
        if same_half.is_none() {
            // A fresh compile into this half: empty whatever an older
            // generation left beyond the new tables (no active one reads it).
            let stale = len..self.high_water[half as usize].max(len);
            slots.extend(stale.clone().map(|s| rbase + s));
            records.extend(stale.map(|_| dse_ebpf::RuleRecord::default()));
            self.high_water[half as usize] = len;
        } else {
            self.high_water[half as usize] = self.high_water[half as usize].max(len);
        }
        self.rules
            .write(&slots, &records)
            .map_err(io_err(maps::RULES, "write"))?;
        let (idx, actions): (Vec<u32>, Vec<dse_ebpf::ActionRecord>) = tables
            .actions
            .changed_since(before_actions)
            .map(|(i, a)| (abase + i as u32, mirror::action(a)))
            .unzip();
        self.actions
            .write(&idx, &actions)
            .map_err(io_err(maps::ACTIONS, "write"))?;
        if active
            .as_ref()
            .is_none_or(|l| l.tables.options != tables.options)
        {
            let mut pool = dse_ebpf::OptionPool {
                bytes: [0; dse_ebpf::limits::OPTIONS_BYTES],
            };
            pool.bytes[..tables.options.len()].copy_from_slice(&tables.options);
            Array::<_, dse_ebpf::OptionPool>::try_from(self.map(maps::OPTIONS))
                .and_then(|mut a| a.set(0, pool, 0))
                .map_err(map_err(maps::OPTIONS, "update"))?;
        }
        // A patch keeps the ports and meters (the same `Arc`s): rewriting
        // them cost a one-rule patch two system calls per port.
        let same = |a: &CompiledTables| {
            Arc::ptr_eq(&a.ports, &tables.ports) && Arc::ptr_eq(&a.meters, &tables.meters)
        };
        if active.as_ref().is_none_or(|l| !same(&l.tables)) {
            self.write_ports_and_meters(tables)?;
        }
        let zeroed: Vec<u32> = new_slots
            .iter()
            .filter(|s| **s < written_before)
            .map(|s| rbase + s)
            .collect();
        self.zero_counters(&zeroed)?;
        self.write_bank(tables, bank, half, active.as_ref())?;
        let moves: Vec<dse_ebpf::MoveEntry> = moves
            .iter()
            .map(|&(from, to)| dse_ebpf::MoveEntry {
                from,
                to: rbase + to,
            })
            .collect();
        self.journal_next(next, desired, &moves)?;
        Array::<_, dse_ebpf::State>::try_from(self.map(maps::STATE))
            .and_then(|mut a| {
                a.set(
                    0,
                    dse_ebpf::State {
                        generation: next,
                        half,
                    },
                    0,
                )
            })
            .map_err(map_err(maps::STATE, "flip"))?;
        self.generation = next;
        self.foreign[bank].clear();
        self.foreign_active = None;
        if !moves.is_empty() {
            self.pending = Some(Pending {
                flipped: std::time::Instant::now(),
                moves,
            });
        }
        let empty = vec![dse_ebpf::RuleRecord::default(); freed.len()];
        self.rules
            .write(&freed, &empty)
            .map_err(io_err(maps::RULES, "empty"))?;
        self.banks[bank] = Some(Loaded {
            tables: Arc::new(tables.clone()),
            half,
        });
        Ok(next)
    }

    /// Whether `tables` grown by `rules` more rules with `actions` more
    /// action records would still fit one half of the slot space (what a
    /// patch needs: the slots it frees are reused only after the flip).
    pub fn patch_fits(&self, tables: &CompiledTables, rules: usize, actions: usize) -> bool {
        tables.rules.len() + rules <= self.limits.rules as usize / 2
            && tables.actions.len() + actions <= self.limits.action_records as usize / 2
    }

    fn check_fits(&self, tables: &CompiledTables) -> Result<(), XdpError> {
        let checks = [
            // Each half of the slot space must hold a whole generation.
            (
                "rule slots",
                tables.rules.len(),
                self.limits.rules as usize / 2,
            ),
            (
                "action records",
                tables.actions.len(),
                self.limits.action_records as usize / 2,
            ),
            (
                "Geneve option bytes",
                tables.options.len(),
                dse_ebpf::limits::OPTIONS_BYTES,
            ),
            (
                "meters",
                tables.meters.len(),
                dse_ebpf::limits::MAX_METERS as usize,
            ),
        ];
        for (what, need, have) in checks {
            if need > have {
                return Err(XdpError::TooLarge { what, need, have });
            }
        }
        Ok(())
    }

    fn write_ports_and_meters(&mut self, tables: &CompiledTables) -> Result<(), XdpError> {
        let mut ports = Array::<_, dse_ebpf::PortRecord>::try_from(self.map(maps::PORTS))
            .map_err(map_err(maps::PORTS, "open"))?;
        for (i, p) in tables.ports.iter().enumerate() {
            let mut rec = ports
                .get(&(i as u32), 0)
                .map_err(map_err(maps::PORTS, "read"))?;
            rec.present = p.present;
            rec.default_drop = p.default_drop;
            ports
                .set(i as u32, rec, 0)
                .map_err(map_err(maps::PORTS, "update"))?;
        }
        let mut cfg = Array::<_, dse_ebpf::MeterRecord>::try_from(self.map(maps::METER_CFG))
            .map_err(map_err(maps::METER_CFG, "open"))?;
        let mut changed = Vec::new();
        for (i, m) in tables.meters.iter().enumerate() {
            let want = mirror::meter(m);
            let have = cfg
                .get(&(i as u32), 0)
                .map_err(map_err(maps::METER_CFG, "read"))?;
            if have != want {
                cfg.set(i as u32, want, 0)
                    .map_err(map_err(maps::METER_CFG, "update"))?;
                changed.push((i as u32, want));
            }
        }
        let mut state = Array::<_, dse_ebpf::MeterState>::try_from(self.map(maps::METERS))
            .map_err(map_err(maps::METERS, "open"))?;
        for (i, m) in changed {
            // A new or reconfigured meter starts full, as Bucket::full.
            let full = dse_ebpf::MeterState {
                nano_tokens: m.burst.saturating_mul(1_000_000_000),
                ..Default::default()
            };
            state
                .set(i, full, 0)
                .map_err(map_err(maps::METERS, "reset"))?;
        }
        Ok(())
    }

    fn zero_counters(&mut self, slots: &[u32]) -> Result<(), XdpError> {
        let cpus = counters::cpus().map_err(io_err(maps::COUNTERS, "counting CPUs"))?;
        let zeros = vec![vec![Count::default(); cpus]; slots.len()];
        counters::write(
            self.fd(maps::COUNTERS),
            self.program.version(),
            slots,
            &zeros,
            cpus,
        )
        .map_err(io_err(maps::COUNTERS, "batch zero"))
    }

    /// Writes `tables`' masks and subtable entries (slots of `half`) into
    /// `bank`; each entry keeps its slot in the other bank, which holds
    /// `active`.
    fn write_bank(
        &mut self,
        tables: &CompiledTables,
        bank: usize,
        half: u32,
        active: Option<&Loaded>,
    ) -> Result<(), XdpError> {
        let by_id = |t: Option<&CompiledTables>| -> FxHashMap<u32, Arc<Subtable>> {
            t.map(|t| t.subtables.iter().map(|s| (s.id, s.clone())).collect())
                .unwrap_or_default()
        };
        let held = self.banks[bank].clone();
        let (now, other) = (by_id(Some(tables)), by_id(active.map(|l| &*l.tables)));
        let other_base = active.map_or(0, |l| self.rule_base(l.half));
        let base = self.rule_base(half);
        // Each change becomes its map key and value at once (a million of
        // them on a first load: no intermediate list).
        let foreign = std::mem::take(&mut self.foreign[bank]);
        let mut w = BankWrites {
            bank,
            base,
            other: &other,
            other_base,
            foreign_active: self.foreign_active.as_ref(),
            keys: Vec::new(),
            values: Vec::new(),
            gone: Vec::new(),
            map: map_fd(&self.ebpf, maps::SUBTABLES),
            failed: None,
        };
        match held {
            // The same compiler's earlier tables: only the difference.
            Some(h) if h.half == half => {
                let was = by_id(Some(&h.tables));
                for (id, st) in &now {
                    match was.get(id) {
                        Some(o) if Arc::ptr_eq(o, st) => {}
                        Some(o) => st.diff(o).iter().for_each(|(k, _, s)| w.push(*id, k, *s)),
                        None => st.entries().for_each(|(k, s)| w.push(*id, &k, Some(s))),
                    }
                }
                for (id, o) in &was {
                    if !now.contains_key(id) {
                        o.entries().for_each(|(k, _)| w.push(*id, &k, None));
                    }
                }
            }
            // Another compiler's (or none): every new entry in, and every
            // old one that the new tables lack out.
            held => {
                let n: usize = tables.subtables.iter().map(|st| st.len()).sum();
                w.keys.reserve(n.min(WRITE_BATCH));
                w.values.reserve(n.min(WRITE_BATCH));
                for st in &tables.subtables {
                    st.entries().for_each(|(k, s)| w.push(st.id, &k, Some(s)));
                }
                // Out unless the new tables hold exactly this key under
                // this id (their mask may differ).
                let out = |id: u32, k: &FlowKey| {
                    now.get(&id)
                        .is_none_or(|n| k.masked(n.mask()) != *k || n.lookup(k).is_none())
                };
                for st in held.iter().flat_map(|h| h.tables.subtables.iter()) {
                    st.entries()
                        .filter(|(k, _)| out(st.id, k))
                        .for_each(|(k, _)| w.push(st.id, &k, None));
                }
                for key in &foreign {
                    let k = mirror::flow_key(&key.key);
                    if out(key.mask_id, &k) {
                        w.push(key.mask_id, &k, None);
                    }
                }
            }
        }
        w.flush();
        if let Some(e) = w.failed {
            return Err(io_err(maps::SUBTABLES, "batch update and delete")(e));
        }
        let base = bank as u32 * dse_ebpf::limits::MAX_MASKS;
        let (idx, masks): (Vec<u32>, Vec<dse_ebpf::MaskRecord>) = (0..dse_ebpf::limits::MAX_MASKS)
            .map(|i| {
                let rec = match tables.subtables.get(i as usize) {
                    Some(st) => dse_ebpf::MaskRecord {
                        mask: mirror::key(st.mask()),
                        best_rank: st.best_rank(),
                        mask_id: st.id,
                        live: 1,
                    },
                    None => dse_ebpf::MaskRecord::default(),
                };
                (base + i, rec)
            })
            .unzip();
        batch::update(self.fd(maps::MASKS), &idx, &masks, 1)
            .map_err(io_err(maps::MASKS, "batch update"))
    }

    /// The rule counters, summed over CPUs, by rule id, of the rules in
    /// `tables`, the active generation's tables.
    ///
    /// # Errors
    /// [`XdpError::Map`] if the counters cannot be read.
    pub fn rule_counters(&self, tables: &CompiledTables) -> Result<BTreeMap<u32, Count>, XdpError> {
        let base = self.rule_base(self.active_half());
        let (ids, slots): (Vec<u32>, Vec<u32>) =
            tables.live_rules().map(|(s, r)| (r.id, base + s)).unzip();
        let per_cpu = counters::read(self.counters_map(), self.program.version(), &slots)
            .map_err(map_err(maps::COUNTERS, "read"))?;
        let mut out: BTreeMap<u32, Count> = BTreeMap::new();
        for (id, counts) in ids.into_iter().zip(per_cpu) {
            let c = out.entry(id).or_default();
            for n in counts {
                c.packets += n.packets;
                c.bytes += n.bytes;
            }
        }
        Ok(out)
    }

    /// The (rule id, counters slot) of the rules recorded in the maps for
    /// the active generation (for a process adopting maps another left).
    ///
    /// # Errors
    /// [`XdpError::Map`] if the maps cannot be read.
    pub fn recorded_rules(&self) -> Result<Vec<(u32, u32)>, XdpError> {
        let half = self.active_half();
        let base = self.rule_base(half);
        let count = self.high_water[half as usize].min(self.limits.rules / 2) as usize;
        let records = self
            .rules
            .read(base, count)
            .map_err(io_err(maps::RULES, "read"))?;
        Ok((base..)
            .zip(records)
            .filter(|(_, r)| r.live != 0)
            .map(|(s, r)| (r.id, s))
            .collect())
    }

    /// The (rule id, counters slot) of the active generation's rules.
    pub fn installed_rules(&self) -> Vec<(u32, u32)> {
        let base = self.rule_base(self.active_half());
        self.banks[(self.generation & 1) as usize]
            .as_ref()
            .map(|l| {
                l.tables
                    .live_rules()
                    .map(|(s, r)| (r.id, base + s))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn counters_map(&self) -> &aya::maps::Map {
        self.ebpf
            .map(maps::COUNTERS)
            .expect("the object has its maps")
    }

    /// The datapath statistics, summed over CPUs.
    ///
    /// # Errors
    /// [`XdpError::Map`] if the statistics cannot be read.
    pub fn stats(&self) -> Result<Stats, XdpError> {
        let per_cpu = PerCpuArray::<_, dse_ebpf::Stats>::try_from(
            self.ebpf.map(maps::STATS).expect("the object has its maps"),
        )
        .and_then(|a| a.get(&0, 0))
        .map_err(map_err(maps::STATS, "read"))?;
        let mut s = Stats::default();
        for v in per_cpu.iter() {
            s.rx_packets += v.rx_packets;
            s.rx_bytes += v.rx_bytes;
            s.output += v.output;
            s.pass += v.pass;
            s.tx += v.tx;
            s.cache_hits += v.cache_hits;
            s.cache_misses += v.cache_misses;
            for (r, n) in DropReason::ALL.iter().zip(v.drops) {
                *s.drops.entry(r.name().to_string()).or_default() += n;
            }
        }
        Ok(s)
    }

    /// Makes interface `ifindex` port `port`: frames arriving there are
    /// classified as from `port`, and `output` to `port` sends there.
    ///
    /// # Errors
    /// [`XdpError::Map`] if a map refuses the update.
    pub fn bind_port(&mut self, port: u16, ifindex: u32) -> Result<(), XdpError> {
        let idx = u32::from(port);
        let mut ports = Array::<_, dse_ebpf::PortRecord>::try_from(self.map(maps::PORTS))
            .map_err(map_err(maps::PORTS, "open"))?;
        let mut rec = ports.get(&idx, 0).map_err(map_err(maps::PORTS, "read"))?;
        rec.ifindex = ifindex;
        ports
            .set(idx, rec, 0)
            .map_err(map_err(maps::PORTS, "update"))?;
        if ifindex >= dse_ebpf::limits::MAX_IFINDEX {
            return Err(XdpError::TooLarge {
                what: "interface index",
                need: ifindex as usize,
                have: dse_ebpf::limits::MAX_IFINDEX as usize - 1,
            });
        }
        Array::<_, u32>::try_from(self.map(maps::IFPORTS))
            .and_then(|mut m| m.set(ifindex, idx + 1, 0))
            .map_err(map_err(maps::IFPORTS, "update"))?;
        let mut devmap = aya::maps::DevMap::try_from(self.map(maps::TX_PORTS))
            .map_err(map_err(maps::TX_PORTS, "open"))?;
        devmap
            .set(idx, ifindex, None, 0)
            .map_err(|e| XdpError::Devmap {
                port,
                ifindex,
                reason: e.to_string(),
            })
    }

    /// The pin of the link that attaches the program to `ifname`.
    fn link_pin(&self, ifname: &str) -> PathBuf {
        super::link_pin(&self.pin_dir, ifname)
    }

    fn program_mut(&mut self) -> &mut Xdp {
        xdp_program_mut(&mut self.ebpf, dse_ebpf::PROGRAM)
    }

    /// Attaches the program to interface `ifname` through a bpf_link, in
    /// native (driver) mode, or in generic (skb) mode when `skb` is set. The
    /// link is pinned beside the maps, so it outlives this process: a later
    /// [`XdpInstance::switch_links`] (here or in another process) moves it
    /// to another program atomically. If a pinned link is already there, the
    /// program takes it over instead.
    ///
    /// # Errors
    /// [`XdpError::Program`] if the kernel refuses the attachment or the pin.
    pub fn attach(&mut self, ifname: &str, skb: bool) -> Result<(), XdpError> {
        let pin = self.link_pin(ifname);
        if pin.exists() {
            return self.switch_link(&pin);
        }
        let mode = if skb {
            aya::programs::XdpMode::Skb
        } else {
            aya::programs::XdpMode::Driver
        };
        let prog = self.program_mut();
        let prog_err = |what| {
            move |e| XdpError::Program {
                what,
                source: Box::new(e),
            }
        };
        let id = prog.attach(ifname, mode).map_err(prog_err("attach"))?;
        let link = prog.take_link(id).map_err(prog_err("take the link"))?;
        let fd_link = FdLink::try_from(link).map_err(|e| XdpError::Link {
            what: "an XDP link as a bpf_link (the kernel attached through netlink)",
            path: pin.clone(),
            reason: e.to_string(),
        })?;
        fd_link.pin(&pin).map_err(|e| XdpError::Link {
            what: "pinning the link",
            path: pin.clone(),
            reason: e.to_string(),
        })?;
        Ok(())
    }

    /// Moves every link pinned beside the maps to this instance's program,
    /// each with one atomic `BPF_LINK_UPDATE`: traffic never sees a gap.
    ///
    /// # Errors
    /// [`XdpError::Link`] if a pin cannot be opened or updated.
    pub fn switch_links(&mut self) -> Result<usize, XdpError> {
        let entries = std::fs::read_dir(&self.pin_dir).map_err(|source| XdpError::Io {
            what: "listing the pins in",
            path: self.pin_dir.clone(),
            source,
        })?;
        let mut pins: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("link_"))
            })
            .collect();
        pins.sort();
        for pin in &pins {
            self.switch_link(pin)?;
        }
        Ok(pins.len())
    }

    fn switch_link(&mut self, pin: &Path) -> Result<(), XdpError> {
        let link_err = |what| {
            let path = pin.to_path_buf();
            move |e: String| XdpError::Link {
                what,
                path,
                reason: e,
            }
        };
        let pinned = PinnedLink::from_pin(pin)
            .map_err(|e| link_err("opening the pinned link")(e.to_string()))?;
        let link = aya::programs::xdp::XdpLink::try_from(FdLink::from(pinned))
            .map_err(|e| link_err("the pinned link as an XDP link")(e.to_string()))?;
        let prog = self.program_mut();
        let id = prog
            .attach_to_link(link)
            .map_err(|e| link_err("updating the link to the new program")(e.to_string()))?;
        // Keep the link pinned, not owned: dropping the instance must not detach it.
        drop(
            prog.take_link(id)
                .map_err(|e| link_err("releasing the link")(e.to_string()))?,
        );
        Ok(())
    }

    /// Takes over another instance's view of what is installed (after
    /// loading a new program over the same maps).
    pub fn take_over(&mut self, old: &XdpInstance) {
        self.generation = old.generation;
        self.adopted_half = old.active_half();
        self.high_water = old.high_water;
        self.banks = old.banks.clone();
        self.journal = old.journal;
        self.pending = old.pending.clone();
        self.foreign = old.foreign.clone();
        self.foreign_active = old.foreign_active.clone();
    }

    /// The counters map slots of the active generation's rules.
    pub fn installed_slots(&self) -> Vec<u32> {
        self.installed_rules().into_iter().map(|(_, s)| s).collect()
    }

    /// This instance's per-CPU counts of counters map `slots`.
    ///
    /// # Errors
    /// [`XdpError::Map`] if the counters cannot be read.
    pub fn slot_counts(&self, slots: &[u32]) -> Result<Vec<Vec<Count>>, XdpError> {
        counters::read(self.counters_map(), self.program.version(), slots)
            .map_err(map_err(maps::COUNTERS, "read"))
    }

    /// The counts of the active generation's rules, summed.
    ///
    /// # Errors
    /// [`XdpError::Map`] if the counters cannot be read.
    pub fn counter_total(&self) -> Result<Count, XdpError> {
        let slots = self.installed_slots();
        let Some(sum) = self.ebpf.program(dse_ebpf::SUM_PROGRAM) else {
            return counters::total(self.counters_map(), self.program.version(), &slots)
                .map_err(map_err(maps::COUNTERS, "read"));
        };
        let sum: &Xdp = sum.try_into().expect("an XDP program");
        let cpus = counters::cpus().map_err(io_err(maps::COUNTERS, "counting CPUs"))?;
        let mut total = Count::default();
        let mut frame = Vec::with_capacity(16 + 4 * dse_ebpf::SUM_BATCH);
        let mut out = vec![0u8; 16 + 4 * dse_ebpf::SUM_BATCH];
        for cpu in 0..cpus {
            let _pinned = PinnedToCpu::new(cpu);
            for chunk in slots.chunks(dse_ebpf::SUM_BATCH) {
                frame.clear();
                frame.resize(16, 0);
                for s in chunk {
                    frame.extend_from_slice(&s.to_ne_bytes());
                }
                let mut opts = TestRunOptions::new();
                opts.data_in = Some(&frame);
                opts.data_out = Some(&mut out);
                let r = sum.test_run(opts).map_err(|e| XdpError::Program {
                    what: "counter sum run",
                    source: Box::new(e),
                })?;
                if r.return_value != 1 {
                    return Err(XdpError::Link {
                        what: "summing counters",
                        path: self.pin_dir.clone(),
                        reason: format!(
                            "the sum program returned {} rather than XDP_DROP (a slot out of range)",
                            r.return_value
                        ),
                    });
                }
                total.packets += u64::from_ne_bytes(out[..8].try_into().expect("8 bytes"));
                total.bytes += u64::from_ne_bytes(out[8..16].try_into().expect("8 bytes"));
            }
        }
        Ok(total)
    }

    /// Adds per-CPU counts to the counters of `slots` (`counts[i]` for
    /// `slots[i]`, one value per CPU), each CPU's with atomic adds by the
    /// merge program run on that CPU, so that increments the datapath makes
    /// meanwhile are never lost.
    ///
    /// # Errors
    /// [`XdpError`] if a run fails.
    pub fn merge_counts(&mut self, slots: &[u32], counts: &[Vec<Count>]) -> Result<(), XdpError> {
        let cpus = counters::cpus().map_err(io_err(maps::COUNTERS, "counting CPUs"))?;
        for cpu in 0..cpus {
            let entries: Vec<dse_ebpf::MergeEntry> = slots
                .iter()
                .zip(counts)
                .filter_map(|(s, per_cpu)| {
                    let c = per_cpu.get(cpu).copied().unwrap_or_default();
                    (c != Count::default()).then_some(dse_ebpf::MergeEntry {
                        slot: *s,
                        pad: 0,
                        packets: c.packets,
                        bytes: c.bytes,
                    })
                })
                .collect();
            if entries.is_empty() {
                continue;
            }
            self.run_entries(
                dse_ebpf::MERGE_PROGRAM,
                cpu,
                &entries,
                dse_ebpf::MERGE_BATCH,
                "merging counters",
            )?;
        }
        Ok(())
    }

    /// Runs program `name` on CPU `cpu` once per `batch` of `entries`, each
    /// batch handed in as the frame. The frame is padded with zeroes to
    /// whole entries of at least an Ethernet header's worth (the kernel's
    /// minimum); the programs take an entry of zeroes as nothing to do.
    /// The program must return `XDP_DROP`; anything else means an entry
    /// named a slot out of range. `what` names the step in errors.
    pub(super) fn run_entries<T: aya::Pod>(
        &self,
        name: &'static str,
        cpu: usize,
        entries: &[T],
        batch: usize,
        what: &'static str,
    ) -> Result<(), XdpError> {
        let _pinned = PinnedToCpu::new(cpu);
        let prog = xdp_program(&self.ebpf, name);
        let min = 14usize.next_multiple_of(size_of::<T>());
        for chunk in entries.chunks(batch) {
            // SAFETY: T is Pod: repr(C) plain integers without padding.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    chunk.as_ptr().cast::<u8>(),
                    std::mem::size_of_val(chunk),
                )
            };
            let mut frame = bytes.to_vec();
            frame.resize(frame.len().max(min), 0);
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(&frame);
            let r = prog.test_run(opts).map_err(|e| XdpError::Program {
                what,
                source: Box::new(e),
            })?;
            if r.return_value != 1 {
                return Err(XdpError::Link {
                    what,
                    path: self.pin_dir.clone(),
                    reason: format!(
                        "{name} returned {} rather than XDP_DROP (a slot out of range)",
                        r.return_value
                    ),
                });
            }
        }
        Ok(())
    }

    /// The meter buckets, by meter index (`last_ns` on CLOCK_MONOTONIC).
    ///
    /// # Errors
    /// [`XdpError::Map`] if the buckets cannot be read.
    pub fn meter_buckets(&self, n: usize) -> Result<Vec<Bucket>, XdpError> {
        let state = Array::<_, dse_ebpf::MeterState>::try_from(
            self.ebpf
                .map(maps::METERS)
                .expect("the object has its maps"),
        )
        .map_err(map_err(maps::METERS, "open"))?;
        (0..n as u32)
            .map(|i| {
                state
                    .get(&i, 0)
                    .map(|m| Bucket {
                        nano_tokens: m.nano_tokens,
                        last_ns: m.last_ns,
                    })
                    .map_err(map_err(maps::METERS, "read"))
            })
            .collect()
    }

    /// Sets meter `i`'s bucket (`last_ns` on CLOCK_MONOTONIC).
    ///
    /// # Errors
    /// [`XdpError::Map`] if the update fails.
    pub fn set_meter_bucket(&mut self, i: u32, b: Bucket) -> Result<(), XdpError> {
        Array::<_, dse_ebpf::MeterState>::try_from(self.map(maps::METERS))
            .and_then(|mut a| {
                a.set(
                    i,
                    dse_ebpf::MeterState {
                        nano_tokens: b.nano_tokens,
                        last_ns: b.last_ns,
                        ..Default::default()
                    },
                    0,
                )
            })
            .map_err(map_err(maps::METERS, "update"))
    }

    /// Makes test runs arrive on port `in_port`. Without a context, a test
    /// run comes in on the namespace's loopback device, ifindex 1 (a context
    /// naming another device is refused unless that device has registered
    /// XDP receive queues).
    fn arrive_on_loopback(&mut self, in_port: u16) -> Result<(), XdpError> {
        const LO: u32 = 1;
        if self.arrives_on == Some(in_port) {
            return Ok(());
        }
        Array::<_, u32>::try_from(self.map(maps::IFPORTS))
            .and_then(|mut m| m.set(LO, u32::from(in_port) + 1, 0))
            .map_err(map_err(maps::IFPORTS, "update"))?;
        self.arrives_on = Some(in_port);
        Ok(())
    }

    /// Runs the program `repeat` times on `frame` from port `in_port` with
    /// BPF_PROG_TEST_RUN and returns the kernel's average time per run.
    /// The frame is not reset between runs: actions that change its size
    /// must be paired so that each run leaves it as it found it.
    ///
    /// # Errors
    /// [`XdpError`] if the run fails.
    pub fn time_runs(
        &mut self,
        in_port: u16,
        frame: &[u8],
        repeat: u32,
    ) -> Result<std::time::Duration, XdpError> {
        self.arrive_on_loopback(in_port)?;
        let prog = xdp_program(&self.ebpf, dse_ebpf::PROGRAM);
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat;
        prog.test_run(opts)
            .map(|r| r.duration)
            .map_err(|e| XdpError::Program {
                what: "timed test run",
                source: Box::new(e),
            })
    }

    /// Runs the program once on `frame` as if it came in on port `in_port`
    /// (BPF_PROG_TEST_RUN, on this thread's CPU pinned to CPU 0 for the
    /// call). Returns the verdict and the frame as the program left it.
    ///
    /// # Errors
    /// [`XdpError`] if the run or a map access fails.
    pub fn run(&mut self, in_port: u16, frame: &[u8]) -> Result<(Verdict, Vec<u8>), XdpError> {
        self.run_many([(in_port, frame)])
            .pop()
            .expect("one answer for one frame")
    }

    /// [`XdpInstance::run`] for each of `frames`, the answers in their
    /// order. Loaded for test runs only, the frames are split over this
    /// machine's CPUs, a thread pinned to each, each frame carrying its port;
    /// otherwise they run on CPU 0, the arrival port set when it changes.
    pub fn run_many<'f>(
        &mut self,
        frames: impl IntoIterator<Item = (u16, &'f [u8])>,
    ) -> Vec<Result<(Verdict, Vec<u8>), XdpError>> {
        if !self.verdict_in_retval {
            let _cpu = PinnedToCpu::new(0);
            let (mut input, mut out) = (Vec::new(), Vec::new());
            return frames
                .into_iter()
                .map(|(in_port, frame)| {
                    self.arrive_on_loopback(in_port)?;
                    let prog = xdp_program(&self.ebpf, dse_ebpf::PROGRAM);
                    self.run_here(prog, None, frame, &mut input, &mut out)
                })
                .collect();
        }
        let frames: Vec<(u16, &[u8])> = frames.into_iter().collect();
        let cpus = match frames.len() {
            // Not worth a thread.
            0 | 1 => 1,
            _ => std::thread::available_parallelism().map_or(1, usize::from),
        };
        let per = frames.len().div_ceil(cpus).max(1);
        let this = &*self;
        std::thread::scope(|s| {
            let parts: Vec<_> = frames
                .chunks(per)
                .enumerate()
                .map(|(cpu, part)| {
                    s.spawn(move || {
                        let _cpu = PinnedToCpu::new(cpu);
                        let (mut input, mut out) = (Vec::new(), Vec::new());
                        let prog = xdp_program(&this.ebpf, dse_ebpf::PROGRAM);
                        part.iter()
                            .map(|&(in_port, frame)| {
                                this.run_here(prog, Some(in_port), frame, &mut input, &mut out)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts
                .into_iter()
                .flat_map(|p| p.join().expect("a test run thread does not panic"))
                .collect()
        })
    }

    /// One test run of `frame` through `prog` (this object's datapath
    /// program) on this CPU: with `in_port` (loaded for test runs only),
    /// the frame carries it; without, the arrival port is set. `input` and
    /// `out` are room kept from run to run.
    fn run_here(
        &self,
        prog: &Xdp,
        in_port: Option<u16>,
        frame: &[u8],
        input: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(Verdict, Vec<u8>), XdpError> {
        let frame = match in_port {
            None => frame,
            Some(port) => {
                input.clear();
                input.extend_from_slice(&port.to_ne_bytes());
                input.extend_from_slice(&[0, 0]);
                input.extend_from_slice(frame);
                input.as_slice()
            }
        };
        // The frame may grow by an encapsulation and a tag.
        out.resize(frame.len() + 512, 0);
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(out);
        let result = prog.test_run(opts).map_err(|e| XdpError::Program {
            what: "test run",
            source: Box::new(e),
        })?;
        let out = out[..result.data_size_out as usize].to_vec();
        let last = if self.verdict_in_retval {
            let r = result.return_value;
            dse_ebpf::Last {
                kind: r & 0xff,
                reason: (r >> 8) & 0xff,
                port: r >> 16,
                pad: 0,
            }
        } else {
            PerCpuArray::<_, dse_ebpf::Last>::try_from(
                self.ebpf.map(maps::LAST).expect("the object has its maps"),
            )
            .and_then(|a| a.get(&0, 0))
            .map_err(map_err(maps::LAST, "read"))?[0]
        };
        let v = match last.kind {
            verdict::OUTPUT => Verdict::Output(last.port as u16),
            verdict::PASS => Verdict::Pass,
            verdict::TX => Verdict::Tx,
            _ => Verdict::Drop(
                DropReason::ALL
                    .get(last.reason as usize)
                    .copied()
                    .unwrap_or(DropReason::Malformed),
            ),
        };
        Ok((v, out))
    }
}

/// The XDP program `name` of a dse object.
/// The subtable map writes of one bank: each entry keeps its slot in the
/// other bank (the active generation's, from `other`); an entry in neither
/// bank is deleted.
struct BankWrites<'a> {
    bank: usize,
    base: u32,
    other: &'a FxHashMap<u32, Arc<Subtable>>,
    other_base: u32,
    /// The other bank's slots when another process installed it (then
    /// `other` is empty).
    foreign_active: Option<&'a FxHashMap<SubKey, u32>>,
    keys: Vec<SubKey>,
    values: Vec<SubValue>,
    gone: Vec<SubKey>,
    /// The subtables map, written a batch at a time.
    map: BorrowedFd<'a>,
    /// The first write that failed (the rest are then skipped).
    failed: Option<std::io::Error>,
}

/// Subtable entries written at a time: a first load of a million rules
/// holds one batch of keys (5 MiB), not every key (80 MiB).
const WRITE_BATCH: usize = 1 << 16;

impl BankWrites<'_> {
    /// Writes the entries pushed so far, and deletes those that neither
    /// bank holds any more (in any order: no generation reads them).
    fn flush(&mut self) {
        if self.failed.is_none() {
            let written = batch::update(self.map, &self.keys, &self.values, 1)
                .and_then(|()| batch::delete(self.map, &self.gone));
            self.failed = written.err();
        }
        self.keys.clear();
        self.values.clear();
        self.gone.clear();
    }

    /// Key `k` of subtable `id` holds rule slot `slot` (of this bank's
    /// half) in this bank, or nothing.
    fn push(&mut self, id: u32, k: &FlowKey, slot: Option<u32>) {
        let key = SubKey {
            mask_id: id,
            pad: 0,
            key: mirror::key(k),
        };
        let mut v = SubValue { slot: [NO_RULE; 2] };
        v.slot[self.bank] = slot.map_or(NO_RULE, |s| self.base + s);
        v.slot[1 - self.bank] = match self.foreign_active {
            Some(slots) => slots.get(&key).copied().unwrap_or(NO_RULE),
            None => self
                .other
                .get(&id)
                .and_then(|s| s.lookup(k))
                .map_or(NO_RULE, |s| self.other_base + s),
        };
        if v.slot == [NO_RULE; 2] {
            self.gone.push(key);
        } else {
            self.keys.push(key);
            self.values.push(v);
        }
        if self.keys.len() + self.gone.len() == WRITE_BATCH {
            self.flush();
        }
    }
}

fn map_fd<'a>(ebpf: &'a Ebpf, name: &'static str) -> BorrowedFd<'a> {
    use aya::maps::Map;
    match ebpf.map(name).expect("the object has its maps") {
        Map::Array(m)
        | Map::HashMap(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m)
        | Map::DevMap(m) => m.fd().as_fd(),
        _ => unreachable!("dse maps are arrays, hashes and a devmap"),
    }
}

fn xdp_program<'a>(ebpf: &'a Ebpf, name: &str) -> &'a Xdp {
    ebpf.program(name)
        .expect("the object has its programs")
        .try_into()
        .expect("they are XDP programs")
}

fn xdp_program_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> &'a mut Xdp {
    ebpf.program_mut(name)
        .expect("the object has its programs")
        .try_into()
        .expect("they are XDP programs")
}

/// Pins the calling thread to one CPU until dropped, restoring its affinity.
pub(super) struct PinnedToCpu {
    saved: Option<libc::cpu_set_t>,
}

impl PinnedToCpu {
    pub(super) fn new(cpu: usize) -> PinnedToCpu {
        // SAFETY: cpu_set_t is plain data; the calls only read and write the
        // sets passed, for the calling thread (pid 0).
        unsafe {
            let mut saved: libc::cpu_set_t = std::mem::zeroed();
            let size = size_of::<libc::cpu_set_t>();
            let ok = libc::sched_getaffinity(0, size, &mut saved) == 0;
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut one);
            // Already there (a caller pinned it): nothing to set or restore.
            if ok && libc::CPU_EQUAL(&saved, &one) {
                return PinnedToCpu { saved: None };
            }
            libc::sched_setaffinity(0, size, &one);
            PinnedToCpu {
                saved: ok.then_some(saved),
            }
        }
    }
}

impl Drop for PinnedToCpu {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: as in `new`.
            unsafe {
                libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), saved);
            }
        }
    }
}
