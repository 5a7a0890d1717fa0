//! A fleet's depot, in etcd under `<prefix>/control/depot/`: each imported
//! manifest as its own files (the manifest, its signature, its payloads)
//! under `<kind>/<name>/<version>/`, written by one fenced transaction.
//!
//! The controller checks what it imports with its trusted keys; each agent
//! checks it again with its own before its DPUs take it (see
//! [`fetch_manifest`]): etcd carries signed content, it is not trusted to
//! vouch for it.

use super::etcd::{Etcd, FleetError};
use super::keys;
use super::leader::Fence;
use crate::lifecycle::depot::{self, Acceptance, DepotError, Imported, Manifest, TrustedKeys};
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The largest file a fleet's depot holds: etcd refuses requests over
/// 1.5 MiB, and a manifest's files go in one.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// `<prefix>/control/depot/`.
pub fn depot_dir(prefix: &str) -> String {
    format!("{}depot/", keys::control(prefix))
}

/// Where manifest `m`'s files live: `<depot>/<kind>/<name>/<version>/`.
fn manifest_dir(prefix: &str, m: &Manifest) -> String {
    format!(
        "{}{:?}/{}/{}/",
        depot_dir(prefix),
        m.kind,
        m.name,
        m.version
    )
}

/// Why a fleet depot import was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Manifests the trusted keys or the rules refuse, each named.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Refused(Vec<DepotError>),
    /// A file over [`MAX_FILE_BYTES`].
    #[error(
        "{file} is {bytes} bytes: a fleet's depot holds files of at most {MAX_FILE_BYTES} bytes (etcd's request limit)"
    )]
    TooLarge {
        /// The file.
        file: String,
        /// Its size.
        bytes: usize,
    },
    /// A version imported before with other content.
    #[error("{0} is in the depot already with other content: give the new content a new version")]
    Exists(String),
}

/// Verifies the depot at `from` (a directory on the controller's machine)
/// with `keys` and `lowest`, as a single machine's import does, then writes
/// each manifest that is new into etcd under `fence`. Returns the
/// manifests.
///
/// # Errors
/// The outer error is etcd's or [`FleetError::NotLeader`]; the inner one
/// the refusal, and then nothing is written.
pub async fn import(
    etcd: &Etcd,
    fence: Fence,
    from: &Path,
    keys: &TrustedKeys,
    lowest: Acceptance,
) -> Result<Result<Vec<Manifest>, ImportError>, FleetError> {
    // Copied and checked as on one machine; the copies are what is sent.
    let staging = std::env::temp_dir().join(format!(
        "dse-fleet-import-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    let result = import_staged(etcd, fence, from, &staging, keys, lowest).await;
    let _ = std::fs::remove_dir_all(&staging);
    result
}

async fn import_staged(
    etcd: &Etcd,
    fence: Fence,
    from: &Path,
    staging: &Path,
    keys: &TrustedKeys,
    lowest: Acceptance,
) -> Result<Result<Vec<Manifest>, ImportError>, FleetError> {
    let manifests = match depot::import(from, staging, keys, lowest) {
        Ok(m) => m,
        Err(e) => return Ok(Err(ImportError::Refused(e))),
    };
    let files = match manifest_files(staging) {
        Ok(f) => f,
        Err(e) => return Ok(Err(e)),
    };
    let prefix = etcd.prefix().to_string();
    let mut txns = Vec::new();
    for (m, files) in &files {
        let dir = manifest_dir(&prefix, m);
        let (manifest_file, manifest_bytes) = &files[0];
        let have = etcd.get(&format!("{dir}{manifest_file}")).await?;
        if let Some(kv) = have.kvs().first() {
            if kv.value() == manifest_bytes.as_slice() {
                continue;
            }
            return Ok(Err(ImportError::Exists(format!(
                "{:?} {} {}",
                m.kind, m.name, m.version
            ))));
        }
        let first = format!("{dir}{manifest_file}");
        txns.push(
            Txn::new()
                .when([
                    fence.compare(etcd),
                    Compare::create_revision(first.as_str(), CompareOp::Equal, 0),
                ])
                .and_then(
                    files
                        .iter()
                        .map(|(f, bytes)| TxnOp::put(format!("{dir}{f}"), bytes.clone(), None))
                        .collect::<Vec<_>>(),
                ),
        );
    }
    for txn in txns {
        let done = etcd
            .retry("writing the depot", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        // Not written: the fence is gone, or the same manifest was written
        // meanwhile (by this very import, its answer lost).
        if !done.succeeded() && !fence.holds(etcd).await? {
            return Err(FleetError::NotLeader {
                leader: super::leader::describe_leader(etcd).await?,
            });
        }
    }
    Ok(Ok(manifests))
}

/// A manifest's files, by name: the manifest first, then its signature
/// and payloads.
type Files = Vec<(String, Vec<u8>)>;

/// Each manifest in the checked directory `dir`, with its files.
fn manifest_files(dir: &Path) -> Result<Vec<(Manifest, Files)>, ImportError> {
    let refused = |e: DepotError| ImportError::Refused(vec![e]);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DepotError::Io { path, source }
    };
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| refused(io(dir)(e)))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let bytes = std::fs::read(&path).map_err(|e| refused(io(&path)(e)))?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| {
            refused(DepotError::Malformed {
                path: path.clone(),
                reason: e.to_string(),
            })
        })?;
        let mut files = vec![(name.clone(), bytes)];
        for f in
            std::iter::once(format!("{name}.sig")).chain(m.payloads.iter().map(|p| p.file.clone()))
        {
            let p = dir.join(&f);
            let data = std::fs::read(&p).map_err(|e| refused(io(&p)(e)))?;
            if data.len() > MAX_FILE_BYTES {
                return Err(ImportError::TooLarge {
                    file: f,
                    bytes: data.len(),
                });
            }
            files.push((f, data));
        }
        out.push((m, files));
    }
    Ok(out)
}

/// Every manifest of the fleet's depot, as a single machine's depot lists
/// them; `dir` is where each lives in etcd (no directory on this machine).
///
/// # Errors
/// etcd's error, or [`FleetError::Damaged`] if a manifest does not read.
pub async fn list(etcd: &Etcd) -> Result<Vec<Imported>, FleetError> {
    let manifests: Vec<String> = etcd
        .keys(&depot_dir(etcd.prefix()))
        .await?
        .into_iter()
        .filter(|k| k.ends_with(".json"))
        .collect();
    let mut out = Vec::new();
    for key in manifests {
        let r = etcd.get(&key).await?;
        let Some(kv) = r.kvs().first() else { continue };
        let manifest = serde_json::from_slice(kv.value()).map_err(|e| FleetError::Damaged {
            what: key.clone(),
            reason: format!("it does not read: {e}"),
        })?;
        let dir = key.rsplit_once('/').map_or(key.as_str(), |(d, _)| d);
        out.push(Imported {
            manifest,
            dir: PathBuf::from(dir),
        });
    }
    Ok(out)
}

/// Writes the files of manifest `m` (as [`list`] gives it) from etcd into
/// the new directory `into`, for an agent's own import (which checks its
/// signature and payloads with the agent's trusted keys).
///
/// # Errors
/// etcd's error, or [`FleetError::Damaged`] naming what cannot be written.
pub async fn fetch_manifest(etcd: &Etcd, m: &Imported, into: &Path) -> Result<(), FleetError> {
    let dir = format!("{}/", m.dir.display());
    let r = etcd
        .retry(&format!("reading {dir}"), |mut c| {
            let dir = dir.clone();
            async move { c.get(dir, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
    let damaged = |reason: String| FleetError::Damaged {
        what: into.display().to_string(),
        reason,
    };
    std::fs::create_dir_all(into).map_err(|e| damaged(format!("cannot be created: {e}")))?;
    let files: BTreeMap<String, Vec<u8>> = r
        .kvs()
        .iter()
        .filter_map(|kv| {
            let name = std::str::from_utf8(kv.key()).ok()?.strip_prefix(&dir)?;
            // Plain names only: never a path outside `into`.
            (!name.contains('/') && !name.starts_with('.'))
                .then(|| (name.to_string(), kv.value().to_vec()))
        })
        .collect();
    for (name, data) in files {
        std::fs::write(into.join(&name), data)
            .map_err(|e| damaged(format!("{name} cannot be written: {e}")))?;
    }
    Ok(())
}
