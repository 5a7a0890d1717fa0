//! A/B harness for changes to the XDP program: the committed object (A)
//! against an object built from a changed source (B, path in
//! `DSE_AB_OBJECT`), on the cache-hit path, interleaved round by round so
//! that the host's slow and fast phases hit both alike. Prints each round
//! and the medians. Needs root and bpffs.
//!
//! `make -C ebpf dse.bpf.o && cp ebpf/dse.bpf.o /tmp/b.o && git stash &&
//! DSE_AB_OBJECT=/tmp/b.o cargo bench --bench xdp_ab`

#![allow(missing_docs)]

use dse_datapath::compile::Compiler;
use dse_datapath::rule::Action;
use dse_datapath::xdp::{Program, XdpInstance, XdpLimits};
use std::time::Duration;

mod common;

use common::*;

/// A bpffs directory removed on drop, panics included.
struct Pins(std::path::PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Ok(path) = std::env::var("DSE_AB_OBJECT") else {
        eprintln!("set DSE_AB_OBJECT to the object to compare with the committed one");
        return;
    };
    let b: &'static [u8] = Box::leak(
        std::fs::read(&path)
            .expect("reads the B object")
            .into_boxed_slice(),
    );
    let mut exact = exact_rules(1000);
    for r in &mut exact.rules {
        r.actions = vec![Action::Drop];
    }
    let compiler = Compiler::new(exact).expect("compiles");
    let mut frame = template();
    frame[26..30].copy_from_slice(&flow_src(7));
    frame[34..36].copy_from_slice(&flow_sport(7).to_be_bytes());
    let load = |name: &str, program| {
        let dir = Pins(std::path::PathBuf::from(format!(
            "/sys/fs/bpf/dse-ab-{}-{name}",
            std::process::id()
        )));
        let mut x =
            XdpInstance::load_object(&dir.0, XdpLimits::small(), program, &[]).expect("loads");
        x.install_rebuilt(compiler.tables()).expect("installs");
        x.time_runs(0, &frame, 1).unwrap();
        (dir, x)
    };
    let (da, mut a) = load("a", Program::V1);
    let (db, mut bb) = load("b", Program::Custom(b));
    let (mut ta, mut tb): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    for round in 0..20 {
        // Alternate which goes first, so that neither gains from the order.
        let (x, y) = if round % 2 == 0 {
            let x = a.time_runs(0, &frame, 1_000_000).unwrap();
            (x, bb.time_runs(0, &frame, 1_000_000).unwrap())
        } else {
            let y = bb.time_runs(0, &frame, 1_000_000).unwrap();
            (a.time_runs(0, &frame, 1_000_000).unwrap(), y)
        };
        println!("round {round}: A {x:?}  B {y:?}");
        ta.push(x);
        tb.push(y);
    }
    ta.sort();
    tb.sort();
    let (ma, mb) = (ta[ta.len() / 2], tb[tb.len() / 2]);
    println!(
        "median: A (committed) {ma:?}, B ({path}) {mb:?}, B/A {:.3}",
        mb.as_secs_f64() / ma.as_secs_f64()
    );
    drop((a, bb, da, db));
}
