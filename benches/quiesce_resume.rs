//! Quiesce to resume of a DPU's XDP datapath with a million rules
//! installed, as a remediation takes it (goal: under 1 s), on the two
//! paths a DPU takes:
//! - hitless (a datapath-only upgrade): the new program loaded ahead (at
//!   stage, not counted: traffic and rule changes go on), then quiesce, a
//!   fingerprint (generation, rule count, counter totals) saved, the
//!   program swapped (v1 <-> v2, whose counter layout differs, so the
//!   counters migrate), the fingerprint checked, resume;
//! - reboot (firmware or OS): quiesce, a full snapshot written and synced,
//!   then after the reboot a datapath rebuilt from the snapshot, attached,
//!   verified (rules equal, no counter below), resumed. The reboot itself
//!   is the device's and not counted.
//!
//! Medians of `DSE_BENCH_ROUNDS` (default 3) rounds, each step's too.
//! Needs root and bpffs. `cargo bench --bench quiesce_resume`.

mod common;

use common::*;
use dse_datapath::datapath::Datapath;
use dse_datapath::snapshot::Snapshot;
use dse_datapath::xdp::{Program, XdpConfig, XdpDatapath, XdpLimits};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

const INSTALLED: u32 = 1_000_000;

fn config(pins: &Pins, program: Program) -> XdpConfig {
    XdpConfig {
        pin_dir: pins.0.clone(),
        interfaces: Default::default(),
        skb_mode: false,
        limits: XdpLimits::default(),
        program,
    }
}

/// Times each named step of one round.
struct Steps(Vec<(&'static str, Duration)>);

impl Steps {
    fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.0.push((name, start.elapsed()));
        out
    }

    fn total(&self) -> Duration {
        self.0.iter().map(|(_, d)| *d).sum()
    }
}

fn save(snap: &Snapshot) {
    save_bytes(&snap.encode());
}

fn save_bytes(bytes: &[u8]) {
    let path = std::env::temp_dir().join(format!("dse-bench-{}.snapshot", std::process::id()));
    let mut f = std::fs::File::create(&path).expect("creates the snapshot file");
    f.write_all(bytes).expect("writes");
    f.sync_all().expect("syncs");
    let _ = std::fs::remove_file(&path);
}

fn verify(dp: &dyn Datapath, snap: &Snapshot) {
    assert!(dp.rules() == snap.rules, "rules equal");
    let now = dp.rule_counters();
    for (id, c) in &snap.counters {
        assert!(now[id].packets >= c.packets, "counter {id} kept");
    }
}

fn report(path: &str, rounds: Vec<Steps>) {
    let mut by_step: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let order: Vec<&str> = rounds[0].0.iter().map(|(n, _)| *n).collect();
    for r in &rounds {
        for (n, d) in &r.0 {
            by_step.entry(n).or_default().push(*d);
        }
    }
    let totals: Vec<Duration> = rounds.iter().map(Steps::total).collect();
    let steps: Vec<String> = order
        .iter()
        .map(|n| {
            format!(
                "{n} {:.0} ms",
                median(by_step[n].clone()).as_secs_f64() * 1e3
            )
        })
        .collect();
    println!(
        "quiesce_resume/{path}/{INSTALLED}_rules: median {:.0} ms (max {:.0} ms) over {} rounds; {}",
        median(totals.clone()).as_secs_f64() * 1e3,
        totals.iter().max().unwrap().as_secs_f64() * 1e3,
        totals.len(),
        steps.join(", ")
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = std::env::var("DSE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let rules = exact_rules(INSTALLED);
    let pins = Pins::new("quiesce_resume");
    let dp = match XdpDatapath::start(rules.clone(), config(&pins, Program::V1)) {
        Ok(dp) => dp,
        Err(e) => {
            println!("quiesce_resume: skipped ({e}; needs root and bpffs)");
            return;
        }
    };
    let t = Instant::now();
    let counters = dp.rule_counters();
    let t_counters = t.elapsed();
    let t = Instant::now();
    let set = dp.rules();
    eprintln!(
        "  reading 1M counters: {:?}; cloning 1M rules: {:?} ({} {})",
        t_counters,
        t.elapsed(),
        counters.len(),
        set.rules.len()
    );
    let mut hitless = Vec::new();
    for i in 0..rounds {
        let next = if i % 2 == 0 { Program::V2 } else { Program::V1 };
        let t = Instant::now();
        let prepared = dp.prepare_upgrade(next).unwrap();
        eprintln!("  loading {next:?} ahead (not counted): {:?}", t.elapsed());
        let mut s = Steps(Vec::new());
        s.time("quiesce", || dp.quiesce().unwrap());
        let before = s.time("fingerprint", || dp.fingerprint());
        s.time("save", || save_bytes(&serde_json::to_vec(&before).unwrap()));
        let r = s.time("swap", || dp.commit_upgrade(prepared).unwrap());
        eprintln!("  swap to {next:?}: {r:?}");
        s.time("verify", || assert!(dp.fingerprint().continues(&before)));
        s.time("resume", || dp.resume().unwrap());
        hitless.push(s);
    }
    report("hitless", hitless);

    // For comparison, in the same run: the hitless path as a reboot's,
    // with a full snapshot saved and checked, and the program loaded
    // inside the window.
    let mut full = Vec::new();
    for i in 0..rounds {
        let next = if (rounds + i).is_multiple_of(2) {
            Program::V2
        } else {
            Program::V1
        };
        let mut s = Steps(Vec::new());
        s.time("quiesce", || dp.quiesce().unwrap());
        let snap = s.time("snapshot", || dp.snapshot().unwrap());
        s.time("save", || save(&snap));
        s.time("load+swap", || dp.upgrade(next).unwrap());
        s.time("verify", || verify(&dp, &snap));
        s.time("resume", || dp.resume().unwrap());
        full.push(s);
    }
    report("hitless_with_full_snapshot", full);
    let program = dp.program();
    drop(dp);

    let mut reboot = Vec::new();
    let mut pins = pins;
    for i in 0..rounds {
        let old = XdpDatapath::adopt(rules.clone(), 1, config(&pins, program)).unwrap();
        let mut s = Steps(Vec::new());
        s.time("quiesce", || old.quiesce().unwrap());
        let snap = s.time("snapshot", || old.snapshot().unwrap());
        s.time("save", || save(&snap));
        drop(old);
        // The DPU reboots: its datapath is gone.
        let fresh = Pins::new(&format!("quiesce_resume_{i}"));
        let dp = s.time("rebuild", || {
            XdpDatapath::start_restored(&snap, config(&fresh, program)).unwrap()
        });
        s.time("attach", || dp.attach().unwrap());
        s.time("verify", || verify(&dp, &snap));
        s.time("resume", || dp.resume().unwrap());
        reboot.push(s);
        drop(dp);
        pins = fresh;
    }
    report("reboot", reboot);
}
