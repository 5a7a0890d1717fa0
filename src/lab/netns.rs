//! Namespaces and veth pairs as guard types: what is created is deleted on
//! drop, so a run that fails half-way leaves nothing behind.

use super::LabError;
use std::process::Command;

/// Runs `cmd` (program and arguments) and returns its standard output.
///
/// # Errors
/// [`LabError::Command`] naming the command line and its standard error if
/// it cannot start or exits unsuccessfully.
pub fn run(cmd: &[&str]) -> Result<String, LabError> {
    let command = cmd.join(" ");
    let (program, args) = cmd.split_first().ok_or_else(|| LabError::Command {
        command: String::new(),
        stderr: "no program given".into(),
    })?;
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| LabError::Command {
            command: command.clone(),
            stderr: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, deleted (with every interface in it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates namespace `name` (replacing a stale one of that name left by
    /// a killed run) with its loopback up.
    ///
    /// # Errors
    /// [`LabError::Command`] if `ip` refuses (not root, say).
    pub fn create(name: &str) -> Result<Netns, LabError> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        run(&["ip", "netns", "add", name])?;
        let ns = Netns { name: name.into() };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Its name under `/run/netns`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `cmd` inside this namespace (`ip netns exec`, which remounts
    /// `/sys` for the command: nothing that needs bpffs runs this way).
    ///
    /// # Errors
    /// [`LabError::Command`] if it fails.
    pub fn exec(&self, cmd: &[&str]) -> Result<String, LabError> {
        let mut args = vec!["ip", "netns", "exec", &self.name];
        args.extend_from_slice(cmd);
        run(&args)
    }

    /// Runs `f` on a new thread that has entered this namespace, and
    /// returns its result. Threads that `f` starts stay in the namespace.
    ///
    /// # Errors
    /// [`LabError::Io`] if the namespace cannot be entered.
    ///
    /// # Panics
    /// If `f` panics.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, LabError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter()?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Moves the calling thread into this namespace.
    ///
    /// # Errors
    /// [`LabError::Io`] if the namespace file cannot be opened or entered.
    pub fn enter(&self) -> Result<(), LabError> {
        let path = format!("/run/netns/{}", self.name);
        let io = |source| LabError::Io {
            what: format!("entering namespace {}", self.name),
            source,
        };
        let f = std::fs::File::open(&path).map_err(io)?;
        // SAFETY: setns on a valid namespace fd changes only this thread's
        // network namespace.
        let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
        if r != 0 {
            return Err(io(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Writes `value` to `/proc/sys/<key>` (dots as slashes) in this
    /// namespace.
    ///
    /// # Errors
    /// [`LabError::Command`] if `sysctl` refuses.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")])
            .map(drop)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A veth pair between two namespaces, both ends up, IPv6 off (so neither
/// end sends anything of its own), GRO on (a veth delivers frames
/// redirected into it only with NAPI on) and checksum offload off (an XDP
/// redirect does not carry a pending offload along). Deleted on drop; it
/// also goes when either namespace does.
#[derive(Debug)]
pub struct Veth {
    /// The first end's name.
    pub a: String,
    /// The second end's name.
    pub b: String,
    a_ns: String,
}

impl Veth {
    /// Creates end `a` in `a_ns` and its peer `b` in `b_ns`.
    ///
    /// # Errors
    /// [`LabError::Command`] naming the step that failed.
    pub fn create(a: &str, a_ns: &Netns, b: &str, b_ns: &Netns) -> Result<Veth, LabError> {
        run(&[
            "ip", "link", "add", a, "netns", &a_ns.name, "type", "veth", "peer", "name", b,
            "netns", &b_ns.name,
        ])?;
        let veth = Veth {
            a: a.into(),
            b: b.into(),
            a_ns: a_ns.name.clone(),
        };
        for (ns, end) in [(a_ns, a), (b_ns, b)] {
            ns.sysctl(&format!("net.ipv6.conf.{end}.disable_ipv6"), "1")?;
            ns.exec(&["ip", "link", "set", end, "up"])?;
            ns.exec(&["ethtool", "-K", end, "gro", "on", "tx", "off"])?;
        }
        Ok(veth)
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-n", &self.a_ns, "link", "del", &self.a])
            .output();
    }
}

/// The MAC address of interface `name` in namespace `ns`.
///
/// # Errors
/// [`LabError::Command`] if there is no such Ethernet interface.
pub fn mac_of(ns: &Netns, name: &str) -> Result<[u8; 6], LabError> {
    let text = ns.exec(&["ip", "-o", "link", "show", name])?;
    let bad = || LabError::Command {
        command: format!("ip -n {} -o link show {name}", ns.name),
        stderr: format!("no Ethernet address in {text:?}"),
    };
    let at = text.find("link/ether ").ok_or_else(bad)? + 11;
    let mut mac = [0u8; 6];
    let hex = text.get(at..at + 17).ok_or_else(bad)?;
    for (i, b) in hex.split(':').enumerate().take(6) {
        mac[i] = u8::from_str_radix(b, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

/// A MAC as `ip` writes it.
pub fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
