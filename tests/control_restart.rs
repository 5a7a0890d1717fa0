//! Restarts of `dse serve` through the real binary, with an XDP datapath
//! on veths carrying UDP between two namespaces: after every restart, by
//! SIGTERM or by SIGKILL at any point of an apply, the datapath forwards
//! exactly the store's rules, says it runs the store's generation, and no
//! kept rule's counter goes back.
//!
//! Needs root; under CI=true that is a failure.

mod common;

use common::bpf::PinDir;
use common::daemon::{DaemonProcess, failure};
use common::restart::{
    KillPoints, Steady, attach, datapath, delivered, forwards_only, kept_count, kill_rounds,
    rule_set, write,
};
use common::topology::Topology;
use std::process::Stdio;
use std::time::Instant;

#[test]
fn r1_r2_r1_then_ten_restarts_forward_only_the_desired_set() {
    if PinDir::new("restart-probe").is_none() {
        return;
    }
    let t = Topology::new("rr", 84);
    let (dir, bpffs) = DaemonProcess::paths("rr");
    let mut d = DaemonProcess::start(dir.clone(), bpffs);
    let (r1, r2) = ((10_000u32, 10_000u16), (20_000u32, 20_000u16));
    let f1 = write(&dir, "r1.json", &rule_set(r1.0, r1.1, 2000, 1));
    let f2 = write(&dir, "r2.json", &rule_set(r2.0, r2.1, 2000, 1));
    for f in [&f1, &f2, &f1] {
        let out = d.cli(&["rules", "apply", "-f", f]);
        assert!(out.status.success(), "{}", failure(&out).1);
        if f == &f2 {
            attach(&d, &t);
        }
    }
    forwards_only(&t, r1.1, r2.1, 0, "before any restart");
    assert_eq!(delivered(&t, &[7000], 5)[&7000], 5);
    let mut kept = kept_count(&d);
    assert_eq!(kept, 5);
    for restart in 0..10u16 {
        let sigterm = restart % 2 == 0;
        let (dir, bpffs) = if sigterm { d.terminate() } else { d.kill() };
        d = DaemonProcess::start(dir, bpffs);
        let how = if sigterm { "SIGTERM" } else { "SIGKILL" };
        let when = format!("after restart {restart} ({how})");
        let (listed, generation) = datapath(&d);
        assert_eq!(listed["state"], "running", "{when}: {listed}");
        assert_eq!(listed["generation"], generation, "{when}: {listed}");
        assert_eq!(listed["in_sync"], true, "{when}: {listed}");
        // Flows never sent before, too: ports 100 + restart up.
        forwards_only(&t, r1.1, r2.1, 100 + restart, &when);
        assert_eq!(delivered(&t, &[7000], 5)[&7000], 5, "{when}");
        assert_eq!(
            kept_count(&d),
            kept + 5,
            "{when}: the kept rule counted on from where it was"
        );
        kept += 5;
    }
}

/// The store's generation, its rule count, and whether it holds set B
/// (rule 300000), read through `dse rules get`.
fn stored(d: &DaemonProcess) -> (u64, usize, bool) {
    let v = d.json(&["rules", "get"]);
    let rules = v["rules"]["rules"].as_array().unwrap();
    let has_b = rules.iter().any(|r| r["id"] == 300_000);
    (v["generation"].as_u64().unwrap(), rules.len(), has_b)
}

#[test]
fn sigkill_at_random_points_of_large_applies_keeps_the_datapath_equal_to_the_store() {
    if PinDir::new("killloop-probe").is_none() {
        return;
    }
    let rounds = kill_rounds();
    let n = 200_000;
    let t = Topology::new("rk", 85);
    let (dir, bpffs) = DaemonProcess::paths("rk");
    // Room for two generations of the set in the rule slots.
    let serve = |dir, bpffs| DaemonProcess::start_with(dir, bpffs, &["--xdp-max-rules", "524288"]);
    let mut d = serve(dir.clone(), bpffs);
    let (a, b) = ((10_000u32, 10_000u16), (300_000u32, 20_000u16));
    let sets = [
        write(&dir, "a.json", &rule_set(a.0, a.1, n, 1)),
        write(&dir, "b.json", &rule_set(b.0, b.1, n, 1)),
    ];
    let started = Instant::now();
    let out = d.cli(&["rules", "apply", "-f", &sets[0]]);
    assert!(out.status.success(), "{}", failure(&out).1);
    let apply_time = started.elapsed();
    attach(&d, &t);
    let steady = Steady::start(&t);
    let mut points = KillPoints::new();
    eprintln!("an apply takes {apply_time:?}");
    let (mut generation_before, mut kept) = (1u64, kept_count(&d));
    for round in 0..rounds {
        let file = &sets[(round as usize + 1) % 2];
        let mut apply = d
            .command(&["rules", "apply", "-f", file])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let point = points.next(apply_time);
        std::thread::sleep(point);
        let (dir, bpffs) = d.kill();
        let acked = apply.wait().unwrap().success();
        let applied_b = (round + 1) % 2 == 1;
        d = serve(dir, bpffs);
        let when = format!("round {round}, killed {point:?} into the apply");
        let (generation, count, has_b) = stored(&d);
        assert_eq!(
            count,
            n as usize + 1,
            "{when}: the store holds one whole set"
        );
        assert!(
            generation >= generation_before,
            "{when}: the generation went back"
        );
        if acked {
            assert_eq!(
                has_b, applied_b,
                "{when}: every acknowledged apply survived"
            );
        }
        generation_before = generation;
        let (listed, desired) = datapath(&d);
        assert_eq!(desired, generation, "{when}");
        assert_eq!(listed["generation"], generation, "{when}: {listed}");
        assert_eq!(listed["in_sync"], true, "{when}: {listed}");
        let (want, other) = if has_b { (b.1, a.1) } else { (a.1, b.1) };
        forwards_only(&t, want, other, 1 + (round % 500) as u16, &when);
        let now = kept_count(&d);
        assert!(
            now >= kept,
            "{when}: rule 1's counter went back from {kept} to {now}"
        );
        kept = now;
    }
    let (sent, received) = steady.finish();
    assert!(sent > 1000, "traffic ran throughout ({sent} sent)");
    assert_eq!(received, sent, "every datagram on the kept rule arrived");
}
