//! VXLAN header (RFC 7348).

use super::{Result, WireError, need, read_u32, write_u32};

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;

/// The "VNI is valid" flag of the first byte.
const FLAG_I: u8 = 0x08;

view!(
    /// A zero-copy view of a VXLAN header and the frame it carries.
    Packet
);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the length and that the I flag is set.
    ///
    /// # Errors
    /// [`WireError::Truncated`], or [`WireError::Malformed`] without the I flag.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        need("vxlan", HEADER_LEN, b.len())?;
        if b[0] & FLAG_I == 0 {
            return Err(WireError::Malformed {
                header: "vxlan",
                what: "I flag clear",
            });
        }
        Ok(())
    }

    /// The 24-bit VXLAN network identifier.
    pub fn vni(&self) -> u32 {
        read_u32(self.buffer.as_ref(), 4) >> 8
    }
}

/// Writes an 8-byte VXLAN header carrying `vni`.
pub fn emit_header(buf: &mut [u8], vni: u32) {
    buf[..HEADER_LEN].fill(0);
    buf[0] = FLAG_I;
    write_u32(buf, 4, vni << 8);
}
