//! A cluster's desired image: a base image (host and DPU content), a
//! vendor add-on, a firmware add-on and components, each a version in the
//! depot. [`resolve`] turns it into what each host and DPU must run.

use super::depot::{DPU_SOLUTION, Imported, Kind, Target};
use super::inventory::{Cluster, Version};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The component whose payload is the DPU's XDP datapath object.
pub const DATAPATH_COMPONENT: &str = "dse-datapath";

/// One depot entry, by name and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pick {
    /// The manifest's name.
    pub name: String,
    /// Its version.
    pub version: Version,
}

impl std::fmt::Display for Pick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.version)
    }
}

/// What a cluster should run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredImage {
    /// The base image: the host's and the DPU OS's version.
    pub base_image: Pick,
    /// The vendor add-on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_addon: Option<Pick>,
    /// The firmware add-on: the DPU firmware's version (left as it is
    /// when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_addon: Option<Pick>,
    /// Components; [`DATAPATH_COMPONENT`] sets the datapath's version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<Pick>,
}

/// The datapath program an image ships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathPayload {
    /// Its version.
    pub version: Version,
    /// The XDP object file, in the daemon's depot.
    pub object: PathBuf,
}

/// What an image puts on each host and on each of its DPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The host OS version.
    pub host: Version,
    /// The DPU OS version.
    pub dpu_os: Version,
    /// The DPU firmware version, if the image sets one.
    pub firmware: Option<Version>,
    /// The datapath, if the image sets one.
    pub datapath: Option<DatapathPayload>,
    /// Every manifest the image takes, for staging.
    pub manifests: Vec<Imported>,
}

/// Why an image does not fit a cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// A pick is not in the depot.
    #[error(
        "{kind} {pick} is not in the depot: import it first (`dse depot import`), or pick a version `dse depot list` shows"
    )]
    NotInDepot {
        /// Its kind, as the depot names it.
        kind: &'static str,
        /// The pick.
        pick: Pick,
    },
    /// The base image has no content for the host or for the DPU.
    #[error(
        "base image {pick} has no content for the {missing}: a DPU cluster's base image must target both host and dpu"
    )]
    BaseNotForBoth {
        /// The pick.
        pick: Pick,
        /// `host` or `dpu`.
        missing: &'static str,
    },
    /// An add-on is made for other DPUs than one of the cluster's.
    #[error("{kind} {pick} is not made for DPU {serial} ({vendor} {model}) on host {host}")]
    DoesNotFit {
        /// Its kind.
        kind: &'static str,
        /// The pick.
        pick: Pick,
        /// The host.
        host: String,
        /// The DPU.
        serial: String,
        /// Its vendor.
        vendor: super::Vendor,
        /// Its model.
        model: String,
    },
    /// A DPU component added by another solution than NSX.
    #[error(
        "component {pick} targets the DPU but comes from solution {solution:?}: only {DPU_SOLUTION} may add components to the DPU"
    )]
    NotNsx {
        /// The pick.
        pick: Pick,
        /// Its solution.
        solution: Option<String>,
    },
    /// Two versions of one component.
    #[error("component {0} is picked twice: pick one version")]
    TwiceComponent(String),
    /// The datapath component does not ship exactly one XDP object.
    #[error("component {pick} must ship exactly one file, the XDP object; it ships {files}")]
    DatapathFiles {
        /// The pick.
        pick: Pick,
        /// How many it ships.
        files: usize,
    },
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BaseImage => "base image",
        Kind::VendorAddon => "vendor add-on",
        Kind::FirmwareAddon => "firmware add-on",
        Kind::Component => "component",
    }
}

fn find<'a>(
    depot: &'a [Imported],
    kind: Kind,
    pick: &Pick,
    broken: &mut Vec<ImageError>,
) -> Option<&'a Imported> {
    let found = depot.iter().find(|i| {
        i.manifest.kind == kind
            && i.manifest.name == pick.name
            && i.manifest.version == pick.version
    });
    if found.is_none() {
        broken.push(ImageError::NotInDepot {
            kind: kind_name(kind),
            pick: pick.clone(),
        });
    }
    found
}

/// Checks that a DPU add-on fits every DPU of `cluster`.
fn check_fit(cluster: &Cluster, i: &Imported, pick: &Pick, broken: &mut Vec<ImageError>) {
    for (host, d) in cluster.dpus() {
        if !i.manifest.fits(d.vendor, &d.model) {
            broken.push(ImageError::DoesNotFit {
                kind: kind_name(i.manifest.kind),
                pick: pick.clone(),
                host: host.to_string(),
                serial: d.serial.clone(),
                vendor: d.vendor,
                model: d.model.clone(),
            });
        }
    }
}

/// What `image` puts on `cluster`'s hosts and DPUs, from `depot`.
///
/// # Errors
/// Every [`ImageError`] found, not only the first.
pub fn resolve(
    image: &DesiredImage,
    cluster: &Cluster,
    depot: &[Imported],
) -> Result<Resolved, Vec<ImageError>> {
    let mut broken = Vec::new();
    let mut manifests = Vec::new();
    let base = find(depot, Kind::BaseImage, &image.base_image, &mut broken);
    if let Some(b) = base {
        for (target, missing) in [(Target::Host, "host"), (Target::Dpu, "dpu")] {
            if !b.manifest.targets.contains(&target) {
                broken.push(ImageError::BaseNotForBoth {
                    pick: image.base_image.clone(),
                    missing,
                });
            }
        }
        manifests.push(b.clone());
    }
    for (kind, pick) in [
        (Kind::VendorAddon, &image.vendor_addon),
        (Kind::FirmwareAddon, &image.firmware_addon),
    ] {
        if let Some(pick) = pick
            && let Some(i) = find(depot, kind, pick, &mut broken)
        {
            check_fit(cluster, i, pick, &mut broken);
            manifests.push(i.clone());
        }
    }
    let mut datapath = None;
    for (n, pick) in image.components.iter().enumerate() {
        if image.components[..n].iter().any(|p| p.name == pick.name) {
            broken.push(ImageError::TwiceComponent(pick.name.clone()));
            continue;
        }
        let Some(i) = find(depot, Kind::Component, pick, &mut broken) else {
            continue;
        };
        let m = &i.manifest;
        if m.targets.contains(&Target::Dpu) && m.solution.as_deref() != Some(DPU_SOLUTION) {
            broken.push(ImageError::NotNsx {
                pick: pick.clone(),
                solution: m.solution.clone(),
            });
        }
        if pick.name == DATAPATH_COMPONENT {
            match m.payloads.as_slice() {
                [one] => {
                    datapath = Some(DatapathPayload {
                        version: pick.version.clone(),
                        object: i.dir.join(&one.file),
                    })
                }
                files => broken.push(ImageError::DatapathFiles {
                    pick: pick.clone(),
                    files: files.len(),
                }),
            }
        }
        manifests.push(i.clone());
    }
    if !broken.is_empty() {
        return Err(broken);
    }
    Ok(Resolved {
        host: image.base_image.version.clone(),
        dpu_os: image.base_image.version.clone(),
        firmware: image.firmware_addon.as_ref().map(|p| p.version.clone()),
        datapath,
        manifests,
    })
}
