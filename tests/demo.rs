//! The README's first command, end to end: `dse demo` builds the cluster,
//! offloads the rules, remediates under traffic, reports and cleans up,
//! and checks its own promises (it fails if a datagram is lost, a host is
//! not upgraded, or rules or counters differ after the upgrade). Without
//! root the in-memory demo runs instead; under CI=true that is a failure.
//! `dse demo --fleet` runs the same hosts as a fleet and kills its leading
//! controller mid-remediation, losing nothing.

use std::process::Command;

/// One demo at a time: each checks that no demo namespace is left after it.
static ONE_DEMO: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// As root, the demo runs in a mount namespace of its own where bpffs is
/// not mounted, as on a fresh machine: it must mount it and say so.
fn demo_command(root: bool) -> Command {
    let dse = env!("CARGO_BIN_EXE_dse");
    if !root {
        let mut c = Command::new(dse);
        c.arg("demo");
        return c;
    }
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            "while mountpoint -q /sys/fs/bpf; do umount /sys/fs/bpf || exit 97; done; \
             exec \"$0\" demo",
        )
        .arg(dse);
    c
}

#[test]
fn the_demo_runs_end_to_end_and_cleans_up() {
    let _one = ONE_DEMO.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let out = demo_command(root)
        .env("RUST_LOG", "warn")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("dse runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dse demo failed:\n{stdout}\n{stderr}");
    if root {
        assert!(
            stdout.contains("bpffs was not mounted; mounted it at /sys/fs/bpf"),
            "the demo mounts bpffs itself:\n{stdout}"
        );
    }
    if let Some(need) = dse::demo::cluster_demo_missing() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must run the cluster demo, which needs {need}"
        );
        assert!(
            stdout.contains("running the in-memory demo instead"),
            "{stdout}"
        );
        return;
    }
    for promise in [
        "[7/7] clean-up",
        "done: zero datagrams lost, rules and counters equal after the upgrade",
        "host h1: OK",
        "host h2: OK",
        "after: host h1 compliant",
        "after: host h2 compliant",
    ] {
        assert!(
            stdout.contains(promise),
            "{promise:?} missing from:\n{stdout}"
        );
    }
    // The remediation ran while the flows did: each flow sent datagrams in
    // the remediation's span, and lost none of them.
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" -> ") && l.contains(" / "))
        .collect();
    assert_eq!(rows.len(), 3, "three flows reported:\n{stdout}");
    for row in rows {
        let cells: Vec<&str> = row.split_whitespace().collect();
        // ... before: sent / lost, remediation: sent / lost, after: sent / lost
        let remediation_sent: u64 = cells[cells.len() - 6].parse().unwrap();
        let lost: Vec<&str> = [
            cells[cells.len() - 7],
            cells[cells.len() - 4],
            cells[cells.len() - 1],
        ]
        .to_vec();
        assert!(
            remediation_sent > 100,
            "too little traffic during the remediation: {row}"
        );
        assert_eq!(lost, ["0", "0", "0"], "{row}");
    }
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.lines().any(|l| l.starts_with("dsed-")),
        "the demo's namespaces are left behind: {left}"
    );
}

#[test]
fn without_root_the_demo_says_what_it_needs_and_runs_in_memory() {
    // As user nobody, when this runs as root and setpriv is there.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/usr/bin/setpriv").exists() {
        assert!(
            std::env::var("CI").is_err(),
            "CI runs this as root, with setpriv"
        );
        return;
    }
    let out = Command::new("/usr/bin/setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_dse"))
        .args(["demo", "--packets", "20000"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("setpriv runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("the cluster demo needs root")
            && stdout.contains("running the in-memory demo instead"),
        "{stdout}"
    );
    assert!(
        stdout.contains("per-rule counters:") && stdout.contains("rate: 20000 packets"),
        "{stdout}"
    );
}

#[test]
fn the_fleet_demo_replaces_its_leader_mid_remediation_and_loses_nothing() {
    let _one = ONE_DEMO.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(need) = dse::demo::cluster_demo_missing().or_else(dse::demo::fleet::etcd_missing) {
        assert!(
            std::env::var("CI").is_err(),
            "CI must run the fleet demo, which needs {need}"
        );
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_dse"))
        .args(["demo", "--fleet"])
        .env("RUST_LOG", "warn")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("dse runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "dse demo --fleet failed:\n{stdout}\n{stderr}"
    );
    for promise in [
        "SIGKILLed",
        "carries on from the journal in etcd",
        "host h1: OK",
        "host h2: OK",
        "inventory: h2 ESXi 8.0.4; S2 firmware 24.2 datapath 2.0; S3 firmware 24.2 datapath 2.0",
        "[7/7] clean-up",
        "done: every host OK, the leader replaced mid-remediation, zero datagrams lost",
    ] {
        assert!(
            stdout.contains(promise),
            "{promise:?} missing from:\n{stdout}"
        );
    }
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains(" -> ")).collect();
    assert_eq!(
        rows.len(),
        3,
        "two flows reported (and the step title):\n{stdout}"
    );
    for row in rows
        .iter()
        .filter(|r| r.trim_start().starts_with(['A', 'C']))
    {
        let cells: Vec<&str> = row.split_whitespace().collect();
        let sent: u64 = cells[cells.len() - 2].parse().unwrap();
        assert!(sent > 1000, "{row}");
        assert_eq!(cells[cells.len() - 1], "0", "{row}");
    }
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.lines().any(|l| l.starts_with("dsed-")),
        "the demo's namespaces are left behind: {left}"
    );
}
