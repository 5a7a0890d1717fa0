//! A fleet controller holds no rule set: it checks each one it is given,
//! publishes it to etcd and keeps nothing of it; it reads a rule set back
//! from etcd when asked. 23 rule sets of 60,000 rules (5.5 MB of JSON
//! each) are published; once the first few have grown its buffers, its
//! resident memory stays level, where holding the 20 after them, as
//! text or as rules, would add 110 MB or more. Needs `etcd`; under
//! CI=true its absence fails.

mod common;

use common::daemon::rss_kb;
use common::fleet::{controller, drop_rules, etcd, until};
use std::time::Duration;

const RULES: u32 = 60_000;
const SETS: u32 = 23;
/// Rule sets published before the controller's memory is measured: the
/// first ones grow its buffers and arenas.
const WARM: u32 = 3;

#[test]
fn the_controller_keeps_no_rule_set_and_reads_them_from_etcd() {
    let Some(cluster) = etcd("fleet-memory") else {
        return;
    };
    let c = controller("ctl-mem", &cluster.endpoints_arg(), 5, &[]);
    until(Duration::from_secs(10), "a leader", || {
        c.json(&["fleet", "status"])["leader"].as_str().map(drop)
    });
    let dir = c.dir.join("sets");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, n: u32, priority: u64| {
        let path = dir.join(name);
        std::fs::write(&path, drop_rules(n, priority)).unwrap();
        path.display().to_string()
    };
    let pid = c.child.id();
    let (mut before, mut text) = (0, 0);
    for i in 0..SETS {
        let file = write(&format!("set{i}.json"), RULES, u64::from(i) + 1);
        let name = format!("set{i}");
        let published = c.json(&["rules", "apply", "-f", &file, "--rule-set", &name]);
        assert_eq!(published["generation"], 1, "{published}");
        eprintln!("controller RSS after {name}: {} kB", rss_kb(pid));
        if i == WARM - 1 {
            before = rss_kb(pid);
        } else if i >= WARM {
            text += std::fs::metadata(&file).unwrap().len() / 1024;
        }
    }
    let after = rss_kb(pid);
    assert!(
        after <= before + text / 4,
        "the controller grew from {before} to {after} kB publishing {text} kB of rule sets: it keeps them"
    );
    // Asked for one, it reads it from etcd: all of it, as published.
    let got = c.json(&["rules", "get", "--rule-set", "set3"]);
    assert_eq!(got["generation"], 1);
    let rules = got["rules"]["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), RULES as usize);
    assert_eq!(rules[0]["priority"], 4, "set3's own rules");
}
