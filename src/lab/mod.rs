//! A lab of network namespaces and veth pairs that a run builds for itself
//! and removes on drop, etcd clusters of real processes, and the CPU placement that makes figures on a
//! two-core machine comparable.

pub mod control;
mod cpu;
mod etcd;
pub mod fleet;
mod netns;

pub use cpu::{
    CpuBusy, STALL, Stalls, cpu_busy, online_cpus, pin_napi, pin_napi_threads, pin_thread, stalls,
};
pub use etcd::EtcdCluster;
pub use netns::{Netns, Veth, mac_of, mac_text, run};

/// What went wrong building or driving the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command failed; its standard error says why.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on standard error.
        stderr: String,
    },
    /// A system call or file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}
