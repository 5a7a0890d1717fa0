//! Frames that probe a rule set: for each rule, a frame it matches, and
//! one just outside each field it matches on (the field's last fixed bit
//! flipped, or another port, tag or protocol), so that a backend that
//! reads a mask wrongly, or a field from the wrong place, answers
//! differently from the reference.

use crate::rule::{IpPrefix, Match, Rule, RuleSet, VlanMatch};
use crate::wire::{ethertype, ipproto};
use etherparse::{IpHeaders, PacketBuilder, PacketBuilderStep, TcpHeader, VlanId};
use std::net::IpAddr;

/// A frame to run, and why it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The port it arrives on.
    pub in_port: u16,
    /// The frame.
    pub frame: Vec<u8>,
    /// What it probes, such as `rule 7` or `rule 7, l4_dst just outside`.
    pub why: String,
}

/// The probes of every rule of `set`, in rule order.
pub fn probes(set: &RuleSet) -> Vec<Probe> {
    let mut out = Vec::new();
    for r in &set.rules {
        let Some(inside) = frame_for(set, &r.matches) else {
            continue;
        };
        out.push(Probe {
            in_port: inside.0,
            frame: inside.1,
            why: format!("rule {}", r.id),
        });
        for (field, m) in outside(set, r) {
            if let Some((in_port, frame)) = frame_for(set, &m) {
                out.push(Probe {
                    in_port,
                    frame,
                    why: format!("rule {}, {field} just outside", r.id),
                });
            }
        }
    }
    out.extend(ties(set));
    out
}

/// The most tie probes [`probes`] makes.
pub const MAX_TIES: usize = 1000;

/// A frame for each pair of rules of equal priority that some frame
/// matches both of: the lower id must take it.
fn ties(set: &RuleSet) -> Vec<Probe> {
    let mut out = Vec::new();
    for (i, a) in set.rules.iter().enumerate() {
        for b in set.rules[i + 1..]
            .iter()
            .filter(|b| b.priority == a.priority)
        {
            let Some(both) = merge(&a.matches, &b.matches) else {
                continue;
            };
            if let Some((in_port, frame)) = frame_for(set, &both) {
                let (lo, hi) = (a.id.min(b.id), a.id.max(b.id));
                out.push(Probe {
                    in_port,
                    frame,
                    why: format!("rules {lo} and {hi} tie at priority {}", a.priority),
                });
                if out.len() == MAX_TIES {
                    return out;
                }
            }
        }
    }
    out
}

/// A match taking only frames both `a` and `b` take, if there are any.
fn merge(a: &Match, b: &Match) -> Option<Match> {
    fn one<T: Clone + PartialEq>(x: &Option<T>, y: &Option<T>) -> Option<Option<T>> {
        match (x, y) {
            (Some(x), Some(y)) if x != y => None,
            _ => Some(x.clone().or_else(|| y.clone())),
        }
    }
    fn prefix(x: Option<IpPrefix>, y: Option<IpPrefix>) -> Option<Option<IpPrefix>> {
        let (Some(x), Some(y)) = (x, y) else {
            return Some(x.or(y));
        };
        let (short, long) = if x.len <= y.len { (x, y) } else { (y, x) };
        let inside = match (short.addr, long.addr) {
            (IpAddr::V4(s), IpAddr::V4(l)) => {
                let keep = u32::MAX.checked_shl(32 - u32::from(short.len)).unwrap_or(0);
                u32::from(s) & keep == u32::from(l) & keep
            }
            (IpAddr::V6(s), IpAddr::V6(l)) => {
                let keep = u128::MAX
                    .checked_shl(128 - u32::from(short.len))
                    .unwrap_or(0);
                u128::from(s) & keep == u128::from(l) & keep
            }
            _ => false,
        };
        inside.then_some(Some(long))
    }
    fn masked<T>(
        x: Option<crate::rule::Masked<T>>,
        y: Option<crate::rule::Masked<T>>,
    ) -> Option<Option<crate::rule::Masked<T>>>
    where
        T: Copy
            + std::ops::BitAnd<Output = T>
            + std::ops::BitOr<Output = T>
            + std::ops::BitXor<Output = T>
            + PartialEq
            + Default,
    {
        let (Some(x), Some(y)) = (x, y) else {
            return Some(x.or(y));
        };
        ((x.value ^ y.value) & x.mask & y.mask == T::default()).then_some(Some(
            crate::rule::Masked {
                value: x.value | y.value,
                mask: x.mask | y.mask,
            },
        ))
    }
    Some(Match {
        in_port: one(&a.in_port, &b.in_port)?,
        eth_src: one(&a.eth_src, &b.eth_src)?,
        eth_dst: one(&a.eth_dst, &b.eth_dst)?,
        vlan: one(&a.vlan, &b.vlan)?,
        eth_type: one(&a.eth_type, &b.eth_type)?,
        ip_src: prefix(a.ip_src, b.ip_src)?,
        ip_dst: prefix(a.ip_dst, b.ip_dst)?,
        ip_proto: one(&a.ip_proto, &b.ip_proto)?,
        l4_src: masked(a.l4_src, b.l4_src)?,
        l4_dst: masked(a.l4_dst, b.l4_dst)?,
        tcp_flags: masked(a.tcp_flags.map(|f| f.0), b.tcp_flags.map(|f| f.0))?
            .map(crate::rule::TcpFlags),
        vni: one(&a.vni, &b.vni)?,
    })
}

/// Copies of `r`'s match, each with one field just outside what `r` takes.
pub(super) fn outside(set: &RuleSet, r: &Rule) -> Vec<(&'static str, Match)> {
    let m = &r.matches;
    let mut out = Vec::new();
    let mut with = |field, f: &dyn Fn(&mut Match)| {
        let mut n = m.clone();
        f(&mut n);
        out.push((field, n));
    };
    if let Some(p) = &m.in_port
        && let Some(other) = set.ports.iter().find(|q| &q.name != p)
    {
        let name = other.name.clone();
        with("in_port", &move |n| n.in_port = Some(name.clone()));
    }
    if let Some(mac) = m.eth_src {
        with("eth_src", &move |n| n.eth_src = Some(flip_mac(mac)));
    }
    if let Some(mac) = m.eth_dst {
        with("eth_dst", &move |n| n.eth_dst = Some(flip_mac(mac)));
    }
    if let Some(v) = m.vlan {
        let other = match v {
            VlanMatch::Untagged => VlanMatch::Vid(1),
            VlanMatch::Vid(id) => VlanMatch::Vid(id ^ 1),
        };
        with("vlan", &move |n| n.vlan = Some(other));
    }
    if let Some(t) = m.eth_type {
        let ip_fields = m.ip_src.is_some() || m.ip_dst.is_some() || m.ip_proto.is_some();
        let other = match t.0 {
            ethertype::IPV4 if !ip_fields => Some(ethertype::IPV6),
            ethertype::IPV6 if !ip_fields => Some(ethertype::IPV4),
            ethertype::IPV4 | ethertype::IPV6 => None,
            t => Some(t ^ 1),
        };
        if let Some(other) = other {
            with("eth_type", &move |n| {
                n.eth_type = Some(crate::rule::EthType(other));
            });
        }
    }
    for (field, p) in [("ip_src", m.ip_src), ("ip_dst", m.ip_dst)] {
        if let Some(p) = p.filter(|p| p.len > 0) {
            let flipped = flip_last(p);
            with(field, &move |n| {
                if field == "ip_src" {
                    n.ip_src = Some(flipped);
                } else {
                    n.ip_dst = Some(flipped);
                }
            });
        }
    }
    if let Some(p) = m.ip_proto {
        let other = match p.0 {
            ipproto::TCP => ipproto::UDP,
            _ => ipproto::TCP,
        };
        with("ip_proto", &move |n| {
            n.ip_proto = Some(crate::rule::IpProto(other));
            // Ports and flags read the same in TCP and UDP; ICMP's do not.
            if p.0 != ipproto::TCP && p.0 != ipproto::UDP {
                (n.l4_src, n.l4_dst) = (None, None);
            }
            n.tcp_flags = None;
        });
    }
    for (field, l4) in [("l4_src", m.l4_src), ("l4_dst", m.l4_dst)] {
        if let Some(l4) = l4.filter(|l| l.mask != 0) {
            let low = l4.mask & l4.mask.wrapping_neg();
            let flipped = crate::rule::Masked {
                value: l4.value ^ low,
                mask: l4.mask,
            };
            with(field, &move |n| {
                if field == "l4_src" {
                    n.l4_src = Some(flipped);
                } else {
                    n.l4_dst = Some(flipped);
                }
            });
        }
    }
    if let Some(f) = m.tcp_flags.filter(|f| f.0.mask != 0) {
        let low = f.0.mask & f.0.mask.wrapping_neg();
        let flipped = crate::rule::TcpFlags(crate::rule::Masked {
            value: f.0.value ^ low,
            mask: f.0.mask,
        });
        with("tcp_flags", &move |n| n.tcp_flags = Some(flipped));
    }
    out
}

fn flip_mac(mac: crate::rule::Mac) -> crate::rule::Mac {
    let mut b = mac.0;
    b[5] ^= 1;
    crate::rule::Mac(b)
}

/// `p` with the last bit of its prefix flipped: just outside it.
fn flip_last(p: IpPrefix) -> IpPrefix {
    let bit = u32::from(p.len - 1);
    let addr = match p.addr {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) ^ (1 << (31 - bit))).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) ^ (1 << (127 - bit))).into()),
    };
    IpPrefix { addr, len: p.len }
}

/// A frame `m` matches, and the port it arrives on; `None` for a match no
/// frame built here meets (a VNI, which only a decapsulated frame has).
pub fn frame_for(set: &RuleSet, m: &Match) -> Option<(u16, Vec<u8>)> {
    if m.vni.is_some() {
        return None;
    }
    let in_port = match &m.in_port {
        Some(p) => set.port(p)?.index,
        None => set.ports.first().map_or(0, |p| p.index),
    };
    let src = m.eth_src.map_or([2, 0, 0, 0, 0, 1], |a| a.0);
    let dst = m.eth_dst.map_or([2, 0, 0, 0, 0, 2], |a| a.0);
    let v6 = match m.ip_src.or(m.ip_dst) {
        Some(p) => p.addr.is_ipv6(),
        None => {
            m.eth_type.is_some_and(|t| t.0 == ethertype::IPV6)
                || m.ip_proto.is_some_and(|p| p.0 == ipproto::ICMPV6)
        }
    };
    let ip = m.ip_proto.is_some()
        || m.ip_src.is_some()
        || m.ip_dst.is_some()
        || m.eth_type
            .is_none_or(|t| t.0 == ethertype::IPV4 || t.0 == ethertype::IPV6);
    let eth = PacketBuilder::ethernet2(src, dst);
    let tag = match m.vlan {
        Some(VlanMatch::Vid(id)) => Some(id),
        _ => None,
    };
    let mut frame = Vec::new();
    if !ip {
        // Another EtherType: its header and a minimal payload.
        let t = m.eth_type.map_or(ethertype::ARP, |t| t.0);
        frame.extend_from_slice(&dst);
        frame.extend_from_slice(&src);
        if let Some(id) = tag {
            frame.extend_from_slice(&ethertype::VLAN.to_be_bytes());
            frame.extend_from_slice(&id.to_be_bytes());
        }
        frame.extend_from_slice(&t.to_be_bytes());
        frame.resize(frame.len() + 46, 0);
        return Some((in_port, frame));
    }
    let v4 = |p: Option<IpPrefix>, or: [u8; 4]| match p.map(|p| p.addr) {
        Some(IpAddr::V4(a)) => a.octets(),
        _ => or,
    };
    let v6a = |p: Option<IpPrefix>, last: u8| match p.map(|p| p.addr) {
        Some(IpAddr::V6(a)) => a.octets(),
        _ => {
            let mut a = [0u8; 16];
            (a[0], a[1], a[15]) = (0xfd, 0, last);
            a
        }
    };
    let (s4, d4) = (v4(m.ip_src, [10, 0, 0, 1]), v4(m.ip_dst, [10, 0, 0, 2]));
    let (s6, d6) = (v6a(m.ip_src, 1), v6a(m.ip_dst, 2));
    let l3 = match (tag, v6) {
        (Some(id), false) => eth.single_vlan(VlanId::try_new(id).ok()?).ipv4(s4, d4, 64),
        (Some(id), true) => eth.single_vlan(VlanId::try_new(id).ok()?).ipv6(s6, d6, 64),
        (None, false) => eth.ipv4(s4, d4, 64),
        (None, true) => eth.ipv6(s6, d6, 64),
    };
    let proto = m.ip_proto.map_or(ipproto::UDP, |p| p.0);
    // ICMP's type and code: an echo request unless given.
    let icmp = proto == ipproto::ICMP || proto == ipproto::ICMPV6;
    let echo = if v6 { 128 } else { 8 };
    let sport = m.l4_src.map_or(if icmp { echo } else { 1000 }, |l| l.value);
    let dport = m.l4_dst.map_or(if icmp { 0 } else { 2000 }, |l| l.value);
    let payload = [0u8; 8];
    let written = match proto {
        ipproto::TCP => {
            let flags = m.tcp_flags.map_or(0, |f| f.0.value);
            tcp_with_flags(l3, sport, dport, 1, flags).write(&mut frame, &payload)
        }
        ipproto::ICMP if !v6 => l3
            .icmpv4_raw(sport as u8, dport as u8, [0; 4])
            .write(&mut frame, &payload),
        ipproto::ICMPV6 if v6 => l3
            .icmpv6_raw(sport as u8, dport as u8, [0; 4])
            .write(&mut frame, &payload),
        ipproto::UDP => l3.udp(sport, dport).write(&mut frame, &payload),
        other => {
            let mut f = Vec::new();
            let r = l3.write(&mut f, other.into(), &payload);
            frame = f;
            r
        }
    };
    written.ok()?;
    Some((in_port, frame))
}

/// `l3`'s TCP header from `sport` to `dport`, sequence number `seq`, with
/// the flags of `flags` (the header's flag byte) set; ACK acknowledges 1.
pub fn tcp_with_flags(
    l3: PacketBuilderStep<IpHeaders>,
    sport: u16,
    dport: u16,
    seq: u32,
    flags: u8,
) -> PacketBuilderStep<TcpHeader> {
    type Step = PacketBuilderStep<TcpHeader>;
    type Setter = fn(Step) -> Step;
    let setters: [(u8, Setter); 8] = [
        (0x01, |t| t.fin()),
        (0x02, |t| t.syn()),
        (0x04, |t| t.rst()),
        (0x08, |t| t.psh()),
        (0x10, |t| t.ack(1)),
        (0x20, |t| t.urg(0)),
        (0x40, |t| t.ece()),
        (0x80, |t| t.cwr()),
    ];
    let mut t = l3.tcp(sport, dport, seq, 4096);
    for (bit, set) in setters {
        if flags & bit != 0 {
            t = set(t);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{DropReason, Verdict};
    use crate::verify::{Reference, Subject};

    /// Each rule alone, dropping what it takes on ports that pass what no
    /// rule takes: its own probe is dropped by it, each probe just
    /// outside one of its fields is passed.
    #[test]
    fn a_rule_takes_its_probe_and_none_just_outside_it() {
        let matches = [
            "{in_port: b}",
            "{eth_src: '02:00:00:00:00:33', eth_dst: '02:00:00:00:00:44'}",
            "{vlan: 42, ip_proto: udp}",
            "{vlan: untagged, ip_proto: tcp}",
            "{eth_type: arp}",
            "{ip_src: 192.0.2.0/24, ip_dst: 198.51.100.7/32}",
            "{ip_src: '2001:db8::/48', ip_proto: udp, l4_dst: 53}",
            "{ip_proto: tcp, l4_src: '0x400/0xfc00', tcp_flags: '+syn-ack'}",
            "{ip_proto: icmp, l4_src: 8, l4_dst: 0}",
            "{ip_proto: icmpv6, l4_src: 128}",
            "{ip_proto: 47}",
        ];
        for m in matches {
            let set = RuleSet::from_yaml(&format!(
                "ports: [{{name: a, index: 0}}, {{name: b, index: 1}}]\nrules:\n  - {{id: 7, priority: 5, match: {m}, actions: [drop]}}\n"
            ))
            .unwrap();
            set.validate().unwrap();
            let ps = probes(&set);
            assert!(
                ps.len() >= 2,
                "{m}: an inside probe and outside ones: {ps:?}"
            );
            let mut reference = Reference::new(&set).unwrap();
            for p in &ps {
                let got = reference.run(p.in_port, &p.frame).unwrap().verdict;
                let want = if p.why == "rule 7" {
                    Verdict::Drop(DropReason::Rule)
                } else {
                    Verdict::Pass
                };
                assert_eq!(got, want, "{m}: {}", p.why);
            }
        }
    }
}

#[cfg(test)]
mod tie_tests {
    use super::*;
    use crate::pipeline::Verdict;
    use crate::verify::{Reference, Subject};

    #[test]
    fn rules_of_equal_priority_that_share_frames_get_a_probe_the_lower_id_takes() {
        let set = RuleSet::from_yaml(
            "ports: [{name: a, index: 0}, {name: b, index: 1}, {name: c, index: 2}]\nrules:\n  - {id: 7, priority: 5, match: {ip_proto: udp}, actions: [{output: b}]}\n  - {id: 3, priority: 5, match: {ip_dst: 10.0.0.0/8, l4_dst: '0x0035/0x00ff', ip_proto: udp}, actions: [{output: c}]}\n  - {id: 4, priority: 5, match: {ip_proto: tcp}, actions: [drop]}\n  - {id: 5, priority: 9, match: {ip_proto: udp}, actions: [pass]}\n",
        )
        .unwrap();
        set.validate().unwrap();
        let ties: Vec<Probe> = probes(&set)
            .into_iter()
            .filter(|p| p.why.contains("tie"))
            .collect();
        // 7 and 3 share UDP to 10/8 port 53 (low byte); 4 is TCP, 5 is
        // above them all.
        assert_eq!(ties.len(), 1, "{ties:?}");
        assert_eq!(ties[0].why, "rules 3 and 7 tie at priority 5");
        // Without rule 5 the lower id takes it.
        let mut without = set.clone();
        without.rules.retain(|r| r.id != 5);
        let mut reference = Reference::new(&without).unwrap();
        let got = reference.run(ties[0].in_port, &ties[0].frame).unwrap();
        assert_eq!(got.verdict, Verdict::Output(2), "rule 3's port");
        assert_eq!(
            crate::verify::candidates(&set, ties[0].in_port, &ties[0].frame),
            [5, 3, 7]
        );
    }
}
