//! A packet buffer with headroom, so that pushing headers in front (VLAN,
//! encap) is as cheap as `bpf_xdp_adjust_head`.

/// Headroom a new frame gets; enough for an IPv6 Geneve encap with options.
pub const HEADROOM: usize = 128;

/// What the pipeline needs of a frame's buffer: its bytes, and room to
/// gain or lose headers at the front and to be cut short. A [`Frame`] on
/// the heap is one; so is a frame in place in an AF_XDP UMEM.
pub trait FrameBuf {
    /// The frame's bytes.
    fn data(&self) -> &[u8];
    /// The frame's bytes, writable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Length of the frame.
    fn len(&self) -> usize {
        self.data().len()
    }
    /// Whether the frame is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Grows the frame by `n` bytes at the front (contents unspecified);
    /// `false`, and the frame unchanged, if its buffer has no room for
    /// them (the XDP datapath's `bpf_xdp_adjust_head` failing).
    fn push_front(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the front.
    ///
    /// # Panics
    /// If the frame is shorter than `n`.
    fn pull_front(&mut self, n: usize);
    /// Shortens the frame to `len` bytes (no-op if it is not longer).
    fn truncate(&mut self, len: usize);
}

/// A packet: `buf[head..]` is the frame.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    buf: Vec<u8>,
    head: usize,
}

impl Frame {
    /// A frame holding a copy of `bytes`, with [`HEADROOM`] in front.
    pub fn new(bytes: &[u8]) -> Frame {
        let mut buf = Vec::with_capacity(HEADROOM + bytes.len());
        buf.resize(HEADROOM, 0);
        buf.extend_from_slice(bytes);
        Frame {
            buf,
            head: HEADROOM,
        }
    }

    /// Replaces the contents with `bytes`, reusing the allocation.
    pub fn reset(&mut self, bytes: &[u8]) {
        self.buf.truncate(HEADROOM);
        self.buf.resize(HEADROOM, 0);
        self.buf.extend_from_slice(bytes);
        self.head = HEADROOM;
    }

    /// The frame's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.head..]
    }

    /// The frame's bytes, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..]
    }

    /// Length of the frame.
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    /// Whether the frame is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Grows the frame by `n` bytes at the front (contents unspecified),
    /// reallocating only when the headroom is used up.
    pub fn push_front(&mut self, n: usize) {
        if n > self.head {
            let grow = n.max(HEADROOM);
            let mut buf = Vec::with_capacity(self.buf.len() + grow);
            buf.resize(grow, 0);
            buf.extend_from_slice(&self.buf);
            self.buf = buf;
            self.head += grow;
        }
        self.head -= n;
    }

    /// Removes `n` bytes from the front.
    ///
    /// # Panics
    /// If the frame is shorter than `n`.
    pub fn pull_front(&mut self, n: usize) {
        assert!(n <= self.len(), "pull_front past the end of the frame");
        self.head += n;
    }

    /// Consumes the frame, returning its bytes.
    pub fn into_vec(mut self) -> Vec<u8> {
        self.buf.drain(..self.head);
        self.buf
    }
}

impl core::fmt::Debug for Frame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Frame({} bytes:", self.len())?;
        for b in self.data() {
            write!(f, " {b:02x}")?;
        }
        write!(f, ")")
    }
}

impl Frame {
    /// Shortens the frame to `len` bytes (no-op if it is not longer).
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(self.head + len);
    }
}

impl FrameBuf for Frame {
    #[inline]
    fn data(&self) -> &[u8] {
        Frame::data(self)
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        Frame::data_mut(self)
    }
    #[inline]
    fn len(&self) -> usize {
        Frame::len(self)
    }
    /// Always room: the buffer grows when the headroom is used up.
    fn push_front(&mut self, n: usize) -> bool {
        Frame::push_front(self, n);
        true
    }
    fn pull_front(&mut self, n: usize) {
        Frame::pull_front(self, n);
    }
    fn truncate(&mut self, len: usize) {
        Frame::truncate(self, len);
    }
}
