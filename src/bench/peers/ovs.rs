//! Open vSwitch's userspace datapath (`datapath_type=netdev`, ports over
//! AF_PACKET; no kernel module), started for one run in a namespace with
//! its own database and run directory, and stopped on drop.

use crate::lab::{LabError, Netns};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// The bridge every run makes.
pub const BRIDGE: &str = "br0";

/// A running `ovsdb-server` and `ovs-vswitchd`; both exit on drop.
#[derive(Debug)]
pub struct Ovs {
    ns: String,
    dir: PathBuf,
}

impl Ovs {
    /// Whether Open vSwitch's programs and schema are installed.
    pub fn available() -> bool {
        [
            "ovsdb-tool",
            "ovsdb-server",
            "ovs-vswitchd",
            "ovs-vsctl",
            "ovs-ofctl",
        ]
        .iter()
        .all(|p| which(p))
            && Path::new(SCHEMA).exists()
    }

    /// Starts both daemons in `ns`, files under `dir` (created empty), the
    /// switch pinned to `cpu` when given.
    ///
    /// # Errors
    /// [`LabError`] naming the step that failed; what started is stopped.
    pub fn start(ns: &Netns, dir: &Path, cpu: Option<usize>) -> Result<Ovs, LabError> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|source| LabError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let ovs = Ovs {
            ns: ns.name().into(),
            dir: dir.into(),
        };
        let db = ovs.path("conf.db");
        ovs.exec(&["ovsdb-tool", "create", &db, SCHEMA])?;
        ovs.exec(&[
            "ovsdb-server",
            &db,
            &format!("--remote=punix:{}", ovs.path("db.sock")),
            &format!("--pidfile={}", ovs.path("ovsdb-server.pid")),
            &format!("--unixctl={}", ovs.path("ovsdb-server.ctl")),
            &format!("--log-file={}", ovs.path("ovsdb-server.log")),
            "--detach",
        ])?;
        ovs.vsctl(&["--no-wait", "init"])?;
        let cpu = cpu.map(|c| c.to_string());
        let mut cmd: Vec<&str> = Vec::new();
        if let Some(c) = &cpu {
            cmd.extend(["taskset", "-c", c]);
        }
        let db_sock = format!("unix:{}", ovs.path("db.sock"));
        let pid = format!("--pidfile={}", ovs.path("ovs-vswitchd.pid"));
        let ctl = format!("--unixctl={}", ovs.path("ovs-vswitchd.ctl"));
        let log = format!("--log-file={}", ovs.path("ovs-vswitchd.log"));
        cmd.extend(["ovs-vswitchd", &db_sock, &pid, &ctl, &log, "--detach"]);
        ovs.exec(&cmd)?;
        Ok(ovs)
    }

    /// Makes bridge [`BRIDGE`] on the userspace datapath with `ports`
    /// (OpenFlow number, interface), no flows and no learning.
    ///
    /// # Errors
    /// [`LabError`] if `ovs-vsctl` refuses.
    pub fn bridge(&self, ports: &[(u32, &str)]) -> Result<(), LabError> {
        let mut args: Vec<String> = [
            "add-br",
            BRIDGE,
            "--",
            "set",
            "bridge",
            BRIDGE,
            "datapath_type=netdev",
            "fail-mode=secure",
            "protocols=OpenFlow10,OpenFlow13,OpenFlow14",
        ]
        .map(String::from)
        .to_vec();
        for (n, dev) in ports {
            args.extend([
                "--".to_string(),
                "add-port".into(),
                BRIDGE.into(),
                dev.to_string(),
                "--".into(),
                "set".into(),
                "interface".into(),
                dev.to_string(),
                format!("ofport_request={n}"),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.vsctl(&args)?;
        Ok(())
    }

    /// Adds the flows in `file` to an empty table in one bundle, and
    /// returns how long `ovs-ofctl` took.
    ///
    /// # Errors
    /// [`LabError`] if `ovs-ofctl` refuses a flow.
    pub fn add_flows(&self, file: &Path) -> Result<Duration, LabError> {
        self.ofctl(&["del-flows", BRIDGE])?;
        let file = file.to_string_lossy();
        let start = Instant::now();
        self.ofctl(&["add-flows", "--bundle", BRIDGE, &file])?;
        Ok(start.elapsed())
    }

    /// The number of flows in the bridge's table.
    ///
    /// # Errors
    /// [`LabError`] if `ovs-ofctl` fails.
    pub fn flow_count(&self) -> Result<usize, LabError> {
        let text = self.ofctl(&["dump-aggregate", BRIDGE])?;
        let n = text
            .split("flow_count=")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|t| t.parse().ok());
        n.ok_or_else(|| LabError::Command {
            command: "ovs-ofctl dump-aggregate".into(),
            stderr: format!("no flow_count in {text:?}"),
        })
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    fn exec(&self, cmd: &[&str]) -> Result<String, LabError> {
        let dir = self.dir.to_string_lossy();
        let mut args = vec![
            "ip".to_string(),
            "netns".into(),
            "exec".into(),
            self.ns.clone(),
            "env".into(),
            format!("OVS_RUNDIR={dir}"),
            format!("OVS_DBDIR={dir}"),
            format!("OVS_LOGDIR={dir}"),
        ];
        args.extend(cmd.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::lab::run(&args)
    }

    fn vsctl(&self, args: &[&str]) -> Result<String, LabError> {
        let db = format!("--db=unix:{}", self.path("db.sock"));
        let mut cmd = vec!["ovs-vsctl", "--timeout=30", &db];
        cmd.extend_from_slice(args);
        self.exec(&cmd)
    }

    fn ofctl(&self, args: &[&str]) -> Result<String, LabError> {
        let mut cmd = vec!["ovs-ofctl", "-O", "OpenFlow14"];
        cmd.extend_from_slice(args);
        self.exec(&cmd)
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        for daemon in ["ovs-vswitchd", "ovsdb-server"] {
            let ctl = self.path(&format!("{daemon}.ctl"));
            let _ = self.exec(&["ovs-appctl", "-t", &ctl, "exit"]);
            // Whatever did not exit by request is ended by its pid file.
            let pid = std::fs::read_to_string(self.path(&format!("{daemon}.pid")));
            if let Some(pid) = pid.ok().and_then(|p| p.trim().parse::<i32>().ok()) {
                // SAFETY: kill has no memory preconditions; the pid is
                // the daemon this guard started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `program` is on the PATH.
pub fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}
