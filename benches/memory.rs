//! Memory per installed exact flow at one million flows, measured with a
//! counting allocator: the compiled tables (what the datapath reads), the
//! compiler's index (what makes patches incremental), and, for scale, the
//! rule set itself and one flow-cache entry. Run with
//! `cargo bench --bench memory`.

mod common;

use common::*;
use dse_datapath::compile::Compiler;
use dse_datapath::pipeline::FlowCache;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: defers to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> isize {
    LIVE.load(Relaxed)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = 1_000_000u32;
    let base = live();
    let set = exact_rules(n);
    let rule_set = live() - base;
    // The compiler takes the rules over: they become its sources.
    let compiler = Compiler::new(&set).expect("compiles");
    let everything = live() - base;
    let tables = compiler.tables().clone();
    drop(compiler);
    let tables_only = live() - base;
    let per = |b: isize| b as f64 / f64::from(n);
    println!(
        "memory/1M_exact_flows: compiled tables {:.1} B/flow",
        per(tables_only)
    );
    println!(
        "memory/1M_exact_flows: compiler index (for incremental patches) {:.1} B/flow",
        per(everything - tables_only - rule_set)
    );
    println!(
        "memory/1M_exact_flows: the rules themselves (kept by the compiler) {:.1} B/flow",
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
