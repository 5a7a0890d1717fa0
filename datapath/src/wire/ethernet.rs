//! Ethernet II frame header.

use super::{Field, Result, need, read_u16, write_u16};

mod field {
    use super::Field;
    pub const DST: Field = 0..6;
    pub const SRC: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
}

/// Length of the Ethernet II header.
pub const HEADER_LEN: usize = 14;

view!(
    /// A zero-copy view of an Ethernet II frame.
    Frame
);

impl<T: AsRef<[u8]>> Frame<T> {
    /// Checks that the fixed header is inside the buffer.
    ///
    /// # Errors
    /// [`super::WireError::Truncated`] if it is not.
    pub fn check_len(&self) -> Result<()> {
        need("ethernet", HEADER_LEN, self.buffer.as_ref().len())
    }

    /// Destination MAC address.
    pub fn dst(&self) -> [u8; 6] {
        self.buffer.as_ref()[field::DST]
            .try_into()
            .expect("6-byte field")
    }

    /// Source MAC address.
    pub fn src(&self) -> [u8; 6] {
        self.buffer.as_ref()[field::SRC]
            .try_into()
            .expect("6-byte field")
    }

    /// EtherType (or TPID of a VLAN tag).
    pub fn ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE.start)
    }

    /// The bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC address.
    pub fn set_dst(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&mac);
    }

    /// Sets the source MAC address.
    pub fn set_src(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&mac);
    }

    /// Sets the EtherType.
    pub fn set_ethertype(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE.start, value);
    }
}
