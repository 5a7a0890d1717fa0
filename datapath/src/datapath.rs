//! The one trait every datapath backend implements.
//!
//! A backend executes [`crate::CompiledTables`]; it never interprets a rule
//! itself. Lifecycle: `Running --quiesce--> Quiesced --resume--> Running`.
//! A quiesced datapath keeps forwarding with its current state and refuses
//! rule changes; `snapshot` and `restore` need it quiesced.

use crate::compile::FlowKey;
use crate::pipeline::{Cached, Count, Stats};
use crate::rule::{Rule, RuleError, RuleSet};
use crate::snapshot::{Snapshot, SnapshotError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A rule change, applied atomically: packets see all of it or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transaction {
    /// Replace everything: ports, meters and rules. Shared, so that
    /// handing one rule set to several datapaths copies none of it.
    Replace(std::sync::Arc<RuleSet>),
    /// Add or replace (by id) some rules and remove others, keeping ports and meters.
    Patch {
        /// Rules to add, or to replace where the id exists.
        upsert: Vec<Rule>,
        /// Ids of rules to remove.
        remove: Vec<u32>,
    },
}

/// Where a datapath is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleState {
    /// Forwarding; accepts rule changes.
    Running,
    /// Forwarding with frozen rules; accepts snapshot, restore and resume.
    Quiesced,
}

impl LifecycleState {
    /// `Ok` if the datapath is in `want`, else the error a backend returns
    /// for `operation`, with `hint` saying what to do instead.
    ///
    /// # Errors
    /// [`DatapathError::State`] when `self != want`.
    pub fn require(
        self,
        want: LifecycleState,
        operation: &'static str,
        hint: &'static str,
    ) -> Result<(), DatapathError> {
        if self == want {
            Ok(())
        } else {
            Err(DatapathError::State {
                operation,
                state: self,
                hint,
            })
        }
    }
}

/// What a backend can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Backend name (`emu`, `xdp`).
    pub backend: String,
    /// Most distinct masks.
    pub max_masks: usize,
    /// Most ports.
    pub max_ports: u16,
    /// Worker threads (or CPUs) that process packets.
    pub workers: usize,
    /// Whether upgrades of the program keep forwarding.
    pub hitless_upgrade: bool,
}

/// A cheap summary of a datapath's state: enough to tell that a program
/// swap changed no rule and reset no counter, without copying either.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// The generation in force (every rule change moves it).
    pub generation: u64,
    /// Rules in force.
    pub rules: usize,
    /// Packets counted by all rules.
    pub packets: u64,
    /// Bytes counted by all rules.
    pub bytes: u64,
}

impl Fingerprint {
    /// Whether `self`, taken later, shows the same rules and no counter
    /// reset since `before`.
    pub fn continues(&self, before: &Fingerprint) -> bool {
        self.generation == before.generation
            && self.rules == before.rules
            && self.packets >= before.packets
            && self.bytes >= before.bytes
    }
}

/// Why a datapath operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The rules were refused; nothing was applied.
    #[error("rules refused: {0}")]
    Rules(#[from] RuleError),
    /// The operation is not allowed in the current lifecycle state.
    #[error("{operation} is not allowed while the datapath is {state:?}: {hint}")]
    State {
        /// What was attempted.
        operation: &'static str,
        /// The state it was attempted in.
        state: LifecycleState,
        /// What to do instead.
        hint: &'static str,
    },
    /// A snapshot could not be read or does not fit.
    #[error("snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
    /// The XDP backend failed (loading, a map, attaching).
    #[error("xdp: {0}")]
    Xdp(#[from] crate::xdp::XdpError),
    /// An OS-level operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A datapath backend.
pub trait Datapath: Send + Sync {
    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Applies a transaction atomically as desired generation `generation`
    /// (the control plane's number for the rule set that results).
    ///
    /// # Errors
    /// [`DatapathError::State`] while quiesced; [`DatapathError::Rules`] if
    /// the result does not validate or compile (nothing is applied).
    fn apply_as(&self, txn: Transaction, generation: u64) -> Result<(), DatapathError>;

    /// Applies a transaction atomically as the generation after the one in
    /// force, and returns that generation.
    ///
    /// # Errors
    /// As [`Datapath::apply_as`].
    fn apply(&self, txn: Transaction) -> Result<u64, DatapathError> {
        let next = self.generation() + 1;
        self.apply_as(txn, next)?;
        Ok(next)
    }

    /// The desired generation in force: the number the control plane gave
    /// the rules this datapath runs (1 for the rules it started with,
    /// unless [`Datapath::set_generation`] said otherwise).
    fn generation(&self) -> u64;

    /// Labels the rules in force desired generation `generation`, without
    /// changing them (a datapath started or adopted on the desired rules).
    ///
    /// # Errors
    /// Backend-specific failures to record it.
    fn set_generation(&self, generation: u64) -> Result<(), DatapathError>;

    /// What the datapath's flow caches hold for `key`, read without
    /// changing them: the XDP program's one cache, or each host-path
    /// worker's, in worker order.
    ///
    /// # Errors
    /// [`DatapathError::Xdp`] if the XDP program's maps cannot be read.
    fn cached(&self, key: &FlowKey) -> Result<Vec<Cached>, DatapathError>;

    /// How many rule sets this datapath has installed since it started:
    /// its own count, which moves with every transaction, restore and
    /// adoption, whatever the desired generation.
    fn installs(&self) -> u64;

    /// The rule set in force.
    fn rules(&self) -> RuleSet;

    /// Datapath statistics.
    fn stats(&self) -> Stats;

    /// Per-rule counters, by rule id, for the rules in force.
    fn rule_counters(&self) -> BTreeMap<u32, Count>;

    /// The lifecycle state.
    fn state(&self) -> LifecycleState;

    /// Generation, rule count and counter totals. The default reads every
    /// rule and counter; a backend may do it cheaper.
    fn fingerprint(&self) -> Fingerprint {
        let counters = self.rule_counters();
        Fingerprint {
            generation: self.generation(),
            rules: counters.len(),
            packets: counters.values().map(|c| c.packets).sum(),
            bytes: counters.values().map(|c| c.bytes).sum(),
        }
    }

    /// Freezes the rules; forwarding goes on. Idempotent.
    ///
    /// # Errors
    /// Backend-specific failures.
    fn quiesce(&self) -> Result<(), DatapathError>;

    /// Captures rules, generation, counters and meter state.
    ///
    /// # Errors
    /// [`DatapathError::State`] unless quiesced.
    fn snapshot(&self) -> Result<Snapshot, DatapathError>;

    /// Rebuilds the state in `snapshot` exactly.
    ///
    /// # Errors
    /// [`DatapathError::State`] unless quiesced; [`DatapathError::Rules`] if
    /// its rules do not compile here.
    fn restore(&self, snapshot: &Snapshot) -> Result<(), DatapathError>;

    /// Unfreezes the rules. Idempotent.
    ///
    /// # Errors
    /// Backend-specific failures.
    fn resume(&self) -> Result<(), DatapathError>;
}
