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
    /// The program and its arguments, to start it again.
    argv: Vec<std::ffi::OsString>,
}

impl FleetProcess {
    fn spawn(
        command: Command,
        dir: &Path,
        pins: Option<PathBuf>,
    ) -> Result<FleetProcess, LabError> {
        std::fs::create_dir_all(dir).map_err(|source| LabError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let argv: Vec<std::ffi::OsString> = std::iter::once(command.get_program())
            .chain(command.get_args())
            .map(std::ffi::OsStr::to_os_string)
            .collect();
        Ok(FleetProcess {
            child: start(&argv, dir, &[])?,
            dir: dir.to_path_buf(),
            pins,
            argv,
        })
    }

    /// SIGKILLs it and starts it again on the same store, pins and
    /// socket, as a crashed process restarted by its supervisor.
    ///
    /// # Errors
    /// [`LabError::Io`] when it does not start.
    pub fn restart(&mut self) -> Result<(), LabError> {
        self.restart_with_env(&[])
    }

    /// As [`FleetProcess::restart`], with `env` added for this run only
    /// (fault injection: `DSE_CRASH_AT`).
    ///
    /// # Errors
    /// [`LabError::Io`] when it does not start.
    pub fn restart_with_env(&mut self, env: &[(&str, &str)]) -> Result<(), LabError> {
        self.kill();
        self.child = start(&self.argv, &self.dir, env)?;
        Ok(())
    }

    /// Whether it has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
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

/// Starts `argv` with `env` added, its standard error appended to
/// `dir/log`.
fn start(argv: &[std::ffi::OsString], dir: &Path, env: &[(&str, &str)]) -> Result<Child, LabError> {
    let io = |what: String| move |source| LabError::Io { what, source };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("log"))
        .map_err(io(format!("opening {}/log", dir.display())))?;
    Command::new(&argv[0])
        .args(&argv[1..])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(io(format!("starting {argv:?}")))
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
