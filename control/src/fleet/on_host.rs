//! What only a host can do, asked of its agent (see [`super::ask`]), which
//! owns its DPU devices and its depot: stage a cluster image on its DPUs,
//! install it afresh on the host, or set a DPU's emulation. Each is what a
//! single machine does for itself; the agent answers with what that gave.

use super::ask;
use super::etcd::{Etcd, FleetError};
use crate::lifecycle::DesiredImage;
use crate::lifecycle::compliance::HostCompliance;
use crate::lifecycle::device::Emulation;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The kind of a stage request, as its keys name it.
pub const STAGE: &str = "stage";
/// The kind of a fresh install request.
pub const INSTALL: &str = "install";
/// The kind of an emulation request.
pub const EMULATION: &str = "emulation";

/// A stage or fresh install request: the image of the host's cluster. The
/// agent brings the image's depot content from etcd into its own depot,
/// checked again with its own trusted keys, before it uses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageWork {
    /// The host's cluster.
    pub cluster: String,
    /// Its image.
    pub image: DesiredImage,
}

/// An emulation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetEmulation {
    /// The DPU.
    pub serial: String,
    /// Its settings.
    pub emulation: Emulation,
}

/// Asks `host`'s agent to stage `image` of `cluster` on its DPUs, and
/// waits up to `within` for its answer: the serials staged on, or why
/// not.
///
/// # Errors
/// [`FleetError::AgentSilent`] when the agent does not answer in time;
/// etcd's error.
pub async fn stage(
    etcd: &Etcd,
    host: &str,
    work: ImageWork,
    within: Duration,
) -> Result<Result<Vec<String>, String>, FleetError> {
    ask::ask(etcd, host, STAGE, work, within).await
}

/// Asks `host`'s agent to install `image` of `cluster` afresh on the host
/// and its DPUs, and waits up to `within` for its answer: the host's
/// compliance afterwards, or why it was not installed.
///
/// # Errors
/// As [`stage`].
pub async fn install(
    etcd: &Etcd,
    host: &str,
    work: ImageWork,
    within: Duration,
) -> Result<Result<HostCompliance, String>, FleetError> {
    ask::ask(etcd, host, INSTALL, work, within).await
}

/// Asks `host`'s agent to give one of its DPUs new emulation settings,
/// and waits up to `within` for its answer: set, or why not.
///
/// # Errors
/// As [`stage`].
pub async fn emulate(
    etcd: &Etcd,
    host: &str,
    set: SetEmulation,
    within: Duration,
) -> Result<Result<(), String>, FleetError> {
    ask::ask(etcd, host, EMULATION, set, within).await
}
