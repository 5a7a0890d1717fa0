//! The project's own commands, run as `cargo xtask COMMAND` (the alias is
//! in `.cargo/config.toml`):
//!
//! - `demo [ARGS]`: set up, build in release mode, run `dse demo ARGS`;
//! - `test [ARGS]`: set up, run `cargo test --workspace ARGS`;
//! - `setup`: only the set-up.
//!
//! The set-up installs the Debian packages that are missing (as root,
//! saying what it installs; otherwise it says what to install and stops)
//! and mounts bpffs. It changes nothing that is already in place.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// What a command needs: a program on the PATH, or a file, and the Debian
/// package that provides it.
#[derive(Clone, Copy)]
struct Need {
    probe: Probe,
    package: &'static str,
}

#[derive(Clone, Copy)]
enum Probe {
    Program(&'static str),
    File(&'static str),
}

const fn program(name: &'static str, package: &'static str) -> Need {
    Need {
        probe: Probe::Program(name),
        package,
    }
}

/// The demo: the build (etcd-client compiles etcd's protobuf API with
/// protoc and its well-known types), namespaces, veths and their
/// addresses, sysctls, `tc` (the bond of a host whose kernel has no
/// bonding redirects its own frames to its active member), and etcd for a
/// fleet.
const DEMO: &[Need] = &[
    program("protoc", "protobuf-compiler"),
    Need {
        probe: Probe::File("/usr/include/google/protobuf/descriptor.proto"),
        package: "libprotobuf-dev",
    },
    program("ip", "iproute2"),
    program("sysctl", "procps"),
    program("ethtool", "ethtool"),
    program("etcd", "etcd-server"),
    program("etcdctl", "etcd-client"),
];

/// The tests besides: clang and libbpf headers to rebuild the XDP objects
/// and check them against the committed ones, bpftool and xdp-tools, the
/// bench's Linux peers, nftables and Open vSwitch (its
/// userspace datapath, started by the bench itself; no service, no kernel
/// module), and tcpdump.
const TEST: &[Need] = &[
    program("clang", "clang"),
    program("llvm-strip", "llvm"),
    program("make", "make"),
    Need {
        probe: Probe::File("/usr/include/bpf/bpf_helpers.h"),
        package: "libbpf-dev",
    },
    program("bpftool", "bpftool"),
    program("xdp-filter", "xdp-tools"),
    program("nft", "nftables"),
    program("ovs-vswitchd", "openvswitch-switch"),
    // An independent reader of the pcaps `dse verify` writes.
    program("tcpdump", "tcpdump"),
    program("unshare", "util-linux"),
    // schemathesis, installed from PyPI into a virtual environment of
    // the API conformance test's own.
    program("python3", "python3"),
    Need {
        probe: Probe::File("/usr/share/doc/python3-venv"),
        package: "python3-venv",
    },
];

const BPFFS: &str = "/sys/fs/bpf";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let result = match command.as_str() {
        "demo" => setup(DEMO).and_then(|()| demo(&rest)),
        "test" => setup(&[DEMO, TEST].concat()).and_then(|()| test(&rest)),
        "setup" => setup(&[DEMO, TEST].concat()),
        _ => Err(format!(
            "unknown command {command:?}\nusage: cargo xtask demo [ARGS] | test [ARGS] | setup"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Installs the packages of `needs` that are missing, and mounts bpffs.
fn setup(needs: &[Need]) -> Result<(), String> {
    let mut missing: Vec<&str> = needs
        .iter()
        .filter(|n| !present(&n.probe))
        .map(|n| n.package)
        .collect();
    missing.dedup();
    if !missing.is_empty() {
        let list = missing.join(" ");
        if !is_root() {
            return Err(format!(
                "missing Debian packages: {list}\ninstall them with `sudo apt-get install {list}`, or run this as root"
            ));
        }
        eprintln!("xtask: installing the missing Debian packages: {list}");
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    if !is_root() {
        eprintln!(
            "xtask: not root: the XDP datapath, the cluster demo and the network tests need root; they are skipped or fall back"
        );
        return Ok(());
    }
    if !bpffs_mounted() {
        eprintln!("xtask: mounting bpffs at {BPFFS}");
        run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
    }
    Ok(())
}

fn present(probe: &Probe) -> bool {
    match probe {
        Probe::File(path) => Path::new(path).exists(),
        Probe::Program(name) => {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
                .any(|dir| dir.join(name).is_file())
        }
    }
}

fn bpffs_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let mut f = l.split_whitespace();
            f.nth(1) == Some(BPFFS) && f.next() == Some("bpf")
        })
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace());
    c
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn demo(args: &[String]) -> Result<(), String> {
    run(cargo()
        .args([
            "run",
            "--release",
            "--package",
            "dse",
            "--bin",
            "dse",
            "--",
            "demo",
        ])
        .args(args))
}

fn test(args: &[String]) -> Result<(), String> {
    run(cargo().args(["test", "--workspace"]).args(args))
}

fn run(c: &mut Command) -> Result<(), String> {
    let what = format!("{c:?}");
    let status = c.status().map_err(|e| format!("running {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed: {status}"))
    }
}
