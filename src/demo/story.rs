//! The cluster demo, step by step: the cluster in namespaces, the control
//! plane, the rules, traffic and the offloaded counters, a remediation to
//! a new image under traffic, the report, the clean-up.

use super::cluster::{Cluster, HOSTS, SERVICE_VIP, VM_ADDRS};
use super::depot;
use super::flows::{Delivery, Flow, burst};
use super::report::{self, Counters, Outcome, RulesState};
use crate::lab::control::ControlPlane;
use anyhow::{Context, Result, bail};
use dse_control::client::Method;
use serde_json::{Value, json};
use sha2::Digest;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The demo's rule set.
pub const RULES: &str = include_str!("../../examples/cluster-demo.yaml");

/// Datagrams a second of each steady flow.
const PPS: u64 = 2_000;

/// A temporary directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn addr(ip: &str, port: u16) -> Result<SocketAddr> {
    format!("{ip}:{port}").parse().context("an address")
}

fn step(n: usize, what: &str) {
    crate::outln!("\n[{n}/7] {what}");
}

/// Rule id -> packets, by DPU serial.
fn counters(cp: &ControlPlane) -> Result<Counters> {
    let v = cp.call(Method::GET, "/v1/counters", None)?;
    let mut out = BTreeMap::new();
    for (dpu, rules) in v.as_object().into_iter().flatten() {
        let mut per = BTreeMap::new();
        for (id, c) in rules.as_object().into_iter().flatten() {
            per.insert(id.parse().unwrap_or(0), c["packets"].as_u64().unwrap_or(0));
        }
        out.insert(dpu.clone(), per);
    }
    Ok(out)
}

fn print_counters(c: &Counters, names: &BTreeMap<u64, &str>) {
    crate::outln!("    {:<5} {:>5} {:>10}  rule", "DPU", "rule", "packets");
    for (dpu, rules) in c {
        for (id, n) in rules.iter().filter(|(_, n)| **n > 0) {
            crate::outln!(
                "    {dpu:<5} {id:>5} {n:>10}  {}",
                names.get(id).unwrap_or(&"")
            );
        }
    }
}

/// What the rules of [`RULES`] are for, by id.
fn rule_names() -> BTreeMap<u64, &'static str> {
    [
        (10, "firewall: telnet dropped"),
        (11, "firewall: blocked prefix dropped"),
        (20, "NAT: service address -> B, into the overlay"),
        (30, "Geneve encap A -> B"),
        (31, "Geneve decap"),
        (32, "overlay VNI 5001 -> VM"),
        (40, "VLAN 42 push C -> D"),
        (41, "VLAN 42 pop -> VM"),
        (50, "meter: bulk to port 9000"),
    ]
    .into()
}

fn rules_state(cp: &ControlPlane) -> Result<RulesState> {
    let rules = cp.call(Method::GET, "/v1/rules", None)?;
    let generation = rules["generation"].as_u64().unwrap_or(0);
    let count = rules["rules"]["rules"].as_array().map_or(0, Vec::len);
    let digest = hex::encode(&sha2::Sha256::digest(rules["rules"].to_string().as_bytes())[..8]);
    let dps = cp.call(Method::GET, "/v1/datapaths", None)?;
    let gens = dps
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            (
                d["name"].as_str().unwrap_or("?").to_string(),
                d["generation"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    Ok((generation, count, digest, gens))
}

/// Runs the cluster demo (needs root and bpffs); fails if anything it
/// promises does not hold: a host not upgraded, a datagram lost during the
/// remediation, rules or counters not equal after it.
///
/// # Errors
/// What failed, or which promise did not hold.
pub fn run() -> Result<()> {
    let t0 = Instant::now();
    let tag = format!("{}", std::process::id() % 100_000);
    let dir = TempDir(std::env::temp_dir().join(format!("dse-demo-{tag}")));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
    let pins = std::path::PathBuf::from(format!("/sys/fs/bpf/dse-demo-{tag}"));

    step(
        1,
        "a cluster in namespaces: host h1 with DPU S1, host h2 with DPUs S2 and S3 behind a bond",
    );
    let cluster = Cluster::build(&tag)?;
    crate::outln!(
        "    VM A {} and VM C {} on h1 (S1); B {} and D {} on h2, whose bond has a member through S2 (active) and one through S3",
        VM_ADDRS[0],
        VM_ADDRS[2],
        VM_ADDRS[1],
        VM_ADDRS[3]
    );
    crate::outln!("    wire: a learning bridge joins the DPUs' uplinks, as a rack's switch");

    step(
        2,
        "the control plane: dse serve with its embedded store (redb), a signed depot",
    );
    let depot_dir = depot::write(&dir.0)?;
    let cp = ControlPlane::start(&cluster.dpu_ns, &dir.0, &pins)?;
    let imported = cp.call(
        Method::POST,
        "/v1/depot/import",
        Some(&json!({"path": depot_dir})),
    )?;
    crate::outln!(
        "    depot: {} signed manifests imported",
        imported.as_array().map_or(0, Vec::len)
    );
    cp.call(
        Method::POST,
        "/v1/clusters",
        Some(&json!({"name": "c1", "management": "image", "manager_version": "8.0.3"})),
    )?;
    for (host, serials) in HOSTS {
        let mut spec = depot::host(host, serials);
        if serials.len() == 2 {
            spec["bond"] = serde_json::to_value(cluster.bond())?;
        }
        cp.call(Method::POST, "/v1/clusters/c1/hosts", Some(&spec))?;
        crate::outln!(
            "    host {host}: ESXi 8.0.3, DPUs {} (BlueField-3, firmware 24.1, datapath 1.0)",
            serials.join(", ")
        );
    }

    step(
        3,
        "rules: NAT, firewall drops, a VLAN, a Geneve overlay and a meter, offloaded to every DPU",
    );
    let set = dse_datapath::RuleSet::from_yaml(RULES).context("the demo's rules")?;
    let applied = cp.call(Method::PUT, "/v1/rules", Some(&serde_json::to_value(&set)?))?;
    crate::outln!(
        "    generation {}: {} rules, {} meter",
        applied["generation"],
        set.rules.len(),
        set.meters.len()
    );
    for (serial, interfaces) in cluster.interfaces() {
        cp.call(
            Method::POST,
            "/v1/datapaths",
            Some(&json!({"name": serial, "backend": "xdp", "interfaces": interfaces})),
        )?;
        cp.call(
            Method::PUT,
            &format!("/v1/dpus/{serial}/emulation"),
            Some(&json!({"boot_ms": 500, "watchdog_ms": 1500, "faults": {}})),
        )?;
        let ports: Vec<String> = interfaces.iter().map(|(p, i)| format!("{p}={i}")).collect();
        crate::outln!("    DPU {serial}: XDP datapath on {}", ports.join(" "));
    }
    // h2 tells the wire where it is, as a bond does when it comes up.
    dse_control::daemon::announce(&cluster.bond())?;

    step(
        4,
        "traffic: A -> B over Geneve, C -> D on VLAN 42, A -> the service address (NAT), telnet, a metered burst",
    );
    let [a, b, c, d] = [cluster.vm(0), cluster.vm(1), cluster.vm(2), cluster.vm(3)];
    let ab = Flow::start(
        a,
        VM_ADDRS[0],
        addr(VM_ADDRS[1], 7000)?,
        b,
        addr(VM_ADDRS[1], 7000)?,
        PPS,
    )?;
    let cd = Flow::start(
        c,
        VM_ADDRS[2],
        addr(VM_ADDRS[3], 7000)?,
        d,
        addr(VM_ADDRS[3], 7000)?,
        PPS,
    )?;
    let nat = Flow::start(
        a,
        VM_ADDRS[0],
        addr(SERVICE_VIP, 80)?,
        b,
        addr(VM_ADDRS[1], 7001)?,
        PPS / 4,
    )?;
    let telnet = addr(VM_ADDRS[1], 23)?;
    a.run(|| std::net::TcpStream::connect_timeout(&telnet, Duration::from_millis(300)))?
        .map(drop)
        .err()
        .context("telnet from A to B connected through the firewall")?;
    let metered = burst(
        c,
        VM_ADDRS[2],
        addr(VM_ADDRS[3], 9000)?,
        d,
        addr(VM_ADDRS[3], 9000)?,
        2_000,
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let before = counters(&cp)?;
    let state_before = rules_state(&cp)?;
    crate::outln!(
        "    steady flows at {PPS}/s each (the service flow at {}/s); 2,000 bulk datagrams C -> D:9000, {metered} passed the meter",
        PPS / 4
    );
    crate::outln!("    offloaded counters (rules that counted):");
    print_counters(&before, &rule_names());

    step(
        5,
        "remediation to a new image while traffic flows (ESXi 8.0.4, firmware 24.2, datapath 2.0; rolling, --keep-offload)",
    );
    cp.call(
        Method::PUT,
        "/v1/clusters/c1/image",
        Some(&depot::new_image()),
    )?;
    let compliance = cp.call(Method::GET, "/v1/clusters/c1/compliance", None)?;
    for h in compliance["hosts"].as_array().into_iter().flatten() {
        crate::outln!(
            "    before: host {} {} (impact {})",
            h["host"].as_str().unwrap_or("?"),
            h["status"].as_str().unwrap_or("?"),
            h["impact"].as_str().unwrap_or("?")
        );
    }
    let remediation_start = Instant::now();
    let started = cp.call(
        Method::POST,
        "/v1/clusters/c1/remediate",
        Some(&json!({"parallel": 1, "keep_offload": true, "retries": 1, "dry_run": false})),
    )?;
    let id = started["id"].as_u64().context("a remediation id")?;
    let done = follow(&cp, id)?;
    let remediation_end = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let flows: Vec<(&str, Delivery)> = vec![
        ("A -> B (Geneve)", ab.finish()),
        ("C -> D (VLAN 42)", cd.finish()),
        ("A -> service (NAT)", nat.finish()),
    ];
    let after = counters(&cp)?;
    let state_after = rules_state(&cp)?;
    let compliance = cp.call(Method::GET, "/v1/clusters/c1/compliance", None)?;

    step(6, "report");
    let broken = report::report(&Outcome {
        remediation: &done,
        compliance: &compliance,
        flows: &flows,
        started: t0,
        remediation_span: (remediation_start, remediation_end),
        before: &before,
        after: &after,
        metered,
        rules_before: &state_before,
        rules_after: &state_after,
    });
    step(
        7,
        "clean-up: datapaths detached, control plane stopped, namespaces and files removed",
    );
    drop(cp);
    drop(cluster);
    drop(dir);
    if !broken.is_empty() {
        bail!(
            "the demo's promises did not hold:\n  {}",
            broken.join("\n  ")
        );
    }
    crate::outln!("    done: zero datagrams lost, rules and counters equal after the upgrade");
    Ok(())
}

/// Follows remediation `id` to its end, printing each step as it is
/// journaled.
fn follow(cp: &ControlPlane, id: u64) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut shown = std::collections::BTreeSet::new();
    loop {
        let r = cp.call(Method::GET, &format!("/v1/remediations/{id}"), None)?;
        for h in r["hosts"].as_array().into_iter().flatten() {
            let host = h["host"].as_str().unwrap_or("?");
            for (i, s) in h["steps"].as_array().into_iter().flatten().enumerate() {
                // Each step once it has ended, with where each DPU's
                // traffic went while it rebooted.
                if s["state"] == "started" || !shown.insert((host.to_string(), i)) {
                    continue;
                }
                let detail = match (s["step"].as_str(), s["detail"].as_str()) {
                    (Some("fail-over"), Some(d)) => format!(": {d}"),
                    _ => String::new(),
                };
                crate::outln!(
                    "    {host} {}{}{detail}",
                    s["step"].as_str().unwrap_or("?"),
                    s["dpu"].as_str().map_or(String::new(), |d| format!(" {d}")),
                );
            }
        }
        if !r["finished_ms"].is_null() {
            return Ok(r);
        }
        if Instant::now() > deadline {
            bail!("remediation {id} did not finish in 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
