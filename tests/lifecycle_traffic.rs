//! Remediation while traffic flows between the hosts: flows h1->h2 and
//! h2->h1 each cross h1's DPU (S1) and one of h2's (S2 or S3, whichever
//! member of h2's bond is active), at half the rate the fabric carries
//! without loss with a DPU failed over (measured first, in the same run).
//! Every datagram is numbered; the lost ones are counted per remediation
//! step (the phase they were sent in). A datapath-only upgrade (the
//! hitless program swap) and a rolling `--keep-offload` upgrade of
//! firmware and OS lose none: while S1 reboots the host path carries its
//! traffic, while S2 or S3 reboots the partner DPU does, through h2's
//! bond. Every rule counter equals the datagrams that crossed it. Needs
//! root; under CI=true that is a failure.
//!
//! The figures of BENCHMARKS.md come from the same scenarios run by
//! `cargo bench --bench remediation`.

mod common;

use common::blackout::{
    Outcome, PPS, header, lost_by_phase, remediate_under_traffic, report, scenarios,
};
use common::fabric::Delivery;
use common::load;
use dse_control::lifecycle::remediation::{HostResult, Step};
use std::collections::BTreeMap;

/// Every rule counter equals what crossed it: S1 counts every datagram h1
/// sent (rule 1) and every one h2 delivered to it (rule 2); S2 and S3
/// together count every datagram h2 sent (rule 1) and every one delivered
/// to it (rule 2).
fn assert_counted(o: &Outcome) {
    eprintln!(
        "  counted: S1 {:?}, S2 {:?}, S3 {:?}",
        o.counters["S1"], o.counters["S2"], o.counters["S3"]
    );
    let (to_h2, to_h1) = (&o.flows[0], &o.flows[1]);
    let delivered = |f: &Delivery| f.sent - f.lost().len() as u64 + f.duplicates;
    let c = |dpu: &str, rule: u32| o.counters[dpu].get(&rule).copied().unwrap_or(0);
    let checks = [
        (c("S1", 1), to_h2.sent, "S1 counted h1->h2"),
        (c("S1", 2), delivered(to_h1), "S1 counted h2->h1"),
        (
            c("S2", 1) + c("S3", 1),
            to_h1.sent,
            "S2 and S3 counted h2->h1",
        ),
        (
            c("S2", 2) + c("S3", 2),
            delivered(to_h2),
            "S2 and S3 counted h1->h2",
        ),
    ];
    for (got, want, what) in checks {
        assert_eq!(got, want, "{what}");
    }
}

/// The rolling upgrade failed h2's DPUs over to each other, never to the
/// host path, and h1's DPU to the host path: the partner S3 counted what
/// crossed h2's bond while S2 was away, and the bond is back on m2.
fn assert_partner_fail_over(o: &Outcome) {
    eprintln!("  datapath states seen: {:?}", o.seen);
    for dpu in ["S2", "S3"] {
        let seen = &o.seen[dpu];
        assert!(seen.contains("on_partner"), "{dpu} stood down: {seen:?}");
        assert!(
            seen.iter().all(|s| !s.starts_with("failed")),
            "{dpu} never on the host path: {seen:?}"
        );
    }
    assert!(
        o.seen["S1"].iter().any(|s| s.starts_with("failed_over")),
        "S1, with no partner, fails over to the host path: {:?}",
        o.seen["S1"]
    );
    // The datagrams sent while S2 was away (from its fail-over to the
    // start of its restore) crossed S3.
    let h2 = o.remediation.hosts.iter().find(|h| h.host == "h2").unwrap();
    let at = |step: Step| {
        let s = h2
            .steps
            .iter()
            .find(|s| s.step == step && s.dpu.as_deref() == Some("S2"))
            .unwrap_or_else(|| panic!("S2 took step {step:?}: {h2:#?}"));
        (s.at_ms - s.took_ms.unwrap_or(0), s.at_ms)
    };
    let (away_from, away_to) = (at(Step::FailOver).1, at(Step::Restore).0);
    let sent_then = |f: &Delivery| {
        (0..f.sent)
            .filter(|&i| (away_from..away_to).contains(&f.sent_ms(i)))
            .count() as u64
    };
    let c = |rule: u32| o.counters["S3"].get(&rule).copied().unwrap_or(0);
    let (to_h2, to_h1) = (sent_then(&o.flows[0]), sent_then(&o.flows[1]));
    eprintln!("  while S2 was away: {to_h2} datagrams to h2, {to_h1} from it");
    assert!(to_h2 > 0 && to_h1 > 0, "traffic flowed while S2 was away");
    assert!(c(2) >= to_h2, "S3 carried h1->h2 while S2 was away");
    assert!(c(1) >= to_h1, "S3 carried h2->h1 while S2 was away");
    assert!(
        o.active_member.ends_with("m2i"),
        "the bond is back on S2's member: {}",
        o.active_member
    );
}

#[test]
fn remediation_under_traffic_loses_nothing_hitless_or_rolling() {
    let Some(lossless) = load::measure("ll") else {
        return;
    };
    eprintln!("lossless, datagrams a second each flow: {lossless:?}");
    assert!(
        lossless.both() >= PPS,
        "the fabric carries the {PPS} datagrams a second each flow it always has: {lossless:?}"
    );
    // Half what the slower fail-over path carries without loss: the
    // flows cross S1 (on the host path while it reboots) and S2 or S3
    // (on the partner while the other reboots).
    let pps = lossless.both() / 2;
    header();
    for sc in scenarios() {
        let keep_offload = sc.options.keep_offload;
        let Some(o) = remediate_under_traffic(sc.tag, sc.image, sc.options, pps) else {
            return;
        };
        report(sc.kind, "50%", &o);
        assert!(
            o.remediation
                .hosts
                .iter()
                .all(|h| h.result == HostResult::Ok),
            "{}: {:#?}",
            sc.kind,
            o.remediation
        );
        if sc.lossless {
            assert_eq!(
                lost_by_phase(&o),
                BTreeMap::new(),
                "{} loses nothing at {pps} datagrams a second each flow",
                sc.kind
            );
        }
        assert_counted(&o);
        if keep_offload {
            assert_partner_fail_over(&o);
        }
    }
}
