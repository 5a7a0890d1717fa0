//! The lifecycle operations through the real binary, against `dse serve`
//! with trusted keys: depot import, `dse image set`, `dse lifecycle
//! check|precheck|stage|remediate [--dry-run]|history`, `dse dpu
//! emulate`; each refused operation with its error text and exit code.
//! Needs root (the DPUs' XDP datapaths); under CI=true that is a failure.

mod common;

use common::daemon::{DaemonProcess, failure};
use common::lab::{DPUS, HOSTS, Lab, RULES};

#[test]
fn lifecycle_operations_through_the_cli() {
    let Some(lab) = Lab::new("cli") else { return };
    let keys = lab.dir.join("trusted-keys");
    std::fs::create_dir_all(lab.dir.join("serve")).unwrap();
    let d = DaemonProcess::start_with(
        lab.dir.join("serve"),
        lab.pins.0.join("serve"),
        &["--trusted-keys", keys.to_str().unwrap()],
    );
    let ok = |args: &[&str]| {
        let out = d.cli(args);
        assert!(out.status.success(), "{args:?}: {}", failure(&out).1);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let refused = |args: &[&str], code: i32, says: &str| {
        let out = d.cli(args);
        let (got, err) = failure(&out);
        assert_eq!(got, code, "{args:?} exits {code}: {err}");
        assert!(err.contains(says), "{args:?} says {says:?}: {err}");
    };
    let depot = lab.dir.join("depot");
    ok(&["depot", "import", depot.to_str().unwrap()]);
    ok(&["cluster", "create", "c1", "--manager-version", "8.0.3"]);
    for (i, h) in HOSTS.iter().enumerate() {
        let path = lab.dir.join(format!("host{i}.yaml"));
        std::fs::write(&path, h).unwrap();
        ok(&[
            "host",
            "add",
            "--cluster",
            "c1",
            "-f",
            path.to_str().unwrap(),
        ]);
    }
    let rules = lab.dir.join("rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    ok(&["rules", "apply", "-f", rules.to_str().unwrap()]);
    for ((_, serial), veth) in DPUS.iter().zip(&lab.veths) {
        let port = format!("pa={}", veth.outer);
        ok(&[
            "datapath",
            "attach",
            serial,
            "--backend",
            "xdp",
            "--port",
            &port,
        ]);
        ok(&["dpu", "emulate", serial, "--boot-ms", "100"]);
    }

    refused(
        &["lifecycle", "check", "--cluster", "c1"],
        4,
        "has no desired image: set one first (dse image set)",
    );
    refused(
        &["image", "set", "--cluster", "c1", "--base", "esxi=9.9"],
        4,
        "base image esxi 9.9 is not in the depot",
    );
    refused(
        &[
            "image",
            "set",
            "--cluster",
            "nowhere",
            "--base",
            "esxi=8.0.4",
        ],
        7,
        "no cluster named nowhere",
    );
    refused(
        &["lifecycle", "recommendations", "--cluster", "c1"],
        4,
        "recommendation generation is unsupported on cluster c1",
    );
    refused(
        &["lifecycle", "hcl", "--cluster", "c1"],
        4,
        "the hardware compatibility check is unsupported on cluster c1",
    );
    let set = ok(&[
        "image",
        "set",
        "--cluster",
        "c1",
        "--base",
        "esxi=8.0.4",
        "--firmware",
        "bluefield-fw=24.2",
        "--component",
        "dse-datapath=2.0",
    ]);
    assert!(
        set.contains("esxi 8.0.4, bluefield-fw 24.2, dse-datapath 2.0"),
        "{set}"
    );

    let check = ok(&["lifecycle", "check", "--cluster", "c1"]);
    assert!(check.contains("cluster c1: non_compliant"), "{check}");
    assert!(check.contains("firmware 24.1->24.2"), "{check}");
    assert!(check.contains("reboot"), "{check}");
    let pre = ok(&["lifecycle", "precheck", "--cluster", "c1"]);
    assert!(pre.contains("pre-check passed"), "{pre}");
    let staged = ok(&["lifecycle", "stage", "--cluster", "c1"]);
    assert!(staged.contains("staged on S1, S2, S3"), "{staged}");

    // A dry run prints the impact and touches nothing.
    let dry = ok(&["lifecycle", "remediate", "--cluster", "c1", "--dry-run"]);
    assert!(dry.contains("reboot"), "{dry}");
    assert!(ok(&["lifecycle", "history"]).lines().count() <= 1);

    // An unreachable DPU fails the pre-check, by name.
    ok(&["dpu", "emulate", "S2", "--unreachable"]);
    refused(
        &["lifecycle", "precheck", "--cluster", "c1"],
        4,
        "pre-check of cluster c1 failed",
    );
    refused(
        &["lifecycle", "remediate", "--cluster", "c1"],
        4,
        "DPU S2 is unreachable",
    );
    ok(&["dpu", "emulate", "S2", "--boot-ms", "100"]);

    let done = ok(&[
        "lifecycle",
        "remediate",
        "--cluster",
        "c1",
        "--parallel",
        "2",
    ]);
    assert!(done.contains("remediation 1 of cluster c1"), "{done}");
    for host in ["h1", "h2"] {
        assert!(
            done.lines()
                .any(|l| l.starts_with(host) && l.contains("OK")),
            "{host} OK: {done}"
        );
    }
    let check = ok(&["lifecycle", "check", "--cluster", "c1"]);
    assert!(check.contains("cluster c1: compliant"), "{check}");
    let history = ok(&["lifecycle", "history"]);
    assert!(history.contains("h1 OK, h2 OK"), "{history}");
    let steps = ok(&["lifecycle", "history", "--id", "1"]);
    for step in [
        "fail-over S3 done",
        "flash S3 done",
        "reboot S3 done",
        "restore S3 done",
        "verify S3 done",
    ] {
        assert!(steps.contains(step), "{step}: {steps}");
    }
    let inventory = ok(&["cluster", "list"]);
    assert!(inventory.contains("24.2"), "{inventory}");
}
