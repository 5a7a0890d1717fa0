//! Packet builders for the fixture table, made with etherparse — an
//! independent packet library — never with the code under test.

#![allow(dead_code)]

use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader, VlanId};

pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
pub const V4_A: [u8; 4] = [10, 0, 0, 1];
pub const V4_B: [u8; 4] = [10, 0, 1, 2];
pub const V6_A: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const V6_B: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const PAYLOAD: &[u8] = b"dse fixture payload";

fn vid(v: u16) -> VlanId {
    VlanId::try_new(v).expect("valid VLAN id")
}

/// What a packet looks like, at the level the builders take.
#[derive(Clone, Copy)]
pub enum L4 {
    Udp(u16, u16),
    /// Ports and flags byte.
    Tcp(u16, u16, u8),
    IcmpEcho,
}

fn finish<B>(b: etherparse::PacketBuilderStep<B>, payload: &[u8]) -> Vec<u8>
where
    etherparse::PacketBuilderStep<B>: Writable,
{
    b.write_vec(payload)
}

pub trait Writable {
    fn write_vec(self, payload: &[u8]) -> Vec<u8>;
}

macro_rules! writable {
    ($t:ty) => {
        impl Writable for etherparse::PacketBuilderStep<$t> {
            fn write_vec(self, payload: &[u8]) -> Vec<u8> {
                let mut v = Vec::new();
                self.write(&mut v, payload)
                    .expect("etherparse writes the packet");
                v
            }
        }
    };
}
writable!(etherparse::UdpHeader);
writable!(etherparse::TcpHeader);
writable!(etherparse::Icmpv4Header);
writable!(etherparse::Icmpv6Header);

fn tcp_step(
    step: etherparse::PacketBuilderStep<etherparse::IpHeaders>,
    sp: u16,
    dp: u16,
    flags: u8,
) -> etherparse::PacketBuilderStep<etherparse::TcpHeader> {
    dse_datapath::verify::tcp_with_flags(step, sp, dp, 1000, flags)
}

/// Ethernet / [VLAN] / IPv4 / L4.
pub fn v4(vlan: Option<u16>, src: [u8; 4], dst: [u8; 4], l4: L4) -> Vec<u8> {
    v4_macs(MAC_A, MAC_B, vlan, src, dst, l4, PAYLOAD)
}

pub fn v4_macs(
    s: [u8; 6],
    d: [u8; 6],
    vlan: Option<u16>,
    src: [u8; 4],
    dst: [u8; 4],
    l4: L4,
    payload: &[u8],
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(s, d);
    let ip = match vlan {
        Some(v) => eth.single_vlan(vid(v)).ipv4(src, dst, 64),
        None => eth.ipv4(src, dst, 64),
    };
    match l4 {
        L4::Udp(sp, dp) => finish(ip.udp(sp, dp), payload),
        L4::Tcp(sp, dp, f) => finish(tcp_step(ip, sp, dp, f), payload),
        L4::IcmpEcho => finish(ip.icmpv4_echo_request(7, 1), payload),
    }
}

/// Ethernet / IPv6 / L4.
pub fn v6(src: [u8; 16], dst: [u8; 16], l4: L4) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv6(src, dst, 64);
    match l4 {
        L4::Udp(sp, dp) => finish(ip.udp(sp, dp), PAYLOAD),
        L4::Tcp(sp, dp, f) => finish(tcp_step(ip, sp, dp, f), PAYLOAD),
        L4::IcmpEcho => finish(ip.icmpv6_echo_request(7, 1), PAYLOAD),
    }
}

/// Ethernet / 802.1ad outer / 802.1Q inner / IPv4 / UDP.
pub fn qinq(outer: u16, inner: u16) -> Vec<u8> {
    let mut p = finish(
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .double_vlan(vid(outer), vid(inner))
            .ipv4(V4_A, V4_B, 64)
            .udp(1000, 53),
        PAYLOAD,
    );
    // etherparse writes 0x8100 for both tags; a service tag's TPID is 0x88a8.
    p[12..14].copy_from_slice(&[0x88, 0xa8]);
    p
}

/// An ARP request.
pub fn arp() -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&[0xff; 6]);
    p.extend_from_slice(&MAC_A);
    p.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    p.extend_from_slice(&MAC_A);
    p.extend_from_slice(&V4_A);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&V4_B);
    p
}

/// Fixes the IPv4 header checksum of a frame with the IPv4 header at `at`.
pub fn fix_ipv4_checksum(p: &mut [u8], at: usize) {
    let (h, _) = etherparse::Ipv4Header::from_slice(&p[at..]).expect("an IPv4 header");
    let c = h.calc_header_checksum();
    p[at + 10..at + 12].copy_from_slice(&c.to_be_bytes());
}

/// IPv4/UDP with options of `opt_words` 4-byte words (NOP-filled).
pub fn v4_with_options(opt_words: usize, dp: u16) -> Vec<u8> {
    let mut hdr = etherparse::Ipv4Header::new(
        (8 + PAYLOAD.len()) as u16,
        64,
        etherparse::IpNumber::UDP,
        V4_A,
        V4_B,
    )
    .unwrap();
    hdr.options = etherparse::Ipv4Options::try_from(&vec![1u8; opt_words * 4][..]).unwrap();
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ip(etherparse::IpHeaders::Ipv4(hdr, Default::default()))
        .udp(1000, dp);
    finish(b, PAYLOAD)
}

/// IPv4/UDP marked as a fragment: `offset` in 8-byte units, with MF.
pub fn v4_fragment(offset: u16, more: bool, payload_len: usize) -> Vec<u8> {
    let mut p = v4(None, V4_A, V4_B, L4::Udp(1000, 53));
    p.truncate(14 + 20 + payload_len);
    let total = (20 + payload_len) as u16;
    p[16..18].copy_from_slice(&total.to_be_bytes());
    let frag = (offset & 0x1fff) | if more { 0x2000 } else { 0 };
    p[20..22].copy_from_slice(&frag.to_be_bytes());
    fix_ipv4_checksum(&mut p, 14);
    p
}

/// Inserts IPv6 extension headers (each given as (type, bytes with the
/// next-header byte left to fill)) between the IPv6 header and the L4.
pub fn v6_with_extensions(exts: &[(u8, Vec<u8>)], l4: L4) -> Vec<u8> {
    let base = v6(V6_A, V6_B, l4);
    let upper_proto = base[14 + 6];
    let mut out = base[..54].to_vec();
    let mut chain = Vec::new();
    for (i, (_, bytes)) in exts.iter().enumerate() {
        let mut b = bytes.clone();
        b[0] = exts.get(i + 1).map_or(upper_proto, |e| e.0);
        chain.extend_from_slice(&b);
    }
    out[14 + 6] = exts.first().map_or(upper_proto, |e| e.0);
    let payload_len = u16::from_be_bytes([base[18], base[19]]) as usize + chain.len();
    out[18..20].copy_from_slice(&(payload_len as u16).to_be_bytes());
    out.extend_from_slice(&chain);
    out.extend_from_slice(&base[54..]);
    out
}

/// An 8-byte options header (hop-by-hop, destination options or routing with no segments).
pub fn ext8(kind: u8) -> (u8, Vec<u8>) {
    match kind {
        43 => (43, vec![0, 0, 0, 0, 0, 0, 0, 0]),
        _ => (kind, vec![0, 0, 1, 4, 0, 0, 0, 0]),
    }
}

/// A fragment header at `offset` (8-byte units).
pub fn ext_frag(offset: u16, more: bool) -> (u8, Vec<u8>) {
    let v = (offset << 3) | u16::from(more);
    let b = v.to_be_bytes();
    (44, vec![0, 0, b[0], b[1], 0, 0, 0, 9])
}

/// IPv6 from A to B carrying a later fragment (offset 5): a fragment
/// header naming `next`, then `data`, the middle of a fragmentable part
/// that a parser must not read as headers.
pub fn v6_later_fragment(next: u8, data: &[u8]) -> Vec<u8> {
    let mut frame = v6(V6_A, V6_B, L4::Udp(1, 2))[..54].to_vec();
    frame[14 + 6] = 44;
    let (_, mut frag) = ext_frag(5, true);
    frag[0] = next;
    frame.extend_from_slice(&frag);
    frame.extend_from_slice(data);
    let payload_len = (frame.len() - 54) as u16;
    frame[18..20].copy_from_slice(&payload_len.to_be_bytes());
    frame
}

/// A VXLAN header for `vni` followed by `inner`.
fn vxlan_body(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut body = vec![0x08, 0, 0, 0];
    body.extend_from_slice(&(vni << 8).to_be_bytes());
    body.extend_from_slice(inner);
    body
}

/// Ethernet/IPv4/UDP around `body`, with UDP checksum 0 as the datapath
/// sends over IPv4 tunnels.
fn udp4_outer(
    outer_src: [u8; 4],
    outer_dst: [u8; 4],
    sport: u16,
    dport: u16,
    body: &[u8],
) -> Vec<u8> {
    let mut p = finish(
        PacketBuilder::ethernet2(MAC_B, MAC_A)
            .ipv4(outer_src, outer_dst, 64)
            .udp(sport, dport),
        body,
    );
    p[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    p
}

/// Wraps `inner` in Ethernet/IPv4/UDP/VXLAN with `vni`; UDP checksum 0.
pub fn vxlan4(
    outer_src: [u8; 4],
    outer_dst: [u8; 4],
    sport: u16,
    vni: u32,
    inner: &[u8],
) -> Vec<u8> {
    udp4_outer(outer_src, outer_dst, sport, 4789, &vxlan_body(vni, inner))
}

/// Wraps `inner` in Ethernet/IPv6/UDP/VXLAN with `vni` (UDP checksum computed by etherparse).
pub fn vxlan6(
    outer_src: [u8; 16],
    outer_dst: [u8; 16],
    sport: u16,
    vni: u32,
    inner: &[u8],
) -> Vec<u8> {
    finish(
        PacketBuilder::ethernet2(MAC_B, MAC_A)
            .ipv6(outer_src, outer_dst, 64)
            .udp(sport, 4789),
        &vxlan_body(vni, inner),
    )
}

/// Wraps `inner` in Ethernet/IPv4/UDP/Geneve with `vni` and raw option TLVs; UDP checksum 0.
pub fn geneve4(
    outer_src: [u8; 4],
    outer_dst: [u8; 4],
    sport: u16,
    vni: u32,
    options: &[u8],
    inner: &[u8],
) -> Vec<u8> {
    let mut body = vec![(options.len() / 4) as u8, 0, 0x65, 0x58];
    body.extend_from_slice(&(vni << 8).to_be_bytes());
    body.extend_from_slice(options);
    body.extend_from_slice(inner);
    udp4_outer(outer_src, outer_dst, sport, 6081, &body)
}

/// Checks every checksum etherparse can see in `frame`: the IPv4 header,
/// TCP, UDP (unless 0 over IPv4) and ICMPv6. Skips fragments, whose L4
/// checksum covers bytes not in this frame.
pub fn verify_checksums(frame: &[u8]) -> Result<(), String> {
    // An untagged IPv6 later fragment (a fragment header first, a non-zero
    // offset) carries no checksum to check, and what its fragment header
    // names may be a header etherparse refuses in that place.
    let v6_later_fragment = frame.len() >= 62
        && frame[12..14] == [0x86, 0xdd]
        && frame[20] == 44
        && u16::from_be_bytes([frame[56], frame[57]]) & 0xfff8 != 0;
    if v6_later_fragment {
        return Ok(());
    }
    let h = PacketHeaders::from_ethernet_slice(frame)
        .map_err(|e| format!("etherparse cannot parse the output: {e}"))?;
    let payload = h.payload.slice();
    // (what, recorded, computed)
    let check: Option<(&str, u16, u16)> = match (&h.net, &h.transport) {
        (Some(NetHeaders::Ipv4(ip, _)), t) => {
            if ip.calc_header_checksum() != ip.header_checksum {
                return Err("IPv4 header checksum wrong".into());
            }
            match t {
                _ if ip.is_fragmenting_payload() => None,
                Some(TransportHeader::Udp(u)) if u.checksum != 0 => Some((
                    "UDP",
                    u.checksum,
                    u.calc_checksum_ipv4(ip, payload).unwrap(),
                )),
                Some(TransportHeader::Tcp(t)) => Some((
                    "TCP",
                    t.checksum,
                    t.calc_checksum_ipv4(ip, payload).unwrap(),
                )),
                Some(TransportHeader::Icmpv4(i)) => {
                    Some(("ICMP", i.checksum, i.icmp_type.calc_checksum(payload)))
                }
                _ => None,
            }
        }
        (Some(NetHeaders::Ipv6(ip, exts)), t) => match t {
            _ if exts.is_fragmenting_payload() => None,
            Some(TransportHeader::Udp(u)) => Some((
                "UDP/IPv6",
                u.checksum,
                u.calc_checksum_ipv6(ip, payload).unwrap(),
            )),
            Some(TransportHeader::Tcp(t)) => Some((
                "TCP/IPv6",
                t.checksum,
                t.calc_checksum_ipv6(ip, payload).unwrap(),
            )),
            Some(TransportHeader::Icmpv6(i)) => Some((
                "ICMPv6",
                i.checksum,
                i.icmp_type
                    .calc_checksum(ip.source, ip.destination, payload)
                    .unwrap(),
            )),
            _ => None,
        },
        _ => None,
    };
    match check {
        Some((what, recorded, computed)) if recorded != computed => Err(format!(
            "{what} checksum wrong: {recorded:#06x}, should be {computed:#06x}"
        )),
        _ => Ok(()),
    }
}

/// An IPv4/UDP frame from 10.0.0.1:1000 to 10.0.0.2:`dport` with a small
/// payload.
pub fn udp_to(dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(1000, dport)
        .write(&mut v, b"payload")
        .unwrap();
    v
}
