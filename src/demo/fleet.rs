//! `dse demo --fleet`: the cluster demo's hosts managed as a fleet. A
//! 3-member etcd, two controllers (`dse serve --etcd`) and an agent per
//! host (`dse agent`), all processes of this binary in the DPU namespace;
//! the rules offloaded through the leader, traffic across both hosts, and
//! a rolling remediation the leader orders and the agents run, during
//! which the leader is SIGKILLed: the other controller takes over from
//! the journal in etcd, and no datagram is lost.

use super::cluster::{Cluster, HOSTS, VM_ADDRS};
use super::depot;
use super::flows::{Delivery, Flow};
use super::story::RULES;
use crate::lab::EtcdCluster;
use crate::lab::fleet::FleetProcess;
use anyhow::{Context, Result, bail};
use dse_control::client::{Call, Endpoint, Method};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Datagrams a second of each flow.
const PPS: u64 = 2_000;

/// The controllers' and agents' lease, in seconds.
const TTL: &str = "2";

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn step(n: usize, what: &str) {
    crate::outln!("\n[{n}/7] {what}");
}

/// Talks to the controllers through their Unix sockets.
struct Api {
    rt: tokio::runtime::Runtime,
}

impl Api {
    /// `method path` with `body` at controller `c`: the status and JSON.
    fn call(
        &self,
        c: &FleetProcess,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut call = Call::new(method, path);
        if let Some(b) = body {
            call = call.json(b.to_string());
        }
        let (status, bytes) = self
            .rt
            .block_on(Endpoint::Unix(c.socket()).send(call))
            .with_context(|| format!("{path} at {}", c.socket().display()))?;
        Ok((
            status.as_u16(),
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// As [`Api::call`], which must answer 2xx: its JSON.
    fn ok(
        &self,
        c: &FleetProcess,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let (status, v) = self.call(c, method, path, body)?;
        if !(200..300).contains(&status) {
            bail!("{path}: {status} {}", v["error"].as_str().unwrap_or(""));
        }
        Ok(v)
    }

    /// The leader as `c` sees it.
    fn leader(&self, c: &FleetProcess) -> Option<String> {
        let (_, v) = self.call(c, Method::GET, "/v1/fleet", None).ok()?;
        v["leader"].as_str().map(str::to_string)
    }
}

/// Polls `probe` every 50 ms for up to `within`.
fn until<T>(within: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the fleet demo (needs root, bpffs and etcd); fails if a promise
/// does not hold: a host not OK, no take-over, a datagram lost.
///
/// # Errors
/// What failed, or which promise did not hold.
pub fn run() -> Result<()> {
    let t0 = Instant::now();
    let tag = format!("{}", std::process::id() % 100_000);
    let dir = TempDir(std::env::temp_dir().join(format!("dse-demo-fleet-{tag}")));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
    let bin = std::env::current_exe().context("finding this program")?;
    let api = Api {
        rt: tokio::runtime::Runtime::new().context("starting the async runtime")?,
    };

    step(
        1,
        "a cluster in namespaces: host h1 with DPU S1 and VMs A and C, host h2 with DPUs S2 and S3 behind a bond",
    );
    let cluster = Cluster::build(&tag)?;

    step(
        2,
        "the fleet: a 3-member etcd, two controllers and an agent per host, in the DPU namespace",
    );
    let depot_dir = depot::write(&dir.0)?;
    let keys = dir.0.join("trusted-keys").display().to_string();
    let (etcd, mut controllers, agents) = cluster.dpu_ns.run(|| -> Result<_> {
        let etcd = EtcdCluster::start(&dir.0.join("etcd"), 3)?;
        let endpoints = etcd.endpoints_arg();
        let controller = |id: &str| {
            FleetProcess::controller(
                &bin,
                &dir.0.join(id),
                &endpoints,
                id,
                &["--lease-ttl", TTL, "--trusted-keys", &keys],
            )
        };
        let controllers = [controller("ctl-1")?, controller("ctl-2")?];
        let agents: Vec<FleetProcess> = HOSTS
            .iter()
            .map(|(host, _)| {
                let pins = PathBuf::from(format!("/sys/fs/bpf/dse-demo-{tag}-{host}"));
                FleetProcess::agent(
                    &bin,
                    &dir.0.join(format!("agent-{host}")),
                    Some(&pins),
                    &endpoints,
                    host,
                    &[
                        "--lease-ttl",
                        TTL,
                        "--trusted-keys",
                        &keys,
                        "--report-every",
                        "1",
                    ],
                )
            })
            .collect::<Result<_, _>>()?;
        Ok((etcd, controllers, agents))
    })??;
    crate::outln!("    etcd members: {}", etcd.endpoints().join(", "));
    let lead = until(Duration::from_secs(20), "a controller leads", || {
        api.leader(&controllers[0])
            .filter(|l| l.starts_with("ctl-"))
    })?;
    let mut leading = usize::from(lead == "ctl-2");
    crate::outln!(
        "    controllers ctl-1 and ctl-2: {lead} leads; agents for h1 and h2 registered under leases"
    );
    let l = &controllers[leading];
    let imported = api.ok(
        l,
        Method::POST,
        "/v1/depot/import",
        Some(&json!({"path": depot_dir})),
    )?;
    crate::outln!(
        "    depot: {} signed manifests into etcd (each agent checks them again with its own keys)",
        imported.as_array().map_or(0, Vec::len)
    );
    api.ok(
        l,
        Method::POST,
        "/v1/clusters",
        Some(&json!({"name": "c1", "management": "image", "manager_version": "8.0.3"})),
    )?;
    for (host, serials) in HOSTS {
        let mut spec = depot::host(host, serials);
        if serials.len() == 2 {
            spec["bond"] = serde_json::to_value(cluster.bond())?;
        }
        api.ok(l, Method::POST, "/v1/clusters/c1/hosts", Some(&spec))?;
    }

    step(
        3,
        "rules offloaded through the leader: each agent runs its DPUs' XDP datapaths",
    );
    let set = dse_datapath::RuleSet::from_yaml(RULES).context("the demo's rules")?;
    let applied = api.ok(
        l,
        Method::PUT,
        "/v1/rules",
        Some(&serde_json::to_value(&set)?),
    )?;
    crate::outln!(
        "    rule set default, generation {}: {} rules",
        applied["generation"],
        set.rules.len()
    );
    let interfaces = cluster.interfaces();
    for (host, serials) in HOSTS {
        let datapaths: Vec<Value> = serials
            .iter()
            .map(|s| json!({"name": s, "backend": "xdp", "interfaces": interfaces[s]}))
            .collect();
        api.ok(
            l,
            Method::PUT,
            &format!("/v1/hosts/{host}"),
            Some(&json!({"rule_set": "default", "datapaths": datapaths})),
        )?;
    }
    until(
        Duration::from_secs(30),
        "both hosts run their datapaths",
        || {
            let (_, hosts) = api
                .call(&controllers[leading], Method::GET, "/v1/hosts", None)
                .ok()?;
            let hosts = hosts.as_array()?.clone();
            let ok = hosts.len() == 2
                && hosts.iter().all(|h| {
                    h["state"] == "available"
                        && h["report"]["applied"]["generation"] == 1
                        && h["report"]["datapaths"].as_array().is_some_and(|d| {
                            !d.is_empty() && d.iter().all(|d| d["state"] == "running")
                        })
                });
            ok.then_some(())
        },
    )?;
    crate::outln!("    h1 and h2 report generation 1 applied, every datapath running");
    // h2 tells the wire where it is, as a bond does when it comes up.
    dse_control::daemon::announce(&cluster.bond())?;

    step(
        4,
        "traffic: A -> B over Geneve, C -> D on VLAN 42, across both hosts",
    );
    let [a, b, c, d] = [cluster.vm(0), cluster.vm(1), cluster.vm(2), cluster.vm(3)];
    let to = |i: usize| -> Result<std::net::SocketAddr> {
        format!("{}:7000", VM_ADDRS[i])
            .parse()
            .context("an address")
    };
    let ab = Flow::start(a, VM_ADDRS[0], to(1)?, b, to(1)?, PPS)?;
    let cd = Flow::start(c, VM_ADDRS[2], to(3)?, d, to(3)?, PPS)?;
    std::thread::sleep(Duration::from_secs(1));
    crate::outln!("    two flows at {PPS} datagrams/s each");

    step(
        5,
        "remediation ordered by the leader, run by the agents (rolling, --keep-offload); the leader is SIGKILLed mid-way",
    );
    let l = &controllers[leading];
    api.ok(
        l,
        Method::PUT,
        "/v1/clusters/c1/image",
        Some(&depot::new_image()),
    )?;
    let started = api.ok(
        l,
        Method::POST,
        "/v1/clusters/c1/remediate",
        Some(&json!({"parallel": 1, "keep_offload": true})),
    )?;
    let id = started["id"].as_u64().context("a remediation id")?;
    let remediation = format!("/v1/remediations/{id}");
    until(Duration::from_secs(60), "h1 flashes its DPU", || {
        let (_, r) = api
            .call(&controllers[leading], Method::GET, &remediation, None)
            .ok()?;
        r["hosts"][0]["steps"]
            .as_array()?
            .iter()
            .any(|s| s["step"] == "flash")
            .then_some(())
    })?;
    let killed = Instant::now();
    controllers[leading].kill();
    crate::outln!("    h1 flashed S1: ctl-{} SIGKILLed", leading + 1);
    leading = 1 - leading;
    let survivor = &controllers[leading];
    let new = format!("ctl-{}", leading + 1);
    until(
        Duration::from_secs(20),
        "the other controller leads",
        || (api.leader(survivor).as_deref() == Some(new.as_str())).then_some(()),
    )?;
    let took_over = killed.elapsed();
    crate::outln!(
        "    {new} leads {:.1} s later and carries on from the journal in etcd",
        took_over.as_secs_f64()
    );
    let done = until(Duration::from_secs(120), "the remediation ends", || {
        let (_, r) = api.call(survivor, Method::GET, &remediation, None).ok()?;
        r["finished_ms"].is_u64().then_some(r)
    })?;
    std::thread::sleep(Duration::from_millis(1000));
    let flows: Vec<(&str, Delivery)> = vec![
        ("A -> B (Geneve)", ab.finish()),
        ("C -> D (VLAN 42)", cd.finish()),
    ];

    step(6, "report");
    let mut broken = Vec::new();
    for h in done["hosts"].as_array().into_iter().flatten() {
        let host = h["host"].as_str().unwrap_or("?");
        let result = h["result"].as_str().unwrap_or("?");
        let steps = h["steps"].as_array().map_or(0, Vec::len);
        crate::outln!("    host {host}: {result}, {steps} steps run by its agent");
        if result != "OK" {
            broken.push(format!("host {host} ended {result}"));
        }
    }
    let (_, clusters) = api.call(survivor, Method::GET, "/v1/clusters", None)?;
    for h in clusters[0]["hosts"].as_array().into_iter().flatten() {
        let dpus: Vec<String> = h["dpus"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                format!(
                    "{} firmware {} datapath {}",
                    d["serial"].as_str().unwrap_or("?"),
                    d["firmware"].as_str().unwrap_or("?"),
                    d["datapath"].as_str().unwrap_or("?")
                )
            })
            .collect();
        crate::outln!(
            "    inventory: {} ESXi {}; {}",
            h["name"].as_str().unwrap_or("?"),
            h["version"].as_str().unwrap_or("?"),
            dpus.join("; ")
        );
    }
    if took_over > Duration::from_secs(4) {
        broken.push(format!(
            "the take-over took {took_over:?}, over the lease TTL + 1 s"
        ));
    }
    crate::outln!("    {:<18} {:>8} {:>6}", "flow", "sent", "lost");
    for (name, f) in &flows {
        let lost = f.lost().len();
        crate::outln!("    {name:<18} {:>8} {lost:>6}", f.sent);
        if lost > 0 || f.sent == 0 {
            broken.push(format!("{name}: {lost} of {} lost", f.sent));
        }
    }
    crate::outln!("    {:.1} s in all", t0.elapsed().as_secs_f64());

    step(
        7,
        "clean-up: agents, controllers and etcd stopped, namespaces and files removed",
    );
    drop(agents);
    drop(controllers);
    drop(etcd);
    drop(cluster);
    drop(dir);
    if !broken.is_empty() {
        bail!(
            "the fleet demo's promises did not hold:\n  {}",
            broken.join("\n  ")
        );
    }
    crate::outln!(
        "    done: every host OK, the leader replaced mid-remediation, zero datagrams lost"
    );
    Ok(())
}

/// Whether etcd is installed, which the fleet demo needs.
pub fn etcd_missing() -> Option<String> {
    let present = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    (!present).then(|| "etcd (Debian's etcd-server: `cargo xtask setup` installs it)".to_string())
}
