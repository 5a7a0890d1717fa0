//! One AF_XDP socket of the host path: bound to one receive queue of an
//! interface, with its own UMEM (the `xdp` crate has no shared UMEM). The
//! host path's XDP program redirects the queue's frames into its RX ring;
//! frames to send go out of its TX ring. On veth the kernel copies (copy
//! mode) both ways.
//!
//! A received frame is processed in place in the UMEM ([`FrameBuf`] for
//! [`Packet`]). It leaves through this socket's TX ring as it is, or is
//! copied into another socket's UMEM to leave through that one, and its
//! chunk goes back to the fill ring once the kernel is done with it.

use crate::frame::{FrameBuf, HEADROOM};
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use xdp::slab::Slab;
use xdp::socket::{PollTimeout, XdpSocket, XdpSocketBuilder};
use xdp::umem::{FrameSize, UmemCfgBuilder};
use xdp::{CompletionRing, FillRing, Packet, RingConfigBuilder, RxRing, TxRing, Umem};

/// Chunks of a socket's UMEM: half for the fill ring, half for sending.
const CHUNKS: u32 = 4096;
/// Entries of each ring.
const RING: u32 = 2048;
/// Bytes of a chunk.
const CHUNK: usize = 4096;
/// The largest frame a chunk holds, after the kernel's 256 bytes and the
/// headroom a frame keeps in front to gain headers.
pub const MAX_FRAME: usize = CHUNK - 256 - HEADROOM;

/// Frames in order, as the rings want them: the `xdp` crate's rings push
/// at the front and take from the back; here the front is the end of the
/// deque, so the oldest frame comes first in [`Batch::frames`].
pub struct Batch {
    frames: VecDeque<Packet>,
    /// The most frames it takes.
    limit: usize,
}

// SAFETY: a batch's frames point into the UMEM of an `XskPort` that the
// same owner holds and moves along with it (the host path's worker); no
// one else refers to them.
unsafe impl Send for Batch {}

impl Batch {
    /// An empty batch that takes up to `n` frames.
    pub fn with_capacity(n: usize) -> Batch {
        Batch {
            frames: VecDeque::with_capacity(n),
            limit: n,
        }
    }

    /// Takes up to `n` frames from now on (at most its capacity).
    pub fn limit(&mut self, n: usize) {
        self.limit = n.min(self.frames.capacity());
    }

    /// The frames, oldest first, writable in place.
    pub fn frames(&mut self) -> &mut [Packet] {
        self.frames.make_contiguous()
    }

    /// Takes every frame out, oldest first.
    pub fn drain(&mut self) -> impl Iterator<Item = Packet> + '_ {
        self.frames.drain(..)
    }

    /// Adds `p` last.
    pub fn push(&mut self, p: Packet) {
        self.frames.push_back(p);
    }
}

impl Slab for Batch {
    fn available(&self) -> usize {
        self.limit.saturating_sub(self.frames.len())
    }
    fn len(&self) -> usize {
        self.frames.len()
    }
    fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
    fn push_front(&mut self, packet: Packet) -> Option<Packet> {
        if self.available() == 0 {
            return Some(packet);
        }
        self.frames.push_back(packet);
        None
    }
    fn pop_back(&mut self) -> Option<Packet> {
        self.frames.pop_front()
    }
}

impl FrameBuf for Packet {
    #[inline]
    fn data(&self) -> &[u8] {
        self
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        self
    }
    #[inline]
    fn len(&self) -> usize {
        Packet::len(self)
    }
    /// Into the headroom; past it, the frame moves back in its chunk.
    fn push_front(&mut self, n: usize) -> bool {
        let Ok(n32) = i32::try_from(n) else {
            return false;
        };
        match self.adjust_head(-n32) {
            Ok(()) => true,
            Err(xdp::packet::PacketError::InsufficientHeadroom { head, .. }) => {
                let (shift, len) = (n - head, Packet::len(self));
                if self.adjust_tail(shift as i32).is_err() {
                    return false;
                }
                self.copy_within(0..len, shift);
                self.adjust_head(-(head as i32)).is_ok()
            }
            Err(_) => false,
        }
    }
    fn pull_front(&mut self, n: usize) {
        assert!(
            n <= Packet::len(self),
            "pull_front past the end of the frame"
        );
        self.adjust_head(n as i32).expect("within the frame");
    }
    fn truncate(&mut self, len: usize) {
        let over = Packet::len(self).saturating_sub(len);
        if over > 0 {
            self.adjust_tail(-(over as i32)).expect("within the frame");
        }
    }
}

/// What a socket's kernel side dropped, from `XDP_STATISTICS`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct XskDrops {
    /// Frames the RX ring had no room for: the host path fell behind.
    pub rx_ring_full: u64,
    /// Frames the fill ring had no chunk for.
    pub fill_empty: u64,
    /// Other receive drops (a frame too long for a chunk among them).
    pub rx_dropped: u64,
}

/// An AF_XDP socket bound to queue `queue` of interface `ifindex`.
// Field order is drop order: the rings and the socket go before the UMEM
// they point into.
pub struct XskPort {
    fill: FillRing,
    rx: RxRing,
    tx: TxRing,
    completion: CompletionRing,
    socket: XdpSocket,
    umem: Umem,
    /// Frames handed to the TX ring that the kernel has not completed.
    in_flight: usize,
    /// Frames waiting to be handed to the TX ring.
    pending: Batch,
}

// SAFETY: the rings and the UMEM are memory maps the port owns alone;
// `pending`'s frames point into its own UMEM (see `Batch`).
unsafe impl Send for XskPort {}

impl XskPort {
    /// Opens a socket on queue `queue` of interface `ifindex`, in copy
    /// mode, with its fill ring stocked.
    ///
    /// # Errors
    /// The kernel's refusal: no AF_XDP, no CAP_NET_RAW, or a queue that
    /// does not exist.
    pub fn open(ifindex: u32, queue: u32) -> io::Result<XskPort> {
        let umem_cfg = UmemCfgBuilder {
            frame_size: FrameSize::FourK,
            head_room: HEADROOM as u32,
            frame_count: CHUNKS,
            ..UmemCfgBuilder::default()
        }
        .build()
        .map_err(|e| io::Error::other(format!("UMEM configuration: {e}")))?;
        let umem = Umem::map(umem_cfg)?;
        let mut builder = XdpSocketBuilder::new().map_err(io_error("creating the socket"))?;
        let rings = RingConfigBuilder {
            rx_count: RING,
            tx_count: RING,
            fill_count: RING,
            completion_count: RING,
        }
        .build()
        .map_err(|e| io::Error::other(format!("ring configuration: {e}")))?;
        let (rings, mut flags) = builder
            .build_rings(&umem, rings)
            .map_err(io_error("mapping the rings"))?;
        flags.force_copy();
        let socket = builder
            .bind(xdp::nic::NicIndex::new(ifindex), queue, flags)
            .map_err(io_error("binding"))?;
        let (Some(rx), Some(tx)) = (rings.rx_ring, rings.tx_ring) else {
            return Err(io::Error::other("the socket came without RX or TX ring"));
        };
        let mut port = XskPort {
            fill: rings.fill_ring,
            rx,
            tx,
            completion: rings.completion_ring,
            socket,
            umem,
            in_flight: 0,
            pending: Batch::with_capacity(RING as usize),
        };
        port.refill();
        Ok(port)
    }

    /// The socket, for the XSKMAP and for polling.
    pub fn fd(&self) -> RawFd {
        self.socket.raw_fd()
    }

    /// Takes what the kernel finished sending back into the UMEM, and
    /// stocks the fill ring from it, keeping half the UMEM for sending.
    pub fn refill(&mut self) {
        if self.in_flight > 0 {
            self.in_flight -= self.completion.dequeue(&mut self.umem, self.in_flight);
        }
        let spare = self.umem.allocatable().saturating_sub(CHUNKS as usize / 2);
        if spare > 0 {
            // SAFETY: the UMEM outlives the socket (field order).
            unsafe { self.fill.enqueue(&mut self.umem, spare) };
        }
    }

    /// Moves up to `batch`'s spare room of received frames into it.
    pub fn recv(&mut self, batch: &mut Batch) -> usize {
        // SAFETY: the packets point into this port's UMEM, which outlives
        // them: the host path frees or sends each before the port goes.
        unsafe { self.rx.recv(&self.umem, batch) }
    }

    /// Queues `p`, one of this socket's own frames, to be sent as it is.
    pub fn send_own(&mut self, p: Packet) {
        self.pending.push(p);
    }

    /// Queues a copy of `bytes` to be sent; `false` if no chunk is free or
    /// the frame is longer than one.
    pub fn send_copy(&mut self, bytes: &[u8]) -> bool {
        // SAFETY: the packet is sent or freed before the port goes.
        let Some(mut p) = (unsafe { self.umem.alloc() }) else {
            return false;
        };
        if p.append(bytes).is_err() {
            self.umem.free_packet(p);
            return false;
        }
        self.pending.push(p);
        true
    }

    /// Gives `p`, one of this socket's own frames, back to the UMEM.
    pub fn free(&mut self, p: Packet) {
        self.umem.free_packet(p);
    }

    /// Hands the queued frames to the TX ring and kicks the kernel, which
    /// in copy mode sends only inside `sendto`, and only a few dozen frames
    /// per call: so it is kicked while any frame is in flight, even with
    /// nothing new queued, or the ring stalls. Returns frames dropped
    /// because the ring was full.
    pub fn flush(&mut self) -> usize {
        if !self.pending.is_empty() {
            // SAFETY: the packets are this port's own frames.
            self.in_flight += unsafe { self.tx.send(&mut self.pending) };
        }
        let mut dropped = 0;
        // What the ring had no room for waits no longer: its chunks go back.
        for p in self.pending.drain() {
            self.umem.free_packet(p);
            dropped += 1;
        }
        if self.in_flight > 0 {
            // SAFETY: a zero-length sendto on our own socket.
            let r = unsafe {
                libc::sendto(
                    self.socket.raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                // Busy or out of buffers: the next kick sends them.
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR)
                ) {
                    tracing::warn!("AF_XDP kick: {e}");
                }
            }
        }
        dropped
    }

    /// Whether frames are still in flight on the TX ring.
    pub fn sending(&self) -> bool {
        self.in_flight > 0
    }

    /// Frames handed to the TX ring that the kernel has not completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Waits up to `wait` for a frame to arrive.
    pub fn wait(&self, wait: std::time::Duration) {
        let _ = self.socket.poll_read(PollTimeout::new(Some(wait)));
    }

    /// What the kernel side dropped so far.
    pub fn drops(&self) -> XskDrops {
        self.socket
            .statistics()
            .map(|s| XskDrops {
                rx_ring_full: s.rx_ring_full,
                fill_empty: s.rx_fill_ring_empty_descs,
                rx_dropped: s.rx_dropped,
            })
            .unwrap_or_default()
    }
}

fn io_error(what: &'static str) -> impl Fn(xdp::socket::SocketError) -> io::Error {
    move |e| {
        let kind = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<io::Error>())
            .map_or(io::ErrorKind::Other, io::Error::kind);
        io::Error::new(kind, format!("AF_XDP {what}: {e}"))
    }
}
