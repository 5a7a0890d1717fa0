//! Rule sets and traffic shared by the benches.

#![allow(dead_code, reason = "each bench uses a different part")]

pub mod baseline;
pub mod counting;

use std::path::PathBuf;
use std::time::Duration;

/// A bpffs directory for a bench's pinned maps, removed on drop (panics
/// included).
pub struct Pins(pub PathBuf);

impl Pins {
    /// `/sys/fs/bpf/dse-bench-<pid>-<name>`, emptied first.
    pub fn new(name: &str) -> Pins {
        let p = PathBuf::from(format!(
            "/sys/fs/bpf/dse-bench-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        Pins(p)
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A temporary directory of a bench's own, removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    /// `$TMPDIR/dse-bench-<pid>-<name>`, emptied first.
    pub fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("dse-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The median of `v`.
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

use dse_datapath::rule::{Action, IpPrefix, IpProto, Masked, Match, PortDef, Rule, RuleSet};
use std::net::{IpAddr, Ipv4Addr};

/// A rule set of `rules` on ports p0 and p1, without meters.
pub fn with_ports(rules: Vec<Rule>) -> RuleSet {
    RuleSet {
        ports: ports(),
        meters: vec![],
        rules,
    }
}

pub fn ports() -> Vec<PortDef> {
    (0..2)
        .map(|i| PortDef {
            name: format!("p{i}"),
            index: i,
            default: Default::default(),
        })
        .collect()
}

pub fn flow_src(i: u32) -> [u8; 4] {
    (0x0a00_0000 | i).to_be_bytes()
}

pub fn flow_sport(i: u32) -> u16 {
    1024 + (i % 50_000) as u16
}

pub fn exact_rules(n: u32) -> RuleSet {
    let rules = (0..n)
        .map(|i| Rule {
            id: i,
            priority: 10,
            matches: Match {
                ip_src: Some(IpPrefix {
                    addr: IpAddr::V4(Ipv4Addr::from(flow_src(i))),
                    len: 32,
                }),
                ip_dst: Some(IpPrefix {
                    addr: IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1)),
                    len: 32,
                }),
                ip_proto: Some(IpProto(17)),
                l4_src: Some(Masked {
                    value: flow_sport(i),
                    mask: 0xffff,
                }),
                l4_dst: Some(Masked {
                    value: 53,
                    mask: 0xffff,
                }),
                ..Match::default()
            },
            actions: vec![Action::Output("p1".into())],
        })
        .collect();
    with_ports(rules)
}

pub fn template() -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 0], [192, 168, 0, 1], 64)
        .udp(1024, 53)
        .write(&mut v, &[0u8; 18])
        .expect("builds");
    v
}

/// A xorshift generator: the traffic picks flows uniformly at random.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// 100k rules over 16 masks: prefixes of 16 different lengths on ip_src, with a port.
pub fn wildcard_rules() -> RuleSet {
    let rules = (0..100_000u32)
        .map(|i| {
            let len = 16 + (i % 16) as u8;
            let base = u32::from_be_bytes(flow_src(i * 7919)) & (!0u32 << (32 - len));
            Rule {
                id: i,
                priority: u32::from(len),
                matches: Match {
                    ip_src: Some(IpPrefix {
                        addr: IpAddr::V4(Ipv4Addr::from(base)),
                        len,
                    }),
                    ip_proto: Some(IpProto(17)),
                    l4_dst: Some(Masked {
                        value: (i % 1000) as u16,
                        mask: 0xffff,
                    }),
                    ..Match::default()
                },
                actions: vec![Action::Output("p1".into())],
            }
        })
        .collect();
    with_ports(rules)
}

/// The minimal program's key for flow `i` of [`exact_rules`].
pub fn baseline_key(i: u32) -> dse_ebpf::BaselineKey {
    dse_ebpf::BaselineKey {
        src: flow_src(i),
        dst: [192, 168, 0, 1],
        sport: flow_sport(i).to_be_bytes(),
        dport: 53u16.to_be_bytes(),
        proto: 17,
    }
}
