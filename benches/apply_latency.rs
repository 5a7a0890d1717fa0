//! Latency of single-rule transactions on a running emulated datapath with
//! a million installed rules: p50, p99 and max over 2,000 applies
//! (alternately adding and removing one rule). A benchmark, not a test:
//! run with `cargo bench --bench apply_latency`.

mod common;

use common::*;
use dse_datapath::datapath::{Datapath, Transaction};
use dse_datapath::emu::{EmuConfig, EmuDatapath};
use dse_datapath::rule::{Action, IpProto, Masked, Match, Rule};
use std::time::Instant;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = 1_000_000;
    let dp = EmuDatapath::start(exact_rules(n), EmuConfig::default()).expect("starts");
    let mut samples = Vec::with_capacity(2000);
    for i in 0..2000u32 {
        let id = 10_000_000 + i / 2;
        let txn = if i % 2 == 0 {
            let rule = Rule {
                id,
                priority: 50,
                matches: Match {
                    ip_proto: Some(IpProto(17)),
                    l4_dst: Some(Masked {
                        value: (i % 60_000) as u16,
                        mask: 0xffff,
                    }),
                    ..Match::default()
                },
                actions: vec![Action::Drop],
            };
            Transaction::Patch {
                upsert: vec![rule],
                remove: vec![],
            }
        } else {
            Transaction::Patch {
                upsert: vec![],
                remove: vec![id],
            }
        };
        let start = Instant::now();
        dp.apply(txn).expect("applies");
        samples.push(start.elapsed());
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "apply_latency/single_rule_with_{n}_installed: p50 {:.1} us, p99 {:.1} us, max {:.1} us over {} applies",
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        samples.last().expect("samples").as_secs_f64() * 1e6,
        samples.len()
    );
}
