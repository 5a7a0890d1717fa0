//! Remediation of an emulated cluster (h1 with one DPU, h2 with two, each
//! DPU running an XDP datapath on a veth): the whole cluster to a new
//! image; a failed health check that rolls its host back and leaves the
//! other alone; and the control plane killed at every journaled step in
//! turn, each restart ending consistent. Needs root; under CI=true that
//! is a failure.

mod common;

use common::lab::{DPUS, Lab, new_image};
use dse_control::daemon::{Daemon, Remediate};
use dse_control::lifecycle::device::{Emulation, Faults};
use dse_control::lifecycle::remediation::{HostResult, Options, Remediation, Step};
use std::sync::Arc;

fn start(d: &Arc<Daemon>, options: Options) -> u64 {
    match d.remediate("c1", options, false, "test").expect("starts") {
        Remediate::Started(r) => r.id,
        Remediate::DryRun(_) => unreachable!("not a dry run"),
    }
}

fn result(r: &Remediation, host: &str) -> HostResult {
    r.hosts.iter().find(|h| h.host == host).unwrap().result
}

/// Every DPU runs `firmware`, `os` and `datapath`, in its device and in
/// the inventory, with its XDP datapath running (not failed over).
fn assert_dpus(d: &Daemon, firmware: &str, os: &str, datapath: &str) {
    let inventory = d.clusters().unwrap();
    for (host, serial) in DPUS {
        let s = d.device(serial).unwrap().status().unwrap();
        assert!(s.is_up(), "{serial} is up");
        assert_eq!(
            (
                s.firmware().to_string(),
                s.os().to_string(),
                s.datapath.to_string()
            ),
            (firmware.into(), os.into(), datapath.into()),
            "DPU {serial} of {host} runs one whole image"
        );
        let dpu = inventory[0]
            .dpus()
            .find(|(_, x)| x.serial == serial)
            .unwrap()
            .1
            .clone();
        assert_eq!(
            (
                dpu.firmware.to_string(),
                dpu.os.to_string(),
                dpu.datapath.to_string()
            ),
            (firmware.into(), os.into(), datapath.into()),
            "the inventory records what {serial} runs"
        );
        let status = d
            .datapaths()
            .into_iter()
            .find(|x| x.name == serial)
            .unwrap();
        assert_eq!(status.state, "running", "{serial}'s datapath: {status:?}");
    }
}

#[test]
fn a_cluster_is_remediated_to_a_new_image() {
    let Some(lab) = Lab::new("ok") else { return };
    let d = lab.set_up(100);
    for i in 0..DPUS.len() {
        lab.send(i, 20);
    }
    let counted = Lab::counted(&d);
    assert!(counted.iter().all(|(_, n)| *n == 20), "{counted:?}");
    let before = d.compliance("c1");
    assert!(before.is_err(), "no image yet: {before:?}");
    d.set_image("c1", new_image(), "test")
        .expect("the image fits");
    let c = d.compliance("c1").unwrap();
    assert_eq!(serde_json::to_value(&c).unwrap()["status"], "non_compliant");
    let id = start(
        &d,
        Options {
            parallel: 2,
            ..Options::default()
        },
    );
    let r = Lab::wait(&d, id);
    assert_eq!(result(&r, "h1"), HostResult::Ok, "{r:#?}");
    assert_eq!(result(&r, "h2"), HostResult::Ok, "{r:#?}");
    assert_dpus(&d, "24.2", "8.0.4", "2.0");
    assert_eq!(Lab::counted(&d), counted, "no counter reset, none lost");
    Lab::assert_resumed(&d);
    let c = d.compliance("c1").unwrap();
    assert_eq!(serde_json::to_value(&c).unwrap()["status"], "compliant");
    // A second remediation finds nothing to do.
    let again = Lab::wait(&d, start(&d, Options::default()));
    assert_eq!(result(&again, "h1"), HostResult::Skipped);
}

#[test]
fn a_failed_health_check_rolls_its_host_back_and_leaves_the_other_alone() {
    let Some(lab) = Lab::new("hc") else { return };
    let d = lab.set_up(100);
    d.set_image("c1", new_image(), "test").unwrap();
    d.emulate(
        "S3",
        Emulation {
            boot_ms: 100,
            watchdog_ms: 300,
            faults: Faults {
                health_check_failures: 1,
                ..Faults::default()
            },
        },
        "test",
    )
    .unwrap();
    let r = Lab::wait(
        &d,
        start(
            &d,
            Options {
                retries: 0,
                ..Options::default()
            },
        ),
    );
    assert_eq!(result(&r, "h1"), HostResult::Ok, "{r:#?}");
    let h2 = r.hosts.iter().find(|h| h.host == "h2").unwrap();
    assert_eq!(h2.result, HostResult::Error, "{h2:#?}");
    let why = h2.message.as_deref().unwrap();
    assert!(why.contains("health check failed"), "{why}");
    // S3 fell back by itself; S2, upgraded fine, was rolled back with it:
    // the host's two DPUs run one image, the one they ran before.
    for serial in ["S2", "S3"] {
        let s = d.device(serial).unwrap().status().unwrap();
        assert_eq!(
            (
                s.firmware().to_string(),
                s.os().to_string(),
                s.datapath.to_string()
            ),
            ("24.1".into(), "8.0.3".into(), "1.0".into()),
            "{serial} is back on its old image"
        );
        let st = d
            .datapaths()
            .into_iter()
            .find(|x| x.name == serial)
            .unwrap();
        assert_eq!(st.state, "running", "{st:?}");
    }
    assert!(
        h2.steps
            .iter()
            .any(|s| s.step == Step::RollBack && s.dpu.as_deref() == Some("S2")),
        "S2 was rolled back: {h2:#?}"
    );
    let s1 = d.device("S1").unwrap().status().unwrap();
    assert_eq!(s1.firmware().to_string(), "24.2", "h1 is upgraded");
    Lab::assert_resumed(&d);
}

#[test]
fn a_failed_flash_is_retried_and_a_dpu_too_slow_to_boot_times_out() {
    let Some(lab) = Lab::new("rt") else { return };
    let d = lab.set_up(100);
    d.set_image("c1", new_image(), "test").unwrap();
    let emulate = |serial: &str, boot_ms: u64, faults: Faults| {
        d.emulate(
            serial,
            Emulation {
                boot_ms,
                watchdog_ms: boot_ms * 3,
                faults,
            },
            "test",
        )
        .unwrap();
    };
    // h1: its one flash fails once; h2: S2 takes 10 s to boot, longer than
    // the 1 s the policy waits, in both attempts.
    emulate(
        "S1",
        100,
        Faults {
            flash_failures: 1,
            ..Faults::default()
        },
    );
    emulate("S2", 10_000, Faults::default());
    let r = Lab::wait(
        &d,
        start(
            &d,
            Options {
                retries: 1,
                retry_delay_ms: 50,
                boot_timeout_ms: 1000,
                ..Options::default()
            },
        ),
    );
    let h1 = r.hosts.iter().find(|h| h.host == "h1").unwrap();
    assert_eq!(h1.result, HostResult::Ok, "{h1:#?}");
    assert_eq!(h1.attempts, 2, "retried once: {h1:#?}");
    assert!(
        h1.steps.iter().any(|s| s.attempt == 1
            && s.step == Step::Flash
            && s.detail
                .as_deref()
                .is_some_and(|d| d.contains("flashing slot B failed"))),
        "the first attempt's flash failed: {h1:#?}"
    );
    let h2 = r.hosts.iter().find(|h| h.host == "h2").unwrap();
    assert_eq!(h2.result, HostResult::TimedOut, "{h2:#?}");
    assert_eq!(h2.attempts, 2, "a time-out is retried too: {h2:#?}");
    let why = h2.message.as_deref().unwrap();
    assert!(why.contains("did not come up within"), "{why}");
    assert_eq!(
        d.device("S1")
            .unwrap()
            .status()
            .unwrap()
            .firmware()
            .to_string(),
        "24.2"
    );
}

#[test]
fn a_fresh_install_puts_host_and_dpu_content_in_place() {
    let Some(lab) = Lab::new("fi") else { return };
    let d = lab.set_up(100);
    d.set_image("c1", new_image(), "test").unwrap();
    let c = d.fresh_install("c1", "h2", "test").expect("installs");
    assert_eq!(
        serde_json::to_value(&c).unwrap()["status"],
        "compliant",
        "{c:#?}"
    );
    let inventory = d.clusters().unwrap();
    let h2 = inventory[0].hosts.iter().find(|h| h.name == "h2").unwrap();
    assert_eq!(h2.version.to_string(), "8.0.4");
    for dpu in &h2.dpus {
        assert_eq!(
            (
                dpu.firmware.to_string(),
                dpu.os.to_string(),
                dpu.datapath.to_string()
            ),
            ("24.2".into(), "8.0.4".into(), "2.0".into())
        );
        let s = d.device(&dpu.serial).unwrap().status().unwrap();
        assert_eq!(s.slots[1], None, "both slots were erased, A written");
    }
    // h1 was not touched.
    let s1 = d.device("S1").unwrap().status().unwrap();
    assert_eq!(s1.firmware().to_string(), "24.1");
    let err = d.fresh_install("c1", "nobody", "test").unwrap_err();
    assert!(
        err.to_string().contains("no host nobody in cluster c1"),
        "{err}"
    );
    Lab::assert_resumed(&d);
}
