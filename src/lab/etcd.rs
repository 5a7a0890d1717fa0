//! An etcd cluster of real `etcd` processes (Debian's `etcd-server`) on
//! loopback, for the fleet's tests, its demo and its benchmarks. Each
//! member has its own ports and data directory under one directory of the
//! cluster's; dropping the cluster kills the members it started and removes
//! that directory.

use super::LabError;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One member: how to start it, and the process while it runs.
struct Member {
    name: String,
    client: String,
    peer: String,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster; its members are killed and their data removed
/// on drop.
pub struct EtcdCluster {
    dir: PathBuf,
    token: String,
    members: Vec<Member>,
}

/// Ports that were free a moment ago: bound together, then released for
/// etcd to take. Another process may take one in between; the member then
/// fails to start and says so.
fn free_ports(n: usize) -> Result<Vec<u16>, LabError> {
    let io = |source| LabError::Io {
        what: "finding a free loopback port".into(),
        source,
    };
    let held = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()).map_err(io))
        .collect()
}

impl EtcdCluster {
    /// Starts a cluster of `size` members under `dir` (made afresh), each
    /// on its own loopback ports, and waits until every member answers.
    ///
    /// # Errors
    /// [`LabError::Command`] when `etcd` is not installed, or a member does
    /// not become healthy within 30 s (its log's tail is in the error).
    pub fn start(dir: &Path, size: usize) -> Result<EtcdCluster, LabError> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|source| LabError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let ports = free_ports(2 * size)?;
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client: format!("http://127.0.0.1:{}", ports[2 * i]),
                peer: format!("http://127.0.0.1:{}", ports[2 * i + 1]),
                data: dir.join(format!("m{i}.etcd")),
                log: dir.join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let mut cluster = EtcdCluster {
            dir: dir.to_path_buf(),
            token: format!("dse-{}-{}", std::process::id(), ports[0]),
            members,
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        cluster.wait_healthy(&(0..size).collect::<Vec<_>>())?;
        Ok(cluster)
    }

    /// The client URLs of every member, such as `http://127.0.0.1:2379`.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client.clone()).collect()
    }

    /// The client URLs as `--etcd` takes them: comma-separated.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
    }

    /// SIGKILLs member `i`; its data stays, for [`EtcdCluster::restart`].
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data, after [`EtcdCluster::kill`],
    /// and waits until it answers.
    ///
    /// # Errors
    /// As [`EtcdCluster::start`].
    pub fn restart(&mut self, i: usize) -> Result<(), LabError> {
        self.kill(i);
        self.spawn(i)?;
        self.wait_healthy(&[i])
    }

    /// Starts every member again on its data, after they were all killed
    /// (one alone would wait for a quorum), and waits until they answer.
    ///
    /// # Errors
    /// As [`EtcdCluster::start`].
    pub fn restart_all(&mut self) -> Result<(), LabError> {
        let all: Vec<usize> = (0..self.members.len()).collect();
        for &i in &all {
            self.kill(i);
        }
        for &i in &all {
            self.spawn(i)?;
        }
        self.wait_healthy(&all)
    }

    fn spawn(&mut self, i: usize) -> Result<(), LabError> {
        let initial = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .map_err(|source| LabError::Io {
                what: format!("opening {}", m.log.display()),
                source,
            })?;
        let state = if m.data.exists() { "existing" } else { "new" };
        let child = Command::new("etcd")
            .args(["--name", &m.name, "--data-dir"])
            .arg(&m.data)
            .args(["--listen-client-urls", &m.client])
            .args(["--advertise-client-urls", &m.client])
            .args(["--listen-peer-urls", &m.peer])
            .args(["--initial-advertise-peer-urls", &m.peer])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", state])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| LabError::Command {
                command: "etcd".into(),
                stderr: format!("{e}: install Debian's etcd-server (cargo xtask setup does)"),
            })?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Waits until each member of `which` reports itself healthy.
    fn wait_healthy(&mut self, which: &[usize]) -> Result<(), LabError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for &i in which {
            loop {
                let m = &mut self.members[i];
                if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    return Err(self.failed(i, &format!("exited with {status}")));
                }
                let healthy = Command::new("etcdctl")
                    .args(["--endpoints", &m.client, "--command-timeout=1s"])
                    .args(["endpoint", "health"])
                    .env("ETCDCTL_API", "3")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if healthy {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(self.failed(i, "is not healthy after 30 s"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    fn failed(&self, i: usize, what: &str) -> LabError {
        let m = &self.members[i];
        let log = std::fs::read_to_string(&m.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        LabError::Command {
            command: format!("etcd --name {} ({})", m.name, m.client),
            stderr: format!(
                "{what}; the end of {}:\n{}",
                m.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ),
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
