//! A host's per-rule counters on a fleet, asked for when wanted: a
//! controller writes a request into the host's keys and its agent, which
//! watches them, answers beside it. Counters change with every packet and
//! a rule set may hold a million rules, so no agent reports them unasked.
//!
//! ```text
//! <prefix>/hosts/<h>/counters-request   {nonce, datapath}
//! <prefix>/hosts/<h>/counters           {nonce, counters | error}
//! ```

use super::etcd::{Etcd, FleetError};
use super::keys;
use super::watch::{Resumed, WatchEvent, watch_from};
use dse_datapath::pipeline::Count;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Datapath name -> rule id -> count.
pub type Counters = BTreeMap<String, BTreeMap<u32, Count>>;

/// The largest answer an agent writes: etcd refuses requests over 1.5 MiB.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// `<prefix>/hosts/<h>/counters-request`.
pub fn request_key(prefix: &str, host: &str) -> String {
    format!("{}counters-request", keys::host(prefix, host))
}

/// `<prefix>/hosts/<h>/counters`.
pub fn answer_key(prefix: &str, host: &str) -> String {
    format!("{}counters", keys::host(prefix, host))
}

/// A controller's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Names this request; the answer carries it.
    pub nonce: String,
    /// Only this datapath's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapath: Option<String>,
}

/// An agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The request's.
    pub nonce: String,
    /// The counters, or none with `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<Counters>,
    /// Why there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the error is that the datapath asked for does not exist.
    #[serde(default)]
    pub not_found: bool,
}

impl Answer {
    /// The answer to `request` of counters `got`, or the error if the
    /// counters do not fit in one etcd value.
    pub fn of(request: &Request, got: Result<Counters, (String, bool)>) -> Answer {
        let mut a = Answer {
            nonce: request.nonce.clone(),
            counters: None,
            error: None,
            not_found: false,
        };
        match got {
            Ok(c) => {
                let bytes = serde_json::to_vec(&c).map_or(0, |v| v.len());
                if bytes > MAX_ANSWER_BYTES {
                    a.error = Some(format!(
                        "the counters are {bytes} bytes, over the {MAX_ANSWER_BYTES} a fleet carries at once: ask for one datapath (--datapath), or read them on the host"
                    ));
                } else {
                    a.counters = Some(c);
                }
            }
            Err((e, not_found)) => {
                a.error = Some(e);
                a.not_found = not_found;
            }
        }
        a
    }
}

/// Asks `host`'s agent for its counters (only `datapath`'s, if given) and
/// waits up to `within` for the answer.
///
/// # Errors
/// [`FleetError::AgentSilent`] when the host's agent does not answer in
/// time; etcd's error.
pub async fn ask(
    etcd: &Etcd,
    host: &str,
    datapath: Option<&str>,
    within: Duration,
) -> Result<Answer, FleetError> {
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let request = Request {
        nonce: nonce.clone(),
        datapath: datapath.map(str::to_string),
    };
    let key = request_key(etcd.prefix(), host);
    let value = serde_json::to_vec(&request).expect("a request serializes");
    let put = etcd
        .retry(&format!("writing {key}"), |mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move { c.put(key, value, None).await }
        })
        .await?;
    let revision = put.header().map_or(0, |h| h.revision());
    let answer = answer_key(etcd.prefix(), host);
    let mut watch = watch_from(etcd, &answer, revision).await?;
    let waited = tokio::time::timeout(within, async {
        loop {
            if let Resumed::Events(events) = watch.next().await? {
                for e in events {
                    if let WatchEvent::Put { key, value, .. } = e
                        && key == answer
                        && let Ok(a) = serde_json::from_slice::<Answer>(&value)
                        && a.nonce == nonce
                    {
                        return Ok(a);
                    }
                }
            }
        }
    })
    .await;
    match waited {
        Ok(answered) => answered,
        Err(_) => Err(FleetError::AgentSilent {
            host: host.to_string(),
            within,
        }),
    }
}
