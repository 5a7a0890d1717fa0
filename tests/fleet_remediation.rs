//! A fleet's remediation as processes: a 3-member etcd, two controllers
//! and one `dse agent` per host, each host's DPUs running XDP datapaths on
//! the veths of a two-host fabric, with two flows crossing them. The
//! leader imports the signed depot into etcd, sets the cluster's image and
//! orders the hosts; each agent checks the depot content with its own keys
//! and runs its host's sequence, rolling (`--keep-offload`: a DPU's traffic
//! on its agent's host path while it reboots). The leader is SIGKILLed
//! while a host is mid-sequence: the other controller takes over from the
//! journal in etcd, every host ends OK, on the new image, recorded in the
//! inventory, and not one datagram is lost. Each DPU's per-rule counters,
//! asked of its agent through etcd, show the traffic.
//!
//! Needs root and `etcd`; under CI=true their absence fails.

mod common;

use common::daemon::failure;
use common::fleet::{
    cli, etcd, finished, fleet_controller, json, lab_on_fleet, leader, remediation, set_image,
    until, until_ok,
};
use common::lab::Lab;
use dse::lab::fleet::FleetProcess;
use std::time::{Duration, Instant};

const TTL: &str = "2";

/// Datagrams a second of each flow.
const PPS: u64 = 2_000;

#[test]
fn the_leader_orders_the_hosts_the_agents_run_them_and_a_new_leader_finishes() {
    let Some(lab) = Lab::with_fabric("flr") else {
        return;
    };
    let Some(cluster) = etcd("fleet-remediation") else {
        return;
    };
    let endpoints = cluster.endpoints_arg();
    let keys = lab.dir.join("trusted-keys").display().to_string();
    let mut a = Some(fleet_controller(
        &lab.dir,
        &endpoints,
        "ctl-rem-a",
        TTL,
        &keys,
    ));
    until(Duration::from_secs(10), "ctl-rem-a leads", || {
        (leader(a.as_ref().unwrap()).as_deref() == Some("ctl-rem-a")).then_some(())
    });
    let b = fleet_controller(&lab.dir, &endpoints, "ctl-rem-b", TTL, &keys);
    let leader_a = a.as_ref().unwrap();
    let mut agents = lab_on_fleet(&lab, leader_a, &endpoints, TTL);

    // A bad image is refused by name; the new one is taken.
    let out = cli(
        leader_a,
        &["image", "set", "--cluster", "c1", "--base", "esxi=9.9"],
    );
    let (code, err) = failure(&out);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("esxi 9.9 is not in the depot"), "{err}");
    set_image(leader_a, "8.0.4", "24.2", Some("2.0"));
    // Compliance, from what the agents report: every host behind, by a
    // reboot; the same on the follower.
    for c in [leader_a, &b] {
        let before = json(c, &["lifecycle", "check", "--cluster", "c1"]);
        assert_eq!(before["status"], "non_compliant", "{before}");
        for h in before["hosts"].as_array().unwrap() {
            assert_eq!(h["status"], "non_compliant", "{h}");
            assert_eq!(h["impact"], "reboot", "{h}");
        }
    }
    let pre = json(&b, &["lifecycle", "precheck", "--cluster", "c1"]);
    assert_eq!(pre["ok"], true, "{pre}");
    // Staged ahead: each agent brings the image's depot content into its
    // own depot, checks it with its own keys, and stages it on its DPUs. A
    // follower refuses, naming the leader.
    let staged = json(leader_a, &["lifecycle", "stage", "--cluster", "c1"]);
    assert_eq!(
        staged["staged"],
        serde_json::json!(["S1", "S2", "S3"]),
        "{staged}"
    );
    let (_, err) = failure(&cli(&b, &["lifecycle", "stage", "--cluster", "c1"]));
    assert!(err.contains("ctl-rem-a"), "{err}");
    // A DPU's emulation is set through its host's agent: S2 made
    // unreachable fails the pre-check by name, as on one machine, once h2's
    // agent reports it; then it is back. A DPU no host has is not found.
    let set = json(leader_a, &["dpu", "emulate", "S2", "--unreachable"]);
    assert_eq!(set["faults"]["unreachable"], true, "{set}");
    let precheck = |c: &FleetProcess| {
        let out = cli(
            c,
            &["-o", "json", "lifecycle", "precheck", "--cluster", "c1"],
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    until_ok(Duration::from_secs(10), "the pre-check names S2", || {
        let pre = precheck(&b);
        (pre["ok"] == false && pre.to_string().contains("S2"))
            .then_some(())
            .ok_or(pre.to_string())
    });
    json(leader_a, &["dpu", "emulate", "S2"]);
    until_ok(
        Duration::from_secs(10),
        "the pre-check passes again",
        || {
            let pre = precheck(&b);
            (pre["ok"] == true).then_some(()).ok_or(pre.to_string())
        },
    );
    let (code, err) = failure(&cli(leader_a, &["dpu", "emulate", "S9"]));
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("S9"), "{err}");
    // A follower refuses to start one, naming the leader.
    let out = cli(
        &b,
        &["lifecycle", "remediate", "--cluster", "c1", "--no-wait"],
    );
    let (_, err) = failure(&out);
    assert!(err.contains("ctl-rem-a"), "{err}");

    // Traffic across both hosts, h1->h2 and h2->h1 (S1, and S2 or S3 behind h2's bond).
    let fabric = lab.fabric.as_ref().unwrap();
    let flows = fabric.flows(PPS);
    std::thread::sleep(Duration::from_millis(500));

    // One host at a time, h1 first, each DPU's traffic kept.
    let started = json(
        leader_a,
        &[
            "lifecycle",
            "remediate",
            "--cluster",
            "c1",
            "--parallel",
            "1",
            "--keep-offload",
            "--no-wait",
        ],
    );
    let id = started["id"].as_u64().unwrap();
    // Another is refused while it runs.
    let out = cli(
        leader_a,
        &["lifecycle", "remediate", "--cluster", "c1", "--no-wait"],
    );
    let (_, err) = failure(&out);
    assert!(
        err.contains(&format!("remediation {id} is under way")),
        "{err}"
    );
    // So is a fresh install.
    let out = cli(
        leader_a,
        &["lifecycle", "install", "--cluster", "c1", "--host", "h2"],
    );
    let (_, err) = failure(&out);
    assert!(
        err.contains(&format!("remediation {id} is under way")),
        "{err}"
    );
    // So says the pre-check, which fails.
    let out = cli(
        &b,
        &["-o", "json", "lifecycle", "precheck", "--cluster", "c1"],
    );
    assert!(!out.status.success());
    let pre: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pre["ok"], false, "{pre}");
    assert!(
        pre["problems"].as_array().unwrap().iter().any(|p| p
            .as_str()
            .unwrap()
            .contains(&format!("remediation {id} is under way"))),
        "{pre}"
    );

    // h1 mid-sequence (its DPU flashed): the leader dies.
    until(Duration::from_secs(30), "h1 flashes its DPU", || {
        let r = remediation(leader_a, id)?;
        let steps = r["hosts"][0]["steps"].as_array()?.clone();
        steps.iter().any(|s| s["step"] == "flash").then_some(())
    });
    let killed = Instant::now();
    a.as_mut().unwrap().kill();
    until(Duration::from_secs(10), "ctl-rem-b leads", || {
        (leader(&b).as_deref() == Some("ctl-rem-b")).then_some(())
    });
    eprintln!("ctl-rem-b leads {:?} after the kill", killed.elapsed());

    let done = finished(&b, id, Duration::from_secs(90));
    common::fabric::assert_lossless(flows);
    for h in done["hosts"].as_array().unwrap() {
        assert_eq!(h["result"], "OK", "{h}");
        assert_eq!(h["attempts"], 1, "{h}");
        let steps: Vec<&str> = h["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["step"].as_str())
            .collect();
        for step in [
            "quiesce", "snapshot", "flash", "reboot", "restore", "verify", "resume",
        ] {
            assert!(
                steps.contains(&step),
                "{} took {step}: {steps:?}",
                h["host"]
            );
        }
    }
    // The inventory holds what each host now runs, and each agent's
    // devices report it.
    let clusters = json(&b, &["cluster", "list"]);
    let c1 = &clusters.as_array().unwrap()[0];
    for h in c1["hosts"].as_array().unwrap() {
        assert_eq!(h["version"], "8.0.4", "{h}");
        for d in h["dpus"].as_array().unwrap() {
            assert_eq!(d["firmware"], "24.2", "{d}");
            assert_eq!(d["os"], "8.0.4", "{d}");
            assert_eq!(d["datapath"], "2.0", "{d}");
        }
    }
    until(
        Duration::from_secs(10),
        "the agents report the new image",
        || {
            let hosts = json(&b, &["host", "list"]);
            hosts
                .as_array()?
                .iter()
                .flat_map(|h| h["report"]["dpus"].as_array().cloned().unwrap_or_default())
                .all(|d| d["firmware"] == "24.2" && d["datapath"] == "2.0")
                .then_some(())
        },
    );
    let after = json(&b, &["lifecycle", "check", "--cluster", "c1"]);
    assert_eq!(after["status"], "compliant", "{after}");
    assert_eq!(after["hosts"].as_array().unwrap().len(), 2, "{after}");
    // Per-rule counters, asked of the agents: every DPU's rules counted
    // the traffic; one host's, one datapath's; a datapath that is not.
    let all = json(&b, &["rules", "counters"]);
    for dp in ["h1/S1", "h2/S2", "h2/S3"] {
        let counted = all[dp].as_object().is_some_and(|rules| {
            rules
                .values()
                .any(|c| c["packets"].as_u64().is_some_and(|n| n > 0))
        });
        assert!(counted, "{dp} counted: {all}");
    }
    let s2 = json(
        &b,
        &["rules", "counters", "--host", "h2", "--datapath", "S2"],
    );
    assert_eq!(s2.as_object().unwrap().len(), 1, "{s2}");
    assert!(s2["S2"].is_object(), "{s2}");
    let out = cli(
        &b,
        &["rules", "counters", "--host", "h2", "--datapath", "S9"],
    );
    let (code, err) = failure(&out);
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("S9"), "{err}");
    // A fresh install of h2 through its agent: refused, naming the DPU,
    // while S2 is unreachable; then done, and h2 compliant. A host the
    // cluster does not have is not found.
    let set = json(&b, &["dpu", "emulate", "S2", "--unreachable"]);
    assert_eq!(set["faults"]["unreachable"], true, "{set}");
    let install = ["lifecycle", "install", "--cluster", "c1", "--host", "h2"];
    let (code, err) = failure(&cli(&b, &install));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("on host h2: installing DPU S2"), "{err}");
    json(&b, &["dpu", "emulate", "S2", "--boot-ms", "100"]);
    let installed = json(&b, &install);
    assert_eq!(installed["host"], "h2", "{installed}");
    assert_eq!(installed["status"], "compliant", "{installed}");
    let (code, err) = failure(&cli(
        &b,
        &["lifecycle", "install", "--cluster", "c1", "--host", "h9"],
    ));
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("host h9 in cluster c1"), "{err}");
    for a in &mut agents {
        a.kill();
    }
}
