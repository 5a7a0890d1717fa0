//! The depot: a signed manifest with intact payloads imports; a tampered
//! payload, a bad signature, an unknown key, a low acceptance level, a
//! missing signature and a DPU component from another solution than NSX
//! are each refused by name, and nothing is imported.

mod common;

use common::TempDir;
use dse_control::lifecycle::depot::{self, Acceptance, DepotError, TrustedKeys};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// Writes payload `file` and a manifest `name`.json naming it, signed by
/// `signer` as key `key_id`; `fields` go into the manifest as they are.
fn publish(dir: &Path, name: &str, fields: &str, signer: &SigningKey, key_id: &str) -> PathBuf {
    let payload = format!("{name}.bin");
    let data = format!("the payload of {name}");
    std::fs::write(dir.join(&payload), &data).unwrap();
    let sha = hex::encode(Sha256::digest(data.as_bytes()));
    let manifest = format!(
        r#"{{"name": "{name}", "version": "8.0.3", {fields}, "payloads": [{{"file": "{payload}", "sha256": "{sha}"}}]}}"#
    );
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, &manifest).unwrap();
    let sig = signer.sign(manifest.as_bytes());
    std::fs::write(
        dir.join(format!("{name}.json.sig")),
        format!("{key_id} {}\n", hex::encode(sig.to_bytes())),
    )
    .unwrap();
    path
}

const BASE: &str = r#""kind": "base-image", "acceptance": "certified", "targets": ["host", "dpu"]"#;

fn trusted(dir: &Path) -> TrustedKeys {
    let path = dir.join("trusted-keys");
    std::fs::write(
        &path,
        format!(
            "# the depot's keys\nvendor {}\n",
            hex::encode(key(1).verifying_key().to_bytes())
        ),
    )
    .unwrap();
    TrustedKeys::load(&path).unwrap()
}

#[test]
fn a_signed_depot_with_intact_payloads_imports() {
    let dir = TempDir::new("depot-good");
    let depot = dir.0.join("depot");
    std::fs::create_dir_all(&depot).unwrap();
    publish(&depot, "esx-base", BASE, &key(1), "vendor");
    let nsx =
        r#""kind": "component", "acceptance": "accepted", "targets": ["dpu"], "solution": "nsx""#;
    publish(&depot, "nsx-dpu", nsx, &key(1), "vendor");
    let keys = trusted(&dir.0);
    let into = dir.0.join("imported");
    let manifests = depot::import(&depot, &into, &keys, Acceptance::PartnerSupported)
        .unwrap_or_else(|e| panic!("{e:?}"));
    let names: Vec<&str> = manifests.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["esx-base", "nsx-dpu"]);
    for f in [
        "esx-base.json",
        "esx-base.json.sig",
        "esx-base.bin",
        "nsx-dpu.bin",
    ] {
        assert!(into.join(f).is_file(), "{f} imported");
    }
    // What was imported verifies on its own.
    depot::verify(&into.join("esx-base.json"), &keys, Acceptance::Certified).unwrap();
}

#[test]
fn each_bad_manifest_is_refused_by_name_and_nothing_is_imported() {
    type Spoil = fn(&Path, &Path);
    // (what is wrong, how the depot is spoiled, what the error says)
    let cases: [(&str, Spoil, &str); 6] = [
        (
            "a tampered payload",
            |depot, _| std::fs::write(depot.join("esx-base.bin"), "something else").unwrap(),
            "payload esx-base.bin has SHA-256",
        ),
        (
            "a bad signature",
            |depot, _| {
                let m = depot.join("esx-base.json");
                let text = std::fs::read_to_string(&m)
                    .unwrap()
                    .replace("8.0.3", "8.0.4");
                std::fs::write(m, text).unwrap();
            },
            "the signature by key vendor does not match the manifest",
        ),
        (
            "an unknown key",
            |depot, _| {
                publish(depot, "stray", BASE, &key(2), "stranger");
            },
            "signed by key stranger, which is not trusted",
        ),
        (
            "a low acceptance level",
            |depot, _| {
                let community = r#""kind": "vendor-addon", "acceptance": "community-supported", "targets": ["host"]"#;
                publish(depot, "addon", community, &key(1), "vendor");
            },
            "acceptance level community-supported is below the lowest allowed, partner-supported",
        ),
        (
            "no signature",
            |depot, _| std::fs::remove_file(depot.join("esx-base.json.sig")).unwrap(),
            "not signed",
        ),
        (
            "a DPU component from another solution",
            |depot, _| {
                let other = r#""kind": "component", "acceptance": "accepted", "targets": ["dpu"], "solution": "acme-firewall""#;
                publish(depot, "acme", other, &key(1), "vendor");
            },
            "solution \"acme-firewall\" adds a component to the DPU: only the nsx solution may",
        ),
    ];
    for (what, spoil, text) in cases {
        let dir = TempDir::new("depot-bad");
        let depot = dir.0.join("depot");
        std::fs::create_dir_all(&depot).unwrap();
        publish(&depot, "esx-base", BASE, &key(1), "vendor");
        spoil(&depot, &dir.0);
        let into = dir.0.join("imported");
        let errors = depot::import(
            &depot,
            &into,
            &trusted(&dir.0),
            Acceptance::PartnerSupported,
        )
        .expect_err(what);
        let all: Vec<String> = errors.iter().map(DepotError::to_string).collect();
        assert!(all.iter().any(|e| e.contains(text)), "{what}: {all:?}");
        assert!(!into.exists(), "{what}: nothing is imported");
    }
}

#[test]
fn a_malformed_trusted_key_is_named_by_line() {
    let dir = TempDir::new("depot-keys");
    let path = dir.0.join("keys");
    std::fs::write(&path, "# ok\nvendor abcd\n").unwrap();
    let err = TrustedKeys::load(&path).unwrap_err();
    assert!(
        err.to_string()
            .contains("line 2: the public key is not 64 hex digits"),
        "{err}"
    );
}

#[test]
fn the_daemon_imports_a_depot_and_refuses_a_bad_one_whole() {
    use common::Served;
    use dse_control::client::{Method, StatusCode};
    let keys = TempDir::new("depot-api-keys");
    trusted(&keys.0);
    let keys_file = keys.0.join("trusted-keys");
    let untrusting = Served::start("depot-api-nokeys");
    let (status, err) =
        untrusting.json(Method::POST, "/v1/depot/import", r#"{"path": "/nowhere"}"#);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("--trusted-keys"),
        "{err}"
    );

    let s = Served::start_with("depot-api", |c| {
        c.daemon.depot.trusted_keys = Some(keys_file)
    });
    let good = TempDir::new("depot-api-good");
    publish(&good.0, "esx-base", BASE, &key(1), "vendor");
    let body = |dir: &TempDir| format!(r#"{{"path": "{}"}}"#, dir.0.display());
    let (status, imported) = s.json(Method::POST, "/v1/depot/import", &body(&good));
    assert_eq!(status, StatusCode::CREATED, "{imported}");
    assert_eq!(imported[0]["name"], "esx-base");
    let (_, listed) = s.call(Method::GET, "/v1/depot", None);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let kept = std::path::PathBuf::from(listed[0]["dir"].as_str().unwrap());
    assert!(
        kept.join("esx-base.bin").is_file(),
        "the payload is kept in {kept:?}"
    );

    let bad = TempDir::new("depot-api-bad");
    publish(
        &bad.0,
        "addon",
        r#""kind": "vendor-addon", "acceptance": "certified", "targets": ["host"]"#,
        &key(1),
        "vendor",
    );
    publish(&bad.0, "esx-next", BASE, &key(1), "vendor");
    std::fs::write(bad.0.join("esx-next.bin"), "tampered").unwrap();
    let (status, refused) = s.json(Method::POST, "/v1/depot/import", &body(&bad));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["code"], "depot_refused");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("payload esx-next.bin has SHA-256"),
        "{refused}"
    );
    let (_, after) = s.call(Method::GET, "/v1/depot", None);
    assert_eq!(
        after, listed,
        "nothing of the bad depot is imported, not even its good manifest"
    );

    // The same again is fine; the same version with other content is not.
    let (status, _) = s.json(Method::POST, "/v1/depot/import", &body(&good));
    assert_eq!(status, StatusCode::CREATED);
    let changed = TempDir::new("depot-api-changed");
    publish(
        &changed.0,
        "esx-base",
        r#""kind": "base-image", "acceptance": "accepted", "targets": ["host", "dpu"]"#,
        &key(1),
        "vendor",
    );
    let (status, clash) = s.json(Method::POST, "/v1/depot/import", &body(&changed));
    assert_eq!(status, StatusCode::CONFLICT, "{clash}");
    assert!(
        clash["error"]
            .as_str()
            .unwrap()
            .contains("publish it under a new version"),
        "{clash}"
    );
    let (_, last) = s.call(Method::GET, "/v1/depot", None);
    assert_eq!(last, listed);
}
