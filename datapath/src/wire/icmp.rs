//! ICMP (RFC 792) and ICMPv6 (RFC 4443) headers: type, code and checksum.

use super::{Field, Result, need, read_u16};

mod field {
    use super::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
}

/// Length of the fixed part shared by ICMP and ICMPv6.
pub const HEADER_LEN: usize = 4;

/// Offset of the checksum field, for the checksum fix-ups.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

view!(
    /// A zero-copy view of an ICMP or ICMPv6 message.
    Packet
);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks that type, code and checksum are in the buffer.
    ///
    /// # Errors
    /// [`super::WireError::Truncated`] if they are not.
    pub fn check_len(&self) -> Result<()> {
        need("icmp", HEADER_LEN, self.buffer.as_ref().len())
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }
}
