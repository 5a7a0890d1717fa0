//! SIGKILL at random points of patches (`dse rules add` and `dse rules
//! delete`) through the real binary, with an XDP datapath on veths under
//! steady traffic. Small patches change the active slot half in place;
//! large ones do not fit beside it and switch to the other half (a fresh
//! compile, a bank switch). After each restart the store holds each patch
//! whole or not at all, the datapath runs the store's generation and
//! forwards exactly what the store holds, counters never go back, and
//! every acknowledged patch survived.
//!
//! Needs root; under CI=true that is a failure.

mod common;

use common::bpf::PinDir;
use common::daemon::{DaemonProcess, failure};
use common::restart::{
    KillPoints, Steady, attach, datapath, delivered, exact_rules, kill_rounds, packets_of,
    rule_set, write,
};
use common::topology::Topology;
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The base set: rule 1 (port 7000, the steady traffic) and 100k rules
/// from id 10000 on ports 10000.., never patched.
const BASE: (u32, u16, u32) = (10_000, 10_000, 100_000);
/// Small patches add or delete these 2,000 rules (ports 30000..32000):
/// they fit in the active half.
const SMALL: (u32, u16, u32) = (500_000, 30_000, 2_000);
/// Large patches turn these 100k rules (ports 40000..) between forwarding
/// and dropping. 200k rules and 100k changed ones need more than half of
/// the 512Ki slots: each such patch compiles afresh into the other half.
const LARGE: (u32, u16, u32) = (600_000, 40_000, 100_000);
const MAX_RULES: &str = "524288";

/// What the store holds of the patched groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    small: bool,
    large_forwards: bool,
}

/// The small group's rules, as `dse rules get` pages them after `first - 1`.
fn page(d: &DaemonProcess, (first, _, n): (u32, u16, u32)) -> Vec<Value> {
    let after = (first - 1).to_string();
    let v = d.json(&["rules", "get", "--after", &after, "--limit", &n.to_string()]);
    v["rules"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["id"].as_u64().unwrap() < u64::from(first + n))
        .cloned()
        .collect()
}

/// What the store holds, and its generation; panics unless each group is
/// whole (all of the small group or none; the large group all forwarding
/// or all dropping).
fn held(d: &DaemonProcess, when: &str) -> (Held, u64) {
    let small = page(d, SMALL).len();
    assert!(
        small == 0 || small == SMALL.2 as usize,
        "{when}: the store holds {small} of the small patch's rules"
    );
    let large = page(d, LARGE);
    assert_eq!(large.len(), LARGE.2 as usize, "{when}");
    let forwarding = large
        .iter()
        .filter(|r| r["actions"] == json!([{"output": "pb"}]))
        .count();
    assert!(
        forwarding == 0 || forwarding == large.len(),
        "{when}: {forwarding} of the large patch's rules forward, the others drop"
    );
    let generation = d.json(&["status"])["health"]["generation"]
        .as_u64()
        .unwrap();
    let held = Held {
        small: small > 0,
        large_forwards: forwarding > 0,
    };
    (held, generation)
}

/// The command that turns `from` into its next state in `round`: even
/// rounds add or delete the small group, odd rounds turn the large one.
fn patch(round: u32, from: Held, files: &Files) -> (Vec<String>, Held) {
    let mut to = from;
    let args = if round.is_multiple_of(2) {
        to.small = !from.small;
        if from.small {
            let mut args = vec!["rules".to_owned(), "delete".to_owned()];
            args.extend((SMALL.0..SMALL.0 + SMALL.2).map(|id| id.to_string()));
            args
        } else {
            vec![
                "rules".into(),
                "add".into(),
                "-f".into(),
                files.small.clone(),
            ]
        }
    } else {
        to.large_forwards = !from.large_forwards;
        let file = if from.large_forwards {
            &files.large_drop
        } else {
            &files.large_forward
        };
        vec!["rules".into(), "add".into(), "-f".into(), file.clone()]
    };
    (args, to)
}

struct Files {
    small: String,
    large_forward: String,
    large_drop: String,
}

/// Checks with traffic that the datapath forwards exactly what `h` says:
/// flows of each group at port offset `fresh` (some never sent before)
/// and at offset 0 (sent every round).
fn forwards(t: &Topology, h: Held, fresh: u16, when: &str) {
    let cases = [
        (BASE.1, true),
        (SMALL.1, h.small),
        (LARGE.1, h.large_forwards),
    ];
    let ports: Vec<u16> = cases
        .iter()
        .flat_map(|(port, _)| [*port, port + fresh])
        .collect();
    let got = delivered(t, &ports, 3);
    for (port, forwarded) in cases {
        for p in [port, port + fresh] {
            assert_eq!(
                got[&p],
                if forwarded { 3 } else { 0 },
                "{when}: port {p} (the store holds {h:?}): {got:?}"
            );
        }
    }
}

#[test]
fn sigkill_at_random_points_of_patches_keeps_the_datapath_equal_to_the_store() {
    if PinDir::new("patchkill-probe").is_none() {
        return;
    }
    let rounds = kill_rounds();
    let t = Topology::new("pk", 87);
    let (dir, bpffs) = DaemonProcess::paths("pk");
    let serve = |dir, bpffs| DaemonProcess::start_with(dir, bpffs, &["--xdp-max-rules", MAX_RULES]);
    let mut d = serve(dir.clone(), bpffs);
    let (forward, drop) = (json!([{"output": "pb"}]), json!(["drop"]));
    let group = |(first, port, n): (u32, u16, u32), actions: &Value| {
        json!(exact_rules(first, port, n, actions)).to_string()
    };
    let files = Files {
        small: write(&dir, "small.json", &group(SMALL, &forward)),
        large_forward: write(&dir, "large-fwd.json", &group(LARGE, &forward)),
        large_drop: write(&dir, "large-drop.json", &group(LARGE, &drop)),
    };
    let mut base: Value = serde_json::from_str(&rule_set(BASE.0, BASE.1, BASE.2, 1)).unwrap();
    base["rules"]
        .as_array_mut()
        .unwrap()
        .extend(exact_rules(LARGE.0, LARGE.1, LARGE.2, &forward));
    let base = write(&dir, "base.json", &base.to_string());
    let out = d.cli(&["rules", "apply", "-f", &base]);
    assert!(out.status.success(), "{}", failure(&out).1);
    attach(&d, &t);
    // Each kind of patch once, unkilled, to time it.
    let mut state = Held {
        small: false,
        large_forwards: true,
    };
    let mut took = [Duration::ZERO; 2];
    for round in 0..4 {
        let (args, to) = patch(round, state, &files);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let out = d.cli(&args);
        assert!(out.status.success(), "{}", failure(&out).1);
        took[round as usize % 2] = took[round as usize % 2].max(started.elapsed());
        state = to;
        forwards(
            &t,
            state,
            1 + round as u16,
            &format!("after timing patch {round}"),
        );
    }
    eprintln!(
        "a small patch takes {:?}, a large one {:?}",
        took[0], took[1]
    );
    let steady = Steady::start(&t);
    let mut points = KillPoints::new();
    let watched = [1, LARGE.0, BASE.0];
    let mut counts = packets_of(&d, &watched);
    let mut generation_before = held(&d, "before the kills").1;
    for round in 0..rounds {
        let (args, to) = patch(round, state, &files);
        let mut child = d
            .command(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let point = points.next(took[round as usize % 2]);
        std::thread::sleep(point);
        let (dir, bpffs) = d.kill();
        let acked = child.wait().unwrap().success();
        d = serve(dir, bpffs);
        let kind = if round.is_multiple_of(2) {
            "small"
        } else {
            "large"
        };
        let when = format!("round {round}, killed {point:?} into a {kind} patch");
        let (now, generation) = held(&d, &when);
        assert!(
            now == state || now == to,
            "{when}: the store holds {now:?}, neither {state:?} before the patch nor {to:?} after"
        );
        if acked {
            assert_eq!(now, to, "{when}: the acknowledged patch survived");
        }
        assert!(
            generation >= generation_before,
            "{when}: the generation went back"
        );
        generation_before = generation;
        let (listed, desired) = datapath(&d);
        assert_eq!(desired, generation, "{when}");
        assert_eq!(listed["generation"], generation, "{when}: {listed}");
        assert_eq!(listed["in_sync"], true, "{when}: {listed}");
        state = now;
        forwards(&t, state, 1 + (round % 900) as u16, &when);
        let after = packets_of(&d, &watched);
        for ((id, was), is) in watched.iter().zip(&counts).zip(&after) {
            assert!(
                is >= was,
                "{when}: rule {id}'s counter went back from {was} to {is}"
            );
        }
        // Rule LARGE.0 counts every packet sent to its port, forwarded or
        // dropped: three each round at offset 0.
        assert_eq!(
            after[1],
            counts[1] + 3,
            "{when}: rule {} counted on",
            LARGE.0
        );
        counts = after;
    }
    let (sent, received) = steady.finish();
    assert!(sent > 1000, "traffic ran throughout ({sent} sent)");
    assert_eq!(received, sent, "every datagram on the kept rule arrived");
}
