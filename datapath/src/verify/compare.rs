//! Probes through the reference and each backend, and where they differ.

use super::{Got, Outcome, Probe, Reference, Subject};
use crate::compile::MaskedKey;
use crate::pipeline::parse;
use crate::rule::{RuleError, RuleSet};

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

/// What each backend did with each probe, and where one differed from
/// the reference.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Each backend's name and what it did with each probe, in probe
    /// order; the reference first.
    pub outcomes: Vec<(String, Vec<Got>)>,
    /// Every disagreement, in probe order.
    pub disagreements: Vec<Disagreement>,
}

/// Runs each probe through the reference pipeline running `set` and
/// through each subject.
///
/// # Errors
/// [`RuleError`] if the rules do not compile.
pub fn compare(
    set: &RuleSet,
    probes: &[Probe],
    subjects: &mut [Box<dyn Subject>],
) -> Result<Comparison, RuleError> {
    let mut reference = Reference::new(set)?;
    let mut outcomes: Vec<(String, Vec<Got>)> = std::iter::once("reference".to_string())
        .chain(subjects.iter().map(|s| s.name().to_string()))
        .map(|name| (name, Vec::with_capacity(probes.len())))
        .collect();
    let mut disagreements = Vec::new();
    for p in probes {
        let want = reference
            .run(p.in_port, &p.frame)
            .expect("the reference runs every frame");
        outcomes[0].1.push(Got::Outcome(want.clone()));
        for (i, s) in subjects.iter_mut().enumerate() {
            let got = match s.run(p.in_port, &p.frame) {
                Ok(o) => Got::Outcome(o),
                Err(e) => Got::Error(e),
            };
            outcomes[i + 1].1.push(got.clone());
            if got == Got::Outcome(want.clone()) {
                continue;
            }
            disagreements.push(Disagreement {
                probe: p.clone(),
                subject: s.name().to_string(),
                reference: want.clone(),
                got,
                rules: candidates(set, p.in_port, &p.frame),
            });
        }
    }
    Ok(Comparison {
        outcomes,
        disagreements,
    })
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
        let found = compare(&set, &probes(&set), &mut subjects)
            .unwrap()
            .disagreements;
        assert!(!found.is_empty(), "the tie is caught");
        for d in &found {
            assert_eq!(d.rules, vec![1, 2], "both rules of the tie: {d:?}");
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
        assert_eq!(honest.outcomes.len(), 2, "the reference and the subject");
        assert_eq!(honest.outcomes[0].1, honest.outcomes[1].1);
    }
}
