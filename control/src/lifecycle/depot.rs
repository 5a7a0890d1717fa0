//! The depot: versioned, signed manifests and the payloads they name.
//!
//! A depot is a directory. Each `*.json` file in it is a [`Manifest`],
//! beside it `<manifest>.sig` holds `<key id> <signature, hex>`: an ed25519
//! signature of the manifest's bytes by a trusted key. Each payload the
//! manifest names sits in the same directory and must have the SHA-256 the
//! manifest gives. Trusted keys are a file of `<key id> <public key, hex>`
//! lines (`#` starts a comment).
//!
//! [`import`] checks everything first and copies only then, into a fresh
//! directory renamed into place once the copies check too: a depot with
//! one bad manifest imports nothing.

use super::inventory::Version;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a manifest offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The base image: host and DPU content.
    BaseImage,
    /// A vendor add-on.
    VendorAddon,
    /// A firmware add-on (DPU firmware).
    FirmwareAddon,
    /// A component added by a solution.
    Component,
}

/// Where a manifest's content installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The host.
    Host,
    /// The DPU.
    Dpu,
}

/// How far a manifest is vouched for, most trusted first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Acceptance {
    /// Certified by the platform's maker.
    Certified,
    /// Accepted by the platform's maker.
    Accepted,
    /// Supported by a partner.
    PartnerSupported,
    /// Supported by a community only.
    CommunitySupported,
}

/// Spelled as in manifests and flags: `partner-supported`.
impl std::fmt::Display for Acceptance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Acceptance::Certified => "certified",
            Acceptance::Accepted => "accepted",
            Acceptance::PartnerSupported => "partner-supported",
            Acceptance::CommunitySupported => "community-supported",
        })
    }
}

/// The only solution allowed to add components to a DPU.
pub const DPU_SOLUTION: &str = "nsx";

/// One file of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// Its file name, in the depot's directory.
    pub file: String,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// A versioned piece of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// What it is.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: Version,
    /// How far it is vouched for.
    pub acceptance: Acceptance,
    /// Where it installs.
    pub targets: Vec<Target>,
    /// The solution adding it (components only).
    #[serde(default)]
    pub solution: Option<String>,
    /// Its files.
    pub payloads: Vec<Payload>,
    /// The DPU vendor it is made for (firmware and vendor add-ons); none
    /// means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<super::Vendor>,
    /// The DPU models it is made for; empty means any of its vendor's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
}

impl Manifest {
    /// Whether it fits a DPU of `vendor` and `model`.
    pub fn fits(&self, vendor: super::Vendor, model: &str) -> bool {
        self.vendor.is_none_or(|v| v == vendor)
            && (self.models.is_empty() || self.models.iter().any(|m| m == model))
    }
}

/// How `dse serve` checks what it imports.
#[derive(Debug, Clone)]
pub struct DepotConfig {
    /// The trusted keys file; without one nothing can be imported.
    pub trusted_keys: Option<PathBuf>,
    /// The lowest acceptance level imported.
    pub lowest_acceptance: Acceptance,
}

impl Default for DepotConfig {
    fn default() -> Self {
        DepotConfig {
            trusted_keys: None,
            lowest_acceptance: Acceptance::PartnerSupported,
        }
    }
}

/// A manifest imported into the daemon's depot, and where its files are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    /// The manifest.
    pub manifest: Manifest,
    /// The directory holding it, its signature and its payloads.
    pub dir: PathBuf,
}

impl Imported {
    /// Its key in the depot: kind, name and version.
    pub fn key(&self) -> String {
        let m = &self.manifest;
        format!("{:?}/{}/{}", m.kind, m.name, m.version)
    }
}

/// Why a depot (or one manifest of it) is refused.
#[derive(Debug, thiserror::Error)]
pub enum DepotError {
    /// A file cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A manifest or key file does not parse.
    #[error("{}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A manifest has no signature file.
    #[error("{}: not signed (no {}.sig beside it); sign it with a trusted key", path.display(), path.display())]
    Unsigned {
        /// The manifest.
        path: PathBuf,
    },
    /// Signed by a key that is not trusted.
    #[error("{}: signed by key {key}, which is not trusted; add its public key to the trusted keys if it should be", path.display())]
    UnknownKey {
        /// The manifest.
        path: PathBuf,
        /// The key id.
        key: String,
    },
    /// The signature does not verify.
    #[error("{}: the signature by key {key} does not match the manifest: it was changed after signing, or signed by another key", path.display())]
    BadSignature {
        /// The manifest.
        path: PathBuf,
        /// The key id.
        key: String,
    },
    /// A payload's SHA-256 differs from the manifest's.
    #[error("{}: payload {file} has SHA-256 {actual}, the manifest says {expected}: it was tampered with or damaged", path.display())]
    Tampered {
        /// The manifest.
        path: PathBuf,
        /// The payload.
        file: String,
        /// What the manifest says.
        expected: String,
        /// What the file hashes to.
        actual: String,
    },
    /// Below the lowest acceptance level allowed.
    #[error("{}: acceptance level {level} is below the lowest allowed, {lowest}", path.display())]
    Acceptance {
        /// The manifest.
        path: PathBuf,
        /// Its level.
        level: Acceptance,
        /// The lowest allowed.
        lowest: Acceptance,
    },
    /// A solution other than NSX adds a component to the DPU.
    #[error("{}: solution {solution:?} adds a component to the DPU: only the {DPU_SOLUTION} solution may", path.display())]
    NotDpuSolution {
        /// The manifest.
        path: PathBuf,
        /// The solution it names.
        solution: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DepotError + '_ {
    move |source| DepotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn malformed(path: &Path, reason: impl Into<String>) -> DepotError {
    DepotError::Malformed {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Trusted public keys, by id.
#[derive(Debug, Default)]
pub struct TrustedKeys(BTreeMap<String, VerifyingKey>);

impl TrustedKeys {
    /// Reads `path`: lines of `<key id> <public key, 64 hex digits>`.
    ///
    /// # Errors
    /// [`DepotError::Io`]; [`DepotError::Malformed`] naming the line.
    pub fn load(path: &Path) -> Result<TrustedKeys, DepotError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let mut keys = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why: &str| malformed(path, format!("line {}: {why}", n + 1));
            let (id, hex_key) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("expected `<key id> <public key, hex>`"))?;
            let bytes: [u8; 32] = hex::decode(hex_key.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| bad("the public key is not 64 hex digits"))?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|_| bad("the public key is not an ed25519 key"))?;
            keys.insert(id.to_string(), key);
        }
        Ok(TrustedKeys(keys))
    }

    /// Only `key`, named `id` (for checking what one signs oneself).
    pub fn one(id: &str, key: VerifyingKey) -> TrustedKeys {
        TrustedKeys(BTreeMap::from([(id.to_string(), key)]))
    }

    /// The key with id `id`.
    pub fn get(&self, id: &str) -> Option<&VerifyingKey> {
        self.0.get(id)
    }
}

/// Checks the manifest at `path` and its payloads: its signature by a
/// trusted key, every payload's SHA-256, its acceptance level against
/// `lowest`, and that only NSX adds components to a DPU.
///
/// # Errors
/// The first [`DepotError`] found.
pub fn verify(path: &Path, keys: &TrustedKeys, lowest: Acceptance) -> Result<Manifest, DepotError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    let sig_path = PathBuf::from(format!("{}.sig", path.display()));
    let sig_text = match std::fs::read_to_string(&sig_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DepotError::Unsigned {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io(&sig_path)(e)),
    };
    let (key_id, sig_hex) = sig_text
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(|| malformed(&sig_path, "expected `<key id> <signature, hex>`"))?;
    let key = keys.get(key_id).ok_or_else(|| DepotError::UnknownKey {
        path: path.to_path_buf(),
        key: key_id.to_string(),
    })?;
    let sig: [u8; 64] = hex::decode(sig_hex.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| malformed(&sig_path, "the signature is not 128 hex digits"))?;
    key.verify_strict(&bytes, &Signature::from_bytes(&sig))
        .map_err(|_| DepotError::BadSignature {
            path: path.to_path_buf(),
            key: key_id.to_string(),
        })?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| malformed(path, e.to_string()))?;
    if manifest.acceptance > lowest {
        return Err(DepotError::Acceptance {
            path: path.to_path_buf(),
            level: manifest.acceptance,
            lowest,
        });
    }
    if manifest.kind == Kind::Component && manifest.targets.contains(&Target::Dpu) {
        let solution = manifest.solution.clone().unwrap_or_default();
        if solution != DPU_SOLUTION {
            return Err(DepotError::NotDpuSolution {
                path: path.to_path_buf(),
                solution,
            });
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    for p in &manifest.payloads {
        if p.file.contains('/') || p.file.starts_with('.') {
            return Err(malformed(
                path,
                format!(
                    "payload {:?} must be a plain file name in the depot",
                    p.file
                ),
            ));
        }
        let file = dir.join(&p.file);
        let data = std::fs::read(&file).map_err(io(&file))?;
        let actual = hex::encode(Sha256::digest(&data));
        if !actual.eq_ignore_ascii_case(&p.sha256) {
            return Err(DepotError::Tampered {
                path: path.to_path_buf(),
                file: p.file.clone(),
                expected: p.sha256.clone(),
                actual,
            });
        }
    }
    Ok(manifest)
}

/// Verifies every manifest of the depot at `from` (see [`verify`]), then
/// copies the manifests, their signatures and payloads into `into` (a new
/// directory, renamed into place once whole). Returns the manifests.
///
/// # Errors
/// Every refused manifest's [`DepotError`], and nothing is copied;
/// [`DepotError::Io`] if copying fails (nothing is left at `into`).
pub fn import(
    from: &Path,
    into: &Path,
    keys: &TrustedKeys,
    lowest: Acceptance,
) -> Result<Vec<Manifest>, Vec<DepotError>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(from)
        .map_err(|e| vec![io(from)(e)])?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(vec![DepotError::Malformed {
            path: from.to_path_buf(),
            reason: "no depot here: a depot directory holds manifests (NAME.json), each with its signature (NAME.json.sig) and payloads".into(),
        }]);
    }
    let (good, bad): (Vec<_>, Vec<_>) = paths
        .iter()
        .map(|p| verify(p, keys, lowest).map(|m| (p, m)))
        .partition(Result::is_ok);
    if !bad.is_empty() {
        return Err(bad.into_iter().filter_map(Result::err).collect());
    }
    let good: Vec<(&PathBuf, Manifest)> = good.into_iter().filter_map(Result::ok).collect();
    let staging = into.with_extension("importing");
    let copy = || -> Result<(), DepotError> {
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        for (path, m) in &good {
            let dir = path.parent().unwrap_or(Path::new("."));
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let files = [name.to_string(), format!("{name}.sig")]
                .into_iter()
                .chain(m.payloads.iter().map(|p| p.file.clone()));
            for f in files {
                std::fs::copy(dir.join(&f), staging.join(&f)).map_err(io(&dir.join(&f)))?;
            }
            // The copies are what is kept: checked again, so that a file
            // changed between the first check and the copy is caught.
            verify(&staging.join(name.as_ref()), keys, lowest)?;
        }
        std::fs::rename(&staging, into).map_err(io(into))
    };
    copy().map_err(|e| {
        let _ = std::fs::remove_dir_all(&staging);
        vec![e]
    })?;
    Ok(good.into_iter().map(|(_, m)| m).collect())
}
