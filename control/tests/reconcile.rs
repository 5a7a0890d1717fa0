//! Reconciliation into a running (emulated) datapath: only the difference
//! is applied, as one transaction; bad rules change nothing.

use dse_control::reconcile::{Diff, reconcile};
use dse_datapath::Datapath;
use dse_datapath::datapath::Transaction;
use dse_datapath::emu::{EmuConfig, EmuDatapath};
use dse_datapath::rule::RuleSet;

fn set(yaml: &str) -> RuleSet {
    RuleSet::from_yaml(yaml).expect("a valid rule set")
}

const PORTS: &str = "ports: [{name: p0, index: 0}, {name: p1, index: 1}]\n";

fn rules(lines: &[&str]) -> RuleSet {
    let list: String = lines.iter().map(|l| format!("  - {l}\n")).collect();
    set(&format!(
        "{PORTS}rules:{}",
        if list.is_empty() {
            " []\n".to_string()
        } else {
            format!("\n{list}")
        }
    ))
}

const A: &str = "{id: 1, priority: 10, match: {ip_proto: udp, l4_dst: 53}, actions: [drop]}";
const B: &str =
    "{id: 2, priority: 10, match: {ip_proto: tcp, l4_dst: 80}, actions: [{output: p1}]}";
const B2: &str =
    "{id: 2, priority: 20, match: {ip_proto: tcp, l4_dst: 80}, actions: [{output: p1}]}";
const C: &str = "{id: 3, priority: 10, match: {ip_proto: tcp, l4_dst: 443}, actions: [pass]}";

#[test]
fn the_diff_names_what_was_added_changed_and_removed() {
    let d = Diff::between(&rules(&[A, B]), &rules(&[B2, C]));
    assert_eq!(d.added.iter().map(|r| r.id).collect::<Vec<_>>(), [3]);
    assert_eq!(
        d.changed
            .iter()
            .map(|r| (r.id, r.priority))
            .collect::<Vec<_>>(),
        [(2, 20)]
    );
    assert_eq!(d.removed, [1]);
    assert!(!d.ports_or_meters);
    match d.transaction(&rules(&[B2, C])) {
        Some(Transaction::Patch { upsert, remove }) => {
            assert_eq!(upsert.iter().map(|r| r.id).collect::<Vec<_>>(), [3, 2]);
            assert_eq!(remove, [1]);
        }
        other => panic!("a patch, not {other:?}"),
    }
    assert!(
        Diff::between(&rules(&[A]), &rules(&[A]))
            .transaction(&rules(&[A]))
            .is_none()
    );
    let moved = set("ports: [{name: p0, index: 0}]\nrules: []\n");
    let d = Diff::between(&rules(&[]), &moved);
    assert!(d.ports_or_meters);
    assert!(matches!(
        d.transaction(&moved),
        Some(Transaction::Replace(_))
    ));
}

#[test]
fn reconcile_applies_only_the_difference_in_one_generation() {
    let dp = EmuDatapath::start(rules(&[A, B]), EmuConfig::default()).expect("starts");
    let g0 = dp.generation();
    let done = reconcile(&dp, &rules(&[B2, C])).expect("applies");
    assert_eq!(done.generation, g0 + 1, "one transaction");
    assert_eq!(dp.rules(), rules(&[B2, C]));
    let again = reconcile(&dp, &rules(&[B2, C])).expect("nothing to do");
    assert!(again.diff.is_empty());
    assert_eq!(
        again.generation,
        g0 + 1,
        "no transaction when nothing differs"
    );
}

#[test]
fn invalid_desired_rules_change_nothing_and_name_the_rule() {
    let dp = EmuDatapath::start(rules(&[A]), EmuConfig::default()).expect("starts");
    let g0 = dp.generation();
    // Parsed elsewhere, never validated: a rule on a port that does not exist.
    let mut bad = rules(&[A]);
    let mut stray = bad.rules[0].clone();
    stray.id = 9;
    stray.matches.in_port = Some("nosuch".into());
    bad.rules.push(stray);
    let err = reconcile(&dp, &bad).expect_err("an unknown port");
    let msg = err.to_string();
    assert!(msg.contains('9') && msg.contains("nosuch"), "{msg}");
    assert_eq!((dp.generation(), dp.rules()), (g0, rules(&[A])));
}
