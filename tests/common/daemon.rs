//! The real `dse` binary: `dse serve` as a child process on a temporary
//! store, socket and bpffs directory, and the CLI run against it.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A `dse serve` child process; killed on drop. Its files live in `dir`.
pub struct DaemonProcess {
    pub child: Child,
    pub dir: PathBuf,
    pub bpffs: PathBuf,
}

impl DaemonProcess {
    /// The paths of a daemon named `tag`, fresh.
    pub fn paths(tag: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("dse-e2e-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creates a temp dir");
        let bpffs = PathBuf::from(format!("/sys/fs/bpf/dse-e2e-{}-{tag}", std::process::id()));
        (dir, bpffs)
    }

    /// Starts `dse serve` on `dir` and `bpffs` and waits until it answers.
    pub fn start(dir: PathBuf, bpffs: PathBuf) -> DaemonProcess {
        Self::start_with(dir, bpffs, &[])
    }

    /// As [`DaemonProcess::start`], with `extra` arguments to `dse serve`.
    pub fn start_with(dir: PathBuf, bpffs: PathBuf, extra: &[&str]) -> DaemonProcess {
        Self::start_probing(dir, bpffs, extra, &["status"])
    }

    /// As [`DaemonProcess::start_with`], ready once `dse PROBE` succeeds
    /// against it.
    pub fn start_probing(
        dir: PathBuf,
        bpffs: PathBuf,
        extra: &[&str],
        probe: &[&str],
    ) -> DaemonProcess {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("serve.log"))
            .expect("opens the log");
        let max_rules: &[&str] = if extra.contains(&"--xdp-max-rules") {
            &[]
        } else {
            &["--xdp-max-rules", "262144"]
        };
        let child = Command::new(env!("CARGO_BIN_EXE_dse"))
            .args(["serve", "--emu-workers", "1"])
            .args(max_rules)
            .arg("--db")
            .arg(dir.join("dse.redb"))
            .arg("--bpffs")
            .arg(&bpffs)
            .arg("--socket")
            .arg(dir.join("dse.sock"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starts dse serve");
        let mut d = DaemonProcess { child, dir, bpffs };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if d.cli(probe).status.success() {
                return d;
            }
            if let Some(status) = d.child.try_wait().unwrap() {
                panic!("dse serve exited with {status}: {}", d.log());
            }
            assert!(Instant::now() < deadline, "dse serve answers: {}", d.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("dse.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    /// A `dse` command against this daemon, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dse"));
        c.args(args).env("DSE_SOCKET", self.socket());
        c
    }

    /// `GET /metrics` over its socket, as Prometheus scrapes it: the
    /// answer, status line and headers included (a 200, or it panics).
    pub fn scrape(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(self.socket()).expect("connects");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: dse\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        answer
    }

    /// The value of metric `name` whose labels include each of `labels`
    /// (`key="value"`), in a scrape.
    pub fn metric(scrape: &str, name: &str, labels: &[&str]) -> Option<f64> {
        scrape.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (set, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let have: Vec<&str> = set.split(',').collect();
            labels
                .iter()
                .all(|l| have.contains(l))
                .then(|| value.trim().parse().ok())?
        })
    }

    /// Runs `dse ARGS` against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("runs dse")
    }

    /// Runs `dse -o json ARGS`, requires success, and parses the output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "dse {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }

    /// Stops the daemon with SIGTERM and waits for it; its files and pins
    /// stay. Panics unless it exits cleanly.
    pub fn terminate(mut self) -> (PathBuf, PathBuf) {
        // SAFETY: kill has no memory preconditions; the pid is our child's,
        // not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().expect("reaps");
        assert!(
            status.success(),
            "dse serve exits cleanly on SIGTERM: {status}"
        );
        let paths = (self.dir.clone(), self.bpffs.clone());
        std::mem::forget(self);
        paths
    }

    /// `dse datapath attach NAME --backend BACKEND` on the topology's two
    /// ports, `pa` and `pb`.
    pub fn attach(&self, t: &super::topology::Topology, name: &str, backend: &str) -> Output {
        let pa = format!("pa={}", t.va.outer);
        let pb = format!("pb={}", t.vb.outer);
        let args = ["datapath", "attach", name, "--backend", backend];
        self.cli(&[&args[..], &["--port", &pa, "--port", &pb]].concat())
    }

    /// SIGKILLs the daemon; its files and pins stay.
    pub fn kill(mut self) -> (PathBuf, PathBuf) {
        self.child.kill().expect("kills");
        self.child.wait().expect("reaps");
        let paths = (self.dir.clone(), self.bpffs.clone());
        std::mem::forget(self);
        paths
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.bpffs);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The exit code and stderr of a finished command.
pub fn failure(out: &Output) -> (i32, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A free loopback TCP port (a daemon binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Resident memory of process `pid`, in kB.
pub fn rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmRSS")
}

/// The peak resident memory of process `pid` so far, in kB.
pub fn peak_rss_kb(pid: u32) -> u64 {
    status_kb(pid, "VmHWM")
}

fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} of process {pid}"))
}
