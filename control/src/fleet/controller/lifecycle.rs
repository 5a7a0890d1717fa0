//! A controller's lifecycle operations on a fleet: the depot and images in
//! etcd, and remediations the leader orders host by host (see
//! [`crate::fleet::remediation`]).

use super::Controller;
use crate::fleet::agent::HostStatus;
use crate::fleet::depot::{self, ImportError};
use crate::fleet::etcd::FleetError;
use crate::fleet::inventory::update_inventory;
use crate::fleet::on_host::{self, ImageWork, SetEmulation};
use crate::fleet::remediation::{self, StartError};
use crate::lifecycle::compliance::{self, ClusterCompliance, HostCompliance, Precheck, Seen};
use crate::lifecycle::depot::{Imported, Manifest, TrustedKeys};
use crate::lifecycle::device::Emulation;
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

/// Why staging or a fresh install on a fleet failed.
#[derive(Debug, thiserror::Error)]
pub enum HostWorkError {
    /// The cluster is missing or has no image.
    #[error(transparent)]
    Unready(#[from] Unready),
    /// Its image no longer resolves against the fleet's depot.
    #[error("its image does not resolve")]
    Image(Vec<ImageError>),
    /// The cluster has no such host.
    #[error("no host {host} in cluster {cluster}: its hosts are dse host list")]
    NoHost {
        /// The cluster.
        cluster: String,
        /// The host asked for.
        host: String,
    },
    /// A host's agent is away.
    #[error(
        "host {0} is unavailable: no agent of it is live to do the work on its DPUs (dse host list)"
    )]
    Unavailable(String),
    /// A remediation runs; a fresh install waits for it.
    #[error("{}", crate::daemon::busy(*.0))]
    Busy(u64),
    /// A host's agent failed.
    #[error("on host {host}: {reason}")]
    Failed {
        /// The host.
        host: String,
        /// Its agent's error.
        reason: String,
    },
}

/// Why a DPU's emulation on a fleet was not set.
#[derive(Debug, thiserror::Error)]
pub enum EmulateError {
    /// No host of the inventory has the DPU.
    #[error("no DPU {0} in the inventory: add its host first (dse host add)")]
    NoDpu(String),
    /// Its host's agent is away.
    #[error(
        "host {0} is unavailable: no agent of it is live, so nothing sets its DPU's emulation (dse host list)"
    )]
    Unavailable(String),
    /// Its host's agent refused the settings.
    #[error("{0}")]
    Refused(String),
}

/// How long a host's agent has to set a DPU's emulation and answer.
const EMULATE_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a host's agent has to stage and answer.
const STAGE_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a host's agent has to install its host and DPUs, each DPU
/// booting twice at most, and answer.
const INSTALL_WITHIN: std::time::Duration = std::time::Duration::from_secs(150);

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

    /// Stages the image of cluster `cluster` on every DPU of its hosts,
    /// asking each host's agent at once (leader only); the serials staged
    /// on, in the cluster's order. Every host's agent must be live.
    ///
    /// # Errors
    /// The outer error is etcd's, [`FleetError::NotLeader`], or
    /// [`FleetError::AgentSilent`]; the inner one why it was not staged
    /// everywhere.
    pub async fn stage(
        &self,
        cluster: &str,
    ) -> Result<Result<Vec<String>, HostWorkError>, FleetError> {
        self.fence().await?;
        let (c, desired) = match Unready::check(self.clusters().await?, cluster) {
            Ok(ready) => ready,
            Err(e) => return Ok(Err(e.into())),
        };
        if let Err(broken) = image::resolve(&desired, &c, &depot::list(&self.etcd).await?) {
            return Ok(Err(HostWorkError::Image(broken)));
        }
        if let Some(away) = self
            .first_away(c.hosts.iter().map(|h| h.name.as_str()))
            .await?
        {
            return Ok(Err(HostWorkError::Unavailable(away)));
        }
        let mut asks = tokio::task::JoinSet::new();
        for h in &c.hosts {
            let (etcd, host) = (self.etcd.clone(), h.name.clone());
            let work = ImageWork {
                cluster: cluster.to_string(),
                image: desired.clone(),
            };
            asks.spawn(async move {
                let staged = on_host::stage(&etcd, &host, work, STAGE_WITHIN).await;
                (host, staged)
            });
        }
        let mut staged = BTreeMap::new();
        while let Some(done) = asks.join_next().await {
            let (host, answer) = done.expect("a stage request does not panic");
            match answer? {
                Ok(serials) => {
                    staged.insert(host, serials);
                }
                Err(reason) => return Ok(Err(HostWorkError::Failed { host, reason })),
            }
        }
        Ok(Ok(c
            .hosts
            .iter()
            .flat_map(|h| staged.remove(&h.name).unwrap_or_default())
            .collect()))
    }

    /// Installs cluster `cluster`'s image afresh on host `host` and its
    /// DPUs, through the host's agent (leader only): both slots of each
    /// DPU erased and booted with the image's DPU content, its datapaths
    /// switched to the image's program. The host's compliance afterwards,
    /// as its agent tells it. A remediation under way refuses it.
    ///
    /// # Errors
    /// The outer error is etcd's, [`FleetError::NotLeader`], or
    /// [`FleetError::AgentSilent`]; the inner one why it was not
    /// installed.
    pub async fn fresh_install(
        &self,
        cluster: &str,
        host: &str,
    ) -> Result<Result<HostCompliance, HostWorkError>, FleetError> {
        self.fence().await?;
        let (c, desired) = match Unready::check(self.clusters().await?, cluster) {
            Ok(ready) => ready,
            Err(e) => return Ok(Err(e.into())),
        };
        if !c.hosts.iter().any(|h| h.name == host) {
            return Ok(Err(HostWorkError::NoHost {
                cluster: cluster.to_string(),
                host: host.to_string(),
            }));
        }
        if let Err(broken) = image::resolve(&desired, &c, &depot::list(&self.etcd).await?) {
            return Ok(Err(HostWorkError::Image(broken)));
        }
        if let Some(id) = remediation::under_way(&self.etcd).await? {
            return Ok(Err(HostWorkError::Busy(id)));
        }
        if let Some(away) = self.first_away([host]).await? {
            return Ok(Err(HostWorkError::Unavailable(away)));
        }
        let work = ImageWork {
            cluster: cluster.to_string(),
            image: desired,
        };
        let installed = on_host::install(&self.etcd, host, work, INSTALL_WITHIN).await?;
        Ok(installed.map_err(|reason| HostWorkError::Failed {
            host: host.to_string(),
            reason,
        }))
    }

    /// The first of `hosts` whose agent is not live, if any.
    async fn first_away<'a>(
        &self,
        hosts: impl IntoIterator<Item = &'a str>,
    ) -> Result<Option<String>, FleetError> {
        let live = self.hosts().await?;
        Ok(hosts
            .into_iter()
            .find(|h| !live.iter().any(|v| v.host == *h && v.state == "available"))
            .map(str::to_string))
    }

    /// Gives DPU `serial` the settings `emulation`, through the agent of
    /// its host (leader only).
    ///
    /// # Errors
    /// The outer error is etcd's, [`FleetError::NotLeader`] or
    /// [`FleetError::AgentSilent`]; the inner one why it was not set.
    pub async fn emulate(
        &self,
        serial: &str,
        emulation: &Emulation,
    ) -> Result<Result<(), EmulateError>, FleetError> {
        self.fence().await?;
        let clusters = self.clusters().await?;
        let Some(host) = clusters
            .iter()
            .flat_map(|c| &c.hosts)
            .find(|h| h.dpus.iter().any(|d| d.serial == serial))
        else {
            return Ok(Err(EmulateError::NoDpu(serial.to_string())));
        };
        if let Some(away) = self.first_away([host.name.as_str()]).await? {
            return Ok(Err(EmulateError::Unavailable(away)));
        }
        let set = SetEmulation {
            serial: serial.to_string(),
            emulation: emulation.clone(),
        };
        let set = on_host::emulate(&self.etcd, &host.name, set, EMULATE_WITHIN).await?;
        Ok(set.map_err(EmulateError::Refused))
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
