//! Datapath instances: bringing a backend up on its interfaces (adopting
//! an XDP datapath left pinned by an earlier run), its status, and tearing
//! it down.

use super::{ControlError, DaemonConfig};
use crate::desired::Desired;
use crate::lifecycle::engine::Away;
use crate::store::{Backend, DatapathInstance};
use dse_datapath::datapath::{Datapath, DatapathError};
use dse_datapath::emu::{EmuConfig, EmuDatapath, HostIo, HostPath};
use dse_datapath::netdev::interface_index;
use dse_datapath::rule::RuleSet;
use dse_datapath::xdp::{Program, XdpConfig, XdpDatapath};
use serde::Serialize;
use std::collections::BTreeMap;

/// A memory datapath: one worker, short queues (it carries no traffic).
const MEMORY: EmuConfig = EmuConfig {
    workers: 1,
    cache_entries: 1024,
    queue_depth: 64,
    batch: 32,
};

/// The backend of a running instance.
enum Handle {
    Xdp(Box<XdpDatapath>),
    Host(HostPath),
    Memory(Box<EmuDatapath>),
}

/// A datapath instance as the daemon holds it: running, or failed with
/// the reason.
pub struct Running {
    /// What the store records.
    pub record: DatapathInstance,
    handle: Option<Handle>,
    /// Why it is not running.
    pub error: Option<String>,
    /// Whether it was adopted from an earlier run rather than started.
    pub adopted: bool,
    /// Where its traffic is while its DPU is away (rebooting): on the host
    /// path, or on the partner DPU (the datapath stood down); `None` while
    /// it is on its DPU.
    pub away: Option<Away>,
    /// A program loaded ahead of a swap, with the object it came from.
    prepared: Option<(
        Option<std::path::PathBuf>,
        dse_datapath::xdp::PreparedUpgrade,
    )>,
}

/// How an instance is doing, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    /// Its name.
    pub name: String,
    /// Its backend.
    pub backend: Backend,
    /// Port name -> interface name.
    pub interfaces: BTreeMap<String, String>,
    /// `running` or `failed`.
    pub state: &'static str,
    /// The desired generation it runs, if running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The desired generation (the store's).
    pub desired_generation: u64,
    /// Whether it runs the desired generation (a failed instance never does).
    pub in_sync: bool,
    /// Rule sets it installed since this daemon brought it up: its own
    /// count, apart from the desired generation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installs: Option<u64>,
    /// Whether it was adopted, still forwarding, from an earlier run.
    pub adopted: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What carries the host path's frames, when the host path runs it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_io: Option<HostIo>,
    /// Why the host path runs on AF_PACKET rather than AF_XDP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_io_fallback: Option<String>,
}

impl Running {
    /// Brings `record` up on `rules`, as [`Running::start`], keeping a
    /// failure in [`Running::error`].
    pub fn bring_up(
        config: &DaemonConfig,
        record: DatapathInstance,
        rules: &RuleSet,
        generation: u64,
    ) -> Running {
        match Running::start(config, record.clone(), rules, generation) {
            Ok(r) => r,
            Err(e) => Running {
                record,
                handle: None,
                error: Some(e.to_string()),
                adopted: false,
                away: None,
                prepared: None,
            },
        }
    }

    /// Brings `record` up on `rules`, desired generation `generation`: an
    /// XDP datapath still pinned under its directory is adopted and
    /// converged to `rules` without stopping its traffic; anything else is
    /// started.
    ///
    /// # Errors
    /// The backend's error; nothing is left running.
    pub fn start(
        config: &DaemonConfig,
        record: DatapathInstance,
        rules: &RuleSet,
        generation: u64,
    ) -> Result<Running, DatapathError> {
        let mut adopted = false;
        let handle = match record.backend {
            Backend::Xdp => {
                let xdp = xdp_config(config, &record, program_of(&record)?);
                if XdpDatapath::is_pinned(&xdp.pin_dir) {
                    adopted = true;
                    XdpDatapath::adopt(rules.clone(), generation, xdp)
                        .map(|x| Handle::Xdp(Box::new(x)))
                } else {
                    XdpDatapath::start(rules.clone(), xdp).map(|x| Handle::Xdp(Box::new(x)))
                }
            }
            Backend::Emu => {
                let emu = EmuConfig {
                    workers: config.emu_workers,
                    ..EmuConfig::default()
                };
                HostPath::start(rules.clone(), emu, &record.interfaces).map(Handle::Host)
            }
            Backend::Memory => {
                EmuDatapath::start(rules.clone(), MEMORY).map(|m| Handle::Memory(Box::new(m)))
            }
        }?;
        let dp: &dyn Datapath = match &handle {
            Handle::Xdp(x) => &**x,
            Handle::Host(h) => h,
            Handle::Memory(m) => &**m,
        };
        if dp.generation() != generation {
            dp.set_generation(generation)?;
        }
        Ok(Running {
            record,
            handle: Some(handle),
            error: None,
            adopted,
            away: None,
            prepared: None,
        })
    }

    /// Takes this XDP instance off its interfaces, about to lose its DPU:
    /// to the host path, which starts on the same interfaces with `rules`
    /// before the XDP program leaves them, so each frame meets one or the
    /// other; or, while the partner DPU carries the traffic (the host's
    /// bond was steered away from it), standing down: the program leaves
    /// the interfaces, so a frame that still comes is not forwarded, as on
    /// a rebooting DPU. Returns the XDP datapath's last state, read once it
    /// no longer counts (it must be quiesced), or `None` if it was away
    /// already.
    ///
    /// # Errors
    /// The host path's, the detach's or the snapshot's error; the XDP
    /// datapath is then left running.
    pub fn fail_over(
        &mut self,
        config: &DaemonConfig,
        rules: &RuleSet,
        to: Away,
    ) -> Result<Option<dse_datapath::snapshot::Snapshot>, DatapathError> {
        if self.away.is_some() {
            return Ok(None);
        }
        let Some(Handle::Xdp(xdp)) = &self.handle else {
            return Err(not_running(&self.record.name));
        };
        let pin_dir = xdp_config(config, &self.record, Program::V1).pin_dir;
        let mut host = match to {
            Away::Partner => None,
            Away::HostPath => {
                let emu = EmuConfig {
                    workers: config.emu_workers,
                    ..EmuConfig::default()
                };
                let host =
                    HostPath::take_over(rules.clone(), emu, &self.record.interfaces, &pin_dir)?;
                host.set_generation(xdp.generation())?;
                host.quiesce()?;
                Some(host)
            }
        };
        // On AF_XDP the links are the host path's already; otherwise the
        // program leaves the interfaces here.
        let last = xdp.detach().and_then(|()| xdp.snapshot());
        let last = match last {
            Ok(s) => s,
            Err(e) => {
                // Put the program back on the interfaces before the host path goes.
                let back = match &mut host {
                    Some(h) => h.give_back(&pin_dir),
                    None => Ok(()),
                };
                if let Err(again) = back.and_then(|()| xdp.attach()) {
                    tracing::error!("datapath {}: reattaching: {again}", self.record.name);
                }
                return Err(e);
            }
        };
        self.handle = host.map(Handle::Host);
        remove_pins(config, &self.record);
        self.away = Some(to);
        self.error = None;
        Ok(Some(last))
    }

    /// Brings the XDP datapath back with `snapshot`'s state, running
    /// `object` (none: the built-in program), and takes the traffic back from
    /// the host path: the program is restored before it attaches, and
    /// what the host path counted meanwhile is added to its counters. An
    /// XDP datapath that is running (adopted after a restart) is restored
    /// in place. Leaves it quiesced.
    ///
    /// # Errors
    /// The backend's error; a failed-over instance then stays on the host
    /// path.
    pub fn restore(
        &mut self,
        config: &DaemonConfig,
        snapshot: &dse_datapath::snapshot::Snapshot,
        object: Option<&std::path::Path>,
    ) -> Result<(), DatapathError> {
        let mut record = self.record.clone();
        record.object = object.map(std::path::Path::to_path_buf);
        let program = program_of(&record)?;
        if record.backend == Backend::Emu {
            let dp = self.datapath().ok_or_else(|| not_running(&record.name))?;
            dp.quiesce()?;
            return dp.restore(snapshot);
        }
        match self.handle.take() {
            Some(Handle::Xdp(x)) => {
                let result = (|| {
                    if x.program() != program {
                        x.upgrade(program)?;
                    }
                    x.quiesce()?;
                    x.restore(snapshot)
                })();
                self.handle = Some(Handle::Xdp(x));
                result?;
            }
            other => {
                let xdp = match XdpDatapath::start_restored(
                    snapshot,
                    xdp_config(config, &record, program),
                ) {
                    Ok(x) => x,
                    Err(e) => {
                        remove_pins(config, &record);
                        self.handle = other;
                        return Err(e);
                    }
                };
                // The host path's links, pinned where the XDP datapath
                // finds them: its attach moves each to its program.
                let pin_dir = xdp_config(config, &record, program).pin_dir;
                let mut other = other;
                let handed = match &mut other {
                    Some(Handle::Host(host)) => host.give_back(&pin_dir),
                    _ => Ok(()),
                };
                if let Err(e) = handed.and_then(|()| xdp.attach()) {
                    drop(xdp);
                    if let Some(Handle::Host(host)) = &mut other
                        && let Err(again) = host.reclaim(&pin_dir)
                    {
                        tracing::error!(
                            "datapath {}: host path taking its links back: {again}",
                            record.name
                        );
                    }
                    remove_pins(config, &record);
                    self.handle = other;
                    return Err(e);
                }
                if let Some(Handle::Host(mut host)) = other {
                    // Frames the host path took before the program attached
                    // go through it, however slowly its threads run.
                    host.drain(std::time::Duration::from_secs(2));
                    let carried = host.rule_counters();
                    drop(host);
                    xdp.add_counts(&carried)?;
                }
                self.handle = Some(Handle::Xdp(Box::new(xdp)));
            }
        }
        self.record = record;
        self.away = None;
        self.error = None;
        Ok(())
    }

    /// Loads `object`'s program (none: the built-in one) over the maps of
    /// this XDP instance, ahead of [`Running::upgrade`].
    ///
    /// # Errors
    /// [`DatapathError`] if the object is unknown or does not load.
    pub fn prepare(&mut self, object: Option<&std::path::Path>) -> Result<(), DatapathError> {
        let mut record = self.record.clone();
        record.object = object.map(std::path::Path::to_path_buf);
        let program = program_of(&record)?;
        let Some(Handle::Xdp(x)) = &self.handle else {
            return Err(not_running(&self.record.name));
        };
        self.prepared = None;
        self.prepared = Some((record.object, x.prepare_upgrade(program)?));
        Ok(())
    }

    /// Swaps the running XDP program for `object`'s (none: the built-in
    /// one), hitlessly, with the program [`Running::prepare`] loaded if it
    /// is that one.
    ///
    /// # Errors
    /// [`DatapathError`] if the object is unknown or the swap fails (the
    /// old program then runs on).
    pub fn upgrade(&mut self, object: Option<&std::path::Path>) -> Result<(), DatapathError> {
        let mut record = self.record.clone();
        record.object = object.map(std::path::Path::to_path_buf);
        let program = program_of(&record)?;
        let Some(Handle::Xdp(x)) = &self.handle else {
            return Err(not_running(&self.record.name));
        };
        let prepared = self.prepared.take().filter(|(o, _)| *o == record.object);
        if x.program() != program {
            match prepared {
                Some((_, p)) => x.commit_upgrade(p)?,
                None => x.upgrade(program)?,
            };
        }
        self.record = record;
        Ok(())
    }

    /// The datapath, if running.
    pub fn datapath(&self) -> Option<&dyn Datapath> {
        match self.handle.as_ref()? {
            Handle::Xdp(x) => Some(&**x),
            Handle::Host(h) => Some(h),
            Handle::Memory(m) => Some(&**m),
        }
    }

    /// Its status, compared with desired generation `desired`.
    pub fn status(&self, desired: u64) -> InstanceStatus {
        let state = match (&self.handle, self.away) {
            (None, Some(Away::Partner)) => "on_partner",
            (None, _) => "failed",
            (Some(_), Some(_)) => "failed_over",
            (Some(_), None) => "running",
        };
        let generation = self.datapath().map(|d| d.generation());
        let host_io = match &self.handle {
            Some(Handle::Host(h)) => Some(h.io()),
            _ => None,
        };
        InstanceStatus {
            name: self.record.name.clone(),
            backend: self.record.backend,
            interfaces: self.record.interfaces.clone(),
            state,
            generation,
            desired_generation: desired,
            in_sync: state != "failed" && generation == Some(desired),
            installs: self.datapath().map(|d| d.installs()),
            adopted: self.adopted,
            error: self.error.clone(),
            host_io: host_io.map(|(io, _)| io),
            host_io_fallback: host_io.and_then(|(_, why)| why.map(str::to_string)),
        }
    }

    /// Stops it; an XDP instance's pins go too, which detaches its program
    /// from the interfaces.
    pub fn tear_down(self, config: &DaemonConfig) {
        drop(self.handle);
        remove_pins(config, &self.record);
    }
}

fn not_running(name: &str) -> DatapathError {
    DatapathError::Io {
        what: format!("datapath {name}"),
        source: std::io::Error::other("it is not running as XDP"),
    }
}

/// The XDP configuration of `record`.
fn xdp_config(config: &DaemonConfig, record: &DatapathInstance, program: Program) -> XdpConfig {
    XdpConfig {
        pin_dir: config.bpffs.join(&record.name),
        interfaces: record.interfaces.clone(),
        skb_mode: config.xdp_skb_mode,
        limits: config.xdp_limits,
        program,
    }
}

/// The program `record` runs: the built-in one, or its object's.
///
/// # Errors
/// [`DatapathError::Io`] if the object cannot be read or is not a program
/// this build knows.
fn program_of(record: &DatapathInstance) -> Result<Program, DatapathError> {
    let Some(path) = &record.object else {
        return Ok(Program::V1);
    };
    let what = || format!("datapath {}: XDP object {}", record.name, path.display());
    let bytes = std::fs::read(path).map_err(|source| DatapathError::Io {
        what: what(),
        source,
    })?;
    Program::identify(&bytes).ok_or_else(|| DatapathError::Io {
        what: what(),
        source: std::io::Error::other(
            "not a datapath object this build knows (its map layouts must be known to migrate them)",
        ),
    })
}

/// Removes what an XDP instance `record` pinned (nothing for another
/// backend): with the last descriptor gone, its program leaves the
/// interfaces.
pub fn remove_pins(config: &DaemonConfig, record: &DatapathInstance) {
    if record.backend != Backend::Xdp {
        return;
    }
    let dir = config.bpffs.join(&record.name);
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::error!("removing the pins under {}: {e}", dir.display());
    }
}

/// Checks a new instance against the desired rules and the instances that
/// exist.
///
/// # Errors
/// [`ControlError::BadRequest`], [`ControlError::Refused`] or
/// [`ControlError::Exists`], saying what is wrong.
pub fn check(
    record: &DatapathInstance,
    desired: &Desired,
    instances: &BTreeMap<String, Running>,
) -> Result<(), ControlError> {
    let name = &record.name;
    dse_datapath::name::check("datapath name", name)
        .map_err(|e| ControlError::BadRequest(e.to_string()))?;
    if instances.contains_key(name) {
        return Err(ControlError::Exists(format!(
            "a datapath named {name} exists already: detach it first, or choose another name"
        )));
    }
    if record.backend == Backend::Memory {
        if !record.interfaces.is_empty() {
            return Err(ControlError::BadRequest(format!(
                "datapath {name}: a memory datapath runs on in-memory ports, bound to no interface: give no port=interface"
            )));
        }
        return Ok(());
    }
    if record.interfaces.is_empty() {
        return Err(ControlError::BadRequest(format!(
            "datapath {name}: give at least one port=interface"
        )));
    }
    let defined: Vec<&str> = desired.ports.iter().map(|p| p.name.as_str()).collect();
    for (port, ifname) in &record.interfaces {
        if !defined.contains(&port.as_str()) {
            return Err(ControlError::Refused(format!(
                "datapath {name}: port {port:?} is not defined by the desired rules (ports: {}); apply rules that define it first",
                if defined.is_empty() {
                    "none".to_string()
                } else {
                    defined.join(", ")
                }
            )));
        }
        interface_index(ifname).map_err(|_| {
            ControlError::Refused(format!(
                "datapath {name}: interface {ifname:?} (port {port}) does not exist on this host"
            ))
        })?;
        for other in instances.values() {
            if other.record.interfaces.values().any(|i| i == ifname) {
                return Err(ControlError::Exists(format!(
                    "interface {ifname} is in use by datapath {}: detach that first",
                    other.record.name
                )));
            }
        }
    }
    Ok(())
}
