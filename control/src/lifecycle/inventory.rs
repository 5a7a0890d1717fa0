//! The inventory: clusters of hosts, each host with one or two DPUs.
//!
//! These are plain records, persisted in the store; the rules that a
//! cluster's hosts and DPUs must follow are in [`super::cluster_rules`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A dotted version, compared number by number (`8.0` < `8.0.3` < `8.1`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(Vec<u32>);

/// The longest version string, in bytes.
pub const MAX_VERSION: usize = 32;

/// A version string that is not dotted numbers, or is too long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} is not a version: write 1 to {MAX_VERSION} characters of numbers separated by dots, such as 8.0.3",
    dse_datapath::name::shown(.0)
)]
pub struct BadVersion(pub String);

impl Version {
    /// The version `parts` (such as `[8, 0]` for 8.0).
    pub fn new(parts: &[u32]) -> Version {
        Version(parts.to_vec())
    }
}

impl FromStr for Version {
    type Err = BadVersion;

    fn from_str(s: &str) -> Result<Version, BadVersion> {
        if s.len() > MAX_VERSION {
            return Err(BadVersion(s.to_string()));
        }
        let parts: Result<Vec<u32>, _> = s.split('.').map(str::parse).collect();
        match parts {
            Ok(p) if !p.is_empty() => Ok(Version(p)),
            _ => Err(BadVersion(s.to_string())),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Reads a version from a string, or from a whole number (YAML's `8` is
/// version "8"). A YAML decimal such as `24.10` is refused: as a number it
/// has lost its trailing zero.
impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Version;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a version such as \"8.0.3\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Version, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Version, E> {
                self.visit_str(&n.to_string())
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Version, E> {
                Err(E::custom(format!(
                    "the number {n} is not a version: quote it (\"{n}\"), since a number like 24.10 loses its trailing zero"
                )))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Who makes a DPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vendor {
    /// NVIDIA BlueField.
    NvidiaBluefield,
    /// AMD Pensando DSC.
    AmdPensando,
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Vendor::NvidiaBluefield => "NVIDIA BlueField",
            Vendor::AmdPensando => "AMD Pensando DSC",
        })
    }
}

/// A DPU: a NIC with its own cores, in a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dpu {
    /// Serial number, unique in the inventory.
    pub serial: String,
    /// Who makes it.
    pub vendor: Vendor,
    /// Its model, such as `BlueField-3` (must match across a cluster).
    pub model: String,
    /// Its generation within the model line (may differ in a cluster).
    pub generation: u32,
    /// Hardware revision.
    pub hardware_revision: String,
    /// Firmware version.
    pub firmware: Version,
    /// The DPU OS (ESXi-on-ARM) version.
    pub os: Version,
    /// The version of the datapath program it runs.
    pub datapath: Version,
}

/// A host and its DPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Its name, unique in the inventory.
    pub name: String,
    /// The host OS version.
    pub version: Version,
    /// Its DPUs: one or two.
    #[serde(default)]
    pub dpus: Vec<Dpu>,
    /// The uplink bond of a dual-DPU host: one member through each DPU,
    /// so that either DPU carries the host's traffic while the other
    /// reboots. Without one, a rebooting DPU's traffic goes to the host path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond: Option<Bond>,
}

/// A host's uplink bond (active-backup, see [`BondKind`]): one member
/// interface through each of its two DPUs. During a `--keep-offload`
/// remediation the agent makes the partner DPU's member the active one
/// before a DPU reboots, and moves it back once that DPU's datapath is
/// restored; the bond's gratuitous ARPs tell the wire where the host is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bond {
    /// The bond interface, such as `bond0`.
    pub name: String,
    /// What makes it active-backup.
    #[serde(default)]
    pub kind: BondKind,
    /// The network namespace (as `ip netns` names it) the bond is in; none:
    /// the agent's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// Each DPU's member interface, by DPU serial.
    pub members: BTreeMap<String, String>,
}

/// What makes a host's uplink active-backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BondKind {
    /// Linux bonding in mode `active-backup` (best with
    /// `all_slaves_active 1`, so that frames still on their way through
    /// the old member arrive).
    #[default]
    Bond,
    /// For kernels built without bonding: a Linux bridge whose member
    /// ports are all `isolated` (no frame crosses from one to another)
    /// and learn nothing, with a `tc` filter on the bridge's egress that
    /// redirects each of the host's own frames to the active member (a
    /// switch replaces the filter whole). The host sends through the active
    /// member only and takes in what comes through either. The agent
    /// sends the gratuitous ARP that bonding sends itself.
    Bridge,
}

impl Bond {
    /// The member of DPU `serial`.
    pub fn member(&self, serial: &str) -> Option<&str> {
        self.members.get(serial).map(String::as_str)
    }

    /// The other DPU's serial and member: the partner of DPU `serial`.
    pub fn partner(&self, serial: &str) -> Option<(&str, &str)> {
        self.members
            .iter()
            .find(|(s, _)| *s != serial)
            .map(|(s, m)| (s.as_str(), m.as_str()))
    }
}

/// The longest interface name Linux takes, in bytes.
pub const MAX_IFNAME: usize = 15;

impl Host {
    /// Checks the host's name and its DPUs' serials, models and hardware
    /// revisions against the one rule for names
    /// ([`dse_datapath::name::check`]). A serial repeated within the host
    /// is a cluster rule ([`super::RuleBroken::RepeatedSerial`]).
    ///
    /// # Errors
    /// The first field that breaks it, named by its path (`dpus[1].serial`).
    pub fn check_names(&self) -> Result<(), String> {
        use dse_datapath::name::check;
        check("host name", &self.name).map_err(|e| e.to_string())?;
        let host = &self.name;
        for (i, d) in self.dpus.iter().enumerate() {
            let fields = [
                ("serial", "DPU serial", &d.serial),
                ("model", "DPU model", &d.model),
                (
                    "hardware_revision",
                    "hardware revision",
                    &d.hardware_revision,
                ),
            ];
            for (field, what, value) in fields {
                check(what, value).map_err(|e| format!("host {host}: dpus[{i}].{field}: {e}"))?;
            }
        }
        if let Some(b) = &self.bond {
            let ifname = |field: &str, value: &str| {
                check("interface name", value)
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        if value.len() > MAX_IFNAME {
                            Err(format!(
                                "interface name {value:?} is {} bytes long; Linux takes at most {MAX_IFNAME}",
                                value.len()
                            ))
                        } else {
                            Ok(())
                        }
                    })
                    .map_err(|e| format!("host {host}: bond.{field}: {e}"))
            };
            ifname("name", &b.name)?;
            for (serial, member) in &b.members {
                ifname(&format!("members.{serial}"), member)?;
            }
            if let Some(ns) = &b.netns {
                check("network namespace", ns)
                    .map_err(|e| format!("host {host}: bond.netns: {e}"))?;
            }
        }
        Ok(())
    }
}

/// How a cluster's software is managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Management {
    /// By one desired image: what a DPU cluster must be.
    Image,
    /// By baselines (the older way): no DPU host may join.
    Baselines,
}

/// A cluster: hosts managed together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Its name, unique in the inventory.
    pub name: String,
    /// How its software is managed.
    pub management: Management,
    /// The version of the managing server (vCenter's equivalent).
    pub manager_version: Version,
    /// Its hosts.
    #[serde(default)]
    pub hosts: Vec<Host>,
    /// What it should run (`dse image set`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<super::DesiredImage>,
}

impl Cluster {
    /// Every DPU of the cluster with its host's name.
    pub fn dpus(&self) -> impl Iterator<Item = (&str, &Dpu)> {
        self.hosts
            .iter()
            .flat_map(|h| h.dpus.iter().map(move |d| (h.name.as_str(), d)))
    }
}
