//! The lifecycle inventory of a fleet, in etcd: every cluster with its
//! hosts and DPUs as one record (`<prefix>/control/inventory`), changed by
//! the same functions the single-machine store runs
//! ([`crate::lifecycle::insert_cluster`], [`crate::lifecycle::insert_host`]),
//! so the cluster rules are one code. Each change is one transaction that
//! compares the record's revision and carries the leader's fence, and
//! writes beside it each changed host's own view (`hosts/<h>/inventory`:
//! its cluster with only itself), which its agent reads.

use super::etcd::{Etcd, FleetError};
use super::keys;
use super::leader::Fence;
use crate::lifecycle::{Cluster, InventoryError};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};

/// `<prefix>/control/inventory`.
pub fn inventory_key(prefix: &str) -> String {
    format!("{}inventory", keys::control(prefix))
}

/// `<prefix>/hosts/<host>/inventory`: the host's cluster, with only it.
pub fn host_inventory_key(prefix: &str, host: &str) -> String {
    format!("{}inventory", keys::host(prefix, host))
}

/// The inventory and the revision it was last changed at (0: never).
///
/// # Errors
/// etcd's error, or [`FleetError::Damaged`] if it does not read.
pub async fn read_inventory(etcd: &Etcd) -> Result<(Vec<Cluster>, i64), FleetError> {
    let key = inventory_key(etcd.prefix());
    let r = etcd.get(&key).await?;
    match r.kvs().first() {
        None => Ok((Vec::new(), 0)),
        Some(kv) => {
            let all = serde_json::from_slice(kv.value()).map_err(|e| FleetError::Damaged {
                what: key.clone(),
                reason: format!("it does not read: {e}"),
            })?;
            Ok((all, kv.mod_revision()))
        }
    }
}

/// Each host of `cluster` with its view: the cluster with only that host.
fn host_views(cluster: &Cluster) -> impl Iterator<Item = (&str, Cluster)> {
    cluster.hosts.iter().map(|h| {
        let mut view = cluster.clone();
        view.hosts = vec![h.clone()];
        (h.name.as_str(), view)
    })
}

/// Applies `change` to the inventory under `fence`: read, change, write
/// if nothing else changed it meanwhile (else again).
///
/// # Errors
/// The outer error is etcd's, or [`FleetError::NotLeader`] when the fence
/// no longer holds; the inner one is the change's own refusal (nothing is
/// written then).
pub async fn update_inventory<T>(
    etcd: &Etcd,
    fence: Fence,
    mut change: impl FnMut(&mut Vec<Cluster>) -> Result<T, InventoryError>,
) -> Result<Result<T, InventoryError>, FleetError> {
    let prefix = etcd.prefix().to_string();
    let key = inventory_key(&prefix);
    // What the last attempt wrote: found as the inventory on the next
    // read, it committed though its answer was lost.
    let mut attempted: Option<(Vec<Cluster>, T)> = None;
    loop {
        let (before, revision) = read_inventory(etcd).await?;
        if let Some((wrote, done)) = attempted.take()
            && wrote == before
        {
            return Ok(Ok(done));
        }
        let mut after = before.clone();
        let done = match change(&mut after) {
            Ok(done) => done,
            Err(e) => return Ok(Err(e)),
        };
        let mut puts = vec![TxnOp::put(
            key.as_str(),
            serde_json::to_vec(&after).expect("an inventory serializes"),
            None,
        )];
        for c in after.iter().filter(|c| !before.contains(c)) {
            for (host, view) in host_views(c) {
                puts.push(TxnOp::put(
                    host_inventory_key(&prefix, host),
                    serde_json::to_vec(&view).expect("a cluster serializes"),
                    None,
                ));
            }
        }
        let txn = Txn::new()
            .when([
                Compare::mod_revision(key.as_str(), CompareOp::Equal, revision),
                fence.compare(etcd),
            ])
            .and_then(puts);
        let committed = etcd
            .retry(&format!("writing {key}"), |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if committed.succeeded() {
            return Ok(Ok(done));
        }
        if !fence.holds(etcd).await? {
            return Err(FleetError::NotLeader {
                leader: super::leader::describe_leader(etcd).await?,
            });
        }
        // Another change came first: read and change again.
        attempted = Some((after, done));
    }
}
