//! Criterion benches of the reference pipeline, each beside a naive baseline
//! measured in the same run (see BENCHMARKS.md).
//!
//! - `cache_hit/{1k,1M}`: parse + flow-cache lookup + count + output, one
//!   core, uniformly random traffic over N installed exact 5-tuple flows;
//!   baseline: parse + `std::collections::HashMap` keyed by the 5-tuple.
//! - `tuple_space/16masks_100k`: parse + tuple-space search with no cache;
//!   baseline: a linear scan over the rules sorted by (priority, id).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dse_datapath::compile::{FlowKey, MaskedKey};
use dse_datapath::pipeline::{Installed, Pipeline, Verdict, parse, search, search_batch};
use dse_datapath::rule::Rule;
use dse_datapath::{Frame, compile};
use std::collections::HashMap;
use std::hint::black_box;

mod common;

use common::*;

const BATCH: usize = 32;

type FiveTuple = ([u8; 4], [u8; 4], u8, u16, u16);

fn aim(frame: &mut Frame, flow: u32) {
    let d = frame.data_mut();
    d[26..30].copy_from_slice(&flow_src(flow));
    d[34..36].copy_from_slice(&flow_sport(flow).to_be_bytes());
}

fn cache_hit(c: &mut Criterion) {
    let mut g = c.benchmark_group("cache_hit");
    g.throughput(Throughput::Elements(BATCH as u64));
    for (label, n) in [("1k", 1_000u32), ("1M", 1_000_000)] {
        let set = exact_rules(n);
        let inst = Installed::build(1, &set).expect("compiles");
        // Room for every flow: a set-associative cache at half load rarely evicts.
        let mut pipeline =
            Pipeline::new((n as usize * 2).max(dse_datapath::pipeline::DEFAULT_CACHE_ENTRIES));
        let mut frames: Vec<Frame> = (0..BATCH).map(|_| Frame::new(&template())).collect();
        let mut verdicts = Vec::with_capacity(BATCH);
        // Warm the cache with every flow.
        for flow in 0..n {
            aim(&mut frames[0], flow);
            pipeline.process(&inst, &mut frames[0], 0, 0);
        }
        // The traffic: a fixed, uniformly random sequence of flows, drawn
        // before timing so that the generator's division is not measured.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let sequence: Vec<u32> = (0..1 << 16)
            .map(|_| (rng.next() % u64::from(n)) as u32)
            .collect();
        let mut next = sequence.iter().copied().cycle();
        g.bench_function(BenchmarkId::new("dse", label), |b| {
            b.iter(|| {
                for f in frames.iter_mut() {
                    aim(f, next.next().expect("cycles forever"));
                }
                verdicts.clear();
                pipeline.process_batch(&inst, &mut frames, 0, 0, &mut verdicts);
                black_box(&verdicts);
            })
        });
        let table: HashMap<FiveTuple, u32> = (0..n)
            .map(|i| ((flow_src(i), [192, 168, 0, 1], 17, flow_sport(i), 53), i))
            .collect();
        let mut counters = vec![(0u64, 0u64); n as usize];
        g.bench_function(BenchmarkId::new("std_hashmap_baseline", label), |b| {
            b.iter(|| {
                for f in frames.iter_mut() {
                    aim(f, next.next().expect("cycles forever"));
                }
                verdicts.clear();
                for f in &frames {
                    let (k, _) = parse(f.data(), 0, 0).expect("valid");
                    let t = (
                        k.ip_src[..4].try_into().unwrap(),
                        k.ip_dst[..4].try_into().unwrap(),
                        k.ip_proto,
                        k.l4_src,
                        k.l4_dst,
                    );
                    match table.get(&t) {
                        Some(&r) => {
                            counters[r as usize].0 += 1;
                            counters[r as usize].1 += f.len() as u64;
                            verdicts.push(Verdict::Output(1));
                        }
                        None => verdicts.push(Verdict::Pass),
                    }
                }
                black_box(&verdicts);
            })
        });
    }
    g.finish();
}

fn tuple_space(c: &mut Criterion) {
    let mut g = c.benchmark_group("tuple_space");
    let set = wildcard_rules();
    let tables = compile(&set).expect("compiles");
    assert_eq!(tables.subtables.len(), 16);
    let mut rng = Rng(7);
    let mut frames: Vec<Frame> = (0..BATCH).map(|_| Frame::new(&template())).collect();
    let mut aim_random = |frames: &mut [Frame]| {
        for f in frames.iter_mut() {
            let i = (rng.next() % 100_000) as u32;
            let d = f.data_mut();
            d[26..30].copy_from_slice(&flow_src(i * 7919));
            d[36..38].copy_from_slice(&((i % 1000) as u16).to_be_bytes());
        }
    };
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("dse/16masks_100k", |b| {
        b.iter(|| {
            aim_random(&mut frames);
            for f in &frames {
                let (k, _) = parse(f.data(), 0, 0).expect("valid");
                black_box(search(&tables, &k));
            }
        })
    });
    g.bench_function("dse_batched/16masks_100k", |b| {
        let mut keys = [FlowKey::default(); BATCH];
        let mut found = [0u32; BATCH];
        b.iter(|| {
            aim_random(&mut frames);
            for (k, f) in keys.iter_mut().zip(&frames) {
                *k = parse(f.data(), 0, 0).expect("valid").0;
            }
            let refs: [&FlowKey; BATCH] = core::array::from_fn(|i| &keys[i]);
            search_batch(&tables, &refs, &mut found);
            black_box(&found);
        })
    });
    let mut sorted: Vec<(&Rule, MaskedKey)> = set
        .rules
        .iter()
        .map(|r| (r, MaskedKey::from_match(&r.matches, &set)))
        .collect();
    sorted.sort_by_key(|(r, _)| (std::cmp::Reverse(r.priority), r.id));
    g.sample_size(10);
    g.bench_function("linear_scan_baseline/16masks_100k", |b| {
        b.iter(|| {
            aim_random(&mut frames);
            for f in &frames {
                let (k, _) = parse(f.data(), 0, 0).expect("valid");
                black_box(sorted.iter().position(|(_, m)| m.matches(&k)));
            }
        })
    });
    g.finish();
}

// In a private module: criterion_group! generates an undocumented public function.
mod group {
    use super::*;
    criterion_group!(benches, cache_hit, tuple_space);
}
use group::benches;
criterion_main!(benches);
