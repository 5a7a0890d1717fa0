//! Flow-key extraction: the ingress check of every packet.
//!
//! A frame is parsed down to its L4 header. Anything that claims a header it
//! does not carry (a runt, a cut VLAN tag, a bad IHL, an IPv4 total length
//! past the frame, a cut IPv6 extension chain, a TCP/UDP/ICMP header cut
//! short in a first fragment) is malformed and dropped. A later fragment has
//! no L4 header and matches on L2/L3 only.

use crate::compile::{FLAG_IP, FLAG_L4, FlowKey, VLAN_PRESENT, hash_words};
use crate::wire::{
    self, WireError, ethernet, ethertype, icmp, ipproto, ipv4, ipv6, tcp, udp, vlan,
};

/// Where the headers of a parsed frame are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Layout {
    /// Offset of the IP header; 0 if not IP.
    pub l3: usize,
    /// Whether the IP header is IPv6.
    pub v6: bool,
    /// Offset of the L4 header; 0 if none was parsed.
    pub l4: usize,
    /// End of the IP datagram (link-layer padding lies after it).
    pub ip_end: usize,
    /// Protocol of the L4 header at `l4`.
    pub l4_proto: u8,
}

/// Parses `frame`, received on `in_port` with tunnel id `tun_id` (0 if not
/// decapsulated), into its flow key and layout.
///
/// # Errors
/// The [`WireError`] of the first malformed header.
pub fn parse(frame: &[u8], in_port: u16, tun_id: u32) -> Result<(FlowKey, Layout), WireError> {
    let mut key = FlowKey::default();
    let mut layout = Layout::default();
    parse_into(frame, in_port, tun_id, &mut key, &mut layout)?;
    Ok((key, layout))
}

/// [`parse`] into caller-owned storage: the hot path parses a batch into
/// arrays, and writing in place avoids moving a 100-byte result per packet.
/// On error, `key` and `layout` hold partial values.
///
/// # Errors
/// As [`parse`].
#[inline]
pub fn parse_into(
    frame: &[u8],
    in_port: u16,
    tun_id: u32,
    key: &mut FlowKey,
    layout: &mut Layout,
) -> Result<(), WireError> {
    parse_words(frame, in_port, tun_id, key, layout).map(|_| ())
}

/// [`parse_into`] that also returns the key's [`FlowKey::hash`], computed
/// from registers on the common path.
///
/// # Errors
/// As [`parse`].
#[inline(always)]
pub fn parse_hashed(
    frame: &[u8],
    in_port: u16,
    tun_id: u32,
    key: &mut FlowKey,
    layout: &mut Layout,
) -> Result<u64, WireError> {
    Ok(match parse_words(frame, in_port, tun_id, key, layout)? {
        Some(words) => hash_words(&words),
        None => key.hash(),
    })
}

/// Both parsers: the fast path when it takes the frame (its key words
/// returned too, still in registers), else the general one.
#[inline(always)]
fn parse_words(
    frame: &[u8],
    in_port: u16,
    tun_id: u32,
    key: &mut FlowKey,
    layout: &mut Layout,
) -> Result<Option<[u64; 8]>, WireError> {
    if let Some((words, l)) = fast_ipv4(frame, in_port, tun_id) {
        // Written in place: a temporary key would cost a 64-byte copy.
        *key = FlowKey::from_words(words);
        *layout = l;
        return Ok(Some(words));
    }
    parse_general(frame, in_port, tun_id, key, layout)?;
    Ok(None)
}

/// The common case in one pass, by hand: untagged Ethernet, IPv4 without
/// options or fragmentation, UDP or TCP. It decides exactly as
/// [`parse_general`] does for such frames (a test compares the two) and
/// declines everything else. Hand-written because the general path's
/// layered checked views cost about twice the instructions here. The key
/// is built as its eight words in registers, so that the caller can hash it
/// without reading it back from memory (byte-wise stores followed by a
/// word load stall on store forwarding).
#[inline(always)]
fn fast_ipv4(frame: &[u8], in_port: u16, tun_id: u32) -> Option<([u64; 8], Layout)> {
    const L3: usize = ethernet::HEADER_LEN;
    const L4: usize = L3 + ipv4::MIN_HEADER_LEN;
    // The words below are laid out for a little-endian target.
    if cfg!(target_endian = "big") {
        return None;
    }
    let head: &[u8; L4 + 8] = frame.get(..L4 + 8)?.try_into().ok()?;
    let be16 = |at: usize| u16::from_be_bytes([head[at], head[at + 1]]);
    let le64 = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"));
    let le32 = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().expect("4 bytes"));
    // Neither more fragments nor an offset.
    if be16(12) != ethertype::IPV4 || head[L3] != 0x45 || be16(L3 + 6) & 0x3fff != 0 {
        return None;
    }
    let total = usize::from(be16(L3 + 2));
    let ip_end = L3 + total;
    let proto = head[L3 + 9];
    let l4_len = total.wrapping_sub(ipv4::MIN_HEADER_LEN);
    if total < ipv4::MIN_HEADER_LEN || ip_end > frame.len() {
        return None;
    }
    let tcp_flags = match proto {
        ipproto::UDP if l4_len >= udp::HEADER_LEN => 0,
        ipproto::TCP if l4_len >= tcp::MIN_HEADER_LEN => {
            // In bounds: the datagram holds 20 L4 bytes and lies in the frame.
            let hl = usize::from(frame[L4 + 12] >> 4) * 4;
            if hl < tcp::MIN_HEADER_LEN || hl > l4_len {
                return None;
            }
            frame[L4 + 13]
        }
        _ => return None,
    };
    const MAC: u64 = (1 << 48) - 1;
    let words = [
        u64::from(le32(L3 + 12)),
        0,
        u64::from(le32(L3 + 16)),
        0,
        le64(6) & MAC | u64::from(in_port) << 48,
        le64(0) & MAC,
        u64::from(ethertype::IPV4)
            | u64::from(proto) << 16
            | u64::from(FLAG_IP | FLAG_L4) << 24
            | u64::from(be16(L4)) << 32
            | u64::from(be16(L4 + 2)) << 48,
        u64::from(tun_id) | u64::from(tcp_flags) << 32,
    ];
    let layout = Layout {
        l3: L3,
        v6: false,
        l4: L4,
        ip_end,
        l4_proto: proto,
    };
    Some((words, layout))
}

/// Every frame, layer by layer through the checked wire views.
fn parse_general(
    frame: &[u8],
    in_port: u16,
    tun_id: u32,
    key: &mut FlowKey,
    layout: &mut Layout,
) -> Result<(), WireError> {
    let eth = ethernet::Frame::new_checked(frame)?;
    *key = FlowKey {
        eth_src: eth.src(),
        eth_dst: eth.dst(),
        in_port,
        tun_id,
        ..FlowKey::default()
    };
    *layout = Layout::default();
    let mut et = eth.ethertype();
    let mut off = ethernet::HEADER_LEN;
    if et == ethertype::VLAN || et == ethertype::QINQ {
        let tag = vlan::Tag::new_checked(&frame[off..])?;
        key.vlan = VLAN_PRESENT | tag.vid();
        et = tag.ethertype();
        off += vlan::HEADER_LEN;
        if et == ethertype::VLAN {
            // QinQ: the inner tag is skipped; rules match the outer VID.
            let inner = vlan::Tag::new_checked(&frame[off..])?;
            et = inner.ethertype();
            off += vlan::HEADER_LEN;
        }
    }
    key.eth_type = et;
    let (l4_off, l4_end, proto) = match et {
        ethertype::IPV4 => {
            let ip = ipv4::Packet::new_checked(&frame[off..])?;
            key.ip_src[..4].copy_from_slice(&ip.src());
            key.ip_dst[..4].copy_from_slice(&ip.dst());
            key.ip_proto = ip.protocol();
            key.flags |= FLAG_IP;
            layout.l3 = off;
            layout.ip_end = off + usize::from(ip.total_len());
            if ip.frag_offset() != 0 {
                return Ok(());
            }
            (off + ip.header_len(), layout.ip_end, ip.protocol())
        }
        ethertype::IPV6 => {
            let chain = ipv6::walk_chain(&frame[off..])?;
            let ip = ipv6::Packet::new_unchecked(&frame[off..]);
            key.ip_src = ip.src();
            key.ip_dst = ip.dst();
            key.ip_proto = chain.protocol;
            key.flags |= FLAG_IP;
            layout.l3 = off;
            layout.v6 = true;
            layout.ip_end = off + ipv6::HEADER_LEN + usize::from(ip.payload_len());
            if chain.later_fragment {
                return Ok(());
            }
            (off + chain.upper_offset, layout.ip_end, chain.protocol)
        }
        _ => return Ok(()),
    };
    let l4 = &frame[l4_off..l4_end];
    match proto {
        ipproto::TCP => {
            let t = tcp::Packet::new_checked(l4)?;
            (key.l4_src, key.l4_dst, key.tcp_flags) = (t.src_port(), t.dst_port(), t.flags());
        }
        ipproto::UDP => {
            let u = udp::Packet::new_checked(l4)?;
            (key.l4_src, key.l4_dst) = (u.src_port(), u.dst_port());
        }
        ipproto::ICMP | ipproto::ICMPV6 => {
            if (proto == ipproto::ICMP) == layout.v6 {
                // ICMP inside IPv6 or ICMPv6 inside IPv4: carried, not parsed.
                return Ok(());
            }
            let i = icmp::Packet::new_checked(l4)?;
            (key.l4_src, key.l4_dst) = (u16::from(i.msg_type()), u16::from(i.code()));
        }
        _ => return Ok(()),
    }
    key.flags |= FLAG_L4;
    layout.l4 = l4_off;
    layout.l4_proto = proto;
    Ok(())
}

/// Reads the UDP destination port of a parsed frame's L4 header, if it is UDP.
pub(crate) fn udp_dst(frame: &[u8], layout: &Layout) -> Option<u16> {
    (layout.l4 != 0 && layout.l4_proto == ipproto::UDP)
        .then(|| wire::read_u16(frame, layout.l4 + 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn udp_or_tcp(tcp: bool) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + 6];
        f[12..14].copy_from_slice(&ethertype::IPV4.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&(46u16).to_be_bytes());
        f[23] = if tcp { ipproto::TCP } else { ipproto::UDP };
        f[34 + 12] = 0x50;
        f
    }

    #[test]
    fn fast_path_takes_plain_udp_and_tcp() {
        for tcp in [false, true] {
            assert!(fast_ipv4(&udp_or_tcp(tcp), 0, 0).is_some());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// The fast path and the general parser agree on every frame the
        /// fast path takes: key, layout, and acceptance.
        #[test]
        fn fast_path_agrees_with_the_general_parser(
            tcp in any::<bool>(),
            edits in prop::collection::vec((0usize..60, any::<u8>()), 0..6),
            cut in prop::option::of(0usize..61),
        ) {
            let mut f = udp_or_tcp(tcp);
            for (at, v) in edits {
                f[at] = v;
            }
            if let Some(cut) = cut {
                f.truncate(cut);
            }
            if let Some((words, l1)) = fast_ipv4(&f, 3, 7) {
                let k1 = FlowKey::from_words(words);
                let (mut k2, mut l2) = (FlowKey::default(), Layout::default());
                prop_assert!(parse_general(&f, 3, 7, &mut k2, &mut l2).is_ok(), "fast path took a frame the parser refuses: {f:02x?}");
                prop_assert_eq!(k1, k2);
                prop_assert_eq!(l1, l2);
            }
        }
    }
}
