//! A fleet's remediation through failures, as processes: a 3-member etcd,
//! two controllers and one `dse agent` per host, each host's DPUs running
//! XDP datapaths on the veths of a two-host fabric with two flows crossing
//! them throughout. Three remediations in a row, each with the leading
//! controller crashing (`DSE_CRASH_AT`) at one of its journaled points in
//! turn: once the remediation is journaled, once hosts are ordered, once a
//! host's result is recorded and before its order is withdrawn. In the
//! second, an agent also crashes mid-step and is started again, and an
//! etcd member dies. Each time the other controller takes over from the
//! journal in etcd, the crashed agent redoes its step, and every host ends
//! OK on the image, recorded in the inventory, with one attempt. Last, an
//! agent stopped for good leaves its host TIMED_OUT past the boot timeout
//! while the other host goes on. Not one datagram is lost throughout.
//!
//! Needs root and `etcd`; under CI=true their absence fails.

mod common;

use common::fleet::{
    cli, etcd, finished, fleet_controller, json, lab_on_fleet, leader, set_image, until,
};
use common::lab::Lab;
use std::time::Duration;

const TTL: &str = "2";
const PPS: u64 = 2_000;

#[test]
fn controllers_and_an_agent_crash_at_each_journaled_point_and_every_host_ends_ok() {
    let Some(lab) = Lab::with_fabric("flf") else {
        return;
    };
    let Some(mut cluster) = etcd("fleet-remediation-faults") else {
        return;
    };
    dse::demo::depot::add_firmware(&lab.dir, "24.3").expect("adds firmware 24.3");
    let endpoints = cluster.endpoints_arg();
    let keys = lab.dir.join("trusted-keys").display().to_string();
    let start = |id: &str| fleet_controller(&lab.dir, &endpoints, id, TTL, &keys);
    let mut ctl = [start("ctl-x"), start("ctl-y")];
    let lead = until(Duration::from_secs(15), "a controller leads", || {
        leader(&ctl[0]).filter(|l| l.starts_with("ctl-"))
    });
    let mut leading = usize::from(lead == "ctl-y");
    let mut agents = lab_on_fleet(&lab, &ctl[leading], &endpoints, TTL);
    let fabric = lab.fabric.as_ref().unwrap();
    let flows = fabric.flows(PPS);
    std::thread::sleep(Duration::from_millis(500));

    let rounds = [
        ("started", "8.0.3", "24.2", None),
        ("ordered", "8.0.3", "24.3", Some(("h2", "stage"))),
        ("recorded", "8.0.4", "24.3", None),
    ];
    let unix_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let mut restarted_ms = 0;
    for (id, (point, base, firmware, agent_crash)) in (1u64..).zip(rounds) {
        // The follower restarts to crash at `point`, and is made leader.
        let other = 1 - leading;
        let crash = format!("fleet-{point}");
        ctl[other]
            .restart_with_env(&[("DSE_CRASH_AT", crash.as_str())])
            .unwrap();
        ctl[leading].kill();
        let crashing = if other == 0 { "ctl-x" } else { "ctl-y" };
        until(Duration::from_secs(15), "the crashing one leads", || {
            (leader(&ctl[other]).as_deref() == Some(crashing)).then_some(())
        });
        ctl[leading].restart().unwrap();
        leading = other;
        let survivor = 1 - leading;
        if let Some((host, step)) = agent_crash {
            let i = usize::from(host == "h2");
            agents[i]
                .restart_with_env(&[("DSE_CRASH_AT", step)])
                .unwrap();
        }

        let l = &ctl[leading];
        set_image(l, base, firmware, None);
        let _ = cli(
            l,
            &[
                "lifecycle",
                "remediate",
                "--cluster",
                "c1",
                "--parallel",
                "2",
                "--keep-offload",
                "--no-wait",
            ],
        );
        // In the second, an etcd member dies too, until the round ends.
        if id == 2 {
            cluster.kill(1);
        }
        until(Duration::from_secs(60), "the leader crashes", || {
            ctl[leading].exited().map(|_| ())
        });
        if let Some((host, _)) = agent_crash {
            let i = usize::from(host == "h2");
            until(Duration::from_secs(60), "the agent crashes", || {
                agents[i].exited().map(|_| ())
            });
            restarted_ms = unix_ms();
            agents[i].restart().unwrap();
        }
        let done = finished(&ctl[survivor], id, Duration::from_secs(90));
        for h in done["hosts"].as_array().unwrap() {
            assert_eq!(h["result"], "OK", "round {point}: {h}");
            assert_eq!(h["attempts"], 1, "round {point}: {h}");
        }
        if let Some((host, step)) = agent_crash {
            let h = done["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["host"] == host)
                .unwrap();
            // The step under way at the crash (its first DPU's) was done
            // by the agent started again.
            let first = h["steps"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["step"] == step)
                .unwrap();
            assert_eq!(first["state"], "done", "{first}");
            assert!(
                first["at_ms"].as_u64().unwrap() >= restarted_ms,
                "{host} redid {step} after its crash: {first}"
            );
        }
        until(
            Duration::from_secs(10),
            "the inventory records the image",
            || {
                let clusters = json(&ctl[survivor], &["cluster", "list"]);
                let hosts = clusters[0]["hosts"].as_array()?.clone();
                hosts
                    .iter()
                    .all(|h| {
                        h["version"] == base
                            && h["dpus"]
                                .as_array()
                                .is_some_and(|d| d.iter().all(|d| d["firmware"] == firmware))
                    })
                    .then_some(())
            },
        );
        eprintln!("round {id}: the leader crashed at fleet-{point}; every host OK");
        if id == 2 {
            cluster.restart(1).unwrap();
        }
        ctl[leading].restart().unwrap();
        leading = survivor;
    }

    // h1's agent stops for good (its XDP datapath forwards on): h1 is
    // TIMED_OUT once its agent stays away past the boot timeout, with no
    // retry, and h2 goes on (a hitless datapath upgrade).
    agents[0].kill();
    let l = &ctl[leading];
    set_image(l, "8.0.4", "24.3", Some("2.0"));
    json(
        l,
        &[
            "lifecycle",
            "remediate",
            "--cluster",
            "c1",
            "--parallel",
            "2",
            "--retries",
            "0",
            "--boot-timeout-ms",
            "3000",
            "--no-wait",
        ],
    );
    let done = finished(l, 4, Duration::from_secs(60));
    let hosts = done["hosts"].as_array().unwrap();
    assert_eq!(hosts[0]["host"], "h1");
    assert_eq!(hosts[0]["result"], "TIMED_OUT", "{}", hosts[0]);
    assert!(
        hosts[0]["message"]
            .as_str()
            .unwrap()
            .contains("unavailable"),
        "{}",
        hosts[0]
    );
    assert_eq!(hosts[1]["result"], "OK", "{}", hosts[1]);
    // Compliance: h1 unavailable, naming its agent; h2 compliant.
    let c = json(l, &["lifecycle", "check", "--cluster", "c1"]);
    assert_eq!(c["status"], "unavailable", "{c}");
    let h1 = &c["hosts"][0];
    assert_eq!(
        (&h1["host"], &h1["status"]),
        (&"h1".into(), &"unavailable".into()),
        "{c}"
    );
    assert!(
        h1["dpus"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("host h1's agent is unavailable"),
        "{c}"
    );
    assert_eq!(c["hosts"][1]["status"], "compliant", "{c}");
    // Its counters cannot be asked of it: the error says so, at once.
    let asked = std::time::Instant::now();
    let out = cli(l, &["rules", "counters", "--host", "h1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("host h1 is unavailable"), "{err}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );

    // Nor can its DPUs be staged: refused at once, naming it, and h2 is
    // not staged either.
    let out = cli(l, &["lifecycle", "stage", "--cluster", "c1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("host h1 is unavailable"), "{err}");

    common::fabric::assert_lossless(flows);
}
