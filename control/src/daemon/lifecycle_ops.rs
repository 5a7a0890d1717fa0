//! The daemon's lifecycle operations: the images, compliance, pre-check,
//! stage and remediation of its clusters, over the emulated DPUs (kept
//! under `<db dir>/dpus/<serial>/`) and the datapath instances named by
//! DPU serial.

use super::{ControlError, Daemon};
use crate::lifecycle::Bond;
use crate::lifecycle::compliance::{self, ClusterCompliance, Precheck};
use crate::lifecycle::device::{DeviceError, DpuDevice, EmulatedDpu, Emulation, SlotImage};
use crate::lifecycle::engine::{Away, DatapathState, DpuDatapaths, Engine};
use crate::lifecycle::remediation::{Options, Remediation};
use crate::lifecycle::{self, Cluster, DesiredImage, Resolved, Unready};
use dse_datapath::datapath::{Datapath, Fingerprint};
use dse_datapath::pipeline::Count;
use dse_datapath::rule::RuleSet;
use dse_datapath::snapshot::Snapshot;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The answer to a remediation request.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Remediate {
    /// Started: follow it by id.
    Started(Box<Remediation>),
    /// A dry run: what it would do, touching nothing.
    DryRun(ClusterCompliance),
}

impl Daemon {
    fn work_dir(&self) -> PathBuf {
        self.config
            .db
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }

    fn cluster(&self, name: &str) -> Result<Cluster, ControlError> {
        Ok(Unready::cluster(self.store.clusters()?, name)?)
    }

    /// The device of DPU `serial`: the emulated DPU in the work directory,
    /// created from the inventory's versions on first use.
    ///
    /// # Errors
    /// [`DeviceError`] if it cannot be opened, or the serial is not in the
    /// inventory.
    pub fn device(&self, serial: &str) -> Result<Arc<dyn DpuDevice>, DeviceError> {
        // The serial names a directory: never one outside `dpus/`.
        dse_datapath::name::check("DPU serial", serial)?;
        let mut devices = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(d) = devices.get(serial) {
            return Ok(d.clone());
        }
        let clusters = self.store.clusters().unwrap_or_default();
        let Some((_, d)) = clusters
            .iter()
            .flat_map(|c| c.dpus())
            .find(|(_, d)| d.serial == serial)
        else {
            return Err(DeviceError::Unknown(serial.to_string()));
        };
        let image = SlotImage {
            firmware: d.firmware.clone(),
            os: d.os.clone(),
        };
        let dir = self.work_dir().join("dpus").join(serial);
        let dpu = Arc::new(EmulatedDpu::open(&dir, serial, image, d.datapath.clone())?);
        devices.insert(serial.to_string(), dpu.clone());
        Ok(dpu)
    }

    /// What compliance reads of DPU `serial`: its device's state.
    fn seen(&self, serial: &str) -> compliance::Seen {
        compliance::Seen::device(serial, self.device(serial).and_then(|d| d.status()))
    }

    /// Sets how the emulated DPU `serial` behaves (boot time, faults).
    ///
    /// # Errors
    /// [`ControlError::NotFound`] for a serial not in the inventory.
    pub fn emulate(
        &self,
        serial: &str,
        emulation: Emulation,
        who: &str,
    ) -> Result<(), ControlError> {
        self.device(serial).map_err(|e| match e {
            DeviceError::Unknown(_) => ControlError::NotFound {
                what: format!("DPU {serial} in the inventory: add its host first (dse host add)"),
            },
            e => ControlError::BadRequest(e.to_string()),
        })?;
        let dpu = self.devices.lock().unwrap_or_else(|p| p.into_inner())[serial].clone();
        dpu.set_emulation(emulation)
            .map_err(|e| ControlError::BadRequest(e.to_string()))?;
        self.store
            .audit_only(who, &format!("set the emulation of DPU {serial}"), "ok")?;
        Ok(())
    }

    /// Makes `image` cluster `cluster`'s desired image.
    ///
    /// # Errors
    /// [`ControlError::NotFound`], [`ControlError::Image`] naming each misfit.
    pub fn set_image(
        &self,
        cluster: &str,
        image: DesiredImage,
        who: &str,
    ) -> Result<(), ControlError> {
        lifecycle::set_image(&self.store, cluster, image, who)?;
        Ok(())
    }

    /// The cluster and its image, resolved against the depot.
    fn resolved(&self, name: &str) -> Result<(Cluster, Resolved), ControlError> {
        let (c, image) = Unready::check(self.store.clusters()?, name)?;
        let r = lifecycle::image::resolve(&image, &c, &self.store.depot()?)
            .map_err(ControlError::Image)?;
        Ok((c, r))
    }

    /// How cluster `name`'s hosts and DPUs stand against its image.
    ///
    /// # Errors
    /// [`ControlError::NotFound`]; [`ControlError::Lifecycle`] without an image.
    pub fn compliance(&self, name: &str) -> Result<ClusterCompliance, ControlError> {
        let (c, r) = self.resolved(name)?;
        Ok(compliance::cluster(&c, &r, &|s: &str| self.seen(s)))
    }

    /// Checks that cluster `name` can be remediated now.
    ///
    /// # Errors
    /// As [`Daemon::compliance`].
    pub fn precheck(&self, name: &str) -> Result<Precheck, ControlError> {
        let (c, r) = self.resolved(name)?;
        let compliance = compliance::cluster(&c, &r, &|s: &str| self.seen(s));
        let mut elsewhere = Vec::new();
        if let Some(dp) = &r.datapath {
            let known = std::fs::read(&dp.object)
                .ok()
                .and_then(|b| dse_datapath::xdp::Program::identify(&b));
            if known.is_none() {
                elsewhere.push(format!(
                    "datapath {} ({}) is not an XDP object this control plane can load and migrate to",
                    dp.version,
                    dp.object.display()
                ));
            }
        }
        if let Some(id) = self.running_remediation() {
            elsewhere.push(busy(id));
        }
        Ok(Precheck::of(&c, compliance, elsewhere))
    }

    /// Copies the image's payloads to every DPU of cluster `name` that is
    /// not compliant, ahead of remediation. Returns the DPUs staged.
    ///
    /// # Errors
    /// As [`Daemon::compliance`]; [`ControlError::Lifecycle`] naming a DPU
    /// that cannot be staged.
    pub fn stage(&self, name: &str, who: &str) -> Result<Vec<String>, ControlError> {
        let (c, r) = self.resolved(name)?;
        let keys: Vec<String> = r.manifests.iter().map(|m| m.key()).collect();
        let mut staged = Vec::new();
        for (_, d) in c.dpus() {
            self.device(&d.serial)
                .and_then(|dev| dev.stage(&keys))
                .map_err(|e| ControlError::Lifecycle(format!("staging: {e}")))?;
            staged.push(d.serial.clone());
        }
        self.store
            .audit_only(who, &format!("stage the image of cluster {name}"), "ok")?;
        Ok(staged)
    }

    /// Refused on a DPU cluster, as vLCM refuses it.
    ///
    /// # Errors
    /// [`ControlError::Unsupported`] when the cluster has DPUs.
    pub fn refuse_on_dpu_cluster(&self, name: &str, what: &str) -> Result<(), ControlError> {
        Err(unsupported(&self.cluster(name)?, what))
    }

    /// A fresh install of host `host` of cluster `name`: its DPUs imaged
    /// with the cluster image's DPU content (both slots erased, booted),
    /// the host with its host content, its DPU datapaths switched to the
    /// image's program, and the inventory updated. Returns the host's
    /// compliance afterwards.
    ///
    /// # Errors
    /// [`ControlError::NotFound`] for no such cluster or host;
    /// [`ControlError::Lifecycle`] without an image, while a remediation
    /// runs, or naming a DPU that failed to install.
    pub fn fresh_install(
        &self,
        name: &str,
        host: &str,
        who: &str,
    ) -> Result<crate::lifecycle::compliance::HostCompliance, ControlError> {
        let mut slot = self.remediating.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = *slot {
            return Err(ControlError::Lifecycle(busy(id)));
        }
        let (c, r) = self.resolved(name)?;
        let h = c
            .hosts
            .iter()
            .find(|x| x.name == host)
            .ok_or_else(|| ControlError::NotFound {
                what: format!("host {host} in cluster {name}"),
            })?;
        // Held so that no remediation starts meanwhile.
        *slot = Some(0);
        let installed = self.install_host(h, &r);
        *slot = None;
        drop(slot);
        let what = format!("fresh install of host {host} in cluster {name}");
        if let Err(e) = &installed {
            self.store.audit_only(who, &what, &e.to_string())?;
        }
        installed?;
        let states: BTreeMap<String, crate::lifecycle::device::DeviceState> = h
            .dpus
            .iter()
            .filter_map(|d| {
                Some((
                    d.serial.clone(),
                    self.device(&d.serial).ok()?.status().ok()?,
                ))
            })
            .collect();
        lifecycle::record_versions(&self.store, who, name, host, Some(&r.host), &states)?;
        let (c, r) = self.resolved(name)?;
        let h = c
            .hosts
            .iter()
            .find(|x| x.name == host)
            .expect("still there");
        Ok(compliance::host(h, &r, &|s: &str| self.seen(s)))
    }

    fn install_host(&self, h: &crate::lifecycle::Host, r: &Resolved) -> Result<(), ControlError> {
        let failed = |serial: &str, e: &dyn std::fmt::Display| {
            ControlError::Lifecycle(format!("installing DPU {serial}: {e}"))
        };
        for d in &h.dpus {
            let dev = self.device(&d.serial).map_err(|e| failed(&d.serial, &e))?;
            let image = SlotImage {
                firmware: r.firmware.clone().unwrap_or_else(|| d.firmware.clone()),
                os: r.dpu_os.clone(),
            };
            let datapath = r.datapath.as_ref().map_or(&d.datapath, |p| &p.version);
            dev.install(&image, datapath)
                .and_then(|()| dev.wait_up(std::time::Duration::from_secs(60)))
                .map_err(|e| failed(&d.serial, &e))?;
            if let Some(p) = &r.datapath
                && self.datapath_state(&d.serial).is_some()
            {
                DpuDatapaths::upgrade(self, &d.serial, Some(&p.object))
                    .map_err(|e| failed(&d.serial, &e))?;
            }
        }
        Ok(())
    }

    fn running_remediation(&self) -> Option<u64> {
        *self.remediating.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a remediation runs now.
    pub fn remediation_running(&self) -> bool {
        self.running_remediation().is_some()
    }

    /// Host `host` of cluster `cluster`, as the inventory has it.
    pub fn cluster_host(&self, cluster: &str, host: &str) -> Option<crate::lifecycle::Host> {
        self.cluster(cluster)
            .ok()?
            .hosts
            .into_iter()
            .find(|h| h.name == host)
    }

    /// Starts remediating cluster `name` to its image, in the background
    /// (or, for a dry run, says what it would do).
    ///
    /// # Errors
    /// [`ControlError::Lifecycle`] if a pre-check problem stands or another
    /// remediation runs; as [`Daemon::compliance`].
    pub fn remediate(
        self: &Arc<Self>,
        name: &str,
        options: Options,
        dry_run: bool,
        who: &str,
    ) -> Result<Remediate, ControlError> {
        options.check().map_err(ControlError::BadRequest)?;
        let check = self.precheck(name)?;
        if dry_run {
            return Ok(Remediate::DryRun(check.compliance));
        }
        if !check.ok {
            return Err(ControlError::Lifecycle(format!(
                "pre-check failed: {}",
                check.problems.join("; ")
            )));
        }
        let mut slot = self.remediating.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = *slot {
            return Err(ControlError::Lifecycle(busy(id)));
        }
        let c = self.cluster(name)?;
        let id = self.store.remediations()?.last().map_or(1, |r| r.id + 1);
        let image = c.image.clone().expect("pre-checked");
        let r = Remediation::new(id, &c, image, options, who);
        self.store.put_remediation(&r)?;
        self.store.audit_only(
            who,
            &format!("start remediation {id} of cluster {name}"),
            "ok",
        )?;
        *slot = Some(id);
        drop(slot);
        self.spawn_engine(r.clone());
        Ok(Remediate::Started(Box::new(r)))
    }

    /// Resumes every remediation the journal holds unfinished (a control
    /// plane that died mid-way): called once after [`Daemon::open`].
    pub fn resume_remediations(self: &Arc<Self>) {
        let unfinished = match self.store.remediations() {
            Ok(all) => all
                .into_iter()
                .filter(|r| !r.is_finished())
                .collect::<Vec<_>>(),
            Err(e) => {
                tracing::error!("reading the remediation journal: {e}");
                return;
            }
        };
        for r in unfinished {
            tracing::warn!("resuming remediation {} of cluster {}", r.id, r.cluster);
            *self.remediating.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.id);
            self.spawn_engine(r);
        }
    }

    fn spawn_engine(self: &Arc<Self>, r: Remediation) {
        let daemon = Arc::clone(self);
        std::thread::spawn(move || {
            let id = r.id;
            let result = daemon.run_engine(r);
            if let Err(e) = result {
                tracing::error!("remediation {id}: {e}");
            }
            *daemon.remediating.lock().unwrap_or_else(|p| p.into_inner()) = None;
        });
    }

    fn run_engine(&self, r: Remediation) -> Result<(), ControlError> {
        let c = self.cluster(&r.cluster)?;
        let image = lifecycle::image::resolve(&r.image, &c, &self.store.depot()?)
            .map_err(ControlError::Image)?;
        let devices = |s: &str| self.device(s);
        let engine = Engine {
            store: &self.store,
            datapaths: self,
            devices: &devices,
            image,
            work_dir: self.work_dir(),
            crash_at: std::env::var("DSE_CRASH_AT").ok(),
            record: std::sync::Mutex::new(r),
        };
        let done = engine.run()?;
        let results: Vec<String> = done
            .hosts
            .iter()
            .map(|h| format!("{} {:?}", h.host, h.result))
            .collect();
        self.store.audit_only(
            &done.who,
            &format!("remediation {} of cluster {}", done.id, done.cluster),
            &results.join(", "),
        )?;
        Ok(())
    }

    /// Every remediation, oldest first: the lifecycle history.
    ///
    /// # Errors
    /// [`ControlError::Store`].
    pub fn remediations(&self) -> Result<Vec<Remediation>, ControlError> {
        Ok(self.store.remediations()?)
    }

    /// Remediation `id`.
    ///
    /// # Errors
    /// [`ControlError::NotFound`].
    pub fn remediation(&self, id: u64) -> Result<Remediation, ControlError> {
        self.remediations()?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| ControlError::NotFound {
                what: format!("remediation {id}"),
            })
    }

    fn with_instance<T>(
        &self,
        serial: &str,
        f: impl FnOnce(&mut super::Running) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut all = self.instances.write().unwrap_or_else(|p| p.into_inner());
        let r = all
            .get_mut(serial)
            .ok_or_else(|| format!("DPU {serial} has no datapath"))?;
        f(r)
    }

    fn with_datapath<T>(
        &self,
        serial: &str,
        f: impl FnOnce(&dyn Datapath) -> Result<T, dse_datapath::datapath::DatapathError>,
    ) -> Result<T, String> {
        let all = self.read_instances();
        let r = all
            .get(serial)
            .ok_or_else(|| format!("DPU {serial} has no datapath"))?;
        let dp = r.datapath().ok_or_else(|| {
            format!(
                "the datapath of DPU {serial} is not running: {}",
                r.error.as_deref().unwrap_or("no reason recorded")
            )
        })?;
        f(dp).map_err(|e| format!("the datapath of DPU {serial}: {e}"))
    }

    fn record_object(&self, r: &super::Running) -> Result<(), String> {
        self.store
            .put_datapath(&r.record, "lifecycle")
            .map_err(|e| e.to_string())
    }
}

impl DpuDatapaths for Daemon {
    fn datapath_state(&self, serial: &str) -> Option<DatapathState> {
        let all = self.read_instances();
        let r = all.get(serial)?;
        Some(DatapathState {
            failed_over: r.away.is_some(),
            object: r.record.object.clone(),
        })
    }

    fn quiesce(&self, serial: &str) -> Result<(), String> {
        self.with_datapath(serial, |dp| dp.quiesce())
    }

    fn snapshot(&self, serial: &str) -> Result<Snapshot, String> {
        self.with_datapath(serial, |dp| dp.snapshot())
    }

    fn fail_over(
        &self,
        serial: &str,
        rules: &RuleSet,
        to: Away,
    ) -> Result<Option<Snapshot>, String> {
        let config = self.config.clone();
        self.with_instance(serial, |r| {
            r.fail_over(&config, rules, to).map_err(|e| e.to_string())
        })
    }

    fn restore(
        &self,
        serial: &str,
        snapshot: &Snapshot,
        object: Option<&Path>,
    ) -> Result<(), String> {
        let config = self.config.clone();
        self.with_instance(serial, |r| {
            r.restore(&config, snapshot, object)
                .map_err(|e| e.to_string())?;
            self.record_object(r)
        })
    }

    fn prepare(&self, serial: &str, object: Option<&Path>) -> Result<(), String> {
        self.with_instance(serial, |r| r.prepare(object).map_err(|e| e.to_string()))
    }

    fn upgrade(&self, serial: &str, object: Option<&Path>) -> Result<(), String> {
        self.with_instance(serial, |r| {
            r.upgrade(object).map_err(|e| e.to_string())?;
            self.record_object(r)
        })
    }

    /// The datapath's fingerprint with the desired generation in place of
    /// its own: adopting a datapath after a restart moves its own
    /// generation without changing a rule, while every rule change moves
    /// the desired one (and a quiesced datapath refuses changes, so none
    /// is committed while it is).
    fn fingerprint(&self, serial: &str) -> Result<Fingerprint, String> {
        let desired = self.generation();
        self.with_datapath(serial, |dp| {
            Ok(Fingerprint {
                generation: desired,
                ..dp.fingerprint()
            })
        })
    }

    fn current(&self, serial: &str) -> Result<(RuleSet, BTreeMap<u32, Count>), String> {
        self.with_datapath(serial, |dp| Ok((dp.rules(), dp.rule_counters())))
    }

    fn resume(&self, serial: &str) -> Result<(), String> {
        self.with_datapath(serial, |dp| dp.resume())
    }

    fn bond_active(&self, bond: &Bond) -> Result<Option<String>, String> {
        super::bond::active(bond).map_err(|e| e.to_string())
    }

    fn steer(&self, bond: &Bond, member: &str) -> Result<(), String> {
        super::bond::make_active(bond, member).map_err(|e| e.to_string())
    }
}

/// Why `what` (recommendations, the hardware compatibility check) is
/// refused on cluster `c`, as vLCM refuses it on a DPU cluster.
pub(crate) fn unsupported(c: &Cluster, what: &str) -> ControlError {
    if c.dpus().next().is_some() {
        return ControlError::Unsupported(format!(
            "{what} is unsupported on cluster {}: its hosts have DPUs; pick the image by hand (dse image set)",
            c.name
        ));
    }
    ControlError::Unsupported(format!(
        "{what} is unsupported by dse: it manages DPU clusters"
    ))
}

/// What holds the lifecycle: remediation `id`, or a fresh install (0).
pub(crate) fn busy(id: u64) -> String {
    if id == 0 {
        "a fresh install is under way: wait for it to end".into()
    } else {
        format!("remediation {id} is under way: wait for it to end")
    }
}
