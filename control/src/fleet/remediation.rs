//! A fleet's remediation, split the way vLCM splits it: the leading
//! controller orders the hosts (their order, how many at once, retries,
//! each host's result), and each host's agent runs the host's own
//! sequence with the single-machine engine, journaled in its own store.
//!
//! ```text
//! <prefix>/control/remediations/<id>     the controller's journal
//! <prefix>/hosts/<h>/remediation         the order: remediation, attempt, image, options
//! <prefix>/hosts/<h>/remediation-status  the agent's answer: each step it finished
//! ```
//!
//! The order exists exactly while the host is under remediation: the
//! controller writes it with the journal in one transaction, and withdraws
//! it once it has recorded the host's result and versions. An agent takes
//! an order once (its own journal names the remediation and attempt), so
//! a controller that dies and one that takes over meet the same agents
//! mid-sequence; an agent killed mid-step resumes its journal and redoes
//! that step.
//!
//! [`advance`] is the controller's whole decision, pure: what a look at the
//! journal, the agents' answers and their liveness changes. A single
//! machine's engine orders its hosts with it too.

use super::etcd::{Etcd, FleetError};
use super::inventory::{read_inventory, update_inventory};
use super::keys;
use super::leader::Fence;
use super::liveness::live_host_names;
pub use crate::lifecycle::ordering::{Ack, Decision, Order, advance};
use crate::lifecycle::remediation::{HostResult, Options, Remediation};
use crate::lifecycle::{Host, Unready};
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// `<prefix>/control/remediations/`.
pub fn journal_dir(prefix: &str) -> String {
    format!("{}remediations/", keys::control(prefix))
}

/// `<prefix>/control/remediations/<id>`, zero-padded to sort by id.
pub fn journal_key(prefix: &str, id: u64) -> String {
    format!("{}{id:010}", journal_dir(prefix))
}

/// `<prefix>/hosts/<h>/remediation`: the host's order.
pub fn order_key(prefix: &str, host: &str) -> String {
    format!("{}remediation", keys::host(prefix, host))
}

/// `<prefix>/hosts/<h>/remediation-status`: its agent's answer.
pub fn ack_key(prefix: &str, host: &str) -> String {
    format!("{}remediation-status", keys::host(prefix, host))
}

/// Fault injection: aborts the process at `point` of the controller's
/// work when `DSE_CRASH_AT` is `fleet-<point>` (`started`, `ordered`,
/// `recorded`), as a controller SIGKILLed right there.
fn crash_point(point: &str) {
    if std::env::var("DSE_CRASH_AT").is_ok_and(|v| v.strip_prefix("fleet-") == Some(point)) {
        tracing::error!("fault injection: the controller crashes at fleet-{point}");
        std::process::abort();
    }
}

/// Every remediation journal with its etcd revision, oldest first.
async fn journals(etcd: &Etcd) -> Result<Vec<(Remediation, i64)>, FleetError> {
    let dir = journal_dir(etcd.prefix());
    let r = etcd
        .retry(&format!("reading {dir}"), |mut c| {
            let dir = dir.clone();
            async move { c.get(dir, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
    r.kvs()
        .iter()
        .map(|kv| {
            serde_json::from_slice(kv.value())
                .map(|j| (j, kv.mod_revision()))
                .map_err(|e| FleetError::Damaged {
                    what: String::from_utf8_lossy(kv.key()).into_owned(),
                    reason: format!("it does not read: {e}"),
                })
        })
        .collect()
}

/// The agents' answers of `hosts`.
async fn acks(etcd: &Etcd, hosts: &[&str]) -> Result<BTreeMap<String, Ack>, FleetError> {
    let mut out = BTreeMap::new();
    // etcd takes at most 128 operations a transaction.
    for batch in hosts.chunks(100) {
        let txn = Txn::new().and_then(
            batch
                .iter()
                .map(|h| TxnOp::get(ack_key(etcd.prefix(), h), None))
                .collect::<Vec<_>>(),
        );
        let r = etcd
            .retry("reading the agents' answers", |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        for (h, op) in batch.iter().zip(r.op_responses()) {
            if let etcd_client::TxnOpResponse::Get(g) = op
                && let Some(kv) = g.kvs().first()
                && let Ok(a) = serde_json::from_slice::<Ack>(kv.value())
            {
                out.insert((*h).to_string(), a);
            }
        }
    }
    Ok(out)
}

/// Every remediation, oldest first, each host's steps as its agent
/// answered them.
///
/// # Errors
/// etcd's error.
pub async fn list(etcd: &Etcd) -> Result<Vec<Remediation>, FleetError> {
    let mut all: Vec<Remediation> = journals(etcd).await?.into_iter().map(|(r, _)| r).collect();
    let hosts: BTreeSet<String> = all
        .iter()
        .flat_map(|r| r.hosts.iter().map(|h| h.host.clone()))
        .collect();
    let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let answers = acks(etcd, &names).await?;
    for r in &mut all {
        for h in &mut r.hosts {
            if let Some(a) = answers.get(&h.host).filter(|a| a.id == r.id) {
                h.steps.clone_from(&a.run.steps);
                h.plan.clone_from(&a.run.plan);
                if h.result == HostResult::Running {
                    h.maintenance = a.run.maintenance;
                }
            }
        }
    }
    Ok(all)
}

/// The remediation under way, if one is.
///
/// # Errors
/// etcd's error.
pub async fn under_way(etcd: &Etcd) -> Result<Option<u64>, FleetError> {
    Ok(journals(etcd)
        .await?
        .iter()
        .find(|(r, _)| !r.is_finished())
        .map(|(r, _)| r.id))
}

/// Why a remediation cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The cluster is missing or has no image.
    #[error(transparent)]
    Unready(#[from] Unready),
    /// Another remediation is under way.
    #[error("remediation {0} is under way: wait for it to finish (dse lifecycle history)")]
    Busy(u64),
    /// The options are wrong.
    #[error("{0}")]
    Options(String),
}

/// Journals a new remediation of `cluster` by `who` under `fence`; the
/// leader's [`orchestrate`] then carries it out.
///
/// # Errors
/// The outer error is etcd's or [`FleetError::NotLeader`]; the inner one
/// why it cannot start (nothing is written then).
pub async fn start(
    etcd: &Etcd,
    fence: Fence,
    cluster: &str,
    options: Options,
    who: &str,
) -> Result<Result<Remediation, StartError>, FleetError> {
    if let Err(e) = options.check() {
        return Ok(Err(StartError::Options(e)));
    }
    let (clusters, _) = read_inventory(etcd).await?;
    let (c, image) = match Unready::check(clusters, cluster) {
        Ok(ready) => ready,
        Err(e) => return Ok(Err(e.into())),
    };
    let all = journals(etcd).await?;
    if let Some((r, _)) = all.iter().find(|(r, _)| !r.is_finished()) {
        return Ok(Err(StartError::Busy(r.id)));
    }
    let id = all.last().map_or(1, |(r, _)| r.id + 1);
    let r = Remediation::new(id, &c, image, options, who);
    let key = journal_key(etcd.prefix(), id);
    let txn = Txn::new()
        .when([
            fence.compare(etcd),
            Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
        ])
        .and_then([TxnOp::put(
            key.as_str(),
            serde_json::to_vec(&r).expect("a journal serializes"),
            None,
        )]);
    let done = etcd
        .retry(&format!("writing {key}"), |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
    if !done.succeeded() {
        if fence.holds(etcd).await? {
            // Another start took the id first.
            return Ok(Err(StartError::Busy(id)));
        }
        return Err(FleetError::NotLeader {
            leader: super::leader::describe_leader(etcd).await?,
        });
    }
    crash_point("started");
    Ok(Ok(r))
}

/// Carries out every unfinished remediation while `fence` holds: looks at
/// the journals, the agents' answers and liveness every `tick`, and writes
/// what [`advance`] decides. Returns when the fence is lost.
///
/// # Errors
/// [`FleetError::NotLeader`] once another leads; etcd's error otherwise
/// (the caller starts it again).
pub async fn orchestrate(etcd: &Etcd, fence: Fence, tick: Duration) -> Result<(), FleetError> {
    // Since when each host under way has been seen unavailable, by
    // remediation; and the remediations known finished, read no more.
    let mut away: BTreeMap<u64, BTreeMap<String, u64>> = BTreeMap::new();
    let mut finished: BTreeSet<u64> = BTreeSet::new();
    loop {
        for id in journal_ids(etcd).await? {
            if finished.contains(&id) {
                continue;
            }
            let key = journal_key(etcd.prefix(), id);
            let Some((mut r, revision)) = journal(etcd, &key).await? else {
                continue;
            };
            if r.is_finished() {
                finished.insert(id);
                away.remove(&id);
                continue;
            }
            // Only the hosts under way have answers that matter.
            let names: Vec<&str> = r
                .hosts
                .iter()
                .filter(|h| h.result == HostResult::Running)
                .map(|h| h.host.as_str())
                .collect();
            let answers = acks(etcd, &names).await?;
            let live = live_host_names(etcd).await?;
            let before = r.clone();
            let mine = away.entry(id).or_default();
            let d = advance(&mut r, &answers, &live, mine, crate::store::now_ms());
            if !d.record.is_empty() {
                record_versions(etcd, fence, &r.cluster, &d.record).await?;
                crash_point("recorded");
            }
            if r != before {
                write(etcd, fence, &r, revision, &d).await?;
                if !d.orders.is_empty() {
                    crash_point("ordered");
                }
            }
        }
        tokio::time::sleep(tick).await;
    }
}

/// The remediations' ids, from their journals' keys (a keys-only read).
async fn journal_ids(etcd: &Etcd) -> Result<Vec<u64>, FleetError> {
    let dir = journal_dir(etcd.prefix());
    Ok(etcd
        .keys(&dir)
        .await?
        .iter()
        .filter_map(|k| k.strip_prefix(&dir)?.parse().ok())
        .collect())
}

/// The journal at `key` with its revision, if there is one.
async fn journal(etcd: &Etcd, key: &str) -> Result<Option<(Remediation, i64)>, FleetError> {
    let r = etcd.get(key).await?;
    let Some(kv) = r.kvs().first() else {
        return Ok(None);
    };
    let j = serde_json::from_slice(kv.value()).map_err(|e| FleetError::Damaged {
        what: key.to_string(),
        reason: format!("it does not read: {e}"),
    })?;
    Ok(Some((j, kv.mod_revision())))
}

/// Writes the journal `r` (if still at `revision`) with `d`'s orders and
/// withdrawals, in one fenced transaction.
async fn write(
    etcd: &Etcd,
    fence: Fence,
    r: &Remediation,
    revision: i64,
    d: &Decision,
) -> Result<(), FleetError> {
    let prefix = etcd.prefix();
    let key = journal_key(prefix, r.id);
    let mut ops = vec![TxnOp::put(
        key.as_str(),
        serde_json::to_vec(r).expect("a journal serializes"),
        None,
    )];
    for (h, o) in &d.orders {
        ops.push(TxnOp::put(
            order_key(prefix, h),
            serde_json::to_vec(o).expect("an order serializes"),
            None,
        ));
    }
    for h in &d.withdrawn {
        ops.push(TxnOp::delete(order_key(prefix, h), None));
    }
    let txn = Txn::new()
        .when([
            fence.compare(etcd),
            Compare::mod_revision(key.as_str(), CompareOp::Equal, revision),
        ])
        .and_then(ops);
    let done = etcd
        .retry(&format!("writing {key}"), |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await?;
    if !done.succeeded() && !fence.holds(etcd).await? {
        return Err(FleetError::NotLeader {
            leader: super::leader::describe_leader(etcd).await?,
        });
    }
    // Not written with the fence held: the journal moved (this write's
    // answer lost, or a start); the next look decides again.
    Ok(())
}

/// Records each of `hosts`' versions in cluster `cluster` of the inventory.
async fn record_versions(
    etcd: &Etcd,
    fence: Fence,
    cluster: &str,
    hosts: &[Host],
) -> Result<(), FleetError> {
    update_inventory(etcd, fence, |all| {
        for host in hosts {
            if let Some(h) = all
                .iter_mut()
                .filter(|c| c.name == cluster)
                .flat_map(|c| c.hosts.iter_mut())
                .find(|h| h.name == host.name)
            {
                h.version = host.version.clone();
                for d in &mut h.dpus {
                    if let Some(n) = host.dpus.iter().find(|n| n.serial == d.serial) {
                        d.firmware = n.firmware.clone();
                        d.os = n.os.clone();
                        d.datapath = n.datapath.clone();
                    }
                }
            }
        }
        Ok(())
    })
    .await?
    .map_err(|e| FleetError::Damaged {
        what: "the inventory".into(),
        reason: e.to_string(),
    })
}
