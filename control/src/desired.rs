//! The desired rule set in memory, as the daemon holds it between changes:
//! rules by id, so that a one-rule patch costs one rule's work, each
//! packed ([`Packed`]), so that a million of them cost tens of megabytes
//! rather than hundreds.

use crate::reconcile::Diff;
use dse_datapath::rule::{MeterDef, Packed, PortDef, Rule, RuleError, RuleSet};
use std::collections::BTreeMap;

/// How many rules a change adds, changes and removes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Rules added.
    pub added: usize,
    /// Rules changed.
    pub changed: usize,
    /// Rules removed.
    pub removed: usize,
    /// Whether ports or meters change.
    pub ports_or_meters: bool,
}

impl Summary {
    /// Whether the change is large enough to send whole (a `Replace`):
    /// more than 1024 rules and more than a quarter of the `desired` ones.
    pub fn is_large(&self, desired: usize) -> bool {
        let n = self.added + self.changed + self.removed;
        n > 1024 && n * 4 > desired
    }
}

/// The rule set a generation of the store holds.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// The store's generation (0 before the first rule set).
    pub generation: u64,
    /// Ports.
    pub ports: Vec<PortDef>,
    /// Meters.
    pub meters: Vec<MeterDef>,
    /// Rules by id, packed.
    pub rules: BTreeMap<u32, Packed>,
}

impl Desired {
    /// Generation `generation` holding `set`.
    pub fn new(generation: u64, set: &RuleSet) -> Desired {
        Desired {
            generation,
            ports: set.ports.clone(),
            meters: set.meters.clone(),
            rules: set.rules.iter().map(|r| (r.id, Packed::new(r))).collect(),
        }
    }

    /// The whole rule set, rules in id order.
    pub fn rule_set(&self) -> RuleSet {
        RuleSet {
            ports: self.ports.clone(),
            meters: self.meters.clone(),
            rules: self.rules.values().map(Packed::unpack).collect(),
        }
    }

    /// Whether the set holds `rule` as it is (by id, and equal).
    pub fn holds(&self, rule: &Rule) -> bool {
        self.rules.get(&rule.id).is_some_and(|p| p.is(rule))
    }

    /// Calls `each(rule, is_new)` for every rule of `set` that this set
    /// lacks or holds otherwise; returns how many of this set's rules `set`
    /// also has.
    fn walk<'a>(&self, set: &'a RuleSet, mut each: impl FnMut(&'a Rule, bool)) -> usize {
        let mut kept = 0;
        for rule in &set.rules {
            match self.rules.get(&rule.id) {
                None => each(rule, true),
                Some(old) => {
                    kept += 1;
                    if !old.is(rule) {
                        each(rule, false);
                    }
                }
            }
        }
        kept
    }

    /// What applying `set` would change.
    pub fn diff_to(&self, set: &RuleSet) -> Diff {
        let mut diff = Diff {
            ports_or_meters: self.ports != set.ports || self.meters != set.meters,
            ..Diff::default()
        };
        let kept = self.walk(set, |rule, new| {
            if new {
                diff.added.push(rule.clone());
            } else {
                diff.changed.push(rule.clone());
            }
        });
        if kept < self.rules.len() {
            let wanted: std::collections::HashSet<u32> = set.rules.iter().map(|r| r.id).collect();
            diff.removed = self
                .rules
                .keys()
                .filter(|id| !wanted.contains(id))
                .copied()
                .collect();
        }
        diff
    }

    /// What applying `set` would change, as counts only: no rule is cloned.
    pub fn diff_summary(&self, set: &RuleSet) -> Summary {
        let mut s = Summary {
            ports_or_meters: self.ports != set.ports || self.meters != set.meters,
            ..Summary::default()
        };
        let kept = self.walk(set, |_, new| {
            if new {
                s.added += 1;
            } else {
                s.changed += 1;
            }
        });
        s.removed = self.rules.len() - kept;
        s
    }

    /// Checks that a patch names only rules that can be removed and no
    /// rule twice.
    ///
    /// # Errors
    /// [`RuleError::Rule`] naming the rule id and the field.
    pub fn check_patch(&self, upsert: &[Rule], remove: &[u32]) -> Result<(), RuleError> {
        for id in remove {
            if !self.rules.contains_key(id) {
                return Err(RuleError::Rule {
                    rule: *id,
                    field: "delete".into(),
                    reason: "no rule with this id to delete".into(),
                });
            }
        }
        let mut ids = std::collections::HashSet::new();
        for r in upsert {
            if !ids.insert(r.id) || remove.contains(&r.id) {
                return Err(RuleError::Rule {
                    rule: r.id,
                    field: "id".into(),
                    reason: "named twice in one batch".into(),
                });
            }
        }
        Ok(())
    }

    /// Checks a patch: [`Desired::check_patch`], and each rule it adds or
    /// replaces against this set's ports and meters.
    ///
    /// # Errors
    /// [`RuleError`] naming the rule and what is wrong.
    pub fn check_batch(&self, upsert: &[Rule], remove: &[u32]) -> Result<(), RuleError> {
        self.check_patch(upsert, remove)?;
        RuleSet {
            ports: self.ports.clone(),
            meters: self.meters.clone(),
            rules: upsert.to_vec(),
        }
        .validate()
    }

    /// What a checked patch would change, as counts.
    pub fn patch_summary(&self, upsert: &[Rule], remove: &[u32]) -> Summary {
        let mut s = Summary {
            removed: remove.len(),
            ..Summary::default()
        };
        for r in upsert {
            match self.rules.get(&r.id) {
                None => s.added += 1,
                Some(old) if !old.is(r) => s.changed += 1,
                Some(_) => {}
            }
        }
        s
    }

    /// Applies a checked patch as generation `generation`.
    pub fn patch(&mut self, upsert: Vec<Rule>, remove: &[u32], generation: u64) {
        for id in remove {
            self.rules.remove(id);
        }
        for r in upsert {
            self.rules.insert(r.id, Packed::new(&r));
        }
        self.generation = generation;
    }
}
