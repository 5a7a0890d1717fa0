//! A fleet's processes: `dse agent` children, and a 3-member etcd when the
//! machine has one.

#![allow(dead_code)]

use dse::lab::EtcdCluster;
use dse::lab::fleet::FleetProcess;
use std::path::{Path, PathBuf};
use std::process::Command;

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
