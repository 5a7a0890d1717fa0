//! The emulated backend: the reference pipeline on worker threads — the
//! host's software path.
//!
//! Frames enter through in-memory ports ([`EmuDatapath::inject`]), are spread
//! over workers by a flow hash (so one flow stays in order, as NIC RSS does),
//! processed in batches, and leave on per-port output queues or the host
//! queue. A transaction swaps in a whole new [`Installed`] generation with
//! one atomic pointer store; each batch runs under the generation it loaded.

mod afxdp;
mod control;
mod host_path;
mod packet_socket;
mod worker;
mod xsk;

pub use afxdp::{AfXdpFloor, af_xdp_refusal};
pub use control::EmuDatapath;
pub use host_path::{HostIo, HostPath, IoChoice, IoCounters};
pub use packet_socket::{MAX_FRAME, PacketSocket};
pub use xsk::XskPort;

use crate::frame::Frame;

/// Tuning of the emulated backend.
#[derive(Debug, Clone)]
pub struct EmuConfig {
    /// Worker threads.
    pub workers: usize,
    /// Flow-cache entries per worker.
    pub cache_entries: usize,
    /// Frames per worker input queue and per output queue.
    pub queue_depth: usize,
    /// Most frames a worker takes per batch.
    pub batch: usize,
}

impl Default for EmuConfig {
    fn default() -> Self {
        EmuConfig {
            workers: 2,
            cache_entries: crate::pipeline::DEFAULT_CACHE_ENTRIES,
            queue_depth: 4096,
            batch: 32,
        }
    }
}

/// A frame leaving the datapath.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    /// The port it came in on.
    pub in_port: u16,
    /// The frame, as the actions left it.
    pub frame: Frame,
}

/// Why a frame could not be injected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// The worker's input queue is full; try again.
    #[error("input queue of worker {worker} is full")]
    Full {
        /// The worker whose queue is full.
        worker: usize,
    },
    /// The port index is not defined by the rule set in force.
    #[error("port {0} is not defined")]
    UnknownPort(u16),
}
