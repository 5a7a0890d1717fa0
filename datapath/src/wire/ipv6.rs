//! IPv6 header (RFC 8200) and its extension-header chain.

use super::{Field, Result, WireError, ipproto, need, read_u16, write_u16};

mod field {
    use super::Field;
    pub const VER: usize = 0;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Field = 8..24;
    pub const DST: Field = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;

/// The most extension headers the parser walks before it gives up. The XDP
/// program walks the chain with a loop of the same bound.
pub const MAX_EXTENSION_HEADERS: usize = 8;

view!(
    /// A zero-copy view of an IPv6 packet.
    Packet
);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the version and that the header and the payload length are in
    /// the buffer (link-layer padding after the payload is allowed).
    ///
    /// # Errors
    /// [`WireError::Truncated`] or [`WireError::Malformed`].
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        need("ipv6", HEADER_LEN, b.len())?;
        if b[field::VER] >> 4 != 6 {
            return Err(WireError::Malformed {
                header: "ipv6",
                what: "version is not 6",
            });
        }
        need(
            "ipv6",
            HEADER_LEN + usize::from(self.payload_len()),
            b.len(),
        )
    }

    /// Payload length (extension headers included).
    pub fn payload_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::PAYLOAD_LEN.start)
    }

    /// The next header after the fixed header.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src(&self) -> [u8; 16] {
        self.buffer.as_ref()[field::SRC]
            .try_into()
            .expect("16-byte field")
    }

    /// Destination address.
    pub fn dst(&self) -> [u8; 16] {
        self.buffer.as_ref()[field::DST]
            .try_into()
            .expect("16-byte field")
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source address (IPv6 has no header checksum).
    pub fn set_src(&mut self, addr: [u8; 16]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr);
    }

    /// Sets the destination address.
    pub fn set_dst(&mut self, addr: [u8; 16]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr);
    }
}

/// Where the upper-layer header of an IPv6 packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    /// The upper-layer protocol after the extension headers; for a later
    /// fragment, the protocol its fragment header names (the chain is not
    /// walked past that header: the rest is fragment data).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub upper_offset: usize,
    /// Whether a fragment header was seen.
    pub fragment: bool,
    /// Whether that fragment is not the first (its offset is non-zero), so
    /// it carries no upper-layer header.
    pub later_fragment: bool,
}

/// Walks the extension-header chain of a checked IPv6 packet: hop-by-hop,
/// routing, fragment and destination options, at most
/// [`MAX_EXTENSION_HEADERS`] of them.
///
/// # Errors
/// [`WireError::Truncated`] if a header runs past the payload,
/// [`WireError::Malformed`] if the chain is longer than the bound.
pub fn walk_chain(packet: &[u8]) -> Result<Chain> {
    let p = Packet::new_checked(packet)?;
    let end = HEADER_LEN + usize::from(p.payload_len());
    let mut chain = Chain {
        protocol: p.next_header(),
        upper_offset: HEADER_LEN,
        fragment: false,
        later_fragment: false,
    };
    for _ in 0..MAX_EXTENSION_HEADERS {
        let at = chain.upper_offset;
        match chain.protocol {
            ipproto::HOPOPT | ipproto::ROUTING | ipproto::DSTOPTS => {
                need("ipv6 extension", at + 8, end)?;
                let len = 8 + usize::from(packet[at + 1]) * 8;
                need("ipv6 extension", at + len, end)?;
                chain.protocol = packet[at];
                chain.upper_offset = at + len;
            }
            ipproto::FRAGMENT => {
                need("ipv6 fragment", at + 8, end)?;
                chain.fragment = true;
                chain.protocol = packet[at];
                chain.upper_offset = at + 8;
                if read_u16(packet, at + 2) & 0xfff8 != 0 {
                    // A later fragment: what follows is the middle of the
                    // fragmentable part, not headers. Its protocol is what
                    // the fragment header names.
                    chain.later_fragment = true;
                    return Ok(chain);
                }
            }
            _ => return Ok(chain),
        }
    }
    match chain.protocol {
        ipproto::HOPOPT | ipproto::ROUTING | ipproto::DSTOPTS | ipproto::FRAGMENT => {
            Err(WireError::Malformed {
                header: "ipv6",
                what: "extension-header chain longer than the parser's bound",
            })
        }
        _ => Ok(chain),
    }
}

/// Writes a 40-byte IPv6 header: traffic class and flow label 0, hop limit 64.
pub fn emit_header(
    buf: &mut [u8],
    src: [u8; 16],
    dst: [u8; 16],
    next_header: u8,
    payload_len: u16,
) {
    buf[..HEADER_LEN].fill(0);
    buf[field::VER] = 0x60;
    write_u16(buf, field::PAYLOAD_LEN.start, payload_len);
    buf[field::NEXT_HEADER] = next_header;
    buf[field::HOP_LIMIT] = 64;
    buf[field::SRC].copy_from_slice(&src);
    buf[field::DST].copy_from_slice(&dst);
}
