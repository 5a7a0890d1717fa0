//! Compliance: how far each host and DPU is from its cluster's image, and
//! what bringing it there costs. Pure: what each DPU runs comes in, read
//! from its device on one machine or from its agent's report on a fleet.

use super::cluster_rules::check_cluster;
use super::device::{DeviceError, DeviceState};
use super::image::Resolved;
use super::inventory::{Cluster, Host, Version};
use serde::{Deserialize, Serialize};

/// How a host or DPU stands against the image, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It runs the image.
    Compliant,
    /// It does not, and remediation will bring it there.
    NonCompliant,
    /// Its state cannot be read now (unreachable, booting).
    Unavailable,
    /// Remediation cannot bring it there (a downgrade, a misfit).
    Incompatible,
}

/// What remediating it costs, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Impact {
    /// Nothing to do.
    None,
    /// Maintenance mode, no reboot (a hitless datapath swap).
    Maintenance,
    /// A reboot (host OS, DPU OS or firmware).
    Reboot,
}

/// One version that changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// `host`, `firmware`, `os` or `datapath`.
    pub what: String,
    /// What runs now.
    pub from: Version,
    /// What the image wants.
    pub to: Version,
}

/// A DPU against the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpuCompliance {
    /// Its serial.
    pub serial: String,
    /// How it stands.
    pub status: Status,
    /// What remediating it costs.
    pub impact: Impact,
    /// What changes.
    pub changes: Vec<Change>,
    /// Why it is unavailable or incompatible.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A host and its DPUs, merged, against the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCompliance {
    /// Its name.
    pub host: String,
    /// The worst of the host's own status and its DPUs'.
    pub status: Status,
    /// The largest impact of the host and its DPUs.
    pub impact: Impact,
    /// What changes on the host itself.
    pub changes: Vec<Change>,
    /// Why the host itself is incompatible.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its DPUs.
    pub dpus: Vec<DpuCompliance>,
}

/// A cluster against its image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterCompliance {
    /// Its name.
    pub cluster: String,
    /// The worst host status.
    pub status: Status,
    /// Its hosts.
    pub hosts: Vec<HostCompliance>,
}

/// Adds `what` to `changes` if `to` differs from `from`; a downgrade is
/// returned as the reason it cannot be done.
fn compare(what: &str, from: &Version, to: &Version, changes: &mut Vec<Change>) -> Option<String> {
    if to < from {
        return Some(format!(
            "{what} {from} is newer than the image's {to}: downgrades are not supported"
        ));
    }
    if to != from {
        changes.push(Change {
            what: what.to_string(),
            from: from.clone(),
            to: to.clone(),
        });
    }
    None
}

/// What compliance reads of a DPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// It is up and runs these.
    Up {
        /// The firmware of the slot it runs from.
        firmware: Version,
        /// Its DPU OS.
        os: Version,
        /// Its datapath.
        datapath: Version,
    },
    /// What it runs cannot be read now; the reason.
    Unavailable(String),
}

impl Seen {
    /// What a device's state (or its error) shows.
    pub fn device(serial: &str, state: Result<DeviceState, DeviceError>) -> Seen {
        match state {
            Ok(s) if s.is_up() => Seen::Up {
                firmware: s.firmware().clone(),
                os: s.os().clone(),
                datapath: s.datapath.clone(),
            },
            Ok(_) => Seen::Unavailable(format!("DPU {serial} is booting")),
            Err(e) => Seen::Unavailable(e.to_string()),
        }
    }
}

fn dpu(serial: &str, image: &Resolved, seen: Seen) -> DpuCompliance {
    let mut c = DpuCompliance {
        serial: serial.to_string(),
        status: Status::Unavailable,
        impact: Impact::None,
        changes: Vec::new(),
        reason: None,
    };
    let (firmware, os, datapath) = match seen {
        Seen::Up {
            firmware,
            os,
            datapath,
        } => (firmware, os, datapath),
        Seen::Unavailable(why) => {
            c.reason = Some(why);
            return c;
        }
    };
    let mut downgrades = Vec::new();
    if let Some(fw) = &image.firmware {
        downgrades.extend(compare("firmware", &firmware, fw, &mut c.changes));
    }
    downgrades.extend(compare("os", &os, &image.dpu_os, &mut c.changes));
    if let Some(dp) = &image.datapath {
        downgrades.extend(compare("datapath", &datapath, &dp.version, &mut c.changes));
    }
    if !downgrades.is_empty() {
        c.status = Status::Incompatible;
        c.reason = Some(downgrades.join("; "));
        return c;
    }
    c.impact = if c.changes.iter().any(|ch| ch.what != "datapath") {
        Impact::Reboot
    } else if c.changes.is_empty() {
        Impact::None
    } else {
        Impact::Maintenance
    };
    c.status = if c.changes.is_empty() {
        Status::Compliant
    } else {
        Status::NonCompliant
    };
    c
}

/// How `host` stands against `image`, what its DPUs run read by `device`.
pub fn host(host: &Host, image: &Resolved, device: &dyn Fn(&str) -> Seen) -> HostCompliance {
    let mut changes = Vec::new();
    let reason = compare("host", &host.version, &image.host, &mut changes);
    let dpus: Vec<DpuCompliance> = host
        .dpus
        .iter()
        .map(|d| dpu(&d.serial, image, device(&d.serial)))
        .collect();
    let own = match (&reason, changes.is_empty()) {
        (Some(_), _) => Status::Incompatible,
        (None, true) => Status::Compliant,
        (None, false) => Status::NonCompliant,
    };
    let own_impact = if changes.is_empty() {
        Impact::None
    } else {
        Impact::Reboot
    };
    HostCompliance {
        host: host.name.clone(),
        status: dpus.iter().map(|d| d.status).fold(own, Ord::max),
        impact: dpus.iter().map(|d| d.impact).fold(own_impact, Ord::max),
        changes,
        reason,
        dpus,
    }
}

/// How every host of `cluster` stands against `image`.
pub fn cluster(
    cluster: &Cluster,
    image: &Resolved,
    device: &dyn Fn(&str) -> Seen,
) -> ClusterCompliance {
    let hosts: Vec<HostCompliance> = cluster
        .hosts
        .iter()
        .map(|h| host(h, image, device))
        .collect();
    ClusterCompliance {
        cluster: cluster.name.clone(),
        status: hosts
            .iter()
            .map(|h| h.status)
            .fold(Status::Compliant, Ord::max),
        hosts,
    }
}

/// What a pre-check found.
#[derive(Debug, Clone, Serialize)]
pub struct Precheck {
    /// The cluster.
    pub cluster: String,
    /// Whether remediation can go ahead.
    pub ok: bool,
    /// Each problem, with what to do.
    pub problems: Vec<String>,
    /// The compliance it was checked against.
    pub compliance: ClusterCompliance,
}

impl Precheck {
    /// The pre-check of `cluster`: its cluster rules, each host and DPU
    /// that `compliance` finds unavailable or incompatible, then the
    /// problems the caller found `elsewhere` (the datapath's object, a
    /// remediation under way).
    pub fn of(
        cluster: &Cluster,
        compliance: ClusterCompliance,
        elsewhere: Vec<String>,
    ) -> Precheck {
        let mut problems: Vec<String> = check_cluster(cluster)
            .iter()
            .map(ToString::to_string)
            .collect();
        for h in &compliance.hosts {
            for reason in h.reason.iter() {
                problems.push(format!("host {}: {reason}", h.host));
            }
            for d in h.dpus.iter().filter(|d| d.status >= Status::Unavailable) {
                problems.push(format!(
                    "host {}, DPU {}: {:?}: {}",
                    h.host,
                    d.serial,
                    d.status,
                    d.reason.as_deref().unwrap_or("")
                ));
            }
        }
        problems.extend(elsewhere);
        Precheck {
            cluster: cluster.name.clone(),
            ok: problems.is_empty(),
            problems,
            compliance,
        }
    }
}
