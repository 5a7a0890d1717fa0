//! End to end through the real binary: `dse serve` started as a child, the
//! CLI driving it, traffic through veths between two namespaces.
//!
//! - The same rule set offloaded (xdp) and on the host path (emu, on
//!   AF_XDP, as its status says) counts the same traffic the same way, and
//!   loses none of it, with busy loops on every core beside it.
//! - SIGKILL of the daemon in the middle of a large apply: after a restart
//!   the store and the XDP datapath hold one whole generation, and the XDP
//!   datapath forwarded every packet throughout.
//!
//! Needs root; under CI=true that is a failure.

mod common;

use common::bpf::PinDir;
use common::daemon::{DaemonProcess, failure};
use common::netns::mac_text;
use common::stream::Stream;
use common::topology::{Topology, drain};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const RULES: &str = "\
ports:
  - {name: pa, index: 0}
  - {name: pb, index: 1}
rules:
  - {id: 1, priority: 10, match: {in_port: pa, ip_proto: udp, l4_dst: 7000}, actions: [{output: pb}]}
  - {id: 2, priority: 5, match: {in_port: pa, ip_proto: udp, l4_dst: 7001}, actions: [drop]}
";

/// Root and bpffs, or the test skips (fails under CI=true).
fn privileged(name: &str) -> bool {
    PinDir::new(name).is_some()
}

/// Sends `n` datagrams from A to B's `port`, paced; the source port.
fn send(t: &Topology, port: u16, n: u64) -> u16 {
    let sock = t.udp_in_a();
    for i in 0..n {
        sock.send_to(&i.to_be_bytes(), t.b_addr(port))
            .expect("sends");
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    sock.local_addr().expect("bound").port()
}

/// Per-rule packet counts of datapath `name`.
fn counts(d: &DaemonProcess, name: &str) -> BTreeMap<String, u64> {
    let v = d.json(&["rules", "counters", "--datapath", name]);
    v[name]
        .as_object()
        .expect("the datapath's counters")
        .iter()
        .map(|(id, c)| (id.clone(), c["packets"].as_u64().unwrap()))
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn offload_and_host_path_count_the_same_traffic_alike() {
    if !privileged("e2e-probe") {
        return;
    }
    // Busy loops on every core throughout, as on a loaded CI machine: at
    // this rate neither path may lose a datagram all the same.
    let _hogs = CpuHogs::start();
    let t = Topology::new("ce", 81);
    let (dir, bpffs) = DaemonProcess::paths("ce");
    // Nothing listens yet: exit code 5, and the message says what to do.
    let early = std::process::Command::new(env!("CARGO_BIN_EXE_dse"))
        .arg("status")
        .env("DSE_SOCKET", dir.join("dse.sock"))
        .output()
        .unwrap();
    let (code, err) = failure(&early);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("dse serve"), "{err}");

    let d = DaemonProcess::start(dir.clone(), bpffs);
    let rules = write(&dir, "rules.yaml", RULES);
    let bad = write(
        &dir,
        "bad.yaml",
        &RULES.replace("{output: pb}", "{output: pz}"),
    );
    let (code, err) = failure(&d.cli(&["rules", "apply", "-f", &bad]));
    assert_eq!(code, 4, "invalid rules: {err}");
    assert!(err.contains("rule 1") && err.contains("pz"), "{err}");
    let out = d.cli(&["rules", "apply", "-f", &rules, "--dry-run"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("+ rule 1"));
    let out = d.cli(&["rules", "apply", "-f", &rules, "--expect-generation", "0"]);
    assert!(out.status.success(), "{}", failure(&out).1);
    let (code, err) =
        failure(&d.cli(&["rules", "apply", "-f", &rules, "--expect-generation", "0"]));
    assert_eq!(code, 3, "a stale generation: {err}");

    let (code, err) = failure(&d.cli(&[
        "datapath",
        "attach",
        "off",
        "--backend",
        "xdp",
        "--port",
        "pa=dse-nosuch0",
    ]));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("dse-nosuch0"), "{err}");

    let mut per_backend = Vec::new();
    for (name, backend) in [("off", "xdp"), ("host", "emu")] {
        let out = d.attach(&t, name, backend);
        assert!(
            out.status.success(),
            "attach {backend}: {}",
            failure(&out).1
        );
        let listed = d.json(&["datapath", "list"]);
        assert_eq!(listed[0]["state"], "running", "{listed}");
        // The host path takes its frames on AF_XDP (on AF_PACKET where the
        // kernel refuses AF_XDP); the offload has none.
        let host_io = match backend {
            "emu" if common::forward::af_xdp_refused().is_some() => "af_packet",
            "emu" => "af_xdp",
            _ => "",
        };
        assert_eq!(
            listed[0]["host_io"].as_str().unwrap_or_default(),
            host_io,
            "{listed}"
        );
        let rx = t.udp_in_b(7000);
        // Received while sent: the socket's queue is smaller than the burst.
        let receiver = std::thread::spawn(move || drain(&rx));
        let sport = send(&t, 7000, 400);
        send(&t, 7001, 100);
        let got = receiver.join().unwrap();
        assert_eq!(got.len(), 400, "{backend}: every datagram to 7000 arrived");
        // Counters settle within moments on the host path's queues.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut c = counts(&d, name);
        while c.get("2") != Some(&100) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            c = counts(&d, name);
        }
        assert_eq!(c.get("1"), Some(&400), "{backend}: {c:?}");
        assert_eq!(c.get("2"), Some(&100), "{backend}: {c:?}");
        per_backend.push(c);
        // The flow to 7000 as it crossed, traced through the daemon: its
        // flow cache (the XDP program's, or the worker's that took the
        // flow) holds rule 1 for it.
        let flow = format!(
            "in_port=pa,eth_src={},eth_dst={},ip_src={},ip_dst={},udp,l4_src={sport},l4_dst=7000",
            mac_text(t.va.inner_mac),
            mac_text(t.vb.inner_mac),
            t.a_ip,
            t.b_ip
        );
        let out = d.cli(&["trace", "--datapath", name, &flow, "--no-xdp"]);
        assert!(out.status.success(), "{}", failure(&out).1);
        let traced = String::from_utf8_lossy(&out.stdout);
        let cache = traced
            .lines()
            .find(|l| l.trim_start().starts_with("flow cache:"))
            .unwrap_or_default();
        assert!(
            cache.contains("the datapath's holds rule 1 (slot"),
            "{backend}: {traced}"
        );
        let stats = d.json(&["stats"]);
        assert!(
            stats[name]["rx_packets"].as_u64().unwrap() >= 500,
            "{stats}"
        );
        let metrics = d.scrape();
        let up = format!(r#"dse_datapath_up{{backend="{backend}",datapath="{name}"}} 1"#);
        assert!(metrics.contains(&up), "{metrics}");
        let rx = format!(r#"dse_datapath_packets_total{{datapath="{name}",outcome="rx"}}"#);
        assert!(metrics.contains(&rx), "{metrics}");
        let status = d.cli(&["status"]);
        assert!(String::from_utf8_lossy(&status.stdout).contains(name));
        let out = d.cli(&["datapath", "detach", name]);
        assert!(out.status.success(), "{}", failure(&out).1);
    }
    assert_eq!(
        per_backend[0], per_backend[1],
        "offload and host path agree"
    );
    let (code, _) = failure(&d.cli(&["datapath", "detach", "off"]));
    assert_eq!(code, 7, "detaching twice: not found");
    let metrics = d.cli(&["status"]);
    assert!(metrics.status.success());
}

/// Processes that keep every core busy while they live; killed on drop.
struct CpuHogs(Vec<std::process::Child>);

impl CpuHogs {
    fn start() -> CpuHogs {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        CpuHogs(
            (0..cores)
                .map(|_| {
                    use std::os::unix::process::CommandExt;
                    let mut c = std::process::Command::new("sh");
                    c.args(["-c", "exec yes > /dev/null"]);
                    // A session of its own, so a scheduling group of its
                    // own (autogroup), as another job's would be.
                    // SAFETY: setsid is async-signal-safe.
                    unsafe {
                        c.pre_exec(|| {
                            libc::setsid();
                            Ok(())
                        });
                    }
                    c.spawn().expect("starts a busy loop")
                })
                .collect(),
        )
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A rule file of `RULES` plus `extra` exact rules that no test traffic hits.
fn big_rules(extra: u32) -> String {
    let mut rules: Vec<Value> = vec![
        serde_json::json!({"id": 1, "priority": 10, "match": {"in_port": "pa", "ip_proto": "udp", "l4_dst": 7000}, "actions": [{"output": "pb"}]}),
        serde_json::json!({"id": 2, "priority": 5, "match": {"in_port": "pa", "ip_proto": "udp", "l4_dst": 7001}, "actions": ["drop"]}),
    ];
    for i in 0..extra {
        rules.push(serde_json::json!({
            "id": 100 + i, "priority": 20,
            "match": {"in_port": "pb", "ip_proto": "tcp", "ip_src": format!("10.{}.{}.{}/32", i >> 16, (i >> 8) & 255, i & 255), "l4_dst": 443},
            "actions": ["drop"],
        }));
    }
    serde_json::json!({"ports": [{"name": "pa", "index": 0}, {"name": "pb", "index": 1}], "rules": rules}).to_string()
}

#[test]
fn sigkill_mid_apply_keeps_one_generation_and_every_packet() {
    if !privileged("e2e-probe2") {
        return;
    }
    let t = Topology::new("ck", 82);
    let (dir, bpffs) = DaemonProcess::paths("ck");
    let d = DaemonProcess::start(dir.clone(), bpffs.clone());
    let small = write(&dir, "small.yaml", RULES);
    let big = write(&dir, "big.json", &big_rules(100_000));
    assert!(d.cli(&["rules", "apply", "-f", &small]).status.success());
    let out = d.attach(&t, "off", "xdp");
    assert!(out.status.success(), "{}", failure(&out).1);

    let stream = Stream::start(&t);
    std::thread::sleep(Duration::from_millis(300));
    let mut apply = d
        .command(&["rules", "apply", "-f", &big])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts the apply");
    // Optimised test builds apply 100k rules in a few hundred ms.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        apply.try_wait().unwrap().is_none(),
        "the apply is still in progress when the daemon is killed"
    );
    let (dir, bpffs) = d.kill();
    let applied = apply.wait().unwrap();
    assert!(
        !applied.success(),
        "the killed daemon never acknowledged the apply"
    );
    // Nobody runs the control plane now; the pinned XDP datapath forwards.
    std::thread::sleep(Duration::from_millis(300));
    let d = DaemonProcess::start(dir, bpffs);
    let rules = d.json(&["rules", "get"]);
    let generation = rules["generation"].as_u64().unwrap();
    let ids: Vec<u64> = rules["rules"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    match generation {
        1 => assert_eq!(ids.len(), 2, "the old generation, whole"),
        2 => assert_eq!(ids.len(), 100_002, "the new generation, whole"),
        g => panic!("generation {g}: neither the old nor the new"),
    }
    let listed = d.json(&["datapath", "list"]);
    assert_eq!(listed[0]["state"], "running", "{listed}");
    assert_eq!(listed[0]["adopted"], true, "{listed}");
    let mut counted: Vec<u64> = d.json(&["rules", "counters", "--datapath", "off"])["off"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect();
    counted.sort_unstable();
    let mut want = ids.clone();
    want.sort_unstable();
    assert_eq!(
        counted, want,
        "the datapath runs exactly the store's generation"
    );
    std::thread::sleep(Duration::from_millis(300));
    let (sent, received) = stream.finish();
    assert!(sent > 2_000, "traffic ran throughout ({sent} sent)");
    assert_eq!(
        received, sent,
        "no packet was lost across the kill and the restart"
    );
}
