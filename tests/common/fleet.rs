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
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
