//! Remediation while traffic flows between the hosts: flows A->B and C->D
//! each cross a DPU of h1 (S1) and one of h2 (S2, S3), at 5,000 datagrams
//! a second each. Every datagram is numbered; the lost ones are counted
//! per remediation step (the phase they were sent in). A datapath-only
//! upgrade (the hitless program swap) and a rolling `--keep-offload`
//! upgrade of firmware and OS (each DPU's traffic failed over to the
//! host path while it reboots) lose none, and every rule counter equals
//! the datagrams that crossed it. Needs root; under CI=true that is a
//! failure.
//!
//! The figures of BENCHMARKS.md come from the same scenarios run by
//! `cargo bench --bench remediation`.

mod common;

use common::blackout::{
    Outcome, header, lost_by_phase, remediate_under_traffic, report, scenarios, turned_back,
};
use common::fabric::Delivery;
use dse_control::lifecycle::remediation::HostResult;
use std::collections::BTreeMap;

/// Every rule counter equals what crossed it: S1 counts every datagram
/// sent (rules 1 and 3), S2 and S3 every datagram delivered (2 and 4).
fn assert_counted(o: &Outcome) {
    eprintln!(
        "  counted: S1 {:?}, S2 {:?}, S3 {:?}",
        o.counters["S1"], o.counters["S2"], o.counters["S3"]
    );
    let (ab, cd) = (&o.flows[0], &o.flows[1]);
    let delivered = |f: &Delivery| f.sent - f.lost().len() as u64 + f.duplicates;
    let checks = [
        ("S1", 1, ab.sent, "S1 counted A->B"),
        ("S1", 3, cd.sent, "S1 counted C->D"),
        ("S2", 2, delivered(ab), "S2 counted A->B"),
        ("S3", 4, delivered(cd), "S3 counted C->D"),
    ];
    for (dpu, rule, want, what) in checks {
        assert_eq!(o.counters[dpu][&rule], want, "{what}");
    }
}

#[test]
fn remediation_under_traffic_loses_nothing_hitless_or_rolling() {
    header();
    for sc in scenarios() {
        let Some(o) = remediate_under_traffic(sc.tag, sc.image, sc.options) else {
            return;
        };
        report(sc.kind, &o);
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
                "{} loses nothing",
                sc.kind
            );
        }
        assert_eq!(turned_back(&o), 0, "{}: no frame turns back", sc.kind);
        assert_counted(&o);
    }
}
