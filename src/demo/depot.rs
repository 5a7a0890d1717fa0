//! The demo's depot: the image the cluster runs (ESXi 8.0.3, BlueField
//! firmware 24.1) and the one it is remediated to (8.0.4, firmware 24.2,
//! datapath 2.0 whose payload is the real XDP object), each manifest
//! signed with a key the control plane is told to trust.

use crate::depot::{Addition, KeyFile, add};
use anyhow::{Context, Result};
use ed25519_dalek::SigningKey;
use std::path::Path;

/// Writes `payload` beside the depot and adds it to `depot` under
/// `manifest` (its fields but the payloads), signed by `key`.
fn publish(
    depot: &Path,
    key: &KeyFile,
    name: &str,
    manifest: serde_json::Value,
    payload: &[u8],
) -> Result<()> {
    let staged = depot.with_extension("payloads");
    std::fs::create_dir_all(&staged).with_context(|| format!("creating {}", staged.display()))?;
    let file = staged.join(format!("{name}.payload"));
    std::fs::write(&file, payload).with_context(|| format!("writing {}", file.display()))?;
    let mut fields = manifest;
    fields["payloads"] = serde_json::json!([]);
    let manifest = serde_json::from_value(fields).context("a demo manifest")?;
    add(
        depot,
        key,
        Addition {
            manifest,
            payloads: vec![file],
        },
    )?;
    Ok(())
}

/// The demo's key: fixed, as the demo's depot is its own, rebuilt on
/// every run.
fn demo_key() -> KeyFile {
    KeyFile {
        id: "demo".into(),
        key: SigningKey::from_bytes(&[7; 32]),
    }
}

/// Adds BlueField firmware `version` to the depot [`write`] wrote under
/// `dir/depot`, signed with the same key.
///
/// # Errors
/// A file that could not be written.
pub fn add_firmware(dir: &Path, version: &str) -> Result<()> {
    publish(
        &dir.join("depot"),
        &demo_key(),
        &format!("fw-{version}"),
        firmware_manifest(version),
        format!("firmware {version}").as_bytes(),
    )
}

fn firmware_manifest(version: &str) -> serde_json::Value {
    serde_json::json!({"kind": "firmware-addon", "name": "bluefield-fw", "version": version,
        "acceptance": "partner-supported", "targets": ["dpu"],
        "vendor": "nvidia-bluefield", "models": ["BlueField-3"]})
}

/// Writes the depot under `dir/depot` and the trusted key to
/// `dir/trusted-keys`; returns the depot's directory.
///
/// # Errors
/// A file that could not be written.
pub fn write(dir: &Path) -> Result<std::path::PathBuf> {
    let key = demo_key();
    let depot = dir.join("depot");
    std::fs::create_dir_all(&depot).with_context(|| format!("creating {}", depot.display()))?;
    std::fs::write(dir.join("trusted-keys"), key.trusted_line() + "\n")
        .context("writing the trusted keys")?;
    for version in ["8.0.3", "8.0.4"] {
        publish(
            &depot,
            &key,
            &format!("esxi-{version}"),
            serde_json::json!({"kind": "base-image", "name": "esxi", "version": version,
                "acceptance": "certified", "targets": ["host", "dpu"]}),
            format!("esxi {version}").as_bytes(),
        )?;
    }
    for version in ["24.1", "24.2"] {
        publish(
            &depot,
            &key,
            &format!("fw-{version}"),
            firmware_manifest(version),
            format!("firmware {version}").as_bytes(),
        )?;
    }
    publish(
        &depot,
        &key,
        "dse-datapath-2.0",
        serde_json::json!({"kind": "component", "name": "dse-datapath", "version": "2.0",
            "acceptance": "certified", "targets": ["dpu"], "solution": "nsx"}),
        dse_ebpf::object_v2(),
    )?;
    Ok(depot)
}

/// A host of the cluster as `POST /v1/clusters/{name}/hosts` takes it:
/// ESXi 8.0.3, each DPU a BlueField-3 on firmware 24.1 and datapath 1.0.
pub fn host(name: &str, serials: &[&str]) -> serde_json::Value {
    let dpus: Vec<serde_json::Value> = serials
        .iter()
        .map(|s| {
            serde_json::json!({
                "serial": s, "vendor": "nvidia-bluefield", "model": "BlueField-3",
                "generation": 3, "hardware_revision": "B1", "firmware": "24.1",
                "os": "8.0.3", "datapath": "1.0"
            })
        })
        .collect();
    serde_json::json!({"name": name, "version": "8.0.3", "dpus": dpus})
}

/// The image the demo remediates to.
pub fn new_image() -> serde_json::Value {
    serde_json::json!({
        "base_image": {"name": "esxi", "version": "8.0.4"},
        "firmware_addon": {"name": "bluefield-fw", "version": "24.2"},
        "components": [{"name": "dse-datapath", "version": "2.0"}],
    })
}
