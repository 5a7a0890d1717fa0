//! A host's agent against a real 3-member etcd: it applies the rule set
//! its host's desired record names and reports what it applied; a rule
//! change reaches it; a rule set it cannot apply is reported, not applied;
//! after a crash it restarts from its own store with etcd down, takes its
//! host back from its dead run, and catches up, across a compaction, when
//! etcd is back; a clean stop releases the host.
//!
//! Needs `etcd`; under CI=true its absence fails.

mod common;

use common::fleet::etcd as etcd_cluster;
use dse_control::DaemonConfig;
use dse_control::fleet::agent::{Agent, AgentConfig, HostDesired, HostStatus, desired_key};
use dse_control::fleet::{Etcd, EtcdConfig, live_hosts, publish_rule_set};
use dse_datapath::xdp::XdpLimits;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn rules(n: u32, priority: u64) -> Vec<u8> {
    common::fleet::drop_rules(n, priority).into_bytes()
}

fn agent_config(dir: &Path, endpoints: &str) -> AgentConfig {
    AgentConfig {
        etcd: EtcdConfig::new(endpoints),
        host: "h1".into(),
        daemon: DaemonConfig {
            db: dir.join("agent.redb"),
            bpffs: dir.join("pins"),
            emu_workers: 1,
            xdp_limits: XdpLimits::small(),
            xdp_skb_mode: false,
            depot: Default::default(),
        },
        ttl: Duration::from_secs(2),
        report_every: Duration::from_secs(1),
    }
}

/// Runs `agent` on `rt` until the returned sender is sent to (a clean
/// stop) or the task is aborted (a crash: nothing is released).
fn run(
    rt: &tokio::runtime::Runtime,
    agent: std::sync::Arc<Agent>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(async move {
        agent
            .run(async {
                let _ = stopped.await;
            })
            .await
            .expect("the agent runs");
    });
    (stop, task)
}

/// A fresh directory `name` for an agent, a runtime, and a client of the
/// etcd at `endpoints`.
fn fresh(name: &str, endpoints: String) -> (PathBuf, tokio::runtime::Runtime, String, Etcd) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt
        .block_on(Etcd::connect(EtcdConfig::new(&endpoints)))
        .unwrap();
    (dir, rt, endpoints, c)
}

/// Waits up to 10 s for h1's status to satisfy `ok`; returns it and when.
fn status_until(
    rt: &tokio::runtime::Runtime,
    c: &Etcd,
    ok: impl Fn(&HostStatus) -> bool,
) -> (HostStatus, Instant) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = rt
            .block_on(live_hosts(c))
            .ok()
            .and_then(|live| live.get("h1").cloned())
            .and_then(|s| serde_json::from_slice::<HostStatus>(&s).ok());
        if let Some(s) = status
            && ok(&s)
        {
            return (s, Instant::now());
        }
        assert!(Instant::now() < deadline, "h1's status never got there");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_agent_applies_its_hosts_rule_set_reports_it_and_restarts_without_etcd() {
    let Some(mut etcd) = etcd_cluster("agent") else {
        return;
    };
    let (dir, rt, endpoints, c) = fresh("fleet-agent-h1", etcd.endpoints_arg());
    let desired = HostDesired {
        rule_set: "edge".into(),
        datapaths: Vec::new(),
    };
    rt.block_on(c.client().put(
        desired_key(c.prefix(), "h1"),
        serde_json::to_vec(&desired).unwrap(),
        None,
    ))
    .unwrap();
    rt.block_on(publish_rule_set(&c, "edge", None, &rules(1000, 10)))
        .unwrap();
    // Another rule set, which h1 does not run.
    rt.block_on(publish_rule_set(&c, "default", None, &rules(5, 1)))
        .unwrap();

    let agent = std::sync::Arc::new(Agent::open(agent_config(&dir, &endpoints)).unwrap());
    let (_stop, task) = run(&rt, std::sync::Arc::clone(&agent));
    let (s, _) = status_until(&rt, &c, |s| s.applied.generation == 1);
    assert_eq!(s.applied.rule_set, "edge");
    assert_eq!(s.error, None);
    assert_eq!(agent.daemon().rules().1.rules.len(), 1000);

    // A change reaches it.
    let published = Instant::now();
    rt.block_on(publish_rule_set(&c, "edge", Some(1), &rules(1200, 10)))
        .unwrap();
    let (_, applied) = status_until(&rt, &c, |s| s.applied.generation == 2);
    eprintln!(
        "generation 2 applied and reported {:?} after the publish",
        applied - published
    );
    assert_eq!(agent.daemon().rules().1.rules.len(), 1200);

    // A rule set it cannot apply is reported, and the datapaths keep
    // generation 2.
    let bad = br#"{"ports": [], "rules": [{"id": 1, "priority": 1, "match": {"in_port": "nowhere"}, "actions": ["drop"]}]}"#;
    rt.block_on(publish_rule_set(&c, "edge", Some(2), bad))
        .unwrap();
    let (s, _) = status_until(&rt, &c, |s| s.error.is_some());
    assert!(
        s.error.as_deref().unwrap().contains("generation 3"),
        "{s:?}"
    );
    assert_eq!(s.applied.generation, 2);
    assert_eq!(agent.daemon().rules().1.rules.len(), 1200);

    // It crashes (its lease still holds the host), and every etcd member
    // goes down: it opens from its own store.
    task.abort();
    let _ = rt.block_on(task);
    drop(agent);
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..3 {
        etcd.kill(i);
    }
    let agent = std::sync::Arc::new(Agent::open(agent_config(&dir, &endpoints)).unwrap());
    assert_eq!(agent.applied().generation, 2);
    assert_eq!(agent.daemon().rules().1.rules.len(), 1200);
    let (stop, _task) = run(&rt, std::sync::Arc::clone(&agent));
    std::thread::sleep(Duration::from_secs(2));

    // etcd returns (keeping the crashed run's lease alive a while); the
    // agent takes its host back from its own earlier run, and, with a
    // fixed generation published and the history compacted meanwhile,
    // lists again and catches up.
    etcd.restart_all().unwrap();
    let c = rt
        .block_on(Etcd::connect(EtcdConfig::new(&endpoints)))
        .unwrap();
    let p = rt
        .block_on(publish_rule_set(&c, "edge", Some(3), &rules(800, 10)))
        .unwrap();
    rt.block_on(c.client().compact(p.revision, None)).unwrap();
    let (s, _) = status_until(&rt, &c, |s| s.applied.generation == 4);
    assert_eq!(s.error, None);
    assert_eq!(agent.daemon().rules().1.rules.len(), 800);

    // A clean stop releases the host at once.
    stop.send(()).unwrap();
    let released = Instant::now();
    while rt.block_on(live_hosts(&c)).unwrap().contains_key("h1") {
        assert!(released.elapsed() < Duration::from_secs(1), "h1 released");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A request put while the agent is not watching (it is starting, or
/// syncing after a change, or reconnecting) is answered once it watches,
/// as long as its asker waits; one whose asker gave up is gone with its
/// lease and is not answered.
#[test]
fn an_agent_answers_a_request_put_before_it_watched_and_not_one_given_up() {
    use dse_control::fleet::{ask, counters};
    let Some(etcd) = etcd_cluster("agent-ask") else {
        return;
    };
    let (dir, rt, endpoints, c) = fresh("fleet-agent-ask", etcd.endpoints_arg());
    rt.block_on(publish_rule_set(&c, "default", None, &rules(5, 1)))
        .unwrap();

    // Given up before any agent runs: its request goes with its lease.
    let gave_up = rt.block_on(counters::ask(&c, "h1", None, Duration::from_millis(100)));
    assert!(
        matches!(
            gave_up,
            Err(dse_control::fleet::FleetError::AgentSilent { .. })
        ),
        "{gave_up:?}"
    );
    let request = ask::request_key(c.prefix(), "h1", counters::KIND);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rt.block_on(c.get(&request)).unwrap().kvs().is_empty() {
        assert!(Instant::now() < deadline, "the given-up request stays");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Asked while no agent watches; the agent starts after.
    let waiting = {
        let c = c.clone();
        rt.spawn(async move { counters::ask(&c, "h1", None, Duration::from_secs(20)).await })
    };
    std::thread::sleep(Duration::from_millis(500));
    let answer = ask::answer_key(c.prefix(), "h1", counters::KIND);
    assert!(rt.block_on(c.get(&answer)).unwrap().kvs().is_empty());
    let agent = std::sync::Arc::new(Agent::open(agent_config(&dir, &endpoints)).unwrap());
    let (stop, _task) = run(&rt, std::sync::Arc::clone(&agent));
    let got = rt.block_on(waiting).unwrap().expect("the agent answers");
    assert_eq!(got.error, None, "{got:?}");
    assert_eq!(got.counters, Some(Default::default()), "{got:?}");
    // Answered, its request is gone; the answer stays, one.
    assert!(rt.block_on(c.get(&request)).unwrap().kvs().is_empty());
    assert_eq!(rt.block_on(c.get(&answer)).unwrap().kvs().len(), 1);
    stop.send(()).unwrap();
}
