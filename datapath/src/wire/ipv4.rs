//! IPv4 header (RFC 791), with options and fragments.

use super::{Field, Result, WireError, checksum, need, read_u16, write_u16};

mod field {
    use super::Field;
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: Field = 2..4;
    pub const FRAG: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC: Field = 12..16;
    pub const DST: Field = 16..20;
}

/// Length of the header without options.
pub const MIN_HEADER_LEN: usize = 20;

view!(
    /// A zero-copy view of an IPv4 packet.
    Packet
);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the version, that IHL covers at least the fixed header, that the
    /// header with its options is in the buffer, and that the total length
    /// lies between the header length and the buffer length (link-layer
    /// padding after the datagram is allowed).
    ///
    /// # Errors
    /// [`WireError::Truncated`] or [`WireError::Malformed`], naming the field.
    pub fn check_len(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        need("ipv4", MIN_HEADER_LEN, b.len())?;
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(WireError::Malformed {
                header: "ipv4",
                what: "version is not 4",
            });
        }
        let hl = self.header_len();
        if hl < MIN_HEADER_LEN {
            return Err(WireError::Malformed {
                header: "ipv4",
                what: "IHL below 5",
            });
        }
        need("ipv4", hl, b.len())?;
        let total = usize::from(self.total_len());
        if total < hl {
            return Err(WireError::Malformed {
                header: "ipv4",
                what: "total length below header length",
            });
        }
        need("ipv4", total, b.len())
    }

    /// Header length in bytes, options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Total length of the datagram.
    pub fn total_len(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::TOTAL_LEN.start)
    }

    /// Whether more fragments follow.
    pub fn more_frags(&self) -> bool {
        read_u16(self.buffer.as_ref(), field::FRAG.start) & 0x2000 != 0
    }

    /// Fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::FRAG.start) & 0x1fff
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        read_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Source address.
    pub fn src(&self) -> [u8; 4] {
        self.buffer.as_ref()[field::SRC]
            .try_into()
            .expect("4-byte field")
    }

    /// Destination address.
    pub fn dst(&self) -> [u8; 4] {
        self.buffer.as_ref()[field::DST]
            .try_into()
            .expect("4-byte field")
    }

    /// Whether the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(&self.buffer.as_ref()[..self.header_len()]) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source address, fixing the header checksum incrementally.
    pub fn set_src_update(&mut self, addr: [u8; 4]) {
        let old = self.src();
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr);
        self.set_checksum(checksum::update(self.checksum(), &old, &addr));
    }

    /// Sets the destination address, fixing the header checksum incrementally.
    pub fn set_dst_update(&mut self, addr: [u8; 4]) {
        let old = self.dst();
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr);
        self.set_checksum(checksum::update(self.checksum(), &old, &addr));
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        write_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }
}

/// Writes a 20-byte IPv4 header without options: TTL 64, DF set, ID 0,
/// with its checksum computed.
pub fn emit_header(buf: &mut [u8], src: [u8; 4], dst: [u8; 4], protocol: u8, payload_len: u16) {
    buf[..MIN_HEADER_LEN].fill(0);
    buf[field::VER_IHL] = 0x45;
    write_u16(
        buf,
        field::TOTAL_LEN.start,
        payload_len + MIN_HEADER_LEN as u16,
    );
    write_u16(buf, field::FRAG.start, 0x4000);
    buf[field::TTL] = 64;
    buf[field::PROTOCOL] = protocol;
    buf[field::SRC].copy_from_slice(&src);
    buf[field::DST].copy_from_slice(&dst);
    let c = checksum::checksum(&buf[..MIN_HEADER_LEN]);
    write_u16(buf, field::CHECKSUM.start, c);
}
