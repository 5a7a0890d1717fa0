//! Action execution on a frame: rewrites with incremental checksums
//! (RFC 1624), VLAN push/pop, VXLAN/Geneve encap and decap.

use super::parse::{Layout, parse, udp_dst};
use crate::compile::{ActionRecord, FLAG_FIXED_SRC, FLAG_V6, FlowKey, encap};
use crate::frame::FrameBuf;
use crate::wire::{
    checksum, ethernet, ethertype, geneve, ipproto, ipv4, ipv6, read_u16, tcp, udp, udpport, vxlan,
    write_u16,
};

/// Rewrites the IP source or destination of a frame of the address's family
/// and fixes the IPv4 header checksum and the TCP/UDP/ICMPv6 checksum.
/// A frame of the other family, or not IP, is left alone.
pub(crate) fn set_ip<F: FrameBuf>(frame: &mut F, l: &Layout, a: &ActionRecord, src: bool) {
    if l.l3 == 0 || l.v6 != (a.flags & FLAG_V6 != 0) {
        return;
    }
    let data = frame.data_mut();
    let (old, new): (&[u8], &[u8]);
    let mut old_buf = [0u8; 16];
    if l.v6 {
        let at = l.l3 + if src { 8 } else { 24 };
        old_buf.copy_from_slice(&data[at..at + 16]);
        data[at..at + 16].copy_from_slice(&a.data[..16]);
        (old, new) = (&old_buf[..], &a.data[..16]);
    } else {
        let mut ip = ipv4::Packet::new_unchecked(&mut data[l.l3..]);
        let addr: [u8; 4] = a.data[..4].try_into().expect("4 bytes");
        old_buf[..4].copy_from_slice(&if src { ip.src() } else { ip.dst() });
        if src {
            ip.set_src_update(addr);
        } else {
            ip.set_dst_update(addr);
        }
        (old, new) = (&old_buf[..4], &a.data[..4]);
    }
    fix_l4_checksum(data, l, old, new);
}

/// Applies the pseudo-header (or port) change `old -> new` to the L4 checksum.
fn fix_l4_checksum(data: &mut [u8], l: &Layout, old: &[u8], new: &[u8]) {
    if l.l4 == 0 {
        return;
    }
    let at = match l.l4_proto {
        ipproto::TCP => l.l4 + tcp::CHECKSUM_OFFSET,
        ipproto::UDP => l.l4 + udp::CHECKSUM_OFFSET,
        // ICMPv4 has no pseudo-header; ICMPv6 has.
        ipproto::ICMPV6 if l.v6 => l.l4 + crate::wire::icmp::CHECKSUM_OFFSET,
        _ => return,
    };
    let c = read_u16(data, at);
    let c = if l.l4_proto == ipproto::UDP {
        checksum::update_udp(c, old, new)
    } else {
        checksum::update(c, old, new)
    };
    write_u16(data, at, c);
}

/// Rewrites a TCP or UDP port, fixing the checksum; other frames are left alone.
pub(crate) fn set_l4<F: FrameBuf>(frame: &mut F, l: &Layout, port: u16, src: bool) {
    if l.l4 == 0 || !(l.l4_proto == ipproto::TCP || l.l4_proto == ipproto::UDP) {
        return;
    }
    let data = frame.data_mut();
    let at = l.l4 + if src { 0 } else { 2 };
    let old = [data[at], data[at + 1]];
    write_u16(data, at, port);
    fix_l4_checksum(data, l, &old, &port.to_be_bytes());
}

/// Pushes an outer VLAN tag with `tci` and `tpid`; `false` if the frame's
/// buffer has no room for it.
#[must_use]
pub(crate) fn push_vlan<F: FrameBuf>(frame: &mut F, tci: u16, tpid: u16) -> bool {
    if !frame.push_front(4) {
        return false;
    }
    let d = frame.data_mut();
    d.copy_within(4..16, 0);
    write_u16(d, 12, tpid);
    write_u16(d, 14, tci);
    true
}

/// Pops the outer VLAN tag, if there is one.
pub(crate) fn pop_vlan<F: FrameBuf>(frame: &mut F) {
    let d = frame.data_mut();
    let tpid = read_u16(d, 12);
    if (tpid == ethertype::VLAN || tpid == ethertype::QINQ) && d.len() >= 18 {
        d.copy_within(0..12, 4);
        frame.pull_front(4);
    }
}

/// The UDP source port of an encap without a fixed one: from the inner
/// flow's hash, in the dynamic range 49152..=65535 (RFC 7348 section 5).
pub fn entropy_port(key: &FlowKey) -> u16 {
    0xc000 | (key.portable_hash() >> 50) as u16
}

/// Wraps the frame in Ethernet / IPv4 or IPv6 / UDP / VXLAN or Geneve;
/// `false` if the frame's buffer has no room for the outer headers.
// Not inlined: the entropy hash must not be hoisted into every packet's path.
#[inline(never)]
#[must_use]
pub(crate) fn encap<F: FrameBuf>(
    frame: &mut F,
    a: &ActionRecord,
    key: &FlowKey,
    geneve_opts: &[u8],
    is_geneve: bool,
) -> bool {
    let v6 = a.flags & FLAG_V6 != 0;
    let ip_len = if v6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::MIN_HEADER_LEN
    };
    let tun_len = if is_geneve {
        geneve::HEADER_LEN + geneve_opts.len()
    } else {
        vxlan::HEADER_LEN
    };
    let inner = frame.len();
    let udp_len = (udp::HEADER_LEN + tun_len + inner) as u16;
    let outer = 14 + ip_len + udp::HEADER_LEN + tun_len;
    if !frame.push_front(outer) {
        return false;
    }
    let d = frame.data_mut();
    d[0..6].copy_from_slice(&a.data[encap::ETH_DST]);
    d[6..12].copy_from_slice(&a.data[encap::ETH_SRC]);
    write_u16(d, 12, if v6 { ethertype::IPV6 } else { ethertype::IPV4 });
    let src16: [u8; 16] = a.data[encap::IP_SRC].try_into().expect("16 bytes");
    let dst16: [u8; 16] = a.data[encap::IP_DST].try_into().expect("16 bytes");
    if v6 {
        ipv6::emit_header(&mut d[14..], src16, dst16, ipproto::UDP, udp_len);
    } else {
        let s: [u8; 4] = src16[..4].try_into().expect("4 bytes");
        let t: [u8; 4] = dst16[..4].try_into().expect("4 bytes");
        ipv4::emit_header(&mut d[14..], s, t, ipproto::UDP, udp_len);
    }
    let u = 14 + ip_len;
    let sport = if a.flags & FLAG_FIXED_SRC != 0 {
        read_u16(&a.data, encap::UDP_SRC.start)
    } else {
        entropy_port(key)
    };
    {
        let mut h = udp::Packet::new_unchecked(&mut d[u..]);
        h.set_src_port(sport);
        h.set_dst_port(a.arg16);
        h.set_len(udp_len);
        h.set_checksum(0);
    }
    let t = u + udp::HEADER_LEN;
    if is_geneve {
        geneve::emit_header(&mut d[t..], a.arg32, geneve_opts);
    } else {
        vxlan::emit_header(&mut d[t..], a.arg32);
    }
    if v6 {
        // IPv6 needs a UDP checksum (RFC 8200 section 8.1); IPv4 tunnels send 0.
        let sum = checksum::pseudo_header(&src16, &dst16, ipproto::UDP, u32::from(udp_len));
        let c = !checksum::fold(checksum::accumulate(sum, &d[u..u + usize::from(udp_len)]));
        write_u16(d, u + udp::CHECKSUM_OFFSET, if c == 0 { 0xffff } else { c });
    }
    true
}

/// Strips a VXLAN or Geneve tunnel (recognized by its UDP destination port)
/// and returns the VNI, or `None` if the frame is not a well-formed tunnel
/// packet carrying Ethernet.
pub(crate) fn decap<F: FrameBuf>(frame: &mut F, l: &Layout) -> Option<u32> {
    let d = frame.data();
    let port = udp_dst(d, l)?;
    let udp_end = l.l4 + usize::from(read_u16(d, l.l4 + 4)).min(l.ip_end - l.l4);
    let tun = l.l4 + udp::HEADER_LEN;
    let body = d.get(tun..udp_end)?;
    let (vni, hdr) = match port {
        udpport::VXLAN => {
            let v = vxlan::Packet::new_checked(body).ok()?;
            (v.vni(), vxlan::HEADER_LEN)
        }
        udpport::GENEVE => {
            let g = geneve::Packet::new_checked(body).ok()?;
            if g.protocol() != ethertype::TEB {
                return None;
            }
            (g.vni(), g.header_len())
        }
        _ => return None,
    };
    if body.len() < hdr + ethernet::HEADER_LEN {
        // Not a tunnel carrying Ethernet: no room for the inner header.
        return None;
    }
    frame.truncate(udp_end);
    frame.pull_front(tun + hdr);
    Some(vni)
}

/// Re-derives the layout after a structural change.
pub(crate) fn relayout<F: FrameBuf>(frame: &F, key: &FlowKey) -> Option<Layout> {
    parse(frame.data(), key.in_port, key.tun_id)
        .ok()
        .map(|(_, l)| l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_ports_are_dynamic_stable_and_spread() {
        let ports: std::collections::HashSet<u16> = (0..1000u16)
            .map(|i| {
                let key = FlowKey {
                    l4_src: i,
                    ..FlowKey::default()
                };
                let p = entropy_port(&key);
                assert!(p >= 49152, "port {p} below the dynamic range");
                assert_eq!(p, entropy_port(&key), "the same flow gets the same port");
                p
            })
            .collect();
        assert!(
            ports.len() > 900,
            "1000 flows share only {} ports",
            ports.len()
        );
    }
}
