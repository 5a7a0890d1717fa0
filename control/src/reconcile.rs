//! Reconciliation: the difference between what a datapath runs and what
//! the store wants, applied as one atomic transaction.
//!
//! The diff is pure (it is also what a dry run shows). A change that keeps
//! ports and meters becomes a `Patch` of only the rules that differ, so a
//! one-rule change costs one rule's work in the datapath; a change of ports
//! or meters becomes a `Replace`. Desired rules are validated (compiled)
//! before anything is applied, so bad input changes nothing.

use dse_datapath::datapath::{Datapath, DatapathError, Transaction};
use dse_datapath::rule::{Rule, RuleError, RuleSet};
use serde::Serialize;

/// What differs between an installed and a desired rule set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Rules only the desired set has.
    pub added: Vec<Rule>,
    /// Rules whose id both have but whose contents differ, as desired.
    pub changed: Vec<Rule>,
    /// Ids of rules only the installed set has.
    pub removed: Vec<u32>,
    /// Whether ports or meters differ (the change is then a full replace).
    pub ports_or_meters: bool,
}

impl Diff {
    /// The difference that takes `installed` to `desired`.
    pub fn between(installed: &RuleSet, desired: &RuleSet) -> Diff {
        crate::desired::Desired::new(0, installed).diff_to(desired)
    }

    /// The counts of this diff.
    pub fn summary(&self) -> crate::desired::Summary {
        crate::desired::Summary {
            added: self.added.len(),
            changed: self.changed.len(),
            removed: self.removed.len(),
            ports_or_meters: self.ports_or_meters,
        }
    }

    /// Whether nothing differs.
    pub fn is_empty(&self) -> bool {
        !self.ports_or_meters
            && self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
    }

    /// The transaction that applies this diff, whose desired set is
    /// `desired`; `None` when nothing differs. A change of ports or meters,
    /// or of more than 1024 rules and a quarter of the set, is a whole
    /// `Replace` (the backend compiles it afresh); anything else a `Patch`.
    pub fn transaction(&self, desired: &RuleSet) -> Option<Transaction> {
        if self.is_empty() {
            None
        } else if self.ports_or_meters || self.summary().is_large(desired.rules.len()) {
            Some(Transaction::Replace(desired.clone().into()))
        } else {
            Some(Transaction::Patch {
                upsert: self.added.iter().chain(&self.changed).cloned().collect(),
                remove: self.removed.clone(),
            })
        }
    }
}

/// What one reconciliation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// What differed.
    pub diff: Diff,
    /// The datapath's generation afterwards (unchanged if nothing differed).
    pub generation: u64,
}

/// Checks that `desired` validates and compiles, as every backend will
/// compile it.
///
/// # Errors
/// The [`RuleError`] naming the rule and the field.
pub fn validate(desired: &RuleSet) -> Result<(), RuleError> {
    dse_datapath::compile(desired).map(drop)
}

/// Makes `datapath` run `desired`: one atomic transaction of the
/// difference, or nothing if there is none.
///
/// # Errors
/// [`DatapathError::Rules`] if `desired` does not compile (nothing is
/// applied); the backend's error otherwise (its transaction is atomic, so
/// it then still runs what it ran).
pub fn reconcile(datapath: &dyn Datapath, desired: &RuleSet) -> Result<Reconciled, DatapathError> {
    validate(desired)?;
    let diff = Diff::between(&datapath.rules(), desired);
    let generation = match diff.transaction(desired) {
        Some(txn) => datapath.apply(txn)?,
        None => datapath.generation(),
    };
    Ok(Reconciled { diff, generation })
}
