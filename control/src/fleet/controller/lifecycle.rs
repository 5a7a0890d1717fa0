//! A controller's lifecycle operations on a fleet: the depot and images in
//! etcd, and remediations the leader orders host by host (see
//! [`crate::fleet::remediation`]).

use super::Controller;
use crate::fleet::agent::HostStatus;
use crate::fleet::depot::{self, ImportError};
use crate::fleet::etcd::FleetError;
use crate::fleet::inventory::update_inventory;
use crate::fleet::remediation::{self, StartError};
use crate::lifecycle::compliance::{self, ClusterCompliance, Precheck, Seen};
use crate::lifecycle::depot::{Imported, Manifest, TrustedKeys};
use crate::lifecycle::image::Resolved;
use crate::lifecycle::remediation::{Options, Remediation};
use crate::lifecycle::{Cluster, DesiredImage, ImageError, InventoryError, Unready, image};
use std::collections::BTreeMap;

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

/// Why a fleet's compliance cannot be told.
#[derive(Debug, thiserror::Error)]
pub enum ComplianceError {
    /// The cluster is missing or has no image.
    #[error(transparent)]
    Unready(#[from] Unready),
    /// Its image no longer resolves against the fleet's depot.
    #[error("its image does not resolve")]
    Image(Vec<ImageError>),
}

/// What compliance reads of DPU `serial` of `host` on a fleet: what its
/// agent last reported, while its agent is live (`report` is `None`
/// otherwise).
fn seen_in_report(host: &str, report: Option<&HostStatus>, serial: &str) -> Seen {
    let Some(report) = report else {
        return Seen::Unavailable(format!(
            "host {host}'s agent is unavailable: start dse agent --host {host}"
        ));
    };
    let Some(d) = report.dpus.iter().find(|d| d.serial == serial) else {
        return Seen::Unavailable(format!(
            "host {host}'s agent does not report DPU {serial} yet"
        ));
    };
    if d.state != "up" {
        return Seen::Unavailable(format!("DPU {serial} is {}", d.state));
    }
    let version = |what: &str, v: &str| {
        v.parse()
            .map_err(|e| format!("DPU {serial} reports its {what} as {e}"))
    };
    match (
        version("firmware", &d.firmware),
        version("os", &d.os),
        version("datapath", &d.datapath),
    ) {
        (Ok(firmware), Ok(os), Ok(datapath)) => Seen::Up {
            firmware,
            os,
            datapath,
        },
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Seen::Unavailable(e),
    }
}

impl Controller {
    /// How cluster `cluster`'s hosts and DPUs stand against its image, by
    /// what each live agent reports; a host whose agent is not live is
    /// `unavailable`.
    ///
    /// # Errors
    /// The outer error is etcd's; the inner one why it cannot be told.
    pub async fn compliance(
        &self,
        cluster: &str,
    ) -> Result<Result<ClusterCompliance, ComplianceError>, FleetError> {
        Ok(self.assess(cluster).await?.map(|(_, _, c)| c))
    }

    /// Checks that cluster `cluster` can be remediated now, as a single
    /// machine's pre-check does: its cluster rules, its compliance, the
    /// image's datapath object (read from the fleet's depot) and no
    /// remediation under way.
    ///
    /// # Errors
    /// As [`Controller::compliance`].
    pub async fn precheck(
        &self,
        cluster: &str,
    ) -> Result<Result<Precheck, ComplianceError>, FleetError> {
        let (c, resolved, compliance) = match self.assess(cluster).await? {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let mut elsewhere = Vec::new();
        if let Some(dp) = &resolved.datapath {
            let key = dp.object.display().to_string();
            let r = self.etcd.get(&key).await?;
            let known = r
                .kvs()
                .first()
                .and_then(|kv| dse_datapath::xdp::Program::identify(kv.value()));
            if known.is_none() {
                elsewhere.push(format!(
                    "datapath {} ({key}) is not an XDP object this control plane can load and migrate to",
                    dp.version
                ));
            }
        }
        if let Some(id) = remediation::under_way(&self.etcd).await? {
            elsewhere.push(crate::daemon::busy(id));
        }
        Ok(Ok(Precheck::of(&c, compliance, elsewhere)))
    }

    /// Cluster `cluster`, its image resolved against the fleet's depot,
    /// and its compliance by what each live agent reports.
    async fn assess(
        &self,
        cluster: &str,
    ) -> Result<Result<(Cluster, Resolved, ClusterCompliance), ComplianceError>, FleetError> {
        let (c, desired) = match Unready::check(self.clusters().await?, cluster) {
            Ok(ready) => ready,
            Err(e) => return Ok(Err(e.into())),
        };
        let depot = depot::list(&self.etcd).await?;
        let resolved = match image::resolve(&desired, &c, &depot) {
            Ok(r) => r,
            Err(broken) => return Ok(Err(ComplianceError::Image(broken))),
        };
        let live: BTreeMap<String, HostStatus> = self
            .hosts()
            .await?
            .into_iter()
            .filter(|h| h.state == "available")
            .filter_map(|h| Some((h.host, h.report?)))
            .collect();
        let owner: BTreeMap<&str, &str> = c
            .hosts
            .iter()
            .flat_map(|h| h.dpus.iter().map(|d| (d.serial.as_str(), h.name.as_str())))
            .collect();
        let compliance = compliance::cluster(&c, &resolved, &|serial: &str| {
            let host = owner.get(serial).copied().unwrap_or_default();
            seen_in_report(host, live.get(host), serial)
        });
        Ok(Ok((c, resolved, compliance)))
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::agent::DpuReport;

    fn report(state: &str, firmware: &str) -> HostStatus {
        HostStatus {
            host: "h1".into(),
            applied: Default::default(),
            datapaths: Vec::new(),
            error: None,
            cluster: Some("c1".into()),
            dpus: vec![DpuReport {
                serial: "S1".into(),
                firmware: firmware.into(),
                os: "8.0.3".into(),
                datapath: "1.0".into(),
                state: state.into(),
            }],
            reported_unix_ms: 0,
        }
    }

    #[test]
    fn a_dpu_is_seen_by_its_live_agents_report() {
        let up = report("up", "24.1");
        assert_eq!(
            seen_in_report("h1", Some(&up), "S1"),
            Seen::Up {
                firmware: "24.1".parse().unwrap(),
                os: "8.0.3".parse().unwrap(),
                datapath: "1.0".parse().unwrap(),
            }
        );
        let unavailable = |seen: Seen| match seen {
            Seen::Unavailable(why) => why,
            s => panic!("{s:?}"),
        };
        assert!(
            unavailable(seen_in_report("h1", None, "S1")).contains("h1's agent is unavailable")
        );
        assert!(
            unavailable(seen_in_report("h1", Some(&up), "S2")).contains("does not report DPU S2")
        );
        let booting = report("booting", "24.1");
        assert_eq!(
            unavailable(seen_in_report("h1", Some(&booting), "S1")),
            "DPU S1 is booting"
        );
        let bad = report("up", "x.y");
        assert!(unavailable(seen_in_report("h1", Some(&bad), "S1")).contains("firmware"));
    }
}
