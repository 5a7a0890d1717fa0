//! The demo's cluster in namespaces: two hosts, h1 with DPU S1 and h2 with
//! DPUs S2 and S3, and four VMs.
//!
//! ```text
//!   VM A ──vm── S1 ──up─── wire 1 ───up── S2 ──vm── VM B      (h1 ↔ h2)
//!   VM C ──vm2─ S1 ──up2── wire 2 ──up2── S3 ──vm2─ VM D
//! ```
//!
//! Every DPU port is an interface of the DPU namespace, where the control
//! plane runs and attaches each DPU's XDP datapath; each VM is a namespace
//! of its own. Nothing is made in the root namespace, and dropping the
//! cluster deletes every namespace and with them every interface.

use crate::lab::{LabError, Netns, Veth, mac_of, mac_text};
use std::collections::BTreeMap;

/// The hosts and their DPUs' serials.
pub const HOSTS: [(&str, &[&str]); 2] = [("h1", &["S1"]), ("h2", &["S2", "S3"])];

/// The VMs' addresses (A, B, C, D).
pub const VM_ADDRS: [&str; 4] = ["10.79.1.1", "10.79.1.2", "10.79.2.1", "10.79.2.2"];

/// The service address A reaches B through (DNAT on S1).
pub const SERVICE_VIP: &str = "10.79.9.9";

/// The namespaces, VM links and wires.
pub struct Cluster {
    /// Where every DPU port lives, and the control plane runs.
    pub dpu_ns: Netns,
    /// VMs A, B, C, D.
    pub vms: Vec<Netns>,
    /// Each VM's link: `a` in the VM, `b` (the DPU's port) in `dpu_ns`.
    pub links: Vec<Veth>,
    /// The wires between h1's and h2's DPUs (both ends in `dpu_ns`).
    pub wires: Vec<Veth>,
    /// Each VM's MAC.
    pub macs: Vec<[u8; 6]>,
}

impl Cluster {
    /// Builds it; `tag` (up to 6 letters or digits) keeps names apart.
    ///
    /// # Errors
    /// [`LabError`] naming the step that failed; what was made is removed.
    pub fn build(tag: &str) -> Result<Cluster, LabError> {
        let dpu_ns = Netns::create(&format!("dsed-{tag}-dpus"))?;
        let mut vms = Vec::new();
        let mut links = Vec::new();
        let mut macs = Vec::new();
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            let ns = Netns::create(&format!("dsed-{tag}-vm-{name}"))?;
            let link = Veth::create("eth0", &ns, &format!("vm-{name}"), &dpu_ns)?;
            ns.exec(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", VM_ADDRS[i]),
                "dev",
                "eth0",
            ])?;
            macs.push(mac_of(&ns, "eth0")?);
            vms.push(ns);
            links.push(link);
        }
        let wires = vec![
            Veth::create("w1-h1", &dpu_ns, "w1-h2", &dpu_ns)?,
            Veth::create("w2-h1", &dpu_ns, "w2-h2", &dpu_ns)?,
        ];
        // Static neighbours: the DPUs forward IP, not ARP. A reaches the
        // service address through its link too.
        for (x, y) in [(0, 1), (1, 0), (2, 3), (3, 2)] {
            vms[x].exec(&[
                "ip",
                "neigh",
                "add",
                VM_ADDRS[y],
                "lladdr",
                &mac_text(macs[y]),
                "dev",
                "eth0",
            ])?;
        }
        vms[0].exec(&[
            "ip",
            "route",
            "add",
            &format!("{SERVICE_VIP}/32"),
            "dev",
            "eth0",
        ])?;
        vms[0].exec(&[
            "ip",
            "neigh",
            "add",
            SERVICE_VIP,
            "lladdr",
            &mac_text(macs[1]),
            "dev",
            "eth0",
        ])?;
        Ok(Cluster {
            dpu_ns,
            vms,
            links,
            wires,
            macs,
        })
    }

    /// Port -> interface of each DPU, by serial.
    pub fn interfaces(&self) -> BTreeMap<&'static str, BTreeMap<String, String>> {
        let m = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(p, i)| (p.to_string(), i.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        [
            (
                "S1",
                m(&[
                    ("vm", &self.links[0].b),
                    ("up", &self.wires[0].a),
                    ("vm2", &self.links[2].b),
                    ("up2", &self.wires[1].a),
                ]),
            ),
            (
                "S2",
                m(&[("vm", &self.links[1].b), ("up", &self.wires[0].b)]),
            ),
            (
                "S3",
                m(&[("vm2", &self.links[3].b), ("up2", &self.wires[1].b)]),
            ),
        ]
        .into()
    }
}
