//! Geneve header (RFC 8926), with its variable-length options.

use super::{Result, WireError, need, read_u16, read_u32, write_u16, write_u32};

/// Length of the fixed header.
pub const HEADER_LEN: usize = 8;

view!(
    /// A zero-copy view of a Geneve header, its options and the payload.
    Packet
);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the version (0), and that the header and its options are in the buffer.
    ///
    /// # Errors
    /// [`WireError::Truncated`] or [`WireError::Malformed`].
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        need("geneve", HEADER_LEN, b.len())?;
        if b[0] >> 6 != 0 {
            return Err(WireError::Malformed {
                header: "geneve",
                what: "version is not 0",
            });
        }
        need("geneve", self.header_len(), b.len())
    }

    /// Length of the header with its options.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + usize::from(self.buffer.as_ref()[0] & 0x3f) * 4
    }

    /// Protocol type of the payload (0x6558 for Ethernet).
    pub fn protocol(&self) -> u16 {
        read_u16(self.buffer.as_ref(), 2)
    }

    /// The 24-bit virtual network identifier.
    pub fn vni(&self) -> u32 {
        read_u32(self.buffer.as_ref(), 4) >> 8
    }

    /// The raw option TLVs.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }
}

/// Writes a Geneve header with `options` (already encoded TLVs, a multiple
/// of 4 bytes and at most 252 bytes) carrying Ethernet.
pub fn emit_header(buf: &mut [u8], vni: u32, options: &[u8]) {
    debug_assert!(options.len().is_multiple_of(4) && options.len() <= 252);
    buf[..HEADER_LEN].fill(0);
    buf[0] = (options.len() / 4) as u8;
    write_u16(buf, 2, super::ethertype::TEB);
    write_u32(buf, 4, vni << 8);
    buf[HEADER_LEN..HEADER_LEN + options.len()].copy_from_slice(options);
}

/// Encodes one option TLV: class, type and data (a multiple of 4 bytes, at most 124).
pub fn encode_option(out: &mut Vec<u8>, class: u16, kind: u8, data: &[u8]) {
    out.extend_from_slice(&class.to_be_bytes());
    out.push(kind);
    out.push((data.len() / 4) as u8 & 0x1f);
    out.extend_from_slice(data);
}
