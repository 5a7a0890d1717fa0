//! The Linux peers `dse bench` compares with: nftables (Linux forwarding
//! in the kernel) and Open vSwitch's userspace datapath, each given a
//! translation of the same dse rule set.

pub mod fields;
pub mod nft;
pub mod openflow;
mod ovs;

pub use fields::TranslateError;
pub use ovs::{BRIDGE, Ovs, which};

use crate::lab::{LabError, Netns};
use std::path::Path;
use std::time::{Duration, Instant};

/// Whether `nft` is installed.
pub fn nft_available() -> bool {
    which("nft")
}

/// Loads the nftables script `file` in namespace `ns` and returns how long
/// `nft -f` took.
///
/// # Errors
/// [`LabError::Command`] with nft's own message if it refuses the script.
pub fn nft_load(ns: &Netns, file: &Path) -> Result<Duration, LabError> {
    let start = Instant::now();
    ns.exec(&["nft", "-f", &file.to_string_lossy()])?;
    Ok(start.elapsed())
}
