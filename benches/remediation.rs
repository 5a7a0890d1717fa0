//! Blackout per upgrade kind at 10%, 50% and 90% load, time per host and
//! remediation time against `--parallel`: the lab's two hosts (h1 with one
//! DPU, h2 with two behind a bond; XDP datapaths on veths in namespaces,
//! DPUs booting in 500 ms) remediated while flows h1->h2 and h2->h1 cross
//! them. First measures what the fabric carries without loss with h2's
//! traffic on its partner DPU and with h1's on the host path; each load is
//! a fraction of the slower. Prints each kind's datagrams, losses, longest
//! gap between delivered datagrams and times. Needs root and bpffs.
//! `cargo bench --bench remediation`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::blackout::{header, remediate_under_traffic, report, scenarios};
use common::load::{LOADS, measure};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(lossless) = measure("bl") else {
        eprintln!("remediation: skipped (needs root and bpffs)");
        return;
    };
    eprintln!("lossless, datagrams a second each flow: {lossless:?}");
    header();
    for load in LOADS {
        let pps = (lossless.both() as f64 * load) as u64;
        for sc in scenarios() {
            let label = format!("{:.0}%", load * 100.0);
            match remediate_under_traffic(sc.tag, sc.image, sc.options, pps) {
                Some(o) => report(sc.kind, &label, &o),
                None => return,
            }
        }
    }
}
