//! Differential property tests.
//!
//! - The compiled classifier (parse -> tuple-space search) picks the same rule
//!   as a naive oracle: a linear scan over the rules sorted by (priority, id),
//!   evaluating each `Match` directly against a description of the packet.
//!   Packets are built with etherparse from that description.
//! - Incremental checksum updates equal a full recomputation.

use dse_datapath::compile::NO_RULE;
use dse_datapath::pipeline::{Installed, Pipeline, parse, search, search_batch};
use dse_datapath::rule::*;
use dse_datapath::wire::checksum;
use dse_datapath::{Frame, compile};
use etherparse::{PacketBuilder, VlanId};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a generated packet is.
#[derive(Debug, Clone)]
struct Pkt {
    in_port: u16,
    vlan: Option<u16>,
    src: IpAddr,
    dst: IpAddr,
    tcp: bool,
    sport: u16,
    dport: u16,
    flags: u8,
}

impl Pkt {
    fn build(&self) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let ip = match (self.vlan, self.src, self.dst) {
            (Some(v), IpAddr::V4(s), IpAddr::V4(d)) => eth
                .single_vlan(VlanId::try_new(v).unwrap())
                .ipv4(s.octets(), d.octets(), 64),
            (None, IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
            (Some(v), IpAddr::V6(s), IpAddr::V6(d)) => eth
                .single_vlan(VlanId::try_new(v).unwrap())
                .ipv6(s.octets(), d.octets(), 64),
            (None, IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
            _ => unreachable!("generator keeps families equal"),
        };
        let mut out = Vec::new();
        if self.tcp {
            let mut t = ip.tcp(self.sport, self.dport, 1, 100);
            if self.flags & 0x02 != 0 {
                t = t.syn();
            }
            if self.flags & 0x10 != 0 {
                t = t.ack(5);
            }
            t.write(&mut out, b"x").unwrap();
        } else {
            ip.udp(self.sport, self.dport)
                .write(&mut out, b"x")
                .unwrap();
        }
        out
    }
}

fn prefix_contains(p: &IpPrefix, a: &IpAddr) -> bool {
    match (p.addr, a) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            p.len == 0 || (u32::from(n) ^ u32::from(*a)) >> (32 - u32::from(p.len)) == 0
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            p.len == 0 || (u128::from(n) ^ u128::from(*a)) >> (128 - u32::from(p.len)) == 0
        }
        _ => false,
    }
}

/// The oracle: does `m` take `p`? Written from the rule semantics, not from the compiler.
fn oracle_matches(m: &Match, p: &Pkt, set: &RuleSet) -> bool {
    let proto = if p.tcp { 6 } else { 17 };
    let v4 = p.src.is_ipv4();
    m.in_port
        .as_ref()
        .is_none_or(|n| set.port(n).unwrap().index == p.in_port)
        && m.vlan.is_none_or(|v| match v {
            VlanMatch::Untagged => p.vlan.is_none(),
            VlanMatch::Vid(id) => p.vlan == Some(id),
        })
        && m.eth_type
            .is_none_or(|t| t.0 == if v4 { 0x0800 } else { 0x86dd })
        && m.ip_src.as_ref().is_none_or(|x| prefix_contains(x, &p.src))
        && m.ip_dst.as_ref().is_none_or(|x| prefix_contains(x, &p.dst))
        && m.ip_proto.is_none_or(|x| x.0 == proto)
        && m.l4_src.is_none_or(|x| p.sport & x.mask == x.value)
        && m.l4_dst.is_none_or(|x| p.dport & x.mask == x.value)
        && m.tcp_flags
            .is_none_or(|x| p.tcp && p.flags & x.0.mask == x.0.value)
}

fn oracle(set: &RuleSet, p: &Pkt) -> Option<u32> {
    let mut rules: Vec<&Rule> = set.rules.iter().collect();
    rules.sort_by_key(|r| (std::cmp::Reverse(r.priority), r.id));
    rules
        .iter()
        .find(|r| oracle_matches(&r.matches, p, set))
        .map(|r| r.id)
}

const V4: [[u8; 4]; 4] = [
    [10, 0, 0, 1],
    [10, 0, 1, 1],
    [10, 1, 0, 1],
    [192, 168, 1, 1],
];
const V6: [u128; 3] = [
    0x2001_0db8_0000_0000_0000_0000_0000_0001,
    0x2001_0db8_0001_0000_0000_0000_0000_0001,
    0xfd00_0000_0000_0000_0000_0000_0000_0001,
];

fn pkt() -> impl Strategy<Value = Pkt> {
    (
        0u16..2,
        prop::option::of(1u16..4),
        any::<bool>(),
        0usize..4,
        0usize..4,
        any::<bool>(),
        0u16..4,
        0u16..4,
        prop::sample::select(vec![0x02u8, 0x10, 0x12, 0]),
    )
        .prop_map(|(in_port, vlan, v6, s, d, tcp, sp, dp, flags)| {
            let (src, dst) = if v6 {
                (
                    IpAddr::V6(Ipv6Addr::from(V6[s % 3])),
                    IpAddr::V6(Ipv6Addr::from(V6[d % 3])),
                )
            } else {
                (
                    IpAddr::V4(Ipv4Addr::from(V4[s])),
                    IpAddr::V4(Ipv4Addr::from(V4[d])),
                )
            };
            Pkt {
                in_port,
                vlan,
                src,
                dst,
                tcp,
                sport: 1000 + sp,
                dport: 50 + dp,
                flags,
            }
        })
}

fn prefix(v6: bool) -> impl Strategy<Value = IpPrefix> {
    (
        0usize..4,
        prop::sample::select(vec![0u8, 8, 16, 24, 32, 48, 64, 128]),
    )
        .prop_map(move |(i, len)| {
            if v6 {
                let a = V6[i % 3];
                let masked = if len == 0 {
                    0
                } else {
                    a & (!0u128 << (128 - u32::from(len)))
                };
                IpPrefix {
                    addr: IpAddr::V6(Ipv6Addr::from(masked)),
                    len,
                }
            } else {
                let len = len.min(32);
                let a = u32::from_be_bytes(V4[i]);
                let masked = if len == 0 {
                    0
                } else {
                    a & (!0u32 << (32 - u32::from(len)))
                };
                IpPrefix {
                    addr: IpAddr::V4(Ipv4Addr::from(masked)),
                    len,
                }
            }
        })
}

fn a_match() -> impl Strategy<Value = Match> {
    let l4 = prop::option::of((
        0u16..4,
        prop::sample::select(vec![0xffffu16, 0xfffe, 0xfffc]),
    ));
    (
        prop::option::of(0u16..2),
        prop::option::of(prop::option::of(1u16..4)),
        any::<bool>(),
        prop::option::of(prefix(false)),
        prop::option::of(prefix(false)),
        prop::option::of(any::<bool>()),
        (l4.clone(), l4),
        prop::option::of(prop::sample::select(vec![
            (0x02u8, 0x12u8),
            (0x10, 0x10),
            (0, 0x02),
        ])),
    )
        .prop_map(|(port, vlan, v6, src, dst, tcp, (sp, dp), flags)| {
            let fam = |p: Option<IpPrefix>| {
                p.map(|p| {
                    if v6 {
                        IpPrefix {
                            addr: IpAddr::V6(Ipv6Addr::from(if p.len == 0 {
                                0
                            } else {
                                V6[0] & (!0u128 << (128 - u32::from(p.len)))
                            })),
                            len: p.len,
                        }
                    } else {
                        p
                    }
                })
            };
            let proto = tcp.map(|t| IpProto(if t { 6 } else { 17 }));
            let has_l4 = proto.is_some();
            Match {
                in_port: port.map(|p| format!("p{p}")),
                vlan: vlan.map(|v| v.map_or(VlanMatch::Untagged, VlanMatch::Vid)),
                ip_src: fam(src),
                ip_dst: fam(dst),
                ip_proto: proto,
                l4_src: sp.filter(|_| has_l4).map(|(v, m)| Masked {
                    value: (1000 + v) & m,
                    mask: m,
                }),
                l4_dst: dp.filter(|_| has_l4).map(|(v, m)| Masked {
                    value: (50 + v) & m,
                    mask: m,
                }),
                tcp_flags: flags
                    .filter(|_| tcp == Some(true))
                    .map(|(v, m)| TcpFlags(Masked { value: v, mask: m })),
                ..Match::default()
            }
        })
}

fn rule_set() -> impl Strategy<Value = RuleSet> {
    prop::collection::vec((0u32..8, a_match()), 0..24).prop_map(|rules| RuleSet {
        ports: vec![
            PortDef {
                name: "p0".into(),
                index: 0,
                default: DefaultAction::Pass,
            },
            PortDef {
                name: "p1".into(),
                index: 1,
                default: DefaultAction::Drop,
            },
        ],
        meters: vec![],
        rules: rules
            .into_iter()
            .enumerate()
            .map(|(i, (priority, matches))| Rule {
                id: 1000 - i as u32 * 3,
                priority,
                matches,
                actions: vec![Action::Drop],
            })
            .collect(),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn classifier_agrees_with_linear_scan(set in rule_set(), pkts in prop::collection::vec(pkt(), 1..32)) {
        let tables = compile(&set).expect("generated rule sets are valid");
        let inst = Installed::new(1, tables.clone(), None);
        let mut pipeline = Pipeline::new(16);
        // The batched search (the pipeline's miss path) agrees with the
        // search of each key alone.
        let keys: Vec<_> = pkts.iter().map(|p| parse(&p.build(), p.in_port, 0).expect("generated packets parse").0).collect();
        let refs: Vec<_> = keys.iter().collect();
        let mut batched = vec![0; keys.len()];
        search_batch(&tables, &refs, &mut batched);
        let alone: Vec<u32> = keys.iter().map(|k| search(&tables, k)).collect();
        prop_assert_eq!(batched, alone);
        // And the batch pipeline (cache misses searched in windows) gives
        // the verdicts and counts of the frame-by-frame one.
        let port = pkts[0].in_port;
        let built: Vec<Vec<u8>> = pkts.iter().filter(|p| p.in_port == port).map(|p| p.build()).collect();
        let mut single = Pipeline::new(16);
        let want: Vec<_> = built.iter().map(|b| single.process(&inst, &mut Frame::new(b), port, 0)).collect();
        let mut batch = Pipeline::new(16);
        let mut frames: Vec<Frame> = built.iter().map(|b| Frame::new(b)).collect();
        let mut got = Vec::new();
        batch.process_batch(&inst, &mut frames, port, 0, &mut got);
        prop_assert_eq!(got, want);
        prop_assert_eq!(batch.counts(&inst), single.counts(&inst));
        for p in &pkts {
            let bytes = p.build();
            let (key, _) = parse(&bytes, p.in_port, 0).expect("generated packets parse");
            let got = search(&tables, &key);
            let got_id = (got != NO_RULE).then(|| tables.rules.get(got as usize).id);
            prop_assert_eq!(got_id, oracle(&set, p), "packet {:?}", p);
            // The cached path agrees too (twice: miss, then hit).
            for _ in 0..2 {
                let before = pipeline.counts(&inst);
                pipeline.process(&inst, &mut Frame::new(&bytes), p.in_port, 0);
                let after = pipeline.counts(&inst);
                let bumped: Vec<u32> = after.iter().filter(|(id, c)| before[id].packets != c.packets).map(|(id, _)| *id).collect();
                prop_assert_eq!(bumped, got_id.into_iter().collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn incremental_checksum_equals_full(mut data in prop::collection::vec(any::<u8>(), 2..200), at in any::<prop::sample::Index>(), new in any::<[u8; 4]>()) {
        if data.len() % 2 == 1 { data.push(0); }
        let words = (data.len() / 2).saturating_sub(1);
        prop_assume!(words >= 1);
        let at = at.index(words) * 2;
        let len = (data.len() - at).min(4) & !1;
        let old_sum = checksum::checksum(&data);
        let old = data[at..at + len].to_vec();
        data[at..at + len].copy_from_slice(&new[..len]);
        let full = checksum::checksum(&data);
        let inc = checksum::update(old_sum, &old, &new[..len]);
        // One's complement has two zeros: 0x0000 and 0xffff are the same sum.
        prop_assert!(inc == full || (inc == 0xffff && full == 0) || (inc == 0 && full == 0xffff), "inc {:#x} full {:#x}", inc, full);
    }
}

fn search_id(
    tables: &dse_datapath::CompiledTables,
    key: &dse_datapath::compile::FlowKey,
) -> Option<u32> {
    let s = search(tables, key);
    (s != NO_RULE).then(|| tables.rules.get(s as usize).id)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Incremental patches (adds, replacements, removals, rules that shadow
    /// each other) classify exactly as a full compile of the same rule set.
    #[test]
    fn patches_agree_with_a_full_compile(
        start in rule_set(),
        steps in prop::collection::vec((rule_set(), prop::collection::vec(any::<prop::sample::Index>(), 0..6)), 1..6),
        pkts in prop::collection::vec(pkt(), 1..24),
    ) {
        let mut compiler = dse_datapath::compile::Compiler::new(&start).expect("valid");
        let mut current = start.clone();
        for (generation, (adds, removals)) in steps.into_iter().enumerate() {
            let mut remove: Vec<u32> = removals.iter().filter(|_| !current.rules.is_empty()).map(|i| current.rules[i.index(current.rules.len())].id).collect();
            remove.sort_unstable();
            remove.dedup();
            // Reuse some ids (replacements) and add new ones, with shuffled priorities.
            let upsert: Vec<Rule> = adds.rules.into_iter().enumerate().map(|(i, mut r)| {
                r.id = if i % 3 == 0 { 1000 - (i as u32) * 3 } else { 5000 + generation as u32 * 100 + i as u32 };
                r
            }).collect();
            let mut upsert_ids: Vec<u32> = upsert.iter().map(|r| r.id).collect();
            upsert_ids.sort_unstable();
            upsert_ids.dedup();
            prop_assume!(upsert_ids.len() == upsert.len());
            let mut candidate = current.clone();
            candidate.rules.retain(|r| !remove.contains(&r.id) && !upsert_ids.contains(&r.id));
            candidate.rules.extend(upsert.clone());
            let patched = match compiler.patch(upsert, &remove, generation as u64 + 2, u64::MAX) {
                Ok(p) => p,
                Err(e) => {
                    // Refused whole: a full compile refuses too, and nothing changed.
                    prop_assert!(compile(&candidate).is_err(), "patch refused ({}) but a full compile accepts", e);
                    prop_assert_eq!(compiler.rule_set().rules.len(), current.rules.len());
                    continue;
                }
            };
            current = candidate;
            let full = compile(&current).expect("a patch that applies compiles in full too");
            for p in &pkts {
                let bytes = p.build();
                let (key, _) = parse(&bytes, p.in_port, 0).expect("parses");
                prop_assert_eq!(search_id(&patched.tables, &key), search_id(&full, &key), "packet {:?}", p);
                prop_assert_eq!(search_id(&patched.tables, &key), oracle(&current, p));
            }
            prop_assert_eq!(compiler.rule_set().rules.len(), current.rules.len());
        }
    }
}
