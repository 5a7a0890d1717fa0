//! The dse control plane: the desired state, kept in an embedded database,
//! its reconciliation into the datapaths, the daemon that serves the REST
//! API (`dse serve`), and the client the CLI drives it with.
//!
//! The store is the single source of truth: a rule set becomes desired only
//! once its transaction commits, and a crash leaves either the old or the
//! new generation, never a mix.

pub mod api;
pub mod client;
pub mod daemon;
pub mod desired;
pub mod fleet;
pub mod lifecycle;
pub mod reconcile;
pub mod serve;
pub mod store;

pub use daemon::{Applied, ControlError, Daemon, DaemonConfig};
pub use reconcile::{Diff, Reconciled, reconcile};
pub use store::{AuditEntry, Backend, DatapathInstance, Generation, Store, StoreError};
