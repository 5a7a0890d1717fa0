//! The lifecycle inventory through the real binary: `dse cluster create`,
//! `dse host add` and `dse cluster list` against `dse serve`; each cluster
//! rule refuses a host with its own error and exit code 4, and nothing
//! changes.

mod common;

use common::daemon::{DaemonProcess, failure};

/// A host file with `dpus` (serial, model, firmware, hardware revision).
fn host_file(
    d: &DaemonProcess,
    name: &str,
    version: &str,
    dpus: &[(&str, &str, &str, &str)],
) -> String {
    let dpus: String = dpus
        .iter()
        .map(|(serial, model, firmware, rev)| {
            format!(
                "  - {{serial: {serial}, vendor: nvidia-bluefield, model: {model}, generation: 3, hardware_revision: {rev}, firmware: '{firmware}', os: '8.0.3', datapath: '1.0'}}\n"
            )
        })
        .collect();
    static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = d.dir.join(format!("host-{n}.yaml"));
    let dpus = if dpus.is_empty() {
        "dpus: []\n".to_string()
    } else {
        format!("dpus:\n{dpus}")
    };
    std::fs::write(&path, format!("name: {name}\nversion: '{version}'\n{dpus}")).unwrap();
    path.display().to_string()
}

#[test]
fn the_cluster_rules_through_the_cli() {
    let (dir, bpffs) = DaemonProcess::paths("lifecycle");
    let d = DaemonProcess::start(dir, bpffs);
    let ok = |args: &[&str]| {
        let out = d.cli(args);
        assert!(out.status.success(), "{args:?}: {}", failure(&out).1);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&["cluster", "create", "c1", "--manager-version", "8.0.3"]);
    ok(&[
        "cluster",
        "create",
        "legacy",
        "--manager-version",
        "8.0.3",
        "--baselines",
    ]);
    let bf3 = ("S1", "BlueField-3", "32.41.1000", "B1");
    ok(&[
        "host",
        "add",
        "--cluster",
        "c1",
        "-f",
        &host_file(&d, "h1", "8.0.3", &[bf3]),
    ]);

    let s2 = ("S2", "BlueField-3", "32.41.1000", "B1");
    let bf2 = ("S2", "BlueField-2", "32.41.1000", "B1");
    let s3_firmware = ("S3", "BlueField-3", "32.42.0", "B1");
    let s3_revision = ("S3", "BlueField-3", "32.41.1000", "C0");
    let s9 = ("S9", "BlueField-3", "32.41.1000", "B1");
    let h2 = |version: &str, dpus: &[_]| host_file(&d, "h2", version, dpus);
    // (cluster, host file, exit code, what the error says)
    let refused = [
        (
            "legacy",
            h2("8.0.3", &[s2]),
            4,
            "cluster legacy is managed by baselines",
        ),
        ("c1", h2("8.0.3", &[]), 4, "host h2 has no DPU"),
        (
            "c1",
            h2("8.0.3", &[bf2]),
            4,
            "is NVIDIA BlueField BlueField-2, but the cluster's DPUs are NVIDIA BlueField BlueField-3",
        ),
        (
            "c1",
            h2("8.0.3", &[s2, s3_firmware]),
            4,
            "host h2's two DPUs differ in firmware",
        ),
        (
            "c1",
            h2("8.0.3", &[s2, s3_revision]),
            4,
            "host h2's two DPUs differ in hardware revision",
        ),
        (
            "c1",
            h2("7.0.3", &[s2]),
            4,
            "host h2 is at version 7.0.3, below 8.0",
        ),
        (
            "c1",
            host_file(&d, "h1", "8.0.3", &[s9]),
            4,
            "host h1 is already in cluster c1",
        ),
        ("nope", h2("8.0.3", &[s2]), 7, "no cluster named nope"),
    ];
    let before = ok(&["cluster", "list", "-o", "json"]);
    for (cluster, file, code, text) in &refused {
        let out = d.cli(&["host", "add", "--cluster", cluster, "-f", file]);
        let (got, err) = failure(&out);
        assert_eq!(got, *code, "{cluster} {file}: {err}");
        assert!(err.contains(text), "{cluster} {file}: {err}");
    }
    assert_eq!(
        ok(&["cluster", "list", "-o", "json"]),
        before,
        "nothing changed"
    );
    let (code, err) = failure(&d.cli(&["cluster", "create", "c1", "--manager-version", "8.0"]));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("a cluster named c1 exists already"), "{err}");
    let (code, err) = failure(&d.cli(&["cluster", "create", "c2", "--manager-version", "7.0"]));
    assert_eq!(code, 4, "{err}");
    assert!(
        err.contains("the manager of cluster c2 is at version 7.0, below 8.0"),
        "{err}"
    );

    let table = ok(&["cluster", "list"]);
    let row = table
        .lines()
        .find(|l| l.contains("S1"))
        .expect("a row for DPU S1");
    for cell in ["c1", "image", "h1", "BlueField-3", "32.41.1000"] {
        assert!(row.contains(cell), "{cell} in {row:?}");
    }
}
