//! The fleet at size: a 3-member etcd, two `dse serve --etcd` controllers
//! and a hundred `dse agent` processes. Three of the agents run XDP
//! datapaths on veths between namespaces and a fourth runs the host path
//! (emu), each carrying real traffic; the rest run the default rule set
//! on a memory datapath each (the emulated datapath on in-memory ports).
//! Every rule change reaches every agent's datapath; the leader is
//! SIGKILLed under traffic, the other controller takes over, its change
//! reaches every agent; an offloaded host's agent is SIGKILLed and started
//! again, adopting its pinned datapath; then the last controller is
//! SIGKILLed too, and with no controller left the traffic goes on. No
//! datagram is lost throughout. Before that, the hundred hosts are
//! remediated to a new image 96 at once, and each ends OK and compliant.
//!
//! Needs root and etcd; under CI=true their absence fails.

mod common;

use common::bpf::PinDir;
use common::fleet::{agent, controller, drop_rules, etcd, until};
use common::topology::Topology;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const AGENTS: usize = 100;
/// Agents with a datapath on veths: XDP on all but the last, which runs
/// the host path.
const DATAPATH_AGENTS: usize = 4;
const TTL_S: u64 = 3;
const TTL: &str = "3";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// The offloaded hosts' rule set: UDP to 7000 from pa out of pb, and
/// `extra` more rules that change with each generation.
fn veth_rules(extra: u32) -> String {
    let mut rules = vec![
        r#"{"id": 1, "priority": 100, "match": {"in_port": "pa", "ip_proto": 17, "l4_dst": 7000}, "actions": [{"output": "pb"}]}"#.to_string(),
    ];
    rules.extend((0..extra).map(|i| {
        format!(
            r#"{{"id": {}, "priority": 10, "match": {{"ip_proto": 17, "l4_dst": {}}}, "actions": ["drop"]}}"#,
            i + 2,
            8000 + i
        )
    }));
    format!(
        r#"{{"ports": [{{"name": "pa", "index": 0}}, {{"name": "pb", "index": 1}}], "rules": [{}]}}"#,
        rules.join(",")
    )
}

/// Hosts whose report is not yet `rule_set` at `generation` with its one
/// datapath running and in sync.
fn behind(hosts: &Value, want: &dyn Fn(&str) -> (&'static str, u64)) -> Vec<String> {
    hosts
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| {
            let (rule_set, generation) = want(h["host"].as_str().unwrap());
            let r = &h["report"];
            !(h["state"] == "available"
                && r["applied"]["rule_set"] == rule_set
                && r["applied"]["generation"] == generation
                && r["error"].is_null()
                && r["datapaths"].as_array().is_some_and(|d| {
                    d.len() == 1 && d[0]["state"] == "running" && d[0]["in_sync"] == true
                }))
        })
        .map(|h| h["host"].as_str().unwrap().to_string())
        .collect()
}

fn name(i: usize) -> String {
    format!("n{i:03}")
}

#[test]
fn a_hundred_agents_follow_every_change_and_offloaded_traffic_survives_the_leaders_death() {
    if PinDir::new("fleet-scale").is_none() {
        return;
    }
    let Some(cluster) = etcd("fleet-scale") else {
        return;
    };
    let endpoints = cluster.endpoints_arg();
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fleet-scale");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    // The signed depot and the key every controller and agent trusts.
    dse::demo::depot::write(&tmp).expect("the depot is written");
    let keys = tmp.join("trusted-keys").display().to_string();
    let a = controller("scale-a", &endpoints, TTL_S, &["--trusted-keys", &keys]);
    let b = controller("scale-b", &endpoints, TTL_S, &["--trusted-keys", &keys]);
    let topologies: Vec<Topology> = (0..DATAPATH_AGENTS)
        .map(|i| Topology::new(&format!("f{i}"), 90 + i as u8))
        .collect();
    let mut pins = Vec::new();
    let started = Instant::now();
    let mut agents: Vec<_> = (0..AGENTS)
        .map(|i| {
            let dir = tmp.join(name(i));
            let pin = (i < DATAPATH_AGENTS)
                .then(|| PinDir::new(&format!("fleet-scale-{i}")).expect("bpffs"));
            let a = agent(
                dir,
                pin.as_ref().map(|p| p.0.as_path()),
                &endpoints,
                &name(i),
                &[
                    "--lease-ttl",
                    TTL,
                    "--report-every",
                    "1",
                    "--trusted-keys",
                    &keys,
                ],
            );
            pins.extend(pin);
            a
        })
        .collect();
    let status = until(Duration::from_secs(60), "every agent registered", || {
        let s = a.json(&["fleet", "status"]);
        (s["agents_alive"] == AGENTS && s["leader"].is_string()).then_some(s)
    });
    eprintln!(
        "{AGENTS} agents registered {:?} after start",
        started.elapsed()
    );
    let leader_id = status["leader"].as_str().unwrap().to_string();
    let (leader, follower) = if leader_id == "scale-a" {
        (a, b)
    } else {
        (b, a)
    };

    // What each host runs.
    for (i, t) in topologies.iter().enumerate() {
        let datapaths = format!(
            "- {{name: dp, backend: {}, interfaces: {{pa: {}, pb: {}}}}}\n",
            if i + 1 < DATAPATH_AGENTS {
                "xdp"
            } else {
                "emu"
            },
            t.va.outer,
            t.vb.outer
        );
        let file = write(&tmp, &format!("dp{i}.yaml"), &datapaths);
        leader.json(&["host", "set", &name(i), "--rule-set", "veth", "-f", &file]);
    }
    // The rest run the default rule set on a memory datapath each.
    let memory = write(
        &tmp,
        "memory.yaml",
        "- {name: dp, backend: memory, interfaces: {}}\n",
    );
    for i in DATAPATH_AGENTS..AGENTS {
        leader.json(&["host", "set", &name(i), "-f", &memory]);
    }
    let veth = write(&tmp, "veth1.json", &veth_rules(10));
    leader.json(&["rules", "apply", "-f", &veth, "--rule-set", "veth"]);

    // Rule changes to the default rule set reach every agent.
    for g in 1..=3u64 {
        let file = write(&tmp, &format!("default{g}.json"), &drop_rules(100, g));
        let answered = Instant::now();
        leader.json(&["rules", "apply", "-f", &file]);
        let want = move |h: &str| {
            if h < name(DATAPATH_AGENTS).as_str() {
                ("veth", 1)
            } else {
                ("default", g)
            }
        };
        until(Duration::from_secs(30), "every agent applied", || {
            let late = behind(&leader.json(&["host", "list"]), &want);
            late.is_empty().then_some(())
        });
        eprintln!(
            "generation {g} of default reached {} agents within {:?} of the answer",
            AGENTS - DATAPATH_AGENTS,
            answered.elapsed()
        );
    }

    // Prometheus, scraping the leader, sees every host up and each
    // agent's datapath in sync.
    let scrape = leader.scrape();
    let ones = |metric: &str| {
        scrape
            .lines()
            .filter(|l| l.starts_with(&format!("{metric}{{")) && l.ends_with(" 1"))
            .count()
    };
    assert_eq!(ones("dse_host_up"), AGENTS, "{scrape}");
    assert!(
        ones("dse_datapath_in_sync") >= AGENTS - DATAPATH_AGENTS,
        "{scrape}"
    );

    // Traffic through each offloaded host, throughout what follows.
    let stop = Arc::new(AtomicBool::new(false));
    let flows: Vec<_> = topologies
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let rx = t.udp_in_b(7000);
            let tx = t.udp_in_a();
            let to = t.b_addr(7000);
            let stop = Arc::clone(&stop);
            let sender = std::thread::spawn(move || {
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tx.send_to(&sent.to_be_bytes(), to).unwrap();
                    sent += 1;
                    std::thread::sleep(Duration::from_micros(500));
                }
                sent
            });
            let receiver = std::thread::spawn(move || {
                let mut got = 0u64;
                let mut buf = [0u8; 64];
                let mut quiet = 0;
                // Until the sender has stopped and the queue is empty.
                while quiet < 3 {
                    match rx.recv(&mut buf) {
                        Ok(_) => {
                            got += 1;
                            quiet = 0;
                        }
                        Err(_) => quiet += 1,
                    }
                }
                got
            });
            (i, sender, receiver)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));

    // The leader dies; the other leads within the TTL plus etcd's tick,
    // and its change reaches every agent, the offloaded ones included.
    let mut leader = leader;
    leader.child.kill().unwrap();
    let died = Instant::now();
    let follower_id = if leader_id == "scale-a" {
        "scale-b"
    } else {
        "scale-a"
    };
    until(Duration::from_secs(10), "the follower leads", || {
        (follower.json(&["fleet", "status"])["leader"] == follower_id).then_some(())
    });
    eprintln!(
        "{follower_id} led {:?} after the leader died",
        died.elapsed()
    );
    let veth2 = write(&tmp, "veth2.json", &veth_rules(20));
    let default4 = write(&tmp, "default4.json", &drop_rules(120, 4));
    until(
        Duration::from_secs(10),
        "the new leader takes changes",
        || {
            follower
                .cli(&["rules", "apply", "-f", &veth2, "--rule-set", "veth"])
                .status
                .success()
                .then_some(())
        },
    );
    follower.json(&["rules", "apply", "-f", &default4]);
    let want = |h: &str| {
        if h < name(DATAPATH_AGENTS).as_str() {
            ("veth", 2)
        } else {
            ("default", 4)
        }
    };
    until(
        Duration::from_secs(30),
        "every agent applied the new leader's",
        || {
            behind(&follower.json(&["host", "list"]), &want)
                .is_empty()
                .then_some(())
        },
    );
    // An offloaded host's agent crashes and is started again: it adopts
    // its pinned XDP datapath, whose traffic never stops, and reports it
    // in sync.
    let unix_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let restarted_ms = unix_ms();
    agents[0].restart().expect("the agent starts again");
    let restarted = Instant::now();
    until(Duration::from_secs(15), "n000 back and in sync", || {
        let hosts = follower.json(&["host", "list"]);
        let reported = hosts
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"] == name(0).as_str())?["report"]["reported_unix_ms"]
            .as_u64()?;
        (reported >= restarted_ms && behind(&hosts, &want).is_empty()).then_some(())
    });
    eprintln!(
        "{} available and in sync {:?} after its agent was restarted",
        name(0),
        restarted.elapsed()
    );

    // Every host remediated to a new image, 96 at once, the offloaded
    // ones under traffic.
    follower.json(&["depot", "import", &tmp.join("depot").display().to_string()]);
    follower.json(&["cluster", "create", "scale", "--manager-version", "8.0.3"]);
    for i in 0..AGENTS {
        let host = format!(
            "name: {}\nversion: 8.0.3\ndpus:\n  - {{serial: S{i:03}, vendor: nvidia-bluefield, model: BlueField-3, generation: 3, hardware_revision: B1, firmware: \"24.1\", os: 8.0.3, datapath: \"1.0\"}}\n",
            name(i)
        );
        let file = write(&tmp, &format!("host{i}.yaml"), &host);
        follower.json(&["host", "add", "--cluster", "scale", "-f", &file]);
    }
    follower.json(&[
        "image",
        "set",
        "--cluster",
        "scale",
        "--base",
        "esxi=8.0.4",
        "--firmware",
        "bluefield-fw=24.2",
    ]);
    let began = Instant::now();
    let done = follower.json(&[
        "lifecycle",
        "remediate",
        "--cluster",
        "scale",
        "--parallel",
        "96",
    ]);
    eprintln!(
        "{AGENTS} hosts remediated, 96 at once, in {:?}",
        began.elapsed()
    );
    let hosts = done["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), AGENTS);
    for h in hosts {
        assert_eq!(h["result"], "OK", "{h}");
    }
    let clusters = follower.json(&["cluster", "list"]);
    for h in clusters[0]["hosts"].as_array().unwrap() {
        assert_eq!(h["version"], "8.0.4", "{h}");
        assert_eq!(h["dpus"][0]["firmware"], "24.2", "{h}");
    }
    // Compliance, by what each agent reports of its DPU: every host.
    until(Duration::from_secs(10), "every host compliant", || {
        let c = follower.json(&["lifecycle", "check", "--cluster", "scale"]);
        let hosts = c["hosts"].as_array()?;
        (hosts.len() == AGENTS && c["status"] == "compliant").then_some(())
    });

    // Each offloaded host's statistics, as its agent reports them.
    until(Duration::from_secs(10), "the agents report traffic", || {
        let stats = follower.json(&["stats", "--host", &name(0)]);
        (stats["dp"]["rx_packets"].as_u64()? > 100).then_some(())
    });
    let all = follower.json(&["stats"]);
    assert!(
        all[format!("{}/dp", name(DATAPATH_AGENTS - 1))].is_object(),
        "{all}"
    );

    // No controller at all: the agents' datapaths, the host path among
    // them, go on forwarding.
    let mut follower = follower;
    follower.child.kill().unwrap();
    let _ = follower.child.wait();
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for (i, sender, receiver) in flows {
        let sent = sender.join().unwrap();
        let got = receiver.join().unwrap();
        eprintln!("host {}: {got} of {sent} datagrams", name(i));
        assert!(sent > 1000, "{sent}");
        assert_eq!(got, sent, "host {}: no datagram lost", name(i));
    }
    drop(agents);
    drop(pins);
}
