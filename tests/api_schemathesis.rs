//! The API against its own OpenAPI document, fuzzed by schemathesis (from
//! PyPI, in a virtual environment of this test's own under the target
//! directory): with the bearer token, and without it (every operation
//! answers its documented 401). Every check runs. A request that fits the
//! document must never get a 400; it may get a 422 where a rule the
//! document cannot state refuses it (a cluster rule, a port the rules do
//! not define), as the document says.
//!
//! A fleet controller (`dse serve --etcd`) is fuzzed the same way against
//! the same document, on every operation it serves (the others answer
//! their documented 501 `not_in_fleet_mode`, which a test checks).
//!
//! Needs python3 with venv and PyPI (and etcd for the fleet); under
//! CI=true their absence fails.

mod common;

use common::daemon::{DaemonProcess, free_port};
use std::path::{Path, PathBuf};
use std::process::Command;

const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// The `st` of a virtual environment with schemathesis, made on first use.
fn schemathesis() -> Option<PathBuf> {
    // One test makes it; the others, run at the same time, wait for it.
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = MAKING.lock().unwrap_or_else(|p| p.into_inner());
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-venv");
    let st = venv.join("bin/st");
    if st.exists() {
        return Some(st);
    }
    let made = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status();
    let installed = made.is_ok_and(|s| s.success())
        && Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", SCHEMATHESIS])
            .status()
            .is_ok_and(|s| s.success());
    if !installed {
        let _ = std::fs::remove_dir_all(&venv);
        assert!(
            std::env::var("CI").is_err(),
            "CI needs python3-venv and PyPI to install {SCHEMATHESIS}"
        );
        return None;
    }
    Some(st)
}

/// The configuration: schema-valid data is accepted, or refused by a
/// stated rule (422), never as malformed (400).
const CONFIG: &str = r#"
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "404", "409", "422"]
"#;

/// Runs schemathesis on `schema` against `url`, with `extra` arguments;
/// panics with its report unless it finds nothing.
fn fuzz(st: &Path, schema: &str, url: &str, extra: &[&str], what: &str) {
    let name = format!("schemathesis-{}.toml", what.replace(' ', "-"));
    let config = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&config, CONFIG).unwrap();
    let out = Command::new(st)
        .arg("--config-file")
        .arg(&config)
        .args([
            "run",
            schema,
            "--url",
            url,
            "--max-examples",
            "10",
            "--workers",
            "1",
        ])
        .args(["--seed", "1"])
        .args(extra)
        .env("NO_COLOR", "1")
        // Its cache of findings goes beside the venv, not into the tree.
        .current_dir(Path::new(env!("CARGO_TARGET_TMPDIR")))
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{what}: schemathesis found failures:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn schemathesis_finds_nothing_with_the_token_or_without_it() {
    let Some(st) = schemathesis() else {
        return;
    };
    let (dir, bpffs) = DaemonProcess::paths("schemathesis");
    let token = dir.join("token");
    std::fs::write(&token, "the-token\n").unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let d = DaemonProcess::start_with(
        dir.clone(),
        bpffs,
        &["--listen", &addr, "--token-file", token.to_str().unwrap()],
    );
    let url = format!("http://{addr}");
    let served = format!("{url}/openapi.json");
    fuzz(
        &st,
        &served,
        &url,
        &["--header", "Authorization: Bearer the-token"],
        "with the token",
    );
    // Without it even the document is refused: fuzz from the file.
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/control/openapi.json");
    fuzz(&st, file, &url, &[], "without the token");
    assert!(
        d.cli(&["status"]).status.success(),
        "the daemon answers after"
    );
}

#[test]
fn schemathesis_finds_nothing_on_a_fleet_controller() {
    let Some(st) = schemathesis() else {
        return;
    };
    let Some(cluster) = common::fleet::etcd("schemathesis") else {
        return;
    };
    let token = Path::new(env!("CARGO_TARGET_TMPDIR")).join("schemathesis-fleet-token");
    std::fs::write(&token, "the-token\n").unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let c = common::fleet::controller(
        "schemathesis-fleet",
        &cluster.endpoints_arg(),
        2,
        &["--listen", &addr, "--token-file", token.to_str().unwrap()],
    );
    common::fleet::until(std::time::Duration::from_secs(10), "it leads", || {
        (c.json(&["fleet", "status"])["leader"] == "schemathesis-fleet").then_some(())
    });
    let url = format!("http://{addr}");
    // What a fleet serves, by operation id.
    let served = [
        "health",
        "getRules",
        "applyRules",
        "stats",
        "counters",
        "listClusters",
        "createCluster",
        "addHost",
        "openapi",
        "hosts",
        "setHost",
        "fleet",
        "audit",
        "listDepot",
        "importDepot",
        "setImage",
        "remediate",
        "remediations",
        "remediation",
    ];
    let only: Vec<&str> = served
        .iter()
        .flat_map(|id| ["--include-operation-id", id])
        .collect();
    let with_token = [&only[..], &["--header", "Authorization: Bearer the-token"]].concat();
    fuzz(
        &st,
        &format!("{url}/openapi.json"),
        &url,
        &with_token,
        "a fleet controller with the token",
    );
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/control/openapi.json");
    fuzz(
        &st,
        file,
        &url,
        &only,
        "a fleet controller without the token",
    );
    assert!(c.cli(&["fleet", "status"]).status.success());
}
