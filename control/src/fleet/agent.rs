//! The agent: one a host. It owns its host's datapaths through a daemon of
//! its own (its embedded store is the local record of what it applied, and
//! it adopts pinned XDP datapaths when it starts), registers the host under
//! a lease, and keeps the datapaths equal to what etcd says the host should
//! run: the host's desired record and the current generation of its rule
//! set. It reports what it applied in its status key.
//!
//! Without etcd it keeps forwarding on what it last applied, and catches up
//! when etcd answers again.

use super::etcd::{Etcd, EtcdConfig, FleetError};
use super::keys;
use super::liveness::{Registration, register};
use super::rulesets::fetch_rule_set;
use super::watch::{Resumed, watch_from};
use crate::daemon::{Daemon, DaemonConfig};
use crate::store::DatapathInstance;
use dse_datapath::rule::RuleSet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod counters;
mod on_host;
mod remediation;

/// How often an agent under remediation answers with its steps.
const ANSWER_EVERY: Duration = Duration::from_millis(100);

/// The rule set a host runs unless its desired record names another.
pub const DEFAULT_RULE_SET: &str = "default";

/// `<prefix>/hosts/<host>/desired`: what a controller wants the host to run.
pub fn desired_key(prefix: &str, host: &str) -> String {
    format!("{}desired", keys::host(prefix, host))
}

/// What a host should run, as a controller writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostDesired {
    /// The named rule set its datapaths run.
    #[serde(default = "default_rule_set")]
    pub rule_set: String,
    /// Its datapath instances.
    #[serde(default)]
    pub datapaths: Vec<DatapathInstance>,
}

fn default_rule_set() -> String {
    DEFAULT_RULE_SET.to_string()
}

impl Default for HostDesired {
    fn default() -> Self {
        HostDesired {
            rule_set: default_rule_set(),
            datapaths: Vec::new(),
        }
    }
}

/// What the agent applied: written beside its store after each change,
/// and reported (with the datapaths' state) in the host's status key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedRecord {
    /// The rule set.
    pub rule_set: String,
    /// Its generation in etcd (0: none yet).
    pub generation: u64,
    /// The SHA-256 of its text, in hex.
    pub sha256: String,
}

/// One datapath as the status reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatapathReport {
    /// Its name.
    pub name: String,
    /// `running` or `failed`.
    pub state: String,
    /// Whether it runs what the agent applied.
    pub in_sync: bool,
    /// Its statistics when the agent reported (the agent reports again
    /// every [`AgentConfig::report_every`] while they change).
    pub stats: dse_datapath::pipeline::Stats,
}

/// One of the host's DPUs as its device reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpuReport {
    /// Its serial.
    pub serial: String,
    /// The firmware and OS of the slot it runs from.
    pub firmware: String,
    /// The DPU OS version.
    pub os: String,
    /// The datapath version it runs.
    pub datapath: String,
    /// `up`, `booting` or, if its device does not answer, why.
    pub state: String,
}

/// The host's status, as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// The host.
    pub host: String,
    /// What it applied.
    pub applied: AppliedRecord,
    /// Its datapaths.
    pub datapaths: Vec<DatapathReport>,
    /// Why the last change was not applied, if it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its cluster in the lifecycle inventory, once a controller added it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Its DPUs, as their devices report them.
    #[serde(default)]
    pub dpus: Vec<DpuReport>,
    /// When the agent wrote it, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub reported_unix_ms: u64,
}

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// How to reach etcd.
    pub etcd: EtcdConfig,
    /// The host it runs for.
    pub host: String,
    /// Its own daemon: store, bpffs pins, backends.
    pub daemon: DaemonConfig,
    /// Its registration's lease.
    pub ttl: Duration,
    /// How often it reports its datapaths' statistics while they change.
    pub report_every: Duration,
}

/// A host's agent.
pub struct Agent {
    config: AgentConfig,
    daemon: Arc<Daemon>,
    applied: std::sync::Mutex<AppliedRecord>,
    /// What it reported last.
    reported: std::sync::Mutex<Option<HostStatus>>,
    /// The host's remediation order, while it is under one.
    order: std::sync::Mutex<Option<super::remediation::Order>>,
    /// What it answered the order last.
    answered: std::sync::Mutex<Option<super::remediation::Ack>>,
}

impl Agent {
    /// Opens its daemon (adopting pinned XDP datapaths, which keep
    /// forwarding) and its record of what it applied. Needs no etcd.
    ///
    /// # Errors
    /// The daemon's, naming what could not be opened.
    pub fn open(config: AgentConfig) -> Result<Agent, crate::ControlError> {
        let daemon = Arc::new(Daemon::open(config.daemon.clone())?);
        // A remediation it was running when it stopped goes on, its step
        // under way done again.
        daemon.resume_remediations();
        let applied = std::fs::read(record_path(&config))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Agent {
            config,
            daemon,
            applied: std::sync::Mutex::new(applied),
            reported: std::sync::Mutex::new(None),
            order: std::sync::Mutex::new(None),
            answered: std::sync::Mutex::new(None),
        })
    }

    /// Its daemon, which owns the host's datapaths.
    pub fn daemon(&self) -> &Arc<Daemon> {
        &self.daemon
    }

    /// What it applied last.
    pub fn applied(&self) -> AppliedRecord {
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs until `stop` resolves: connects (again and again while etcd
    /// does not answer), registers the host, and keeps its datapaths equal
    /// to what etcd says, reporting each change.
    ///
    /// # Errors
    /// [`FleetError::HostClaimed`] when another live agent holds the host,
    /// and credential errors: what waiting does not mend.
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) -> Result<(), FleetError> {
        tokio::pin!(stop);
        loop {
            match self.connected(&mut stop).await {
                Ok(()) => return Ok(()),
                Err(
                    e @ (FleetError::HostClaimed { .. }
                    | FleetError::Credentials { .. }
                    | FleetError::NoCredentials { .. }
                    | FleetError::PermissionDenied { .. }),
                ) => return Err(e),
                Err(e) => {
                    tracing::warn!(
                        host = %self.config.host,
                        "{e}; the datapaths keep what they run; trying again"
                    );
                    tokio::select! {
                        () = stop.as_mut() => return Ok(()),
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// One connection's life: register, then sync and watch until an
    /// error (`Err`), or until `stop` (`Ok`), when the registration is
    /// released.
    async fn connected(
        &self,
        stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Result<(), FleetError> {
        let etcd = tokio::select! {
            () = stop.as_mut() => return Ok(()),
            r = Etcd::connect(self.config.etcd.clone()) => r?,
        };
        let status = serde_json::to_vec(&self.status(None)).expect("a status serializes");
        // The leases this agent registered with lately, newest first: any
        // of them holding the host is this agent's own earlier run.
        let lease_file = self.config.daemon.db.with_file_name("lease");
        let previous: Vec<i64> = std::fs::read_to_string(&lease_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let registration = register(
            &etcd,
            &self.config.host,
            &status,
            self.config.ttl,
            &previous,
            |lease| {
                // Each attempt that got a lease adds one; a few attempts
                // while etcd comes back must not push out the lease that
                // holds the host.
                let kept: Vec<String> = std::iter::once(lease)
                    .chain(previous.iter().copied().take(15))
                    .map(|l| l.to_string())
                    .collect();
                std::fs::write(&lease_file, kept.join("\n")).map_err(|e| FleetError::Damaged {
                    what: lease_file.display().to_string(),
                    reason: format!("cannot be written: {e}"),
                })
            },
        )
        .await?;
        let watched = self.watch_loop(&etcd, &registration);
        tokio::select! {
            () = stop.as_mut() => {
                if let Err(e) = registration.release().await {
                    tracing::warn!("releasing host {}: {e}", self.config.host);
                }
                Ok(())
            }
            e = watched => Err(e),
        }
    }

    /// Syncs, then watches, then syncs again, until an error.
    async fn watch_loop(&self, etcd: &Etcd, registration: &Registration) -> FleetError {
        match self.watching(etcd, registration).await {
            Err(e) => e,
        }
    }

    async fn watching(
        &self,
        etcd: &Etcd,
        registration: &Registration,
    ) -> Result<std::convert::Infallible, FleetError> {
        // One timer for the whole watch: a sleep begun afresh at each event
        // would put a report off for as long as events keep coming.
        let mut report = tokio::time::interval(self.config.report_every);
        report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !registration.is_alive() {
                return Err(FleetError::Unreachable {
                    endpoints: self.config.etcd.endpoints.join(","),
                    reason: format!("host {}'s lease expired", self.config.host),
                });
            }
            let (rule_set, revision) = self.sync(etcd, registration).await?;
            // Requests put while it was not watching (starting, syncing,
            // reconnecting) are answered now; later ones as they come.
            self.answer_pending(etcd, registration).await?;
            let prefix = etcd.prefix();
            // The host's keys: its desired record and its inventory (its
            // own reports, also there, are no reason to sync).
            let mut host =
                watch_from(etcd, &keys::host(prefix, &self.config.host), revision + 1).await?;
            let mut rules =
                watch_from(etcd, &keys::current(prefix, &rule_set), revision + 1).await?;
            // Any change, or a compaction, is met by syncing again: a sync
            // reads everything afresh, so nothing is missed either way.
            // Meanwhile the statistics are reported while they change.
            let changed = loop {
                tokio::select! {
                    r = host.next() => match r? {
                        Resumed::Events(events) => {
                            let keys: Vec<&str> = events
                                .iter()
                                .map(|e| match e {
                                    super::WatchEvent::Put { key, .. }
                                    | super::WatchEvent::Delete { key, .. } => key.as_str(),
                                })
                                .collect();
                            if keys.iter().any(|k| k.ends_with("/counters-request")) {
                                self.answer_counters(etcd).await?;
                            }
                            if keys.iter().any(|k| k.ends_with("/stage-request")) {
                                self.answer_stage(etcd, registration).await?;
                            }
                            if keys.iter().any(|k| k.ends_with("/emulation-request")) {
                                self.answer_emulation(etcd, registration).await?;
                            }
                            if keys.iter().any(|k| k.ends_with("/install-request")) {
                                self.answer_install(etcd, registration).await?;
                            }
                            if keys.iter().any(|k| {
                                k.ends_with("/desired")
                                    || k.ends_with("/inventory")
                                    || k.ends_with("/remediation")
                            }) {
                                break Resumed::Events(events);
                            }
                        }
                        other => break other,
                    },
                    r = rules.next() => break r?,
                    _ = report.tick() => {
                        self.report_if_changed(registration).await?;
                    }
                    () = tokio::time::sleep(ANSWER_EVERY), if self.order().is_some() => {
                        self.answer_order(etcd).await?;
                    }
                    () = registration.expired() => {
                        return Err(FleetError::Unreachable {
                            endpoints: self.config.etcd.endpoints.join(","),
                            reason: format!("host {}'s lease expired", self.config.host),
                        });
                    }
                }
            };
            if let Resumed::Compacted { compacted } = changed {
                tracing::info!(compacted, "history compacted; listing again");
            }
        }
    }

    /// Reads what the host should run and applies it; returns the rule
    /// set's name and the lowest revision read, to watch on from.
    async fn sync(
        &self,
        etcd: &Etcd,
        registration: &Registration,
    ) -> Result<(String, i64), FleetError> {
        let key = desired_key(etcd.prefix(), &self.config.host);
        let r = etcd.get(&key).await?;
        let desired_revision = r.header().map_or(0, |h| h.revision());
        let desired: HostDesired = match r.kvs().first() {
            None => HostDesired::default(),
            Some(kv) => match dse_datapath::strict::from_slice(kv.value()) {
                Ok(d) => d,
                Err(e) => {
                    let error = format!("{key} does not read: {e}");
                    self.report(registration, Some(error)).await?;
                    return Ok((DEFAULT_RULE_SET.to_string(), desired_revision));
                }
            },
        };
        // Under remediation, the host's inventory is the remediation's
        // until the controller records its result and withdraws the order.
        let order = self.read_order(etcd).await?;
        let inventory = if order.is_some() && self.daemon.clusters().is_ok_and(|c| !c.is_empty()) {
            desired_revision
        } else {
            self.adopt_inventory(etcd).await?
        };
        let text = fetch_rule_set(etcd, &desired.rule_set).await?;
        let revision = text
            .as_ref()
            .map_or(desired_revision, |t| t.revision.min(desired_revision))
            .min(inventory);
        let error = self.apply(&desired, text).await.err();
        if let Some(e) = &error {
            tracing::error!(host = %self.config.host, "{e}");
        }
        self.report(registration, error).await?;
        self.take_order(etcd).await?;
        Ok((desired.rule_set, revision))
    }

    /// Takes the host's cluster, as the controller wrote it, into the
    /// agent's own inventory (its DPUs' devices open from it); returns the
    /// revision read at.
    async fn adopt_inventory(&self, etcd: &Etcd) -> Result<i64, FleetError> {
        let key = super::inventory::host_inventory_key(etcd.prefix(), &self.config.host);
        let r = etcd.get(&key).await?;
        let revision = r.header().map_or(0, |h| h.revision());
        let Some(kv) = r.kvs().first() else {
            return Ok(revision);
        };
        let cluster: crate::lifecycle::Cluster =
            serde_json::from_slice(kv.value()).map_err(|e| FleetError::Damaged {
                what: key.clone(),
                reason: format!("it does not read: {e}"),
            })?;
        let daemon = Arc::clone(&self.daemon);
        let who = format!("dse agent {}", self.config.host);
        tokio::task::spawn_blocking(move || daemon.replace_inventory(vec![cluster], &who))
            .await
            .expect("the agent's daemon work does not panic")
            .map_err(|e| FleetError::Damaged {
                what: "the agent's own store".into(),
                reason: e.to_string(),
            })?;
        Ok(revision)
    }

    /// Applies the rule set's text (when it is not what was applied) and
    /// the datapath instances; the error says what was refused.
    async fn apply(
        &self,
        desired: &HostDesired,
        text: Option<super::RuleSetText>,
    ) -> Result<(), String> {
        let daemon = Arc::clone(&self.daemon);
        let wanted = desired.datapaths.clone();
        let mut record = self.applied();
        let new = text.map(|t| {
            let sha = hex::encode(Sha256::digest(&t.text));
            (t, sha)
        });
        let changes_rules = new.as_ref().is_some_and(|(t, sha)| {
            record.rule_set != desired.rule_set
                || record.generation != t.generation
                || &record.sha256 != sha
        });
        let rule_set = desired.rule_set.clone();
        let host = self.config.host.clone();
        let outcome =
            tokio::task::spawn_blocking(move || -> Result<Option<AppliedRecord>, String> {
                let who = format!("dse agent {host}");
                let mut applied = None;
                if changes_rules && let Some((t, sha)) = new {
                    let set = RuleSet::parse_json_bytes(t.text)
                        .and_then(|s| s.validate().map(|()| s))
                        .map_err(|e| {
                            format!("rule set {rule_set} generation {}: {e}", t.generation)
                        })?;
                    daemon.apply(set, None, false, &who).map_err(|e| {
                        format!("rule set {rule_set} generation {}: {e}", t.generation)
                    })?;
                    applied = Some(AppliedRecord {
                        rule_set: rule_set.clone(),
                        generation: t.generation,
                        sha256: sha,
                    });
                }
                reconcile_datapaths(&daemon, &wanted, &who)?;
                Ok(applied)
            })
            .await
            .expect("the agent's daemon work does not panic")?;
        if let Some(applied) = outcome {
            record = applied;
            let path = record_path(&self.config);
            let tmp = path.with_extension("json.tmp");
            std::fs::write(
                &tmp,
                serde_json::to_vec(&record).expect("a record serializes"),
            )
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("recording what was applied in {}: {e}", path.display()))?;
            *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = record;
        }
        Ok(())
    }

    /// The status to report.
    fn status(&self, error: Option<String>) -> HostStatus {
        host_status(&self.daemon, &self.config.host, self.applied(), error)
    }

    async fn report(
        &self,
        registration: &Registration,
        error: Option<String>,
    ) -> Result<(), FleetError> {
        let status = self.status(error);
        let bytes = serde_json::to_vec(&status).expect("a status serializes");
        registration.report(&bytes).await?;
        *self.reported.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
        Ok(())
    }

    /// Reports again if a datapath's state or statistics moved since the
    /// last report: an idle host writes nothing.
    async fn report_if_changed(&self, registration: &Registration) -> Result<(), FleetError> {
        let last = self
            .reported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(last) = last else {
            return self.report(registration, None).await;
        };
        let now = self.status(last.error.clone());
        if now.datapaths != last.datapaths || now.applied != last.applied || now.dpus != last.dpus {
            self.report(registration, last.error).await?;
        }
        Ok(())
    }
}

/// Host `host`'s status: what `applied` records and the state of each of
/// `daemon`'s datapaths.
pub fn host_status(
    daemon: &Daemon,
    host: &str,
    applied: AppliedRecord,
    error: Option<String>,
) -> HostStatus {
    let stats = daemon.stats();
    let clusters = daemon.clusters().unwrap_or_default();
    HostStatus {
        host: host.to_string(),
        applied,
        datapaths: daemon
            .datapaths()
            .into_iter()
            .map(|d| DatapathReport {
                stats: stats.get(&d.name).cloned().unwrap_or_default(),
                name: d.name,
                state: d.state.to_string(),
                in_sync: d.in_sync,
            })
            .collect(),
        error,
        cluster: clusters.first().map(|c| c.name.clone()),
        dpus: clusters
            .iter()
            .flat_map(|c| c.dpus())
            .map(|(_, d)| dpu_report(daemon, &d.serial))
            .collect(),
        reported_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// DPU `serial` as its device reports it.
fn dpu_report(daemon: &Daemon, serial: &str) -> DpuReport {
    use crate::lifecycle::device::Power;
    let mut report = DpuReport {
        serial: serial.to_string(),
        firmware: String::new(),
        os: String::new(),
        datapath: String::new(),
        state: String::new(),
    };
    match daemon.device(serial).and_then(|d| d.status()) {
        Ok(s) => {
            report.firmware = s.running().firmware.to_string();
            report.os = s.running().os.to_string();
            report.datapath = s.datapath.to_string();
            report.state = match s.power {
                Power::Up => "up",
                Power::Booting { .. } => "booting",
            }
            .to_string();
        }
        Err(e) => report.state = e.to_string(),
    }
    report
}

/// `applied.json` beside the agent's store.
fn record_path(config: &AgentConfig) -> PathBuf {
    config.daemon.db.with_file_name("applied.json")
}

/// Attaches the instances of `wanted` the daemon lacks (or has otherwise)
/// and detaches those it has that `wanted` lacks.
fn reconcile_datapaths(
    daemon: &Daemon,
    wanted: &[DatapathInstance],
    who: &str,
) -> Result<(), String> {
    let running = daemon.datapaths();
    for r in &running {
        let same = wanted
            .iter()
            .any(|w| w.name == r.name && w.backend == r.backend && w.interfaces == r.interfaces);
        if !same {
            daemon
                .detach(&r.name, who)
                .map_err(|e| format!("detaching datapath {}: {e}", r.name))?;
        }
    }
    let running = daemon.datapaths();
    for w in wanted {
        if !running.iter().any(|r| r.name == w.name) {
            daemon
                .attach(w.clone(), who)
                .map_err(|e| format!("attaching datapath {}: {e}", w.name))?;
        }
    }
    Ok(())
}
