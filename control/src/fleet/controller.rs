//! A controller on etcd: what `dse serve --etcd` runs. It registers itself
//! under a lease, campaigns to lead, and while it leads writes the fleet's
//! desired state (rule sets by generation, each host's desired record),
//! every write fenced by its leadership. A controller that does not lead
//! serves reads and refuses changes with [`FleetError::NotLeader`], which
//! names the leader and where its API answers.
//!
//! It holds no rule set in memory: each is read from etcd when asked for.

use super::agent::{HostDesired, HostStatus, desired_key};
use super::etcd::{Etcd, EtcdConfig, FleetError};
use super::inventory::{read_inventory, update_inventory};
use super::leader::{
    ControllerInfo, Fence, Leadership, campaign, controller_key, controllers, describe_leader,
    leader, leader_record,
};
use super::liveness::{KeepAlive, keep_alive};
use super::rulesets::{Published, RuleSetText, fetch_rule_set, publish_rule_set_as};
use crate::lifecycle::{Cluster, Host, InventoryError};
use etcd_client::{GetOptions, PutOptions, Txn, TxnOp};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod lifecycle;

pub use lifecycle::{ComplianceError, EmulateError, FleetImportError, HostWorkError};

/// How a controller runs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// How to reach etcd.
    pub etcd: EtcdConfig,
    /// Its id, unique among the fleet's controllers.
    pub id: String,
    /// Where its API answers, as clients reach it (shown by a follower
    /// that refuses a change).
    pub api: String,
    /// The lease of its leadership and registration.
    pub ttl: Duration,
    /// How it checks what it imports into the fleet's depot.
    pub depot: crate::lifecycle::depot::DepotConfig,
}

/// A host as the fleet sees it.
#[derive(Debug, Clone, Serialize)]
pub struct HostView {
    /// The host.
    pub host: String,
    /// `available` while its agent's lease lives, else `unavailable`.
    pub state: &'static str,
    /// What a controller wants it to run, if anything was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired: Option<HostDesired>,
    /// Its agent's last report (kept after its lease expires).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<HostStatus>,
}

/// An etcd member as the fleet status shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// Its name.
    pub name: String,
    /// Its client URLs.
    pub client_urls: Vec<String>,
    /// Whether it answered a status request.
    pub healthy: bool,
    /// Whether it leads the etcd cluster.
    pub leader: bool,
}

/// The fleet at a glance: `dse fleet status`.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    /// The controller that leads, if one does.
    pub leader: Option<String>,
    /// The running controllers.
    pub controllers: Vec<ControllerInfo>,
    /// etcd's members.
    pub etcd_members: Vec<Member>,
    /// Hosts whose agent's lease lives.
    pub agents_alive: usize,
    /// Hosts the fleet knows (desired or reported).
    pub hosts: usize,
}

/// A controller. Dropping it stops its campaign and keep-alives; the
/// leases then expire within their TTL ([`Controller::stop`] is at once).
pub struct Controller {
    etcd: Etcd,
    config: ControllerConfig,
    leading: Arc<Mutex<Option<Leadership>>>,
    campaign: tokio::task::JoinHandle<()>,
    /// Keeps the registration, registering again whenever its lease
    /// expired (etcd unreachable for a TTL).
    registering: tokio::task::JoinHandle<()>,
    /// The registration's lease now.
    lease: Arc<std::sync::atomic::AtomicI64>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.campaign.abort();
        self.registering.abort();
    }
}

/// Registers controller `info` under a lease of `ttl`, kept alive.
async fn register_controller(
    etcd: &Etcd,
    info: &ControllerInfo,
    ttl: Duration,
) -> Result<(i64, KeepAlive), FleetError> {
    let ttl_s = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
    let lease = etcd
        .retry("granting a lease", |mut c| async move {
            c.lease_grant(ttl_s, None).await
        })
        .await?
        .id();
    let key = controller_key(etcd.prefix(), &info.id);
    let value = serde_json::to_vec(info).expect("an info serializes");
    etcd.retry(&format!("registering controller {}", info.id), |mut c| {
        let (key, value) = (key.clone(), value.clone());
        async move {
            c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                .await
        }
    })
    .await?;
    let keeper = keep_alive(etcd, lease, ttl)
        .await
        .map_err(|e| etcd.error("keeping the controller's lease alive", e))?;
    Ok((lease, keeper))
}

impl Controller {
    /// Connects, registers, and starts campaigning on the current runtime.
    ///
    /// # Errors
    /// [`FleetError::Unreachable`] naming the endpoints, credential errors,
    /// or etcd's error.
    pub async fn start(config: ControllerConfig) -> Result<Controller, FleetError> {
        let etcd = Etcd::connect(config.etcd.clone()).await?;
        let info = ControllerInfo {
            id: config.id.clone(),
            api: config.api.clone(),
        };
        let (first, keeper) = register_controller(&etcd, &info, config.ttl).await?;
        let lease = Arc::new(std::sync::atomic::AtomicI64::new(first));
        let registering = tokio::spawn({
            let (etcd, ttl, lease) = (etcd.clone(), config.ttl, Arc::clone(&lease));
            async move {
                let mut keeper = keeper;
                loop {
                    keeper.expired().await;
                    tracing::warn!(controller = %info.id, "registration expired; registering again");
                    keeper = loop {
                        match register_controller(&etcd, &info, ttl).await {
                            Ok((id, k)) => {
                                lease.store(id, std::sync::atomic::Ordering::Release);
                                break k;
                            }
                            Err(e) => {
                                tracing::warn!("registering: {e}");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    };
                }
            }
        });
        let leading = Arc::new(Mutex::new(None));
        let campaign = tokio::spawn(campaign_loop(
            etcd.clone(),
            config.id.clone(),
            config.ttl,
            Arc::clone(&leading),
        ));
        Ok(Controller {
            etcd,
            config,
            leading,
            campaign,
            registering,
            lease,
        })
    }

    /// Its id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Whether it leads now, as far as its keep-alives know.
    pub fn is_leader(&self) -> bool {
        self.lock().as_ref().is_some_and(Leadership::is_alive)
    }

    /// The connection to etcd.
    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Leadership>> {
        self.leading.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Steps down and deregisters at once.
    pub async fn stop(&self) {
        self.campaign.abort();
        self.registering.abort();
        let leadership = self.lock().take();
        if let Some(l) = leadership
            && let Err(e) = l.resign().await
        {
            tracing::warn!("resigning: {e}");
        }
        let lease = self.lease.load(std::sync::atomic::Ordering::Acquire);
        let _ = self
            .etcd
            .retry("revoking a lease", |mut c| async move {
                c.lease_revoke(lease).await
            })
            .await;
    }

    /// This controller's fence while it leads, or the refusal that names
    /// the leader.
    async fn fence(&self) -> Result<Fence, FleetError> {
        let fence = self
            .lock()
            .as_ref()
            .filter(|l| l.is_alive())
            .map(Leadership::fencing);
        match fence {
            Some(f) => Ok(f),
            None => Err(self.not_leader().await),
        }
    }

    async fn not_leader(&self) -> FleetError {
        match describe_leader(&self.etcd).await {
            Ok(leader) => FleetError::NotLeader { leader },
            Err(e) => e,
        }
    }

    /// Publishes `text` (a rule set, already validated by the caller) as
    /// the next generation of `rule_set`, if it is still at `expected`.
    ///
    /// # Errors
    /// [`FleetError::NotLeader`], [`FleetError::Conflict`], or etcd's.
    pub async fn publish(
        &self,
        rule_set: &str,
        expected: Option<u64>,
        text: &[u8],
    ) -> Result<Published, FleetError> {
        let fence = self.fence().await?;
        publish_rule_set_as(fence, &self.etcd, rule_set, expected, text).await
    }

    /// The current generation of `rule_set`, read from etcd.
    ///
    /// # Errors
    /// etcd's error, or [`FleetError::Damaged`].
    pub async fn rule_set(&self, rule_set: &str) -> Result<Option<RuleSetText>, FleetError> {
        fetch_rule_set(&self.etcd, rule_set).await
    }

    /// Makes `desired` what `host` should run.
    ///
    /// # Errors
    /// [`FleetError::NotLeader`], or etcd's error.
    pub async fn set_host(&self, host: &str, desired: &HostDesired) -> Result<i64, FleetError> {
        let fence = self.fence().await?;
        let key = desired_key(self.etcd.prefix(), host);
        let value = serde_json::to_vec(desired).expect("a desired record serializes");
        let txn = Txn::new()
            .when([fence.compare(&self.etcd)])
            .and_then([TxnOp::put(key.as_str(), value, None)]);
        let done = self
            .etcd
            .retry(&format!("writing {key}"), |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if !done.succeeded() {
            return Err(self.not_leader().await);
        }
        Ok(done.header().map_or(0, |h| h.revision()))
    }

    /// The lifecycle inventory: every cluster, its hosts and DPUs.
    ///
    /// # Errors
    /// etcd's error.
    pub async fn clusters(&self) -> Result<Vec<Cluster>, FleetError> {
        Ok(read_inventory(&self.etcd).await?.0)
    }

    /// Adds `cluster` to the inventory, as [`crate::lifecycle::create_cluster`]
    /// does on one machine.
    ///
    /// # Errors
    /// The outer error: [`FleetError::NotLeader`] or etcd's; the inner one:
    /// the inventory's refusal (a bad name, a cluster rule, a name taken).
    pub async fn create_cluster(
        &self,
        cluster: Cluster,
    ) -> Result<Result<(), InventoryError>, FleetError> {
        if let Err(e) = crate::lifecycle::check_new_cluster(&cluster) {
            return Ok(Err(e));
        }
        let fence = self.fence().await?;
        update_inventory(&self.etcd, fence, |all| {
            crate::lifecycle::insert_cluster(all, cluster.clone())
        })
        .await
    }

    /// Adds `host` to cluster `cluster`, as [`crate::lifecycle::add_host`]
    /// does on one machine; its agent then sees its DPUs.
    ///
    /// # Errors
    /// As [`Controller::create_cluster`].
    pub async fn add_host(
        &self,
        cluster: &str,
        host: Host,
    ) -> Result<Result<(), InventoryError>, FleetError> {
        if let Err(e) = host.check_names() {
            return Ok(Err(InventoryError::Invalid(e)));
        }
        let fence = self.fence().await?;
        update_inventory(&self.etcd, fence, |all| {
            crate::lifecycle::insert_host(all, cluster, host.clone())
        })
        .await
    }

    /// Every host the fleet knows, by name: those with a desired record or
    /// a report, each `available` while its agent's lease lives.
    ///
    /// # Errors
    /// etcd's error.
    pub async fn hosts(&self) -> Result<Vec<HostView>, FleetError> {
        let prefix = self.etcd.prefix().to_string();
        let dir = format!("{prefix}/hosts/");
        let r = self
            .etcd
            .retry(&format!("reading {dir}"), |mut c| {
                let dir = dir.clone();
                async move { c.get(dir, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let mut hosts: BTreeMap<String, HostView> = BTreeMap::new();
        for kv in r.kvs() {
            let Some((host, leaf)) = std::str::from_utf8(kv.key())
                .ok()
                .and_then(|k| k.strip_prefix(&dir))
                .and_then(|k| k.split_once('/'))
            else {
                continue;
            };
            let view = hosts.entry(host.to_string()).or_insert_with(|| HostView {
                host: host.to_string(),
                state: "unavailable",
                desired: None,
                report: None,
            });
            match leaf {
                "desired" => view.desired = serde_json::from_slice(kv.value()).ok(),
                "status" => view.state = "available",
                "report" => view.report = serde_json::from_slice(kv.value()).ok(),
                _ => {}
            }
        }
        Ok(hosts.into_values().collect())
    }

    /// The fleet at a glance.
    ///
    /// # Errors
    /// etcd's error.
    pub async fn status(&self) -> Result<FleetStatus, FleetError> {
        let hosts = self.hosts().await?;
        let mut client = self.etcd.client();
        let members = client
            .member_list()
            .await
            .map_err(|e| self.etcd.error("listing etcd's members", e))?;
        let mut etcd_members = Vec::new();
        for m in members.members() {
            let mut healthy = false;
            let mut leads = false;
            for url in m.client_urls() {
                let probe = etcd_client::Client::connect(
                    [url.as_str()],
                    Some(
                        etcd_client::ConnectOptions::new()
                            .with_connect_timeout(Duration::from_secs(1))
                            .with_timeout(Duration::from_secs(1)),
                    ),
                )
                .await;
                if let Ok(mut probe) = probe
                    && let Ok(s) = probe.status().await
                {
                    healthy = true;
                    leads = s.leader() == m.id();
                    break;
                }
            }
            etcd_members.push(Member {
                name: m.name().to_string(),
                client_urls: m.client_urls().to_vec(),
                healthy,
                leader: leads,
            });
        }
        Ok(FleetStatus {
            leader: leader(&self.etcd).await?,
            controllers: controllers(&self.etcd).await?,
            etcd_members,
            agents_alive: hosts.iter().filter(|h| h.state == "available").count(),
            hosts: hosts.len(),
        })
    }
}

/// How often the leader looks at the remediations under way.
const ORCHESTRATION_TICK: Duration = Duration::from_millis(100);

/// Campaigns, leads while the lease lives and etcd names it leader, and
/// campaigns again when it does not.
async fn campaign_loop(
    etcd: Etcd,
    id: String,
    ttl: Duration,
    leading: Arc<Mutex<Option<Leadership>>>,
) {
    loop {
        let l = match campaign(&etcd, &id, ttl).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("campaigning to lead: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        tracing::info!(controller = %id, "leading");
        let revision = l.revision;
        let fence = l.fencing();
        *leading.lock().unwrap_or_else(|p| p.into_inner()) = Some(l);
        // The remediations, carried out while it leads (again after an
        // error: the journal in etcd says where they stand).
        let orchestration = tokio::spawn({
            let etcd = etcd.clone();
            async move {
                loop {
                    match super::remediation::orchestrate(&etcd, fence, ORCHESTRATION_TICK).await {
                        Err(FleetError::NotLeader { .. }) => return,
                        Err(e) => tracing::warn!("orchestrating remediations: {e}"),
                        Ok(()) => {}
                    }
                    tokio::time::sleep(ORCHESTRATION_TICK).await;
                }
            }
        });
        loop {
            tokio::time::sleep(ttl / 4).await;
            let alive = leading
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .is_some_and(|l| l.is_alive() && l.revision == revision);
            // etcd's word settles it: a leader cut off from etcd for a
            // lease's TTL has been replaced whatever its keep-alive knows.
            let named = match leader_record(&etcd).await {
                Ok(r) => r.is_some_and(|(_, r)| r == revision),
                Err(_) => alive,
            };
            if !(alive && named) {
                break;
            }
        }
        orchestration.abort();
        tracing::warn!(controller = %id, "no longer leading");
        leading.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}
