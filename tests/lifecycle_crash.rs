//! The control plane killed at every journaled step of a remediation in
//! turn: a child process runs the remediation with `DSE_CRASH_AT=<step>`
//! and aborts when it journals that step; another resumes it from the
//! journal. Each run must end consistent: every host OK (or, with a failed
//! health check, ERROR and rolled back), every DPU on one whole image, its
//! datapath restored, resumed and counting. Needs root; under CI=true that
//! is a failure.

mod common;

use common::lab::{DPUS, Lab, datapath_only_image, new_image};
use dse_control::daemon::Daemon;
use dse_control::lifecycle::DesiredImage;
use dse_control::lifecycle::device::{Emulation, Faults};
use dse_control::lifecycle::remediation::{HostResult, Options, Step};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::Arc;

/// The child: resumes the remediation the journal holds, or starts one.
#[test]
#[ignore = "run by the_control_plane_killed_at_each_step_resumes_consistent as a child process"]
fn remediation_process() {
    let (Ok(dir), Ok(pins)) = (std::env::var("DSE_LAB_DIR"), std::env::var("DSE_LAB_PINS")) else {
        return;
    };
    let d = Arc::new(
        Daemon::open(Lab::config_at(&PathBuf::from(dir), &PathBuf::from(pins))).expect("opens"),
    );
    d.resume_remediations();
    let id = match d.remediations().unwrap().last() {
        Some(r) => r.id,
        None => match d
            .remediate("c1", Options::default(), false, "child")
            .expect("starts")
        {
            dse_control::daemon::Remediate::Started(r) => r.id,
            dse_control::daemon::Remediate::DryRun(_) => unreachable!(),
        },
    };
    Lab::wait(&d, id);
}

fn child(lab: &Lab, crash_at: Option<&str>) -> ExitStatus {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "remediation_process", "--ignored", "--nocapture"])
        .env("DSE_LAB_DIR", &lab.dir)
        .env("DSE_LAB_PINS", &lab.pins.0)
        .env_remove("DSE_CRASH_AT");
    if let Some(step) = crash_at {
        c.env("DSE_CRASH_AT", step);
    }
    c.status().expect("the child runs")
}

/// One round: a fresh lab, the remediation to `image` killed at `step`,
/// resumed, and checked.
fn round(i: usize, step: Step, image: DesiredImage, health_check_fails: bool) {
    let Some(lab) = Lab::new(&format!("k{i}")) else {
        return;
    };
    {
        let d = lab.set_up(50);
        d.set_image("c1", image.clone(), "test").unwrap();
        if health_check_fails {
            d.emulate(
                "S3",
                Emulation {
                    boot_ms: 50,
                    watchdog_ms: 150,
                    faults: Faults {
                        health_check_failures: 1,
                        ..Faults::default()
                    },
                },
                "test",
            )
            .unwrap();
        }
        for n in 0..DPUS.len() {
            lab.send(n, 10);
        }
    }
    let crashed = child(&lab, Some(&step.name()));
    assert!(
        !crashed.success(),
        "the control plane crashed at step {}: {crashed}",
        step.name()
    );
    let resumed = child(&lab, None);
    assert!(
        resumed.success(),
        "the resumed control plane finished: {resumed}"
    );
    let d = Daemon::open(lab.config()).expect("opens");
    let r = d.remediations().unwrap().pop().expect("journaled");
    assert!(r.is_finished(), "after a crash at {}: {r:#?}", step.name());
    let want_h2 = if health_check_fails {
        HostResult::Error
    } else {
        HostResult::Ok
    };
    let results: Vec<HostResult> = r.hosts.iter().map(|h| h.result).collect();
    assert_eq!(
        results,
        vec![HostResult::Ok, want_h2],
        "after a crash at {}: {r:#?}",
        step.name()
    );
    let new = (
        image.firmware_addon.as_ref().unwrap().version.to_string(),
        image.base_image.version.to_string(),
        "2.0".to_string(),
    );
    let old = ("24.1".to_string(), "8.0.3".to_string(), "1.0".to_string());
    for (host, serial) in DPUS {
        let s = d.device(serial).unwrap().status().unwrap();
        let runs = (
            s.firmware().to_string(),
            s.os().to_string(),
            s.datapath.to_string(),
        );
        let want = if host == "h2" && health_check_fails {
            &old
        } else {
            &new
        };
        assert_eq!(
            &runs,
            want,
            "after a crash at {}: DPU {serial} runs one whole image: {r:#?}",
            step.name()
        );
        let st = d
            .datapaths()
            .into_iter()
            .find(|x| x.name == serial)
            .unwrap();
        assert_eq!(
            st.state,
            "running",
            "after a crash at {}: {st:?}",
            step.name()
        );
    }
    for (serial, n) in Lab::counted(&d) {
        assert!(n > 0, "after a crash at {}: {serial} counts", step.name());
    }
    Lab::assert_resumed(&d);
}

#[test]
fn the_control_plane_killed_at_each_step_resumes_consistent() {
    // Every step but the two that only other paths take: the hitless swap
    // (its own round, datapath only) and the roll-back (after a failure).
    let reboot_path: Vec<Step> = Step::ALL
        .into_iter()
        .filter(|s| ![Step::UpgradeDatapath, Step::RollBack].contains(s))
        .collect();
    // DSE_CRASH_STEPS=a,b runs only those rounds (to chase one down).
    let only = std::env::var("DSE_CRASH_STEPS").ok();
    let wanted = |s: Step| {
        only.as_ref()
            .is_none_or(|o| o.split(',').any(|x| x == s.name()))
    };
    for (i, step) in reboot_path.iter().copied().enumerate() {
        if wanted(step) {
            round(i, step, new_image(), false);
        }
    }
    let i = reboot_path.len();
    if wanted(Step::UpgradeDatapath) {
        round(i, Step::UpgradeDatapath, datapath_only_image(), false);
    }
    if wanted(Step::RollBack) {
        round(i + 1, Step::RollBack, new_image(), true);
    }
}
