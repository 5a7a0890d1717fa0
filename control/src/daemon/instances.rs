//! Datapath instances: bringing a backend up on its interfaces (adopting
//! an XDP datapath left pinned by an earlier run), its status, and tearing
//! it down.

use super::{ControlError, DaemonConfig};
use crate::desired::Desired;
use crate::store::{Backend, DatapathInstance};
use dse_datapath::datapath::{Datapath, DatapathError};
use dse_datapath::emu::{EmuConfig, HostPath};
use dse_datapath::netdev::interface_index;
use dse_datapath::rule::RuleSet;
use dse_datapath::xdp::{Program, XdpConfig, XdpDatapath};
use serde::Serialize;
use std::collections::BTreeMap;

/// The backend of a running instance.
enum Handle {
    Xdp(Box<XdpDatapath>),
    Host(HostPath),
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
    /// The datapath's own generation, if running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Whether it was adopted, still forwarding, from an earlier run.
    pub adopted: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Running {
    /// Brings `record` up on `rules`, as [`Running::start`], keeping a
    /// failure in [`Running::error`].
    pub fn bring_up(config: &DaemonConfig, record: DatapathInstance, rules: &RuleSet) -> Running {
        match Running::start(config, record.clone(), rules) {
            Ok(r) => r,
            Err(e) => Running {
                record,
                handle: None,
                error: Some(e.to_string()),
                adopted: false,
            },
        }
    }

    /// Brings `record` up on `rules`: an XDP datapath still pinned under
    /// its directory is adopted and converged to `rules` without stopping
    /// its traffic; anything else is started.
    ///
    /// # Errors
    /// The backend's error; nothing is left running.
    pub fn start(
        config: &DaemonConfig,
        record: DatapathInstance,
        rules: &RuleSet,
    ) -> Result<Running, DatapathError> {
        let mut adopted = false;
        let handle = match record.backend {
            Backend::Xdp => {
                let xdp = XdpConfig {
                    pin_dir: config.bpffs.join(&record.name),
                    interfaces: record.interfaces.clone(),
                    skb_mode: config.xdp_skb_mode,
                    limits: config.xdp_limits,
                    program: Program::V1,
                };
                if XdpDatapath::is_pinned(&xdp.pin_dir) {
                    adopted = true;
                    XdpDatapath::adopt(rules.clone(), xdp).map(|x| Handle::Xdp(Box::new(x)))
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
        };
        Ok(Running {
            record,
            handle: Some(handle?),
            error: None,
            adopted,
        })
    }

    /// The datapath, if running.
    pub fn datapath(&self) -> Option<&dyn Datapath> {
        match self.handle.as_ref()? {
            Handle::Xdp(x) => Some(&**x),
            Handle::Host(h) => Some(h),
        }
    }

    /// Its status.
    pub fn status(&self) -> InstanceStatus {
        InstanceStatus {
            name: self.record.name.clone(),
            backend: self.record.backend,
            interfaces: self.record.interfaces.clone(),
            state: if self.handle.is_some() {
                "running"
            } else {
                "failed"
            },
            generation: self.datapath().map(|d| d.generation()),
            adopted: self.adopted,
            error: self.error.clone(),
        }
    }

    /// Stops it; an XDP instance's pins go too, which detaches its program
    /// from the interfaces.
    pub fn tear_down(self, config: &DaemonConfig) {
        drop(self.handle);
        remove_pins(config, &self.record);
    }
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
/// [`ControlError::BadRequest`] or [`ControlError::Exists`], saying what is
/// wrong.
pub fn check(
    record: &DatapathInstance,
    desired: &Desired,
    instances: &BTreeMap<String, Running>,
) -> Result<(), ControlError> {
    let name = &record.name;
    let valid = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(ControlError::BadRequest(format!(
            "datapath name {name:?}: use 1 to 32 letters, digits, '-' or '_'"
        )));
    }
    if instances.contains_key(name) {
        return Err(ControlError::Exists(format!(
            "a datapath named {name} exists already: detach it first, or choose another name"
        )));
    }
    if record.interfaces.is_empty() {
        return Err(ControlError::BadRequest(format!(
            "datapath {name}: give at least one port=interface"
        )));
    }
    let defined: Vec<&str> = desired.ports.iter().map(|p| p.name.as_str()).collect();
    for (port, ifname) in &record.interfaces {
        if !defined.contains(&port.as_str()) {
            return Err(ControlError::BadRequest(format!(
                "datapath {name}: port {port:?} is not defined by the desired rules (ports: {}); apply rules that define it first",
                if defined.is_empty() {
                    "none".to_string()
                } else {
                    defined.join(", ")
                }
            )));
        }
        interface_index(ifname).map_err(|_| {
            ControlError::BadRequest(format!(
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
