//! Internet checksums: full (RFC 1071) and incremental (RFC 1624).

/// Adds `data` as big-endian 16-bit words to a 32-bit accumulator.
/// An odd trailing byte is padded with zero, as RFC 1071 says.
pub fn accumulate(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Fold early so that buffers of any size cannot overflow the accumulator.
        if sum > 0xffff_0000 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

/// Folds a 32-bit accumulator to 16 bits (without complementing).
pub fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The one's complement checksum of `data`, ready to store in a header.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(accumulate(0, data))
}

/// The pseudo-header sum for TCP/UDP/ICMPv6 over IPv4 or IPv6 addresses.
/// `src` and `dst` are 4 or 16 bytes; `len` is the upper-layer length.
pub fn pseudo_header(src: &[u8], dst: &[u8], proto: u8, len: u32) -> u32 {
    let mut sum = accumulate(0, src);
    sum = accumulate(sum, dst);
    sum = sum.wrapping_add(u32::from(proto));
    sum = sum.wrapping_add(len >> 16).wrapping_add(len & 0xffff);
    sum
}

/// RFC 1624 eqn. 3: the new checksum after 16-bit words `old` became `new`.
/// `old` and `new` must have the same even length.
pub fn update(check: u16, old: &[u8], new: &[u8]) -> u16 {
    debug_assert_eq!(old.len(), new.len());
    // HC' = ~(~HC + ~m + m')
    let mut sum = u32::from(!check);
    let mut o = old.chunks_exact(2);
    let mut n = new.chunks_exact(2);
    for (a, b) in (&mut o).zip(&mut n) {
        sum += u32::from(!u16::from_be_bytes([a[0], a[1]]));
        sum += u32::from(u16::from_be_bytes([b[0], b[1]]));
    }
    !fold(sum)
}

/// Like [`update`] for a UDP checksum, where 0 means "no checksum" and a
/// computed 0 is sent as 0xffff (RFC 768). A packet without a checksum keeps none.
pub fn update_udp(check: u16, old: &[u8], new: &[u8]) -> u16 {
    if check == 0 {
        return 0;
    }
    match update(check, old, new) {
        0 => 0xffff,
        c => c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(accumulate(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(
            checksum(&[0x12, 0x34, 0x56]),
            checksum(&[0x12, 0x34, 0x56, 0x00])
        );
    }

    #[test]
    fn incremental_matches_full() {
        let mut hdr = [
            0x45u8, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let c = checksum(&hdr);
        hdr[10..12].copy_from_slice(&c.to_be_bytes());
        let old = [10, 0, 0, 1];
        let new = [192, 168, 7, 9];
        let updated = update(c, &old, &new);
        hdr[12..16].copy_from_slice(&new);
        hdr[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(updated, checksum(&hdr));
    }
}
