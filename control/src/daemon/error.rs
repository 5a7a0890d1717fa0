//! Why a control-plane request failed.

use crate::lifecycle::depot::DepotError;
use crate::lifecycle::{ImageError, InventoryError, RuleBroken, Unready};
use crate::store::StoreError;
use dse_datapath::datapath::DatapathError;
use dse_datapath::rule::RuleError;

/// Why a request to the daemon failed. Each says what was wrong and, where
/// it helps, what to do.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The rules were refused; nothing was applied.
    #[error("rules refused: {0}")]
    Rules(#[from] RuleError),
    /// The change was based on another generation than the desired one.
    #[error(
        "generation conflict: the change expected generation {expected}, but the desired rules are at generation {current}; read the rules again (dse rules get) and retry"
    )]
    Conflict {
        /// The generation the change was based on.
        expected: u64,
        /// The desired generation.
        current: u64,
    },
    /// The request itself is wrong (a bad name, a value out of range).
    #[error("{0}")]
    BadRequest(String),
    /// The request is well formed, but what it names is not there or not
    /// allowed here (a port the desired rules do not define, an interface
    /// this host lacks, an import into a daemon that trusts no keys).
    #[error("{0}")]
    Refused(String),
    /// Something by that name or on that interface exists already.
    #[error("{0}")]
    Exists(String),
    /// There is nothing by that name.
    #[error("no {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// A datapath failed; the others were put back and nothing was committed.
    #[error("datapath {name}: {source}")]
    Datapath {
        /// The instance.
        name: String,
        /// What went wrong.
        #[source]
        source: DatapathError,
    },
    /// An inventory change would break cluster rules; each is listed.
    #[error("cluster rules: {}", crate::lifecycle::list(.0))]
    ClusterRules(Vec<RuleBroken>),
    /// An image does not fit its cluster or the depot; each reason is listed.
    #[error("image refused: {}", crate::lifecycle::list(.0))]
    Image(Vec<ImageError>),
    /// The operation is not supported on this kind of cluster.
    #[error("{0}")]
    Unsupported(String),
    /// A lifecycle operation cannot go ahead now (a remediation is
    /// running, a pre-check failed).
    #[error("{0}")]
    Lifecycle(String),
    /// A depot was refused: each refused manifest is named. Nothing was
    /// imported.
    #[error("depot refused: {}", crate::lifecycle::list(.0))]
    Depot(Vec<DepotError>),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<Unready> for ControlError {
    fn from(e: Unready) -> ControlError {
        match e {
            Unready::NoCluster(name) => ControlError::NotFound {
                what: format!("cluster named {name}: create it first (dse cluster create)"),
            },
            Unready::NoImage(_) => ControlError::Lifecycle(e.to_string()),
        }
    }
}

impl From<InventoryError> for ControlError {
    fn from(e: InventoryError) -> ControlError {
        match e {
            InventoryError::NoCluster(name) => Unready::NoCluster(name).into(),
            e @ InventoryError::ClusterExists(_) => ControlError::Exists(e.to_string()),
            InventoryError::Invalid(e) => ControlError::BadRequest(e),
            InventoryError::Rules(broken) => ControlError::ClusterRules(broken),
            InventoryError::Image(broken) => ControlError::Image(broken),
            InventoryError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> ControlError {
        match e {
            StoreError::Conflict { expected, current } => {
                ControlError::Conflict { expected, current }
            }
            e => ControlError::Store(e),
        }
    }
}
