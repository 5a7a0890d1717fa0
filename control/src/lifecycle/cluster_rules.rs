//! The rules a DPU cluster follows (DESIGN.md, "Lifecycle model"), checked
//! at pre-check and when a host is added, each broken rule its own error
//! that says what to do.

use super::inventory::{Cluster, Host, Management, Vendor, Version};

/// The oldest host and manager version a DPU cluster runs.
pub fn version_floor() -> Version {
    Version::new(&[8, 0])
}

/// A broken cluster rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleBroken {
    /// The cluster is managed by baselines.
    #[error(
        "cluster {cluster} is managed by baselines: a DPU cluster is managed by a single image only; convert the cluster to image management first"
    )]
    Baselines {
        /// The cluster.
        cluster: String,
    },
    /// A host has no DPU.
    #[error("host {host} has no DPU: every host of a DPU cluster has one or two DPUs")]
    NoDpu {
        /// The host.
        host: String,
    },
    /// A host has more than two DPUs.
    #[error("host {host} has {count} DPUs: a host has one or two")]
    TooManyDpus {
        /// The host.
        host: String,
        /// How many it has.
        count: usize,
    },
    /// A DPU's vendor or model differs from the rest of the cluster's.
    #[error(
        "DPU {serial} of host {host} is {vendor} {model}, but the cluster's DPUs are {expected_vendor} {expected_model}: every DPU of a cluster is of the same vendor and model (generations may differ)"
    )]
    MixedDpus {
        /// The host.
        host: String,
        /// The odd DPU's serial.
        serial: String,
        /// Its vendor.
        vendor: Vendor,
        /// Its model.
        model: String,
        /// The cluster's vendor.
        expected_vendor: Vendor,
        /// The cluster's model.
        expected_model: String,
    },
    /// The two DPUs of a host differ in firmware or hardware revision.
    #[error(
        "host {host}'s two DPUs differ in {what}: {first} on {first_serial}, {second} on {second_serial}; a dual-DPU host needs the same {what} on both"
    )]
    DualDpuMismatch {
        /// The host.
        host: String,
        /// `firmware` or `hardware revision`.
        what: &'static str,
        /// The first DPU's serial.
        first_serial: String,
        /// Its value.
        first: String,
        /// The second DPU's serial.
        second_serial: String,
        /// Its value.
        second: String,
    },
    /// A host or the manager is older than 8.0.
    #[error("{what} is at version {version}, below {floor}: upgrade it to {floor} or later first")]
    TooOld {
        /// What is old: `host NAME` or `the manager of cluster NAME`.
        what: String,
        /// Its version.
        version: Version,
        /// The floor.
        floor: Version,
    },
    /// A host or DPU of that name or serial is already in the inventory.
    #[error("{what} is already in cluster {cluster}: names and serials are unique")]
    Duplicate {
        /// `host NAME` or `DPU SERIAL`.
        what: String,
        /// Where it is.
        cluster: String,
    },
    /// A host's bond does not fit its DPUs.
    #[error("host {host}: bond: {problem}")]
    BadBond {
        /// The host.
        host: String,
        /// What does not fit, and what to do.
        problem: String,
    },
    /// Two DPUs of one host give the same serial.
    #[error(
        "host {host}: dpus[{second}].serial: DPU serial {serial} is also dpus[{first}]'s; each DPU has its own serial"
    )]
    RepeatedSerial {
        /// The host.
        host: String,
        /// The serial.
        serial: String,
        /// The first DPU that gives it, by index.
        first: usize,
        /// The other.
        second: usize,
    },
}

/// What is wrong with a host's bond, for [`RuleBroken::BadBond`].
fn bond_problem(host: &Host) -> Option<String> {
    let b = host.bond.as_ref()?;
    if host.dpus.len() != 2 {
        return Some(format!(
            "it has {} DPU(s), and a bond fails over between two; give a bond only to a dual-DPU host",
            host.dpus.len()
        ));
    }
    let serials: Vec<&str> = host.dpus.iter().map(|d| d.serial.as_str()).collect();
    let named: Vec<&str> = b.members.keys().map(String::as_str).collect();
    let mut want = serials.clone();
    want.sort_unstable();
    if named != want {
        return Some(format!(
            "its members are named for DPUs {named:?}, but its DPUs are {serials:?}: give one member for each DPU, by serial"
        ));
    }
    let ifaces: Vec<&String> = b.members.values().collect();
    if ifaces[0] == ifaces[1] || ifaces.contains(&&b.name) {
        return Some(format!(
            "bond {} and its members {ifaces:?} must be three different interfaces",
            b.name
        ));
    }
    None
}

/// Every rule `cluster` breaks, in the order of DESIGN.md's list (empty if
/// none).
pub fn check_cluster(cluster: &Cluster) -> Vec<RuleBroken> {
    let mut broken = Vec::new();
    if cluster.management == Management::Baselines && !cluster.hosts.is_empty() {
        broken.push(RuleBroken::Baselines {
            cluster: cluster.name.clone(),
        });
    }
    let first = cluster.dpus().next().map(|(_, d)| d);
    for host in &cluster.hosts {
        broken.extend(host_rules(host));
        if let Some(first) = first {
            for d in &host.dpus {
                if d.vendor != first.vendor || d.model != first.model {
                    broken.push(RuleBroken::MixedDpus {
                        host: host.name.clone(),
                        serial: d.serial.clone(),
                        vendor: d.vendor,
                        model: d.model.clone(),
                        expected_vendor: first.vendor,
                        expected_model: first.model.clone(),
                    });
                }
            }
        }
    }
    broken.extend(below_floor(
        || format!("the manager of cluster {}", cluster.name),
        &cluster.manager_version,
    ));
    broken
}

/// [`RuleBroken::TooOld`] if `version` is below [`version_floor`].
fn below_floor(what: impl FnOnce() -> String, version: &Version) -> Option<RuleBroken> {
    (*version < version_floor()).then(|| RuleBroken::TooOld {
        what: what(),
        version: version.clone(),
        floor: version_floor(),
    })
}

/// The rules of one host on its own: its DPU count, its two DPUs alike,
/// its version.
fn host_rules(host: &Host) -> Vec<RuleBroken> {
    let mut broken = Vec::new();
    match host.dpus.as_slice() {
        [] => broken.push(RuleBroken::NoDpu {
            host: host.name.clone(),
        }),
        [_] => {}
        [a, b] => {
            let pairs = [
                ("firmware", a.firmware.to_string(), b.firmware.to_string()),
                (
                    "hardware revision",
                    a.hardware_revision.clone(),
                    b.hardware_revision.clone(),
                ),
            ];
            for (what, first, second) in pairs {
                if first != second {
                    broken.push(RuleBroken::DualDpuMismatch {
                        host: host.name.clone(),
                        what,
                        first_serial: a.serial.clone(),
                        first,
                        second_serial: b.serial.clone(),
                        second,
                    });
                }
            }
        }
        more => broken.push(RuleBroken::TooManyDpus {
            host: host.name.clone(),
            count: more.len(),
        }),
    }
    if let Some(problem) = bond_problem(host) {
        broken.push(RuleBroken::BadBond {
            host: host.name.clone(),
            problem,
        });
    }
    broken.extend(below_floor(|| format!("host {}", host.name), &host.version));
    broken
}

/// Whether `host` may join `cluster`, given every cluster of the inventory
/// (`all`, which includes `cluster`) for unique names and serials: the
/// rules `cluster` would break with it that it does not break already.
pub fn check_join(cluster: &Cluster, host: &Host, all: &[Cluster]) -> Vec<RuleBroken> {
    let mut broken = Vec::new();
    for (second, d) in host.dpus.iter().enumerate() {
        if let Some(first) = host.dpus[..second]
            .iter()
            .position(|o| o.serial == d.serial)
        {
            broken.push(RuleBroken::RepeatedSerial {
                host: host.name.clone(),
                serial: d.serial.clone(),
                first,
                second,
            });
        }
    }
    for c in all {
        if c.hosts.iter().any(|h| h.name == host.name) {
            broken.push(RuleBroken::Duplicate {
                what: format!("host {}", host.name),
                cluster: c.name.clone(),
            });
        }
        for d in &host.dpus {
            if c.dpus().any(|(_, o)| o.serial == d.serial) {
                broken.push(RuleBroken::Duplicate {
                    what: format!("DPU {}", d.serial),
                    cluster: c.name.clone(),
                });
            }
        }
    }
    let before = check_cluster(cluster);
    let mut with = cluster.clone();
    with.hosts.push(host.clone());
    broken.extend(
        check_cluster(&with)
            .into_iter()
            .filter(|b| !before.contains(b)),
    );
    broken
}
