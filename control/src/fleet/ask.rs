//! Asking one host's agent for something when wanted: a controller writes
//! a request into the host's keys and the agent, which watches them,
//! answers beside it. The answer names the request it answers (its nonce),
//! so a late answer to an earlier request is never taken for this one.
//! A request lives under a lease of its asker's wait: when the asker stops
//! waiting, answered or not, the request goes, so an agent answers every
//! request it finds unanswered (one put while it was not watching too)
//! and never one that nobody waits for.
//!
//! ```text
//! <prefix>/hosts/<h>/<kind>-request   {nonce, body}
//! <prefix>/hosts/<h>/<kind>           {nonce, body}
//! ```

use super::etcd::{Etcd, FleetError};
use super::keys;
use super::watch::{Resumed, WatchEvent, watch_from};
use etcd_client::{GetOptions, PutOptions};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A request or an answer as its key holds it: the nonce that pairs them,
/// and what it asks or answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nonced<T> {
    /// Names a request; its answer carries it.
    pub nonce: String,
    /// What is asked or answered.
    pub body: T,
}

/// `<prefix>/hosts/<h>/<kind>-request`.
pub fn request_key(prefix: &str, host: &str, kind: &str) -> String {
    format!("{}{kind}-request", keys::host(prefix, host))
}

/// `<prefix>/hosts/<h>/<kind>`.
pub fn answer_key(prefix: &str, host: &str, kind: &str) -> String {
    format!("{}{kind}", keys::host(prefix, host))
}

/// A fresh nonce: this process and the time.
fn nonce() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

/// Asks `host`'s agent `request` of `kind` under a fresh nonce, and waits
/// up to `within` for its answer.
///
/// # Errors
/// [`FleetError::AgentSilent`] when the host's agent does not answer in
/// time; etcd's error.
pub async fn ask<Q: Serialize, A: DeserializeOwned>(
    etcd: &Etcd,
    host: &str,
    kind: &str,
    request: Q,
    within: Duration,
) -> Result<A, FleetError> {
    let nonce = nonce();
    let request = Nonced {
        nonce: nonce.clone(),
        body: request,
    };
    let ttl_s = i64::try_from(within.as_secs() + 1).unwrap_or(i64::MAX);
    let lease = etcd
        .retry("granting a request's lease", |mut c| async move {
            c.lease_grant(ttl_s, None).await
        })
        .await?
        .id();
    let key = request_key(etcd.prefix(), host, kind);
    let value = serde_json::to_vec(&request).expect("a request serializes");
    let asked = async {
        let put = etcd
            .retry(&format!("writing {key}"), |mut c| {
                let (key, value) = (key.clone(), value.clone());
                async move {
                    c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                        .await
                }
            })
            .await?;
        let revision = put.header().map_or(0, |h| h.revision());
        let answer = answer_key(etcd.prefix(), host, kind);
        let mut watch = watch_from(etcd, &answer, revision).await?;
        loop {
            if let Resumed::Events(events) = watch.next().await? {
                for e in events {
                    if let WatchEvent::Put { key, value, .. } = e
                        && key == answer
                        && let Ok(a) = serde_json::from_slice::<Nonced<A>>(&value)
                        && a.nonce == nonce
                    {
                        return Ok(a.body);
                    }
                }
            }
        }
    };
    let waited = tokio::time::timeout(within, asked).await;
    // The request goes now, answered or not; if this fails, its lease
    // takes it a second after the wait.
    if let Err(e) = etcd.client().lease_revoke(lease).await {
        tracing::debug!("revoking the lease of {key}: {e}");
    }
    match waited {
        Ok(answered) => answered,
        Err(_) => Err(FleetError::AgentSilent {
            host: host.to_string(),
            within,
        }),
    }
}

/// The request of `kind` in `host`'s keys that its answer does not yet
/// answer, if there is one that reads.
///
/// # Errors
/// etcd's.
pub async fn pending<Q: DeserializeOwned>(
    etcd: &Etcd,
    host: &str,
    kind: &str,
) -> Result<Option<Nonced<Q>>, FleetError> {
    // The answer's key is a prefix of the request's: one read has both.
    let answer = answer_key(etcd.prefix(), host, kind);
    let request = request_key(etcd.prefix(), host, kind);
    let r = etcd
        .retry(&format!("reading {answer}"), |mut c| {
            let answer = answer.clone();
            async move { c.get(answer, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
    let value = |key: &str| {
        r.kvs()
            .iter()
            .find(|kv| kv.key() == key.as_bytes())
            .map(etcd_client::KeyValue::value)
    };
    let Some(asked) = value(&request).and_then(|v| serde_json::from_slice::<Nonced<Q>>(v).ok())
    else {
        return Ok(None);
    };
    let answered = value(&answer)
        .and_then(|v| serde_json::from_slice::<Nonced<serde::de::IgnoredAny>>(v).ok())
        .is_some_and(|a| a.nonce == asked.nonce);
    Ok((!answered).then_some(asked))
}

/// Writes `answer` of `kind` to the request named `nonce` into `host`'s
/// keys.
///
/// # Errors
/// etcd's.
pub async fn answer<A: Serialize>(
    etcd: &Etcd,
    host: &str,
    kind: &str,
    nonce: String,
    answer: A,
) -> Result<(), FleetError> {
    let key = answer_key(etcd.prefix(), host, kind);
    let value = serde_json::to_vec(&Nonced {
        nonce,
        body: answer,
    })
    .expect("an answer serializes");
    etcd.put(&key, value).await.map(|_| ())
}
