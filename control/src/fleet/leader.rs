//! Which controller leads: the one whose id is in `<prefix>/control/leader`,
//! a key bound to its lease. The others wait on the key; when the leader
//! dies its lease expires within the TTL, etcd deletes the key, and the
//! next candidate takes it.
//!
//! The leader's writes carry a fence ([`Leadership::fence`]): a compare on
//! the key's create revision, so that a leader that lost its lease without
//! knowing (paused, cut off) can write nothing after another took over.

use super::etcd::{Etcd, FleetError};
use super::keys;
use super::liveness::{KeepAlive, keep_alive};
use etcd_client::{Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use std::time::Duration;

/// `<prefix>/control/leader`.
pub fn leader_key(prefix: &str) -> String {
    format!("{}leader", keys::control(prefix))
}

/// This controller leads, until it is dropped (its lease then expires) or
/// it [`Leadership::resign`]s.
pub struct Leadership {
    /// This controller's id.
    pub id: String,
    /// The leader key's create revision: the fencing token.
    pub revision: i64,
    lease: i64,
    keeper: KeepAlive,
    etcd: Etcd,
}

/// Waits until controller `id` leads, with a lease of `ttl`.
///
/// # Errors
/// etcd's error.
pub async fn campaign(etcd: &Etcd, id: &str, ttl: Duration) -> Result<Leadership, FleetError> {
    let key = leader_key(etcd.prefix());
    let ttl_s = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
    let lease = etcd
        .retry("granting a lease", |mut c| async move {
            c.lease_grant(ttl_s, None).await
        })
        .await?
        .id();
    let keeper = keep_alive(etcd, lease, ttl)
        .await
        .map_err(|e| etcd.error("keeping the leader lease alive", e))?;
    loop {
        let take = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.as_str(),
                id,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let done = etcd
            .retry("campaigning to lead", |mut c| {
                let take = take.clone();
                async move { c.txn(take).await }
            })
            .await?;
        let revision = done.header().map_or(0, |h| h.revision());
        if done.succeeded() {
            return Ok(Leadership {
                id: id.to_string(),
                revision,
                lease,
                keeper,
                etcd: etcd.clone(),
            });
        }
        // Another leads: wait for its key to go, from the revision the
        // compare saw, so that a delete in between is not missed.
        let options = WatchOptions::new().with_start_revision(revision + 1);
        let mut stream = etcd
            .client()
            .watch(key.as_str(), Some(options))
            .await
            .map_err(|e| etcd.error("watching the leader", e))?;
        'wait: loop {
            match stream.message().await {
                Ok(Some(r)) => {
                    if r.events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete)
                        || r.compact_revision() > 0
                    {
                        break 'wait;
                    }
                }
                // The watch broke: campaign again, which reads afresh.
                Ok(None) | Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break 'wait;
                }
            }
        }
    }
}

/// The id of the controller that leads now, if any.
///
/// # Errors
/// etcd's error.
pub async fn leader(etcd: &Etcd) -> Result<Option<String>, FleetError> {
    Ok(leader_record(etcd).await?.map(|(id, _)| id))
}

/// The leading controller's id and the leader key's create revision (its
/// fencing token), if one leads.
///
/// # Errors
/// etcd's error.
pub async fn leader_record(etcd: &Etcd) -> Result<Option<(String, i64)>, FleetError> {
    let key = leader_key(etcd.prefix());
    let r = etcd
        .retry("reading the leader", |mut c| {
            let key = key.clone();
            async move { c.get(key, None).await }
        })
        .await?;
    Ok(r.kvs().first().map(|kv| {
        (
            String::from_utf8_lossy(kv.value()).into_owned(),
            kv.create_revision(),
        )
    }))
}

impl Leadership {
    /// The compare that holds only while this controller still leads: put
    /// it in every transaction the leader writes.
    pub fn fence(&self) -> Compare {
        self.fencing().compare(&self.etcd)
    }

    /// The fencing token of this leadership, to carry into writes made
    /// away from it.
    pub fn fencing(&self) -> Fence {
        Fence {
            revision: self.revision,
        }
    }

    /// Whether the lease still lives, as far as the last keep-alive knows.
    pub fn is_alive(&self) -> bool {
        self.keeper.is_alive()
    }

    /// Steps down now, so that another takes over at once.
    ///
    /// # Errors
    /// etcd's error (the lease then expires within its TTL anyway).
    pub async fn resign(self) -> Result<(), FleetError> {
        drop(self.keeper);
        let lease = self.lease;
        self.etcd
            .retry(
                "resigning",
                |mut c| async move { c.lease_revoke(lease).await },
            )
            .await
            .map(|_| ())
    }
}

/// A leadership's fencing token: the leader key's create revision. A
/// transaction that carries [`Fence::compare`] commits only while that
/// leadership lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    /// The leader key's create revision when this leadership began.
    pub revision: i64,
}

impl Fence {
    /// The compare that holds only while the leadership lasts.
    pub fn compare(self, etcd: &Etcd) -> Compare {
        Compare::create_revision(leader_key(etcd.prefix()), CompareOp::Equal, self.revision)
    }

    /// Whether etcd still names the leadership's controller leader.
    ///
    /// # Errors
    /// etcd's error.
    pub async fn holds(self, etcd: &Etcd) -> Result<bool, FleetError> {
        Ok(leader_record(etcd)
            .await?
            .is_some_and(|(_, revision)| revision == self.revision))
    }
}

/// `<prefix>/control/controllers/<id>`: a running controller, bound to its
/// lease.
pub fn controller_key(prefix: &str, id: &str) -> String {
    format!("{}controllers/{id}", keys::control(prefix))
}

/// A running controller, as it registers itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ControllerInfo {
    /// Its id.
    pub id: String,
    /// Where its API answers, as its clients would reach it.
    pub api: String,
}

/// Every running controller, by id.
///
/// # Errors
/// etcd's error.
pub async fn controllers(etcd: &Etcd) -> Result<Vec<ControllerInfo>, FleetError> {
    let dir = controller_key(etcd.prefix(), "");
    let r = etcd
        .retry("reading the controllers", |mut c| {
            let dir = dir.clone();
            async move {
                c.get(dir, Some(etcd_client::GetOptions::new().with_prefix()))
                    .await
            }
        })
        .await?;
    Ok(r.kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice(kv.value()).ok())
        .collect())
}

/// Which controller leads and where its API answers, for an error that
/// sends a client there.
///
/// # Errors
/// etcd's error.
pub async fn describe_leader(etcd: &Etcd) -> Result<String, FleetError> {
    let Some(id) = leader(etcd).await? else {
        return Ok("no controller leads yet; retry within the lease TTL".into());
    };
    let api = controllers(etcd)
        .await?
        .into_iter()
        .find(|c| c.id == id)
        .map_or_else(|| "an unknown address".to_string(), |c| c.api);
    Ok(format!(
        "controller {id} leads; send changes to its API at {api}"
    ))
}
