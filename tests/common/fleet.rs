//! A fleet's processes: `dse agent` children, and a 3-member etcd when the
//! machine has one.

#![allow(dead_code)]

use dse::lab::EtcdCluster;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

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

/// A `dse agent` child process; killed on drop, its directory removed.
pub struct AgentProcess {
    pub child: Child,
    pub host: String,
    pub dir: PathBuf,
    pub pins: PathBuf,
}

impl AgentProcess {
    /// Starts `dse agent --host HOST` against `endpoints`, its store and
    /// pins in `dir`, with `extra` arguments.
    pub fn start(dir: PathBuf, endpoints: &str, host: &str, extra: &[&str]) -> AgentProcess {
        let pins = dir.join("pins");
        Self::start_pinning(dir, &pins, endpoints, host, extra)
    }

    /// As [`AgentProcess::start`], its XDP datapaths pinned under `pins`
    /// (a bpffs directory, removed on drop).
    pub fn start_pinning(
        dir: PathBuf,
        pins: &std::path::Path,
        endpoints: &str,
        host: &str,
        extra: &[&str],
    ) -> AgentProcess {
        std::fs::create_dir_all(&dir).expect("creates the agent's dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agent.log"))
            .expect("opens the log");
        let child = Command::new(env!("CARGO_BIN_EXE_dse"))
            .args(["agent", "--etcd", endpoints, "--host", host])
            .args(["--emu-workers", "1", "--xdp-max-rules", "1024"])
            .arg("--db")
            .arg(dir.join("agent.redb"))
            .arg("--bpffs")
            .arg(pins)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starts dse agent");
        AgentProcess {
            child,
            host: host.to_string(),
            dir,
            pins: pins.to_path_buf(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// SIGKILLs it: its lease is left to expire.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}
