//! Remediation under traffic on the lab's fabric: flows h1->h2 and h2->h1
//! at a stated rate each while the cluster is remediated, every
//! datagram numbered, the lost ones put down to the remediation step they
//! were sent in. Shared by the `lifecycle_traffic` test (which requires
//! no loss) and the `remediation` bench (which prints the figures).

#![allow(dead_code)]

use super::fabric::Delivery;
use super::lab::Lab;
use dse_control::daemon::Remediate;
use dse_control::lifecycle::DesiredImage;
use dse_control::lifecycle::remediation::{Options, Remediation};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Datagrams a second, each flow, that the lifecycle tests have always
/// offered: the least the fabric must carry.
pub const PPS: u64 = 5_000;

/// One remediation under traffic: what it is, a tag for its lab's names,
/// the image and the options.
pub struct Scenario {
    pub kind: &'static str,
    pub tag: &'static str,
    pub image: DesiredImage,
    pub options: Options,
    /// Whether it must lose nothing (hitless, or rolling).
    pub lossless: bool,
}

/// The upgrade kinds measured: a datapath-only program swap; firmware and
/// OS rolling (`--keep-offload`); both DPUs of a host at once, hosts in
/// sequence; and both hosts at once (`--parallel 2`).
pub fn scenarios() -> Vec<Scenario> {
    let with = |parallel, keep_offload| Options {
        parallel,
        keep_offload,
        ..Options::default()
    };
    vec![
        Scenario {
            kind: "datapath only (program swap)",
            tag: "dp",
            image: super::lab::datapath_only_image(),
            options: with(1, false),
            lossless: true,
        },
        Scenario {
            kind: "firmware + OS, rolling (--keep-offload)",
            tag: "ro",
            image: super::lab::new_image(),
            options: with(1, true),
            lossless: true,
        },
        Scenario {
            kind: "firmware + OS, both DPUs of a host at once, hosts in sequence",
            tag: "p1",
            image: super::lab::new_image(),
            options: with(1, false),
            lossless: false,
        },
        Scenario {
            kind: "firmware + OS, both DPUs at once, both hosts at once (--parallel 2)",
            tag: "p2",
            image: super::lab::new_image(),
            options: with(2, false),
            lossless: false,
        },
    ]
}

/// The header of [`report`]'s table.
pub fn header() {
    eprintln!(
        "| upgrade | load | datagrams/s each flow | datagrams | lost | longest gap | per host | total |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|");
}

/// What a remediation under traffic did.
pub struct Outcome {
    /// h1->h2, h2->h1.
    pub flows: Vec<Delivery>,
    pub remediation: Remediation,
    /// Rule id -> packets, by DPU serial.
    pub counters: BTreeMap<String, BTreeMap<u32, u64>>,
    /// Every state each DPU's datapath was seen in, polled through the
    /// remediation (`running`, `failed_over` on the host path,
    /// `on_partner`), with the host path's I/O when it ran.
    pub seen: BTreeMap<String, BTreeSet<String>>,
    /// h2's active bond member at the end.
    pub active_member: String,
}

/// Remediates a fresh fabric lab `tag` to `image` while both flows run at
/// `pps` datagrams a second each; `None` without root.
pub fn remediate_under_traffic(
    tag: &str,
    image: DesiredImage,
    options: Options,
    pps: u64,
) -> Option<Outcome> {
    let lab = Lab::with_fabric(tag)?;
    let d = lab.set_up(500);
    d.set_image("c1", image, "test").unwrap();
    let fabric = lab.fabric.as_ref().unwrap();
    let flows = fabric.flows(pps);
    std::thread::sleep(Duration::from_millis(500));
    let id = match d.remediate("c1", options, false, "test").unwrap() {
        Remediate::Started(r) => r.id,
        Remediate::DryRun(_) => unreachable!(),
    };
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let remediation = Lab::wait_watching(&d, id, || {
        for s in d.datapaths() {
            let io = s.host_io.map(|io| format!(" ({io:?})")).unwrap_or_default();
            seen.entry(s.name)
                .or_default()
                .insert(format!("{}{io}", s.state));
        }
    });
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
        seen,
        active_member: fabric.active_member(),
    })
}

/// The step (host, step, DPU) under way when each lost datagram was sent.
pub fn lost_by_phase(o: &Outcome) -> BTreeMap<String, u64> {
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

/// Prints `o` as a row of [`header`]'s table (at `load`, such as "50%"),
/// and its losses by phase.
pub fn report(kind: &str, load: &str, o: &Outcome) {
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
        "| {kind} | {load} | {} | {sent} | {lost} | {:.1} ms | {} | {:.2} s |",
        o.flows[0].pps,
        gap.as_secs_f64() * 1000.0,
        per_host.join(", "),
        total as f64 / 1000.0
    );
    eprintln!(
        "  lost h1->h2, h2->h1 (how many, the first): {:?}; by phase: {:?}; duplicates: {:?}",
        o.flows
            .iter()
            .map(|f| {
                let lost = f.lost();
                let head: Vec<u64> = lost.iter().take(8).copied().collect();
                format!("{} {head:?}", lost.len())
            })
            .collect::<Vec<_>>(),
        lost_by_phase(o),
        o.flows.iter().map(|f| f.duplicates).collect::<Vec<_>>()
    );
}
