//! The demo's cluster in namespaces: host h1 with DPU S1 and VMs A and C,
//! host h2 with DPUs S2 and S3 behind a bond, where B and D run, and a
//! learning bridge between the hosts' uplinks, as a rack's switch.
//!
//! ```text
//!   VM A ──vm── S1 ──up──┐
//!   VM C ──vm2─ S1       ├── wire (learning bridge)
//!                        ├──up── S2 ──vm── m2 ┐
//!                        └──up── S3 ──vm── m3 ┴ h2's bond: B 10.79.1.2, D 10.79.2.2
//! ```
//!
//! h2's bond is active-backup (m2 active): while a DPU of h2 reboots in a
//! `--keep-offload` remediation, the control plane makes the partner's
//! member active and its gratuitous ARP moves h2 on the wire. This kernel
//! may lack bonding, so the bond is a bridge kept active-backup by a
//! redirect on its egress ([`BondKind::Bridge`]). Every DPU port is an interface of
//! the DPU namespace, where the control plane runs and attaches each
//! DPU's XDP datapath; dropping the cluster deletes every namespace and
//! with them every interface.

use crate::lab::{LabError, Netns, Veth};
use dse_control::lifecycle::{Bond, BondKind};
use std::collections::BTreeMap;

/// The hosts and their DPUs' serials.
pub const HOSTS: [(&str, &[&str]); 2] = [("h1", &["S1"]), ("h2", &["S2", "S3"])];

/// The VMs' addresses (A, B, C, D); B and D are h2's bond's.
pub const VM_ADDRS: [&str; 4] = ["10.79.1.1", "10.79.1.2", "10.79.2.1", "10.79.2.2"];

/// The service address A reaches B through (DNAT on S1).
pub const SERVICE_VIP: &str = "10.79.9.9";

/// h2's bond.
pub const BOND: &str = "uplink0";

/// h2's bond's MAC: the overlay's outer destination (the demo's rules
/// encapsulate to it), so the wire learns it from the bond's ARP.
pub const BOND_MAC: &str = "02:00:00:00:00:02";

/// The namespaces and links.
pub struct Cluster {
    /// Where every DPU port lives, and the control plane runs.
    pub dpu_ns: Netns,
    /// VMs A and C (h1), and h2, where B and D run.
    pub vms: Vec<Netns>,
    /// The links of A and C (`a` in the VM, `b` the DPU's port) and h2's
    /// members m2 and m3 (`a` in h2, `b` the port of S2, of S3).
    pub links: Vec<Veth>,
    /// The wire's namespace, with its bridge.
    pub wire: Netns,
    /// The DPUs' uplinks (S1, S2, S3): `a` the DPU's port, `b` the bridge's.
    pub uplinks: Vec<Veth>,
}

impl Cluster {
    /// Builds it; `tag` (up to 6 letters or digits) keeps names apart.
    ///
    /// # Errors
    /// [`LabError`] naming the step that failed; what was made is removed.
    pub fn build(tag: &str) -> Result<Cluster, LabError> {
        let dpu_ns = Netns::create(&format!("dsed-{tag}-dpus"))?;
        let wire = Netns::create(&format!("dsed-{tag}-wire"))?;
        let vms = vec![
            Netns::create(&format!("dsed-{tag}-vm-a"))?,
            Netns::create(&format!("dsed-{tag}-vm-c"))?,
            Netns::create(&format!("dsed-{tag}-h2"))?,
        ];
        let h2 = &vms[2];
        let links = vec![
            Veth::create("eth0", &vms[0], "vm-a", &dpu_ns)?,
            Veth::create("eth0", &vms[1], "vm-c", &dpu_ns)?,
            Veth::create("m2", h2, "h2-m2", &dpu_ns)?,
            Veth::create("m3", h2, "h2-m3", &dpu_ns)?,
        ];
        for (ns, addr) in [(&vms[0], VM_ADDRS[0]), (&vms[1], VM_ADDRS[2])] {
            ns.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
        }
        let bridge = ["type", "bridge", "stp_state", "0"];
        h2.exec(&[&["ip", "link", "add", BOND][..], &bridge[..]].concat())?;
        h2.exec(&["ip", "link", "set", BOND, "address", BOND_MAC])?;
        for m in ["m2", "m3"] {
            h2.exec(&["ip", "link", "set", m, "master", BOND])?;
        }
        for addr in [VM_ADDRS[1], VM_ADDRS[3]] {
            h2.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", BOND])?;
        }
        h2.sysctl(&format!("net.ipv6.conf.{BOND}.disable_ipv6"), "1")?;
        h2.exec(&["ip", "link", "set", BOND, "up"])?;
        h2.exec(&["ethtool", "-K", BOND, "tx", "off"])?;
        wire.exec(&[&["ip", "link", "add", "br0"][..], &bridge[..]].concat())?;
        wire.sysctl("net.ipv6.conf.br0.disable_ipv6", "1")?;
        wire.exec(&["ip", "link", "set", "br0", "up"])?;
        let mut uplinks = Vec::new();
        for serial in ["s1", "s2", "s3"] {
            let v = Veth::create(&format!("{serial}-up"), &dpu_ns, serial, &wire)?;
            wire.exec(&["ip", "link", "set", serial, "master", "br0"])?;
            // The bridge takes a frame's VLAN tag out of its bytes; put it
            // back in on the way out, or the next DPU's XDP program, which
            // sees only the bytes, would not see the tag.
            wire.exec(&["ethtool", "-K", serial, "txvlan", "off"])?;
            uplinks.push(v);
        }
        let cluster = Cluster {
            dpu_ns,
            vms,
            links,
            wire,
            uplinks,
        };
        cluster.neighbours()?;
        // As an operator would: the bond's active member, set the way the
        // control plane steers it.
        let bond = cluster.bond();
        dse_control::daemon::steer_bond(&bond, "m2").map_err(|e| LabError::Command {
            command: format!("making m2 the active member of {BOND}"),
            stderr: e.to_string(),
        })?;
        Ok(cluster)
    }

    /// Static neighbours: the DPUs forward IP and h2's ARP, nothing else.
    /// A reaches B and the service address, C reaches D, all at h2's MAC.
    fn neighbours(&self) -> Result<(), LabError> {
        let [a, c, _] = [&self.vms[0], &self.vms[1], &self.vms[2]];
        a.exec(&[
            "ip",
            "route",
            "add",
            &format!("{SERVICE_VIP}/32"),
            "dev",
            "eth0",
        ])?;
        for (vm, peer) in [(a, VM_ADDRS[1]), (a, SERVICE_VIP), (c, VM_ADDRS[3])] {
            vm.exec(&[
                "ip", "neigh", "add", peer, "lladdr", BOND_MAC, "dev", "eth0",
            ])?;
        }
        Ok(())
    }

    /// The namespace VM `i` (A, B, C, D) runs in: B and D run in h2.
    pub fn vm(&self, i: usize) -> &Netns {
        &self.vms[[0, 2, 1, 2][i]]
    }

    /// h2's bond, as its inventory names it.
    pub fn bond(&self) -> Bond {
        Bond {
            name: BOND.into(),
            kind: BondKind::Bridge,
            netns: Some(self.vms[2].name().to_string()),
            members: [("S2".into(), "m2".into()), ("S3".into(), "m3".into())].into(),
        }
    }

    /// Port -> interface of each DPU, by serial.
    pub fn interfaces(&self) -> BTreeMap<&'static str, BTreeMap<String, String>> {
        let m = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(p, i)| (p.to_string(), i.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let up = |i: usize| self.uplinks[i].a.as_str();
        [
            (
                "S1",
                m(&[
                    ("vm", &self.links[0].b),
                    ("vm2", &self.links[1].b),
                    ("up", up(0)),
                ]),
            ),
            ("S2", m(&[("vm", &self.links[2].b), ("up", up(1))])),
            ("S3", m(&[("vm", &self.links[3].b), ("up", up(2))])),
        ]
        .into()
    }
}
