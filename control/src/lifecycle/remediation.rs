//! A remediation's journal: what was planned for each host and each step
//! taken, written to the store before the step acts, so that a control
//! plane that dies mid-remediation picks it up where it stopped.

use super::device::SlotImage;
use super::image::DesiredImage;
use super::inventory::Version;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How a remediation runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Hosts remediated at once (at least 1).
    pub parallel: usize,
    /// Upgrade a dual-DPU host's DPUs one at a time, so that one of them
    /// offloads throughout; otherwise both go at once.
    pub keep_offload: bool,
    /// Further attempts of a host whose failure may pass (a failed flash,
    /// a DPU that did not come up in time).
    pub retries: u32,
    /// Wait between attempts, in milliseconds.
    pub retry_delay_ms: u64,
    /// Longest wait for a DPU to come up, in milliseconds.
    pub boot_timeout_ms: u64,
}

impl Options {
    /// Checks what the options' types cannot say: 1 to 96 hosts at once,
    /// as vCenter allows.
    ///
    /// # Errors
    /// What is wrong, naming the field.
    pub fn check(&self) -> Result<(), String> {
        if (1..=96).contains(&self.parallel) {
            Ok(())
        } else {
            Err(format!(
                "parallel is {}: give 1 to 96 hosts at once",
                self.parallel
            ))
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            parallel: 1,
            keep_offload: false,
            retries: 1,
            retry_delay_ms: 500,
            boot_timeout_ms: 30_000,
        }
    }
}

/// How a host's remediation ends (or stands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HostResult {
    /// Not started.
    Pending,
    /// Under way.
    Running,
    /// On the image, its datapaths restored and verified.
    Ok,
    /// Left alone: compliant already, or not remediable (the reason says).
    Skipped,
    /// A DPU did not come up in time, after every attempt.
    TimedOut,
    /// Failed; its DPUs are back on the image they ran before.
    Error,
    /// Failed in a way that may pass; another attempt is due.
    RetryPending,
}

impl HostResult {
    /// Whether the host is done with.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            HostResult::Pending | HostResult::Running | HostResult::RetryPending
        )
    }
}

/// A step of a host's remediation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// Compare the host with the image and fix the plan.
    Plan,
    /// Put the host into maintenance.
    EnterMaintenance,
    /// Freeze a DPU datapath's rules.
    Quiesce,
    /// Save a DPU datapath's state to disk.
    Snapshot,
    /// Copy the image's payloads to a DPU.
    Stage,
    /// Move a DPU's traffic to its partner DPU through the host's bond,
    /// or to the host path.
    FailOver,
    /// Write the new image into a DPU's spare slot.
    Flash,
    /// Boot a DPU into its new slot.
    Reboot,
    /// Bring a DPU's datapath back from its snapshot, taking the traffic back.
    Restore,
    /// Swap a DPU's datapath program, hitlessly.
    UpgradeDatapath,
    /// Check a DPU datapath's rules and counters against its snapshot.
    Verify,
    /// Put a DPU back on the image it ran before.
    RollBack,
    /// Upgrade the host itself.
    UpgradeHost,
    /// Unfreeze a DPU datapath.
    Resume,
    /// Take the host out of maintenance.
    ExitMaintenance,
}

impl Step {
    /// Every step, in the order a host takes them.
    pub const ALL: [Step; 15] = [
        Step::Plan,
        Step::EnterMaintenance,
        Step::Quiesce,
        Step::Snapshot,
        Step::Stage,
        Step::FailOver,
        Step::Flash,
        Step::Reboot,
        Step::Restore,
        Step::UpgradeDatapath,
        Step::Verify,
        Step::RollBack,
        Step::UpgradeHost,
        Step::Resume,
        Step::ExitMaintenance,
    ];

    /// Its name, as the journal and `DSE_CRASH_AT` spell it.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The step that ends the state this one sets up, for a step taken
    /// again on resume even when journaled done: quiescing and failing
    /// over are states a restarted control plane must set up again, until
    /// resuming and restoring end them.
    pub fn again_until(self) -> Option<Step> {
        match self {
            Step::Quiesce => Some(Step::Resume),
            Step::FailOver => Some(Step::Restore),
            _ => None,
        }
    }
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Journaled, about to act (or acting when the control plane died).
    Started,
    /// Done.
    Done,
    /// Failed; the detail says why.
    Failed,
}

/// One step, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The attempt it belongs to, from 1.
    pub attempt: u32,
    /// The step.
    pub step: Step,
    /// The DPU it acts on, if one.
    pub dpu: Option<String>,
    /// Where it stands.
    pub state: StepState,
    /// When it last changed, Unix milliseconds.
    pub at_ms: u64,
    /// How long it took, once done or failed.
    pub took_ms: Option<u64>,
    /// What it did, or why it failed.
    pub detail: Option<String>,
}

/// What a DPU is to go through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpuPlan {
    /// Its serial.
    pub serial: String,
    /// What it runs.
    pub from: SlotImage,
    /// What the image wants.
    pub to: SlotImage,
    /// The datapath version it runs.
    pub datapath_from: Version,
    /// The datapath version the image wants, and its XDP object.
    pub datapath_to: Option<(Version, PathBuf)>,
    /// The XDP object its datapath runs now (none: the built-in one).
    pub object_from: Option<PathBuf>,
    /// Whether it has a datapath to quiesce, snapshot and restore.
    pub has_datapath: bool,
}

impl DpuPlan {
    /// Whether the upgrade reboots it (firmware or OS changes).
    pub fn reboots(&self) -> bool {
        self.from != self.to
    }

    /// Whether its datapath program changes.
    pub fn swaps_datapath(&self) -> bool {
        self.datapath_to
            .as_ref()
            .is_some_and(|(v, _)| *v != self.datapath_from)
    }
}

/// What a host is to go through, fixed when its remediation starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPlan {
    /// The host version it runs.
    pub host_from: Version,
    /// The host version the image wants.
    pub host_to: Version,
    /// Its DPUs.
    pub dpus: Vec<DpuPlan>,
    /// Its uplink bond, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bond: Option<PlannedBond>,
}

/// A host's uplink bond, as the plan found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedBond {
    /// The bond.
    pub bond: crate::lifecycle::Bond,
    /// Its active member when the plan was fixed, which it gets back at
    /// the end (none: none was up).
    pub active: Option<String>,
}

/// A host's remediation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRun {
    /// The host.
    pub host: String,
    /// How it stands.
    pub result: HostResult,
    /// Attempts begun.
    pub attempts: u32,
    /// Whether it is in maintenance.
    pub maintenance: bool,
    /// Why it was skipped or failed.
    pub message: Option<String>,
    /// The plan, once made.
    pub plan: Option<HostPlan>,
    /// Every step of every attempt, in order.
    pub steps: Vec<StepRecord>,
    /// When it started and finished, Unix milliseconds.
    pub started_ms: Option<u64>,
    /// When it finished.
    pub finished_ms: Option<u64>,
}

/// A cluster's remediation to its image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remediation {
    /// Its id, from 1.
    pub id: u64,
    /// The cluster.
    pub cluster: String,
    /// The image it brings the cluster to.
    pub image: DesiredImage,
    /// How it runs.
    pub options: Options,
    /// Who asked for it.
    pub who: String,
    /// When it started, Unix milliseconds.
    pub started_ms: u64,
    /// When it finished.
    pub finished_ms: Option<u64>,
    /// Its hosts, in order.
    pub hosts: Vec<HostRun>,
}

impl HostRun {
    /// Host `host`, not started.
    pub fn pending(host: &str) -> HostRun {
        HostRun {
            host: host.to_string(),
            result: HostResult::Pending,
            attempts: 0,
            maintenance: false,
            message: None,
            plan: None,
            steps: Vec::new(),
            started_ms: None,
            finished_ms: None,
        }
    }
}

impl Remediation {
    /// Remediation `id` of `cluster` to `image`, asked for by `who` now,
    /// every host pending.
    pub fn new(
        id: u64,
        cluster: &super::Cluster,
        image: DesiredImage,
        options: Options,
        who: &str,
    ) -> Remediation {
        Remediation {
            id,
            cluster: cluster.name.clone(),
            image,
            options,
            who: who.to_string(),
            started_ms: crate::store::now_ms(),
            finished_ms: None,
            hosts: cluster
                .hosts
                .iter()
                .map(|h| HostRun::pending(&h.name))
                .collect(),
        }
    }

    /// Whether every host is done with.
    pub fn is_finished(&self) -> bool {
        self.finished_ms.is_some()
    }
}
