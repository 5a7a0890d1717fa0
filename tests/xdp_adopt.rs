//! Adoption of a pinned XDP datapath by another process: the adopter runs
//! exactly the rules it asks for, whatever the maps held before (both banks
//! of subtable entries, both halves of rule slots), keeps the counters of
//! the rules it keeps, and reports the desired generation it was given.
//! Needs root and bpffs; under CI=true that is a failure.

mod common;

use common::bpf::PinDir;
use common::packets::udp_to as udp;
use dse_datapath::RuleSet;
use dse_datapath::datapath::{Datapath, Transaction};
use dse_datapath::pipeline::{DropReason, Verdict};
use dse_datapath::xdp::XdpDatapath;

/// `n` exact rules from id `first`: UDP to port `port + i` goes out on p1.
/// Port p0 drops what no rule matches.
fn set(first: u32, port: u16, n: u16) -> RuleSet {
    let rules: String = (0..n)
        .map(|i| {
            format!(
                "- {{id: {}, priority: 10, match: {{in_port: p0, ip_proto: udp, l4_dst: {}}}, actions: [{{output: p1}}]}}\n",
                first + u32::from(i),
                port + i
            )
        })
        .collect();
    RuleSet::from_yaml(&format!(
        "ports: [{{name: p0, index: 0, default: drop}}, {{name: p1, index: 1}}]\nrules:\n{rules}"
    ))
    .unwrap()
}

const R1: (u32, u16) = (1, 1000);
const R2: (u32, u16) = (5000, 3000);
const N: u16 = 300;

/// Asserts that `dp` forwards exactly the flows of `want` and none of `other`.
fn forwards_only(dp: &XdpDatapath, want: (u32, u16), other: (u32, u16), when: &str) {
    for i in [0, 1, N / 2, N - 1] {
        assert_eq!(
            dp.run_frame(0, &udp(want.1 + i)).unwrap().0,
            Verdict::Output(1),
            "{when}: a flow of the desired set (port {}) is forwarded",
            want.1 + i
        );
        assert_eq!(
            dp.run_frame(0, &udp(other.1 + i)).unwrap().0,
            Verdict::Drop(DropReason::Miss),
            "{when}: a flow only the replaced set matched (port {}) takes the port's default",
            other.1 + i
        );
    }
}

#[test]
fn an_adopter_runs_only_its_rules_after_r1_r2_r1() {
    let Some(pins) = PinDir::new("adopt-r1r2") else {
        return;
    };
    let first = XdpDatapath::start(set(R1.0, R1.1, N), pins.config()).unwrap();
    first
        .apply(Transaction::Replace(set(R2.0, R2.1, N).into()))
        .unwrap();
    first
        .apply(Transaction::Replace(set(R1.0, R1.1, N).into()))
        .unwrap();
    forwards_only(&first, R1, R2, "before any restart");
    drop(first);
    // Each adoption installs into the bank the one before left alone.
    for restart in 1..=4 {
        let dp = XdpDatapath::adopt(set(R1.0, R1.1, N), 7, pins.config()).unwrap();
        forwards_only(&dp, R1, R2, &format!("after restart {restart}"));
        assert_eq!(
            dp.generation(),
            7,
            "the adopter runs the generation it was given"
        );
    }
}

#[test]
fn an_adopter_of_a_datapath_killed_mid_install_runs_only_its_rules() {
    let Some(pins) = PinDir::new("adopt-mid") else {
        return;
    };
    let first = XdpDatapath::start(set(R1.0, R1.1, N), pins.config()).unwrap();
    first
        .apply(Transaction::Replace(set(R2.0, R2.1, N).into()))
        .unwrap();
    // Alternate the converged set so that both banks are written by
    // adopters that found the other one's entries.
    drop(first);
    for restart in 0..4u64 {
        let (want, other) = if restart % 2 == 0 { (R1, R2) } else { (R2, R1) };
        let dp = XdpDatapath::adopt(set(want.0, want.1, N), 10 + restart, pins.config()).unwrap();
        forwards_only(&dp, want, other, &format!("after restart {restart}"));
    }
}

#[test]
fn counters_of_kept_rules_survive_adoption_and_changes() {
    let Some(pins) = PinDir::new("adopt-count") else {
        return;
    };
    let first = XdpDatapath::start(set(R1.0, R1.1, N), pins.config()).unwrap();
    for _ in 0..5 {
        first.run_frame(0, &udp(R1.1)).unwrap();
    }
    // A whole-set change that keeps rule R1.0 (a fresh compile), then a
    // patch that keeps it too.
    let mut bigger = set(R1.0, R1.1, N);
    bigger.rules.extend(set(R2.0, R2.1, N).rules);
    first
        .apply(Transaction::Replace(bigger.clone().into()))
        .unwrap();
    first.run_frame(0, &udp(R1.1)).unwrap();
    first
        .apply(Transaction::Patch {
            upsert: vec![],
            remove: vec![R2.0],
        })
        .unwrap();
    assert_eq!(first.rule_counters()[&R1.0].packets, 6);
    drop(first);
    bigger.rules.retain(|r| r.id != R2.0);
    let dp = XdpDatapath::adopt(bigger, 3, pins.config()).unwrap();
    assert_eq!(dp.rule_counters()[&R1.0].packets, 6, "kept across adoption");
    dp.run_frame(0, &udp(R1.1)).unwrap();
    // A change of the rule's actions keeps its id, so its counters.
    let mut changed = dp.rules();
    let r = changed.rules.iter_mut().find(|r| r.id == R1.0).unwrap();
    r.priority = 11;
    dp.apply(Transaction::Replace(changed.into())).unwrap();
    assert_eq!(dp.rule_counters()[&R1.0].packets, 7, "kept across a change");
}

/// Sends the flow to `port` twice and asserts that the second packet was
/// served from the flow cache with verdict `want`.
fn cached(dp: &XdpDatapath, port: u16, want: Verdict, when: &str) {
    dp.run_frame(0, &udp(port)).unwrap();
    let hits = dp.stats().cache_hits;
    assert_eq!(dp.run_frame(0, &udp(port)).unwrap().0, want, "{when}");
    assert_eq!(
        dp.stats().cache_hits,
        hits + 1,
        "{when}: the flow to port {port} is in the flow cache"
    );
}

/// The first packet of the flow to `port` takes `want`, looked up afresh:
/// no cache entry of an older generation answered it.
fn not_from_cache(dp: &XdpDatapath, port: u16, want: Verdict, when: &str) {
    let misses = dp.stats().cache_misses;
    assert_eq!(dp.run_frame(0, &udp(port)).unwrap().0, want, "{when}");
    assert_eq!(
        dp.stats().cache_misses,
        misses + 1,
        "{when}: the flow to port {port} was looked up, not answered by the cache"
    );
}

#[test]
fn no_flow_cache_entry_of_an_older_generation_forwards_after_adoption_or_a_change() {
    let Some(pins) = PinDir::new("adopt-cache") else {
        return;
    };
    let fwd = Verdict::Output(1);
    let miss = Verdict::Drop(DropReason::Miss);
    let first = XdpDatapath::start(set(R2.0, R2.1, N), pins.config()).unwrap();
    cached(&first, R2.1, fwd, "R2 runs");
    cached(&first, R1.1, miss, "R2 runs");
    drop(first);
    // A restart that converges to R1: R2's cached flow takes R1's verdict.
    let dp = XdpDatapath::adopt(set(R1.0, R1.1, N), 2, pins.config()).unwrap();
    not_from_cache(&dp, R2.1, miss, "after adopting R1");
    not_from_cache(&dp, R1.1, fwd, "after adopting R1");
    // A restart that keeps R1 and its generation: cached verdicts of the
    // adopted generation are not trusted either, they are looked up again.
    cached(&dp, R1.1 + 1, fwd, "R1 runs");
    drop(dp);
    let dp = XdpDatapath::adopt(set(R1.0, R1.1, N), 2, pins.config()).unwrap();
    not_from_cache(&dp, R1.1 + 1, fwd, "after adopting R1 again");
    // Changes: a patch that deletes a cached flow's rule, one that sends
    // another cached flow elsewhere, and a whole-set change.
    cached(&dp, R1.1 + 2, fwd, "before the patches");
    cached(&dp, R1.1 + 3, fwd, "before the patches");
    dp.apply(Transaction::Patch {
        upsert: vec![],
        remove: vec![R1.0 + 2],
    })
    .unwrap();
    not_from_cache(&dp, R1.1 + 2, miss, "after deleting its rule");
    let mut dropping = dp
        .rules()
        .rules
        .into_iter()
        .find(|r| r.id == R1.0 + 3)
        .unwrap();
    dropping.actions = vec![dse_datapath::rule::Action::Drop];
    dp.apply(Transaction::Patch {
        upsert: vec![dropping],
        remove: vec![],
    })
    .unwrap();
    assert_eq!(
        dp.run_frame(0, &udp(R1.1 + 3)).unwrap().0,
        Verdict::Drop(DropReason::Rule),
        "after its rule changed to drop"
    );
    cached(&dp, R1.1 + 4, fwd, "before the replace");
    dp.apply(Transaction::Replace(set(R2.0, R2.1, N).into()))
        .unwrap();
    not_from_cache(&dp, R1.1 + 4, miss, "after replacing R1 by R2");
    not_from_cache(&dp, R2.1, fwd, "after replacing R1 by R2");
}
