//! The remediation engine: each host through maintenance, quiesce and
//! snapshot, the upgrade of its DPUs and itself, restore and verify,
//! resume. Every step is journaled (see [`super::remediation`]) before it
//! acts; run again on a journal, the engine skips what is done and redoes
//! what was under way, so every step is idempotent.
//!
//! A host that fails has every DPU put back on the image it ran before,
//! its datapaths restored and resumed: no DPU is left on half an image.

mod dpu;

use super::compliance::{self, Status};
use super::device::{DeviceError, DeviceState, DpuDevice, Power};
use super::image::Resolved;
use super::inventory::Bond;
use super::ordering::advance;
use super::remediation::{
    DpuPlan, HostPlan, HostResult, HostRun, PlannedBond, Remediation, Step, StepRecord, StepState,
};
use crate::store::Store;
use dse_datapath::datapath::Fingerprint;
use dse_datapath::pipeline::Count;
use dse_datapath::rule::RuleSet;
use dse_datapath::snapshot::Snapshot;
use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A DPU's datapath as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathState {
    /// Whether the host path carries its traffic.
    pub failed_over: bool,
    /// The XDP object it runs (none: the built-in one).
    pub object: Option<PathBuf>,
}

/// Where a DPU's traffic goes while the DPU reboots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Away {
    /// The host path takes the datapath's interfaces and rules.
    HostPath,
    /// The partner DPU carries it: the host's bond was steered to the
    /// partner's member, and the datapath only stands down.
    Partner,
}

/// The DPUs' datapaths, as the engine drives them (the daemon's datapath
/// instances, named by DPU serial). Every operation is idempotent.
pub trait DpuDatapaths: Send + Sync {
    /// The datapath of DPU `serial`, if it has one.
    fn datapath_state(&self, serial: &str) -> Option<DatapathState>;
    /// Freezes its rules.
    fn quiesce(&self, serial: &str) -> Result<(), String>;
    /// Its state (it must be quiesced).
    fn snapshot(&self, serial: &str) -> Result<Snapshot, String>;
    /// Takes it away from its interfaces, about to lose its DPU: to the host
    /// path with `rules`, or standing down while the partner DPU carries
    /// the traffic; returns its last state, read once it no longer counts
    /// (`None` if it was away already).
    fn fail_over(
        &self,
        serial: &str,
        rules: &RuleSet,
        to: Away,
    ) -> Result<Option<Snapshot>, String>;
    /// Brings it back from `snapshot` running `object` (none: the built-in
    /// program), taking its traffic back from the host path if that had
    /// it; leaves it quiesced.
    fn restore(
        &self,
        serial: &str,
        snapshot: &Snapshot,
        object: Option<&Path>,
    ) -> Result<(), String>;
    /// Loads `object`'s program (none: the built-in one) over its maps
    /// ahead of [`DpuDatapaths::upgrade`], so that the swap itself is quick.
    fn prepare(&self, serial: &str, object: Option<&Path>) -> Result<(), String>;
    /// Swaps its program for `object`'s (none: the built-in one), hitlessly.
    fn upgrade(&self, serial: &str, object: Option<&Path>) -> Result<(), String>;
    /// Its generation, rule count and counter totals.
    fn fingerprint(&self, serial: &str) -> Result<Fingerprint, String>;
    /// Its rules and counters now.
    fn current(&self, serial: &str) -> Result<(RuleSet, BTreeMap<u32, Count>), String>;
    /// Unfreezes its rules.
    fn resume(&self, serial: &str) -> Result<(), String>;
    /// The active member of a host's bond (none while no member is up).
    fn bond_active(&self, bond: &Bond) -> Result<Option<String>, String>;
    /// Makes `member` the active member of a host's bond (idempotent).
    fn steer(&self, bond: &Bond, member: &str) -> Result<(), String>;
}

/// The partner DPU that carries a DPU's traffic while it reboots.
#[derive(Debug, Clone, Copy)]
struct Partner<'a> {
    /// The host's bond.
    bond: &'a Bond,
    /// The partner's serial.
    serial: &'a str,
    /// The partner's member of the bond.
    member: &'a str,
    /// The member to make active once the rebooting DPU is restored: the
    /// one active when the plan was fixed (else its own).
    home: &'a str,
}

/// Finds the device of a DPU by serial.
pub type Devices<'a> = &'a (dyn Fn(&str) -> Result<Arc<dyn DpuDevice>, DeviceError> + Sync);

/// Why a host's attempt failed.
#[derive(Debug, Clone)]
struct Failure {
    /// Whether another attempt may succeed.
    retryable: bool,
    /// Whether a DPU did not come up in time.
    timed_out: bool,
    message: String,
}

impl Failure {
    fn fatal(message: impl Into<String>) -> Failure {
        Failure {
            retryable: false,
            timed_out: false,
            message: message.into(),
        }
    }
}

impl From<DeviceError> for Failure {
    fn from(e: DeviceError) -> Failure {
        Failure {
            retryable: e.retryable(),
            timed_out: matches!(e, DeviceError::TimedOut { .. }),
            message: e.to_string(),
        }
    }
}

impl From<crate::store::StoreError> for Failure {
    fn from(e: crate::store::StoreError) -> Failure {
        Failure::fatal(format!("the journal: {e}"))
    }
}

/// What the engine works with.
pub struct Engine<'a> {
    /// The store holding the journal and the inventory.
    pub store: &'a Store,
    /// The DPUs' datapaths.
    pub datapaths: &'a dyn DpuDatapaths,
    /// The DPUs.
    pub devices: Devices<'a>,
    /// The image, resolved.
    pub image: Resolved,
    /// Where snapshots are kept (a directory per remediation).
    pub work_dir: PathBuf,
    /// Abort the process when this step is first journaled: the
    /// control-plane crash of fault injection (`DSE_CRASH_AT`).
    pub crash_at: Option<String>,
    /// The remediation, as journaled.
    pub record: Mutex<Remediation>,
}

/// How a run ended early: the journal could not be written, or a host's
/// attempt panicked (raised again once the other attempts end).
enum Ended {
    Journal(crate::store::StoreError),
    Panic(Box<dyn std::any::Any + Send>),
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Engine<'_> {
    /// Runs (or resumes) the remediation to its end: every host final.
    ///
    /// The hosts are ordered by [`advance`], as a fleet's leader orders
    /// them (at most `parallel` at once, a retry once its delay is past);
    /// each host under way runs its attempt here, on a thread of its own,
    /// as a fleet's agent runs it. A host the journal holds under way is
    /// resumed.
    ///
    /// # Errors
    /// A store error writing the journal; the remediation is then left
    /// unfinished, to resume.
    pub fn run(&self) -> Result<Remediation, crate::store::StoreError> {
        // On one machine every host's agent is this process: always live.
        let live: BTreeSet<String> = self.lock().hosts.iter().map(|h| h.host.clone()).collect();
        let mut away = BTreeMap::new();
        let (ended, attempts_end) = mpsc::channel();
        let mut failed = None;
        std::thread::scope(|s| {
            let mut under_way: BTreeSet<usize> = BTreeSet::new();
            loop {
                let mut r = self.lock();
                let before = r.clone();
                let now = now_ms();
                advance(&mut r, &BTreeMap::new(), &live, &mut away, now);
                if *r != before
                    && let Err(e) = self.store.put_remediation(&r)
                {
                    failed = Some(Ended::Journal(e));
                    break;
                }
                if r.finished_ms.is_some() {
                    break;
                }
                let start: Vec<usize> = (0..r.hosts.len())
                    .filter(|&h| r.hosts[h].result == HostResult::Running)
                    .filter(|h| !under_way.contains(h))
                    .collect();
                // Until the next retry falls due, or an attempt ends.
                let wait = r
                    .hosts
                    .iter()
                    .filter(|h| h.result == HostResult::RetryPending)
                    .map(|h| h.finished_ms.unwrap_or(0) + r.options.retry_delay_ms)
                    .min()
                    .map_or(Duration::from_secs(1), |due| {
                        Duration::from_millis(due.saturating_sub(now))
                    });
                drop(r);
                for h in start {
                    under_way.insert(h);
                    let ended = ended.clone();
                    s.spawn(move || {
                        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| self.host(h)));
                        let _ = ended.send((h, outcome));
                    });
                }
                if let Ok((h, outcome)) = attempts_end.recv_timeout(wait) {
                    under_way.remove(&h);
                    match outcome {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => failed = Some(Ended::Journal(e)),
                        Err(panic) => failed = Some(Ended::Panic(panic)),
                    }
                    if failed.is_some() {
                        break;
                    }
                }
            }
        });
        match failed {
            None => Ok(self.lock().clone()),
            Some(Ended::Journal(e)) => Err(e),
            Some(Ended::Panic(p)) => std::panic::resume_unwind(p),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Remediation> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes host `h`'s run and journals the remediation durably.
    fn journal(
        &self,
        h: usize,
        change: impl FnOnce(&mut HostRun),
    ) -> Result<(), crate::store::StoreError> {
        let mut r = self.lock();
        change(&mut r.hosts[h]);
        self.store.put_remediation(&r)
    }

    fn run_of(&self, h: usize) -> HostRun {
        self.lock().hosts[h].clone()
    }

    /// One attempt at host `h` (or the rest of one under way), which
    /// [`advance`] set under way, to its result: final, or RETRY_PENDING
    /// for [`advance`] to order again once the retry delay is past.
    fn host(&self, h: usize) -> Result<(), crate::store::StoreError> {
        let outcome = self.attempt(h);
        let retries = self.lock().options.retries;
        let attempts = self.run_of(h).attempts;
        let (result, message) = match outcome {
            Ok(None) => (HostResult::Ok, None),
            Ok(Some(why)) => (HostResult::Skipped, Some(why)),
            Err(f) if f.retryable && attempts <= retries => {
                (HostResult::RetryPending, Some(f.message))
            }
            Err(f) if f.timed_out => (HostResult::TimedOut, Some(f.message)),
            Err(f) => (HostResult::Error, Some(f.message)),
        };
        self.journal(h, |r| {
            r.result = result;
            r.message = message;
            r.finished_ms = Some(now_ms());
        })
    }

    /// Takes `step` (on `dpu`) for host `h`: skipped if this attempt did it
    /// already, else journaled as started, acted, journaled as done or
    /// failed.
    fn step(
        &self,
        h: usize,
        step: Step,
        dpu: Option<&str>,
        act: impl FnOnce() -> Result<String, Failure>,
    ) -> Result<(), Failure> {
        let run = self.run_of(h);
        let attempt = run.attempts;
        let done = |which: Step| {
            run.steps.iter().any(|s| {
                s.attempt == attempt
                    && s.step == which
                    && s.dpu.as_deref() == dpu
                    && s.state == StepState::Done
            })
        };
        let again = step.again_until().is_some_and(|end| !done(end));
        if done(step) && !again {
            return Ok(());
        }
        let mine =
            |s: &StepRecord| s.attempt == attempt && s.step == step && s.dpu.as_deref() == dpu;
        self.journal(h, |r| {
            r.steps.retain(|s| !(mine(s) && s.state != StepState::Done));
            r.steps.push(StepRecord {
                attempt,
                step,
                dpu: dpu.map(str::to_string),
                state: StepState::Started,
                at_ms: now_ms(),
                took_ms: None,
                detail: None,
            });
        })?;
        if self.crash_at.as_deref() == Some(step.name().as_str()) {
            tracing::error!(
                "fault injection: the control plane crashes at step {}",
                step.name()
            );
            std::process::abort();
        }
        let started = Instant::now();
        let out = act();
        let took = started.elapsed().as_millis() as u64;
        self.journal(h, |r| {
            if let Some(s) = r.steps.iter_mut().rev().find(|s| mine(s)) {
                s.state = if out.is_ok() {
                    StepState::Done
                } else {
                    StepState::Failed
                };
                s.took_ms = Some(took);
                s.at_ms = now_ms();
                s.detail = Some(match &out {
                    Ok(d) => d.clone(),
                    Err(f) => f.message.clone(),
                });
            }
        })?;
        out.map(|_| ())
    }

    fn device(&self, serial: &str) -> Result<Arc<dyn DpuDevice>, Failure> {
        Ok((self.devices)(serial)?)
    }

    /// The device's state once it is up.
    fn up(&self, serial: &str) -> Result<DeviceState, Failure> {
        let d = self.device(serial)?;
        let s = d.status()?;
        if matches!(s.power, Power::Booting { .. }) {
            d.wait_up(self.boot_timeout())?;
            return Ok(d.status()?);
        }
        Ok(s)
    }

    fn boot_timeout(&self) -> Duration {
        Duration::from_millis(self.lock().options.boot_timeout_ms)
    }

    fn snapshot_path(&self, serial: &str) -> PathBuf {
        let id = self.lock().id;
        self.work_dir
            .join(format!("remediation-{id}"))
            .join(format!("{serial}.snapshot"))
    }

    fn saved_snapshot(&self, serial: &str) -> Result<Snapshot, Failure> {
        let path = self.snapshot_path(serial);
        let bytes = std::fs::read(&path)
            .map_err(|e| Failure::fatal(format!("reading {}: {e}", path.display())))?;
        Snapshot::decode(&bytes).map_err(|e| Failure::fatal(format!("{}: {e}", path.display())))
    }

    /// One attempt at host `h`: `Ok(Some(why))` when it is skipped.
    fn attempt(&self, h: usize) -> Result<Option<String>, Failure> {
        let plan = match self.run_of(h).plan {
            Some(p) => p,
            None => match self.plan(h)? {
                Ok(p) => p,
                Err(skipped) => return Ok(Some(skipped)),
            },
        };
        let attempt = self.run_of(h).attempts;
        self.step(h, Step::EnterMaintenance, None, || {
            Ok("in maintenance".into())
        })?;
        self.journal(h, |r| r.maintenance = true)?;
        let failed_before = self
            .run_of(h)
            .steps
            .iter()
            .any(|s| s.attempt == attempt && s.state == StepState::Failed);
        let mut failure = None;
        if !failed_before {
            failure = self.upgrade(h, &plan).err();
        }
        if failed_before || failure.is_some() {
            let why = failure.unwrap_or_else(|| Failure::fatal(self.first_failure(h, attempt)));
            for d in &plan.dpus {
                // Best effort per DPU: each is journaled; the first failure is the host's.
                if let Err(e) = self.roll_back(h, d) {
                    tracing::error!(
                        "host {}: rolling DPU {} back: {}",
                        self.run_of(h).host,
                        d.serial,
                        e.message
                    );
                }
            }
            self.finish(h, &plan)?;
            return Err(why);
        }
        self.step(h, Step::UpgradeHost, None, || {
            self.record_versions(h, Some(&plan.host_to))?;
            Ok(format!("host {} -> {}", plan.host_from, plan.host_to))
        })?;
        self.finish(h, &plan)?;
        Ok(None)
    }

    fn first_failure(&self, h: usize, attempt: u32) -> String {
        self.run_of(h)
            .steps
            .iter()
            .find(|s| s.attempt == attempt && s.state == StepState::Failed)
            .and_then(|s| s.detail.clone())
            .unwrap_or_else(|| "an earlier step failed".into())
    }

    /// The partner that carries DPU `d`'s traffic while it reboots: the
    /// other DPU of a bonded host, when the DPUs go one at a time
    /// (`keep_offload`) and the partner's datapath runs on its DPU.
    fn partner<'p>(
        &self,
        plan: &'p HostPlan,
        d: &DpuPlan,
        keep_offload: bool,
    ) -> Option<Partner<'p>> {
        let b = plan.bond.as_ref().filter(|_| keep_offload)?;
        let (serial, member) = b.bond.partner(&d.serial)?;
        let state = self.datapaths.datapath_state(serial)?;
        (!state.failed_over).then_some(Partner {
            bond: &b.bond,
            serial,
            member,
            home: b.active.as_deref().or_else(|| b.bond.member(&d.serial))?,
        })
    }

    /// Resumes every datapath, gives a bonded host's bond back the member
    /// it had active before (if that DPU's datapath is on its DPU), and
    /// takes the host out of maintenance.
    fn finish(&self, h: usize, plan: &HostPlan) -> Result<(), Failure> {
        for d in plan.dpus.iter().filter(|d| d.has_datapath) {
            self.step(h, Step::Resume, Some(&d.serial), || {
                self.datapaths.resume(&d.serial).map_err(Failure::fatal)?;
                Ok("resumed".into())
            })?;
        }
        self.step(h, Step::ExitMaintenance, None, || {
            let Some(PlannedBond {
                bond,
                active: Some(active),
            }) = &plan.bond
            else {
                return Ok("out of maintenance".into());
            };
            let home = bond.members.iter().find(|(_, m)| *m == active);
            let on_dpu = home.is_some_and(|(serial, _)| {
                self.datapaths
                    .datapath_state(serial)
                    .is_none_or(|s| !s.failed_over)
            });
            if !on_dpu {
                return Ok(format!(
                    "out of maintenance; bond {}'s member {active} stays backup: its DPU's datapath is away",
                    bond.name
                ));
            }
            self.datapaths
                .steer(bond, active)
                .map_err(Failure::fatal)?;
            Ok(format!(
                "out of maintenance; bond {}'s active member is {active}",
                bond.name
            ))
        })?;
        self.journal(h, |r| r.maintenance = false)?;
        Ok(())
    }

    /// Fixes host `h`'s plan from its compliance; `Err` says why it is skipped.
    fn plan(&self, h: usize) -> Result<Result<HostPlan, String>, Failure> {
        let (cluster, name) = {
            let r = self.lock();
            (r.cluster.clone(), r.hosts[h].host.clone())
        };
        let host = self
            .store
            .clusters()?
            .into_iter()
            .find(|c| c.name == cluster)
            .and_then(|c| c.hosts.into_iter().find(|x| x.name == name))
            .ok_or_else(|| {
                Failure::fatal(format!("host {name} is no longer in cluster {cluster}"))
            })?;
        let seen = |serial: &str| {
            compliance::Seen::device(serial, (self.devices)(serial).and_then(|d| d.status()))
        };
        let c = compliance::host(&host, &self.image, &seen);
        match c.status {
            Status::Compliant => return Ok(Err("compliant already".into())),
            Status::Incompatible | Status::Unavailable => {
                let why: Vec<String> = c
                    .reason
                    .iter()
                    .cloned()
                    .chain(c.dpus.iter().filter_map(|d| d.reason.clone()))
                    .collect();
                return Ok(Err(format!("{:?}: {}", c.status, why.join("; "))));
            }
            Status::NonCompliant => {}
        }
        let mut dpus = Vec::new();
        for d in &host.dpus {
            let s = self.up(&d.serial)?;
            let running = s.running().clone();
            let to = super::device::SlotImage {
                firmware: self
                    .image
                    .firmware
                    .clone()
                    .unwrap_or(running.firmware.clone()),
                os: self.image.dpu_os.clone(),
            };
            let dp = self.datapaths.datapath_state(&d.serial);
            dpus.push(DpuPlan {
                serial: d.serial.clone(),
                from: running,
                to,
                datapath_from: s.datapath.clone(),
                datapath_to: self
                    .image
                    .datapath
                    .as_ref()
                    .map(|p| (p.version.clone(), p.object.clone())),
                object_from: dp.as_ref().and_then(|d| d.object.clone()),
                has_datapath: dp.is_some(),
            });
        }
        let bond = match &host.bond {
            Some(b) => Some(PlannedBond {
                active: self.datapaths.bond_active(b).map_err(Failure::fatal)?,
                bond: b.clone(),
            }),
            None => None,
        };
        let plan = HostPlan {
            host_from: host.version.clone(),
            host_to: self.image.host.clone(),
            dpus,
            bond,
        };
        let detail = serde_json::to_string(&c.dpus).unwrap_or_default();
        self.step(h, Step::Plan, None, || Ok(detail))?;
        self.journal(h, |r| r.plan = Some(plan.clone()))?;
        Ok(Ok(plan))
    }

    /// Quiesces and snapshots every datapath, then upgrades the DPUs: all
    /// at once, or one at a time when the offload is to stay on.
    fn upgrade(&self, h: usize, plan: &HostPlan) -> Result<(), Failure> {
        for d in &plan.dpus {
            self.step(h, Step::Stage, Some(&d.serial), || self.stage(d))?;
        }
        for d in plan.dpus.iter().filter(|d| d.has_datapath) {
            self.step(h, Step::Quiesce, Some(&d.serial), || {
                self.datapaths.quiesce(&d.serial).map_err(Failure::fatal)?;
                Ok("quiesced".into())
            })?;
            self.step(h, Step::Snapshot, Some(&d.serial), || self.snapshot(d))?;
        }
        let keep_offload = self.lock().options.keep_offload;
        let groups: Vec<Vec<&DpuPlan>> = if keep_offload {
            plan.dpus.iter().map(|d| vec![d]).collect()
        } else {
            vec![plan.dpus.iter().collect()]
        };
        for group in groups {
            let results: Vec<Result<(), Failure>> = std::thread::scope(|s| {
                let running: Vec<_> = group
                    .iter()
                    .map(|d| {
                        let partner = self.partner(plan, d, keep_offload);
                        s.spawn(move || self.upgrade_dpu(h, d, partner))
                    })
                    .collect();
                running
                    .into_iter()
                    .map(|t| {
                        t.join()
                            .unwrap_or_else(|_| Err(Failure::fatal("a DPU's upgrade panicked")))
                    })
                    .collect()
            });
            if let Some(f) = results.into_iter().find_map(Result::err) {
                return Err(f);
            }
        }
        Ok(())
    }

    /// Records in the inventory what host `h`'s DPUs run (and the host
    /// version, if given).
    fn record_versions(
        &self,
        h: usize,
        host_version: Option<&super::Version>,
    ) -> Result<(), Failure> {
        let (cluster, name, who) = {
            let r = self.lock();
            (r.cluster.clone(), r.hosts[h].host.clone(), r.who.clone())
        };
        let mut states = BTreeMap::new();
        let serials: Vec<String> = self
            .run_of(h)
            .plan
            .map(|p| p.dpus.iter().map(|d| d.serial.clone()).collect())
            .unwrap_or_default();
        for s in serials {
            let st = self.up(&s)?;
            states.insert(s, st);
        }
        super::record_versions(self.store, &who, &cluster, &name, host_version, &states)
            .map_err(Failure::from)
    }
}

/// Writes `bytes` to `path` through a synced temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
