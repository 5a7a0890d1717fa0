//! Criterion benches of the control path and the emulated backend, each
//! beside a baseline measured in the same run (see BENCHMARKS.md).
//!
//! - `compile/1M_exact_rules`: `compile()` of a million exact 5-tuple rules;
//!   baseline: inserting the same rules' masked keys into a `std` HashMap.
//! - `apply/1M_rules`: a transaction that installs a million rules into a
//!   running emulated datapath (validate, compile, publish).
//! - `emu_scaling/{1,2}_workers`: frames queued while the workers are held,
//!   then processed; throughput per worker count.

mod common;

use common::*;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dse_datapath::compile::MaskedKey;
use dse_datapath::datapath::{Datapath, Transaction};
use dse_datapath::emu::{EmuConfig, EmuDatapath};
use dse_datapath::{Frame, RuleSet, compile};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn compile_1m(c: &mut Criterion) {
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    let set = exact_rules(1_000_000);
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function("dse/1M_exact_rules", |b| {
        b.iter(|| black_box(compile(&set).expect("compiles")))
    });
    g.bench_function("std_hashmap_baseline/1M_exact_rules", |b| {
        b.iter(|| {
            let mut m = HashMap::with_capacity(set.rules.len());
            for r in &set.rules {
                m.insert(MaskedKey::from_match(&r.matches, &set).value, r.id);
            }
            black_box(m)
        })
    });
    g.finish();
}

fn apply_1m(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1_000_000));
    let full = exact_rules(1_000_000);
    let empty = RuleSet {
        rules: vec![],
        ..full.clone()
    };
    g.bench_function("dse/1M_rules_into_running_emu", |b| {
        b.iter_batched(
            || {
                (
                    EmuDatapath::start(empty.clone(), EmuConfig::default()).expect("starts"),
                    full.clone(),
                )
            },
            |(dp, set)| {
                dp.apply(Transaction::Replace(set.into())).expect("applies");
                dp
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn emu_scaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("emu_scaling");
    const N: usize = 1 << 16;
    g.throughput(Throughput::Elements(N as u64));
    let set = exact_rules(1_000);
    let template = template();
    let mut rng = Rng(99);
    let frames: Vec<Vec<u8>> = (0..N)
        .map(|_| {
            let mut f = template.clone();
            let flow = (rng.next() % 1000) as u32;
            f[26..30].copy_from_slice(&flow_src(flow));
            f[34..36].copy_from_slice(&flow_sport(flow).to_be_bytes());
            f
        })
        .collect();
    for workers in [1usize, 2] {
        let dp = EmuDatapath::start(
            set.clone(),
            EmuConfig {
                workers,
                queue_depth: N,
                ..EmuConfig::default()
            },
        )
        .expect("starts");
        g.bench_function(BenchmarkId::new("dse", format!("{workers}_workers")), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    dp.hold();
                    let before = dp.processed();
                    for f in &frames {
                        dp.inject(0, Frame::new(f)).expect("queue has room");
                    }
                    let start = Instant::now();
                    dp.release();
                    // Sleep rather than spin: this thread must not take a core from the workers.
                    while dp.processed() < before + N as u64 {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    total += start.elapsed();
                    while dp.recv(1).is_some() {}
                }
                total
            })
        });
    }
    g.finish();
}

// In a private module: criterion_group! generates an undocumented public function.
mod group {
    use super::*;
    criterion_group!(benches, compile_1m, apply_1m, emu_scaling);
}
use group::benches;
criterion_main!(benches);
