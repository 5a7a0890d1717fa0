//! A change that changes nothing, through the real binary: applying the
//! set in force, or a patch that upserts rules as they are, keeps the
//! generation, touches no datapath, and the audit log says "no change".
//!
//! Needs root (an XDP datapath on veths); under CI=true that is a failure.

mod common;

use common::bpf::PinDir;
use common::daemon::{DaemonProcess, failure};
use common::topology::Topology;
use serde_json::{Value, json};

fn rules(n: u32) -> Value {
    let rules: Vec<Value> = (1..=n)
        .map(|i| {
            json!({"id": i, "priority": 10,
                   "match": {"in_port": "pa", "ip_proto": "udp", "l4_dst": 7000 + i},
                   "actions": [{"output": "pb"}]})
        })
        .collect();
    json!({"ports": [{"name": "pa", "index": 0, "default": "drop"}, {"name": "pb", "index": 1}],
           "rules": rules})
}

/// The datapath's generation and install count, and the store's generation.
fn state(d: &DaemonProcess) -> (u64, u64, u64) {
    let listed = d.json(&["datapath", "list"]);
    let store = d.json(&["status"])["health"]["generation"]
        .as_u64()
        .unwrap();
    (
        listed[0]["generation"].as_u64().unwrap(),
        listed[0]["installs"].as_u64().unwrap(),
        store,
    )
}

/// The newest audit entry's result.
fn last_result(d: &DaemonProcess) -> String {
    let log = d.json(&["audit", "--last", "1"]);
    assert_eq!(log.as_array().unwrap().len(), 1, "{log}");
    log[0]["result"].as_str().unwrap().to_owned()
}

#[test]
fn a_no_op_apply_or_patch_keeps_the_generation_and_audits_no_change() {
    if PinDir::new("noop-probe").is_none() {
        return;
    }
    let t = Topology::new("no", 86);
    let (dir, bpffs) = DaemonProcess::paths("noop");
    let d = DaemonProcess::start(dir.clone(), bpffs);
    let set = dir.join("set.json");
    std::fs::write(&set, rules(3).to_string()).unwrap();
    let set = set.to_str().unwrap();
    let out = d.cli(&["rules", "apply", "-f", set]);
    assert!(out.status.success(), "{}", failure(&out).1);
    let out = d.attach(&t, "off", "xdp");
    assert!(out.status.success(), "{}", failure(&out).1);
    let before = state(&d);
    assert_eq!((before.0, before.2), (1, 1), "{before:?}");
    // Rule 2 as it is, and rules 1 and 3 in another order.
    let same_rule = dir.join("same.json");
    std::fs::write(&same_rule, json!([rules(3)["rules"][1]]).to_string()).unwrap();
    let reordered = dir.join("reordered.json");
    let mut r = rules(3);
    r["rules"].as_array_mut().unwrap().reverse();
    std::fs::write(&reordered, r.to_string()).unwrap();
    let no_ops: [(&str, Vec<&str>); 4] = [
        ("the set in force again", vec!["rules", "apply", "-f", set]),
        (
            "the set in force, expecting its generation",
            vec!["rules", "apply", "-f", set, "--expect-generation", "1"],
        ),
        (
            "the same rules in another order",
            vec!["rules", "apply", "-f", reordered.to_str().unwrap()],
        ),
        (
            "a patch that upserts a rule as it is",
            vec!["rules", "add", "-f", same_rule.to_str().unwrap()],
        ),
    ];
    for (what, args) in no_ops {
        let answer = d.json(&args);
        assert_eq!(answer["generation"], 1, "{what}: {answer}");
        assert_eq!(
            [&answer["added"], &answer["changed"], &answer["removed"]],
            [&json!(0), &json!(0), &json!(0)],
            "{what}: {answer}"
        );
        assert_eq!(state(&d), before, "{what}: no datapath was touched");
        assert_eq!(last_result(&d), "no change", "{what}");
    }
    // A real change still moves both generations, and the audit says ok.
    std::fs::write(set, rules(4).to_string()).unwrap();
    assert_eq!(d.json(&["rules", "apply", "-f", set])["generation"], 2);
    assert_eq!(state(&d), (2, before.1 + 1, 2));
    assert_eq!(last_result(&d), "ok");
    // The table view names each entry.
    let out = d.cli(&["audit", "--last", "6"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", failure(&out).1);
    assert_eq!(table.lines().count(), 7, "{table}");
    assert_eq!(table.matches("no change").count(), 4, "{table}");
}
