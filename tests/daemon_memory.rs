//! What an in-process daemon holds for 200k rules, counted by the
//! allocator: applied, then replaced by 200k rules that all differ, with
//! an XDP datapath on a veth of the test's own running (as root; without
//! root, none). The daemon's heap must stay under a bound per rule in
//! steady state, so that a change that makes it hold the rules again
//! (another copy, a buffer kept) fails here; the figures of BENCHMARKS.md
//! come from `cargo bench --bench daemon_memory`.

mod common;
#[path = "../benches/common/counting.rs"]
mod counting;

use common::netns::Veth;
use counting::{Counting, live, peak, reset_peak, settled};
use dse_control::Daemon;
use dse_control::store::{Backend, DatapathInstance};
use dse_datapath::rule::{Action, IpPrefix, IpProto, Masked, Match, PortDef, Rule, RuleSet};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

#[global_allocator]
static ALLOC: Counting = Counting;

const RULES: u32 = 200_000;

/// The most the daemon may hold per rule in steady state at 200k rules:
/// rules by id (57 bytes), the compiler's index and its packed rules (80),
/// both XDP banks' tables (190), and the store's cache, at most 32 MiB
/// (168 bytes a rule here, 34 at a million).
const STEADY_PER_RULE: f64 = 550.0;

/// `RULES` exact 5-tuple rules, each to port p1, with destination port
/// `l4_dst`.
fn rules(l4_dst: u16) -> RuleSet {
    let port = |i: u16| PortDef {
        name: format!("p{i}"),
        index: i,
        default: Default::default(),
    };
    RuleSet {
        ports: vec![port(0), port(1)],
        meters: vec![],
        rules: (0..RULES)
            .map(|i| Rule {
                id: i,
                priority: 10,
                matches: Match {
                    ip_src: Some(IpPrefix {
                        addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i)),
                        len: 32,
                    }),
                    ip_dst: Some(IpPrefix {
                        addr: IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1)),
                        len: 32,
                    }),
                    ip_proto: Some(IpProto(17)),
                    l4_src: Some(Masked {
                        value: 1024 + (i % 50_000) as u16,
                        mask: 0xffff,
                    }),
                    l4_dst: Some(Masked {
                        value: l4_dst,
                        mask: 0xffff,
                    }),
                    ..Match::default()
                },
                actions: vec![Action::Output("p1".into())],
            })
            .collect(),
    }
}

fn per_rule(bytes: isize) -> f64 {
    bytes as f64 / f64::from(RULES)
}

#[test]
fn the_daemon_holds_a_bounded_number_of_bytes_a_rule_in_steady_state() {
    let dir = std::env::temp_dir().join(format!("dse-test-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pins = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/dse-test-memory-{}",
        std::process::id()
    ));
    let base = settled();
    let daemon = Daemon::open(dse_control::DaemonConfig {
        xdp_limits: dse_datapath::xdp::XdpLimits::default(),
        ..dse::lab::control::daemon_config(&dir, &pins)
    })
    .expect("the daemon opens");
    daemon
        .apply(rules(53), None, false, "test")
        .expect("applies");
    let veth = common::root().then(|| {
        let ns = common::netns::Netns::new("dse-mem-test");
        let v = Veth::with("dsememt0", "dsememt0i", &ns, None);
        let xdp = DatapathInstance {
            name: "xdp".into(),
            backend: Backend::Xdp,
            interfaces: BTreeMap::from([("p0".into(), v.outer.clone())]),
            object: None,
        };
        daemon.attach(xdp, "test").expect("an XDP datapath");
        (ns, v)
    });
    let first = settled() - base;
    let changed = rules(54);
    let before = live();
    reset_peak();
    daemon
        .apply(changed, None, false, "test")
        .expect("replaces");
    let apply_peak = peak() - before;
    let steady = settled() - base;
    eprintln!(
        "{RULES} rules{}: {:.0} B/rule after the first apply, {:.0} after the second (its peak {:.0} above the request)",
        if veth.is_some() {
            ", one XDP datapath"
        } else {
            ", no datapath"
        },
        per_rule(first),
        per_rule(steady),
        per_rule(apply_peak),
    );
    for (when, bytes) in [
        ("after the first apply", first),
        ("after a replacement", steady),
    ] {
        assert!(
            per_rule(bytes) <= STEADY_PER_RULE,
            "{when}: the daemon holds {:.0} bytes a rule, more than {STEADY_PER_RULE}",
            per_rule(bytes)
        );
    }
    drop(daemon);
    drop(veth);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&pins);
}
