//! `dse verify` and `dse rules check` from the command line: a rule set
//! that touches every match field and every action agrees frame by frame
//! on the XDP program and the host path; rules no packet reaches are
//! named with the rules that cover them. Needs root and bpffs for the XDP
//! backend; under CI=true that is a failure.

mod common;

use std::process::Command;

fn dse(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dse"))
        .args(args)
        .output()
        .expect("dse runs")
}

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/verify.yaml");

#[test]
fn every_probe_of_the_example_agrees_on_xdp_and_the_host_path() {
    if !common::root() {
        return;
    }
    let out = dse(&["-o", "json", "verify", "-f", EXAMPLE]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["agree"], true, "{v:#}");
    assert_eq!(v["backends"], serde_json::json!(["xdp", "emu"]));
    // Every rule's frame, and the frames just outside its fields.
    assert!(v["probes"].as_u64().unwrap() >= 40, "{v}");
    // Rule 16 sits under rules 14 and 15, which take all of 192.0.2.0/24.
    let unreached = v["unreached"].as_array().unwrap();
    assert_eq!(unreached.len(), 1, "{v:#}");
    assert_eq!(unreached[0]["rule"], 16);
    assert!(
        unreached[0]["warning"]
            .as_str()
            .unwrap()
            .contains("rules 14, 15 above it take every packet it matches"),
        "{v:#}"
    );
}

#[test]
fn rules_check_warns_of_rules_no_packet_reaches() {
    let out = dse(&["rules", "check", EXAMPLE]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "warning: rule 16 is never taken: rules 14, 15 above it take every packet it matches"
        ),
        "{stdout}"
    );
}

#[test]
fn a_missing_backend_capability_is_named() {
    // No bpffs there: XDP cannot load, and the error says what to do.
    let out = dse(&["verify", "-f", EXAMPLE, "--bpffs", "/proc/nonexistent"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("loading the XDP program"), "{stderr}");
    assert!(stderr.contains("--backend emu"), "{stderr}");
    // The host path alone needs neither.
    let out = dse(&["verify", "-f", EXAMPLE, "--backend", "emu"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("every frame and every counter agrees"));
}

/// tcpdump's one line per packet of `path`, or `None` without tcpdump
/// (under CI=true that is a failure: `cargo xtask setup` installs it).
fn tcpdump(path: &std::path::Path) -> Option<Vec<String>> {
    let out = common::tool_output(
        "tcpdump",
        Command::new("tcpdump").args(["-nn", "-e", "-r"]).arg(path),
    )?;
    assert!(
        out.status.success(),
        "tcpdump reads {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

#[test]
fn the_frames_each_backend_sent_are_pcaps_tcpdump_reads() {
    let dir = std::env::temp_dir().join(format!("dse-verify-pcap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dse(&[
        "-o",
        "json",
        "verify",
        "-f",
        EXAMPLE,
        "--backend",
        "emu",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["agree"], true);
    let Some(reference) = tcpdump(&dir.join("reference.pcapng")) else {
        return;
    };
    let emu = tcpdump(&dir.join("emu.pcapng")).unwrap();
    // The backends agree, so they sent the same frames: every probe
    // that was not dropped, and some were.
    assert_eq!(reference, emu);
    let probes = report["probes"].as_u64().unwrap() as usize;
    assert!(
        (10..probes).contains(&reference.len()),
        "{} frames sent of {probes} probes",
        reference.len()
    );
    // Rule 4 rewrote its frame: to 192.168.77.1:5353 from 172.16.0.9:33000.
    assert!(
        reference
            .iter()
            .any(|l| l.contains("172.16.0.9.33000 > 192.168.77.1.5353: ")),
        "{reference:#?}"
    );
    // Rule 10's VXLAN and rule 5's VLAN tag are on the wire as sent.
    assert!(
        reference
            .iter()
            .any(|l| l.contains("VXLAN, flags [I] (0x08), vni 42")),
        "{reference:#?}"
    );
    assert!(
        reference.iter().any(|l| l.contains("vlan 100")),
        "{reference:#?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
