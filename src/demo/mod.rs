//! `dse demo`: the whole system in one command.
//!
//! As root (with bpffs), the cluster demo ([`story`]): two hosts and three
//! DPUs in namespaces, the control plane with its store, a realistic rule
//! set offloaded to XDP on every DPU, traffic and its counters, and a
//! remediation to a new image under traffic that loses nothing. Without
//! root it says what it needs and runs the in-memory demo ([`memory`]):
//! traffic through the emulated datapath on in-memory ports.

pub mod cluster;
pub mod depot;
pub mod flows;
pub mod memory;
pub mod report;
pub mod story;
pub mod traffic;

use anyhow::Result;
use std::path::Path;

/// Why the cluster demo cannot run here, if it cannot.
pub fn cluster_demo_missing() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("root (it makes network namespaces and veths and loads XDP programs)".into());
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if !mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        return Some("bpffs at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)".into());
    }
    None
}

/// Runs the cluster demo, or, if it cannot run here or `in_memory` asks
/// for it, the in-memory demo on `rules`.
///
/// # Errors
/// What failed, or a promise of the cluster demo that did not hold.
pub fn run(in_memory: bool, rules: &Path, packets: u64, workers: usize) -> Result<()> {
    if !in_memory {
        match cluster_demo_missing() {
            None => return story::run(),
            Some(need) => {
                crate::outln!(
                    "dse demo: the cluster demo needs {need}; running the in-memory demo instead.\n"
                );
            }
        }
    }
    memory::run(rules, packets, workers)
}
