//! Rule sets in etcd: a generation's text written in chunks (etcd refuses
//! requests over 1.5 MiB), then made current by one transaction that
//! compares the `current` key, so that two writers never both win and a
//! reader never sees half a generation.
//!
//! Each attempt writes its chunks under an upload id of its own, named by
//! the generation's `meta` only once the transaction commits: a writer that
//! loses, or dies half-way, leaves nothing any reader follows (and a loser
//! deletes what it wrote).

use super::etcd::{Etcd, FleetError};
use super::keys;
use super::leader::Fence;
use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The largest chunk: well under etcd's 1.5 MiB request limit.
pub const CHUNK_BYTES: usize = 1 << 20;

/// How many generations before the current one stay readable.
const KEEP: u64 = 4;

/// A generation's description, written with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Meta {
    /// The upload whose chunks are this generation.
    upload: String,
    /// Its length in bytes.
    bytes: usize,
    /// How many chunks.
    chunks: usize,
    /// The SHA-256 of the whole text, in hex.
    sha256: String,
}

/// What a publish made current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The new generation.
    pub generation: u64,
    /// The chunks it was written in.
    pub chunks: usize,
    /// The etcd revision of the transaction that made it current.
    pub revision: i64,
}

/// A rule set's text as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSetText {
    /// Its generation.
    pub generation: u64,
    /// The text (JSON, as the API takes it).
    pub text: Vec<u8>,
    /// The etcd revision it was read at: watch from the next one.
    pub revision: i64,
}

fn upload_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("u{nanos:x}{:x}", std::process::id())
}

fn upload_dir(prefix: &str, rule_set: &str, g: u64, upload: &str) -> String {
    format!("{}{upload}/", keys::generation(prefix, rule_set, g))
}

/// The current generation of `rule_set` (0 when it has none) and the
/// `current` key's modification revision (0 when absent).
async fn current(etcd: &Etcd, rule_set: &str) -> Result<(u64, i64, i64), FleetError> {
    let key = keys::current(etcd.prefix(), rule_set);
    let r = etcd.get(&key).await?;
    let revision = r.header().map_or(0, |h| h.revision());
    match r.kvs().first() {
        None => Ok((0, 0, revision)),
        Some(kv) => {
            let g = std::str::from_utf8(kv.value())
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| FleetError::Damaged {
                    what: key.clone(),
                    reason: "not a generation number".into(),
                })?;
            Ok((g, kv.mod_revision(), revision))
        }
    }
}

/// Makes `text` the next generation of `rule_set`, if its generation is
/// still `expected` (any, when `None`). Unfenced: for a controller's
/// writes, [`publish_rule_set_as`].
///
/// # Errors
/// [`FleetError::Conflict`] when another generation became current first
/// (nothing of this attempt is left), or etcd's error.
pub async fn publish_rule_set(
    etcd: &Etcd,
    rule_set: &str,
    expected: Option<u64>,
    text: &[u8],
) -> Result<Published, FleetError> {
    publish(etcd, rule_set, expected, text, None).await
}

/// [`publish_rule_set`] by the leading controller: the transaction that
/// makes the generation current also holds the leader's fence, so that a
/// controller that lost the lead without knowing changes nothing.
///
/// # Errors
/// [`FleetError::NotLeader`] when the leadership `fence` is of has ended,
/// and those of [`publish_rule_set`].
pub async fn publish_rule_set_as(
    fence: Fence,
    etcd: &Etcd,
    rule_set: &str,
    expected: Option<u64>,
    text: &[u8],
) -> Result<Published, FleetError> {
    publish(etcd, rule_set, expected, text, Some(fence)).await
}

async fn publish(
    etcd: &Etcd,
    rule_set: &str,
    expected: Option<u64>,
    text: &[u8],
    fence: Option<Fence>,
) -> Result<Published, FleetError> {
    let prefix = etcd.prefix().to_string();
    let (g, mod_revision, _) = current(etcd, rule_set).await?;
    let conflict = |current| FleetError::Conflict {
        rule_set: rule_set.to_string(),
        expected: expected.unwrap_or(g),
        current,
    };
    if expected.is_some_and(|e| e != g) {
        return Err(conflict(g));
    }
    let next = g + 1;
    let upload = upload_id();
    let chunks = split_chunks(text);
    let dir = upload_dir(&prefix, rule_set, next, &upload);
    for (i, chunk) in chunks.iter().enumerate() {
        let key = format!("{dir}{i:06}");
        etcd.retry(&format!("writing {key}"), |mut c| {
            let (key, chunk) = (key.clone(), chunk.to_vec());
            async move { c.put(key, chunk, None).await }
        })
        .await?;
    }
    let meta = Meta {
        upload,
        bytes: text.len(),
        chunks: chunks.len(),
        sha256: hex::encode(Sha256::digest(text)),
    };
    let current_key = keys::current(&prefix, rule_set);
    let unchanged = Compare::mod_revision(current_key.as_str(), CompareOp::Equal, mod_revision);
    let mut compares = vec![unchanged];
    compares.extend(fence.map(|f| f.compare(etcd)));
    let txn = Txn::new().when(compares).and_then([
        TxnOp::put(current_key.as_str(), next.to_string(), None),
        TxnOp::put(
            keys::meta(&prefix, rule_set, next),
            serde_json::to_vec(&meta).expect("a meta serializes"),
            None,
        ),
    ]);
    let what = format!("making generation {next} of {rule_set} current");
    let deadline = tokio::time::Instant::now() + etcd.timeout();
    // Not retried blindly: a commit whose answer was lost would then fail
    // its compare. A lost answer is settled by reading what is current.
    let revision = loop {
        match etcd.client().txn(txn.clone()).await {
            Ok(done) if done.succeeded() => break done.header().map_or(0, |h| h.revision()),
            Ok(_) => {
                etcd.retry(&format!("removing {dir}"), |mut c| {
                    let dir = dir.clone();
                    async move {
                        c.delete(dir, Some(DeleteOptions::new().with_prefix()))
                            .await
                    }
                })
                .await?;
                if let Some(f) = fence
                    && !f.holds(etcd).await?
                {
                    return Err(FleetError::NotLeader {
                        leader: super::leader::describe_leader(etcd).await?,
                    });
                }
                let (now, _, _) = current(etcd, rule_set).await?;
                return Err(conflict(now));
            }
            Err(e) => {
                let e = etcd.error(what.as_str(), e);
                if !matches!(e, FleetError::Unreachable { .. })
                    || tokio::time::Instant::now() > deadline
                {
                    return Err(e);
                }
                let (now, now_revision, _) = current(etcd, rule_set).await?;
                if now == next && read_meta(etcd, rule_set, next, None).await?.upload == meta.upload
                {
                    break now_revision;
                }
                // Not committed: the compare decides again.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    if next > KEEP {
        // Generations older than the kept ones: a reader that started on
        // one reads it at its revision, which a delete does not take away.
        let from = keys::generation(&prefix, rule_set, 0);
        let to = keys::generation(&prefix, rule_set, next - KEEP);
        etcd.retry(
            &format!("removing old generations of {rule_set}"),
            |mut c| {
                let (from, to) = (from.clone(), to.clone());
                async move {
                    c.delete(from, Some(DeleteOptions::new().with_range(to)))
                        .await
                }
            },
        )
        .await?;
    }
    Ok(Published {
        generation: next,
        chunks: chunks.len(),
        revision,
    })
}

/// `text` cut into chunks of at most [`CHUNK_BYTES`] (one, empty, for an
/// empty text).
fn split_chunks(text: &[u8]) -> Vec<&[u8]> {
    if text.is_empty() {
        return vec![text];
    }
    text.chunks(CHUNK_BYTES).collect()
}

/// The current generation of `rule_set`, read at one revision, checked
/// against its digest; `None` when it has none.
///
/// # Errors
/// [`FleetError::Damaged`] when a chunk is missing or the digest differs,
/// or etcd's error.
pub async fn fetch_rule_set(
    etcd: &Etcd,
    rule_set: &str,
) -> Result<Option<RuleSetText>, FleetError> {
    let prefix = etcd.prefix().to_string();
    let (g, _, revision) = current(etcd, rule_set).await?;
    if g == 0 {
        return Ok(None);
    }
    let meta = read_meta(etcd, rule_set, g, Some(revision)).await?;
    let damaged = |reason: String| FleetError::Damaged {
        what: format!("generation {g} of rule set {rule_set}"),
        reason,
    };
    // One chunk a request: a response of them all would pass the client's
    // 4 MiB message limit.
    let dir = upload_dir(&prefix, rule_set, g, &meta.upload);
    let mut text = Vec::with_capacity(meta.bytes);
    for i in 0..meta.chunks {
        let key = format!("{dir}{i:06}");
        let r = etcd
            .retry(&format!("reading {key}"), |mut c| {
                let key = key.clone();
                async move {
                    c.get(key, Some(GetOptions::new().with_revision(revision)))
                        .await
                }
            })
            .await?;
        let kv = r
            .kvs()
            .first()
            .ok_or_else(|| damaged(format!("chunk {i} of {} is missing", meta.chunks)))?;
        text.extend_from_slice(kv.value());
    }
    if text.len() != meta.bytes || hex::encode(Sha256::digest(&text)) != meta.sha256 {
        return Err(damaged("its text does not match its SHA-256".into()));
    }
    Ok(Some(RuleSetText {
        generation: g,
        text,
        revision,
    }))
}

/// Generation `g`'s meta, at `revision` (the latest when `None`).
async fn read_meta(
    etcd: &Etcd,
    rule_set: &str,
    g: u64,
    revision: Option<i64>,
) -> Result<Meta, FleetError> {
    let key = keys::meta(etcd.prefix(), rule_set, g);
    let r = etcd
        .retry(&format!("reading {key}"), |mut c| {
            let key = key.clone();
            let at = revision.map(|r| GetOptions::new().with_revision(r));
            async move { c.get(key, at).await }
        })
        .await?;
    r.kvs()
        .first()
        .and_then(|kv| serde_json::from_slice(kv.value()).ok())
        .ok_or_else(|| FleetError::Damaged {
            what: format!("generation {g} of rule set {rule_set}"),
            reason: format!("{key} is missing or unreadable"),
        })
}
