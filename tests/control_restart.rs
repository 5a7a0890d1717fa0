//! Restarts of `dse serve` through the real binary, with an XDP datapath
//! on veths carrying UDP between two namespaces: after every restart, by
//! SIGTERM or by SIGKILL at any point of an apply, the datapath forwards
//! exactly the store's rules, says it runs the store's generation, and no
//! kept rule's counter goes back.
//!
//! Needs root; under CI=true that is a failure.

mod common;

use common::bpf::PinDir;
use common::daemon::{DaemonProcess, failure};
use common::topology::{Topology, drain};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A rule set over ports `pa` (misses drop) and `pb`: `n` exact rules
/// from id `first` that forward UDP to port `port + i` from A to B, and
/// `kept` rules (ids 1..=kept, ports 7000..) that every set shares.
fn rule_set(first: u32, port: u16, n: u32, kept: u16) -> String {
    let exact = |id: u32, port: u32| {
        json!({"id": id, "priority": 10,
               "match": {"in_port": "pa", "ip_proto": "udp", "l4_dst": port},
               "actions": [{"output": "pb"}]})
    };
    let mut rules: Vec<Value> = (0..u32::from(kept))
        .map(|i| exact(1 + i, 7000 + i))
        .collect();
    // Ports beyond 65535 would be refused: the big sets match on the
    // source address too.
    for i in 0..n {
        let mut r = exact(first + i, u32::from(port) + (i % 1000));
        if i >= 1000 {
            r["match"]["ip_src"] = json!(format!(
                "10.{}.{}.{}/32",
                100 + (i >> 16),
                (i >> 8) & 255,
                i & 255
            ));
        }
        rules.push(r);
    }
    json!({"ports": [{"name": "pa", "index": 0, "default": "drop"}, {"name": "pb", "index": 1}],
           "rules": rules})
    .to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn attach(d: &DaemonProcess, t: &Topology) {
    let out = d.attach(t, "off", "xdp");
    assert!(out.status.success(), "attach: {}", failure(&out).1);
}

/// How many of `n` datagrams sent from A to each of `ports` on B arrive,
/// by port.
fn delivered(t: &Topology, ports: &[u16], n: usize) -> BTreeMap<u16, usize> {
    let socks: Vec<_> = ports.iter().map(|&p| (p, t.udp_in_b(p))).collect();
    let tx = t.udp_in_a();
    for &p in ports {
        for i in 0..n {
            tx.send_to(&(i as u64).to_be_bytes(), t.b_addr(p)).unwrap();
        }
    }
    socks.iter().map(|(p, s)| (*p, drain(s).len())).collect()
}

/// The datapath list's one entry, with the store's generation.
fn datapath(d: &DaemonProcess) -> (Value, u64) {
    let listed = d.json(&["datapath", "list"]);
    let status = d.json(&["status"]);
    (
        listed[0].clone(),
        status["health"]["generation"].as_u64().unwrap(),
    )
}

/// Checks that the datapath runs exactly the set whose flows start at
/// `want` and none of `other`'s, on ports sent to before and, with
/// `fresh` > 0, on ports `fresh` above them, never sent to before.
fn forwards_only(t: &Topology, want: u16, other: u16, fresh: u16, when: &str) {
    let mut ports = vec![want, other];
    if fresh > 0 {
        ports.extend([want + fresh, other + fresh]);
    }
    let got = delivered(t, &ports, 5);
    for (p, n) in &got {
        if (*p == want) || (fresh > 0 && *p == want + fresh) {
            assert_eq!(
                *n, 5,
                "{when}: a flow of the desired set (port {p}): {got:?}"
            );
        } else {
            assert_eq!(
                *n, 0,
                "{when}: a flow only the replaced set matched (port {p}): {got:?}"
            );
        }
    }
}

#[test]
fn r1_r2_r1_then_ten_restarts_forward_only_the_desired_set() {
    if PinDir::new("restart-probe").is_none() {
        return;
    }
    let t = Topology::new("rr", 84);
    let (dir, bpffs) = DaemonProcess::paths("rr");
    let mut d = DaemonProcess::start(dir.clone(), bpffs);
    let (r1, r2) = ((10_000u32, 10_000u16), (20_000u32, 20_000u16));
    let f1 = write(&dir, "r1.json", &rule_set(r1.0, r1.1, 2000, 1));
    let f2 = write(&dir, "r2.json", &rule_set(r2.0, r2.1, 2000, 1));
    for f in [&f1, &f2, &f1] {
        let out = d.cli(&["rules", "apply", "-f", f]);
        assert!(out.status.success(), "{}", failure(&out).1);
        if f == &f2 {
            attach(&d, &t);
        }
    }
    forwards_only(&t, r1.1, r2.1, 0, "before any restart");
    assert_eq!(delivered(&t, &[7000], 5)[&7000], 5);
    let mut kept = kept_count(&d);
    assert_eq!(kept, 5);
    for restart in 0..10u16 {
        let sigterm = restart % 2 == 0;
        let (dir, bpffs) = if sigterm { d.terminate() } else { d.kill() };
        d = DaemonProcess::start(dir, bpffs);
        let how = if sigterm { "SIGTERM" } else { "SIGKILL" };
        let when = format!("after restart {restart} ({how})");
        let (listed, generation) = datapath(&d);
        assert_eq!(listed["state"], "running", "{when}: {listed}");
        assert_eq!(listed["generation"], generation, "{when}: {listed}");
        assert_eq!(listed["in_sync"], true, "{when}: {listed}");
        // Flows never sent before, too: ports 100 + restart up.
        forwards_only(&t, r1.1, r2.1, 100 + restart, &when);
        assert_eq!(delivered(&t, &[7000], 5)[&7000], 5, "{when}");
        assert_eq!(
            kept_count(&d),
            kept + 5,
            "{when}: the kept rule counted on from where it was"
        );
        kept += 5;
    }
}

/// The packets rule 1 (kept by every set) counted.
fn kept_count(d: &DaemonProcess) -> u64 {
    d.json(&["rules", "counters"])["off"]["1"]["packets"]
        .as_u64()
        .unwrap_or(0)
}

/// Datagrams from A to B's port 7000 (rule 1, in every set), paced, until
/// [`Steady::finish`] says how many were sent and how many arrived.
struct Steady {
    stop: Arc<AtomicBool>,
    sender: std::thread::JoinHandle<u64>,
    receiver: std::thread::JoinHandle<u64>,
}

impl Steady {
    fn start(t: &Topology) -> Steady {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx, to) = (t.udp_in_a(), t.udp_in_b(7000), t.b_addr(7000));
        let s = stop.clone();
        let sender = std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                tx.send_to(&n.to_be_bytes(), to).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_micros(500));
            }
            n
        });
        let s = stop.clone();
        let receiver = std::thread::spawn(move || {
            let mut got = 0u64;
            let mut buf = [0u8; 64];
            loop {
                match rx.recv(&mut buf) {
                    Ok(_) => got += 1,
                    // The socket's timeout after the sender stopped: all in.
                    Err(_) if s.load(Ordering::Relaxed) => return got,
                    Err(_) => {}
                }
            }
        });
        Steady {
            stop,
            sender,
            receiver,
        }
    }

    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        (self.sender.join().unwrap(), self.receiver.join().unwrap())
    }
}

/// The store's generation, its rule count, and whether it holds set B
/// (rule 300000), read through `dse rules get`.
fn stored(d: &DaemonProcess) -> (u64, usize, bool) {
    let v = d.json(&["rules", "get"]);
    let rules = v["rules"]["rules"].as_array().unwrap();
    let has_b = rules.iter().any(|r| r["id"] == 300_000);
    (v["generation"].as_u64().unwrap(), rules.len(), has_b)
}

#[test]
fn sigkill_at_random_points_of_large_applies_keeps_the_datapath_equal_to_the_store() {
    if PinDir::new("killloop-probe").is_none() {
        return;
    }
    let rounds: u32 = std::env::var("DSE_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let n = 200_000;
    let t = Topology::new("rk", 85);
    let (dir, bpffs) = DaemonProcess::paths("rk");
    // Room for two generations of the set in the rule slots.
    let serve = |dir, bpffs| DaemonProcess::start_with(dir, bpffs, &["--xdp-max-rules", "524288"]);
    let mut d = serve(dir.clone(), bpffs);
    let (a, b) = ((10_000u32, 10_000u16), (300_000u32, 20_000u16));
    let sets = [
        write(&dir, "a.json", &rule_set(a.0, a.1, n, 1)),
        write(&dir, "b.json", &rule_set(b.0, b.1, n, 1)),
    ];
    let started = Instant::now();
    let out = d.cli(&["rules", "apply", "-f", &sets[0]]);
    assert!(out.status.success(), "{}", failure(&out).1);
    let apply_time = started.elapsed();
    attach(&d, &t);
    let steady = Steady::start(&t);
    // A linear congruential generator: random points, reproducible from
    // the seed printed.
    let mut seed = u64::from(std::process::id());
    eprintln!("kill points seeded with {seed}; an apply takes {apply_time:?}");
    let (mut generation_before, mut kept) = (1u64, kept_count(&d));
    for round in 0..rounds {
        let file = &sets[(round as usize + 1) % 2];
        let mut apply = d
            .command(&["rules", "apply", "-f", file])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let point = apply_time.mul_f64(1.2 * (seed >> 33) as f64 / (1u64 << 31) as f64);
        std::thread::sleep(point);
        let (dir, bpffs) = d.kill();
        let acked = apply.wait().unwrap().success();
        let applied_b = (round + 1) % 2 == 1;
        d = serve(dir, bpffs);
        let when = format!("round {round}, killed {point:?} into the apply");
        let (generation, count, has_b) = stored(&d);
        assert_eq!(
            count,
            n as usize + 1,
            "{when}: the store holds one whole set"
        );
        assert!(
            generation >= generation_before,
            "{when}: the generation went back"
        );
        if acked {
            assert_eq!(
                has_b, applied_b,
                "{when}: every acknowledged apply survived"
            );
        }
        generation_before = generation;
        let (listed, desired) = datapath(&d);
        assert_eq!(desired, generation, "{when}");
        assert_eq!(listed["generation"], generation, "{when}: {listed}");
        assert_eq!(listed["in_sync"], true, "{when}: {listed}");
        let (want, other) = if has_b { (b.1, a.1) } else { (a.1, b.1) };
        forwards_only(&t, want, other, 1 + (round % 500) as u16, &when);
        let now = kept_count(&d);
        assert!(
            now >= kept,
            "{when}: rule 1's counter went back from {kept} to {now}"
        );
        kept = now;
    }
    let (sent, received) = steady.finish();
    assert!(sent > 1000, "traffic ran throughout ({sent} sent)");
    assert_eq!(received, sent, "every datagram on the kept rule arrived");
}
