//! The inventory: clusters of hosts, each host with one or two DPUs.
//!
//! These are plain records, persisted in the store; the rules that a
//! cluster's hosts and DPUs must follow are in [`super::cluster_rules`].

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A dotted version, compared number by number (`8.0` < `8.0.3` < `8.1`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(Vec<u32>);

/// A version string that is not dotted numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a version: write numbers separated by dots, such as 8.0.3")]
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

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
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
