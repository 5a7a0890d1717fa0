//! A fleet's processes for tests and benchmarks: `dse agent` and
//! `dse serve --etcd` children of a given `dse` binary. Each is killed on
//! drop and its directory (and bpffs pins, if any) removed.

use super::LabError;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A `dse agent` or `dse serve --etcd` child process.
pub struct FleetProcess {
    /// The process.
    pub child: Child,
    /// Its directory: store, socket, log.
    pub dir: PathBuf,
    pins: Option<PathBuf>,
}

impl FleetProcess {
    fn spawn(
        mut command: Command,
        dir: &Path,
        pins: Option<PathBuf>,
    ) -> Result<FleetProcess, LabError> {
        let io = |what: String| move |source| LabError::Io { what, source };
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("log"))
            .map_err(io(format!("opening {}/log", dir.display())))?;
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(io(format!("starting {command:?}")))?;
        Ok(FleetProcess {
            child,
            dir: dir.to_path_buf(),
            pins,
        })
    }

    /// Starts `BIN agent --host HOST` against `endpoints`, its store in
    /// `dir` and its XDP pins under `pins` (a bpffs directory; `dir/pins`
    /// when it has no XDP datapaths), with `extra` arguments.
    ///
    /// # Errors
    /// [`LabError::Io`] when the process does not start.
    pub fn agent(
        bin: &Path,
        dir: &Path,
        pins: Option<&Path>,
        endpoints: &str,
        host: &str,
        extra: &[&str],
    ) -> Result<FleetProcess, LabError> {
        let pins = pins.map_or_else(|| dir.join("pins"), Path::to_path_buf);
        let mut c = Command::new(bin);
        c.args(["agent", "--etcd", endpoints, "--host", host])
            .args(["--emu-workers", "1", "--xdp-max-rules", "1024"])
            .arg("--db")
            .arg(dir.join("agent.redb"))
            .arg("--bpffs")
            .arg(&pins)
            .args(extra);
        Self::spawn(c, dir, Some(pins))
    }

    /// Starts `BIN serve --etcd ENDPOINTS --controller-id ID` with its
    /// socket in `dir`, with `extra` arguments.
    ///
    /// # Errors
    /// [`LabError::Io`] when the process does not start.
    pub fn controller(
        bin: &Path,
        dir: &Path,
        endpoints: &str,
        id: &str,
        extra: &[&str],
    ) -> Result<FleetProcess, LabError> {
        let mut c = Command::new(bin);
        c.args(["serve", "--etcd", endpoints, "--controller-id", id])
            .arg("--socket")
            .arg(dir.join("dse.sock"))
            .arg("--db")
            .arg(dir.join("unused.redb"))
            .arg("--bpffs")
            .arg(dir.join("pins"))
            .args(extra);
        Self::spawn(c, dir, None)
    }

    /// Its API socket (a controller's).
    pub fn socket(&self) -> PathBuf {
        self.dir.join("dse.sock")
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// SIGKILLs it: its leases are left to expire.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for FleetProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(pins) = &self.pins {
            let _ = std::fs::remove_dir_all(pins);
        }
    }
}
