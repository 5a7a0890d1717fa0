//! Watches that resume: from the revision after the last one seen, and,
//! when etcd has compacted that history away, with a clear signal to list
//! again and watch from the revision the list was read at (what Cilium and
//! the Kubernetes reflector do).

use super::etcd::{Etcd, FleetError};
use etcd_client::{EventType, WatchOptions, WatchStream};

/// One change under the watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// `key` was written.
    Put {
        /// The key.
        key: String,
        /// Its value.
        value: Vec<u8>,
        /// The revision of the write.
        revision: i64,
    },
    /// `key` was deleted (or its lease expired).
    Delete {
        /// The key.
        key: String,
        /// The revision of the delete.
        revision: i64,
    },
}

/// What a watch delivers next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// Changes, in revision order.
    Events(Vec<WatchEvent>),
    /// The history from the start revision is compacted away (etcd keeps
    /// from `compacted` on): list again, then watch from the revision after
    /// the list's.
    Compacted {
        /// The oldest revision etcd still has.
        compacted: i64,
    },
}

/// A watch on every key under a prefix.
pub struct Watch {
    stream: WatchStream,
    prefix: String,
    etcd: Etcd,
    /// The revision to resume from: one after the last delivered.
    pub next_revision: i64,
}

/// Watches every key under `prefix` from `start_revision` (inclusive).
///
/// # Errors
/// etcd's error.
pub async fn watch_from(
    etcd: &Etcd,
    prefix: &str,
    start_revision: i64,
) -> Result<Watch, FleetError> {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(start_revision);
    let stream = etcd
        .retry(&format!("watching {prefix}"), |mut c| {
            let options = options.clone();
            async move { c.watch(prefix, Some(options)).await }
        })
        .await?;
    Ok(Watch {
        stream,
        prefix: prefix.to_string(),
        etcd: etcd.clone(),
        next_revision: start_revision,
    })
}

impl Watch {
    /// The next changes, or [`Resumed::Compacted`]; waits for them.
    ///
    /// A watch whose member goes away is opened again from the next
    /// revision, through whichever member answers.
    ///
    /// # Errors
    /// etcd's error when no member answers within the request timeout, or
    /// etcd cancelling the watch.
    pub async fn next(&mut self) -> Result<Resumed, FleetError> {
        loop {
            let r = match self.stream.message().await {
                Ok(Some(r)) => r,
                // The member went away: the watch goes on from the next
                // revision through another (it fails only when none
                // answers within the request timeout).
                Ok(None) | Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    let again = watch_from(&self.etcd, &self.prefix, self.next_revision).await?;
                    self.stream = again.stream;
                    continue;
                }
            };
            if r.compact_revision() > 0 {
                return Ok(Resumed::Compacted {
                    compacted: r.compact_revision(),
                });
            }
            if r.canceled() {
                return Err(FleetError::Damaged {
                    what: format!("the watch on {}", self.prefix),
                    reason: format!("etcd cancelled it: {}", r.cancel_reason()),
                });
            }
            let events: Vec<WatchEvent> = r
                .events()
                .iter()
                .filter_map(|e| {
                    let kv = e.kv()?;
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let revision = kv.mod_revision();
                    Some(match e.event_type() {
                        EventType::Put => WatchEvent::Put {
                            key,
                            value: kv.value().to_vec(),
                            revision,
                        },
                        EventType::Delete => WatchEvent::Delete { key, revision },
                    })
                })
                .collect();
            if let Some(last) = events.last() {
                let (WatchEvent::Put { revision, .. } | WatchEvent::Delete { revision, .. }) = last;
                self.next_revision = revision + 1;
                return Ok(Resumed::Events(events));
            }
        }
    }
}
