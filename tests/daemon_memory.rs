//! What an in-process daemon holds for 200k rules, counted by the
//! allocator: applied, then replaced by 200k rules that all differ, with
//! an XDP datapath on a veth of the test's own running (as root; without
//! root, none). The daemon's heap must stay under a bound per rule in
//! steady state, so that a change that makes it hold the rules again
//! (another copy, a buffer kept) fails here; the figures of BENCHMARKS.md
//! come from `cargo bench --bench daemon_memory`.

#[path = "../benches/common/mod.rs"]
mod bench;
mod common;

use bench::counting::{Counting, live, peak, reset_peak, settled};
use bench::exact_rules;
use common::netns::Veth;
use dse_control::Daemon;
use dse_control::store::{Backend, DatapathInstance};
use dse_datapath::rule::RuleSet;
use std::collections::BTreeMap;

#[global_allocator]
static ALLOC: Counting = Counting;

const RULES: u32 = 200_000;

/// The most the daemon may hold per rule in steady state at 200k rules:
/// rules by id (57 bytes), the compiler's index and its packed rules (80),
/// both XDP banks' tables (190), and the store's cache, at most 32 MiB
/// (168 bytes a rule here, 34 at a million).
const STEADY_PER_RULE: f64 = 550.0;

/// The most a request's parse may hold per rule beside its body: each
/// rule's text skimmed (16 bytes) and packed end to end (about 40);
/// parsed into `Rule`s while the body is held, it would be 190.
const PARSE_PER_RULE: f64 = 80.0;

/// [`exact_rules`] with destination port `l4_dst`: when it differs from
/// theirs, a change to every rule.
fn rules(l4_dst: u16) -> RuleSet {
    let mut set = exact_rules(RULES);
    for r in &mut set.rules {
        if let Some(l4) = &mut r.matches.l4_dst {
            l4.value = l4_dst;
        }
    }
    set
}

fn per_rule(bytes: isize) -> f64 {
    bytes as f64 / f64::from(RULES)
}

#[test]
fn the_daemon_holds_a_bounded_number_of_bytes_a_rule_in_steady_state() {
    // Both removed on drop, a failure's included.
    let (dir, pins) = (
        bench::Dir::new("test-memory"),
        bench::Pins::new("test-memory"),
    );
    let base = settled();
    let daemon = Daemon::open(dse_control::DaemonConfig {
        xdp_limits: dse_datapath::xdp::XdpLimits::default(),
        ..dse::lab::control::daemon_config(&dir.0, &pins.0)
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
    // The second request as the API takes it: its body, parsed.
    let mut body = serde_json::to_vec(&rules(54)).expect("serializes");
    body.shrink_to_fit(); // as the API reads a body: its length, no more
    let body_len = body.len() as isize;
    let before = live() - body.capacity() as isize;
    reset_peak();
    let changed = RuleSet::parse_json_bytes(body).expect("parses");
    let parse_peak = peak();
    let before_apply = live();
    reset_peak();
    daemon
        .apply(changed, None, false, "test")
        .expect("replaces");
    let apply_peak = peak();
    let steady = settled() - base;
    let request_peak = parse_peak.max(apply_peak) - base;
    eprintln!(
        "{RULES} rules{}: {:.0} B/rule after the first apply, {:.0} after the second; the parse peaked {:.0} above its body, the apply {:.0} above its request; the whole request at {:.2}x steady",
        if veth.is_some() {
            ", one XDP datapath"
        } else {
            ", no datapath"
        },
        per_rule(first),
        per_rule(steady),
        per_rule(parse_peak - before - body_len),
        per_rule(apply_peak - before_apply),
        request_peak as f64 / steady as f64,
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
    assert!(
        per_rule(parse_peak - before - body_len) <= PARSE_PER_RULE,
        "the parse held {:.0} bytes a rule beside its body, more than {PARSE_PER_RULE}",
        per_rule(parse_peak - before - body_len)
    );
    assert!(
        request_peak <= 2 * steady,
        "the replacing request peaked at {:.2}x the steady state, more than 2x",
        request_peak as f64 / steady as f64
    );
    drop(daemon);
    drop(veth);
}
