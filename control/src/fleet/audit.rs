//! A fleet's audit log, in etcd under `<prefix>/control/audit/`: one key an
//! entry, named by the time and the controller that wrote it. An entry's
//! sequence number is the etcd revision that wrote it: increasing, with
//! gaps (other writes take revisions in between).

use super::etcd::{Etcd, FleetError};
use super::keys;
use crate::store::AuditEntry;
use etcd_client::{GetOptions, SortOrder, SortTarget};
use serde::{Deserialize, Serialize};

/// `<prefix>/control/audit/`.
pub fn audit_dir(prefix: &str) -> String {
    format!("{}audit/", keys::control(prefix))
}

/// An entry as stored; its sequence number is its key's revision.
#[derive(Serialize, Deserialize)]
struct Stored {
    at_unix_ms: u64,
    who: String,
    what: String,
    result: String,
}

/// Records that `who` asked for `what` and what came of it, by controller
/// `by`.
///
/// # Errors
/// etcd's error.
pub async fn record(
    etcd: &Etcd,
    by: &str,
    who: &str,
    what: &str,
    result: &str,
) -> Result<(), FleetError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let key = format!("{}{:020}-{by}", audit_dir(etcd.prefix()), now.as_nanos());
    let value = serde_json::to_vec(&Stored {
        at_unix_ms: u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
        who: who.to_string(),
        what: what.to_string(),
        result: result.to_string(),
    })
    .expect("an entry serializes");
    etcd.put(&key, value).await.map(|_| ())
}

/// Up to `limit` entries after sequence number `after`, oldest first; or,
/// with `last`, the newest `last` entries.
///
/// # Errors
/// etcd's error.
pub async fn read(
    etcd: &Etcd,
    after: u64,
    limit: usize,
    last: Option<usize>,
) -> Result<Vec<AuditEntry>, FleetError> {
    let dir = audit_dir(etcd.prefix());
    let (order, count) = match last {
        Some(n) => (SortOrder::Descend, n),
        None => (SortOrder::Ascend, limit),
    };
    let options = GetOptions::new()
        .with_prefix()
        .with_min_mod_revision(i64::try_from(after.saturating_add(1)).unwrap_or(i64::MAX))
        .with_sort(SortTarget::Mod, order)
        .with_limit(i64::try_from(count).unwrap_or(i64::MAX));
    let r = etcd
        .retry(&format!("reading {dir}"), |mut c| {
            let (dir, options) = (dir.clone(), options.clone());
            async move { c.get(dir, Some(options)).await }
        })
        .await?;
    let mut entries: Vec<AuditEntry> = r
        .kvs()
        .iter()
        .filter_map(|kv| {
            let s: Stored = serde_json::from_slice(kv.value()).ok()?;
            Some(AuditEntry {
                seq: u64::try_from(kv.mod_revision()).unwrap_or(0),
                at_unix_ms: s.at_unix_ms,
                who: s.who,
                what: s.what,
                result: s.result,
            })
        })
        .collect();
    entries.sort_by_key(|e| e.seq);
    Ok(entries)
}
