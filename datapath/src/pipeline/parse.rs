//! Flow-key extraction: the ingress check of every packet.
//!
//! A frame is parsed down to its L4 header. Anything that claims a header it
//! does not carry (a runt, a cut VLAN tag, a bad IHL, an IPv4 total length
//! past the frame, a cut IPv6 extension chain, a TCP/UDP/ICMP header cut
//! short in a first fragment) is malformed and dropped. A later fragment has
//! no L4 header and matches on L2/L3 only.

use crate::compile::{FLAG_IP, FLAG_L4, FlowKey, VLAN_PRESENT};
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
    if fast_ipv4(frame, in_port, tun_id, key, layout) {
        return Ok(());
    }
    parse_general(frame, in_port, tun_id, key, layout)
}

/// The common case in one pass, by hand: untagged Ethernet, IPv4 without
/// options or fragmentation, UDP or TCP. It decides exactly as
/// [`parse_general`] does for such frames (a test compares the two) and
/// declines everything else. Hand-written because the general path's
/// layered checked views cost about twice the instructions here.
#[inline]
fn fast_ipv4(
    frame: &[u8],
    in_port: u16,
    tun_id: u32,
    key: &mut FlowKey,
    layout: &mut Layout,
) -> bool {
    const L3: usize = ethernet::HEADER_LEN;
    const L4: usize = L3 + ipv4::MIN_HEADER_LEN;
    if frame.len() < L4 + 8 || wire::read_u16(frame, 12) != ethertype::IPV4 || frame[L3] != 0x45 {
        return false;
    }
    // Neither more fragments nor an offset.
    if wire::read_u16(frame, L3 + 6) & 0x3fff != 0 {
        return false;
    }
    let total = usize::from(wire::read_u16(frame, L3 + 2));
    let ip_end = L3 + total;
    let proto = frame[L3 + 9];
    let l4_len = total.wrapping_sub(ipv4::MIN_HEADER_LEN);
    let ok = total >= ipv4::MIN_HEADER_LEN
        && ip_end <= frame.len()
        && match proto {
            ipproto::UDP => l4_len >= udp::HEADER_LEN,
            ipproto::TCP => {
                l4_len >= tcp::MIN_HEADER_LEN && {
                    let hl = usize::from(frame[L4 + 12] >> 4) * 4;
                    hl >= tcp::MIN_HEADER_LEN && hl <= l4_len
                }
            }
            _ => false,
        };
    if !ok {
        return false;
    }
    // Written in place: a temporary key would cost a 64-byte copy.
    *key = FlowKey::default();
    key.in_port = in_port;
    key.tun_id = tun_id;
    key.eth_type = ethertype::IPV4;
    key.ip_proto = proto;
    key.flags = FLAG_IP | FLAG_L4;
    key.eth_dst.copy_from_slice(&frame[0..6]);
    key.eth_src.copy_from_slice(&frame[6..12]);
    key.ip_src[..4].copy_from_slice(&frame[L3 + 12..L3 + 16]);
    key.ip_dst[..4].copy_from_slice(&frame[L3 + 16..L3 + 20]);
    key.l4_src = wire::read_u16(frame, L4);
    key.l4_dst = wire::read_u16(frame, L4 + 2);
    if proto == ipproto::TCP {
        key.tcp_flags = frame[L4 + 13];
    }
    *layout = Layout {
        l3: L3,
        v6: false,
        l4: L4,
        ip_end,
        l4_proto: proto,
    };
    true
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
            let (mut k, mut l) = (FlowKey::default(), Layout::default());
            assert!(fast_ipv4(&udp_or_tcp(tcp), 0, 0, &mut k, &mut l));
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
            let (mut k1, mut l1) = (FlowKey::default(), Layout::default());
            if fast_ipv4(&f, 3, 7, &mut k1, &mut l1) {
                let (mut k2, mut l2) = (FlowKey::default(), Layout::default());
                prop_assert!(parse_general(&f, 3, 7, &mut k2, &mut l2).is_ok(), "fast path took a frame the parser refuses: {f:02x?}");
                prop_assert_eq!(k1, k2);
                prop_assert_eq!(l1, l2);
            }
        }
    }
}
