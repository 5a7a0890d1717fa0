//! The XDP backend: the compiled tables in BPF maps, executed by the C
//! program of `dse-ebpf` (the offloaded datapath).
//!
//! A transaction writes the next generation into the inactive bank of the
//! masks and subtable entries (rule and action records are written only into
//! slots no installed generation refers to), then flips one word, the
//! generation, whose low bit selects the bank. Flow-cache entries carry the
//! generation they were made under, so the flip invalidates them all.

mod backend;
mod batch;
mod counters;
mod journal;
mod load;
mod mirror;
mod peek;
mod records;

pub use crate::pipeline::Cached;
pub use backend::{PreparedUpgrade, UpgradeReport, XdpConfig, XdpDatapath};
pub use load::{Program, XdpError, XdpInstance, XdpLimits};
pub use peek::{cache_hash, cached};

/// Where the link of an XDP datapath pinned in `pin_dir` to interface
/// `ifname` is pinned: whoever holds that link holds the interface's
/// frames, and moving it from one program to another (`BPF_LINK_UPDATE`)
/// leaves no frame without a program.
pub fn link_pin(pin_dir: &std::path::Path, ifname: &str) -> std::path::PathBuf {
    pin_dir.join(format!("link_{ifname}"))
}
