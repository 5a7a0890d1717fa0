//! A fleet's remediation as processes: a 3-member etcd, two controllers
//! and one `dse agent` per host, each host's DPUs running XDP datapaths on
//! the veths of a two-host fabric, with two flows crossing them. The
//! leader imports the signed depot into etcd, sets the cluster's image and
//! orders the hosts; each agent checks the depot content with its own keys
//! and runs its host's sequence, rolling (`--keep-offload`: a DPU's traffic
//! on its agent's host path while it reboots). The leader is SIGKILLed
//! while a host is mid-sequence: the other controller takes over from the
//! journal in etcd, every host ends OK, on the new image, recorded in the
//! inventory, and not one datagram is lost.
//!
//! Needs root and `etcd`; under CI=true their absence fails.

mod common;

use common::daemon::failure;
use common::fabric::Delivery;
use common::fleet::{agent, controller, etcd, until};
use common::lab::{DPUS, HOSTS, Lab};
use serde_json::Value;
use std::time::{Duration, Instant};

const TTL_S: u64 = 2;

/// Datagrams a second of each flow.
const PPS: u64 = 2_000;

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The remediation as the API shows it.
fn remediation(c: &common::daemon::DaemonProcess, id: u64) -> Option<Value> {
    let out = c.cli(&[
        "-o",
        "json",
        "lifecycle",
        "history",
        "--id",
        &id.to_string(),
    ]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

#[test]
fn the_leader_orders_the_hosts_the_agents_run_them_and_a_new_leader_finishes() {
    let Some(lab) = Lab::with_fabric("flr") else {
        return;
    };
    let Some(cluster) = etcd("fleet-remediation") else {
        return;
    };
    let endpoints = cluster.endpoints_arg();
    let keys = lab.dir.join("trusted-keys");
    let keys_arg = keys.to_str().unwrap();
    let ttl = TTL_S.to_string();
    let mut a = Some(controller(
        "ctl-rem-a",
        &endpoints,
        TTL_S,
        &["--trusted-keys", keys_arg],
    ));
    until(Duration::from_secs(10), "ctl-rem-a leads", || {
        (a.as_ref().unwrap().json(&["fleet", "status"])["leader"] == "ctl-rem-a").then_some(())
    });
    let b = controller(
        "ctl-rem-b",
        &endpoints,
        TTL_S,
        &["--trusted-keys", keys_arg],
    );
    let leader = a.as_ref().unwrap();

    // The inventory, rules and datapaths, through the leader.
    leader.json(&["depot", "import", lab.dir.join("depot").to_str().unwrap()]);
    leader.json(&["cluster", "create", "c1", "--manager-version", "8.0.3"]);
    for (i, h) in HOSTS.iter().enumerate() {
        let file = write(&lab.dir, &format!("host{i}.yaml"), h);
        leader.json(&["host", "add", "--cluster", "c1", "-f", &file]);
    }
    let rules = write(&lab.dir, "rules.yaml", &lab.rules);
    leader.json(&["rules", "apply", "-f", &rules]);
    for host in ["h1", "h2"] {
        let datapaths: String = DPUS
            .iter()
            .zip(&lab.interfaces)
            .filter(|((h, _), _)| *h == host)
            .map(|((_, serial), ports)| {
                let ports: Vec<String> = ports.iter().map(|(p, i)| format!("{p}: {i}")).collect();
                format!(
                    "- {{name: {serial}, backend: xdp, interfaces: {{{}}}}}\n",
                    ports.join(", ")
                )
            })
            .collect();
        let file = write(&lab.dir, &format!("{host}-datapaths.yaml"), &datapaths);
        leader.json(&["host", "set", host, "-f", &file]);
    }
    let mut agents: Vec<_> = ["h1", "h2"]
        .iter()
        .map(|h| {
            let pins = lab.pins.0.join(h);
            agent(
                lab.dir.join(format!("agent-{h}")),
                Some(&pins),
                &endpoints,
                h,
                &["--lease-ttl", &ttl, "--trusted-keys", keys_arg],
            )
        })
        .collect();
    until(
        Duration::from_secs(30),
        "both hosts run their datapaths",
        || {
            let hosts = leader.json(&["host", "list"]);
            let ok = hosts.as_array()?.iter().all(|h| {
                h["state"] == "available"
                    && h["report"]["datapaths"]
                        .as_array()
                        .is_some_and(|d| !d.is_empty() && d.iter().all(|d| d["state"] == "running"))
            });
            (ok && hosts.as_array()?.len() == 2).then_some(())
        },
    );

    // A bad image is refused by name; the new one is taken.
    let out = leader.cli(&["image", "set", "--cluster", "c1", "--base", "esxi=9.9"]);
    let (code, err) = failure(&out);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("esxi 9.9 is not in the depot"), "{err}");
    leader.json(&[
        "image",
        "set",
        "--cluster",
        "c1",
        "--base",
        "esxi=8.0.4",
        "--firmware",
        "bluefield-fw=24.2",
        "--component",
        "dse-datapath=2.0",
    ]);
    // A follower refuses to start one, naming the leader.
    let out = b.cli(&["lifecycle", "remediate", "--cluster", "c1", "--no-wait"]);
    let (_, err) = failure(&out);
    assert!(err.contains("ctl-rem-a"), "{err}");

    // Traffic across both hosts, A->B (S1, S2) and C->D (S1, S3).
    let fabric = lab.fabric.as_ref().unwrap();
    let flows = [fabric.flow(0, 1, PPS), fabric.flow(2, 3, PPS)];
    std::thread::sleep(Duration::from_millis(500));

    // One host at a time, h1 first, each DPU's traffic kept.
    let started = leader.json(&[
        "lifecycle",
        "remediate",
        "--cluster",
        "c1",
        "--parallel",
        "1",
        "--keep-offload",
        "--no-wait",
    ]);
    let id = started["id"].as_u64().unwrap();
    // Another is refused while it runs.
    let out = leader.cli(&["lifecycle", "remediate", "--cluster", "c1", "--no-wait"]);
    let (_, err) = failure(&out);
    assert!(
        err.contains(&format!("remediation {id} is under way")),
        "{err}"
    );

    // h1 mid-sequence (its DPU flashed): the leader dies.
    until(Duration::from_secs(30), "h1 flashes its DPU", || {
        let r = remediation(leader, id)?;
        let steps = r["hosts"][0]["steps"].as_array()?.clone();
        steps.iter().any(|s| s["step"] == "flash").then_some(())
    });
    let killed = Instant::now();
    let (dir, _) = a.take().unwrap().kill();
    let _ = dir;
    until(Duration::from_secs(10), "ctl-rem-b leads", || {
        (b.json(&["fleet", "status"])["leader"] == "ctl-rem-b").then_some(())
    });
    eprintln!("ctl-rem-b leads {:?} after the kill", killed.elapsed());

    let done = until(Duration::from_secs(90), "the remediation ends", || {
        let r = remediation(&b, id)?;
        r["finished_ms"].is_u64().then_some(r)
    });
    std::thread::sleep(Duration::from_millis(500));
    let flows: Vec<Delivery> = flows.into_iter().map(|f| f.finish()).collect();
    for (f, name) in flows.iter().zip(["A->B", "C->D"]) {
        eprintln!("{name}: {} sent, {} lost", f.sent, f.lost().len());
        assert!(f.sent > 0, "{name} sent");
        assert!(f.lost().is_empty(), "{name} lost {:?}", f.lost());
    }
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
    let clusters = b.json(&["cluster", "list"]);
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
            let hosts = b.json(&["host", "list"]);
            hosts
                .as_array()?
                .iter()
                .flat_map(|h| h["report"]["dpus"].as_array().cloned().unwrap_or_default())
                .all(|d| d["firmware"] == "24.2" && d["datapath"] == "2.0")
                .then_some(())
        },
    );
    for a in &mut agents {
        a.kill();
    }
}
