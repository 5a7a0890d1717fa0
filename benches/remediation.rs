//! Blackout per upgrade kind, time per host and remediation time against
//! `--parallel`: the lab's two hosts (h1 with one DPU, h2 with two; XDP
//! datapaths on veths in namespaces, DPUs booting in 500 ms) remediated
//! while two flows of 5,000 datagrams a second cross them. Prints each
//! kind's datagrams, losses, longest gap between delivered datagrams and
//! times. Needs root and bpffs. `cargo bench --bench remediation`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::blackout::{PPS, header, remediate_under_traffic, report, scenarios};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    header();
    for sc in scenarios() {
        match remediate_under_traffic(sc.tag, sc.image, sc.options, PPS) {
            Some(o) => report(sc.kind, &o),
            None => {
                eprintln!("remediation: skipped (needs root and bpffs)");
                return;
            }
        }
    }
}
