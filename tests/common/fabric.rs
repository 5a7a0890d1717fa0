//! Two hosts' worth of namespaces joined through the lab's DPUs and a
//! learning bridge, as a rack's hosts are joined through a switch:
//!
//! ```text
//!   host h1: 10.79.1.1 ────────vm── S1 ──up──┐
//!                                              ├── br0 (wire namespace)
//!   host h2: uplink0 10.79.1.2 ┬ m2 ──vm── S2 ──up──┤
//!                              └ m3 ──vm── S3 ──up──┘
//! ```
//!
//! h2's uplink is an active-backup bond (m2 active) with a member through
//! each of its DPUs: a remediation that keeps the offload on moves it to
//! the partner DPU while a DPU reboots, and a gratuitous ARP tells the
//! wire's bridge where h2 now is. The bond takes in what comes through
//! its backup member too, so frames that were on their way through the
//! old DPU when it moved still arrive. This kernel has no bonding, so the
//! bond is a bridge made active-backup by a redirect on its egress
//! ([`BondKind::Bridge`]). Every DPU port is a root-namespace veth end;
//! the hosts and the wire are namespaces.

#![allow(dead_code)]

use super::netns::{Netns, Veth, in_ns};
pub use dse::demo::flows::{Delivery, Flow};
use dse_control::lifecycle::{Bond, BondKind};
use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};

/// The rules of the fabric: each DPU forwards the flows' datagrams (UDP to
/// port 7000) and ARP between its host port and its uplink, both ways.
/// Only those: the hosts' other chatter (IPv6 neighbour discovery, say)
/// must not reach a counter the tests compare with the datagrams sent.
pub const RULES: &str = r#"
ports: [{name: vm, index: 0}, {name: up, index: 1}]
rules:
  - {id: 1, priority: 10, match: {in_port: vm, ip_proto: udp, l4_dst: 7000}, actions: [{output: up}]}
  - {id: 2, priority: 10, match: {in_port: up, ip_proto: udp, l4_dst: 7000}, actions: [{output: vm}]}
  - {id: 3, priority: 5, match: {in_port: vm, eth_type: arp}, actions: [{output: up}]}
  - {id: 4, priority: 5, match: {in_port: up, eth_type: arp}, actions: [{output: vm}]}
  - {id: 9, priority: 1, match: {ip_proto: tcp}, actions: [drop]}
"#;

/// h2's uplink, the bond over its two DPUs.
pub const UPLINK: &str = "uplink0";

/// The hosts' addresses (h1, h2).
pub const ADDRS: [&str; 2] = ["10.79.1.1", "10.79.1.2"];

/// Turns IPv6 off on root-namespace interface `ifname`, so that it sends
/// nothing of its own (no link-local address, no neighbour discovery).
fn quiet(ifname: &str) {
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
        b"1",
    );
}

/// Turns IPv6 off in namespace `ns`, for the interfaces made after.
fn quiet_ns(ns: &Netns) {
    for scope in ["all", "default"] {
        in_ns(
            &ns.name,
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{scope}.disable_ipv6=1"),
            ],
        );
    }
}

/// The fabric's namespaces and veths.
pub struct Fabric {
    /// Host h1, host h2, the wire.
    pub ns: Vec<Netns>,
    /// h1's link (through S1), h2's members m2 (through S2) and m3
    /// (through S3).
    pub hosts: Vec<Veth>,
    /// The DPUs' uplinks to the bridge (S1, S2, S3).
    pub uplinks: Vec<Veth>,
}

impl Fabric {
    /// Builds it; `tag` (a few characters) keeps names apart.
    pub fn new(tag: &str) -> Fabric {
        let ns: Vec<Netns> = ["h1", "h2", "w"]
            .iter()
            .map(|n| Netns::new(&format!("dse-fab-{tag}-{n}")))
            .collect();
        for n in &ns {
            quiet_ns(n);
        }
        let run = |ns: &Netns, cmd: &[&str]| in_ns(&ns.name, cmd);
        let h1 = Veth::new(
            &format!("df{tag}a"),
            &format!("df{tag}ai"),
            &ns[0],
            &format!("{}/24", ADDRS[0]),
        );
        // Interfaces are made in the root namespace before they move, so
        // even the namespace ends' names carry the tag.
        let m2 = Veth::with(&format!("df{tag}m2"), &format!("df{tag}m2i"), &ns[1], None);
        let m3 = Veth::with(&format!("df{tag}m3"), &format!("df{tag}m3i"), &ns[1], None);
        // This kernel has no bonding (CONFIG_BONDING is not set): the
        // uplink is a bridge kept active-backup by a redirect on its egress, as
        // the product drives it (`BondKind::Bridge`).
        run(
            &ns[1],
            &[
                "ip",
                "link",
                "add",
                UPLINK,
                "type",
                "bridge",
                "stp_state",
                "0",
            ],
        );
        for m in [&m2.inner, &m3.inner] {
            run(&ns[1], &["ip", "link", "set", m, "master", UPLINK]);
        }
        let uplink_addr = format!("{}/24", ADDRS[1]);
        run(&ns[1], &["ip", "addr", "add", &uplink_addr, "dev", UPLINK]);
        run(&ns[1], &["ip", "link", "set", UPLINK, "up"]);
        // Full checksums in the frames, as on the members (see `Veth`).
        run(&ns[1], &["ethtool", "-K", UPLINK, "tx", "off"]);
        run(
            &ns[2],
            &[
                "ip",
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "stp_state",
                "0",
            ],
        );
        run(&ns[2], &["ip", "link", "set", "br0", "up"]);
        let uplinks: Vec<Veth> = ["1", "2", "3"]
            .iter()
            .map(|i| {
                let v = Veth::with(
                    &format!("df{tag}u{i}"),
                    &format!("df{tag}u{i}i"),
                    &ns[2],
                    None,
                );
                run(&ns[2], &["ip", "link", "set", &v.inner, "master", "br0"]);
                v
            })
            .collect();
        let hosts = vec![h1, m2, m3];
        for v in hosts.iter().chain(&uplinks) {
            quiet(&v.outer);
        }
        let fabric = Fabric { ns, hosts, uplinks };
        // As an operator would: the bond's members and its active one,
        // set the way the agent steers them.
        let bond = fabric.bond();
        dse_control::daemon::steer_bond(&bond, bond.member("S2").unwrap())
            .expect("the bond takes its first member");
        fabric
    }

    /// Port -> interface of each DPU of the lab (S1, S2, S3).
    pub fn interfaces(&self) -> Vec<BTreeMap<String, String>> {
        self.hosts
            .iter()
            .zip(&self.uplinks)
            .map(|(host, up)| {
                [
                    ("vm".to_string(), host.outer.clone()),
                    ("up".to_string(), up.outer.clone()),
                ]
                .into()
            })
            .collect()
    }

    /// h2's bond, as its inventory names it (its members are `df<tag>m2i`
    /// and `df<tag>m3i`, shown as m2 and m3 above).
    pub fn bond(&self) -> Bond {
        Bond {
            name: UPLINK.into(),
            kind: BondKind::Bridge,
            netns: Some(self.ns[1].name.clone()),
            members: [
                ("S2".into(), self.hosts[1].inner.clone()),
                ("S3".into(), self.hosts[2].inner.clone()),
            ]
            .into(),
        }
    }

    /// The active member of h2's bond, as the agent reads it.
    pub fn active_member(&self) -> String {
        dse_control::daemon::bond_active(&self.bond())
            .expect("the bond is read")
            .unwrap_or_default()
    }

    /// Starts a paced flow from host `from` (0: h1, 1: h2) to the other's
    /// UDP port 7000.
    pub fn flow(&self, from: usize, to: usize, pps: u64) -> Flow {
        let dst: SocketAddr = format!("{}:7000", ADDRS[to]).parse().unwrap();
        let src: SocketAddr = format!("{}:0", ADDRS[from]).parse().unwrap();
        let rx = self.ns[to].run(|| UdpSocket::bind(dst).expect("binds the receiver"));
        let tx = self.ns[from].run(|| UdpSocket::bind(src).expect("binds the sender"));
        Flow::from_sockets(tx, rx, dst, pps)
    }

    /// Flows h1->h2 and h2->h1, `pps` datagrams a second each.
    pub fn flows(&self, pps: u64) -> [Flow; 2] {
        [self.flow(0, 1, pps), self.flow(1, 0, pps)]
    }
}

/// Stops the fabric's two flows (h1->h2, h2->h1) half a second after now
/// and asserts that each sent and lost nothing.
pub fn assert_lossless(flows: [Flow; 2]) {
    std::thread::sleep(std::time::Duration::from_millis(500));
    for (f, name) in flows.into_iter().zip(["h1->h2", "h2->h1"]) {
        let d: Delivery = f.finish();
        eprintln!("{name}: {} sent, {} lost", d.sent, d.lost().len());
        assert!(d.sent > 0, "{name} sent");
        assert!(d.lost().is_empty(), "{name} lost {:?}", d.lost());
    }
}
