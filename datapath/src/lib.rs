//! `dse-datapath`: the packet logic of dse and its datapath backends.
//!
//! Rules ([`rule`]) compile ([`compile`]) into flat tables that every backend
//! executes the same way; [`pipeline`] is the reference execution of those
//! tables, and [`emu`] runs it on worker threads behind the [`Datapath`] trait.

pub mod analysis;
pub mod compile;
pub mod datapath;
pub mod emu;
pub mod frame;
pub mod mem;
pub mod name;
pub mod netdev;
pub mod pipeline;
pub mod rule;
pub mod snapshot;
pub mod strict;
pub mod trace;
pub mod verify;
pub mod wire;
pub mod xdp;

pub use compile::{CompiledTables, compile};
pub use datapath::{Datapath, DatapathError};
pub use frame::Frame;
pub use rule::{RuleError, RuleSet};
