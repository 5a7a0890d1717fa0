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
