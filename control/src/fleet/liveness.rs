//! An agent's registration: its host's status key, bound to an etcd lease
//! that the agent keeps alive. When the agent dies the lease expires within
//! its TTL, etcd deletes the key, and the host is `unavailable`. One host
//! name has one live agent: a second claim is refused while the first's
//! lease lives.

use super::etcd::{Etcd, FleetError};
use super::keys;
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `<prefix>/hosts/<host>/status`.
pub fn status_key(prefix: &str, host: &str) -> String {
    format!("{}status", keys::host(prefix, host))
}

/// `<prefix>/hosts/<host>/report`: the host's last report, kept after its
/// lease expires.
pub fn report_key(prefix: &str, host: &str) -> String {
    format!("{}report", keys::host(prefix, host))
}

/// A live registration: its lease is kept alive until it is dropped or
/// [`Registration::release`]d. Dropping it without releasing (a crash)
/// leaves the lease to expire within its TTL.
pub struct Registration {
    /// The host.
    pub host: String,
    /// The lease the status key is bound to.
    pub lease: i64,
    keeper: KeepAlive,
    etcd: Etcd,
}

/// Registers `host` with `status` (the agent's report, JSON) under a lease
/// of `ttl`, and keeps the lease alive on the current runtime. `previous`
/// are leases this agent registered with before (its earlier runs and
/// attempts): if one of them still holds the host (the agent died and came
/// back within the TTL), it is revoked and the host taken over. `remember`
/// is given the new lease before it claims the host, so that whatever
/// happens after the claim, the agent's next attempt knows the holder as
/// its own.
///
/// # Errors
/// [`FleetError::HostClaimed`] when another live agent holds the host,
/// what `remember` returns, or etcd's error.
pub async fn register(
    etcd: &Etcd,
    host: &str,
    status: &[u8],
    ttl: Duration,
    previous: &[i64],
    remember: impl FnOnce(i64) -> Result<(), FleetError>,
) -> Result<Registration, FleetError> {
    let key = status_key(etcd.prefix(), host);
    let ttl_s = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
    let lease = etcd
        .retry("granting a lease", |mut c| async move {
            c.lease_grant(ttl_s, None).await
        })
        .await?
        .id();
    remember(lease)?;
    // Only if no live agent holds the key: it exists exactly while some
    // agent's lease lives.
    let claim = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.as_str(),
            status,
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key.as_str(), None)]);
    let mut client = etcd.client();
    let mut tries = 0;
    loop {
        // Retried while no member answers: a claim whose answer was lost
        // shows as the key held by this very lease, which is success.
        let done = etcd
            .retry(&format!("registering host {host}"), |mut c| {
                let claim = claim.clone();
                async move { c.txn(claim).await }
            })
            .await?;
        if done.succeeded() {
            break;
        }
        let holder = done.op_responses().into_iter().find_map(|r| match r {
            etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.lease()),
            _ => None,
        });
        if holder == Some(lease) {
            break;
        }
        tries += 1;
        if let Some(ours) = holder.filter(|h| tries <= 3 && previous.contains(h)) {
            // Our own earlier run's: it is gone, so its lease goes too.
            // Retried while no member answers: a revoke that did not get
            // through must not turn into "another agent holds the host".
            // A lease that expired meanwhile is no error.
            let revoked = etcd
                .retry("revoking this agent's earlier lease", |mut c| async move {
                    c.lease_revoke(ours).await
                })
                .await;
            if let Err(e @ FleetError::Unreachable { .. }) = revoked {
                let _ = client.lease_revoke(lease).await;
                return Err(e);
            }
            continue;
        }
        let _ = client.lease_revoke(lease).await;
        return Err(FleetError::HostClaimed {
            host: host.to_string(),
        });
    }
    let keeper = match keep_alive(etcd, lease, ttl).await {
        Ok(k) => k,
        Err(e) => {
            // Not kept: let the host go now rather than at the TTL.
            let _ = client.lease_revoke(lease).await;
            return Err(etcd.error(format!("keeping host {host}'s lease alive"), e));
        }
    };
    Ok(Registration {
        host: host.to_string(),
        lease,
        keeper,
        etcd: etcd.clone(),
    })
}

impl Registration {
    /// Whether the lease still lives, as far as the last keep-alive knows:
    /// false once etcd answered that it expired.
    pub fn is_alive(&self) -> bool {
        self.keeper.is_alive()
    }

    /// Resolves once etcd answers that the lease expired (the host is then
    /// unavailable until its agent registers again).
    pub async fn expired(&self) {
        self.keeper.expired().await;
    }

    /// Replaces the status the host reports, on the same lease, and the
    /// host's last report (`report_key`), which outlives the lease so that
    /// an unavailable host still shows what it last ran.
    ///
    /// # Errors
    /// etcd's error.
    pub async fn report(&self, status: &[u8]) -> Result<(), FleetError> {
        let key = status_key(self.etcd.prefix(), &self.host);
        let last = report_key(self.etcd.prefix(), &self.host);
        let txn = Txn::new().and_then([
            TxnOp::put(
                key.as_str(),
                status,
                Some(PutOptions::new().with_lease(self.lease)),
            ),
            TxnOp::put(last.as_str(), status, None),
        ]);
        self.etcd
            .retry(&format!("writing {key}"), |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
            .map(|_| ())
    }

    /// Ends the registration now: the host is `unavailable` at once.
    ///
    /// # Errors
    /// etcd's error (the lease then expires within its TTL anyway).
    pub async fn release(self) -> Result<(), FleetError> {
        drop(self.keeper);
        let lease = self.lease;
        self.etcd
            .retry("revoking a lease", |mut c| async move {
                c.lease_revoke(lease).await
            })
            .await
            .map(|_| ())
    }
}

/// Every registered host's status: the hosts absent from it are
/// `unavailable`.
///
/// # Errors
/// etcd's error.
pub async fn live_hosts(etcd: &Etcd) -> Result<BTreeMap<String, Vec<u8>>, FleetError> {
    let hosts = format!("{}/hosts/", etcd.prefix());
    let r = etcd
        .retry(&format!("reading {hosts}"), |mut c| {
            let hosts = hosts.clone();
            async move { c.get(hosts, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
    Ok(r.kvs()
        .iter()
        .filter_map(|kv| {
            let key = std::str::from_utf8(kv.key()).ok()?;
            let host = key.strip_prefix(&hosts)?.strip_suffix("/status")?;
            Some((host.to_string(), kv.value().to_vec()))
        })
        .collect())
}

/// The hosts whose agent's lease lives, by name only (a keys-only read).
///
/// # Errors
/// etcd's error.
pub async fn live_host_names(
    etcd: &Etcd,
) -> Result<std::collections::BTreeSet<String>, FleetError> {
    let hosts = format!("{}/hosts/", etcd.prefix());
    Ok(etcd
        .keys(&hosts)
        .await?
        .iter()
        .filter_map(|k| Some(k.strip_prefix(&hosts)?.strip_suffix("/status")?.to_string()))
        .collect())
}

/// A lease kept alive on the runtime: a round every third of its TTL,
/// reopening the stream when it breaks (a member died). Dropping it stops
/// the rounds, and the lease then expires within its TTL.
pub(super) struct KeepAlive {
    task: tokio::task::JoinHandle<()>,
    alive: Arc<AtomicBool>,
    expired: tokio::sync::watch::Receiver<bool>,
}

impl KeepAlive {
    /// Whether the lease still lives, as far as the last round knows:
    /// false once etcd answered that it expired.
    pub(super) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Resolves once etcd answers that the lease expired.
    pub(super) async fn expired(&self) {
        let mut expired = self.expired.clone();
        let _ = expired.wait_for(|e| *e).await;
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts keeping `lease` (of `ttl`) alive.
pub(super) async fn keep_alive(
    etcd: &Etcd,
    lease: i64,
    ttl: Duration,
) -> Result<KeepAlive, etcd_client::Error> {
    let mut client = etcd.client();
    // A member that just died may take the first attempts.
    let deadline = tokio::time::Instant::now() + etcd.timeout();
    let (mut keeper, mut answers) = loop {
        match client.lease_keep_alive(lease).await {
            Ok(opened) => break opened,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("opening a keep-alive stream: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let every = ttl / 3;
    let alive = Arc::new(AtomicBool::new(true));
    let still = Arc::clone(&alive);
    let (expire, expired) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            let answered = match keeper.keep_alive().await {
                Ok(()) => answers.message().await.ok().flatten(),
                Err(_) => None,
            };
            match answered {
                Some(r) if r.ttl() > 0 => tokio::time::sleep(every).await,
                Some(_) => {
                    // Expired: etcd deleted the keys bound to it.
                    still.store(false, Ordering::Release);
                    let _ = expire.send(true);
                    return;
                }
                None => {
                    // The stream broke: open another; the lease lives
                    // while a round lands within its TTL.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if let Ok((k, a)) = client.lease_keep_alive(lease).await {
                        (keeper, answers) = (k, a);
                    }
                }
            }
        }
    });
    Ok(KeepAlive {
        task,
        alive,
        expired,
    })
}
