//! Random rule sets and packets for the differential tests: every action
//! but a limiting meter, and packets well-formed and malformed.

#![allow(dead_code)]

use super::packets::*;
use dse_datapath::rule::*;
use std::net::IpAddr;

/// xorshift64*: deterministic, seeded per rule set.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize].clone()
    }
}

pub const V4S: [[u8; 4]; 3] = [V4_A, V4_B, [192, 168, 7, 9]];
pub const V6S: [[u8; 16]; 2] = [V6_A, V6_B];

pub fn prefix(rng: &mut Rng, v6: bool) -> IpPrefix {
    if v6 {
        let len = rng.pick(&[0u8, 32, 48, 64, 128]);
        let a = u128::from_be_bytes(rng.pick(&V6S));
        let m = if len == 0 {
            0
        } else {
            a & (!0u128 << (128 - u32::from(len)))
        };
        IpPrefix {
            addr: IpAddr::from(m.to_be_bytes()),
            len,
        }
    } else {
        let len = rng.pick(&[0u8, 8, 16, 24, 32]);
        let a = u32::from_be_bytes(rng.pick(&V4S));
        let m = if len == 0 {
            0
        } else {
            a & (!0u32 << (32 - u32::from(len)))
        };
        IpPrefix {
            addr: IpAddr::from(m.to_be_bytes()),
            len,
        }
    }
}

pub fn a_match(rng: &mut Rng) -> Match {
    let v6 = rng.chance(30);
    let mut m = Match::default();
    if rng.chance(20) {
        m.in_port = Some(format!("p{}", rng.below(3)));
    }
    if rng.chance(15) {
        m.vlan = Some(if rng.chance(50) {
            VlanMatch::Untagged
        } else {
            VlanMatch::Vid(rng.pick(&[10u16, 20]))
        });
    }
    if rng.chance(10) {
        m.eth_dst = Some(Mac(rng.pick(&[MAC_A, MAC_B])));
    }
    if rng.chance(40) {
        m.ip_src = Some(prefix(rng, v6));
    }
    if rng.chance(40) {
        m.ip_dst = Some(prefix(rng, v6));
    }
    if rng.chance(50) {
        let tcp = rng.chance(50);
        m.ip_proto = Some(IpProto(if tcp { 6 } else { 17 }));
        if rng.chance(50) {
            let mask = rng.pick(&[0xffffu16, 0xff00, 0xfff0]);
            m.l4_dst = Some(Masked {
                value: rng.pick(&[53u16, 80, 4789, 6081]) & mask,
                mask,
            });
        }
        if rng.chance(30) {
            m.l4_src = Some(Masked {
                value: 1000,
                mask: 0xffff,
            });
        }
        if tcp && rng.chance(30) {
            m.tcp_flags = Some(TcpFlags(Masked {
                value: 0x02,
                mask: 0x12,
            }));
        }
    }
    if rng.chance(10) {
        m.vni = Some(rng.pick(&[100u32, 200]));
    }
    m
}

pub fn encap(rng: &mut Rng) -> Encap {
    let v6 = rng.chance(40);
    let (ip_src, ip_dst) = if v6 {
        (IpAddr::from(V6_B), IpAddr::from(V6_A))
    } else {
        (IpAddr::from([172, 16, 0, 1]), IpAddr::from([172, 16, 0, 2]))
    };
    Encap {
        vni: rng.pick(&[100u32, 200, 0xabcdef]),
        eth_src: Mac(MAC_B),
        eth_dst: Mac(MAC_A),
        ip_src,
        ip_dst,
        udp_src: rng.chance(30).then_some(40000),
        udp_dst: None,
        options: Vec::new(),
    }
}

pub fn geneve_options(rng: &mut Rng) -> Vec<GeneveOption> {
    if rng.chance(50) {
        return Vec::new();
    }
    vec![GeneveOption {
        class: 0x0102,
        kind: 3,
        data: "deadbeef".into(),
    }]
}

pub fn actions(rng: &mut Rng) -> Vec<Action> {
    let mut out = Vec::new();
    for _ in 0..rng.below(4) {
        out.push(match rng.below(11) {
            0 => Action::SetEthSrc(Mac([2, 0, 0, 0, 0, 0x77])),
            1 => Action::SetEthDst(Mac([2, 0, 0, 0, 0, 0x88])),
            2 => Action::SetIpSrc(IpAddr::from([100, 64, 0, 1])),
            3 => Action::SetIpDst(if rng.chance(50) {
                IpAddr::from([100, 64, 0, 2])
            } else {
                IpAddr::from(V6_B)
            }),
            4 => Action::SetL4Src(rng.pick(&[2000u16, 0])),
            5 => Action::SetL4Dst(8080),
            6 => Action::PushVlan(PushVlan {
                vid: 30,
                pcp: 3,
                tpid: rng.pick(&[0x8100u16, 0x88a8]),
            }),
            7 => Action::PopVlan,
            8 => Action::EncapVxlan(Box::new(encap(rng))),
            9 => {
                let mut e = encap(rng);
                e.options = geneve_options(rng);
                Action::EncapGeneve(Box::new(e))
            }
            _ => Action::Meter("roomy".into()),
        });
    }
    out.push(match rng.below(6) {
        0 => Action::Output(format!("p{}", rng.below(3))),
        1 => Action::Drop,
        2 => Action::Pass,
        3 => Action::Tx,
        _ => Action::Decap,
    });
    out
}

pub fn rule_set(rng: &mut Rng) -> RuleSet {
    let ports = (0..3)
        .map(|i| PortDef {
            name: format!("p{i}"),
            index: i,
            default: if i == 1 {
                DefaultAction::Drop
            } else {
                DefaultAction::Pass
            },
        })
        .collect();
    // A meter that never limits here: the reference's clock stands still
    // and the kernel's moves, so only a meter that always admits agrees.
    let meters = vec![MeterDef {
        name: "roomy".into(),
        unit: MeterUnit::Pps,
        rate: 1_000_000,
        burst: 10_000_000,
    }];
    let n = 1 + rng.below(24) as usize;
    let mut rules: Vec<Rule> = Vec::new();
    while rules.len() < n {
        let r = Rule {
            id: 1 + rules.len() as u32 * 7,
            priority: rng.below(6) as u32,
            matches: a_match(rng),
            actions: actions(rng),
        };
        rules.push(r);
    }
    let mut set = RuleSet {
        ports,
        meters,
        rules,
    };
    // Drop rules that validation refuses (e.g. vni without a tunnel), so
    // that every set installs.
    let mut kept = Vec::new();
    for r in std::mem::take(&mut set.rules) {
        let probe = RuleSet {
            rules: vec![r.clone()],
            ..set.clone()
        };
        if probe.validate().is_ok() {
            kept.push(r);
        }
    }
    set.rules = kept;
    set
}

pub fn base_packet(rng: &mut Rng) -> Vec<u8> {
    let l4 = |rng: &mut Rng| match rng.below(3) {
        0 => L4::Udp(rng.pick(&[1000u16, 1001]), rng.pick(&[53u16, 80, 4789])),
        1 => L4::Tcp(
            1000,
            rng.pick(&[80u16, 53]),
            rng.pick(&[0x02u8, 0x12, 0x10]),
        ),
        _ => L4::IcmpEcho,
    };
    let inner = |rng: &mut Rng| {
        let l = l4(rng);
        v4(None, rng.pick(&V4S), rng.pick(&V4S), l)
    };
    match rng.below(12) {
        0..=3 => {
            let vlan = rng.chance(25).then(|| rng.pick(&[10u16, 20]));
            let l = l4(rng);
            v4(vlan, rng.pick(&V4S), rng.pick(&V4S), l)
        }
        4 | 5 => {
            let l = l4(rng);
            v6(rng.pick(&V6S), rng.pick(&V6S), l)
        }
        6 => qinq(10, 20),
        7 => v4_with_options(1 + rng.below(4) as usize, 53),
        8 => v4_fragment(rng.pick(&[0u16, 185]), rng.chance(50), 40),
        9 => v6_with_extensions(
            &[ext8(0), ext_frag(rng.pick(&[0u16, 8]), true)],
            L4::Udp(1000, 53),
        ),
        10 => {
            let i = inner(rng);
            vxlan4(V4_B, V4_A, 5555, rng.pick(&[100u32, 200]), &i)
        }
        _ => {
            let i = inner(rng);
            let opts: &[u8] = if rng.chance(50) {
                &[]
            } else {
                &[0x01, 0x02, 0x03, 0x01, 0xde, 0xad, 0xbe, 0xef]
            };
            geneve4(V4_B, V4_A, 5555, rng.pick(&[100u32, 200]), opts, &i)
        }
    }
}

/// A packet, malformed one time in four: cut short or with a byte changed.
pub fn packet(rng: &mut Rng) -> Vec<u8> {
    let mut p = base_packet(rng);
    match rng.below(8) {
        0 => {
            let keep = 14 + rng.below((p.len() - 13) as u64) as usize;
            p.truncate(keep);
        }
        1 => {
            let at = 12 + rng.below((p.len() - 12) as u64) as usize;
            p[at] = rng.next() as u8;
        }
        _ => {}
    }
    p
}
