//! The fleet as processes: a 3-member etcd, two `dse serve --etcd`
//! controllers and `dse agent`s, driven through the CLI as a user would.
//! One controller leads; the other serves reads and refuses changes,
//! naming the leader. Named rule sets and host records written through the
//! leader reach the agents. When the leader is SIGKILLed the other takes
//! over within the lease TTL and its writes, whole rule sets and batches,
//! reach the agents. An agent
//! SIGKILLed shows `unavailable` within its TTL, with its last report.
//!
//! Needs `etcd`; under CI=true its absence fails.

mod common;

use common::daemon::{DaemonProcess, failure};
use common::fleet::{agent, controller, drop_rules, etcd, serve_fails, until, until_ok};
use dse_control::fleet::{Credentials, Etcd, EtcdConfig, bootstrap_auth, grant_agent};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(2);

fn rules_file(dir: &Path, name: &str, n: u32, priority: u64) -> String {
    let path = dir.join(name);
    std::fs::write(&path, drop_rules(n, priority)).unwrap();
    path.display().to_string()
}

fn host<'a>(hosts: &'a Value, name: &str) -> &'a Value {
    hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == name)
        .unwrap_or(&Value::Null)
}

/// Whether every host of `want` (host, rule set, generation) is available
/// and reports that rule set at that generation.
fn applied(hosts: &Value, want: &[(&str, &str, u64)]) -> bool {
    want.iter().all(|(name, rule_set, generation)| {
        let h = host(hosts, name);
        h["state"] == "available"
            && h["report"]["applied"]["rule_set"] == *rule_set
            && h["report"]["applied"]["generation"] == *generation
    })
}

#[test]
fn one_controller_leads_the_other_takes_over_and_agents_follow_their_writes() {
    let Some(mut cluster) = etcd("fleet-controllers") else {
        return;
    };
    let endpoints = cluster.endpoints_arg();
    let a = controller("ctl-a", &endpoints, TTL.as_secs(), &[]);
    let b = controller("ctl-b", &endpoints, TTL.as_secs(), &[]);
    let tmp = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fleet-controllers");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let ttl = TTL.as_secs().to_string();
    let mut agents: Vec<_> = ["h1", "h2", "h3"]
        .iter()
        .map(|h| agent(tmp.join(h), None, &endpoints, h, &["--lease-ttl", &ttl]))
        .collect();

    // One leads; both say which.
    let status = until(Duration::from_secs(10), "a leader", || {
        let s = a.json(&["fleet", "status"]);
        s["leader"].is_string().then_some(s)
    });
    let (leader, follower) = if status["leader"] == "ctl-a" {
        (a, b)
    } else {
        (b, a)
    };
    let leader_id = status["leader"].as_str().unwrap().to_string();
    assert_eq!(follower.json(&["fleet", "status"])["leader"], leader_id);
    assert_eq!(status["controllers"].as_array().unwrap().len(), 2);
    let members = status["etcd_members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["healthy"] == true), "{status}");
    assert_eq!(
        members.iter().filter(|m| m["leader"] == true).count(),
        1,
        "{status}"
    );

    // The follower refuses a change, naming the leader and its API.
    let edge = rules_file(&tmp, "edge.json", 200, 10);
    let out = follower.cli(&["rules", "apply", "-f", &edge, "--rule-set", "edge"]);
    let (code, err) = failure(&out);
    assert_ne!(code, 0);
    assert!(
        err.contains("does not lead")
            && err.contains(&leader_id)
            && err.contains(&leader.socket().display().to_string()),
        "{err}"
    );

    // Through the leader: two named rule sets, and each host's record.
    for (h, rule_set) in [("h1", "edge"), ("h2", "edge"), ("h3", "default")] {
        let set = leader.json(&["host", "set", h, "--rule-set", rule_set]);
        assert_eq!(set["desired"]["rule_set"], rule_set);
    }
    let core = rules_file(&tmp, "core.json", 50, 5);
    let published = leader.json(&["rules", "apply", "-f", &core]);
    assert_eq!(
        (&published["rule_set"], &published["generation"]),
        (&Value::from("default"), &Value::from(1))
    );
    let sent = Instant::now();
    let published = leader.json(&["rules", "apply", "-f", &edge, "--rule-set", "edge"]);
    assert_eq!(published["generation"], 1);
    let want = [("h1", "edge", 1), ("h2", "edge", 1), ("h3", "default", 1)];
    // Reads are served by either controller.
    until(Duration::from_secs(10), "every agent applied", || {
        applied(&follower.json(&["host", "list"]), &want).then_some(())
    });
    eprintln!(
        "rule sets reached 3 agents {:?} after the answer",
        sent.elapsed()
    );
    // Prometheus scrapes either controller: whether it leads, and each
    // host's liveness and applied generation.
    let m = |d: &DaemonProcess, name: &str, labels: &[&str]| {
        DaemonProcess::metric(&d.scrape(), name, labels)
    };
    assert_eq!(m(&leader, "dse_controller_leader", &[]), Some(1.0));
    assert_eq!(m(&follower, "dse_controller_leader", &[]), Some(0.0));
    assert_eq!(m(&follower, "dse_host_up", &[r#"host="h3""#]), Some(1.0));
    assert_eq!(
        m(
            &follower,
            "dse_host_applied_generation",
            &[r#"host="h1""#, r#"rule_set="edge""#]
        ),
        Some(1.0)
    );
    assert!(
        m(
            &follower,
            "dse_api_requests_total",
            &[r#"route="/v1/hosts""#, r#"status="200""#]
        )
        .is_some_and(|n| n >= 1.0)
    );
    let got = follower.json(&["rules", "get", "--rule-set", "edge"]);
    assert_eq!(got["generation"], 1);
    assert_eq!(got["rules"]["rules"].as_array().unwrap().len(), 200);
    // Pages and rules by id, as a single machine answers them.
    let page = follower.json(&[
        "rules",
        "get",
        "--rule-set",
        "edge",
        "--after",
        "100",
        "--limit",
        "50",
    ]);
    let ids: Vec<u64> = page["rules"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (101..=150).collect::<Vec<u64>>());
    assert_eq!(page["next"], 150);
    let some = follower.json(&["rules", "get", "--rule-set", "edge", "--ids", "7,5,999"]);
    assert_eq!(some["rules"]["rules"][0]["id"], 7);
    assert_eq!(some["rules"]["rules"].as_array().unwrap().len(), 2);
    assert_eq!(follower.json(&["fleet", "status"])["agents_alive"], 3);
    assert_eq!(
        follower.json(&["stats", "--host", "h1"]),
        serde_json::json!({})
    );
    let (code, err) = failure(&follower.cli(&["stats", "--host", "h9"]));
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("h9"), "{err}");

    // The audit log, in etcd, read through either controller: the
    // follower's refusal and the leader's changes, with who asked.
    let audit = follower.json(&["audit", "--last", "50"]);
    let entries = audit.as_array().unwrap();
    let refused = entries
        .iter()
        .find(|e| e["what"].as_str().unwrap().contains("rule_set=edge"))
        .unwrap_or_else(|| panic!("{audit}"));
    assert!(
        refused["result"]
            .as_str()
            .unwrap()
            .contains("does not lead"),
        "{refused}"
    );
    let set = entries
        .iter()
        .find(|e| e["what"] == "PUT /v1/hosts/h1")
        .unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(set["result"], "ok");
    assert!(set["who"].as_str().unwrap().starts_with("uid 0"), "{set}");
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // A stale expected generation is a conflict (exit 3).
    let out = leader.cli(&[
        "rules",
        "apply",
        "-f",
        &edge,
        "--rule-set",
        "edge",
        "--expect-generation",
        "0",
    ]);
    assert_eq!(failure(&out).0, 3, "{}", failure(&out).1);

    // The leader dies: the follower takes over within the TTL, and its
    // writes reach the agents.
    let mut leader = leader;
    leader.child.kill().unwrap();
    let died = Instant::now();
    let follower_id = if leader_id == "ctl-a" {
        "ctl-b"
    } else {
        "ctl-a"
    };
    until(TTL + Duration::from_secs(3), "the follower leads", || {
        (follower.json(&["fleet", "status"])["leader"] == follower_id).then_some(())
    });
    let took = died.elapsed();
    eprintln!("{follower_id} led {took:?} after {leader_id} died (TTL {TTL:?})");
    assert!(took < TTL + Duration::from_secs(2), "{took:?}");
    // An etcd member dies too: the change still goes through, and the
    // fleet status names the member unreachable.
    cluster.kill(0);
    let edge2 = rules_file(&tmp, "edge2.json", 300, 20);
    let published = until(Duration::from_secs(5), "the new leader writes", || {
        let out = follower.cli(&[
            "-o",
            "json",
            "rules",
            "apply",
            "-f",
            &edge2,
            "--rule-set",
            "edge",
        ]);
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    });
    assert_eq!(published["generation"], 2);
    let want = [("h1", "edge", 2), ("h2", "edge", 2), ("h3", "default", 1)];
    until(
        Duration::from_secs(10),
        "the new generation applied",
        || applied(&follower.json(&["host", "list"]), &want).then_some(()),
    );

    // A batch changes the current generation: rules added and replaced
    // by id, others deleted; the agents apply the result.
    let more = tmp.join("more.json");
    std::fs::write(
        &more,
        r#"[{"id": 5, "priority": 99, "match": {"ip_proto": 6}, "actions": ["drop"]},
            {"id": 1000, "priority": 1, "match": {"ip_proto": 17}, "actions": ["drop"]}]"#,
    )
    .unwrap();
    let more = more.display().to_string();
    let batch = follower.json(&["rules", "add", "-f", &more, "--rule-set", "edge"]);
    assert_eq!(batch["generation"], 3, "{batch}");
    assert_eq!(
        batch["summary"],
        serde_json::json!({"added": 1, "changed": 1, "removed": 0})
    );
    let deleted = follower.json(&["rules", "delete", "1", "2", "--rule-set", "edge"]);
    assert_eq!(deleted["generation"], 4, "{deleted}");
    let got = follower.json(&["rules", "get", "--rule-set", "edge"]);
    let rules = got["rules"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 299, "300 + 1 - 2");
    let five = rules.iter().find(|r| r["id"] == 5).unwrap();
    assert_eq!(five["priority"], 99);
    assert!(rules.iter().all(|r| r["id"] != 1 && r["id"] != 2));
    let want = [("h1", "edge", 4), ("h2", "edge", 4), ("h3", "default", 1)];
    until(Duration::from_secs(10), "the batch applied", || {
        applied(&follower.json(&["host", "list"]), &want).then_some(())
    });
    // A stale generation is a conflict (exit 3); deleting a rule that is
    // not there, or a rule that names an undefined port, is refused,
    // naming it, and nothing is published.
    let out = follower.cli(&[
        "rules",
        "delete",
        "7",
        "--rule-set",
        "edge",
        "--expect-generation",
        "3",
    ]);
    assert_eq!(failure(&out).0, 3, "{}", failure(&out).1);
    let (code, err) = failure(&follower.cli(&["rules", "delete", "1", "--rule-set", "edge"]));
    assert_ne!(code, 0);
    assert!(err.contains("rule 1") && err.contains("delete"), "{err}");
    let bad = tmp.join("bad.json");
    std::fs::write(
        &bad,
        r#"[{"id": 7, "priority": 1, "match": {"in_port": "p9"}, "actions": ["drop"]}]"#,
    )
    .unwrap();
    let out = follower.cli(&[
        "rules",
        "add",
        "-f",
        bad.to_str().unwrap(),
        "--rule-set",
        "edge",
    ]);
    let (code, err) = failure(&out);
    assert_ne!(code, 0);
    assert!(err.contains("p9"), "{err}");
    assert_eq!(
        follower.json(&["rules", "get", "--rule-set", "edge"])["generation"],
        4
    );

    // An agent dies: its host is unavailable within the TTL, its last
    // report kept.
    agents[2].kill();
    let died = Instant::now();
    let hosts = until(TTL + Duration::from_secs(3), "h3 unavailable", || {
        let hosts = follower.json(&["host", "list"]);
        (host(&hosts, "h3")["state"] == "unavailable").then_some(hosts)
    });
    eprintln!("h3 unavailable {:?} after its agent died", died.elapsed());
    assert_eq!(
        DaemonProcess::metric(&follower.scrape(), "dse_host_up", &[r#"host="h3""#]),
        Some(0.0)
    );
    assert_eq!(host(&hosts, "h3")["report"]["applied"]["generation"], 1);
    assert_eq!(
        host(&hosts, "h1")["state"],
        "available",
        "{hosts}\n{}",
        agents[0].log()
    );
    let table = follower.cli(&["host", "list"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("h3") && text.contains("unavailable"),
        "{text}"
    );
    drop(leader);
}

#[test]
fn fleet_input_is_checked_and_named() {
    let Some(cluster) = etcd("fleet-input") else {
        return;
    };
    let endpoints = cluster.endpoints_arg();
    let c = controller("ctl-input", &endpoints, TTL.as_secs(), &[]);
    until(Duration::from_secs(10), "it leads", || {
        (c.json(&["fleet", "status"])["leader"] == "ctl-input").then_some(())
    });
    // A bad rule set name (400: exit 4), a bad host name (exit 4), rules
    // that are wrong (422: exit 4, naming the rule), an endpoint a fleet
    // does not serve yet (501, named).
    let out = c.cli(&["rules", "get", "--rule-set", "a b"]);
    let (code, err) = failure(&out);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("rule set name"), "{err}");
    let out = c.cli(&["host", "set", "../x"]);
    assert_eq!(failure(&out).0, 4, "{}", failure(&out).1);
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fleet-input");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"ports": [{"name": "p0", "index": 0}], "rules": [{"id": 1, "priority": 1, "match": {"ip_proto": 300}, "actions": ["drop"]}]}"#,
    )
    .unwrap();
    let out = c.cli(&["rules", "apply", "-f", bad.to_str().unwrap()]);
    let (code, err) = failure(&out);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("ip_proto"), "{err}");
    let out = c.cli(&["datapath", "list"]);
    let (code, err) = failure(&out);
    assert_ne!(code, 0);
    assert!(
        err.contains("single-machine") && err.contains("dse host set"),
        "{err}"
    );
    // One interface in two datapaths (422: exit 4, naming it); nothing is
    // written.
    let twice = dir.join("twice.yaml");
    std::fs::write(
        &twice,
        "- {name: a, backend: emu, interfaces: {p0: veth7}}\n- {name: b, backend: emu, interfaces: {p0: veth7}}\n",
    )
    .unwrap();
    let out = c.cli(&["host", "set", "h1", "-f", twice.to_str().unwrap()]);
    let (code, err) = failure(&out);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("veth7") && err.contains("twice"), "{err}");
    // A memory datapath bound to an interface (400: exit 4).
    let bound = dir.join("bound.yaml");
    std::fs::write(
        &bound,
        "- {name: m, backend: memory, interfaces: {p0: veth7}}\n",
    )
    .unwrap();
    let out = c.cli(&["host", "set", "h1", "-f", bound.to_str().unwrap()]);
    let (code, err) = failure(&out);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("datapaths[0]") && err.contains("no interfaces"),
        "{err}"
    );
    assert_eq!(c.json(&["host", "list"]), serde_json::json!([]));
    let _ = std::fs::remove_dir_all(&dir);

    // etcd that does not answer: the controller exits, naming it.
    let (code, err) = serve_fails("ctl-nowhere", &["--etcd", "http://127.0.0.1:9"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("127.0.0.1:9") && err.contains("does not answer"),
        "{err}"
    );
}

#[test]
fn a_single_machine_lists_itself_and_runs_only_the_default_rule_set() {
    let (dir, bpffs) = DaemonProcess::paths("single-hosts");
    let d = DaemonProcess::start(dir, bpffs);
    let hosts = d.json(&["host", "list"]);
    let me = &hosts.as_array().unwrap()[0];
    assert_eq!(me["state"], "available");
    assert_eq!(me["report"]["applied"]["rule_set"], "default");
    let out = d.cli(&["rules", "get", "--rule-set", "edge"]);
    let (code, err) = failure(&out);
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("single-machine") && err.contains("edge"),
        "{err}"
    );
    let out = d.cli(&["rules", "delete", "1", "--rule-set", "edge"]);
    let (code, err) = failure(&out);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("edge") && err.contains("--etcd"), "{err}");
    let out = d.cli(&["fleet", "status"]);
    let (code, err) = failure(&out);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("--etcd"), "{err}");
    let (code, err) = failure(&d.cli(&["stats", "--host", "elsewhere"]));
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("elsewhere"), "{err}");
    let me = me["host"].as_str().unwrap();
    assert!(d.json(&["stats", "--host", me]).is_object());
    // The default rule set by name is today's rule set.
    assert_eq!(
        d.json(&["rules", "get", "--rule-set", "default"])["generation"],
        d.json(&["rules", "get"])["generation"]
    );
}

#[test]
fn controllers_and_agents_authenticate_and_etcd_keeps_each_agent_to_its_host() {
    let Some(cluster) = etcd("fleet-auth") else {
        return;
    };
    let endpoints = cluster.endpoints_arg();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let root = rt
        .block_on(Etcd::connect(EtcdConfig::new(&endpoints)))
        .unwrap();
    let controller_creds = Credentials {
        user: "dse-controller".into(),
        password: "controller-secret".into(),
    };
    rt.block_on(bootstrap_auth(&root, "root-secret", &controller_creds))
        .unwrap();
    let root = rt
        .block_on(Etcd::connect(EtcdConfig::new(&endpoints).with_credentials(
            Credentials {
                user: "root".into(),
                password: "root-secret".into(),
            },
        )))
        .unwrap();
    let h1 = rt.block_on(grant_agent(&root, "h1", "h1-secret")).unwrap();
    let tmp = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fleet-auth");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let secret = |name: &str, text: &str| {
        let path = tmp.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let controller_pw = secret("controller.pw", "controller-secret\n");
    let wrong_pw = secret("wrong.pw", "guess\n");
    let h1_pw = secret("h1.pw", "h1-secret\n");

    // Wrong credentials: the controller exits naming the user.
    let (code, err) = serve_fails(
        "ctl-wrong",
        &[
            "--etcd",
            &endpoints,
            "--etcd-user",
            "dse-controller",
            "--etcd-password-file",
            &wrong_pw,
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("refused user dse-controller"), "{err}");
    // No credentials where etcd wants them: named too.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dse"))
        .args(["agent", "--etcd", &endpoints, "--host", "h1", "--db"])
        .arg(tmp.join("nouser").join("agent.redb"))
        .output()
        .unwrap();
    let (code, err) = failure(&out);
    assert_ne!(code, 0);
    assert!(err.contains("needs a user"), "{err}");

    // The right ones: the controller leads, and h1's agent applies what
    // it writes.
    let ttl = TTL.as_secs().to_string();
    let c = controller(
        "ctl-auth",
        &endpoints,
        TTL.as_secs(),
        &[
            "--etcd-user",
            "dse-controller",
            "--etcd-password-file",
            &controller_pw,
        ],
    );
    until(Duration::from_secs(10), "it leads", || {
        (c.json(&["fleet", "status"])["leader"] == "ctl-auth").then_some(())
    });
    let user = [
        "--etcd-user",
        h1.user.as_str(),
        "--etcd-password-file",
        &h1_pw,
    ];
    let _h1 = agent(
        tmp.join("h1"),
        None,
        &endpoints,
        "h1",
        &[&["--lease-ttl", &ttl][..], &user].concat(),
    );
    let rules = rules_file(&tmp, "rules.json", 20, 1);
    c.json(&["host", "set", "h1"]);
    c.json(&["rules", "apply", "-f", &rules]);
    until(Duration::from_secs(10), "h1 applied", || {
        applied(&c.json(&["host", "list"]), &[("h1", "default", 1)]).then_some(())
    });

    // h1's user run as h2's agent: etcd refuses it h2's keys.
    let mut h2 = agent(
        tmp.join("h2"),
        None,
        &endpoints,
        "h2",
        &[&["--lease-ttl", &ttl][..], &user].concat(),
    );
    let status = until(Duration::from_secs(10), "the impostor stops", || {
        h2.child.try_wait().unwrap()
    });
    assert!(!status.success());
    let log = h2.log();
    assert!(
        log.contains("permission denied") && log.contains(&h1.user),
        "{log}"
    );
    let hosts = c.json(&["host", "list"]);
    assert!(host(&hosts, "h2").is_null(), "{hosts}");
    h2.kill();
}

#[test]
fn the_inventory_lives_in_etcd_under_the_cluster_rules_and_agents_report_their_dpus() {
    let Some(cluster) = etcd("fleet-inventory") else {
        return;
    };
    let endpoints = cluster.endpoints_arg();
    let a = controller("inv-a", &endpoints, TTL.as_secs(), &[]);
    until(Duration::from_secs(10), "it leads", || {
        (a.json(&["fleet", "status"])["leader"] == "inv-a").then_some(())
    });
    let b = controller("inv-b", &endpoints, TTL.as_secs(), &[]);
    let tmp = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fleet-inventory");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let ttl = TTL.as_secs().to_string();
    let _h1 = agent(
        tmp.join("h1"),
        None,
        &endpoints,
        "h1",
        &["--lease-ttl", &ttl],
    );
    let host_file = |name: &str, dpus: &[&str]| {
        let dpus: String = dpus
            .iter()
            .map(|serial| {
                format!(
                    "  - {{serial: {serial}, vendor: nvidia-bluefield, model: BlueField-3, generation: 3, hardware_revision: A1, firmware: '32.41.0', os: '8.0.3', datapath: '1.0'}}\n"
                )
            })
            .collect();
        let path = tmp.join(format!("{name}.yaml"));
        std::fs::write(
            &path,
            format!("name: {name}\nversion: '8.0.3'\ndpus:\n{dpus}"),
        )
        .unwrap();
        path.display().to_string()
    };

    // Through the leader, under the same cluster rules as one machine.
    a.json(&["cluster", "create", "c1", "--manager-version", "8.0.3"]);
    let (code, err) = failure(&b.cli(&["cluster", "create", "c2", "--manager-version", "8.0.3"]));
    assert_ne!(code, 0);
    assert!(
        err.contains("does not lead") && err.contains("inv-a"),
        "{err}"
    );
    let (code, err) = failure(&a.cli(&["cluster", "create", "c1", "--manager-version", "8.0.3"]));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("c1"), "{err}");
    a.json(&[
        "host",
        "add",
        "--cluster",
        "c1",
        "-f",
        &host_file("h1", &["S1"]),
    ]);
    // A serial already in the inventory breaks a cluster rule, named.
    let (code, err) = failure(&a.cli(&[
        "host",
        "add",
        "--cluster",
        "c1",
        "-f",
        &host_file("h2", &["S1"]),
    ]));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("S1"), "{err}");
    let (code, err) = failure(&a.cli(&[
        "host",
        "add",
        "--cluster",
        "nowhere",
        "-f",
        &host_file("h3", &["S3"]),
    ]));
    assert_eq!(code, 7, "{err}");
    let listed = b.json(&["cluster", "list"]);
    assert_eq!(listed[0]["name"], "c1");
    assert_eq!(listed[0]["hosts"].as_array().unwrap().len(), 1);

    // h1's agent takes its cluster and reports its DPU from the device.
    let hosts = until(Duration::from_secs(10), "h1 reports its DPU", || {
        let hosts = b.json(&["host", "list"]);
        (host(&hosts, "h1")["report"]["dpus"][0]["state"] == "up").then_some(hosts)
    });
    let report = &host(&hosts, "h1")["report"];
    assert_eq!(report["cluster"], "c1");
    let dpu = &report["dpus"][0];
    assert_eq!(
        (
            &dpu["serial"],
            &dpu["firmware"],
            &dpu["os"],
            &dpu["datapath"]
        ),
        (
            &Value::from("S1"),
            &Value::from("32.41.0"),
            &Value::from("8.0.3"),
            &Value::from("1.0")
        ),
        "{report}"
    );

    // An emulation set through the leader is in h1's report when the
    // command returns (give the follower's read 2 s), not at the agent's
    // next periodic report, 10 s on; so is its end.
    for (flags, state) in [
        (&["--unreachable"][..], "DPU S1 is unreachable"),
        (&[][..], "up"),
    ] {
        let set = a.json(&[&["dpu", "emulate", "S1"][..], flags].concat());
        assert_eq!(set["faults"]["unreachable"], !flags.is_empty(), "{set}");
        until_ok(Duration::from_secs(2), "h1 reports S1's emulation", || {
            let hosts = b.json(&["host", "list"]);
            let seen = &host(&hosts, "h1")["report"]["dpus"][0]["state"];
            (seen == state).then_some(()).ok_or(seen.to_string())
        });
    }
}

#[test]
fn a_paused_leader_is_fenced_out_and_comes_back_as_a_follower() {
    let Some(cluster) = etcd("fleet-paused") else {
        return;
    };
    let endpoints = cluster.endpoints_arg();
    let a = controller("pause-a", &endpoints, TTL.as_secs(), &[]);
    until(Duration::from_secs(10), "a leads", || {
        (a.json(&["fleet", "status"])["leader"] == "pause-a").then_some(())
    });
    let b = controller("pause-b", &endpoints, TTL.as_secs(), &[]);
    let signal = |sig| {
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { libc::kill(a.child.id() as i32, sig) };
    };
    // Paused past its lease: b leads, and a's registration is gone.
    signal(libc::SIGSTOP);
    until(TTL + Duration::from_secs(3), "b leads", || {
        let s = b.json(&["fleet", "status"]);
        (s["leader"] == "pause-b" && s["controllers"].as_array()?.len() == 1).then_some(())
    });
    signal(libc::SIGCONT);
    // Back, a registers again, follows, and refuses changes naming b.
    until(Duration::from_secs(10), "a registered again", || {
        (b.json(&["fleet", "status"])["controllers"]
            .as_array()?
            .len()
            == 2)
            .then_some(())
    });
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fleet-paused");
    std::fs::create_dir_all(&dir).unwrap();
    let rules = rules_file(&dir, "rules.json", 5, 1);
    let (code, err) = until(Duration::from_secs(10), "a follows", || {
        let out = a.cli(&["rules", "apply", "-f", &rules]);
        let (code, err) = failure(&out);
        err.contains("does not lead").then_some((code, err))
    });
    assert_ne!(code, 0);
    assert!(
        err.contains("pause-b") && err.contains(&b.socket().display().to_string()),
        "{err}"
    );
    b.json(&["rules", "apply", "-f", &rules]);
    let _ = std::fs::remove_dir_all(dir);
}
