//! The fleet's store on a real 3-member etcd (Debian's etcd-server, as
//! processes on loopback): rule sets in chunks made current whole or not at
//! all, through a member's death; watches that resume after a compaction;
//! hosts that have one live agent each and turn unavailable within their
//! lease's TTL, and that an agent takes back from its own crashed run; a
//! controller that takes over from a dead leader within the
//! TTL, with the old leader fenced out;
//! etcd's own roles keeping an agent to its host's keys; and clear errors
//! for wrong credentials and unreachable endpoints.
//!
//! Needs `etcd` and `etcdctl`; under CI=true their absence fails.

mod common;

use common::fleet::etcd as etcd_cluster;
use dse_control::fleet::{
    CHUNK_BYTES, Credentials, Etcd, EtcdConfig, FleetError, Resumed, WatchEvent, bootstrap_auth,
    campaign, fetch_rule_set, grant_agent, keys, leader, live_hosts, publish_rule_set, register,
    watch_from,
};
use std::time::{Duration, Instant};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A rule set's JSON text of about `bytes` bytes.
fn text(bytes: usize, tag: u32) -> Vec<u8> {
    let mut s = String::from(r#"{"ports": [{"name": "p0", "index": 0}], "rules": ["#);
    let mut id = 1;
    while s.len() < bytes {
        if id > 1 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"id": {id}, "priority": {tag}, "match": {{"l4_dst": {}}}, "actions": ["drop"]}}"#,
            id % 65536
        ));
        id += 1;
    }
    s.push_str("]}");
    s.into_bytes()
}

#[test]
fn rule_sets_are_written_in_chunks_and_made_current_whole_through_a_members_death() {
    let Some(mut etcd) = etcd_cluster("chunks") else {
        return;
    };
    let rt = runtime();
    let c = rt
        .block_on(Etcd::connect(EtcdConfig::new(&etcd.endpoints_arg())))
        .unwrap();
    assert_eq!(rt.block_on(fetch_rule_set(&c, "default")).unwrap(), None);

    // 3.5 MB: over etcd's 1.5 MiB request limit, so in chunks.
    let first = text(3_500_000, 1);
    let p = rt
        .block_on(publish_rule_set(&c, "default", Some(0), &first))
        .unwrap();
    assert_eq!(
        (p.generation, p.chunks),
        (1, first.len().div_ceil(CHUNK_BYTES))
    );
    let got = rt.block_on(fetch_rule_set(&c, "default")).unwrap().unwrap();
    assert_eq!((got.generation, got.text == first), (1, true));

    // A change based on a stale generation is refused, and leaves nothing.
    let stale = rt.block_on(publish_rule_set(&c, "default", Some(0), &text(10_000, 2)));
    assert!(
        matches!(
            stale,
            Err(FleetError::Conflict {
                expected: 0,
                current: 1,
                ..
            })
        ),
        "{stale:?}"
    );
    let keys_of = |g: u64| {
        let dir = keys::generation(c.prefix(), "default", g);
        rt.block_on(
            c.client().get(
                dir.as_str(),
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_keys_only(),
                ),
            ),
        )
        .unwrap()
        .kvs()
        .len()
    };
    assert_eq!(keys_of(2), 0, "the refused attempt's chunks are gone");

    // Named rule sets are apart: another one starts at generation 1.
    let other = rt
        .block_on(publish_rule_set(&c, "edge", None, b"{\"rules\": []}"))
        .unwrap();
    assert_eq!(other.generation, 1);

    // One member dies: the other two are a quorum, and writes go on.
    etcd.kill(0);
    let second = text(2_000_000, 3);
    let p = rt
        .block_on(publish_rule_set(&c, "default", Some(1), &second))
        .unwrap();
    assert_eq!(p.generation, 2);
    let got = rt.block_on(fetch_rule_set(&c, "default")).unwrap().unwrap();
    assert_eq!((got.generation, got.text == second), (2, true));
    etcd.restart(0).unwrap();

    // Old generations are pruned, the kept ones stay readable.
    for g in 3..=7 {
        let p = rt
            .block_on(publish_rule_set(
                &c,
                "default",
                Some(g - 1),
                &text(1000, g as u32),
            ))
            .unwrap();
        assert_eq!(p.generation, g);
    }
    assert_eq!(keys_of(2), 0, "generation 2 is pruned");
    assert!(
        keys_of(3) > 0 && keys_of(7) > 0,
        "generations 3 to 7 are kept"
    );
}

#[test]
fn a_watch_resumes_after_a_compaction_by_listing_again() {
    let Some(etcd) = etcd_cluster("watch") else {
        return;
    };
    let rt = runtime();
    let c = rt
        .block_on(Etcd::connect(EtcdConfig::new(&etcd.endpoints_arg())))
        .unwrap();
    let first = rt
        .block_on(publish_rule_set(&c, "default", None, &text(1000, 1)))
        .unwrap();
    for g in 2..=3 {
        rt.block_on(publish_rule_set(&c, "default", None, &text(1000, g)))
            .unwrap();
    }
    let latest = rt.block_on(fetch_rule_set(&c, "default")).unwrap().unwrap();
    rt.block_on(c.client().compact(latest.revision, None))
        .unwrap();

    // An agent that last saw generation 1 resumes from there: compacted.
    let current = keys::current(c.prefix(), "default");
    let mut w = rt
        .block_on(watch_from(&c, &current, first.revision + 1))
        .unwrap();
    let resumed = rt.block_on(w.next()).unwrap();
    assert!(
        matches!(resumed, Resumed::Compacted { compacted } if compacted == latest.revision),
        "{resumed:?}"
    );

    // So it lists again, and watches from the revision the list was read at.
    let listed = rt.block_on(fetch_rule_set(&c, "default")).unwrap().unwrap();
    assert_eq!(listed.generation, 3);
    let mut w = rt
        .block_on(watch_from(&c, &current, listed.revision + 1))
        .unwrap();
    let p = rt
        .block_on(publish_rule_set(&c, "default", Some(3), &text(1000, 4)))
        .unwrap();
    let events = match rt.block_on(w.next()).unwrap() {
        Resumed::Events(e) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        events,
        vec![WatchEvent::Put {
            key: current.clone(),
            value: b"4".to_vec(),
            revision: p.revision,
        }]
    );
    assert_eq!(w.next_revision, p.revision + 1);
}

#[test]
fn etcd_keeps_each_agent_to_its_own_host_and_refuses_wrong_credentials() {
    let Some(etcd) = etcd_cluster("auth") else {
        return;
    };
    let rt = runtime();
    let endpoints = etcd.endpoints_arg();
    let open = rt
        .block_on(Etcd::connect(EtcdConfig::new(&endpoints)))
        .unwrap();
    let controller = Credentials {
        user: "controller".into(),
        password: "c-secret".into(),
    };
    rt.block_on(bootstrap_auth(&open, "r-secret", &controller))
        .unwrap();
    let as_user = |credentials: Credentials| {
        rt.block_on(Etcd::connect(
            EtcdConfig::new(&endpoints).with_credentials(credentials),
        ))
    };
    let root = as_user(Credentials {
        user: "root".into(),
        password: "r-secret".into(),
    })
    .unwrap();
    let h1 = rt.block_on(grant_agent(&root, "h1", "h1-secret")).unwrap();
    rt.block_on(grant_agent(&root, "h2", "h2-secret")).unwrap();

    // The controller writes rule sets; the agent reads them and writes its
    // own host's keys, and etcd refuses it everything else.
    let ctl = as_user(controller).unwrap();
    rt.block_on(publish_rule_set(&ctl, "default", None, &text(1000, 1)))
        .unwrap();
    let agent = as_user(h1).unwrap();
    let got = rt.block_on(fetch_rule_set(&agent, "default")).unwrap();
    assert_eq!(got.map(|g| g.generation), Some(1));
    let put = |key: String| {
        rt.block_on(agent.client().put(key.as_str(), "x", None))
            .map_err(|e| agent.error(format!("writing {key}"), e))
    };
    put(format!("{}status", keys::host(agent.prefix(), "h1"))).expect("its own host");
    for key in [
        format!("{}status", keys::host(agent.prefix(), "h2")),
        format!("{}status", keys::host(agent.prefix(), "h10")),
        keys::current(agent.prefix(), "default"),
        format!("{}journal", keys::control(agent.prefix())),
    ] {
        let e = put(key.clone()).expect_err(&key);
        assert!(
            matches!(&e, FleetError::PermissionDenied { user, .. } if user == "dse-agent-h1"),
            "{key}: {e:?}"
        );
        assert!(e.to_string().contains(&key), "{e}");
    }
    let publish = rt.block_on(publish_rule_set(&agent, "default", None, b"{}"));
    assert!(
        matches!(publish, Err(FleetError::PermissionDenied { .. })),
        "{publish:?}"
    );

    // A wrong password, and no user at all, each say what to do.
    let wrong = as_user(Credentials {
        user: "dse-agent-h2".into(),
        password: "guess".into(),
    });
    let Err(e) = wrong else {
        panic!("a wrong password connected")
    };
    assert!(matches!(e, FleetError::Credentials { .. }), "{e:?}");
    assert!(
        e.to_string().contains("dse-agent-h2") && e.to_string().contains(&endpoints),
        "{e}"
    );
    let none = rt.block_on(Etcd::connect(EtcdConfig::new(&endpoints)));
    let Err(e) = none else {
        panic!("no user connected to an etcd with authentication on")
    };
    assert!(
        matches!(
            e,
            FleetError::NoCredentials { .. } | FleetError::PermissionDenied { .. }
        ),
        "{e:?}"
    );
}

#[test]
fn unreachable_etcd_is_refused_naming_its_endpoints() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoints = format!("http://127.0.0.1:{port}");
    let mut config = EtcdConfig::new(&endpoints);
    config.timeout = std::time::Duration::from_secs(2);
    let started = std::time::Instant::now();
    let Err(e) = runtime().block_on(Etcd::connect(config)) else {
        panic!("connected to nothing")
    };
    assert!(matches!(e, FleetError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains(&endpoints), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn a_host_has_one_live_agent_and_is_unavailable_within_its_lease_ttl() {
    let Some(mut etcd) = etcd_cluster("liveness") else {
        return;
    };
    // Keep-alives run on the runtime's own threads while the test waits.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt
        .block_on(Etcd::connect(EtcdConfig::new(&etcd.endpoints_arg())))
        .unwrap();
    let ttl = Duration::from_secs(2);
    let live = || rt.block_on(live_hosts(&c)).unwrap();
    let h1 = rt
        .block_on(register(&c, "h1", b"{\"up\": 1}", ttl, &[], |_| Ok(())))
        .unwrap();
    let h2 = rt
        .block_on(register(&c, "h2", b"{}", ttl, &[], |_| Ok(())))
        .unwrap();
    assert_eq!(
        live().get("h1").map(Vec::as_slice),
        Some(&b"{\"up\": 1}"[..])
    );

    // Two agents claiming one host: the second is refused, by name.
    let twice = rt.block_on(register(&c, "h1", b"{}", ttl, &[], |_| Ok(())));
    let Err(e) = twice else {
        panic!("a second agent took host h1")
    };
    assert!(matches!(e, FleetError::HostClaimed { .. }), "{e:?}");
    assert!(e.to_string().contains("h1"), "{e}");

    // h2's agent dies (its keep-alive stops, nothing is revoked): h2 is
    // unavailable within the TTL, plus etcd's expiry tick.
    drop(h2);
    let died = Instant::now();
    while live().contains_key("h2") {
        assert!(
            died.elapsed() < ttl + Duration::from_secs(2),
            "h2 still live {:?} after its agent died",
            died.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "h2 unavailable {:?} after its agent died (TTL {ttl:?})",
        died.elapsed()
    );
    // Then another agent may take the name.
    let h2 = rt
        .block_on(register(&c, "h2", b"{}", ttl, &[], |_| Ok(())))
        .unwrap();

    // h1's agent lives on, through a member's death, for several TTLs.
    etcd.kill(1);
    std::thread::sleep(3 * ttl);
    assert!(h1.is_alive() && live().contains_key("h1"), "h1 kept alive");
    rt.block_on(h1.report(b"{\"up\": 2}")).unwrap();
    assert_eq!(live()["h1"], b"{\"up\": 2}");
    etcd.restart(1).unwrap();

    // A clean stop makes the host unavailable at once.
    rt.block_on(h1.release()).unwrap();
    assert!(!live().contains_key("h1"));
    assert!(live().contains_key("h2"));
    drop(h2);
}

#[test]
fn an_agent_takes_its_host_back_from_its_own_crashed_run_with_a_member_dead() {
    let Some(mut etcd) = etcd_cluster("takeback") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt
        .block_on(Etcd::connect(EtcdConfig::new(&etcd.endpoints_arg())))
        .unwrap();
    let ttl = Duration::from_secs(30);
    // With one member of three dead, some of the client's requests go to
    // it first; each take-back must still succeed (each try sends its
    // requests anew, so twenty tries meet the dead member many times).
    etcd.kill(2);
    let mut earlier = rt
        .block_on(register(&c, "h1", b"{}", ttl, &[], |_| Ok(())))
        .unwrap();
    for i in 0..20 {
        let previous = [earlier.lease];
        // The run crashes: its keep-alive stops, its lease still holds h1.
        drop(earlier);
        earlier = match rt.block_on(register(&c, "h1", b"{}", ttl, &previous, |_| Ok(()))) {
            Ok(r) => r,
            Err(e) => panic!("take-back {i} of host h1 from lease {previous:?}: {e}"),
        };
    }
    // Another agent's lease is not taken over.
    let Err(e) = rt.block_on(register(&c, "h1", b"{}", ttl, &[1], |_| Ok(()))) else {
        panic!("host h1 taken from a live agent")
    };
    assert!(matches!(e, FleetError::HostClaimed { .. }), "{e:?}");
    drop(earlier);
}

#[test]
fn another_controller_takes_over_within_the_lease_ttl_and_the_old_leader_is_fenced_out() {
    let Some(etcd) = etcd_cluster("leader") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt
        .block_on(Etcd::connect(EtcdConfig::new(&etcd.endpoints_arg())))
        .unwrap();
    let ttl = Duration::from_secs(2);
    let a = rt.block_on(campaign(&c, "ctl-a", ttl)).unwrap();
    assert_eq!(rt.block_on(leader(&c)).unwrap().as_deref(), Some("ctl-a"));

    // B campaigns and waits while A leads.
    let (tx, rx) = std::sync::mpsc::channel();
    let cb = c.clone();
    rt.spawn(async move {
        let b = campaign(&cb, "ctl-b", ttl).await;
        tx.send((Instant::now(), b)).unwrap();
    });
    assert!(
        rx.recv_timeout(3 * ttl).is_err(),
        "B waits while A keeps its lease"
    );

    // The leader's writes carry its fence.
    let write = |fence: etcd_client::Compare, value: &str| {
        let txn = etcd_client::Txn::new()
            .when([fence])
            .and_then([etcd_client::TxnOp::put(
                format!("{}journal", keys::control(c.prefix())),
                value,
                None,
            )]);
        rt.block_on(c.client().txn(txn)).unwrap().succeeded()
    };
    assert!(write(a.fence(), "a1"), "A writes while it leads");

    // A dies (no resignation): B leads within the TTL, plus etcd's tick.
    let fence = a.fence();
    drop(a);
    let died = Instant::now();
    let (took_over, b) = rx.recv_timeout(ttl + Duration::from_secs(3)).unwrap();
    let b = b.unwrap();
    let took = took_over - died;
    eprintln!("B took over {took:?} after A died (TTL {ttl:?})");
    assert!(took < ttl + Duration::from_secs(2), "{took:?}");
    assert_eq!(rt.block_on(leader(&c)).unwrap().as_deref(), Some("ctl-b"));
    assert!(!write(fence, "a2"), "A's fence holds no longer");
    assert!(write(b.fence(), "b1"), "B writes");

    // A clean resignation hands over at once.
    rt.block_on(b.resign()).unwrap();
    assert_eq!(rt.block_on(leader(&c)).unwrap(), None);
}

#[test]
fn a_client_connects_and_writes_with_one_member_dead() {
    let Some(mut etcd) = etcd_cluster("one-dead") else {
        return;
    };
    etcd.kill(0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let c = rt
            .block_on(Etcd::connect(EtcdConfig::new(&etcd.endpoints_arg())))
            .expect("two members of three answer");
        rt.block_on(publish_rule_set(&c, "default", None, b"{\"rules\": []}"))
            .expect("writes go through");
        eprintln!("connected and wrote in {:?}", started.elapsed());
    }
}
