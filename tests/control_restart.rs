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
    let pa = format!("pa={}", t.va.outer);
    let pb = format!("pb={}", t.vb.outer);
    let out = d.cli(&[
        "datapath",
        "attach",
        "off",
        "--backend",
        "xdp",
        "--port",
        &pa,
        "--port",
        &pb,
    ]);
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
/// `want` and none of `other`'s, on ports sent to before and fresh ones.
fn forwards_only(t: &Topology, want: u16, other: u16, fresh: u16, when: &str) {
    let ports = [want, want + fresh, other, other + fresh];
    let got = delivered(t, &ports, 5);
    assert_eq!(got[&want], 5, "{when}: a flow of the desired set: {got:?}");
    assert_eq!(
        got[&(want + fresh)],
        5,
        "{when}: a fresh flow of the desired set: {got:?}"
    );
    assert_eq!(
        got[&other], 0,
        "{when}: a flow only the replaced set matched: {got:?}"
    );
    assert_eq!(
        got[&(other + fresh)],
        0,
        "{when}: a fresh flow of the replaced set: {got:?}"
    );
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
    let kept_before = d.json(&["rules", "counters"])["off"]["1"]["packets"]
        .as_u64()
        .unwrap_or(0);
    for restart in 0..10u16 {
        let (dir, bpffs) = if restart % 2 == 0 {
            d.terminate()
        } else {
            d.kill()
        };
        d = DaemonProcess::start(dir, bpffs);
        let how = if restart % 2 == 0 {
            "SIGTERM"
        } else {
            "SIGKILL"
        };
        let when = format!("after restart {restart} ({how})");
        let (listed, generation) = datapath(&d);
        assert_eq!(listed["state"], "running", "{when}: {listed}");
        assert_eq!(listed["generation"], generation, "{when}: {listed}");
        assert_eq!(listed["in_sync"], true, "{when}: {listed}");
        // Flows never sent before, too: ports 100 + restart up.
        forwards_only(&t, r1.1, r2.1, 100 + restart, &when);
        let kept = d.json(&["rules", "counters"])["off"]["1"]["packets"]
            .as_u64()
            .unwrap();
        assert!(
            kept >= kept_before,
            "{when}: the kept rule's counter went back"
        );
    }
}
