//! Datapath snapshots: versioned, checksummed serde data, enough to rebuild
//! a datapath exactly (rules, generation, counters, meter state), on the
//! same backend or another.
//!
//! Encoding: `b"DSESNAP\0"`, format (u32 LE), body length (u64 LE),
//! SHA-256 of the body (32 bytes), body: MessagePack with field names
//! (format 2; format 1, still read, had a JSON body).

use crate::pipeline::{Bucket, Count};
use crate::rule::RuleSet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The format this build writes and the newest it reads.
pub const FORMAT: u32 = 2;
const MAGIC: &[u8; 8] = b"DSESNAP\0";
const HEADER: usize = 8 + 4 + 8 + 32;

/// The state of a datapath at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Backend that took it.
    pub backend: String,
    /// Generation in force.
    pub generation: u64,
    /// Rule set in force.
    pub rules: RuleSet,
    /// Per-rule counters by id.
    pub counters: BTreeMap<u32, Count>,
    /// Meter buckets by name; `last_ns` is on the clock of `clock_ns`.
    pub meters: BTreeMap<String, Bucket>,
    /// The datapath clock when the snapshot was taken, so a restore on
    /// another clock can rebase the buckets.
    pub clock_ns: u64,
}

/// Why a snapshot could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Not a snapshot at all.
    #[error("not a dse snapshot (bad magic bytes)")]
    BadMagic,
    /// Shorter than its header says.
    #[error("snapshot truncated: {have} bytes, need {need}")]
    Truncated {
        /// Bytes present.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Written by a newer build.
    #[error(
        "snapshot format {found} is newer than this build reads (up to {supported}); upgrade dse to restore it"
    )]
    NewerFormat {
        /// Format in the snapshot.
        found: u32,
        /// Newest this build reads.
        supported: u32,
    },
    /// The body does not match its checksum.
    #[error("snapshot corrupted: body SHA-256 {found} does not match the recorded {recorded}")]
    Checksum {
        /// Checksum in the header.
        recorded: String,
        /// Checksum of the body as read.
        found: String,
    },
    /// The body is not a snapshot of this format.
    #[error("snapshot body unreadable: {0}")]
    Body(String),
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Snapshot {
    /// Encodes the snapshot.
    pub fn encode(&self) -> Vec<u8> {
        let body = rmp_serde::to_vec_named(self).expect("a snapshot always serializes");
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&Sha256::digest(&body));
        out.extend_from_slice(&body);
        out
    }

    /// Decodes and verifies a snapshot.
    ///
    /// # Errors
    /// [`SnapshotError`] naming what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
        if bytes.len() < HEADER {
            return if bytes.len() >= 8 && &bytes[..8] != MAGIC {
                Err(SnapshotError::BadMagic)
            } else {
                Err(SnapshotError::Truncated {
                    have: bytes.len(),
                    need: HEADER,
                })
            };
        }
        if &bytes[..8] != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if format > FORMAT {
            return Err(SnapshotError::NewerFormat {
                found: format,
                supported: FORMAT,
            });
        }
        let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")) as usize;
        let need = HEADER.saturating_add(len);
        if bytes.len() < need {
            return Err(SnapshotError::Truncated {
                have: bytes.len(),
                need,
            });
        }
        let body = &bytes[HEADER..need];
        let found = Sha256::digest(body);
        if found.as_slice() != &bytes[20..52] {
            return Err(SnapshotError::Checksum {
                recorded: hex(&bytes[20..52]),
                found: hex(&found),
            });
        }
        let snap: Snapshot = if format == 1 {
            serde_json::from_slice(body).map_err(|e| SnapshotError::Body(e.to_string()))?
        } else {
            rmp_serde::from_slice(body).map_err(|e| SnapshotError::Body(e.to_string()))?
        };
        snap.rules
            .validate()
            .map_err(|e| SnapshotError::Body(format!("its rules do not validate: {e}")))?;
        Ok(snap)
    }
}
