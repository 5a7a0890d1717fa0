//! 802.1Q / 802.1ad VLAN tag: the four bytes after a 0x8100 or 0x88a8 TPID.

use super::{Field, Result, need, read_u16, write_u16};

mod field {
    use super::Field;
    pub const TCI: Field = 0..2;
    pub const ETHERTYPE: Field = 2..4;
}

/// Length of a tag after its TPID.
pub const HEADER_LEN: usize = 4;

view!(
    /// A zero-copy view of a VLAN tag (TCI and the encapsulated EtherType).
    Tag
);

impl<T: AsRef<[u8]>> Tag<T> {
    /// Checks that the tag is inside the buffer.
    ///
    /// # Errors
    /// [`super::WireError::Truncated`] if it is not.
    pub fn check_len(&self) -> Result<()> {
        need("vlan", HEADER_LEN, self.buffer.as_ref().len())
    }

    /// The 12-bit VLAN identifier.
    pub fn vid(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TCI.start) & 0x0fff
    }

    /// The 3-bit priority code point.
    pub fn pcp(&self) -> u8 {
        (read_u16(self.buffer.as_ref(), field::TCI.start) >> 13) as u8
    }

    /// The EtherType of what the tag carries.
    pub fn ethertype(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::ETHERTYPE.start)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Tag<T> {
    /// Sets the tag control information (PCP, DEI and VID).
    pub fn set_tci(&mut self, tci: u16) {
        write_u16(self.buffer.as_mut(), field::TCI.start, tci);
    }

    /// Sets the encapsulated EtherType.
    pub fn set_ethertype(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::ETHERTYPE.start, value);
    }
}
