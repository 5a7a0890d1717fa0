//! Interleaved comparisons on the XDP cache-hit path (1k exact flows, the
//! packet's flow cached, action drop), round by round and alternating the
//! order, so that the host's slow and fast phases hit both sides alike.
//! Prints each round and the medians. Needs root and bpffs.
//!
//! - `cargo bench --bench xdp_ab`: the committed program against the
//!   minimal parse + one hash lookup program (issue 3's target: at most
//!   1.5x).
//! - `DSE_AB_OBJECT=path cargo bench --bench xdp_ab`: the committed
//!   object (A) against one built from a changed source (B):
//!   `make -C ebpf dse.bpf.o && cp ebpf/dse.bpf.o /tmp/b.o && git stash &&
//!   DSE_AB_OBJECT=/tmp/b.o cargo bench --bench xdp_ab`.

#![allow(missing_docs)]

use dse_datapath::compile::Compiler;
use dse_datapath::rule::Action;
use dse_datapath::xdp::{Program, XdpInstance, XdpLimits};
use std::time::Duration;

mod common;

use common::*;

const ROUNDS: usize = 20;
const RUNS: u32 = 1_000_000;

/// The medians of `a` and `b` (each the per-run time of [`RUNS`] runs)
/// over [`ROUNDS`] rounds that alternate which goes first.
fn interleave(
    mut a: impl FnMut() -> Duration,
    mut b: impl FnMut() -> Duration,
) -> (Duration, Duration) {
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (x, y) = if round % 2 == 0 {
            let x = a();
            (x, b())
        } else {
            let y = b();
            (a(), y)
        };
        println!("round {round}: A {x:?}  B {y:?}");
        ta.push(x);
        tb.push(y);
    }
    (median(ta), median(tb))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mut exact = exact_rules(1000);
    for r in &mut exact.rules {
        r.actions = vec![Action::Drop];
    }
    let compiler = Compiler::new(&exact).expect("compiles");
    let mut frame = template();
    frame[26..30].copy_from_slice(&flow_src(7));
    frame[34..36].copy_from_slice(&flow_sport(7).to_be_bytes());
    let load = |name: &str, program| {
        let dir = Pins::new(&format!("ab-{name}"));
        let mut x =
            XdpInstance::load_object(&dir.0, XdpLimits::small(), program, &[]).expect("loads");
        x.install_rebuilt(compiler.tables()).expect("installs");
        x.time_runs(0, &frame, 1).unwrap();
        (dir, x)
    };
    let (_da, mut a) = load("a", Program::V1);
    match std::env::var("DSE_AB_OBJECT") {
        Ok(path) => {
            let b: &'static [u8] = Box::leak(
                std::fs::read(&path)
                    .expect("reads the B object")
                    .into_boxed_slice(),
            );
            let (_db, mut bb) = load("b", Program::Custom(b));
            let (ma, mb) = interleave(
                || a.time_runs(0, &frame, RUNS).unwrap(),
                || bb.time_runs(0, &frame, RUNS).unwrap(),
            );
            println!(
                "median: A (committed) {ma:?}, B ({path}) {mb:?}, B/A {:.3}",
                mb.as_secs_f64() / ma.as_secs_f64()
            );
        }
        Err(_) => {
            let base = baseline::Baseline::load(baseline_key(7));
            let (ma, mb) = interleave(
                || a.time_runs(0, &frame, RUNS).unwrap(),
                || base.time_runs(&frame, RUNS),
            );
            println!(
                "median: A (dse cache hit) {ma:?}, B (minimal parse + one lookup) {mb:?}, A/B {:.3}",
                ma.as_secs_f64() / mb.as_secs_f64()
            );
        }
    }
}
