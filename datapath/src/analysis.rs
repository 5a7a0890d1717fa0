//! Rules no packet can reach: those the rules above them cover, and those
//! whose fields no parsed packet has together.
//!
//! A rule's match is a ternary cube over the 512 bits of the flow key
//! ([`MaskedKey`]: each bit fixed to 0, fixed to 1, or free). A rule is
//! shadowed when the cubes of the rules ranked above it (higher priority,
//! or the same priority and a lower id) cover its cube: what is left of it
//! after subtracting each of theirs in turn is empty. Subtracting cube B
//! from cube A leaves at most one cube per bit that B fixes and A leaves
//! free, so the pieces are bounded by [`MAX_PIECES`]; a rule whose
//! remainder grows past it is left undecided rather than reported.
//!
//! The cubes range over every key, including keys the parser never
//! produces, so a rule covered only up to such keys is not reported:
//! every report is a true one.

use crate::compile::{FLAG_L4, FlowKey, MaskedKey};
use crate::rule::RuleSet;
use crate::wire::{ethertype, ipproto};
use std::fmt;

/// The most cube pieces a rule's remainder may hold before its analysis
/// stops undecided.
pub const MAX_PIECES: usize = 4096;

/// Why a rule is never taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreached {
    /// Every packet it matches is taken first by these rules (by id, in
    /// rank order): each of them takes some of its packets.
    Shadowed {
        /// The covering rules.
        by: Vec<u32>,
    },
    /// No packet the parser produces has its fields together.
    Impossible {
        /// Which fields, and why.
        why: String,
    },
}

/// A rule that no packet reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule.
    pub rule: u32,
    /// Why.
    pub why: Unreached,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.why {
            Unreached::Shadowed { by } => {
                let by: Vec<String> = by.iter().map(u32::to_string).collect();
                write!(
                    f,
                    "rule {} is never taken: rule{} {} above it take{} every packet it matches",
                    self.rule,
                    if by.len() == 1 { "" } else { "s" },
                    by.join(", "),
                    if by.len() == 1 { "s" } else { "" },
                )
            }
            Unreached::Impossible { why } => {
                write!(f, "rule {} can never match: {why}", self.rule)
            }
        }
    }
}

/// Every rule of `set` that no packet reaches, in rank order. `set` must
/// be valid ([`RuleSet::validate`]).
pub fn unreached(set: &RuleSet) -> Vec<Finding> {
    let mut ranked: Vec<(u32, u32, MaskedKey)> = set
        .rules
        .iter()
        .map(|r| (r.priority, r.id, MaskedKey::from_match(&r.matches, set)))
        .collect();
    ranked.sort_by_key(|(priority, id, _)| (std::cmp::Reverse(*priority), *id));
    let mut found = Vec::new();
    for (i, (_, id, cube)) in ranked.iter().enumerate() {
        if let Some(why) = impossible(cube) {
            found.push(Finding {
                rule: *id,
                why: Unreached::Impossible { why },
            });
        } else if let Some(by) = covered(cube, ranked[..i].iter().map(|(_, id, c)| (*id, c))) {
            found.push(Finding {
                rule: *id,
                why: Unreached::Shadowed { by },
            });
        }
    }
    found
}

/// The rules among `above` (id, cube, in rank order) that together cover
/// `cube`, each of them taking a part of it, in rank order; `None` if they
/// do not (or the remainder grew past [`MAX_PIECES`]). A union covers
/// whatever order it is subtracted in, so the cubes that fix the fewest
/// bits `cube` leaves free go first: they split it into the fewest pieces.
fn covered<'a>(
    cube: &MaskedKey,
    above: impl Iterator<Item = (u32, &'a MaskedKey)>,
) -> Option<Vec<u32>> {
    let mut candidates: Vec<(u32, usize, u32, &MaskedKey)> = above
        .enumerate()
        .filter(|(_, (_, c))| intersects(cube, c))
        .map(|(rank, (id, c))| (extra_bits(cube, c), rank, id, c))
        .collect();
    candidates.sort_by_key(|(bits, rank, _, _)| (*bits, *rank));
    let mut left = vec![*cube];
    let mut by = Vec::new();
    for (_, rank, id, c) in candidates {
        if !left.iter().any(|piece| intersects(piece, c)) {
            continue;
        }
        left = left.iter().flat_map(|piece| subtract(piece, c)).collect();
        by.push((rank, id));
        if left.is_empty() {
            by.sort_unstable();
            return Some(by.into_iter().map(|(_, id)| id).collect());
        }
        if left.len() > MAX_PIECES {
            return None;
        }
    }
    None
}

/// How many bits `b` fixes that `a` leaves free.
fn extra_bits(a: &MaskedKey, b: &MaskedKey) -> u32 {
    let (am, bm) = (a.mask.words(), b.mask.words());
    (0..8).map(|i| (bm[i] & !am[i]).count_ones()).sum()
}

/// Whether some key is in both `a` and `b`: they agree on every bit both fix.
fn intersects(a: &MaskedKey, b: &MaskedKey) -> bool {
    let (av, am, bv, bm) = words(a, b);
    (0..8).all(|i| (av[i] ^ bv[i]) & am[i] & bm[i] == 0)
}

fn words<'a>(
    a: &'a MaskedKey,
    b: &'a MaskedKey,
) -> (&'a [u64; 8], &'a [u64; 8], &'a [u64; 8], &'a [u64; 8]) {
    (
        a.value.words(),
        a.mask.words(),
        b.value.words(),
        b.mask.words(),
    )
}

/// `a` without the keys of `b`, as disjoint cubes: for each bit `b` fixes
/// and `a` leaves free, the piece of `a` with that bit opposite to `b`'s
/// (the bits before it set as `b` sets them).
fn subtract(a: &MaskedKey, b: &MaskedKey) -> Vec<MaskedKey> {
    if !intersects(a, b) {
        return vec![*a];
    }
    let (bv, bm) = (*b.value.words(), *b.mask.words());
    let (mut v, mut m) = (*a.value.words(), *a.mask.words());
    let mut pieces = Vec::new();
    for w in 0..8 {
        let mut free = bm[w] & !m[w];
        while free != 0 {
            let bit = free & free.wrapping_neg();
            free &= free - 1;
            let mut pv = v;
            pv[w] = (v[w] & !bit) | (!bv[w] & bit);
            let mut pm = m;
            pm[w] |= bit;
            pieces.push(MaskedKey {
                value: FlowKey::from_words(pv),
                mask: FlowKey::from_words(pm),
            });
            v[w] = (v[w] & !bit) | (bv[w] & bit);
            m[w] |= bit;
        }
    }
    pieces
}

/// Why no parsed packet has `cube`'s fields together, if none does. The
/// combinations validation refuses (ports without TCP, UDP or ICMP, TCP
/// flags without TCP, IP fields with another EtherType) never get here;
/// what is left is ICMP's: its type and code stand in the port fields.
fn impossible(cube: &MaskedKey) -> Option<String> {
    let (v, m) = (&cube.value, &cube.mask);
    if m.flags & v.flags & FLAG_L4 == 0 || m.ip_proto != 0xff {
        return None;
    }
    let (name, parsed_in, other, other_name) = match v.ip_proto {
        ipproto::ICMP => ("icmp", "IPv4", ethertype::IPV6, "IPv6"),
        ipproto::ICMPV6 => ("icmpv6", "IPv6", ethertype::IPV4, "IPv4"),
        _ => return None,
    };
    if m.eth_type == 0xffff && v.eth_type == other {
        return Some(format!(
            "ICMP type or code with ip_proto {name} in {other_name}: {name} is parsed only in {parsed_in}"
        ));
    }
    let high = (v.l4_src & m.l4_src) | (v.l4_dst & m.l4_dst);
    (high & 0xff00 != 0).then(|| {
        format!(
            "l4_src or l4_dst above 255 with ip_proto {name}: they hold its type and code, 0 to 255"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rules: &str) -> RuleSet {
        let text =
            format!("ports: [{{name: a, index: 0}}, {{name: b, index: 1}}]\nrules:\n{rules}");
        let s = RuleSet::from_yaml(&text).unwrap();
        s.validate().unwrap();
        s
    }

    /// (rules, what is found: rule id and the covering rules, or the
    /// start of why it is impossible)
    #[test]
    fn each_unreached_rule_is_found_and_no_other() {
        let shadowed = |rule, by: &[u32]| Finding {
            rule,
            why: Unreached::Shadowed { by: by.to_vec() },
        };
        let cases: Vec<(&str, &str, Vec<Finding>)> = vec![
            (
                "a wider rule above",
                "  - {id: 1, priority: 10, match: {ip_proto: udp}, actions: [drop]}\n  - {id: 2, priority: 5, match: {ip_proto: udp, l4_dst: 53}, actions: [pass]}\n",
                vec![shadowed(2, &[1])],
            ),
            (
                "a narrower rule above shadows nothing",
                "  - {id: 1, priority: 10, match: {ip_proto: udp, l4_dst: 53}, actions: [drop]}\n  - {id: 2, priority: 5, match: {ip_proto: udp}, actions: [pass]}\n",
                vec![],
            ),
            (
                "two halves of a prefix above",
                "  - {id: 1, priority: 10, match: {ip_dst: 10.0.0.0/25}, actions: [drop]}\n  - {id: 2, priority: 10, match: {ip_dst: 10.0.0.128/25}, actions: [drop]}\n  - {id: 3, priority: 5, match: {ip_dst: 10.0.0.0/24, ip_proto: tcp}, actions: [pass]}\n",
                vec![shadowed(3, &[1, 2])],
            ),
            (
                "one half only",
                "  - {id: 1, priority: 10, match: {ip_dst: 10.0.0.0/25}, actions: [drop]}\n  - {id: 3, priority: 5, match: {ip_dst: 10.0.0.0/24}, actions: [pass]}\n",
                vec![],
            ),
            (
                "a tie goes to the lower id",
                "  - {id: 7, priority: 5, match: {ip_proto: tcp}, actions: [pass]}\n  - {id: 3, priority: 5, match: {ip_proto: tcp}, actions: [drop]}\n",
                vec![shadowed(7, &[3])],
            ),
            (
                "the same match on another port",
                "  - {id: 1, priority: 10, match: {in_port: a, ip_proto: tcp}, actions: [drop]}\n  - {id: 2, priority: 5, match: {in_port: b, ip_proto: tcp}, actions: [pass]}\n",
                vec![],
            ),
            (
                "both ports above",
                "  - {id: 1, priority: 10, match: {in_port: a}, actions: [drop]}\n  - {id: 2, priority: 10, match: {in_port: b}, actions: [drop]}\n  - {id: 3, priority: 5, match: {ip_proto: tcp}, actions: [pass]}\n",
                vec![],
            ),
            (
                "a catch-all above everything",
                "  - {id: 1, priority: 100, match: {}, actions: [drop]}\n  - {id: 2, priority: 5, match: {vlan: 42}, actions: [pass]}\n  - {id: 3, priority: 4, match: {}, actions: [pass]}\n",
                vec![shadowed(2, &[1]), shadowed(3, &[1])],
            ),
            (
                "a port range's masks above",
                "  - {id: 1, priority: 10, match: {ip_proto: tcp, l4_dst: '0/0x8000'}, actions: [drop]}\n  - {id: 2, priority: 10, match: {ip_proto: tcp, l4_dst: '0x8000/0x8000'}, actions: [drop]}\n  - {id: 3, priority: 5, match: {ip_proto: tcp, l4_dst: 443}, actions: [pass]}\n  - {id: 4, priority: 5, match: {ip_proto: tcp}, actions: [pass]}\n",
                vec![shadowed(3, &[1])],
            ),
        ];
        for (what, rules, want) in cases {
            assert_eq!(unreached(&set(rules)), want, "{what}");
        }
    }

    #[test]
    fn rules_no_parsed_packet_matches_are_named_with_the_reason() {
        let cases = [
            (
                "  - {id: 1, priority: 5, match: {ip_proto: icmp, l4_dst: 300}, actions: [drop]}\n",
                "l4_src or l4_dst above 255 with ip_proto icmp",
            ),
            (
                "  - {id: 1, priority: 5, match: {ip_proto: icmp, ip_dst: \"2001:db8::/32\", l4_src: 8}, actions: [drop]}\n",
                "ICMP type or code with ip_proto icmp in IPv6",
            ),
            (
                "  - {id: 1, priority: 5, match: {ip_proto: icmpv6, eth_type: ipv4, l4_dst: 0}, actions: [drop]}\n",
                "ICMP type or code with ip_proto icmpv6 in IPv4",
            ),
        ];
        for (rules, why) in cases {
            let found = unreached(&set(rules));
            assert_eq!(found.len(), 1, "{rules}: {found:?}");
            let text = found[0].to_string();
            assert!(
                text.starts_with(&format!("rule 1 can never match: {why}")),
                "{text}"
            );
        }
        // Each is possible with the right protocol.
        for rules in [
            "  - {id: 1, priority: 5, match: {ip_proto: tcp, tcp_flags: '+syn'}, actions: [drop]}\n",
            "  - {id: 1, priority: 5, match: {ip_proto: icmp, l4_src: 8}, actions: [drop]}\n",
            "  - {id: 1, priority: 5, match: {ip_proto: icmpv6, ip_dst: \"2001:db8::/32\", l4_src: 128}, actions: [drop]}\n",
        ] {
            assert_eq!(unreached(&set(rules)), vec![], "{rules}");
        }
    }

    #[test]
    fn subtraction_leaves_disjoint_pieces_that_with_the_subtrahend_make_the_whole() {
        let s = set(
            "  - {id: 1, priority: 5, match: {ip_proto: tcp, l4_dst: '0x50/0xf0'}, actions: [drop]}\n  - {id: 2, priority: 5, match: {ip_proto: tcp, l4_dst: '0x51/0xff', l4_src: 7}, actions: [drop]}\n",
        );
        let a = MaskedKey::from_match(&s.rules[0].matches, &s);
        let b = MaskedKey::from_match(&s.rules[1].matches, &s);
        let pieces = subtract(&a, &b);
        for (i, p) in pieces.iter().enumerate() {
            assert!(!intersects(p, &b), "piece {i} is outside b");
            for q in &pieces[i + 1..] {
                assert!(!intersects(p, q), "pieces are disjoint");
            }
        }
        // Every key of `a` is in b or in exactly one piece: try keys that
        // vary the bits either fixes.
        for l4_dst in 0x40..0x60u16 {
            for l4_src in [0u16, 7, 8] {
                let mut k = a.value;
                k.l4_dst = l4_dst;
                k.l4_src = l4_src;
                if !a.matches(&k) {
                    continue;
                }
                let inside = pieces.iter().filter(|p| p.matches(&k)).count();
                assert_eq!(
                    inside + usize::from(b.matches(&k)),
                    1,
                    "{l4_dst:#x}/{l4_src}"
                );
            }
        }
    }
}
