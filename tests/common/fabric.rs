//! Two hosts' worth of namespaces joined through the lab's DPUs: VM
//! namespaces A and C on h1 (through S1), B on h2 through S2 and D on h2
//! through S3, and two wires (root-namespace veth pairs) between the
//! hosts' DPUs. Flows A->B and C->D cross two DPUs each.

#![allow(dead_code)]

use super::netns::{Netns, Veth, in_ns, mac_text};
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The rules of the fabric: each DPU forwards the flows' datagrams (UDP to
/// port 7000) between its VM port and its uplink, both ways. Only those:
/// the root namespace's own chatter on the wires (DHCP, say) must not
/// reach a counter the tests compare with the datagrams sent.
pub const RULES: &str = r#"
ports: [{name: vm, index: 0}, {name: up, index: 1}, {name: vm2, index: 2}, {name: up2, index: 3}]
rules:
  - {id: 1, priority: 10, match: {in_port: vm, ip_proto: udp, l4_dst: 7000}, actions: [{output: up}]}
  - {id: 2, priority: 10, match: {in_port: up, ip_proto: udp, l4_dst: 7000}, actions: [{output: vm}]}
  - {id: 3, priority: 10, match: {in_port: vm2, ip_proto: udp, l4_dst: 7000}, actions: [{output: up2}]}
  - {id: 4, priority: 10, match: {in_port: up2, ip_proto: udp, l4_dst: 7000}, actions: [{output: vm2}]}
  - {id: 9, priority: 1, match: {ip_proto: tcp}, actions: [drop]}
"#;

/// Turns IPv6 off on root-namespace interface `ifname`, so that it sends
/// nothing of its own (no link-local address, no neighbour discovery).
fn quiet(ifname: &str) {
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
        b"1",
    );
}

/// A veth pair with both ends in the root namespace: a wire between two
/// DPUs. Removed on drop.
pub struct Wire {
    pub a: String,
    pub b: String,
}

impl Wire {
    fn new(a: &str, b: &str) -> Wire {
        let _ = Command::new("ip").args(["link", "del", a]).output();
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("runs ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["link", "add", a, "type", "veth", "peer", "name", b]);
        for end in [a, b] {
            quiet(end);
            run(&["link", "set", end, "up"]);
            // A frame redirected into a veth whose peer runs no XDP program
            // (a DPU that failed over) is delivered only with NAPI on.
            let _ = Command::new("ethtool")
                .args(["-K", end, "gro", "on"])
                .output();
        }
        Wire {
            a: a.into(),
            b: b.into(),
        }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.a]).output();
    }
}

/// The fabric's namespaces, veths and wires.
pub struct Fabric {
    pub ns: Vec<Netns>,
    pub vms: Vec<Veth>,
    pub wires: Vec<Wire>,
    /// Address of each VM namespace (A, B, C, D).
    pub addrs: Vec<String>,
}

impl Fabric {
    /// Builds it; `tag` (a few characters) keeps names apart.
    pub fn new(tag: &str) -> Fabric {
        let names = ["a", "b", "c", "d"];
        let addrs: Vec<String> = ["10.79.1.1", "10.79.1.2", "10.79.2.1", "10.79.2.2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let ns: Vec<Netns> = names
            .iter()
            .map(|n| Netns::new(&format!("dse-fab-{tag}-{n}")))
            .collect();
        let vms: Vec<Veth> = names
            .iter()
            .zip(&ns)
            .zip(&addrs)
            .map(|((n, ns), addr)| {
                Veth::new(
                    &format!("df{tag}{n}"),
                    &format!("df{tag}{n}i"),
                    ns,
                    &format!("{addr}/24"),
                )
            })
            .collect();
        for v in &vms {
            quiet(&v.outer);
        }
        let wires = vec![
            Wire::new(&format!("df{tag}w1a"), &format!("df{tag}w1b")),
            Wire::new(&format!("df{tag}w2a"), &format!("df{tag}w2b")),
        ];
        // Static neighbours, end to end: the DPUs forward frames unchanged.
        for (x, y) in [(0, 1), (1, 0), (2, 3), (3, 2)] {
            in_ns(
                &ns[x].name,
                &[
                    "ip",
                    "neigh",
                    "add",
                    &addrs[y],
                    "lladdr",
                    &mac_text(vms[y].inner_mac),
                    "dev",
                    &vms[x].inner,
                ],
            );
        }
        Fabric {
            ns,
            vms,
            wires,
            addrs,
        }
    }

    /// Port -> interface of each DPU of the lab (S1, S2, S3).
    pub fn interfaces(&self) -> Vec<BTreeMap<String, String>> {
        let m = |pairs: &[(&str, &String)]| {
            pairs
                .iter()
                .map(|(p, i)| (p.to_string(), i.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        vec![
            m(&[
                ("vm", &self.vms[0].outer),
                ("up", &self.wires[0].a),
                ("vm2", &self.vms[2].outer),
                ("up2", &self.wires[1].a),
            ]),
            m(&[("vm", &self.vms[1].outer), ("up", &self.wires[0].b)]),
            m(&[("vm2", &self.vms[3].outer), ("up2", &self.wires[1].b)]),
        ]
    }

    /// Starts a paced flow from VM `from` to VM `to`'s UDP port 7000.
    pub fn flow(&self, from: usize, to: usize, pps: u64) -> Flow {
        let dst: SocketAddr = format!("{}:7000", self.addrs[to]).parse().unwrap();
        let src: SocketAddr = format!("{}:0", self.addrs[from]).parse().unwrap();
        let rx = self.ns[to].run(|| UdpSocket::bind(dst).expect("binds the receiver"));
        let tx = self.ns[from].run(|| UdpSocket::bind(src).expect("binds the sender"));
        Flow::start(tx, rx, dst, pps)
    }
}

/// A flow of numbered datagrams, each one's arrival recorded.
pub struct Flow {
    stop: Arc<AtomicBool>,
    started: Instant,
    pps: u64,
    tx: Option<std::thread::JoinHandle<u64>>,
    rx: Option<std::thread::JoinHandle<(Vec<Option<Duration>>, u64)>>,
    rx_stop: Arc<AtomicBool>,
}

/// What a flow delivered.
pub struct Delivery {
    /// Datagrams sent.
    pub sent: u64,
    /// Arrival time (since the start) of each datagram, by number.
    pub arrived: Vec<Option<Duration>>,
    /// Datagrams that arrived more than once.
    pub duplicates: u64,
    /// The sending rate, datagrams a second.
    pub pps: u64,
    /// When the flow started (wall clock, Unix ms).
    pub started_ms: u64,
}

impl Delivery {
    /// Numbers of the datagrams lost.
    pub fn lost(&self) -> Vec<u64> {
        (0..self.sent)
            .filter(|&i| self.arrived.get(i as usize).copied().flatten().is_none())
            .collect()
    }

    /// The longest time between two delivered datagrams.
    pub fn longest_gap(&self) -> Duration {
        let mut times: Vec<Duration> = self.arrived.iter().flatten().copied().collect();
        times.sort();
        times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }

    /// When datagram `i` was sent, Unix ms.
    pub fn sent_ms(&self, i: u64) -> u64 {
        self.started_ms + i * 1000 / self.pps
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl Flow {
    fn start(tx: UdpSocket, rx: UdpSocket, to: SocketAddr, pps: u64) -> Flow {
        super::stream::widen_receive_buffer(&rx);
        rx.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let rx_stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let rx_thread = {
            let stop = rx_stop.clone();
            std::thread::spawn(move || {
                let mut arrived: Vec<Option<Duration>> = Vec::new();
                let mut duplicates = 0;
                let mut buf = [0u8; 64];
                loop {
                    match rx.recv(&mut buf) {
                        Ok(n) if n >= 8 => {
                            let i = u64::from_be_bytes(buf[..8].try_into().unwrap()) as usize;
                            if arrived.len() <= i {
                                arrived.resize(i + 1, None);
                            }
                            if arrived[i].is_some() {
                                duplicates += 1;
                            }
                            arrived[i].get_or_insert(started.elapsed());
                        }
                        Ok(_) => {}
                        Err(_) if stop.load(Ordering::Acquire) => return (arrived, duplicates),
                        Err(_) => {}
                    }
                }
            })
        };
        let tx_thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i: u64 = 0;
                while !stop.load(Ordering::Acquire) {
                    let due = started + Duration::from_nanos(i * 1_000_000_000 / pps);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    tx.send_to(&i.to_be_bytes(), to).expect("sends");
                    i += 1;
                }
                i
            })
        };
        Flow {
            stop,
            started,
            pps,
            tx: Some(tx_thread),
            rx: Some(rx_thread),
            rx_stop,
        }
    }

    /// Stops sending, lets the last datagrams land, and says what arrived.
    pub fn finish(mut self) -> Delivery {
        let started_ms = now_ms() - self.started.elapsed().as_millis() as u64;
        self.stop.store(true, Ordering::Release);
        let sent = self.tx.take().unwrap().join().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        self.rx_stop.store(true, Ordering::Release);
        let (arrived, duplicates) = self.rx.take().unwrap().join().unwrap();
        Delivery {
            sent,
            arrived,
            duplicates,
            pps: self.pps,
            started_ms,
        }
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.rx_stop.store(true, Ordering::Release);
    }
}
