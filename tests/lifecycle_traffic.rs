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
//! `cargo test --release --test lifecycle_traffic -- --nocapture` prints
//! the blackout figures of BENCHMARKS.md.

mod common;

use common::fabric::Delivery;
use common::lab::{Lab, datapath_only_image, new_image};
use dse_control::daemon::Remediate;
use dse_control::lifecycle::DesiredImage;
use dse_control::lifecycle::remediation::{HostResult, Options, Remediation};
use std::collections::BTreeMap;
use std::time::Duration;

const PPS: u64 = 5_000;

struct Outcome {
    flows: Vec<Delivery>,
    remediation: Remediation,
    /// Rule id -> packets, by DPU serial.
    counters: BTreeMap<String, BTreeMap<u32, u64>>,
}

fn remediate_under_traffic(tag: &str, image: DesiredImage, options: Options) -> Option<Outcome> {
    let lab = Lab::with_fabric(tag)?;
    let d = lab.set_up(500);
    d.set_image("c1", image, "test").unwrap();
    let fabric = lab.fabric.as_ref().unwrap();
    let flows = [fabric.flow(0, 1, PPS), fabric.flow(2, 3, PPS)];
    std::thread::sleep(Duration::from_millis(500));
    let id = match d.remediate("c1", options, false, "test").unwrap() {
        Remediate::Started(r) => r.id,
        Remediate::DryRun(_) => unreachable!(),
    };
    let remediation = Lab::wait(&d, id);
    std::thread::sleep(Duration::from_millis(500));
    let flows: Vec<Delivery> = flows.into_iter().map(|f| f.finish()).collect();
    let counters = d
        .counters(None)
        .unwrap()
        .into_iter()
        .map(|(dp, c)| (dp, c.into_iter().map(|(id, c)| (id, c.packets)).collect()))
        .collect();
    Lab::assert_resumed(&d);
    Some(Outcome {
        flows,
        remediation,
        counters,
    })
}

/// The step (host, step, DPU) under way when each lost datagram was sent.
fn lost_by_phase(o: &Outcome) -> BTreeMap<String, u64> {
    let mut spans = Vec::new();
    for h in &o.remediation.hosts {
        for s in &h.steps {
            let end = s.at_ms;
            let start = end - s.took_ms.unwrap_or(0);
            let dpu = s.dpu.as_deref().map_or(String::new(), |d| format!(" {d}"));
            spans.push((start, end, format!("{} {}{dpu}", h.host, s.step.name())));
        }
    }
    let mut by = BTreeMap::new();
    for f in &o.flows {
        for i in f.lost() {
            let at = f.sent_ms(i);
            let phase = spans
                .iter()
                .filter(|(a, b, _)| *a <= at + 2 && at <= *b + 2)
                .map(|(_, _, p)| p.clone())
                .next_back()
                .unwrap_or_else(|| "between steps".into());
            *by.entry(phase).or_insert(0) += 1;
        }
    }
    by
}

fn report(kind: &str, o: &Outcome) {
    let lost: u64 = o.flows.iter().map(|f| f.lost().len() as u64).sum();
    let sent: u64 = o.flows.iter().map(|f| f.sent).sum();
    let gap = o.flows.iter().map(Delivery::longest_gap).max().unwrap();
    let per_host: Vec<String> = o
        .remediation
        .hosts
        .iter()
        .map(|h| {
            let t = h.finished_ms.unwrap_or(0) - h.started_ms.unwrap_or(0);
            format!("{} {:?} {:.2} s", h.host, h.result, t as f64 / 1000.0)
        })
        .collect();
    let total = o.remediation.finished_ms.unwrap() - o.remediation.started_ms;
    eprintln!(
        "| {kind} | {sent} | {lost} | {:.1} ms | {} | {:.2} s |",
        gap.as_secs_f64() * 1000.0,
        per_host.join(", "),
        total as f64 / 1000.0
    );
    eprintln!(
        "  lost by phase: {:?}; duplicates: {:?}",
        lost_by_phase(o),
        o.flows.iter().map(|f| f.duplicates).collect::<Vec<_>>()
    );
}

/// Every rule counter equals what crossed it: S1 counts every datagram
/// sent (rules 1 and 3), S2 and S3 every datagram delivered (2 and 4).
fn assert_counted(o: &Outcome) {
    let (ab, cd) = (&o.flows[0], &o.flows[1]);
    let delivered = |f: &Delivery| f.sent - f.lost().len() as u64 + f.duplicates;
    assert_eq!(o.counters["S1"][&1], ab.sent, "S1 counted A->B");
    assert_eq!(o.counters["S1"][&3], cd.sent, "S1 counted C->D");
    assert_eq!(o.counters["S2"][&2], delivered(ab), "S2 counted A->B");
    assert_eq!(o.counters["S3"][&4], delivered(cd), "S3 counted C->D");
}

#[test]
fn remediation_under_traffic_loses_nothing_hitless_or_rolling() {
    eprintln!("| upgrade | datagrams | lost | longest gap | per host | total |");
    eprintln!("|---|---|---|---|---|---|");
    let Some(o) = remediate_under_traffic("dp", datapath_only_image(), Options::default()) else {
        return;
    };
    report("datapath only (program swap)", &o);
    assert!(
        o.remediation
            .hosts
            .iter()
            .all(|h| h.result == HostResult::Ok)
    );
    assert_eq!(
        lost_by_phase(&o),
        BTreeMap::new(),
        "the program swap loses nothing"
    );
    assert_counted(&o);

    let rolling = Options {
        keep_offload: true,
        ..Options::default()
    };
    let o = remediate_under_traffic("ro", new_image(), rolling).unwrap();
    report("firmware + OS, rolling (--keep-offload)", &o);
    assert!(
        o.remediation
            .hosts
            .iter()
            .all(|h| h.result == HostResult::Ok)
    );
    assert_eq!(
        lost_by_phase(&o),
        BTreeMap::new(),
        "failing over to the host path loses nothing"
    );
    assert_counted(&o);

    // A dual-DPU host's DPUs both at once: hosts one by one, then both
    // hosts at once. Losses are measured, not required to be none.
    for (tag, parallel, kind) in [
        (
            "p1",
            1,
            "firmware + OS, both DPUs of a host at once, hosts in sequence",
        ),
        (
            "p2",
            2,
            "firmware + OS, both DPUs at once, both hosts at once (--parallel 2)",
        ),
    ] {
        let options = Options {
            parallel,
            ..Options::default()
        };
        let o = remediate_under_traffic(tag, new_image(), options).unwrap();
        report(kind, &o);
        assert!(
            o.remediation
                .hosts
                .iter()
                .all(|h| h.result == HostResult::Ok)
        );
        assert_counted(&o);
    }
}
