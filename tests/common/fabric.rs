//! Two hosts' worth of namespaces joined through the lab's DPUs: VM
//! namespaces A and C on h1 (through S1), B on h2 through S2 and D on h2
//! through S3, and two wires (root-namespace veth pairs) between the
//! hosts' DPUs. Flows A->B and C->D cross two DPUs each.

#![allow(dead_code)]

use super::netns::{Netns, Veth, in_ns, mac_text};
pub use dse::demo::flows::{Delivery, Flow};
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;

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
        Flow::from_sockets(tx, rx, dst, pps)
    }
}

/// Stops the fabric's two flows (A->B, C->D) half a second after now and
/// asserts that each sent and lost nothing.
pub fn assert_lossless(flows: [Flow; 2]) {
    std::thread::sleep(std::time::Duration::from_millis(500));
    for (f, name) in flows.into_iter().zip(["A->B", "C->D"]) {
        let d: Delivery = f.finish();
        eprintln!("{name}: {} sent, {} lost", d.sent, d.lost().len());
        assert!(d.sent > 0, "{name} sent");
        assert!(d.lost().is_empty(), "{name} lost {:?}", d.lost());
    }
}
