//! `dse rules add` reads a list of rules or a rule set's `rules:` from
//! JSON or YAML, and refuses anything else naming the file and what it
//! expected, changing nothing.

mod common;

use common::daemon::{DaemonProcess, failure};

const SET: &str = r#"{"ports": [{"name": "p0", "index": 0}, {"name": "p1", "index": 1}],
 "rules": [{"id": 1, "priority": 10, "match": {"in_port": "p0"}, "actions": [{"output": "p1"}]}]}"#;

fn rule(id: u32) -> String {
    format!(
        r#"{{"id": {id}, "priority": 10, "match": {{"in_port": "p0", "ip_proto": "udp", "l4_dst": {id}}}, "actions": ["drop"]}}"#
    )
}

/// The stored rule ids and generation.
fn stored(d: &DaemonProcess) -> (Vec<u64>, u64) {
    let v = d.json(&["rules", "get"]);
    let ids = v["rules"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    (ids, v["generation"].as_u64().unwrap())
}

#[test]
fn rules_add_reads_lists_and_sets_in_json_and_yaml_and_refuses_the_rest() {
    let (dir, bpffs) = DaemonProcess::paths("rulefiles");
    let d = DaemonProcess::start(dir.clone(), bpffs);
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let set = file("set.json", SET);
    let out = d.cli(&["rules", "apply", "-f", &set]);
    assert!(out.status.success(), "{}", failure(&out).1);
    let good = [
        (
            "a JSON list",
            file("list.json", &format!("  [{}]", rule(2))),
        ),
        (
            "a JSON rule set",
            file(
                "doc.json",
                &format!(r#"{{"ports": [], "rules": [{}]}}"#, rule(3)),
            ),
        ),
        (
            "a YAML list",
            file("list.yaml", &format!("- {}\n", rule(4))),
        ),
        (
            "a YAML rule set",
            file("doc.yaml", &format!("ports: []\nrules:\n  - {}\n", rule(5))),
        ),
    ];
    for (what, path) in &good {
        let out = d.cli(&["rules", "add", "-f", path]);
        assert!(out.status.success(), "{what}: {}", failure(&out).1);
    }
    assert_eq!(stored(&d), (vec![1, 2, 3, 4, 5], 5));
    let bad = [
        (
            "a JSON object without rules",
            file("norules.json", r#"{"ports": []}"#),
            "expected a list of rules",
        ),
        (
            "rules that are not a list",
            file("notlist.json", r#"{"rules": 5}"#),
            "expected a list of rules",
        ),
        (
            "broken JSON",
            file("broken.json", &format!("[{}", rule(6))),
            "not valid JSON",
        ),
        (
            "a YAML scalar",
            file("scalar.yaml", "just words\n"),
            "expected a list of rules",
        ),
        (
            "a rule the daemon refuses",
            file(
                "bad.json",
                r#"[{"id": 7, "priority": 1, "match": {"l4_dst": "x"}, "actions": ["drop"]}]"#,
            ),
            "rule 7",
        ),
    ];
    for (what, path, says) in &bad {
        let out = d.cli(&["rules", "add", "-f", path]);
        let (code, err) = failure(&out);
        assert_ne!(code, 0, "{what}: refused");
        assert!(err.contains(says), "{what}: {err:?} should say {says:?}");
        if *says != "rule 7" {
            assert!(
                err.contains(path.as_str()),
                "{what}: {err:?} names the file"
            );
        }
    }
    assert_eq!(stored(&d), (vec![1, 2, 3, 4, 5], 5), "nothing changed");
    // With -o json, `rules get` prints the API's answer as it came.
    let out = d.cli(&["-o", "json", "rules", "get", "--ids", "2,3"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rules"]["rules"].as_array().unwrap().len(), 2, "{v}");
}
