//! A lifecycle lab: a signed depot with a new image (base image 8.0.4,
//! firmware 24.2, the datapath version 2.0 as the real XDP object), a
//! cluster of two hosts (h1 with DPU S1, h2 with DPUs S2 and S3) whose
//! DPUs each run an XDP datapath on a veth of a namespace, and a daemon
//! over it all.

#![allow(dead_code)]

use super::bpf::PinDir;
use super::fabric::Fabric;
use super::netns::{Netns, Veth, in_ns, mac_of, mac_text};
use dse_control::daemon::{Daemon, DaemonConfig};
use dse_control::lifecycle::device::Emulation;
use dse_control::lifecycle::remediation::Remediation;
use dse_control::lifecycle::{Cluster, DesiredImage, Host};
use dse_control::store::{Backend, DatapathInstance};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The DPUs of the lab, by host.
pub const DPUS: [(&str, &str); 3] = [("h1", "S1"), ("h2", "S2"), ("h2", "S3")];

/// The lab's hosts, as `dse host add` takes them.
pub const HOSTS: [&str; 2] = [
    r#"
name: h1
version: 8.0.3
dpus:
  - {serial: S1, vendor: nvidia-bluefield, model: BlueField-3, generation: 3, hardware_revision: B1, firmware: "24.1", os: 8.0.3, datapath: "1.0"}
"#,
    r#"
name: h2
version: 8.0.3
dpus:
  - {serial: S2, vendor: nvidia-bluefield, model: BlueField-3, generation: 3, hardware_revision: B1, firmware: "24.1", os: 8.0.3, datapath: "1.0"}
  - {serial: S3, vendor: nvidia-bluefield, model: BlueField-3, generation: 3, hardware_revision: B1, firmware: "24.1", os: 8.0.3, datapath: "1.0"}
"#,
];

/// The rules every DPU runs: UDP to port 7000 hairpinned (rule 1).
pub const RULES: &str = r#"
ports: [{name: pa, index: 0}]
rules:
  - {id: 1, priority: 10, match: {ip_proto: udp, l4_dst: 7000}, actions: [tx]}
  - {id: 2, priority: 1, match: {ip_proto: tcp}, actions: [drop]}
"#;

/// An image of the lab's depot: base image `base`, firmware `firmware`,
/// datapath 2.0.
fn image(base: &str, firmware: &str) -> DesiredImage {
    serde_json::from_value(serde_json::json!({
        "base_image": {"name": "esxi", "version": base},
        "firmware_addon": {"name": "bluefield-fw", "version": firmware},
        "components": [{"name": "dse-datapath", "version": "2.0"}],
    }))
    .unwrap()
}

/// The image the lab remediates to: everything new.
pub fn new_image() -> DesiredImage {
    image("8.0.4", "24.2")
}

/// An image that changes only the datapath.
pub fn datapath_only_image() -> DesiredImage {
    image("8.0.3", "24.1")
}

/// The lab's files, namespaces and pins; all removed on drop.
pub struct Lab {
    pub dir: PathBuf,
    pub pins: PinDir,
    pub ns: Netns,
    pub veths: Vec<Veth>,
    /// Port -> interface of each DPU (S1, S2, S3).
    pub interfaces: Vec<BTreeMap<String, String>>,
    /// The rules every DPU runs.
    pub rules: String,
    /// The two-host fabric, when the lab has one.
    pub fabric: Option<Fabric>,
}

impl Lab {
    /// A lab whose DPUs join the namespaces of a [`Fabric`] across the two
    /// hosts, running its rules; `None` without root.
    pub fn with_fabric(tag: &str) -> Option<Lab> {
        let mut lab = Self::new(tag)?;
        let fabric = Fabric::new(tag);
        lab.interfaces = fabric.interfaces();
        lab.rules = super::fabric::RULES.to_string();
        lab.fabric = Some(fabric);
        Some(lab)
    }

    /// A fresh lab named `tag` (a few characters), each DPU on a veth of
    /// one namespace (port `pa`), or `None` without root.
    pub fn new(tag: &str) -> Option<Lab> {
        let pins = PinDir::new(&format!("lab-{tag}"))?;
        let dir = std::env::temp_dir().join(format!("dse-lab-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("depot")).unwrap();
        let ns = Netns::new(&format!("dse-lab-{tag}"));
        let veths: Vec<Veth> = DPUS
            .iter()
            .enumerate()
            .map(|(i, (_, serial))| {
                Veth::new(
                    &format!("dl{tag}{serial}"),
                    &format!("dl{tag}{serial}i"),
                    &ns,
                    &format!("10.78.{i}.1/24"),
                )
            })
            .collect();
        let interfaces = veths
            .iter()
            .map(|v| [("pa".to_string(), v.outer.clone())].into())
            .collect();
        let lab = Lab {
            dir,
            pins,
            ns,
            veths,
            interfaces,
            rules: RULES.to_string(),
            fabric: None,
        };
        lab.write_depot();
        Some(lab)
    }

    /// The daemon's configuration.
    pub fn config(&self) -> DaemonConfig {
        Self::config_at(&self.dir, &self.pins.0)
    }

    /// The daemon's configuration for the lab in `dir` pinning under
    /// `pins` (from another process of the test).
    pub fn config_at(dir: &Path, pins: &Path) -> DaemonConfig {
        dse::lab::control::daemon_config(dir, pins)
    }

    /// The depot (under `dir/depot`) and the key it is signed with (in
    /// `dir/trusted-keys`): the demo's.
    fn write_depot(&self) {
        dse::demo::depot::write(&self.dir).expect("the depot is written");
    }

    /// The lab's hosts: [`HOSTS`], h2 with the fabric's bond when the lab
    /// has a fabric.
    pub fn hosts(&self) -> Vec<Host> {
        HOSTS
            .iter()
            .map(|text| {
                let mut h: Host = serde_norway::from_str(text).unwrap();
                if h.name == "h2" {
                    h.bond = self.fabric.as_ref().map(Fabric::bond);
                }
                h
            })
            .collect()
    }

    /// Opens the daemon, imports the depot, makes the cluster, applies
    /// the rules and attaches each DPU's XDP datapath; DPUs boot in
    /// `boot_ms`.
    pub fn set_up(&self, boot_ms: u64) -> Arc<Daemon> {
        let d = Arc::new(Daemon::open(self.config()).expect("the daemon opens"));
        d.depot_import(&self.dir.join("depot"), "lab")
            .expect("the depot imports");
        let cluster: Cluster =
            serde_norway::from_str("{name: c1, management: image, manager_version: 8.0.3}")
                .unwrap();
        d.create_cluster(cluster, "lab")
            .expect("the cluster is made");
        for h in self.hosts() {
            d.add_host("c1", h, "lab").expect("the host joins");
        }
        d.apply(
            dse_datapath::RuleSet::from_yaml(&self.rules).unwrap(),
            None,
            false,
            "lab",
        )
        .expect("the rules apply");
        for ((_, serial), interfaces) in DPUS.iter().zip(&self.interfaces) {
            d.attach(
                DatapathInstance {
                    name: serial.to_string(),
                    backend: Backend::Xdp,
                    interfaces: interfaces.clone(),
                    object: None,
                },
                "lab",
            )
            .expect("the DPU's datapath attaches");
            d.emulate(
                serial,
                Emulation {
                    boot_ms,
                    watchdog_ms: boot_ms * 3,
                    faults: Default::default(),
                },
                "lab",
            )
            .expect("the DPU is emulated");
        }
        if let Some(f) = &self.fabric {
            // h2 tells the wire where it is, as a bond coming up does.
            dse_control::daemon::announce(&f.bond()).expect("h2's bond announces itself");
        }
        d
    }

    /// Sends `n` UDP datagrams to port 7000 into DPU `i`'s datapath (rule 1
    /// counts them); returns once they are sent.
    pub fn send(&self, i: usize, n: u64) {
        let peer = format!("10.78.{i}.2");
        let v = &self.veths[i];
        let _ = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns.name,
                "ip",
                "neigh",
                "replace",
                &peer,
                "lladdr",
            ])
            .arg(mac_text(mac_of(&v.outer)))
            .args(["dev", &v.inner])
            .output();
        let _ = in_ns;
        let from: std::net::SocketAddr = format!("10.78.{i}.1:0").parse().unwrap();
        let to: std::net::SocketAddr = format!("{peer}:7000").parse().unwrap();
        self.ns.run(|| {
            let s = std::net::UdpSocket::bind(from).expect("binds in the lab");
            for k in 0..n {
                s.send_to(&k.to_be_bytes(), to).expect("sends");
            }
        });
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Rule 1's packet count on each DPU's datapath, by serial.
    pub fn counted(d: &Daemon) -> Vec<(String, u64)> {
        let all = d.counters(None).expect("counters");
        DPUS.iter()
            .map(|(_, s)| {
                let n = all.get(*s).and_then(|c| c.get(&1)).map_or(0, |c| c.packets);
                (s.to_string(), n)
            })
            .collect()
    }

    /// Checks that every DPU datapath is resumed: a rule change applies to
    /// all of them.
    pub fn assert_resumed(d: &Daemon) {
        let (_, mut set) = d.rules();
        set.rules.push(
            dse_datapath::RuleSet::from_yaml(
                "ports: [{name: pa, index: 0}]\nrules:\n  - {id: 99, priority: 5, match: {ip_proto: udp, l4_dst: 9}, actions: [drop]}\n",
            )
            .unwrap()
            .rules
            .remove(0),
        );
        let applied = d
            .apply(set, None, false, "test")
            .expect("every datapath takes rule changes again");
        for (_, serial) in DPUS {
            assert!(
                applied.datapaths.contains_key(serial),
                "{serial} applied: {applied:?}"
            );
        }
    }

    /// Waits for remediation `id` to finish.
    pub fn wait(d: &Daemon, id: u64) -> Remediation {
        Self::wait_watching(d, id, || {})
    }

    /// Waits for remediation `id` to finish, calling `each` at every look.
    pub fn wait_watching(d: &Daemon, id: u64, mut each: impl FnMut()) -> Remediation {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            each();
            let r = d.remediation(id).expect("the remediation is journaled");
            if r.is_finished() {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "remediation {id} finishes: {r:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
