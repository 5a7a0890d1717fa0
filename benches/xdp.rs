//! Criterion benches of the XDP program under BPF_PROG_TEST_RUN (the
//! kernel's own per-run time), each beside, in the same run:
//! (a) `baseline_xdp`, a minimal parse + one hash lookup program, and
//! (b) `xdp-filter` (xdp-tools) dropping the same packet by UDP port.
//! Also the loading of 1M rules into the maps. Needs root and bpffs.
//!
//! - `xdp_path/cache_hit`: 1k exact flows installed, the packet's flow
//!   cached, action `drop`.
//! - `xdp_path/tuple_space_16_masks`: the flow cache off, 100k rules over 16
//!   masks, action `drop`.
//! - `xdp_action/<action>`: the cache-hit path with that action before a
//!   `drop`; size-changing actions come in pairs that restore the frame
//!   (a run does not reset it).

#![allow(
    missing_docs,
    reason = "criterion_group! generates undocumented functions"
)]

use criterion::{Criterion, criterion_group, criterion_main};
use dse_datapath::compile::Compiler;
use dse_datapath::rule::{Action, Encap, Mac, Masked, Match, PushVlan, Rule, RuleSet};
use dse_datapath::xdp::{XdpInstance, XdpLimits};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

mod common;

use common::*;

const REPEAT_CAP: u64 = 1 << 20;

fn loaded(name: &str, set: &RuleSet, limits: XdpLimits) -> (Pins, XdpInstance) {
    let pins = Pins::new(name);
    let mut xdp = XdpInstance::load(&pins.0, limits).expect("loads (root and bpffs needed)");
    let compiler = Compiler::new(set).expect("compiles");
    xdp.install_rebuilt(compiler.tables()).expect("installs");
    (pins, xdp)
}

/// Criterion's time for `iters` runs, from the kernel's per-run average.
fn timed(iters: u64, mut per_run: impl FnMut(u32) -> Duration) -> Duration {
    let mut left = iters;
    let mut total = Duration::ZERO;
    while left > 0 {
        let n = left.min(REPEAT_CAP);
        total += per_run(n as u32) * n as u32;
        left -= n;
    }
    total
}

fn drop_rule(id: u32, l4_dst: u16, mut actions: Vec<Action>) -> Rule {
    actions.push(Action::Drop);
    Rule {
        id,
        priority: 10,
        matches: Match {
            ip_proto: Some(dse_datapath::rule::IpProto(17)),
            l4_dst: Some(Masked {
                value: l4_dst,
                mask: 0xffff,
            }),
            ..Match::default()
        },
        actions,
    }
}

fn packet(dport: u16) -> Vec<u8> {
    let mut p = template();
    p[36..38].copy_from_slice(&dport.to_be_bytes());
    p
}

fn paths(c: &mut Criterion) {
    let mut g = c.benchmark_group("xdp_path");
    // Cache hit: 1k exact flows (action drop), the packet's flow cached.
    let mut exact = exact_rules(1000);
    for r in &mut exact.rules {
        r.actions = vec![Action::Drop];
    }
    let (_p1, mut hit) = loaded("hit", &exact, XdpLimits::small());
    let mut frame = template();
    frame[26..30].copy_from_slice(&flow_src(7));
    frame[34..36].copy_from_slice(&flow_sport(7).to_be_bytes());
    hit.time_runs(0, &frame, 1).unwrap();
    g.bench_function("dse/cache_hit", |b| {
        b.iter_custom(|iters| timed(iters, |n| hit.time_runs(0, &frame, n).unwrap()))
    });

    // Tuple space: 16 masks, 100k rules, no cache.
    let mut wild = wildcard_rules();
    for r in &mut wild.rules {
        r.actions = vec![Action::Drop];
    }
    let limits = XdpLimits {
        rules: 1 << 18,
        action_records: 1 << 12,
        cache_entries: 1 << 12,
        flow_cache: false,
    };
    let (_p2, mut tss) = loaded("tss", &wild, limits);
    let i = 7u32;
    let mut wframe = template();
    wframe[26..30].copy_from_slice(&flow_src(i * 7919));
    wframe[36..38].copy_from_slice(&((i % 1000) as u16).to_be_bytes());
    g.bench_function("dse/tuple_space_16_masks", |b| {
        b.iter_custom(|iters| timed(iters, |n| tss.time_runs(0, &wframe, n).unwrap()))
    });

    // (a) the minimal parse + one lookup program, dropping the same flow.
    let base = baseline::Baseline::load(baseline_key(7));
    g.bench_function("baseline_parse_one_lookup", |b| {
        b.iter_custom(|iters| timed(iters, |n| base.time_runs(&frame, n)))
    });

    // (b) xdp-filter's program, dropping UDP port 53.
    if let Some(filter) = XdpFilter::start(&frame) {
        g.bench_function("xdp_filter_udp_port_drop", |b| {
            b.iter_custom(|iters| timed(iters, |n| filter.run(n)))
        });
    }
    g.finish();
}

/// xdp-filter loaded on a veth of its own, run through `bpftool prog run`.
struct XdpFilter {
    iface: String,
    prog_id: u32,
    data: PathBuf,
}

impl XdpFilter {
    fn start(frame: &[u8]) -> Option<XdpFilter> {
        let iface = format!("dxf{}", std::process::id() % 100_000);
        let sh = |args: &[&str]| Command::new(args[0]).args(&args[1..]).output().ok();
        sh(&[
            "ip",
            "link",
            "add",
            &iface,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{iface}p"),
        ])?;
        let mut f = XdpFilter {
            iface: iface.clone(),
            prog_id: 0,
            data: std::env::temp_dir().join(format!("dse-bench-frame-{}", std::process::id())),
        };
        let out = sh(&["xdp-filter", "load", "-m", "skb", &iface])?;
        if !out.status.success() {
            eprintln!("xdp-filter load: {}", String::from_utf8_lossy(&out.stderr));
            return None;
        }
        sh(&["xdp-filter", "port", "53", "-p", "udp", "-m", "dst"])?;
        let list = sh(&["bpftool", "prog", "show"])?;
        let text = String::from_utf8_lossy(&list.stdout);
        let id = text
            .lines()
            .filter(|l| l.contains("xdpfilt_"))
            .filter_map(|l| l.split(':').next()?.trim().parse::<u32>().ok())
            .max()?;
        std::fs::write(&f.data, frame).ok()?;
        f.prog_id = id;
        Some(f)
    }

    fn run(&self, n: u32) -> Duration {
        let out = Command::new("bpftool")
            .args(["prog", "run", "id", &self.prog_id.to_string(), "data_in"])
            .arg(&self.data)
            .args(["repeat", &n.to_string()])
            .output()
            .expect("bpftool runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("Return value: 1"),
            "xdp-filter drops the packet: {text}"
        );
        // "duration: 113ns" (older bpftool: "duration (average): 113ns").
        let ns: u64 = text
            .split("duration")
            .nth(1)
            .and_then(|s| s.split(':').nth(1))
            .and_then(|s| s.split("ns").next())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("bpftool output: {text}"));
        Duration::from_nanos(ns)
    }
}

impl Drop for XdpFilter {
    fn drop(&mut self) {
        let _ = Command::new("xdp-filter")
            .args(["unload", &self.iface])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.iface])
            .output();
        let _ = std::fs::remove_file(&self.data);
    }
}

fn actions(c: &mut Criterion) {
    let mut g = c.benchmark_group("xdp_action");
    let mac = Mac([2, 0, 0, 0, 0, 0x99]);
    let tunnel = Encap {
        vni: 100,
        eth_src: Mac([2, 0, 0, 0, 0, 2]),
        eth_dst: Mac([2, 0, 0, 0, 0, 1]),
        ip_src: IpAddr::from([172, 16, 0, 1]),
        ip_dst: IpAddr::from([172, 16, 0, 2]),
        udp_src: Some(40000),
        udp_dst: None,
        options: vec![],
    };
    let cases: Vec<(&str, Vec<Action>)> = vec![
        ("drop_only", vec![]),
        ("set_eth_src", vec![Action::SetEthSrc(mac)]),
        (
            "set_ip_src",
            vec![Action::SetIpSrc(IpAddr::from([10, 9, 9, 9]))],
        ),
        ("set_l4_src", vec![Action::SetL4Src(4242)]),
        (
            "push_vlan+pop_vlan",
            vec![
                Action::PushVlan(PushVlan {
                    vid: 10,
                    pcp: 0,
                    tpid: 0x8100,
                }),
                Action::PopVlan,
            ],
        ),
        ("meter", vec![Action::Meter("roomy".into())]),
    ];
    for (name, acts) in cases {
        let mut set = with_ports(vec![drop_rule(1, 53, acts)]);
        set.meters = vec![dse_datapath::rule::MeterDef {
            name: "roomy".into(),
            unit: dse_datapath::rule::MeterUnit::Pps,
            rate: 1 << 40,
            burst: 1 << 34,
        }];
        let (_p, mut xdp) = loaded(&format!("act-{name}"), &set, XdpLimits::small());
        let frame = packet(53);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| timed(iters, |n| xdp.time_runs(0, &frame, n).unwrap()))
        });
    }
    // Encap + decap: a VXLAN/Geneve packet is decapsulated, its inner frame
    // classified again and encapsulated back into the same packet.
    for (name, geneve) in [("decap+encap_vxlan", false), ("decap+encap_geneve", true)] {
        let encap = if geneve {
            Action::EncapGeneve(Box::new(tunnel.clone()))
        } else {
            Action::EncapVxlan(Box::new(tunnel.clone()))
        };
        let tport = if geneve { 6081 } else { 4789 };
        let inner = Rule {
            id: 2,
            priority: 20,
            matches: Match {
                vni: Some(100),
                ..Match::default()
            },
            actions: vec![encap.clone(), Action::Drop],
        };
        let set = with_ports(vec![drop_rule(1, tport, vec![]), inner]);
        let mut set = set;
        set.rules[0].actions = vec![Action::Decap];
        let (_p, mut xdp) = loaded(&format!("act-{tport}"), &set, XdpLimits::small());
        // The packet is what the encap makes of the inner frame.
        let once = {
            let probe = with_ports(vec![Rule {
                id: 3,
                priority: 1,
                matches: Match::default(),
                actions: vec![encap, Action::Pass],
            }]);
            let (_pp, mut p) = loaded(&format!("probe-{tport}"), &probe, XdpLimits::small());
            p.run(0, &packet(53)).unwrap().1
        };
        g.bench_function(name, |b| {
            b.iter_custom(|iters| timed(iters, |n| xdp.time_runs(0, &once, n).unwrap()))
        });
    }
    g.finish();
}

fn loading(c: &mut Criterion) {
    let mut g = c.benchmark_group("xdp_load");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(criterion::Throughput::Elements(1_000_000));
    let set = exact_rules(1_000_000);
    let compiler = Compiler::new(&set).expect("compiles");
    // Into fresh maps: a datapath's first load (map creation untimed).
    g.bench_function("install_1M_exact_rules_fresh_maps", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let pins = Pins::new("load-fresh");
                let mut xdp = XdpInstance::load(&pins.0, XdpLimits::default()).expect("loads");
                let t = std::time::Instant::now();
                xdp.install_rebuilt(compiler.tables()).unwrap();
                total += t.elapsed();
            }
            total
        })
    });
    // Again and again into used maps: stale records and counters to clear.
    let pins = Pins::new("load");
    let mut xdp = XdpInstance::load(&pins.0, XdpLimits::default()).expect("loads");
    g.bench_function("install_1M_exact_rules_used_maps", |b| {
        b.iter(|| xdp.install_rebuilt(compiler.tables()).unwrap())
    });
    g.finish();
}

criterion_group!(benches, paths, actions, loading);
criterion_main!(benches);
