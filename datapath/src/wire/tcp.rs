//! TCP header (RFC 9293): the fields the datapath matches and rewrites.

use super::{Field, Result, WireError, need, read_u16, write_u16};

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const CHECKSUM: Field = 16..18;
}

/// Length of the header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// Offset of the checksum field, for the checksum fix-ups.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

/// The TCP flag bits as they sit in byte 13.
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
    /// ECE.
    pub const ECE: u8 = 0x40;
    /// CWR.
    pub const CWR: u8 = 0x80;
}

view!(
    /// A zero-copy view of a TCP segment.
    Packet
);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks that the header, with the options its data offset claims, is in the buffer.
    ///
    /// # Errors
    /// [`WireError::Truncated`], or [`WireError::Malformed`] for a data offset below 5.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        need("tcp", MIN_HEADER_LEN, b.len())?;
        let hl = self.header_len();
        if hl < MIN_HEADER_LEN {
            return Err(WireError::Malformed {
                header: "tcp",
                what: "data offset below 5",
            });
        }
        need("tcp", hl, b.len())
    }

    /// Header length with options.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// The eight flag bits (CWR..FIN).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::SRC_PORT.start, v);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::DST_PORT.start, v);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, v);
    }
}
