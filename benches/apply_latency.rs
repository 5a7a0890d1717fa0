//! Latency of single-rule transactions on a running datapath with a million
//! installed rules: p50, p99 and max over 2,000 applies (alternately adding
//! and removing one rule), on the emulated backend and, as root with bpffs,
//! on the XDP backend (maps only, no interface attached). A benchmark, not
//! a test: run with `cargo bench --bench apply_latency`.

mod common;

use common::*;
use dse_datapath::datapath::{Datapath, Transaction};
use dse_datapath::emu::{EmuConfig, EmuDatapath};
use dse_datapath::rule::{Action, IpProto, Masked, Match, Rule};
use dse_datapath::xdp::{Program, XdpConfig, XdpDatapath, XdpLimits};
use std::time::Instant;

const INSTALLED: u32 = 1_000_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let emu = EmuDatapath::start(exact_rules(INSTALLED), EmuConfig::default()).expect("starts");
    report("emu", &emu);
    drop(emu);
    let pins = Pins::new("apply_latency");
    let config = XdpConfig {
        pin_dir: pins.0.clone(),
        interfaces: Default::default(),
        skb_mode: false,
        limits: XdpLimits::default(),
        program: Program::V1,
    };
    match XdpDatapath::start(exact_rules(INSTALLED), config) {
        Ok(xdp) => report("xdp", &xdp),
        Err(e) => println!("apply_latency/xdp: skipped ({e}; needs root and bpffs)"),
    }
}

fn report(backend: &str, dp: &dyn Datapath) {
    let applies: u32 = std::env::var("DSE_BENCH_APPLIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut samples = Vec::with_capacity(applies as usize);
    for i in 0..applies {
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
        "apply_latency/{backend}/single_rule_with_{INSTALLED}_installed: p50 {:.1} us, p99 {:.1} us, max {:.1} us over {} applies",
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        samples.last().expect("samples").as_secs_f64() * 1e6,
        samples.len()
    );
}
