//! One AF_PACKET socket bound to one interface: the host path's port on a
//! real interface.
//!
//! Hand-written over libc rather than a crate: it is the host path's I/O
//! hot path and needs `recvmmsg`/`sendmmsg` batches, `PACKET_IGNORE_OUTGOING`
//! and a receive timeout, which the packet-socket crates do not all expose.
//!
//! AF_PACKET taps frames; it does not take them from the kernel. The host
//! stack still sees every frame that arrives, which is why `pass` needs no
//! work here, and why the interfaces of a host-path datapath should carry no
//! addresses of their own.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Largest frame received whole; longer ones (GRO super-frames) are
/// counted as truncated and dropped.
pub const MAX_FRAME: usize = 4096;

/// Control buffer per received frame, in 8-byte words: room for one
/// `tpacket_auxdata` message.
const CONTROL_WORDS: usize = 8;

/// The outer VLAN tag (TPID, TCI) the kernel took off a received frame,
/// from its `PACKET_AUXDATA` control message.
fn vlan_of(hdr: &libc::msghdr) -> Option<(u16, u16)> {
    // SAFETY: `hdr` was filled by recvmmsg; the CMSG macros walk its
    // control buffer within `msg_controllen`, and the auxdata is read
    // unaligned from inside it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                let aux: libc::tpacket_auxdata =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                if aux.tp_status & libc::TP_STATUS_VLAN_VALID == 0 {
                    return None;
                }
                let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                    aux.tp_vlan_tpid
                } else {
                    0x8100
                };
                return Some((tpid, aux.tp_vlan_tci));
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

/// Puts a VLAN tag back after the MAC addresses of the `len`-byte frame in
/// `buf`; returns the new length (`len` unchanged if it does not fit or
/// the frame was truncated).
fn reinsert_vlan(buf: &mut [u8; MAX_FRAME], len: usize, tpid: u16, tci: u16) -> usize {
    if len < 12 || len + 4 > MAX_FRAME {
        return len;
    }
    buf.copy_within(12..len, 16);
    buf[12..14].copy_from_slice(&tpid.to_be_bytes());
    buf[14..16].copy_from_slice(&tci.to_be_bytes());
    len + 4
}

/// A raw packet socket on one interface.
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

fn check(ret: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if ret < 0 {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(ret)
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T, what: &str) -> io::Result<()> {
    // SAFETY: `value` points at a live `T` of the length given.
    let ret = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    check(ret, what).map(drop)
}

impl PacketSocket {
    /// Opens a socket that receives every frame arriving on interface
    /// `ifindex` (not those this or any socket sends out of it) and sends
    /// frames out of it. A receive waits at most `timeout`.
    ///
    /// # Errors
    /// The OS error, naming the step.
    pub fn open(ifindex: u32, timeout: Duration) -> io::Result<PacketSocket> {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // Opened for no protocol, so that it receives nothing until bind
        // names the protocol and the interface together. Opened for
        // ETH_P_ALL, it would take in frames of every interface until the
        // bind, and hand them on as if they came in on this one: frames
        // that then turned back through the datapath.
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = check(
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) },
            "opening an AF_PACKET socket",
        )?;
        // SAFETY: `raw` is a descriptor we just opened and nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        setsockopt(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            &one,
            "PACKET_IGNORE_OUTGOING",
        )?;
        // The kernel takes a frame's outer VLAN tag off into metadata before
        // packet taps see it; auxdata hands it over, and `recv_batch` puts
        // it back, so that the pipeline sees the frame as it was sent.
        setsockopt(
            &fd,
            libc::SOL_PACKET,
            libc::PACKET_AUXDATA,
            &one,
            "PACKET_AUXDATA",
        )?;
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: timeout.subsec_micros() as libc::suseconds_t,
        };
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv, "SO_RCVTIMEO")?;
        // Queues that ride out a worker's scheduling delay on a busy
        // machine: past net.core.rmem_max/wmem_max where allowed
        // (CAP_NET_ADMIN), else as large as those allow.
        let buf: libc::c_int = 8 << 20;
        setsockopt(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &buf,
            "SO_RCVBUFFORCE",
        )
        .or_else(|_| setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &buf, "SO_RCVBUF"))?;
        setsockopt(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            &buf,
            "SO_SNDBUFFORCE",
        )
        .or_else(|_| setsockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDBUF, &buf, "SO_SNDBUF"))?;
        let addr = Self::address(ifindex as i32, proto);
        // SAFETY: `addr` is a valid sockaddr_ll of the length given.
        let ret = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        check(ret, "binding the AF_PACKET socket to its interface")?;
        Ok(PacketSocket {
            fd,
            ifindex: ifindex as i32,
        })
    }

    fn address(ifindex: i32, proto: u16) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; all zeroes is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = ifindex;
        addr
    }

    /// Receives up to `bufs.len()` frames, waiting for the first at most
    /// the socket's timeout; writes each frame's length (or 0 for one that
    /// was truncated) into `lens`. Returns how many were received, 0 on
    /// timeout.
    ///
    /// # Errors
    /// The OS error, other than a timeout or an interrupt.
    pub fn recv_batch(
        &self,
        bufs: &mut [[u8; MAX_FRAME]],
        lens: &mut [usize],
    ) -> io::Result<usize> {
        let n = bufs.len().min(lens.len());
        let mut iovs: Vec<libc::iovec> = bufs[..n]
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: MAX_FRAME,
            })
            .collect();
        // SAFETY: mmsghdr is plain data; all zeroes is valid.
        let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
        let mut controls = vec![[0u64; CONTROL_WORDS]; n];
        for ((m, iov), control) in msgs
            .iter_mut()
            .zip(iovs.iter_mut())
            .zip(controls.iter_mut())
        {
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_control = control.as_mut_ptr().cast();
            m.msg_hdr.msg_controllen = std::mem::size_of_val(control) as _;
        }
        // SAFETY: every header points at a live iovec over a live buffer.
        let got = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(io::Error::new(e.kind(), format!("receiving frames: {e}"))),
            };
        }
        for ((m, len), buf) in msgs[..got as usize]
            .iter()
            .zip(lens.iter_mut())
            .zip(bufs.iter_mut())
        {
            let truncated = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            *len = if truncated { 0 } else { m.msg_len as usize };
            if let Some((tpid, tci)) = vlan_of(&m.msg_hdr) {
                *len = reinsert_vlan(buf, *len, tpid, tci);
            }
        }
        Ok(got as usize)
    }

    /// Sends `frames` out of the interface, in order. Returns how many the
    /// kernel took (the rest were dropped: its queue was full).
    ///
    /// # Errors
    /// The OS error of a failed send.
    pub fn send_batch(&self, frames: &[&[u8]]) -> io::Result<usize> {
        if frames.is_empty() {
            return Ok(0);
        }
        let mut addr = Self::address(self.ifindex, 0);
        addr.sll_halen = 6;
        let mut iovs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            })
            .collect();
        // SAFETY: mmsghdr is plain data; all zeroes is valid.
        let mut msgs: Vec<libc::mmsghdr> = (0..frames.len())
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m.msg_hdr.msg_name = (&mut addr as *mut libc::sockaddr_ll).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        }
        let mut sent = 0;
        while sent < msgs.len() {
            // SAFETY: every header points at a live iovec over a live frame
            // and at `addr`, all outliving the call.
            let got = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs[sent..].as_mut_ptr(),
                    (msgs.len() - sent) as libc::c_uint,
                    0,
                )
            };
            if got < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    _ if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(sent),
                    io::ErrorKind::WouldBlock => return Ok(sent),
                    _ => return Err(io::Error::new(e.kind(), format!("sending frames: {e}"))),
                }
            }
            sent += got as usize;
        }
        Ok(sent)
    }
}
