//! Bad names and values through the real binary: each is refused whole,
//! with exit 4 and the field named, the inventory unchanged, and no input
//! makes a command panic (a name with `/` or a space is escaped into the
//! URL, never split into path segments).

mod common;

use common::daemon::{DaemonProcess, failure};

/// A host file: `name`, host `version`, and DPUs given as YAML flow maps
/// without the fields every DPU shares.
fn host(name: &str, version: &str, dpus: &[&str]) -> String {
    let dpus: String = dpus
        .iter()
        .map(|d| {
            format!(
                "  - {{{d}, vendor: nvidia-bluefield, model: BlueField-3, generation: 3, hardware_revision: A1, os: '8.0.3', datapath: '1.0'}}\n"
            )
        })
        .collect();
    format!("name: {name}\nversion: {version}\ndpus:\n{dpus}")
}

#[test]
fn bad_names_and_values_are_refused_whole_naming_the_field() {
    let (dir, bpffs) = DaemonProcess::paths("badnames");
    let outside_before = dir.join("../x").exists();
    let d = DaemonProcess::start(dir.clone(), bpffs);
    let ok = d.cli(&["cluster", "create", "c1", "--manager-version", "8.0.3"]);
    assert!(ok.status.success(), "{}", failure(&ok).1);
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let host_add = |name: &str, text: &str| -> Vec<String> {
        ["host", "add", "--cluster", "c1", "-f"]
            .map(String::from)
            .into_iter()
            .chain([file(name, text)])
            .collect()
    };
    let good_dpu = "serial: S1, firmware: '24.1'";
    let long_version = format!("'{}'", "1.".repeat(100_000) + "1");
    let inventory = d.json(&["cluster", "list"]);
    let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
        (
            "an empty cluster name",
            vec!["cluster", "create", "", "--manager-version", "8.0.3"]
                .into_iter()
                .map(String::from)
                .collect(),
            vec!["cluster name", "empty"],
        ),
        (
            "a cluster name with a space and a slash",
            vec!["cluster", "create", "a b/c", "--manager-version", "8.0.3"]
                .into_iter()
                .map(String::from)
                .collect(),
            vec!["cluster name", "' ' is not allowed"],
        ),
        (
            "an over-long cluster name",
            vec![
                "cluster".into(),
                "create".into(),
                "x".repeat(200),
                "--manager-version".into(),
                "8.0.3".into(),
            ],
            vec!["cluster name", "200 bytes long"],
        ),
        (
            "an over-long manager version",
            vec![
                "cluster".into(),
                "create".into(),
                "c2".into(),
                "--manager-version".into(),
                "1.".repeat(50) + "1",
            ],
            vec!["not a version", "32 characters"],
        ),
        (
            "an empty host name",
            host_add("h-empty.yaml", &host("''", "'8.0.3'", &[good_dpu])),
            vec!["host name", "empty"],
        ),
        (
            "an empty DPU serial",
            host_add(
                "h-noserial.yaml",
                &host("h1", "'8.0.3'", &["serial: '', firmware: '24.1'"]),
            ),
            vec!["dpus[0].serial", "DPU serial", "empty"],
        ),
        (
            "a DPU serial that climbs out of a directory",
            host_add(
                "h-dots.yaml",
                &host("h1", "'8.0.3'", &["serial: '../../x', firmware: '24.1'"]),
            ),
            vec!["dpus[0].serial", "'/' is not allowed"],
        ),
        (
            "an absolute path as a DPU serial",
            host_add(
                "h-abs.yaml",
                &host("h1", "'8.0.3'", &["serial: /etc/x, firmware: '24.1'"]),
            ),
            vec!["dpus[0].serial", "'/' is not allowed"],
        ),
        (
            "the same serial twice in one host",
            host_add(
                "h-twice.yaml",
                &host("h1", "'8.0.3'", &[good_dpu, good_dpu]),
            ),
            vec!["dpus[1].serial", "also dpus[0]"],
        ),
        (
            "a 200 kB host version",
            host_add("h-long.yaml", &host("h1", &long_version, &[good_dpu])),
            vec!["h-long.yaml", "version", "not a version", "line 2"],
        ),
        (
            "an unquoted decimal firmware version",
            host_add(
                "h-float.yaml",
                &host("h1", "'8.0.3'", &["serial: S1, firmware: 24.10"]),
            ),
            vec!["h-float.yaml", "dpus[0].firmware", "quote it", "line 4"],
        ),
        (
            "a bad datapath name",
            vec![
                "datapath",
                "attach",
                "../x",
                "--backend",
                "emu",
                "--port",
                "p0=lo",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            vec!["datapath name", "'/' is not allowed"],
        ),
        (
            "a port name with a space",
            vec![
                "rules".into(),
                "apply".into(),
                "-f".into(),
                file(
                    "ports.yaml",
                    "ports: [{name: 'a b', index: 0}]\nrules: []\n",
                ),
            ],
            vec!["ports[0].name", "' ' is not allowed"],
        ),
        (
            "a meter name with a slash",
            vec![
                "rules".into(),
                "apply".into(),
                "-f".into(),
                file(
                    "meters.yaml",
                    "ports: []\nmeters: [{name: 'm/1', unit: pps, rate: 10, burst: 5}]\nrules: []\n",
                ),
            ],
            vec!["meters[0].name", "'/' is not allowed"],
        ),
        (
            "an emulation for a serial that climbs out of a directory",
            vec!["dpu", "emulate", "../../x"]
                .into_iter()
                .map(String::from)
                .collect(),
            vec!["DPU serial", "'/' is not allowed"],
        ),
    ];
    for (what, args, says) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = d.cli(&args);
        let (code, err) = failure(&out);
        assert_eq!(code, 4, "{what}: exit 4, not {code}: {err}");
        for s in says {
            assert!(err.contains(s), "{what}: {err:?} should say {s:?}");
        }
        assert!(
            err.len() < 1000,
            "{what}: a short message: {} bytes",
            err.len()
        );
    }
    assert_eq!(
        d.json(&["cluster", "list"]),
        inventory,
        "the inventory is unchanged"
    );
    // A name that breaks the rule reaches no file: nothing outside dpus/
    // (the directory beside the test's own is the machine's, and may hold
    // an `x` of its own: only a device's state in it would be ours).
    assert!(!dir.join("x").exists());
    let beside = dir.join("../x");
    assert!(
        outside_before || !beside.exists(),
        "{} was made",
        beside.display()
    );
    assert!(!beside.join("state.json").exists());
    // Commands that only name a cluster: any name is escaped, and a name
    // that cannot exist is "not found" (exit 7), never a panic.
    for name in ["a b/c", "../..", "%2F", "?x=1#y", "ü"] {
        for args in [
            vec!["lifecycle", "check", "--cluster", name],
            vec!["lifecycle", "precheck", "--cluster", name],
            vec!["lifecycle", "stage", "--cluster", name],
        ] {
            let out = d.cli(&args);
            let (code, err) = failure(&out);
            assert!(
                code == 7 || code == 2,
                "{args:?}: not found (7) or usage (2), got {code}: {err}"
            );
        }
    }
}
