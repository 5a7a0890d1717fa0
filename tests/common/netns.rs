//! Network namespaces and veth pairs that a test creates for itself and
//! removes on drop, and threads that run inside a namespace.

#![allow(dead_code)]

use std::process::Command;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("runs ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd` inside namespace `ns` (for configuration only: `ip netns
/// exec` remounts /sys, so nothing that needs bpffs runs this way).
pub fn in_ns(ns: &str, cmd: &[&str]) {
    let mut args = vec!["netns", "exec", ns];
    args.extend_from_slice(cmd);
    let out = Command::new("ip").args(&args).output().expect("runs ip");
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted (with the interfaces in it) on drop.
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates namespace `name` with its loopback up.
    pub fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        ip(&["netns", "add", name]);
        let ns = Netns { name: name.into() };
        in_ns(name, &["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on a thread that has entered this namespace, and returns
    /// its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter();
                f()
            })
            .join()
            .expect("the namespace thread does not panic")
        })
    }

    /// Moves the calling thread into this namespace.
    pub fn enter(&self) {
        let f = std::fs::File::open(format!("/run/netns/{}", self.name)).expect("namespace file");
        // SAFETY: setns on a valid namespace fd affects only this thread's
        // network namespace.
        let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A veth pair: `outer` stays in the root namespace (where the datapath
/// attaches), `inner` moves into `ns` with `addr` (CIDR). Removed on drop.
pub struct Veth {
    /// Root-namespace end.
    pub outer: String,
    /// Namespace end.
    pub inner: String,
    /// The namespace end's MAC address.
    pub inner_mac: [u8; 6],
}

impl Veth {
    /// Creates the pair, addresses and brings up both ends, with GRO on
    /// the namespace end (a veth delivers redirected frames only with
    /// NAPI on) and its checksum offload off.
    pub fn new(outer: &str, inner: &str, ns: &Netns, addr: &str) -> Veth {
        Self::with(outer, inner, ns, Some(addr))
    }

    /// As [`Veth::new`], the namespace end without an address (`None`) to
    /// be enslaved to a bridge.
    pub fn with(outer: &str, inner: &str, ns: &Netns, addr: Option<&str>) -> Veth {
        let _ = Command::new("ip").args(["link", "del", outer]).output();
        ip(&["link", "add", outer, "type", "veth", "peer", "name", inner]);
        ip(&["link", "set", inner, "netns", &ns.name]);
        ip(&["link", "set", outer, "up"]);
        if let Some(addr) = addr {
            in_ns(&ns.name, &["ip", "addr", "add", addr, "dev", inner]);
        }
        // Up before GRO goes on: a veth turns NAPI on when GRO is switched
        // on while it is up.
        in_ns(&ns.name, &["ip", "link", "set", inner, "up"]);
        in_ns(&ns.name, &["ethtool", "-K", inner, "gro", "on"]);
        // Full checksums in the frames themselves: a veth otherwise leaves
        // them to an offload that an XDP redirect does not carry along.
        in_ns(&ns.name, &["ethtool", "-K", inner, "tx", "off"]);
        let mac = ns.run(|| mac_of(inner));
        Veth {
            outer: outer.into(),
            inner: inner.into(),
            inner_mac: mac,
        }
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.outer])
            .output();
    }
}

/// The MAC address of interface `name` in the calling thread's namespace
/// (read with `ip`, whose process inherits the thread's namespace; /sys
/// shows the root namespace's interfaces).
pub fn mac_of(name: &str) -> [u8; 6] {
    let out = Command::new("ip")
        .args(["-o", "link", "show", name])
        .output()
        .expect("runs ip");
    let s = String::from_utf8_lossy(&out.stdout);
    let at = s.find("link/ether ").expect("an Ethernet interface") + 11;
    let mut mac = [0u8; 6];
    for (i, b) in s[at..at + 17].split(':').enumerate() {
        mac[i] = u8::from_str_radix(b, 16).expect("hex MAC");
    }
    mac
}

/// Formats a MAC for `ip neigh`.
pub fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
