//! A host's per-rule counters on a fleet, asked for when wanted: a
//! controller writes a request into the host's keys and its agent, which
//! watches them, answers beside it. Counters change with every packet and
//! a rule set may hold a million rules, so no agent reports them unasked.
//!
//! ```text
//! <prefix>/hosts/<h>/counters-request   {nonce, body: {datapath}}
//! <prefix>/hosts/<h>/counters           {nonce, body: {counters | error}}
//! ```

use super::ask;
use super::etcd::{Etcd, FleetError};
use dse_datapath::pipeline::Count;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Datapath name -> rule id -> count.
pub type Counters = BTreeMap<String, BTreeMap<u32, Count>>;

/// The largest answer an agent writes: etcd refuses requests over 1.5 MiB.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The kind of request, as its keys name it.
pub const KIND: &str = "counters";

/// A controller's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Only this datapath's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapath: Option<String>,
}

/// An agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
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
    /// The answer of counters `got`, or the error if the counters do not
    /// fit in one etcd value.
    pub fn of(got: Result<Counters, (String, bool)>) -> Answer {
        let mut a = Answer {
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
    let request = Request {
        datapath: datapath.map(str::to_string),
    };
    ask::ask(etcd, host, KIND, request, within).await
}
