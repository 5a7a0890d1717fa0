//! Zero-copy views of the packet formats the datapath reads and writes.
//!
//! Each header type is a `Packet<T: AsRef<[u8]>>` view in the manner of smoltcp:
//! `new_unchecked` wraps a buffer, `new_checked` wraps it only after
//! `check_len` has proved that every fixed field is inside the buffer. Once
//! `check_len` has passed, no accessor panics. Untrusted input always goes
//! through `new_checked`.

/// Declares a zero-copy view: the struct, `new_unchecked` and
/// `new_checked` (which calls the view's own `check_len`).
macro_rules! view {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// Wraps a buffer without checking it.
            pub const fn new_unchecked(buffer: T) -> Self {
                $name { buffer }
            }

            /// Wraps a buffer after `check_len`: once it passes, no accessor panics.
            ///
            /// # Errors
            /// The [`WireError`](super::WireError) of `check_len`.
            pub fn new_checked(buffer: T) -> super::Result<Self> {
                let view = Self::new_unchecked(buffer);
                view.check_len()?;
                Ok(view)
            }

            /// The underlying buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }
    };
}

pub mod checksum;
pub mod ethernet;
pub mod geneve;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod vlan;
pub mod vxlan;

/// A byte range of a header field.
pub(crate) type Field = core::ops::Range<usize>;

/// Why a buffer could not be viewed as a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer ends before the header (or a length field says more than is there).
    #[error("{header} header truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Which header.
        header: &'static str,
        /// Bytes the header needs.
        need: usize,
        /// Bytes the buffer has.
        have: usize,
    },
    /// A field holds a value the format does not allow.
    #[error("{header} header malformed: {what}")]
    Malformed {
        /// Which header.
        header: &'static str,
        /// What is wrong with it.
        what: &'static str,
    },
}

/// Result of a wire operation.
pub type Result<T> = core::result::Result<T, WireError>;

#[inline]
pub(crate) fn need(header: &'static str, need: usize, have: usize) -> Result<()> {
    if have < need {
        Err(WireError::Truncated { header, need, have })
    } else {
        Ok(())
    }
}

#[inline]
pub(crate) fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline]
pub(crate) fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub(crate) fn write_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// EtherType values the datapath knows.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q customer VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad service VLAN tag (QinQ outer).
    pub const QINQ: u16 = 0x88a8;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// Transparent Ethernet bridging (Geneve payload type).
    pub const TEB: u16 = 0x6558;
}

/// IP protocol numbers the datapath knows.
pub mod ipproto {
    /// IPv6 hop-by-hop options.
    pub const HOPOPT: u8 = 0;
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6 routing header.
    pub const ROUTING: u8 = 43;
    /// IPv6 fragment header.
    pub const FRAGMENT: u8 = 44;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// IPv6 no next header.
    pub const NONXT: u8 = 59;
    /// IPv6 destination options.
    pub const DSTOPTS: u8 = 60;
}

/// Well-known UDP ports of the tunnels.
pub mod udpport {
    /// VXLAN (RFC 7348).
    pub const VXLAN: u16 = 4789;
    /// Geneve (RFC 8926).
    pub const GENEVE: u16 = 6081;
}
