//! The lifecycle manager: the inventory of clusters, hosts and
//! their DPUs, and the cluster rules they follow. Images, the depot,
//! compliance and remediation build on these.

pub mod cluster_rules;
pub mod compliance;
pub mod depot;
pub mod device;
pub mod engine;
pub mod image;
pub mod inventory;
pub mod ordering;
pub mod remediation;

pub use cluster_rules::{RuleBroken, check_cluster, check_join};
pub use image::{DesiredImage, ImageError, Pick, Resolved};
pub use inventory::{BadVersion, Bond, BondKind, Cluster, Dpu, Host, Management, Vendor, Version};

use crate::store::{Store, StoreError};

/// Why an inventory change was refused.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// No cluster has this name.
    #[error("no cluster named {0}: create it first (`dse cluster create`)")]
    NoCluster(String),
    /// A cluster of this name exists already.
    #[error("a cluster named {0} exists already: pick another name")]
    ClusterExists(String),
    /// A name or value is malformed: the field and what is allowed.
    #[error("{0}")]
    Invalid(String),
    /// The change would break cluster rules: each is listed.
    #[error("{}", list(.0))]
    Rules(Vec<RuleBroken>),
    /// The image does not fit the cluster or the depot: each reason is listed.
    #[error("{}", list(.0))]
    Image(Vec<ImageError>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a cluster is not ready for lifecycle work: missing, or without
/// a desired image.
#[derive(Debug, thiserror::Error)]
pub enum Unready {
    /// No such cluster.
    #[error("no cluster named {0}: create it first (dse cluster create)")]
    NoCluster(String),
    /// The cluster has no image.
    #[error("cluster {0} has no desired image: set one first (dse image set)")]
    NoImage(String),
}

impl Unready {
    /// Cluster `name` of `clusters`.
    ///
    /// # Errors
    /// [`Unready::NoCluster`].
    pub fn cluster(clusters: Vec<Cluster>, name: &str) -> Result<Cluster, Unready> {
        clusters
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Unready::NoCluster(name.to_string()))
    }

    /// Cluster `name` of `clusters` and its desired image.
    ///
    /// # Errors
    /// [`Unready::NoCluster`] or [`Unready::NoImage`].
    pub fn check(clusters: Vec<Cluster>, name: &str) -> Result<(Cluster, DesiredImage), Unready> {
        let c = Unready::cluster(clusters, name)?;
        match c.image.clone() {
            Some(image) => Ok((c, image)),
            None => Err(Unready::NoImage(name.to_string())),
        }
    }
}

/// The errors, one after another.
pub(crate) fn list<E: std::fmt::Display>(errors: &[E]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Adds `cluster` (with any hosts it already lists, which must follow the
/// cluster rules), by `who`.
///
/// # Errors
/// [`InventoryError::ClusterExists`]; [`InventoryError::Rules`] with every
/// rule it breaks (host names and DPU serials are unique across clusters);
/// [`InventoryError::Store`]. Nothing changes on an error.
pub fn create_cluster(store: &Store, cluster: Cluster, who: &str) -> Result<(), InventoryError> {
    let what = format!(
        "create cluster {}",
        dse_datapath::name::shown(&cluster.name)
    );
    check_new_cluster(&cluster)?;
    store.update_clusters(who, &what, |all| insert_cluster(all, cluster))
}

/// Checks the names of a cluster about to be created and its hosts'.
///
/// # Errors
/// [`InventoryError::Invalid`] naming the first bad name.
pub fn check_new_cluster(cluster: &Cluster) -> Result<(), InventoryError> {
    dse_datapath::name::check("cluster name", &cluster.name)
        .map_err(|e| InventoryError::Invalid(e.to_string()))?;
    for (i, h) in cluster.hosts.iter().enumerate() {
        h.check_names()
            .map_err(|e| InventoryError::Invalid(format!("hosts[{i}]: {e}")))?;
    }
    Ok(())
}

/// Adds `cluster` to the inventory `all`, wherever the inventory is kept
/// (the daemon's store, or etcd): the cluster rules decide.
///
/// # Errors
/// [`InventoryError::ClusterExists`]; [`InventoryError::Rules`]. `all` is
/// unchanged on an error.
pub fn insert_cluster(all: &mut Vec<Cluster>, cluster: Cluster) -> Result<(), InventoryError> {
    if all.iter().any(|c| c.name == cluster.name) {
        return Err(InventoryError::ClusterExists(cluster.name.clone()));
    }
    let mut empty = cluster.clone();
    empty.hosts.clear();
    let mut broken = check_cluster(&empty);
    let mut growing = empty;
    let mut others = all.clone();
    others.push(growing.clone());
    for h in &cluster.hosts {
        broken.extend(check_join(&growing, h, &others));
        growing.hosts.push(h.clone());
        *others.last_mut().expect("just pushed") = growing.clone();
    }
    if !broken.is_empty() {
        return Err(InventoryError::Rules(broken));
    }
    all.push(cluster);
    Ok(())
}

/// Adds `host` to cluster `cluster`, by `who`, if the cluster rules hold
/// with it.
///
/// # Errors
/// [`InventoryError::NoCluster`]; [`InventoryError::Rules`] with every
/// rule the host would break; [`InventoryError::Store`]. Nothing changes
/// on an error.
pub fn add_host(store: &Store, cluster: &str, host: Host, who: &str) -> Result<(), InventoryError> {
    let what = format!(
        "add host {} to cluster {}",
        dse_datapath::name::shown(&host.name),
        dse_datapath::name::shown(cluster)
    );
    host.check_names().map_err(InventoryError::Invalid)?;
    store.update_clusters(who, &what, |all| insert_host(all, cluster, host))
}

/// Adds `host` to cluster `cluster` of the inventory `all` (kept anywhere),
/// if the cluster rules hold with it.
///
/// # Errors
/// [`InventoryError::NoCluster`]; [`InventoryError::Rules`]. `all` is
/// unchanged on an error.
pub fn insert_host(all: &mut [Cluster], cluster: &str, host: Host) -> Result<(), InventoryError> {
    let c = all
        .iter()
        .find(|c| c.name == cluster)
        .ok_or_else(|| InventoryError::NoCluster(cluster.to_string()))?;
    let broken = check_join(c, &host, all);
    if !broken.is_empty() {
        return Err(InventoryError::Rules(broken));
    }
    let c = all
        .iter_mut()
        .find(|c| c.name == cluster)
        .expect("found above");
    c.hosts.push(host);
    Ok(())
}

/// Makes `image` the desired image of cluster `cluster`, by `who`, if
/// every part of it is in the depot and fits the cluster's DPUs.
///
/// # Errors
/// [`InventoryError::NoCluster`]; [`InventoryError::Image`] with every
/// reason the image does not fit; [`InventoryError::Store`]. Nothing
/// changes on an error.
pub fn set_image(
    store: &Store,
    cluster: &str,
    image: DesiredImage,
    who: &str,
) -> Result<Resolved, InventoryError> {
    let depot = store.depot()?;
    let what = format!("set the image of cluster {cluster} to {}", image.base_image);
    store.update_clusters(who, &what, |all| {
        let c = all
            .iter_mut()
            .find(|c| c.name == cluster)
            .ok_or_else(|| InventoryError::NoCluster(cluster.to_string()))?;
        let resolved = image::resolve(&image, c, &depot).map_err(InventoryError::Image)?;
        c.image = Some(image);
        Ok(resolved)
    })
}

/// Records in the inventory what host `host` of cluster `cluster` runs:
/// its version, if given, and each DPU's firmware, OS and datapath
/// versions from `states` (by serial), by `who`.
///
/// # Errors
/// [`StoreError`] if the store fails.
pub fn record_versions(
    store: &Store,
    who: &str,
    cluster: &str,
    host: &str,
    host_version: Option<&Version>,
    states: &std::collections::BTreeMap<String, device::DeviceState>,
) -> Result<(), StoreError> {
    let what = format!("record the versions of host {host}");
    store.update_clusters(who, &what, |all| {
        if let Some(h) = all
            .iter_mut()
            .filter(|c| c.name == cluster)
            .flat_map(|c| c.hosts.iter_mut())
            .find(|x| x.name == host)
        {
            if let Some(v) = host_version {
                h.version = v.clone();
            }
            for d in &mut h.dpus {
                if let Some(s) = states.get(&d.serial) {
                    d.firmware = s.firmware().clone();
                    d.os = s.os().clone();
                    d.datapath = s.datapath.clone();
                }
            }
        }
        Ok::<_, StoreError>(())
    })
}
