//! What the restart tests share: rule sets that forward distinct UDP
//! flows between the topology's two namespaces, checks that a datapath
//! forwards exactly one set, and steady traffic on a rule every set keeps.

#![allow(dead_code)]

use super::daemon::{DaemonProcess, failure};
use super::topology::{Topology, drain};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `n` exact rules from id `first` on UDP from A to B, each with
/// `actions`: rule `first + i` matches port `port + i % 1000`, and from
/// the 1000th on also a source address of its own (ports beyond 65535
/// would be refused). Flows to ports `port..port + 1000` from A's address
/// meet the first 1000.
pub fn exact_rules(first: u32, port: u16, n: u32, actions: &Value) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let mut r = json!({"id": first + i, "priority": 10,
                   "match": {"in_port": "pa", "ip_proto": "udp", "l4_dst": u32::from(port) + i % 1000},
                   "actions": actions});
            if i >= 1000 {
                r["match"]["ip_src"] = json!(format!(
                    "10.{}.{}.{}/32",
                    100 + (i >> 16),
                    (i >> 8) & 255,
                    i & 255
                ));
            }
            r
        })
        .collect()
}

/// A rule set over ports `pa` (misses drop) and `pb`: `n` exact rules
/// from id `first` that forward UDP to port `port + i` from A to B (see
/// [`exact_rules`]), and `kept` rules (ids 1..=kept, ports 7000..) that
/// every set shares.
pub fn rule_set(first: u32, port: u16, n: u32, kept: u16) -> String {
    let forward = json!([{"output": "pb"}]);
    let mut rules = exact_rules(1, 7000, u32::from(kept), &forward);
    rules.extend(exact_rules(first, port, n, &forward));
    json!({"ports": [{"name": "pa", "index": 0, "default": "drop"}, {"name": "pb", "index": 1}],
           "rules": rules})
    .to_string()
}

pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

pub fn attach(d: &DaemonProcess, t: &Topology) {
    let out = d.attach(t, "off", "xdp");
    assert!(out.status.success(), "attach: {}", failure(&out).1);
}

/// How many of `n` datagrams sent from A to each of `ports` on B arrive,
/// by port.
pub fn delivered(t: &Topology, ports: &[u16], n: usize) -> BTreeMap<u16, usize> {
    let socks: Vec<_> = ports.iter().map(|&p| (p, t.udp_in_b(p))).collect();
    let tx = t.udp_in_a();
    for &p in ports {
        for i in 0..n {
            tx.send_to(&(i as u64).to_be_bytes(), t.b_addr(p)).unwrap();
        }
    }
    // One wait for all: what is not in after 300 ms is not coming.
    std::thread::sleep(Duration::from_millis(300));
    socks
        .iter()
        .map(|(p, s)| {
            s.set_nonblocking(true).unwrap();
            (*p, drain(s).len())
        })
        .collect()
}

/// The datapath list's one entry, with the store's generation.
pub fn datapath(d: &DaemonProcess) -> (Value, u64) {
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
pub fn forwards_only(t: &Topology, want: u16, other: u16, fresh: u16, when: &str) {
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

/// The packets rule 1 (kept by every set) counted.
pub fn kept_count(d: &DaemonProcess) -> u64 {
    packets_of(d, &[1])[0]
}

/// The packets each of rules `ids` counted on datapath `off` (0 for a
/// rule it does not have).
pub fn packets_of(d: &DaemonProcess, ids: &[u32]) -> Vec<u64> {
    let counters = d.json(&["rules", "counters"]);
    ids.iter()
        .map(|id| {
            counters["off"][id.to_string()]["packets"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect()
}

/// Datagrams from A to B's port 7000 (rule 1, in every set), paced, until
/// [`Steady::finish`] says how many were sent and how many arrived.
pub struct Steady {
    stop: Arc<AtomicBool>,
    sender: std::thread::JoinHandle<u64>,
    receiver: std::thread::JoinHandle<u64>,
}

impl Steady {
    pub fn start(t: &Topology) -> Steady {
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

    pub fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        (self.sender.join().unwrap(), self.receiver.join().unwrap())
    }
}

/// How many kill rounds the kill loops run: `DSE_KILL_ROUNDS`, or 20.
pub fn kill_rounds() -> u32 {
    std::env::var("DSE_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// Random kill points, reproducible from the seed printed: a linear
/// congruential generator seeded with the test's pid.
pub struct KillPoints(u64);

impl KillPoints {
    pub fn new() -> KillPoints {
        let seed = u64::from(std::process::id());
        eprintln!("kill points seeded with {seed}");
        KillPoints(seed)
    }

    /// A point in the first 1.2 spans of `span` (some after it ends).
    pub fn next(&mut self, span: Duration) -> Duration {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        span.mul_f64(1.2 * (self.0 >> 33) as f64 / (1u64 << 31) as f64)
    }
}
