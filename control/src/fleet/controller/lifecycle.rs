//! A controller's lifecycle operations on a fleet: the depot and images in
//! etcd, and remediations the leader orders host by host (see
//! [`crate::fleet::remediation`]).

use super::Controller;
use crate::fleet::depot::{self, ImportError};
use crate::fleet::etcd::FleetError;
use crate::fleet::inventory::update_inventory;
use crate::fleet::remediation::{self, StartError};
use crate::lifecycle::depot::{Imported, Manifest, TrustedKeys};
use crate::lifecycle::remediation::{Options, Remediation};
use crate::lifecycle::{DesiredImage, InventoryError, image};

/// Why a depot import on a fleet was refused.
#[derive(Debug, thiserror::Error)]
pub enum FleetImportError {
    /// The controller trusts no keys.
    #[error(
        "this controller trusts no keys, so it imports nothing: start it with --trusted-keys FILE"
    )]
    NoKeys,
    /// The trusted keys file does not read.
    #[error("{0}")]
    Keys(crate::lifecycle::depot::DepotError),
    /// What the import refused.
    #[error(transparent)]
    Refused(#[from] ImportError),
}

impl Controller {
    /// Imports the depot at `from` (a directory on this controller's
    /// machine) into the fleet's depot in etcd, checked with this
    /// controller's trusted keys.
    ///
    /// # Errors
    /// The outer error is etcd's or [`FleetError::NotLeader`]; the inner one
    /// the refusal, and nothing is written then.
    pub async fn depot_import(
        &self,
        from: &std::path::Path,
    ) -> Result<Result<Vec<Manifest>, FleetImportError>, FleetError> {
        let fence = self.fence().await?;
        let Some(path) = self.config.depot.trusted_keys.clone() else {
            return Ok(Err(FleetImportError::NoKeys));
        };
        let keys = match TrustedKeys::load(&path) {
            Ok(k) => k,
            Err(e) => return Ok(Err(FleetImportError::Keys(e))),
        };
        let lowest = self.config.depot.lowest_acceptance;
        Ok(depot::import(&self.etcd, fence, from, &keys, lowest)
            .await?
            .map_err(FleetImportError::from))
    }

    /// Every manifest of the fleet's depot.
    ///
    /// # Errors
    /// etcd's error.
    pub async fn depot(&self) -> Result<Vec<Imported>, FleetError> {
        depot::list(&self.etcd).await
    }

    /// Makes `image` the desired image of cluster `cluster`, if every part
    /// of it is in the fleet's depot and fits the cluster's DPUs.
    ///
    /// # Errors
    /// As [`Controller::create_cluster`].
    pub async fn set_image(
        &self,
        cluster: &str,
        desired: DesiredImage,
    ) -> Result<Result<(), InventoryError>, FleetError> {
        let fence = self.fence().await?;
        let depot = depot::list(&self.etcd).await?;
        update_inventory(&self.etcd, fence, |all| {
            let c = all
                .iter_mut()
                .find(|c| c.name == cluster)
                .ok_or_else(|| InventoryError::NoCluster(cluster.to_string()))?;
            image::resolve(&desired, c, &depot).map_err(InventoryError::Image)?;
            c.image = Some(desired.clone());
            Ok(())
        })
        .await
    }

    /// Starts remediating cluster `cluster` to its image: this leader's
    /// orchestration orders its hosts.
    ///
    /// # Errors
    /// The outer error is etcd's or [`FleetError::NotLeader`]; the inner one
    /// why it cannot start.
    pub async fn remediate(
        &self,
        cluster: &str,
        options: Options,
        who: &str,
    ) -> Result<Result<Remediation, StartError>, FleetError> {
        let fence = self.fence().await?;
        remediation::start(&self.etcd, fence, cluster, options, who).await
    }

    /// Every remediation, oldest first, with each host's steps.
    ///
    /// # Errors
    /// etcd's error.
    pub async fn remediations(&self) -> Result<Vec<Remediation>, FleetError> {
        remediation::list(&self.etcd).await
    }
}
