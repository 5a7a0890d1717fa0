//! The dse control plane: the desired state, kept in an embedded database,
//! and (in later parts) its reconciliation into the datapaths, the REST API
//! and the CLI.
//!
//! The store is the single source of truth: a rule set becomes desired only
//! once its transaction commits, and a crash leaves either the old or the
//! new generation, never a mix.

pub mod reconcile;
pub mod store;

pub use reconcile::{Diff, Reconciled, reconcile};
pub use store::{AuditEntry, Backend, DatapathInstance, Generation, Store, StoreError};
