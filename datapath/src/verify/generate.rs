//! Random frames that cover a rule set: each made from a rule picked at
//! random, its match (or, one time in four, its match with one field just
//! outside) filled in with random values where it leaves bits free.

use super::Probe;
use super::probes::{frame_for, outside};
use crate::rule::{EthType, IpPrefix, IpProto, Mac, Masked, Match, RuleSet, TcpFlags, VlanMatch};
use crate::wire::{ethertype, ipproto};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use std::net::IpAddr;

/// `n` random frames for `set`, the same for the same `seed`. Each names
/// the rule it was made from, and the field it is just outside of if so.
/// A rule set with no rules (or none a frame can be built for: VNI
/// matches only) gets frames of random fields.
pub fn generate(set: &RuleSet, n: usize, seed: u64) -> Vec<Probe> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    let buildable: Vec<_> = set
        .rules
        .iter()
        .filter(|r| r.matches.vni.is_none())
        .collect();
    while out.len() < n {
        let (why, m) = match buildable.get(rng.random_range(0..buildable.len().max(1))) {
            None => ("random fields".to_string(), Match::default()),
            Some(r) => {
                let mut variants = outside(set, r);
                if !variants.is_empty() && rng.random_ratio(1, 4) {
                    let (field, m) = variants.swap_remove(rng.random_range(0..variants.len()));
                    (format!("random, rule {}, {field} outside", r.id), m)
                } else {
                    (format!("random, rule {}", r.id), r.matches.clone())
                }
            }
        };
        if let Some((in_port, frame)) = frame_for(set, &filled(set, &m, &mut rng)) {
            out.push(Probe {
                in_port,
                frame,
                why,
            });
        }
    }
    out
}

/// `m` with every field it leaves free, or partly free, given random
/// values within what it fixes.
fn filled(set: &RuleSet, m: &Match, rng: &mut SmallRng) -> Match {
    let mut f = m.clone();
    if f.in_port.is_none() && !set.ports.is_empty() {
        f.in_port = Some(set.ports[rng.random_range(0..set.ports.len())].name.clone());
    }
    let mac = |rng: &mut SmallRng| {
        let mut b: [u8; 6] = rng.random();
        // Unicast, locally administered.
        b[0] = (b[0] & 0xfc) | 0x02;
        Mac(b)
    };
    f.eth_src = f.eth_src.or_else(|| Some(mac(rng)));
    f.eth_dst = f.eth_dst.or_else(|| Some(mac(rng)));
    if f.vlan.is_none() && rng.random_ratio(1, 4) {
        f.vlan = Some(VlanMatch::Vid(rng.random_range(1..4095)));
    }
    let family = f.ip_src.or(f.ip_dst).map(|p| p.addr.is_ipv6());
    let ip = f.ip_proto.is_some()
        || family.is_some()
        || f.eth_type
            .is_none_or(|t| t.0 == ethertype::IPV4 || t.0 == ethertype::IPV6);
    if f.eth_type.is_none() {
        f.eth_type = Some(EthType(match (ip, family) {
            (false, _) => ethertype::ARP,
            (true, Some(true)) => ethertype::IPV6,
            (true, Some(false)) => ethertype::IPV4,
            (true, None) if f.ip_proto.is_some_and(|p| p.0 == ipproto::ICMPV6) => ethertype::IPV6,
            (true, None) if rng.random_ratio(1, 4) => ethertype::IPV6,
            (true, None) => ethertype::IPV4,
        }));
    }
    let Some(v6) = f.eth_type.and_then(|t| match t.0 {
        ethertype::IPV4 => Some(false),
        ethertype::IPV6 => Some(true),
        _ => None,
    }) else {
        return f;
    };
    f.ip_src = Some(address(f.ip_src, v6, rng));
    f.ip_dst = Some(address(f.ip_dst, v6, rng));
    let icmp = if v6 { ipproto::ICMPV6 } else { ipproto::ICMP };
    let proto = *f
        .ip_proto
        .get_or_insert_with(|| IpProto([ipproto::TCP, ipproto::UDP, icmp][rng.random_range(0..3)]));
    // ICMP's type and code are a byte each; ports are 16 bits.
    let top = if proto.0 == icmp { 0xff } else { 0xffff };
    f.l4_src = Some(field(f.l4_src, top, rng));
    f.l4_dst = Some(field(f.l4_dst, top, rng));
    if proto.0 == ipproto::TCP {
        let flags = f.tcp_flags.map(|t| t.0);
        f.tcp_flags = Some(TcpFlags(field(flags, 0xff, rng)));
    }
    f
}

/// One address of the family `v6` within `p` (any, without it).
fn address(p: Option<IpPrefix>, v6: bool, rng: &mut SmallRng) -> IpPrefix {
    let addr = match p.map(|p| (p.addr, p.len)) {
        Some((IpAddr::V4(a), len)) => {
            let keep = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & keep | rng.random::<u32>() & !keep).into())
        }
        Some((IpAddr::V6(a), len)) => {
            let keep = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & keep | rng.random::<u128>() & !keep).into())
        }
        None if v6 => IpAddr::V6(rng.random::<u128>().into()),
        None => IpAddr::V4(rng.random::<u32>().into()),
    };
    IpPrefix {
        len: if addr.is_ipv6() { 128 } else { 32 },
        addr,
    }
}

/// A value of `m` (any up to `top`, without it), every bit fixed.
fn field<T>(m: Option<Masked<T>>, top: T, rng: &mut SmallRng) -> Masked<T>
where
    T: Copy
        + std::ops::BitAnd<Output = T>
        + std::ops::BitOr<Output = T>
        + std::ops::Not<Output = T>
        + From<u8>,
    rand::distr::StandardUniform: rand::distr::Distribution<T>,
{
    let (value, mask) = m.map_or((T::from(0), T::from(0)), |m| (m.value, m.mask));
    Masked {
        value: value & mask | rng.random::<T>() & !mask & top,
        mask: top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::compare::candidates;

    #[test]
    fn frames_are_the_same_for_a_seed_and_land_inside_their_rule_or_just_outside() {
        let set = RuleSet::from_yaml(
            "ports: [{name: a, index: 0}, {name: b, index: 1}]\nrules:\n  - {id: 1, priority: 9, match: {ip_proto: tcp, ip_dst: 192.0.2.0/24, l4_dst: 0x0050/0xfff0}, actions: [drop]}\n  - {id: 2, priority: 5, match: {ip_src: 2001:db8::/32}, actions: [{output: b}]}\n  - {id: 3, priority: 1, match: {eth_type: 0x0806}, actions: [pass]}\n",
        )
        .unwrap();
        let frames = generate(&set, 2000, 7);
        assert_eq!(frames.len(), 2000);
        assert_eq!(frames, generate(&set, 2000, 7), "one seed, one sequence");
        assert_ne!(frames, generate(&set, 2000, 8));
        let (mut inside, mut outside) = (0, 0);
        for p in &frames {
            let rule: u32 = p.why["random, rule ".len()..]
                .split(',')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let taken = candidates(&set, p.in_port, &p.frame).contains(&rule);
            if p.why.ends_with("outside") {
                assert!(!taken, "{} is outside rule {rule}", p.why);
                outside += 1;
            } else {
                assert!(taken, "{} is inside rule {rule}", p.why);
                inside += 1;
            }
        }
        // One in four is outside, give or take.
        assert!((300..700).contains(&outside), "{outside} outside");
        assert!(inside > 1300, "{inside} inside");
        // The free bits vary: many destinations within 192.0.2.0/24.
        let distinct: std::collections::HashSet<&[u8]> =
            frames.iter().map(|p| p.frame.as_slice()).collect();
        assert!(distinct.len() > 1900, "{} distinct frames", distinct.len());
    }
}
