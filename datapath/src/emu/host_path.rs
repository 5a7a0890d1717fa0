//! The host's software path on real interfaces: the emulated datapath on
//! AF_XDP sockets where the kernel allows them, else on AF_PACKET sockets.
//!
//! On AF_XDP (see `afxdp`), an XDP program takes every frame of the
//! interfaces into the sockets and one worker processes them in place, run
//! to completion; the kernel stack sees only what the rules `pass`.
//!
//! On AF_PACKET, one receive thread per interface reads batches and queues
//! them to the workers; one transmit thread drains the workers' output
//! queues into the sockets of the output ports. Frames the rules `pass` are
//! left to the kernel, which received its own copy (AF_PACKET taps, it does
//! not steal).

use super::packet_socket::{MAX_FRAME, PacketSocket};
use super::{EmuConfig, EmuDatapath};
use crate::compile::FlowKey;
use crate::datapath::{Capabilities, Datapath, DatapathError, LifecycleState, Transaction};
use crate::frame::Frame;
use crate::netdev::interface_index;
use crate::pipeline::{Cached, Count, Stats};
use crate::rule::RuleSet;
use crate::snapshot::Snapshot;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Frames per receive or send call.
const BATCH: usize = 32;
/// The least batch on AF_XDP: the kernel sends at most 32 frames per kick
/// in copy mode, and a bigger batch spreads each kick over more frames.
const AF_XDP_BATCH: usize = 64;
/// How long a receive waits before looking at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// Frames the host path's I/O lost, by cause.
#[derive(Debug, Default)]
pub struct IoCounters {
    /// Received frames longer than [`MAX_FRAME`].
    pub truncated: AtomicU64,
    /// Frames that a full socket refused.
    pub not_sent: AtomicU64,
    /// Frames the rules passed that the kernel stack did not take.
    pub not_passed: AtomicU64,
    /// AF_XDP: frames the kernel dropped for a full RX ring (the host
    /// path fell behind), as of the worker's last look.
    pub rx_ring_full: AtomicU64,
    /// AF_XDP: frames the kernel dropped for want of a fill-ring chunk.
    pub fill_empty: AtomicU64,
    /// AF_XDP: frames the kernel dropped otherwise (longer than a chunk).
    pub rx_dropped: AtomicU64,
}

/// How a host path takes and sends frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostIo {
    /// AF_XDP sockets fed by an XDP program: frames are taken, processed
    /// in place.
    AfXdp,
    /// AF_PACKET sockets: frames are tapped and copied.
    AfPacket,
}

impl HostIo {
    /// Its name, as the datapath's status gives it.
    pub fn name(self) -> &'static str {
        match self {
            HostIo::AfXdp => "af_xdp",
            HostIo::AfPacket => "af_packet",
        }
    }
}

/// Which I/O a host path may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoChoice {
    /// AF_XDP, or AF_PACKET where the kernel refuses AF_XDP.
    #[default]
    Auto,
    /// AF_XDP only.
    AfXdp,
    /// AF_PACKET only.
    AfPacket,
}

/// The emulated datapath on real interfaces. Dropping it stops the I/O
/// threads, then the workers.
pub struct HostPath {
    emu: Arc<EmuDatapath>,
    /// What carries its frames, and why not AF_XDP if it fell back.
    mode: (HostIo, Option<String>),
    /// AF_XDP: the worker's count of sweeps that found every socket empty.
    quiet: Option<Arc<AtomicU64>>,
    /// AF_XDP: the program on the interfaces, and their links.
    taker: Option<Box<super::afxdp::Taker>>,
    stop: Arc<AtomicBool>,
    /// Set by [`HostPath::drain`]: receivers end once their socket is
    /// empty, and then the transmitter once nothing is left to send.
    draining: Arc<AtomicBool>,
    io: Arc<IoCounters>,
    /// The receivers, then the transmitter last.
    threads: Vec<JoinHandle<()>>,
}

/// Port index of each named port, as of the rules in force, looked up
/// again when the generation moves.
struct PortIndex {
    generation: u64,
    index: BTreeMap<String, u16>,
}

impl PortIndex {
    fn new() -> PortIndex {
        PortIndex {
            generation: 0,
            index: BTreeMap::new(),
        }
    }

    fn refresh<'a>(&mut self, emu: &EmuDatapath, names: impl IntoIterator<Item = &'a String>) {
        let g = emu.generation();
        if g != self.generation {
            self.index = names
                .into_iter()
                .filter_map(|n| Some((n.clone(), emu.port_index(n)?)))
                .collect();
            self.generation = g;
        }
    }
}

impl HostPath {
    /// Starts the emulated datapath on `rules` on the interface of each
    /// port named in `interfaces` (port name -> interface name): on AF_XDP,
    /// or on AF_PACKET where AF_XDP is refused ([`HostPath::io`] says which
    /// and why).
    ///
    /// # Errors
    /// As [`HostPath::start_with`].
    pub fn start(
        rules: RuleSet,
        config: EmuConfig,
        interfaces: &BTreeMap<String, String>,
    ) -> Result<HostPath, DatapathError> {
        Self::start_with(rules, config, interfaces, IoChoice::Auto)
    }

    /// As [`HostPath::start`], on the I/O `choice` allows. On AF_XDP one
    /// worker runs, whatever `config.workers` says.
    ///
    /// # Errors
    /// [`DatapathError::Rules`] for invalid rules; [`DatapathError::Io`]
    /// naming an interface that does not exist or a socket that cannot be
    /// opened (both need CAP_NET_RAW; AF_XDP also needs its XDP program
    /// attached, which fails where another program holds the interface).
    /// Nothing keeps running then.
    pub fn start_with(
        rules: RuleSet,
        config: EmuConfig,
        interfaces: &BTreeMap<String, String>,
        choice: IoChoice,
    ) -> Result<HostPath, DatapathError> {
        Self::start_on(rules, config, interfaces, None, choice)
    }

    /// Takes the traffic of the XDP datapath pinned in `pin_dir` on
    /// `interfaces`: on AF_XDP, its links move to the host path's program
    /// one by one, each with one `BPF_LINK_UPDATE`, so that every frame
    /// meets one program or the other; the XDP datapath's program then
    /// runs nowhere. Where AF_XDP is refused, the host path starts on
    /// AF_PACKET and the XDP datapath keeps its links: detach it then, and
    /// each frame meets one or the other too (AF_PACKET sees a frame only
    /// once no XDP program takes it).
    ///
    /// # Errors
    /// As [`HostPath::start_with`].
    pub fn take_over(
        rules: RuleSet,
        config: EmuConfig,
        interfaces: &BTreeMap<String, String>,
        pin_dir: &std::path::Path,
    ) -> Result<HostPath, DatapathError> {
        Self::start_on(rules, config, interfaces, Some(pin_dir), IoChoice::Auto)
    }

    /// On AF_XDP (on the links pinned in `links`, if given and there), or
    /// on AF_PACKET as `choice` allows, saying why not AF_XDP.
    fn start_on(
        rules: RuleSet,
        config: EmuConfig,
        interfaces: &BTreeMap<String, String>,
        links: Option<&std::path::Path>,
        choice: IoChoice,
    ) -> Result<HostPath, DatapathError> {
        let refused = match choice {
            IoChoice::AfPacket => None,
            IoChoice::AfXdp | IoChoice::Auto => {
                match Self::start_af_xdp(rules.clone(), config.clone(), interfaces, links) {
                    Ok(host) => return Ok(host),
                    Err(e @ DatapathError::Rules(_)) => return Err(e),
                    Err(e) if choice == IoChoice::AfXdp => return Err(e),
                    Err(e) => {
                        tracing::warn!("host path: AF_XDP refused ({e}); on AF_PACKET");
                        Some(e.to_string())
                    }
                }
            }
        };
        let mut host = Self::start_af_packet(rules, config, interfaces)?;
        host.mode.1 = refused;
        Ok(host)
    }

    /// Pins its interfaces' links where the XDP datapath pinned in
    /// `pin_dir` looks for its own, still running the host path's program:
    /// that datapath's attach then moves each to its own program with one
    /// `BPF_LINK_UPDATE`. Drain the host path afterwards. Nothing to do on
    /// AF_PACKET.
    ///
    /// # Errors
    /// [`DatapathError::Io`] if a link cannot be pinned there.
    pub fn give_back(&mut self, pin_dir: &std::path::Path) -> Result<(), DatapathError> {
        match &mut self.taker {
            Some(t) => t.give_back(pin_dir),
            None => Ok(()),
        }
    }

    /// Takes back the links [`HostPath::give_back`] pinned in `pin_dir`,
    /// where the XDP datapath did not take them: for when that datapath
    /// failed to attach.
    ///
    /// # Errors
    /// [`DatapathError::Io`] if a link cannot be taken back.
    pub fn reclaim(&mut self, pin_dir: &std::path::Path) -> Result<(), DatapathError> {
        match &mut self.taker {
            Some(t) => t.reclaim(pin_dir),
            None => Ok(()),
        }
    }

    fn start_af_xdp(
        rules: RuleSet,
        config: EmuConfig,
        interfaces: &BTreeMap<String, String>,
        links: Option<&std::path::Path>,
    ) -> Result<HostPath, DatapathError> {
        // Checked before any interface is taken.
        crate::compile::Compiler::new(&rules)?;
        let io = Arc::new(IoCounters::default());
        let quiet = Arc::new(AtomicU64::new(0));
        let (taker, xsk) =
            super::afxdp::open(interfaces, links, Arc::clone(&io), Arc::clone(&quiet), true)?;
        let mut xsk = Some(xsk);
        let config = EmuConfig {
            workers: 1,
            batch: config.batch.max(AF_XDP_BATCH),
            ..config
        };
        let emu = EmuDatapath::start_with(rules, config, |_, _| {
            xsk.take().expect("one worker, one set of sockets")
        })?;
        Ok(HostPath {
            emu: Arc::new(emu),
            mode: (HostIo::AfXdp, None),
            quiet: Some(quiet),
            taker: Some(Box::new(taker)),
            stop: Arc::new(AtomicBool::new(false)),
            draining: Arc::new(AtomicBool::new(false)),
            io,
            threads: Vec::new(),
        })
    }

    fn start_af_packet(
        rules: RuleSet,
        config: EmuConfig,
        interfaces: &BTreeMap<String, String>,
    ) -> Result<HostPath, DatapathError> {
        let mut sockets = BTreeMap::new();
        for (port, ifname) in interfaces {
            let ifindex = interface_index(ifname)?;
            let socket = PacketSocket::open(ifindex, POLL).map_err(|source| DatapathError::Io {
                what: format!("port {port} on interface {ifname}"),
                source,
            })?;
            sockets.insert(port.clone(), Arc::new(socket));
        }
        let emu = Arc::new(EmuDatapath::start(rules, config)?);
        let stop = Arc::new(AtomicBool::new(false));
        let draining = Arc::new(AtomicBool::new(false));
        let drained = Arc::new(AtomicU64::new(0));
        let taken = Arc::new(AtomicU64::new(0));
        let io = Arc::new(IoCounters::default());
        let mut threads = Vec::new();
        let receivers = sockets.len() as u64;
        for (port, socket) in &sockets {
            let (emu, io) = (Arc::clone(&emu), Arc::clone(&io));
            let ending = Ending {
                stop: Arc::clone(&stop),
                draining: Arc::clone(&draining),
                drained: Arc::clone(&drained),
                taken: Arc::clone(&taken),
            };
            let (port, socket) = (port.clone(), Arc::clone(socket));
            threads.push(spawn(format!("dse-rx-{port}"), move || {
                receive(&emu, &ending, &io, port, &socket)
            })?);
        }
        let (e, i) = (Arc::clone(&emu), Arc::clone(&io));
        let ending = Ending {
            stop: Arc::clone(&stop),
            draining: Arc::clone(&draining),
            drained: Arc::clone(&drained),
            taken: Arc::clone(&taken),
        };
        threads.push(spawn("dse-tx".into(), move || {
            transmit(&e, &ending, receivers, &i, &sockets)
        })?);
        Ok(HostPath {
            emu,
            mode: (HostIo::AfPacket, None),
            quiet: None,
            taker: None,
            stop,
            draining,
            io,
            threads,
        })
    }

    /// What carries its frames, and why not AF_XDP if it fell back to
    /// AF_PACKET.
    pub fn io(&self) -> (HostIo, Option<&str>) {
        (self.mode.0, self.mode.1.as_deref())
    }

    /// Lets every frame already queued to it through, then stops: each
    /// receiver ends once its socket has been empty for a poll, and the
    /// transmitter once the receivers ended and nothing was left to send
    /// for a while. For a host path whose interfaces no longer bring it
    /// frames (an XDP program took them back), so that none it took is
    /// lost however slowly its threads are scheduled. Gives up after
    /// `within` and stops at once.
    pub fn drain(&mut self, within: Duration) {
        self.draining.store(true, Ordering::Release);
        let deadline = std::time::Instant::now() + within;
        if let Some(quiet) = &self.quiet {
            // Two sweeps that found every socket empty and nothing in
            // flight, both begun after the drain did.
            let from = quiet.load(Ordering::Acquire);
            while quiet.load(Ordering::Acquire) < from + 2 {
                if std::time::Instant::now() > deadline {
                    tracing::warn!("host path: not drained within {within:?}; stopping");
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            return;
        }
        while self.threads.iter().any(|t| !t.is_finished()) {
            if std::time::Instant::now() > deadline {
                tracing::warn!("host path: not drained within {within:?}; stopping");
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// What the I/O lost.
    pub fn io_counters(&self) -> &IoCounters {
        &self.io
    }

    /// The emulated datapath underneath.
    pub fn emu(&self) -> &EmuDatapath {
        &self.emu
    }

    /// The emulated datapath underneath, shared: to drive it from another
    /// thread while this one drains.
    pub fn shared_emu(&self) -> Arc<EmuDatapath> {
        Arc::clone(&self.emu)
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, DatapathError> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|source| DatapathError::Io {
            what: format!("spawning {name}"),
            source,
        })
}

/// How a host path's threads are told to end.
struct Ending {
    /// At once.
    stop: Arc<AtomicBool>,
    /// Once drained (see [`HostPath::drain`]).
    draining: Arc<AtomicBool>,
    /// Receivers that ended.
    drained: Arc<AtomicU64>,
    /// Frames the receivers handed to the workers.
    taken: Arc<AtomicU64>,
}

impl Drop for Ending {
    fn drop(&mut self) {
        self.drained.fetch_add(1, Ordering::AcqRel);
    }
}

fn receive(emu: &EmuDatapath, ending: &Ending, io: &IoCounters, port: String, s: &PacketSocket) {
    let mut bufs = vec![[0u8; MAX_FRAME]; BATCH];
    let mut lens = [0usize; BATCH];
    let mut ports = PortIndex::new();
    while !ending.stop.load(Ordering::Relaxed) {
        let n = match s.recv_batch(&mut bufs, &mut lens) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("host path port {port}: {e}");
                std::thread::sleep(POLL);
                continue;
            }
        };
        if n == 0 {
            // A poll's wait with nothing received: the socket is empty.
            if ending.draining.load(Ordering::Acquire) {
                return;
            }
            continue;
        }
        ports.refresh(emu, [&port]);
        let Some(&index) = ports.index.get(&port) else {
            continue;
        };
        for (buf, &len) in bufs.iter().zip(&lens[..n]) {
            if len == 0 {
                io.truncated.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // The port is in the rules just read; a concurrent change can
            // remove it, and then the frame is not ours to take.
            if emu.inject_blocking(index, Frame::new(&buf[..len])).is_ok() {
                ending.taken.fetch_add(1, Ordering::Release);
            }
        }
    }
}

/// How long the transmitter of a draining host path waits, with nothing
/// to send once the workers went through every frame, for their last
/// outputs.
const SETTLE: Duration = Duration::from_millis(20);

fn transmit(
    emu: &EmuDatapath,
    ending: &Ending,
    receivers: u64,
    io: &IoCounters,
    sockets: &BTreeMap<String, Arc<PacketSocket>>,
) {
    let mut ports = PortIndex::new();
    let mut frames: Vec<Frame> = Vec::with_capacity(BATCH);
    let backoff = crossbeam::utils::Backoff::new();
    let mut idle_since: Option<std::time::Instant> = None;
    while !ending.stop.load(Ordering::Relaxed) {
        ports.refresh(emu, sockets.keys());
        let mut moved = 0;
        for (name, &index) in &ports.index {
            frames.clear();
            while frames.len() < BATCH {
                match emu.recv(index) {
                    Some(e) => frames.push(e.frame),
                    None => break,
                }
            }
            moved += frames.len();
            let views: Vec<&[u8]> = frames.iter().map(Frame::data).collect();
            let sent = sockets[name].send_batch(&views).unwrap_or_else(|e| {
                tracing::error!("host path port {name}: {e}");
                0
            });
            io.not_sent
                .fetch_add((frames.len() - sent) as u64, Ordering::Relaxed);
        }
        // The kernel already has its copy of every passed frame.
        while emu.recv_host().is_some() {
            moved += 1;
        }
        // Drained: the receivers ended, the workers went through every
        // frame they took, and nothing moved for a while.
        if moved == 0
            && ending.drained.load(Ordering::Acquire) >= receivers
            && emu.stats().rx_packets >= ending.taken.load(Ordering::Acquire)
        {
            let since = *idle_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= SETTLE {
                return;
            }
        } else {
            idle_since = None;
        }
        if moved == 0 {
            if backoff.is_completed() {
                std::thread::sleep(Duration::from_micros(100));
            } else {
                backoff.snooze();
            }
        } else {
            backoff.reset();
        }
    }
}

impl Drop for HostPath {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Datapath for HostPath {
    fn cached(&self, key: &FlowKey) -> Result<Vec<Cached>, DatapathError> {
        self.emu.cached(key)
    }
    fn capabilities(&self) -> Capabilities {
        self.emu.capabilities()
    }
    fn apply_as(&self, txn: Transaction, generation: u64) -> Result<(), DatapathError> {
        self.emu.apply_as(txn, generation)
    }
    fn generation(&self) -> u64 {
        self.emu.generation()
    }
    fn set_generation(&self, generation: u64) -> Result<(), DatapathError> {
        self.emu.set_generation(generation)
    }
    fn installs(&self) -> u64 {
        self.emu.installs()
    }
    fn rules(&self) -> RuleSet {
        self.emu.rules()
    }
    fn stats(&self) -> Stats {
        self.emu.stats()
    }
    fn rule_counters(&self) -> BTreeMap<u32, Count> {
        self.emu.rule_counters()
    }
    fn state(&self) -> LifecycleState {
        self.emu.state()
    }
    fn quiesce(&self) -> Result<(), DatapathError> {
        self.emu.quiesce()
    }
    fn snapshot(&self) -> Result<Snapshot, DatapathError> {
        self.emu.snapshot()
    }
    fn restore(&self, snapshot: &Snapshot) -> Result<(), DatapathError> {
        self.emu.restore(snapshot)
    }
    fn resume(&self) -> Result<(), DatapathError> {
        self.emu.resume()
    }
}
