//! `dse depot keygen` and `dse depot add` make a depot that `dse depot
//! import` takes; a payload changed after signing is refused, and nothing
//! of that depot is imported.

mod common;

use common::daemon::{DaemonProcess, failure};
use std::os::unix::fs::PermissionsExt;

#[test]
fn a_depot_made_with_keygen_and_add_imports_and_a_changed_payload_is_refused() {
    let (dir, bpffs) = DaemonProcess::paths("depottool");
    let key = dir.join("my.key");
    let dse = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dse"))
            .args(args)
            .output()
            .expect("dse runs")
    };
    let out = dse(&[
        "depot",
        "keygen",
        "--id",
        "acme",
        "--out",
        key.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", failure(&out).1);
    let line = String::from_utf8(out.stdout).unwrap();
    let (id, public) = line.trim().split_once(' ').unwrap();
    assert_eq!((id, public.len()), ("acme", 64), "{line}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the secret key is private");
    let again = dse(&[
        "depot",
        "keygen",
        "--id",
        "acme",
        "--out",
        key.to_str().unwrap(),
    ]);
    assert!(
        !again.status.success(),
        "an existing key is never overwritten"
    );
    let trusted = dir.join("trusted-keys");
    std::fs::write(&trusted, &line).unwrap();

    // A newly built datapath object, shipped as a component.
    let object = dir.join("dse_datapath.bpf.o");
    std::fs::write(&object, dse_ebpf::object_v2()).unwrap();
    let add = |depot: &std::path::Path, version: &str, extra: &[&str]| {
        let mut args = vec![
            "depot",
            "add",
            depot.to_str().unwrap(),
            "--kind",
            "component",
            "--name",
            "dse-datapath",
            "--version",
            version,
            "--acceptance",
            "partner-supported",
            "--targets",
            "dpu",
            "--solution",
            "nsx",
            "--payload",
            object.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        dse(&args)
    };
    let good = dir.join("depot");
    let out = add(&good, "2.1", &[]);
    assert!(out.status.success(), "{}", failure(&out).1);
    assert!(good.join("dse-datapath-2.1.json.sig").exists());
    let bad = add(&good, "2.1", &[]);
    assert!(
        failure(&bad).1.contains("exists already"),
        "one manifest per name and version: {}",
        failure(&bad).1
    );
    let bad = dse(&[
        "depot",
        "add",
        good.to_str().unwrap(),
        "--kind",
        "driver",
        "--name",
        "x",
        "--version",
        "1",
        "--acceptance",
        "accepted",
        "--targets",
        "dpu",
        "--payload",
        object.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(failure(&bad).1.contains("--kind"), "{}", failure(&bad).1);

    let d = DaemonProcess::start_with(
        dir.clone(),
        bpffs,
        &["--trusted-keys", trusted.to_str().unwrap()],
    );
    let out = d.cli(&["depot", "import", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", failure(&out).1);
    let listed = d.json(&["depot", "list"]);
    assert!(listed.to_string().contains("dse-datapath"), "{listed}");

    // Signed, then the payload changed: refused whole.
    let spoiled = dir.join("spoiled");
    let out = add(&spoiled, "2.2", &[]);
    assert!(out.status.success(), "{}", failure(&out).1);
    std::fs::write(spoiled.join("dse_datapath.bpf.o"), b"not the object").unwrap();
    let before = d.json(&["depot", "list"]);
    let out = d.cli(&["depot", "import", spoiled.to_str().unwrap()]);
    let (code, err) = failure(&out);
    assert_ne!(code, 0, "a changed payload is refused");
    assert!(err.contains("dse_datapath.bpf.o"), "{err}");
    assert_eq!(d.json(&["depot", "list"]), before, "nothing imported");
}
