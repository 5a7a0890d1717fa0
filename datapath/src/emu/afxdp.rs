//! The host path's frames on AF_XDP: an XDP program on each of its
//! interfaces redirects every frame into the AF_XDP socket of the queue it
//! arrived on, and one worker runs the pipeline on them in place in the
//! sockets' UMEMs, run to completion: receive a batch, process it, send.
//!
//! Frames the program takes never reach the kernel stack, so the
//! interfaces may carry addresses: the stack sees a frame only when the
//! rules `pass` it, handed over with `dse_pass` under BPF_PROG_TEST_RUN
//! with live frames (one call per frame: `pass` is the exception on a host
//! path, not its traffic).
//!
//! As for the XDP datapath, a frame carries no pending checksum offload:
//! a sender on a veth in a namespace must finish its checksums (TX
//! checksum offload off, as the labs set it). Frames longer than a chunk
//! would need `XDP_USE_SG`; the host path refuses an interface whose MTU
//! allows them instead, and runs on AF_PACKET there.

use super::host_path::IoCounters;
use super::worker::WorkerIo;
use super::xsk::{Batch, MAX_FRAME, XskDrops, XskPort};
use crate::datapath::DatapathError;
use crate::frame::FrameBuf;
use crate::netdev::interface_index;
use crate::pipeline::{Installed, Pipeline, Verdict};
use crate::rule::MAX_PORTS;
use aya::maps::XskMap;
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::{XdpLink, XdpLinkId};
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The host path's XDP program on its interfaces, and its sockets' map.
/// It holds the interfaces' links: dropping it detaches the program (frames
/// go to the kernel stack again), unless it gave its links back first.
pub(super) struct Taker {
    ebpf: aya::Ebpf,
    xsks: XskMap<aya::maps::MapData>,
    bases: aya::maps::HashMap<aya::maps::MapData, u32, u32>,
    /// Interface name -> the link that runs the program there.
    links: BTreeMap<String, XdpLinkId>,
    /// The interfaces it runs on, or ran on before it gave its links back.
    ifnames: Vec<String>,
}

/// The object loaded with program `names` verified.
fn load(names: &[&str]) -> Result<aya::Ebpf, DatapathError> {
    let mut ebpf = aya::EbpfLoader::new()
        .load(dse_ebpf::hostpath_object())
        .map_err(|e| refused(format!("loading its XDP object: {e}")))?;
    for &name in names {
        program(&mut ebpf, name)?
            .load()
            .map_err(|e| refused(format!("verifying {name}: {e}")))?;
    }
    Ok(ebpf)
}

impl Taker {
    /// Loads the redirect program (attached nowhere yet) and its maps.
    fn load() -> Result<Taker, DatapathError> {
        let mut ebpf = load(&[dse_ebpf::XSK_PROGRAM])?;
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| refused(format!("no map {name}")))
        };
        let xsks =
            XskMap::try_from(take(dse_ebpf::XSK_MAP)?).map_err(|e| refused(e.to_string()))?;
        let bases = aya::maps::HashMap::try_from(take(dse_ebpf::XSK_BASES)?)
            .map_err(|e| refused(e.to_string()))?;
        Ok(Taker {
            ebpf,
            xsks,
            bases,
            links: BTreeMap::new(),
            ifnames: Vec::new(),
        })
    }

    /// Gives interface `ifindex`, the `nth` of the host path, its entries
    /// in the sockets' map.
    fn add_interface(&mut self, ifindex: u32, nth: u32) -> Result<(), DatapathError> {
        self.bases
            .insert(ifindex, nth * dse_ebpf::XSK_QUEUES, 0)
            .map_err(|e| refused(format!("adding interface {ifindex}: {e}")))
    }

    /// Puts socket `fd` in the map for receive queue `queue` of the `nth`
    /// interface.
    fn bind(&mut self, nth: u32, queue: u32, fd: std::os::fd::RawFd) -> Result<(), DatapathError> {
        self.xsks
            .set(nth * dse_ebpf::XSK_QUEUES + queue, fd, 0)
            .map_err(|e| refused(format!("adding the socket of queue {queue}: {e}")))
    }

    /// Runs the redirect program on interface `ifname`: on the link pinned
    /// at `pin` if there is one (another XDP program's: one
    /// `BPF_LINK_UPDATE` moves the interface's frames from it to this one,
    /// and the link becomes this host path's), else on a new link (native
    /// mode).
    fn take(&mut self, ifname: &str, pin: Option<&Path>) -> Result<(), DatapathError> {
        let prog = program(&mut self.ebpf, dse_ebpf::XSK_PROGRAM)?;
        let id = match pin.filter(|p| p.exists()) {
            Some(pin) => {
                let fail = |what: &str, e: &dyn std::fmt::Display| {
                    refused(format!("{what} {}: {e}", pin.display()))
                };
                let pinned = PinnedLink::from_pin(pin).map_err(|e| fail("opening", &e))?;
                let link = XdpLink::try_from(FdLink::from(pinned))
                    .map_err(|e| fail("an XDP link at", &e))?;
                let id = prog
                    .attach_to_link(link)
                    .map_err(|e| fail("moving to the host path the link at", &e))?;
                // The link is this host path's now, not the pin's.
                std::fs::remove_file(pin).map_err(|e| fail("unpinning", &e))?;
                id
            }
            None => prog
                .attach(ifname, XdpMode::Driver)
                .map_err(|e| refused(format!("attaching to {ifname}: {e}")))?,
        };
        self.links.insert(ifname.to_string(), id);
        if !self.ifnames.iter().any(|n| n == ifname) {
            self.ifnames.push(ifname.to_string());
        }
        Ok(())
    }

    /// Takes back the links it gave to `pin_dir` ([`Taker::give_back`])
    /// and that are still pinned there.
    pub(super) fn reclaim(&mut self, pin_dir: &Path) -> Result<(), DatapathError> {
        for ifname in self.ifnames.clone() {
            if !self.links.contains_key(&ifname) {
                self.take(&ifname, Some(&crate::xdp::link_pin(pin_dir, &ifname)))?;
            }
        }
        Ok(())
    }

    /// Pins each of its links where an XDP datapath pinned in `pin_dir`
    /// looks for its own ([`crate::xdp::link_pin`]), still running the
    /// redirect program: that datapath's attach then moves each to its
    /// program with one `BPF_LINK_UPDATE`, and no frame meets neither.
    pub(super) fn give_back(&mut self, pin_dir: &Path) -> Result<(), DatapathError> {
        let prog = program(&mut self.ebpf, dse_ebpf::XSK_PROGRAM)?;
        for (ifname, id) in std::mem::take(&mut self.links) {
            let pin = crate::xdp::link_pin(pin_dir, &ifname);
            let fail = |what: &str, e: &dyn std::fmt::Display| {
                refused(format!("{what} of {ifname} at {}: {e}", pin.display()))
            };
            let link = prog
                .take_link(id)
                .map_err(|e| fail("taking the link", &e))?;
            let fd = FdLink::try_from(link).map_err(|e| fail("the link", &e))?;
            fd.pin(&pin).map_err(|e| fail("pinning the link", &e))?;
        }
        Ok(())
    }
}

/// The hand-over of a frame to the kernel stack: `dse_pass` run on it with
/// live frames.
struct Passer(aya::Ebpf);

impl Passer {
    /// Loads the hand-over program and checks that the kernel runs it on
    /// live frames: some kernels refuse them (EPERM), and without them
    /// AF_XDP cannot give the stack what `pass` hands it.
    fn load() -> Result<Passer, DatapathError> {
        let mut passer = load(&[dse_ebpf::PASS_PROGRAM]).map(Passer)?;
        passer.probe()?;
        Ok(passer)
    }

    /// Hands the loopback's stack (no ingress interface given) one header
    /// addressed to no one, with the IEEE's local experimental EtherType:
    /// the stack drops it.
    fn probe(&mut self) -> Result<(), DatapathError> {
        let mut frame = [0u8; 14];
        frame[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
        frame[12..].copy_from_slice(&0x88b5u16.to_be_bytes());
        let prog = program(&mut self.0, dse_ebpf::PASS_PROGRAM)?;
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(&frame);
        opts.repeat = 1;
        opts.attrs = TestRunAttrs::new().xdp_live_frames(1);
        prog.test_run(opts).map(drop).map_err(|e| {
            let cause = std::error::Error::source(&e).map(|s| format!(": {s}"));
            refused(format!(
                "handing frames to the kernel stack needs XDP live frames, which this kernel refuses ({e}{})",
                cause.unwrap_or_default()
            ))
        })
    }

    /// Hands `frame` to the kernel stack as if it arrived on `ifindex`.
    fn pass(&mut self, ifindex: u32, frame: &[u8]) -> Result<(), DatapathError> {
        let prog = program(&mut self.0, dse_ebpf::PASS_PROGRAM)?;
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, ...
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.ctx_in = Some(&ctx);
        opts.repeat = 1;
        opts.attrs = TestRunAttrs::new().xdp_live_frames(1);
        prog.test_run(opts)
            .map(drop)
            .map_err(|e| refused(format!("live frame: {e}")))
    }
}

fn program<'a>(ebpf: &'a mut aya::Ebpf, name: &str) -> Result<&'a mut Xdp, DatapathError> {
    ebpf.program_mut(name)
        .ok_or_else(|| refused(format!("no program {name}")))?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| refused(e.to_string()))
}

/// Why AF_XDP cannot carry a host path, as an I/O error (the host path
/// then falls back to AF_PACKET).
fn refused(reason: String) -> DatapathError {
    DatapathError::Io {
        what: "AF_XDP".into(),
        source: std::io::Error::other(reason),
    }
}

/// Why the host path cannot run on AF_XDP here, if it cannot: its
/// hand-over program does not load, or the kernel refuses to run it on
/// live frames. [`HostPath::start`](super::HostPath::start) then falls back
/// to AF_PACKET, giving this reason.
pub fn af_xdp_refusal() -> Option<String> {
    Passer::load().err().map(|e| e.to_string())
}

/// One socket and the port it serves.
struct Socket {
    /// The port's name in the rules.
    port: String,
    /// Its interface.
    ifindex: u32,
    xsk: XskPort,
}

/// Opens a socket on every receive queue of each interface in
/// `interfaces` (port name -> interface name), fills the program's map
/// and runs it on the interfaces (on the links an XDP datapath pinned in
/// `links`, if given and there): from then on, the interfaces' frames are
/// the host path's. With `to_stack`, it can hand frames to the kernel
/// stack (which needs XDP live frames). Refused, with nothing attached,
/// where AF_XDP is not available.
pub(super) fn open(
    interfaces: &BTreeMap<String, String>,
    links: Option<&Path>,
    io: Arc<IoCounters>,
    quiet: Arc<AtomicU64>,
    to_stack: bool,
) -> Result<(Taker, XskIo), DatapathError> {
    let mut taker = Taker::load()?;
    let passer = if to_stack {
        Some(Passer::load()?)
    } else {
        None
    };
    let mut sockets = Vec::new();
    if interfaces.len() > dse_ebpf::XSK_IFACES as usize {
        return Err(refused(format!(
            "{} interfaces: a host path takes frames from {} at most",
            interfaces.len(),
            dse_ebpf::XSK_IFACES
        )));
    }
    for (nth, (port, ifname)) in (0u32..).zip(interfaces) {
        let ifindex = interface_index(ifname)?;
        taker.add_interface(ifindex, nth)?;
        let mtu = crate::netdev::mtu(ifname)?;
        // A frame is its MTU, an Ethernet header and two VLAN tags.
        if mtu + 22 > MAX_FRAME {
            return Err(refused(format!(
                "interface {ifname} has MTU {mtu}: one chunk holds frames of {MAX_FRAME} bytes (set the MTU to {} or less)",
                MAX_FRAME - 22
            )));
        }
        for queue in 0..crate::netdev::rx_queues(ifname)? {
            if queue >= dse_ebpf::XSK_QUEUES {
                return Err(refused(format!(
                    "interface {ifname} has more than {} receive queues",
                    dse_ebpf::XSK_QUEUES
                )));
            }
            let xsk = XskPort::open(ifindex, queue)
                .map_err(|e| refused(format!("{ifname} queue {queue}: {e}")))?;
            taker.bind(nth, queue, xsk.fd())?;
            sockets.push(Socket {
                port: port.clone(),
                ifindex,
                xsk,
            });
        }
    }
    for ifname in interfaces.values() {
        let pin = links.map(|dir| crate::xdp::link_pin(dir, ifname));
        if let Err(e) = taker.take(ifname, pin.as_deref()) {
            // Links taken over go back where they were.
            if let Some(dir) = links {
                let _ = taker.give_back(dir);
            }
            return Err(e);
        }
    }
    let io = XskIo {
        passer,
        sockets,
        next: 0,
        from: 0,
        batch: Batch::with_capacity(256),
        verdicts: Vec::new(),
        index_of: IndexOf::default(),
        io,
        quiet,
    };
    Ok((taker, io))
}

/// Port index -> the socket to send out of, as of one generation's rules.
#[derive(Default)]
struct IndexOf {
    generation: u64,
    /// Port index -> socket; the first socket of the port's interface.
    out: Vec<Option<usize>>,
    /// Socket -> its port's index.
    port: Vec<Option<u16>>,
}

/// The worker's sockets: [`WorkerIo`] on AF_XDP.
pub(super) struct XskIo {
    /// The hand-over to the stack, if it was asked for.
    passer: Option<Passer>,
    sockets: Vec<Socket>,
    /// The socket `take` looks at first next time (round robin).
    next: usize,
    /// The socket the batch in hand came from.
    from: usize,
    batch: Batch,
    verdicts: Vec<Verdict>,
    index_of: IndexOf,
    io: Arc<IoCounters>,
    /// Sweeps of `take` that found every socket empty and nothing in
    /// flight: a drain waits for two.
    quiet: Arc<AtomicU64>,
}

impl XskIo {
    fn refresh(&mut self, installed: &Installed) {
        if self.index_of.generation == installed.generation && !self.index_of.port.is_empty() {
            return;
        }
        let tables = &installed.tables;
        let mut out = vec![None; usize::from(MAX_PORTS)];
        let mut port = Vec::with_capacity(self.sockets.len());
        for (i, s) in self.sockets.iter().enumerate() {
            let index = tables.port_index(&s.port);
            if let Some(x) = index {
                out[usize::from(x)].get_or_insert(i);
            }
            port.push(index);
        }
        self.index_of = IndexOf {
            generation: installed.generation,
            out,
            port,
        };
    }

    /// Publishes what the kernel side of every socket dropped.
    fn publish_drops(&self) {
        let d = self.sockets.iter().fold(XskDrops::default(), |a, s| {
            let d = s.xsk.drops();
            XskDrops {
                rx_ring_full: a.rx_ring_full + d.rx_ring_full,
                fill_empty: a.fill_empty + d.fill_empty,
                rx_dropped: a.rx_dropped + d.rx_dropped,
            }
        });
        self.io
            .rx_ring_full
            .store(d.rx_ring_full, Ordering::Relaxed);
        self.io.fill_empty.store(d.fill_empty, Ordering::Relaxed);
        self.io.rx_dropped.store(d.rx_dropped, Ordering::Relaxed);
    }
}

impl XskIo {
    /// Sends every frame of the batch in hand out of the first socket of
    /// port `to`, unchanged: the floor of the host path's I/O, with no
    /// pipeline (see [`super::AfXdpFloor`]).
    fn forward_bare(&mut self, to: &str) {
        let to = self.sockets.iter().position(|s| s.port == to);
        let mut batch = std::mem::replace(&mut self.batch, Batch::with_capacity(0));
        for frame in batch.drain() {
            self.send(frame, to);
        }
        self.batch = batch;
        self.flush();
    }

    /// Sends `frame`, one of the batch in hand, out of socket `to` (its
    /// own socket's TX ring as it is; another's as a copy), or drops it.
    fn send(&mut self, frame: xdp::Packet, to: Option<usize>) {
        let from = self.from;
        match to {
            Some(to) if to == from => self.sockets[from].xsk.send_own(frame),
            Some(to) => {
                if !self.sockets[to].xsk.send_copy(frame.data()) {
                    self.io.not_sent.fetch_add(1, Ordering::Relaxed);
                }
                self.sockets[from].xsk.free(frame);
            }
            None => self.sockets[from].xsk.free(frame),
        }
    }

    /// Hands what every socket queued to its TX ring, and kicks it.
    fn flush(&mut self) {
        for s in &mut self.sockets {
            let dropped = s.xsk.flush();
            self.io
                .not_sent
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
    }
}

/// The floor of the host path on AF_XDP: the same sockets, program and
/// copies between UMEMs, run to completion on one thread, with no
/// pipeline: every frame of one interface leaves by the other. What the
/// host path costs beyond it is the pipeline's.
pub struct AfXdpFloor {
    stop: Arc<std::sync::atomic::AtomicBool>,
    io: Arc<IoCounters>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AfXdpFloor {
    /// Forwards every frame of interface `ingress` out of `egress`.
    ///
    /// # Errors
    /// [`DatapathError::Io`] where AF_XDP is refused.
    pub fn start(ingress: &str, egress: &str) -> Result<AfXdpFloor, DatapathError> {
        let interfaces = [("in", ingress), ("out", egress)]
            .into_iter()
            .map(|(p, i)| (p.to_string(), i.to_string()))
            .collect();
        let io = Arc::new(IoCounters::default());
        let (taker, mut xsk) = open(&interfaces, None, Arc::clone(&io), Arc::default(), false)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let halt = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("dse-xsk-floor".into())
            .spawn(move || {
                let _taker = taker;
                while !halt.load(Ordering::Relaxed) {
                    if xsk.take(64) > 0 {
                        xsk.forward_bare("out");
                    } else {
                        xsk.idle(Duration::from_millis(1));
                    }
                }
            })
            .map_err(|source| DatapathError::Io {
                what: "spawning the AF_XDP floor".into(),
                source,
            })?;
        Ok(AfXdpFloor {
            stop,
            io,
            thread: Some(thread),
        })
    }

    /// What its I/O lost.
    pub fn io_counters(&self) -> &IoCounters {
        &self.io
    }
}

impl Drop for AfXdpFloor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl WorkerIo for XskIo {
    fn take(&mut self, max: usize) -> usize {
        let n = self.sockets.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            let s = &mut self.sockets[i].xsk;
            s.refill();
            if s.sending() {
                self.io
                    .not_sent
                    .fetch_add(s.flush() as u64, Ordering::Relaxed);
            }
            self.batch.limit(max);
            let got = s.recv(&mut self.batch);
            if got > 0 {
                self.from = i;
                self.next = (i + 1) % n;
                return got;
            }
        }
        if !self.sockets.iter().any(|s| s.xsk.sending()) {
            self.publish_drops();
            self.quiet.fetch_add(1, Ordering::Release);
        }
        0
    }

    fn process(&mut self, pipeline: &mut Pipeline, installed: &Installed, now_ns: u64) {
        self.refresh(installed);
        self.verdicts.clear();
        match self.index_of.port[self.from] {
            Some(port) => pipeline.process_batch(
                installed,
                self.batch.frames(),
                port,
                now_ns,
                &mut self.verdicts,
            ),
            // Its port left the rules: nothing of it is processed.
            None => self.verdicts.clear(),
        }
    }

    fn emit(&mut self) {
        let from = self.from;
        let mut verdicts = std::mem::take(&mut self.verdicts);
        verdicts.resize(
            self.batch.frames().len(),
            Verdict::Drop(crate::pipeline::DropReason::Miss),
        );
        let mut batch = std::mem::replace(&mut self.batch, Batch::with_capacity(0));
        for (frame, verdict) in batch.drain().zip(verdicts.iter()) {
            let to = match *verdict {
                Verdict::Output(p) => self.index_of.out.get(usize::from(p)).copied().flatten(),
                Verdict::Tx => Some(from),
                Verdict::Pass => {
                    let ifindex = self.sockets[from].ifindex;
                    let passed = match &mut self.passer {
                        Some(p) => p.pass(ifindex, frame.data()),
                        None => Err(refused("no hand-over to the stack".into())),
                    };
                    if let Err(e) = passed {
                        self.io.not_passed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("host path: handing a frame to the stack: {e}");
                    }
                    None
                }
                Verdict::Drop(_) => None,
            };
            self.send(frame, to);
        }
        self.batch = batch;
        self.verdicts = verdicts;
        self.flush();
    }

    fn idle(&mut self, wait: Duration) {
        // Frames in flight need their kicks; otherwise wait on the first
        // socket (most host paths have one queue per interface and two).
        if self.sockets.iter().any(|s| s.xsk.sending()) {
            return;
        }
        if let Some(s) = self.sockets.first() {
            s.xsk.wait(wait.min(Duration::from_millis(10)));
        }
    }
}
