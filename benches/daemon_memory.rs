//! Where a daemon's memory goes at 100k and 1M rules: a daemon in this
//! process, a counting allocator, the request as the API takes it (JSON
//! bytes, parsed), an apply, an XDP datapath attached (maps only matter to
//! the kernel), and a second apply that changes every rule. Reports the
//! heap each step holds and its peak, per rule, the process's resident
//! anonymous memory beside the mapped BPF maps, and the bytes of each part
//! built alone as the daemon builds it. Run with
//! `cargo bench --bench daemon_memory` (as root with bpffs for the XDP
//! steps; `DSE_BENCH_RULES=100000` for one size).

mod common;

use common::counting::{self, Counting, live, peak, reset_peak, settled};
use common::*;
use dse_control::store::{Backend, Change, DatapathInstance, Store};
use dse_control::{Daemon, DaemonConfig};
use dse_datapath::compile::Compiler;
use dse_datapath::rule::RuleSet;
use std::collections::BTreeMap;

#[global_allocator]
static ALLOC: Counting = Counting;

/// A veth pair in this namespace for the datapath's ports, deleted on drop.
struct Veth([String; 2]);

impl Veth {
    fn new(tag: &str) -> Option<Veth> {
        let names = [format!("dm{tag}a"), format!("dm{tag}b")];
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success())
        };
        let made = ip(&[
            "link", "add", &names[0], "type", "veth", "peer", "name", &names[1],
        ]);
        let v = Veth(names);
        (made && v.0.iter().all(|n| ip(&["link", "set", n, "up"]))).then_some(v)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0[0]])
            .status();
    }
}

/// Kibibytes of `field` in /proc/self/status.
fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0)
}

/// Kibibytes resident of the BPF maps mapped into this process.
fn bpf_maps_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut in_map = false;
    let mut kb = 0;
    for l in s.lines() {
        if l.contains(" anon_inode:bpf-map") || l.ends_with("anon_inode:bpf-map") {
            in_map = true;
        } else if l.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) && l.contains('-') {
            in_map = false;
        } else if in_map && let Some(v) = l.strip_prefix("Rss:") {
            kb += v.trim().trim_end_matches(" kB").parse::<u64>().unwrap_or(0);
        }
    }
    kb
}

/// Every rule of `set` with another destination port: a change to each.
fn changed(mut set: RuleSet) -> RuleSet {
    for r in &mut set.rules {
        if let Some(l4) = &mut r.matches.l4_dst {
            l4.value = 54;
        }
    }
    set
}

struct Report {
    n: u32,
}

impl Report {
    fn line(&self, what: &str, bytes: isize) {
        println!(
            "daemon_memory/{}: {what}: {:.1} B/rule ({:.1} MiB)",
            self.n,
            bytes as f64 / f64::from(self.n),
            bytes as f64 / f64::from(1 << 20)
        );
    }

    fn rss(&self, when: &str) {
        let anon = status_kb("RssAnon");
        let maps = bpf_maps_kb();
        println!(
            "daemon_memory/{}: RSS {when}: anonymous {} MiB ({:.1} B/rule), mapped BPF maps {} MiB apart",
            self.n,
            anon / 1024,
            (anon * 1024) as f64 / f64::from(self.n),
            maps / 1024
        );
    }
}

/// The request's JSON bytes, parsed as the API parses them, and the most
/// bytes live while they were (the body's included).
fn request(set: RuleSet, r: &Report) -> (RuleSet, isize) {
    let mut body = serde_json::to_vec(&set).expect("serializes");
    body.shrink_to_fit(); // as the API reads a body: its length, no more
    drop(set);
    r.line(
        "request body (JSON, freed once parsed)",
        body.len() as isize,
    );
    // What is live without the body: the parse frees the body it is given.
    let before = live() - body.capacity() as isize;
    reset_peak();
    let parsed = RuleSet::parse_json_bytes(body).expect("parses");
    parsed.validate().expect("valid");
    r.line("parsed request", live() - before);
    r.line("parsing's peak", peak() - before);
    (parsed, peak())
}

fn run(n: u32) {
    let r = Report { n };
    let tag = format!("{}", std::process::id() % 100_000);
    let dir = Dir::new(&format!("mem-{n}"));
    std::fs::create_dir_all(&dir.0).expect("a directory for the database");
    let pins = Pins::new(&format!("mem{n}"));
    let base = settled();
    let daemon = Daemon::open(DaemonConfig {
        bpffs: pins.0.clone(),
        xdp_limits: dse_datapath::xdp::XdpLimits::default(),
        ..dse::lab::control::daemon_config(&dir.0, &pins.0)
    })
    .expect("the daemon opens");
    r.line("an empty daemon", settled() - base);

    let (set, _) = request(exact_rules(n), &r);
    let before = live();
    reset_peak();
    daemon.apply(set, None, false, "bench").expect("applies");
    r.line("apply's peak (no datapath)", peak() - before);
    let no_datapath = settled() - base;
    r.line("daemon, steady, no datapath", no_datapath);
    r.rss("no datapath");

    let Some(veth) = Veth::new(&tag) else {
        println!("daemon_memory/{n}: XDP steps skipped (needs root to make a veth)");
        return;
    };
    let before = live();
    reset_peak();
    let record = DatapathInstance {
        name: "mem".into(),
        backend: Backend::Xdp,
        interfaces: BTreeMap::from([
            ("p0".to_string(), veth.0[0].clone()),
            ("p1".to_string(), veth.0[1].clone()),
        ]),
        object: None,
    };
    if let Err(e) = daemon.attach(record, "bench") {
        println!("daemon_memory/{n}: XDP steps skipped ({e}; needs root and bpffs)");
        return;
    }
    r.line("attach's peak", peak() - before);
    let attached = settled() - base;
    r.line("daemon, steady, one XDP datapath", attached);
    r.rss("one XDP datapath");

    // A request as the API takes it: the body parsed (the body freed),
    // then applied. Its peak is the higher of the two steps'.
    let (set, parse_peak) = request(changed(exact_rules(n)), &r);
    reset_peak();
    daemon.apply(set, None, false, "bench").expect("applies");
    let apply_peak = peak() - base;
    r.line(
        "apply's peak, every rule changed, one XDP datapath",
        apply_peak,
    );
    let whole = parse_peak.max(peak()) - base;
    r.line("the request's peak, parse and apply", whole);
    let steady = settled() - base;
    r.line("daemon, steady after it", steady);
    r.rss("after the second apply");
    println!(
        "daemon_memory/{n}: the request's peak over steady: {:.2}x",
        whole as f64 / steady as f64
    );
    drop(daemon);
    drop(veth);
    let _ = counting::live();
}

/// Each part built alone, as the daemon builds it, and what it holds.
fn parts(n: u32, r: &Report) {
    let set = exact_rules(n);
    let held = |what: &str, make: &dyn Fn() -> Box<dyn std::any::Any>| {
        let before = settled();
        let part = make();
        r.line(what, settled() - before);
        drop(part);
    };
    r.line("part: the rule set as the library builds it", {
        let before = live();
        let copy = set.clone();
        let bytes = live() - before;
        drop(copy);
        bytes
    });
    held("part: desired rules by id", &|| {
        Box::new(dse_control::desired::Desired::new(1, &set))
    });
    let dir = Dir::new("mem-store");
    let before = settled();
    let store = Store::open(dir.0.join("dse.redb")).expect("opens");
    store.commit_rules(&set, None, "bench").expect("commits");
    r.line(
        "part: store, after committing the set (its caches)",
        settled() - before,
    );
    let before = live();
    for i in 0..1000u32 {
        let mut rule = set.rules[i as usize].clone();
        rule.priority += 1;
        let upsert = [rule];
        let change = Change::Patch {
            upsert: &upsert,
            remove: &[],
        };
        store.commit(change, None, "bench").expect("journals");
    }
    r.line(
        "part: store journal, 1000 one-rule patches not yet checkpointed",
        live() - before,
    );
    drop(store);
    drop(dir);
    let before = settled();
    let compiler = Compiler::new(&set).expect("compiles");
    let whole = settled() - before;
    let tables = compiler.tables().clone();
    drop(compiler);
    let tables_only = settled() - before;
    drop(tables);
    r.line("part: compiled tables (one XDP bank)", tables_only);
    r.line(
        "part: compiler's index and its copy of the rules",
        whole - tables_only,
    );
    let before = live();
    reset_peak();
    let summary = dse_control::desired::Desired::new(1, &set);
    let changed = changed(set.clone());
    let after_copies = live();
    reset_peak();
    let _ = summary.diff_summary(&changed);
    r.line("part: diff's own data (transient)", peak() - after_copies);
    let _ = before;
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sizes: Vec<u32> = match std::env::var("DSE_BENCH_RULES") {
        Ok(v) => v.split(',').filter_map(|s| s.parse().ok()).collect(),
        Err(_) => vec![100_000, 1_000_000],
    };
    for n in sizes {
        run(n);
        parts(n, &Report { n });
    }
}
