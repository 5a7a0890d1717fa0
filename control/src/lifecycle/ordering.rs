//! How remediation orders its hosts, in either placement: [`advance`], the
//! controller's whole decision, pure. On a fleet the leader calls it on the
//! journal in etcd with the agents' answers and liveness; on one machine
//! the engine calls it on its own journal, its hosts always live and each
//! host's run journaled in place.

use super::remediation::{HostResult, HostRun, Options, Remediation};
use super::{DesiredImage, Host};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What the controller wants of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    /// The remediation.
    pub id: u64,
    /// Which attempt at the host, from 1.
    pub attempt: u32,
    /// The host's cluster.
    pub cluster: String,
    /// The image to bring it to.
    pub image: DesiredImage,
    /// How the host's own sequence runs (`parallel` does not apply).
    pub options: Options,
}

impl Order {
    /// The tag of the agent's own remediation that carries this order out.
    pub fn tag(&self) -> String {
        format!("fleet remediation {} attempt {}", self.id, self.attempt)
    }
}

/// What an agent answers: its own run of the host, step by step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The remediation.
    pub id: u64,
    /// The attempt.
    pub attempt: u32,
    /// The host's run as its agent journals it.
    pub run: HostRun,
    /// The host as its agent's inventory has it once the run is final:
    /// the versions it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Host>,
}

/// What [`advance`] decided besides the journal.
#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// Orders to write, by host.
    pub orders: Vec<(String, Order)>,
    /// Hosts whose order is withdrawn.
    pub withdrawn: Vec<String>,
    /// Hosts whose versions go into the inventory.
    pub record: Vec<Host>,
}

/// Advances remediation `r` at `now_ms`, given each host's agent answer
/// (`acks`), which hosts' agents are live, and since when each host under
/// way has been seen unavailable (`away`, kept by the caller).
///
/// A host's result is its agent's final answer to its current attempt. A
/// host whose agent stays unavailable past `boot_timeout_ms` is tried again
/// while `retries` allow, then TIMED_OUT; the others go on. Hosts are
/// ordered in their journal order, at most `parallel` under way.
pub fn advance(
    r: &mut Remediation,
    acks: &BTreeMap<String, Ack>,
    live: &BTreeSet<String>,
    away: &mut BTreeMap<String, u64>,
    now_ms: u64,
) -> Decision {
    let mut d = Decision::default();
    let options = r.options.clone();
    for h in &mut r.hosts {
        match h.result {
            HostResult::Running => {
                let answer = acks
                    .get(&h.host)
                    .filter(|a| a.id == r.id && a.attempt == h.attempts);
                if let Some(a) = answer.filter(|a| a.run.result.is_final()) {
                    h.result = a.run.result;
                    h.message.clone_from(&a.run.message);
                    h.maintenance = false;
                    h.finished_ms = Some(a.run.finished_ms.unwrap_or(now_ms));
                    d.record.extend(a.host.clone());
                    d.withdrawn.push(h.host.clone());
                    away.remove(&h.host);
                } else if live.contains(&h.host) {
                    away.remove(&h.host);
                } else {
                    let since = *away.entry(h.host.clone()).or_insert(now_ms);
                    let gone = now_ms.saturating_sub(since);
                    if gone > options.boot_timeout_ms {
                        let why = format!(
                            "its agent was unavailable for {:.1} s (attempt {})",
                            gone as f64 / 1000.0,
                            h.attempts
                        );
                        h.finished_ms = Some(now_ms);
                        away.remove(&h.host);
                        if h.attempts <= options.retries {
                            h.result = HostResult::RetryPending;
                            h.message = Some(format!("{why}; trying again"));
                        } else {
                            h.result = HostResult::TimedOut;
                            h.message = Some(why);
                            d.withdrawn.push(h.host.clone());
                        }
                    }
                }
            }
            HostResult::RetryPending => {
                let due = h.finished_ms.unwrap_or(0) + options.retry_delay_ms;
                if now_ms >= due {
                    h.attempts += 1;
                    h.result = HostResult::Running;
                    h.finished_ms = None;
                    d.orders.push((
                        h.host.clone(),
                        order(r.id, &r.cluster, &r.image, &options, h),
                    ));
                }
            }
            _ => {}
        }
    }
    let mut running = r
        .hosts
        .iter()
        .filter(|h| h.result == HostResult::Running)
        .count();
    for h in &mut r.hosts {
        if running >= options.parallel.max(1) {
            break;
        }
        if h.result == HostResult::Pending {
            h.result = HostResult::Running;
            h.attempts = 1;
            h.started_ms = Some(now_ms);
            running += 1;
            d.orders.push((
                h.host.clone(),
                order(r.id, &r.cluster, &r.image, &options, h),
            ));
        }
    }
    if r.finished_ms.is_none() && r.hosts.iter().all(|h| h.result.is_final()) {
        r.finished_ms = Some(now_ms);
    }
    d
}

fn order(id: u64, cluster: &str, image: &DesiredImage, options: &Options, h: &HostRun) -> Order {
    Order {
        id,
        attempt: h.attempts,
        cluster: cluster.to_string(),
        image: image.clone(),
        options: options.clone(),
    }
}
