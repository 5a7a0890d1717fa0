//! `dse demo`: the whole system in one command.
//!
//! As root (mounting bpffs if it is missing), the cluster demo ([`story`]): two hosts and three
//! DPUs in namespaces, the control plane with its store, a realistic rule
//! set offloaded to XDP on every DPU, traffic and its counters, and a
//! remediation to a new image under traffic that loses nothing. Without
//! root it says what it needs and runs the in-memory demo ([`memory`]):
//! traffic through the emulated datapath on in-memory ports.

pub mod cluster;
pub mod depot;
pub mod fleet;
pub mod flows;
pub mod memory;
pub mod report;
pub mod story;
pub mod traffic;

use anyhow::Result;
use std::path::Path;

/// Where the cluster demo's XDP datapaths pin their maps.
const BPFFS: &str = "/sys/fs/bpf";

/// Why the cluster demo cannot run here, if it cannot. As root, mounts
/// bpffs when it is missing, and says so.
pub fn cluster_demo_missing() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("root (it makes network namespaces and veths and loads XDP programs)".into());
    }
    if bpffs_mounted() {
        return None;
    }
    match mount_bpffs() {
        Ok(()) => {
            crate::outln!("dse demo: bpffs was not mounted; mounted it at {BPFFS}.");
            None
        }
        Err(e) => Some(format!(
            "bpffs at {BPFFS}, and mounting it failed ({e}); mount it with `mount -t bpf bpf {BPFFS}`"
        )),
    }
}

fn bpffs_mounted() -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        f.nth(1) == Some(BPFFS) && f.next() == Some("bpf")
    })
}

fn mount_bpffs() -> std::io::Result<()> {
    std::fs::create_dir_all(BPFFS)?;
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL");
    let (source, target, fstype) = (c("bpf"), c(BPFFS), c("bpf"));
    // SAFETY: the strings are valid and NUL-terminated for the call; no
    // data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
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

/// Runs the fleet demo ([`fleet`]); it needs what the cluster demo needs,
/// and etcd.
///
/// # Errors
/// What it needs and lacks, what failed, or a promise that did not hold.
pub fn run_fleet() -> Result<()> {
    if let Some(need) = cluster_demo_missing().or_else(fleet::etcd_missing) {
        anyhow::bail!("the fleet demo needs {need}");
    }
    fleet::run()
}
