//! The fleet's figures, on a 3-member etcd (loopback), two
//! `dse serve --etcd` controllers and 100 `dse agent` processes:
//!
//! - rule-change fan-out: from the leader's answer to `PUT /v1/rules` until
//!   each agent's report that its datapath (a memory datapath: the emulated
//!   datapath on in-memory ports) runs the new generation arrives on a
//!   watch, over
//!   20 changes (2,000 samples): p50, p99, max; beside the floor of any
//!   fan-out through etcd, one write until a watch delivers it;
//! - controller fail-over: from SIGKILL of the leader until the other
//!   controller accepts a change, three times, against the lease TTL;
//! - etcd's load in steady state with 100 agents: raft proposals committed
//!   and gRPC bytes received per second, over 20 s;
//! - a 100-host remediation's wall time (a firmware flash and a 1 s DPU
//!   boot each host) at `--parallel` 1, 8 and 96, beside the median of one
//!   host's own sequence in the same run.
//!
//! `cargo bench --bench fleet`. Needs etcd (Debian's etcd-server).

#[path = "../tests/common/mod.rs"]
mod common;

use common::fleet::{agent, drop_rules, etcd};
use dse::lab::fleet::FleetProcess;
use dse_control::client::{Call, Endpoint, Method};
use dse_control::fleet::agent::HostStatus;
use dse_control::fleet::{Etcd, EtcdConfig};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const AGENTS: usize = 100;
const CHANGES: u64 = 20;
const TTL_S: u64 = 3;

fn controller(dir: &Path, endpoints: &str, id: &str) -> FleetProcess {
    let ttl = TTL_S.to_string();
    FleetProcess::controller(
        Path::new(env!("CARGO_BIN_EXE_dse")),
        &dir.join(id),
        endpoints,
        id,
        &["--lease-ttl", &ttl, "--trusted-keys", &keys(dir)],
    )
    .expect("starts a controller")
}

/// The trusted keys of the bench's depot, under `dir`.
fn keys(dir: &Path) -> String {
    dir.join("trusted-keys").display().to_string()
}

/// Remediates cluster `bench` to BlueField firmware `firmware`, `parallel`
/// hosts at once, through the controller at `socket`: the wall time, and
/// the median of one host's own sequence.
async fn remediate(socket: &Path, firmware: &str, parallel: usize) -> (Duration, Duration) {
    let image = serde_json::json!({
        "base_image": {"name": "esxi", "version": "8.0.3"},
        "firmware_addon": {"name": "bluefield-fw", "version": firmware},
    });
    let set = Call::new(Method::PUT, "/v1/clusters/bench/image").json(image.to_string());
    assert!(
        matches!(call(socket, set).await, Some((200, _))),
        "sets the image"
    );
    let start = Call::new(Method::POST, "/v1/clusters/bench/remediate")
        .json(serde_json::json!({"parallel": parallel}).to_string());
    let Some((202, started)) = call(socket, start).await else {
        panic!("starts the remediation")
    };
    let id = started["id"].as_u64().unwrap();
    let done = loop {
        let get = Call::new(Method::GET, format!("/v1/remediations/{id}"));
        if let Some((200, r)) = call(socket, get).await
            && r["finished_ms"].is_u64()
        {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ms = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let mut each: Vec<Duration> = done["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            assert_eq!(h["result"], "OK", "{h}");
            Duration::from_millis(ms(&h["finished_ms"]).saturating_sub(ms(&h["started_ms"])))
        })
        .collect();
    each.sort();
    let wall = Duration::from_millis(ms(&done["finished_ms"]) - ms(&done["started_ms"]));
    (wall, percentile(&each, 0.5))
}

/// `call` against the controller at `socket`: the status and JSON body.
async fn call(socket: &Path, call: Call) -> Option<(u16, serde_json::Value)> {
    let (status, body) = Endpoint::Unix(socket.to_path_buf()).send(call).await.ok()?;
    Some((status.as_u16(), serde_json::from_slice(&body).ok()?))
}

async fn publish(socket: &Path, g: u64) -> bool {
    let put = Call::new(Method::PUT, "/v1/rules").json(drop_rules(100, g));
    matches!(call(socket, put).await, Some((200, _)))
}

async fn fleet_status(socket: &Path) -> Option<serde_json::Value> {
    call(socket, Call::new(Method::GET, "/v1/fleet"))
        .await
        .filter(|(s, _)| *s == 200)
        .map(|(_, v)| v)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Each named counter from every member's `/metrics`: the largest
/// (`max`, for what every member counts alike, such as committed
/// proposals) and the sum (for what each member counts of its own
/// clients, such as bytes received).
fn scrape(endpoints: &[String], names: &[&str]) -> BTreeMap<String, (f64, f64)> {
    let mut seen: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for e in endpoints {
        let addr = e.trim_start_matches("http://");
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            continue;
        };
        let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let mut parts = line.split(' ');
            let (Some(name), Some(Ok(v))) = (parts.next(), parts.next().map(str::parse::<f64>))
            else {
                continue;
            };
            if names.contains(&name) {
                let entry = seen.entry(name.to_string()).or_insert((0.0, 0.0));
                entry.0 = entry.0.max(v);
                entry.1 += v;
            }
        }
    }
    seen
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(cluster) = etcd("bench-fleet") else {
        eprintln!("fleet: skipped (needs etcd)");
        return;
    };
    let endpoints = cluster.endpoints_arg();
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-fleet");
    let _ = std::fs::remove_dir_all(&tmp);
    dse::demo::depot::write(&tmp).expect("writes the depot");
    dse::demo::depot::add_firmware(&tmp, "24.3").expect("adds firmware 24.3");
    let mut controllers = [
        controller(&tmp, &endpoints, "ctl-0"),
        controller(&tmp, &endpoints, "ctl-1"),
    ];
    let ttl = TTL_S.to_string();
    let _agents: Vec<_> = (0..AGENTS)
        .map(|i| {
            let host = format!("n{i:03}");
            agent(
                tmp.join(&host),
                None,
                &endpoints,
                &host,
                &["--lease-ttl", &ttl, "--trusted-keys", &keys(&tmp)],
            )
        })
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        // Every agent registered, and a leader.
        let deadline = Instant::now() + Duration::from_secs(60);
        let leader = loop {
            if let Some(s) = fleet_status(&controllers[0].socket()).await
                && s["agents_alive"] == AGENTS
                && let Some(l) = s["leader"].as_str()
            {
                break l.to_string();
            }
            assert!(Instant::now() < deadline, "the fleet never came up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut leading = usize::from(leader == "ctl-1");
        // The rules first (a datapath binds only ports they define), then
        // a memory datapath on every host.
        assert!(publish(&controllers[leading].socket(), 1).await, "publishes");
        for i in 0..AGENTS {
            let desired = serde_json::json!({
                "datapaths": [{"name": "dp", "backend": "memory", "interfaces": {}}]
            });
            let set = Call::new(Method::PUT, format!("/v1/hosts/n{i:03}")).json(desired.to_string());
            let answer = call(&controllers[leading].socket(), set).await;
            assert!(matches!(answer, Some((200, _))), "sets n{i:03}: {answer:?}");
        }

        // Fan-out: each report of generation g, as a watch on the hosts'
        // keys delivers it.
        let c = Etcd::connect(EtcdConfig::new(&endpoints))
            .await
            .expect("connects");
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let hosts = format!("{}/hosts/", c.prefix());
        let mut watch_client = c.client();
        let mut stream = watch_client
            .watch(
                hosts.as_str(),
                Some(etcd_client::WatchOptions::new().with_prefix()),
            )
            .await
            .expect("watches");
        tokio::spawn(async move {
            while let Ok(Some(r)) = stream.message().await {
                let at = Instant::now();
                for e in r.events() {
                    let Some(kv) = e.kv() else { continue };
                    if !kv.key().ends_with(b"/status") {
                        continue;
                    }
                    // A generation counts once the host's datapath runs it.
                    if let Ok(s) = serde_json::from_slice::<HostStatus>(kv.value())
                        && s.datapaths.len() == 1
                        && s.datapaths[0].in_sync
                    {
                        let _ = seen_tx.send((s.host, s.applied.generation, at));
                    }
                }
            }
        });
        // The floor of any fan-out through etcd: one write, until a watch
        // on it delivers it.
        let ping = format!("{}/bench/ping", c.prefix());
        let mut ping_client = c.client();
        let mut pings = ping_client
            .watch(ping.as_str(), None)
            .await
            .expect("watches");
        let mut floor = Vec::new();
        for i in 0..CHANGES {
            let sent = Instant::now();
            c.client()
                .put(ping.as_str(), i.to_string(), None)
                .await
                .expect("writes");
            while let Some(r) = pings.message().await.expect("the watch lives") {
                if !r.events().is_empty() {
                    break;
                }
            }
            floor.push(sent.elapsed());
        }
        floor.sort();
        let mut samples = Vec::new();
        let mut rounds = Vec::new();
        for g in 2..=CHANGES + 1 {
            assert!(publish(&controllers[leading].socket(), g).await, "publishes");
            let answered = Instant::now();
            let mut reached = BTreeMap::new();
            while reached.len() < AGENTS {
                let (host, generation, at) =
                    tokio::time::timeout(Duration::from_secs(30), seen.recv())
                        .await
                        .expect("every agent reports within 30 s")
                        .expect("the watch lives");
                if generation == g {
                    reached.entry(host).or_insert(at.saturating_duration_since(answered));
                }
            }
            rounds.push(*reached.values().max().unwrap());
            samples.extend(reached.into_values());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        samples.sort();
        rounds.sort();
        println!(
            "fan-out to {AGENTS} agents, {CHANGES} changes of a 100-rule set ({} samples):",
            samples.len()
        );
        println!(
            "  per agent: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; last agent of a change: median {:.1} ms",
            percentile(&samples, 0.5).as_secs_f64() * 1e3,
            percentile(&samples, 0.99).as_secs_f64() * 1e3,
            samples.last().unwrap().as_secs_f64() * 1e3,
            percentile(&rounds, 0.5).as_secs_f64() * 1e3,
        );
        println!(
            "  floor, same run: one etcd write until a watch delivers it, {CHANGES} times: p50 {:.2} ms, max {:.2} ms",
            percentile(&floor, 0.5).as_secs_f64() * 1e3,
            floor.last().unwrap().as_secs_f64() * 1e3,
        );

        // etcd in steady state: what the cluster commits (every member
        // commits each write: the largest count), and what its clients
        // send and receive (each member its own: the sum).
        let names = [
            "etcd_server_proposals_committed_total",
            "etcd_mvcc_put_total",
            "etcd_debugging_mvcc_txn_total",
            "etcd_network_client_grpc_received_bytes_total",
            "etcd_network_client_grpc_sent_bytes_total",
        ];
        let members = cluster.endpoints();
        let before = scrape(&members, &names);
        let window = Duration::from_secs(20);
        tokio::time::sleep(window).await;
        let after = scrape(&members, &names);
        let rate = |n: &str, sum: bool| {
            let pick = |m: &BTreeMap<String, (f64, f64)>| {
                m.get(n).map_or(0.0, |v| if sum { v.1 } else { v.0 })
            };
            (pick(&after) - pick(&before)) / window.as_secs_f64()
        };
        println!(
            "etcd in steady state with {AGENTS} agents and 2 controllers (TTL {TTL_S} s), over {window:?}: {:.1} proposals committed/s ({:.1} puts/s, {:.1} txns/s); clients sent {:.0} B/s and received {:.0} B/s",
            rate(names[0], false),
            rate(names[1], false),
            rate(names[2], false),
            rate(names[3], true),
            rate(names[4], true),
        );

        // Remediations of all 100 hosts, firmware 24.0 -> 24.1 -> 24.2 ->
        // 24.3, at --parallel 1, 8 and 96.
        let socket = controllers[leading].socket();
        let import = Call::new(Method::POST, "/v1/depot/import")
            .json(serde_json::json!({"path": tmp.join("depot")}).to_string());
        assert!(matches!(call(&socket, import).await, Some((201, _))), "imports");
        let create = Call::new(Method::POST, "/v1/clusters").json(
            serde_json::json!({"name": "bench", "management": "image", "manager_version": "8.0.3"})
                .to_string(),
        );
        assert!(matches!(call(&socket, create).await, Some((201, _))), "creates");
        for i in 0..AGENTS {
            let mut host = dse::demo::depot::host(&format!("n{i:03}"), &[&format!("B{i:03}")]);
            host["dpus"][0]["firmware"] = "24.0".into();
            let add = Call::new(Method::POST, "/v1/clusters/bench/hosts").json(host.to_string());
            assert!(matches!(call(&socket, add).await, Some((201, _))), "adds n{i:03}");
        }
        let mut walls = Vec::new();
        for (parallel, firmware) in [(1, "24.1"), (8, "24.2"), (96, "24.3")] {
            let (wall, one) = remediate(&socket, firmware, parallel).await;
            walls.push(format!(
                "--parallel {parallel}: {:.1} s (one host's sequence: median {:.2} s)",
                wall.as_secs_f64(),
                one.as_secs_f64()
            ));
        }
        println!(
            "{AGENTS}-host remediation, a firmware flash and a 1 s DPU boot each: {}",
            walls.join("; ")
        );

        // Fail-over, three times: the leader is SIGKILLed, and the other
        // takes a change; a new controller takes the dead one's place.
        let mut failovers = Vec::new();
        for round in 0..3 {
            let other = 1 - leading;
            controllers[leading].kill();
            let died = Instant::now();
            let g = CHANGES + 2 + round;
            while !publish(&controllers[other].socket(), g).await {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            failovers.push(died.elapsed());
            controllers[leading] = controller(&tmp, &endpoints, &format!("ctl-r{round}"));
            let deadline = Instant::now() + Duration::from_secs(30);
            while fleet_status(&controllers[leading].socket()).await.is_none() {
                assert!(Instant::now() < deadline, "a new controller starts");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            leading = other;
        }
        let shown: Vec<String> = failovers
            .iter()
            .map(|d| format!("{:.2} s", d.as_secs_f64()))
            .collect();
        println!(
            "controller fail-over (leader SIGKILLed until the other accepts a change), lease TTL {TTL_S} s: {}",
            shown.join(", ")
        );
    });
}
