//! Probes through the reference and each backend, and where they differ.

use super::{Got, Outcome, Probe, Reference, Subject};
use crate::compile::MaskedKey;
use crate::pipeline::{Count, DropReason, Verdict, parse};
use crate::rule::Action;
use crate::rule::{RuleError, RuleSet};
use std::fmt;
use std::time::{Duration, Instant};

/// A probe on which a backend and the reference differ.
#[derive(Debug, Clone)]
pub struct Disagreement {
    /// The probe.
    pub probe: Probe,
    /// The backend.
    pub subject: String,
    /// What the reference did.
    pub reference: Outcome,
    /// What the backend did.
    pub got: Got,
    /// The rules whose match takes the frame, in rank order (the first is
    /// the one the reference chose; none: a miss or a malformed frame).
    pub rules: Vec<u32>,
    /// Which of them the backend chose, as far as its outcome tells (a
    /// backend does not say): those whose actions alone give what it did;
    /// 0 stands for no rule (the port's miss action).
    pub backend_rules: Vec<u32>,
}

/// The rules of `set` whose match takes `frame` arriving on `in_port`, as
/// first classified (before any decap), in rank order: the first is the
/// rule the reference applies. Empty for a frame the parser refuses.
pub fn candidates(set: &RuleSet, in_port: u16, frame: &[u8]) -> Vec<u32> {
    let Ok((key, _)) = parse(frame, in_port, 0) else {
        return Vec::new();
    };
    let mut ranked: Vec<&crate::rule::Rule> = set
        .rules
        .iter()
        .filter(|r| MaskedKey::from_match(&r.matches, set).matches(&key))
        .collect();
    ranked.sort_by_key(|r| (std::cmp::Reverse(r.priority), r.id));
    ranked.iter().map(|r| r.id).collect()
}

/// A rule a backend counted otherwise than the reference, once every
/// probe had run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterDisagreement {
    /// The backend.
    pub subject: String,
    /// The rule.
    pub rule: u32,
    /// What the reference counted.
    pub reference: Count,
    /// What the backend counted, or why its counters could not be read.
    pub got: Result<Count, String>,
}

impl fmt::Display for CounterDisagreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = |c: &Count| format!("{} packets, {} bytes", c.packets, c.bytes);
        write!(
            f,
            "rule {}: the reference counted {}; {} ",
            self.rule,
            count(&self.reference),
            self.subject
        )?;
        match &self.got {
            Ok(c) => write!(f, "counted {}", count(c)),
            Err(e) => write!(f, "could not say: {e}"),
        }
    }
}

/// What each backend did with each probe, and where one differed from
/// the reference.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Each backend's name and what it did with each probe, in probe
    /// order; the reference first. Empty unless asked for.
    pub outcomes: Vec<(String, Vec<Got>)>,
    /// The disagreements, in probe order: the first [`MAX_KEPT`].
    pub disagreements: Vec<Disagreement>,
    /// How many there were in all.
    pub disagreeing: usize,
    /// Frames a backend's meter dropped, where the reference's (its
    /// buckets full) let them through: agreement, as meters go.
    pub metering: usize,
    /// Every rule a backend counted otherwise, by backend, then rule.
    pub counters: Vec<CounterDisagreement>,
    /// How long each backend took over all the probes; the reference
    /// first.
    pub took: Vec<(String, Duration)>,
}

/// How many probes each backend takes at once.
const BATCH: usize = 16_384;

/// The most disagreements a [`Comparison`] keeps.
pub const MAX_KEPT: usize = 1000;

/// Runs each probe through the reference pipeline running `set` and
/// through each subject, keeping what each did (see [`compare_many`] for
/// more probes than fit in memory twice).
///
/// # Errors
/// [`RuleError`] if the rules do not compile.
pub fn compare(
    set: &RuleSet,
    probes: &[Probe],
    subjects: &mut [Box<dyn Subject>],
) -> Result<Comparison, RuleError> {
    compare_many(set, probes, subjects, true)
}

/// As [`compare`]; what each did is kept only if `keep_outcomes`.
///
/// # Errors
/// [`RuleError`] if the rules do not compile.
pub fn compare_many(
    set: &RuleSet,
    probes: &[Probe],
    subjects: &mut [Box<dyn Subject>],
    keep_outcomes: bool,
) -> Result<Comparison, RuleError> {
    let mut reference = Reference::new(set)?;
    let names: Vec<String> = std::iter::once("reference".to_string())
        .chain(subjects.iter().map(|s| s.name().to_string()))
        .collect();
    let mut outcomes: Vec<(String, Vec<Got>)> = if keep_outcomes {
        let n = probes.len();
        names
            .iter()
            .map(|name| (name.clone(), Vec::with_capacity(n)))
            .collect()
    } else {
        Vec::new()
    };
    let mut took = vec![Duration::ZERO; names.len()];
    let mut disagreements = Vec::new();
    let mut disagreeing = 0;
    let mut metering = 0;
    // In batches: each backend takes a batch at once, as the XDP program's
    // test runs do best (spread over the CPUs).
    for batch in probes.chunks(BATCH) {
        let started = Instant::now();
        let wants: Vec<Outcome> = batch
            .iter()
            .map(|p| {
                reference
                    .run(p.in_port, &p.frame)
                    .expect("the reference runs every frame")
            })
            .collect();
        took[0] += started.elapsed();
        if keep_outcomes {
            outcomes[0]
                .1
                .extend(wants.iter().cloned().map(Got::Outcome));
        }
        for (i, s) in subjects.iter_mut().enumerate() {
            let started = Instant::now();
            let gots = s.run_batch(batch);
            took[i + 1] += started.elapsed();
            for ((p, want), got) in batch.iter().zip(&wants).zip(gots) {
                let got = match got {
                    Ok(o) => Got::Outcome(o),
                    Err(e) => Got::Error(e),
                };
                let agrees = match &got {
                    Got::Outcome(o) if o == want => true,
                    // The reference's buckets are full; a backend's meter
                    // drops what comes faster than its rate.
                    Got::Outcome(o) if o.verdict == Verdict::Drop(DropReason::Meter) => {
                        let metered = metered(set, p);
                        metering += usize::from(metered);
                        metered
                    }
                    _ => false,
                };
                if !agrees {
                    disagreeing += 1;
                    if disagreements.len() < MAX_KEPT {
                        let rules = candidates(set, p.in_port, &p.frame);
                        disagreements.push(Disagreement {
                            backend_rules: giving(set, p, &rules, &got),
                            probe: p.clone(),
                            subject: s.name().to_string(),
                            reference: want.clone(),
                            got: got.clone(),
                            rules,
                        });
                    }
                }
                if keep_outcomes {
                    outcomes[i + 1].1.push(got);
                }
            }
        }
    }
    let want = reference.counters().expect("the reference counts");
    let mut counters = Vec::new();
    for s in subjects.iter() {
        let got = s.counters();
        for r in &set.rules {
            let reference = want.get(&r.id).copied().unwrap_or_default();
            let got = match &got {
                Ok(c) => Ok(c.get(&r.id).copied().unwrap_or_default()),
                Err(e) => Err(e.clone()),
            };
            if got != Ok(reference) {
                counters.push(CounterDisagreement {
                    subject: s.name().to_string(),
                    rule: r.id,
                    reference,
                    got,
                });
            }
        }
    }
    Ok(Comparison {
        outcomes,
        disagreements,
        disagreeing,
        metering,
        counters,
        took: names.into_iter().zip(took).collect(),
    })
}

/// Of `rules` (and no rule, as 0), those that alone turn probe `p` into
/// `got`.
fn giving(set: &RuleSet, p: &Probe, rules: &[u32], got: &Got) -> Vec<u32> {
    let Got::Outcome(got) = got else {
        return Vec::new();
    };
    std::iter::once(0)
        .chain(rules.iter().copied())
        .filter(|&id| {
            let only = reproducer(set, &[id]);
            Reference::new(&only)
                .ok()
                .and_then(|mut r| r.run(p.in_port, &p.frame).ok())
                .is_some_and(|o| o == *got)
        })
        .collect()
}

/// Whether the rule the reference applies to probe `p` meters it.
fn metered(set: &RuleSet, p: &Probe) -> bool {
    let Some(&first) = candidates(set, p.in_port, &p.frame).first() else {
        return false;
    };
    set.rules
        .iter()
        .find(|r| r.id == first)
        .is_some_and(|r| r.actions.iter().any(|a| matches!(a, Action::Meter(_))))
}

/// The rule file of a reproducer: `set`'s ports and meters, and only the
/// rules `ids`.
pub fn reproducer(set: &RuleSet, ids: &[u32]) -> RuleSet {
    let mut small = set.clone();
    small.rules.retain(|r| ids.contains(&r.id));
    small
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::Verdict;
    use crate::verify::probes;
    use std::collections::BTreeMap;

    /// A backend with a seeded bug: of rules of equal priority it takes
    /// the higher id. It is the reference running the rules with the ids
    /// of the tie swapped.
    struct ReversedTies(Reference);

    impl Subject for ReversedTies {
        fn name(&self) -> &str {
            "reversed-ties"
        }

        fn run(&mut self, in_port: u16, frame: &[u8]) -> Result<Outcome, String> {
            self.0.run(in_port, frame)
        }

        fn counters(&self) -> Result<BTreeMap<u32, Count>, String> {
            // Its rules 1 and 2 are the set's 2 and 1.
            let mut c = self.0.counters()?;
            let (one, two) = (c.remove(&1), c.remove(&2));
            c.extend(two.map(|n| (1, n)));
            c.extend(one.map(|n| (2, n)));
            Ok(c)
        }
    }

    #[test]
    fn a_backend_that_breaks_ties_the_wrong_way_is_caught_with_the_rules_involved() {
        let set = RuleSet::from_yaml(
            "ports: [{name: a, index: 0}, {name: b, index: 1}, {name: c, index: 2}]\nrules:\n  - {id: 1, priority: 5, match: {ip_proto: udp}, actions: [{output: b}]}\n  - {id: 2, priority: 5, match: {ip_proto: udp, l4_dst: 53}, actions: [{output: c}]}\n  - {id: 3, priority: 9, match: {ip_proto: tcp}, actions: [drop]}\n",
        )
        .unwrap();
        // The same rules with the ids of the tie swapped: what a backend
        // that prefers the higher id does.
        let mut swapped = set.clone();
        for r in &mut swapped.rules {
            r.id = match r.id {
                1 => 2,
                2 => 1,
                n => n,
            };
        }
        let mut subjects: Vec<Box<dyn Subject>> =
            vec![Box::new(ReversedTies(Reference::new(&swapped).unwrap()))];
        let found = compare(&set, &probes(&set), &mut subjects).unwrap();
        // Each frame of the tie counted on the other rule.
        let rules: Vec<u32> = found.counters.iter().map(|c| c.rule).collect();
        assert_eq!(rules, [1, 2], "{:?}", found.counters);
        assert!(
            found.counters[0]
                .to_string()
                .starts_with("rule 1: the reference counted "),
            "{}",
            found.counters[0]
        );
        let found = found.disagreements;
        assert!(!found.is_empty(), "the tie is caught");
        for d in &found {
            assert_eq!(d.rules, vec![1, 2], "both rules of the tie: {d:?}");
            assert_eq!(d.backend_rules, vec![2], "it took rule 2: {d:?}");
            assert_eq!(d.reference.verdict, Verdict::Output(1));
            assert_eq!(
                d.got,
                Got::Outcome(Outcome::new(Verdict::Output(2), d.reference.bytes.clone()))
            );
            let small = reproducer(&set, &d.rules);
            let ids: Vec<u32> = small.rules.iter().map(|r| r.id).collect();
            assert_eq!(ids, [1, 2], "the reproducer keeps the rules involved");
            assert_eq!(small.ports, set.ports);
        }
        // Without the bug, nothing.
        let mut honest: Vec<Box<dyn Subject>> = vec![Box::new(Reference::new(&set).unwrap())];
        let honest = compare(&set, &probes(&set), &mut honest).unwrap();
        assert!(honest.disagreements.is_empty());
        assert!(honest.counters.is_empty());
        assert_eq!(honest.outcomes.len(), 2, "the reference and the subject");
        assert_eq!(honest.outcomes[0].1, honest.outcomes[1].1);
    }
}
