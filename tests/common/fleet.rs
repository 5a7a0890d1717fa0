//! A fleet's processes: `dse agent` children, and a 3-member etcd when the
//! machine has one.

#![allow(dead_code)]

use super::daemon::{DaemonProcess, failure};
use dse::lab::EtcdCluster;
use dse::lab::fleet::FleetProcess;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A 3-member etcd named `name`, or `None` (a failure under CI=true) when
/// etcd-server is not installed.
pub fn etcd(name: &str) -> Option<EtcdCluster> {
    let present = Command::new("etcd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        assert!(
            std::env::var("CI").is_err(),
            "CI needs etcd-server (cargo xtask setup)"
        );
        return None;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("etcd-{name}"));
    Some(EtcdCluster::start(&dir, 3).expect("a 3-member etcd starts"))
}

/// A `dse agent` of this build for `host`, its store in `dir` and its XDP
/// pins under `pins` (when it has XDP datapaths).
pub fn agent(
    dir: PathBuf,
    pins: Option<&Path>,
    endpoints: &str,
    host: &str,
    extra: &[&str],
) -> FleetProcess {
    FleetProcess::agent(
        Path::new(env!("CARGO_BIN_EXE_dse")),
        &dir,
        pins,
        endpoints,
        host,
        extra,
    )
    .expect("starts dse agent")
}

/// A rule set of `n` rules on port `p0`, each dropping UDP to port `id`
/// at `priority` (which tells one generation from the next), as JSON.
pub fn drop_rules(n: u32, priority: u64) -> String {
    let rules: Vec<String> = (1..=n)
        .map(|id| {
            format!(
                r#"{{"id": {id}, "priority": {priority}, "match": {{"ip_proto": 17, "l4_dst": {id}}}, "actions": ["drop"]}}"#
            )
        })
        .collect();
    format!(
        r#"{{"ports": [{{"name": "p0", "index": 0}}], "rules": [{}]}}"#,
        rules.join(",")
    )
}

/// `dse serve --etcd ENDPOINTS --controller-id TAG --lease-ttl TTL EXTRA`,
/// ready once it answers `dse fleet status`.
pub fn controller(tag: &str, endpoints: &str, ttl_s: u64, extra: &[&str]) -> DaemonProcess {
    let (dir, bpffs) = DaemonProcess::paths(tag);
    let ttl = ttl_s.to_string();
    let args = [
        &[
            "--etcd",
            endpoints,
            "--controller-id",
            tag,
            "--lease-ttl",
            &ttl,
        ][..],
        extra,
    ]
    .concat();
    DaemonProcess::start_probing(dir, bpffs, &args, &["fleet", "status"])
}

/// `dse serve ARGS` on fresh paths, expected to fail: its exit code and
/// standard error.
pub fn serve_fails(tag: &str, args: &[&str]) -> (i32, String) {
    let (dir, bpffs) = DaemonProcess::paths(tag);
    let out = Command::new(env!("CARGO_BIN_EXE_dse"))
        .arg("serve")
        .args(args)
        .arg("--socket")
        .arg(dir.join("dse.sock"))
        .arg("--db")
        .arg(dir.join("dse.redb"))
        .arg("--bpffs")
        .arg(&bpffs)
        .output()
        .expect("runs dse serve");
    let _ = std::fs::remove_dir_all(dir);
    failure(&out)
}

/// Polls `probe` every 20 ms until it gives `Some`, for up to `within`.
pub fn until<T>(within: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    until_ok(within, what, || probe().ok_or_else(String::new))
}

/// Polls `probe` every 20 ms until it gives `Ok`, for up to `within`; a
/// timeout names `what` and the last `Err` the probe gave.
pub fn until_ok<T>(
    within: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "never: {what}; last seen: {last}"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `dse ARGS` against the fleet controller `c`.
pub fn cli(c: &FleetProcess, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dse"))
        .args(args)
        .env("DSE_SOCKET", c.socket())
        .output()
        .expect("runs dse")
}

/// `dse -o json ARGS` against `c`, which must succeed.
pub fn json(c: &FleetProcess, args: &[&str]) -> serde_json::Value {
    let out = cli(c, &[&["-o", "json"][..], args].concat());
    assert!(
        out.status.success(),
        "dse {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// The controller that leads, as `c` sees it.
pub fn leader(c: &FleetProcess) -> Option<String> {
    let out = cli(c, &["-o", "json", "fleet", "status"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["leader"].as_str().map(str::to_string)
}

/// A controller `id` of this build with its files under `dir`, trusting
/// `keys`, its lease `ttl` seconds.
pub fn fleet_controller(
    dir: &Path,
    endpoints: &str,
    id: &str,
    ttl: &str,
    keys: &str,
) -> FleetProcess {
    FleetProcess::controller(
        Path::new(env!("CARGO_BIN_EXE_dse")),
        &dir.join(id),
        endpoints,
        id,
        &["--lease-ttl", ttl, "--trusted-keys", keys],
    )
    .expect("starts a controller")
}

/// Puts the lifecycle lab `lab` on a fleet through its leader `c`: the
/// depot, cluster c1 with hosts h1 and h2, the lab's rules, and each DPU's
/// XDP datapath on its host; then starts an agent per host (lease `ttl`
/// seconds, trusting the lab's key). Returns the agents once both hosts
/// run their datapaths.
pub fn lab_on_fleet(
    lab: &super::lab::Lab,
    c: &FleetProcess,
    endpoints: &str,
    ttl: &str,
) -> Vec<FleetProcess> {
    use super::lab::DPUS;
    let write = |name: &str, text: &str| {
        let path = lab.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    json(
        c,
        &["depot", "import", lab.dir.join("depot").to_str().unwrap()],
    );
    json(
        c,
        &["cluster", "create", "c1", "--manager-version", "8.0.3"],
    );
    for (i, h) in lab.hosts().iter().enumerate() {
        let text = serde_norway::to_string(h).unwrap();
        json(
            c,
            &[
                "host",
                "add",
                "--cluster",
                "c1",
                "-f",
                &write(&format!("host{i}.yaml"), &text),
            ],
        );
    }
    json(
        c,
        &["rules", "apply", "-f", &write("rules.yaml", &lab.rules)],
    );
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
        let file = write(&format!("{host}-datapaths.yaml"), &datapaths);
        json(c, &["host", "set", host, "-f", &file]);
    }
    let keys = lab.dir.join("trusted-keys").display().to_string();
    let agents = ["h1", "h2"]
        .iter()
        .map(|h| {
            let pins = lab.pins.0.join(h);
            agent(
                lab.dir.join(format!("agent-{h}")),
                Some(&pins),
                endpoints,
                h,
                &["--lease-ttl", ttl, "--trusted-keys", &keys],
            )
        })
        .collect();
    until(
        Duration::from_secs(30),
        "both hosts run their datapaths",
        || {
            let hosts = json(c, &["host", "list"]);
            let hosts = hosts.as_array()?;
            let ok = hosts.len() == 2
                && hosts.iter().all(|h| {
                    h["state"] == "available"
                        && h["report"]["datapaths"].as_array().is_some_and(|d| {
                            !d.is_empty() && d.iter().all(|d| d["state"] == "running")
                        })
                });
            ok.then_some(())
        },
    );
    agents
}

/// Remediation `id` as controller `c` shows it, if `c` answers.
pub fn remediation(c: &FleetProcess, id: u64) -> Option<serde_json::Value> {
    let out = cli(
        c,
        &[
            "-o",
            "json",
            "lifecycle",
            "history",
            "--id",
            &id.to_string(),
        ],
    );
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// Waits up to `within` for remediation `id` to end, as `c` shows it.
pub fn finished(c: &FleetProcess, id: u64, within: Duration) -> serde_json::Value {
    until(within, "the remediation ends", || {
        remediation(c, id).filter(|r| r["finished_ms"].is_u64())
    })
}

/// `dse image set --cluster c1` to ESXi `base`, BlueField firmware
/// `firmware` and, if given, datapath `datapath`, through `c`.
pub fn set_image(c: &FleetProcess, base: &str, firmware: &str, datapath: Option<&str>) {
    let (base, firmware) = (format!("esxi={base}"), format!("bluefield-fw={firmware}"));
    let mut args = vec![
        "image",
        "set",
        "--cluster",
        "c1",
        "--base",
        &base,
        "--firmware",
        &firmware,
    ];
    let component = datapath.map(|v| format!("dse-datapath={v}"));
    if let Some(component) = &component {
        args.extend(["--component", component]);
    }
    json(c, &args);
}
