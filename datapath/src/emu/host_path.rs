//! The host's software path on real interfaces: the emulated datapath fed
//! by AF_PACKET sockets, one per port that has an interface.
//!
//! One receive thread per interface reads batches and queues them to the
//! workers; one transmit thread drains the workers' output queues into the
//! sockets of the output ports. Frames the rules `pass` are left to the
//! kernel, which received its own copy (AF_PACKET taps, it does not steal).

use super::packet_socket::{MAX_FRAME, PacketSocket};
use super::{EmuConfig, EmuDatapath};
use crate::datapath::{Capabilities, Datapath, DatapathError, LifecycleState, Transaction};
use crate::frame::Frame;
use crate::netdev::interface_index;
use crate::pipeline::{Count, Stats};
use crate::rule::RuleSet;
use crate::snapshot::Snapshot;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Frames per receive or send call.
const BATCH: usize = 32;
/// How long a receive waits before looking at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// Frames the host path's I/O lost, by cause.
#[derive(Debug, Default)]
pub struct IoCounters {
    /// Received frames longer than [`MAX_FRAME`].
    pub truncated: AtomicU64,
    /// Frames that a full socket refused.
    pub not_sent: AtomicU64,
}

/// The emulated datapath on real interfaces. Dropping it stops the I/O
/// threads, then the workers.
pub struct HostPath {
    emu: Arc<EmuDatapath>,
    stop: Arc<AtomicBool>,
    io: Arc<IoCounters>,
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
    /// Starts the emulated datapath on `rules` and opens a packet socket on
    /// the interface of each port named in `interfaces` (port name ->
    /// interface name).
    ///
    /// # Errors
    /// [`DatapathError::Rules`] for invalid rules; [`DatapathError::Io`]
    /// naming an interface that does not exist or a socket that cannot be
    /// opened (AF_PACKET needs CAP_NET_RAW). Nothing keeps running then.
    pub fn start(
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
        let io = Arc::new(IoCounters::default());
        let mut threads = Vec::new();
        for (port, socket) in &sockets {
            let (emu, stop, io) = (Arc::clone(&emu), Arc::clone(&stop), Arc::clone(&io));
            let (port, socket) = (port.clone(), Arc::clone(socket));
            threads.push(spawn(format!("dse-rx-{port}"), move || {
                receive(&emu, &stop, &io, port, &socket)
            })?);
        }
        let (e, s, i) = (Arc::clone(&emu), Arc::clone(&stop), Arc::clone(&io));
        threads.push(spawn("dse-tx".into(), move || {
            transmit(&e, &s, &i, &sockets)
        })?);
        Ok(HostPath {
            emu,
            stop,
            io,
            threads,
        })
    }

    /// What the I/O lost.
    pub fn io_counters(&self) -> &IoCounters {
        &self.io
    }

    /// The emulated datapath underneath.
    pub fn emu(&self) -> &EmuDatapath {
        &self.emu
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

fn receive(emu: &EmuDatapath, stop: &AtomicBool, io: &IoCounters, port: String, s: &PacketSocket) {
    let mut bufs = vec![[0u8; MAX_FRAME]; BATCH];
    let mut lens = [0usize; BATCH];
    let mut ports = PortIndex::new();
    while !stop.load(Ordering::Relaxed) {
        let n = match s.recv_batch(&mut bufs, &mut lens) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("host path port {port}: {e}");
                std::thread::sleep(POLL);
                continue;
            }
        };
        if n == 0 {
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
            let _ = emu.inject_blocking(index, Frame::new(&buf[..len]));
        }
    }
}

fn transmit(
    emu: &EmuDatapath,
    stop: &AtomicBool,
    io: &IoCounters,
    sockets: &BTreeMap<String, Arc<PacketSocket>>,
) {
    let mut ports = PortIndex::new();
    let mut frames: Vec<Frame> = Vec::with_capacity(BATCH);
    let backoff = crossbeam::utils::Backoff::new();
    while !stop.load(Ordering::Relaxed) {
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
