//! Memory per installed exact flow at one million flows, measured with a
//! counting allocator: the compiled tables (what the datapath reads), the
//! compiler's index (what makes patches incremental) with its packed copy
//! of the rules, and, for scale, the rule set itself and one flow-cache
//! entry. Run with `cargo bench --bench memory`; the daemon's memory as a
//! whole is `cargo bench --bench daemon_memory`.

mod common;

use common::counting::{Counting, live};
use common::*;
use dse_datapath::compile::Compiler;
use dse_datapath::pipeline::FlowCache;

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = 1_000_000u32;
    let base = live();
    let set = exact_rules(n);
    let rule_set = live() - base;
    let before = live();
    let compiler = Compiler::new(&set).expect("compiles");
    let compiled = live() - before;
    let tables = compiler.tables().clone();
    drop(compiler);
    let tables_only = live() - before;
    let per = |b: isize| b as f64 / f64::from(n);
    println!(
        "memory/1M_exact_flows: compiled tables {:.1} B/flow",
        per(tables_only)
    );
    println!(
        "memory/1M_exact_flows: compiler index (for incremental patches) and its packed rules {:.1} B/flow",
        per(compiled - tables_only)
    );
    println!(
        "memory/1M_exact_flows: the rules themselves, as parsed {:.1} B/flow",
        per(rule_set)
    );
    let before = live();
    let cache = FlowCache::new(1 << 20);
    println!(
        "memory/flow_cache: {:.1} B/entry",
        (live() - before) as f64 / cache.capacity() as f64
    );
    drop(tables);
}
