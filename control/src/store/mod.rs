//! The desired state in an embedded redb database: rule sets by
//! generation (see [`rules`] for how they are kept), datapath instances,
//! and an audit log of every change.
//!
//! Every change is one write transaction that also appends its audit entry,
//! so the log and the state never disagree. A generation is whole once its
//! transaction commits; redb's commit is atomic, so a crash leaves either
//! the old or the new generation. Small rule patches are committed by a
//! write-ahead [`journal`] entry instead, and a background thread puts
//! them into the database in batches (see [`committer`]). The database
//! file is locked while open: a second process (a second `dse serve`) gets
//! [`StoreError::InUse`].

mod clusters;
mod committer;
mod depot;
mod journal;
mod remediations;
mod rules;

pub use depot::Clash;
pub use rules::{CHUNK_IDS, Change};

use committer::{Committer, Journaled};
use dse_datapath::rule::RuleSet;
use journal::Entry;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Records are MessagePack with field names: 2x faster than JSON for a
/// million rules, and tolerant of the rule model's skipped fields.
///
/// Name -> [`DatapathInstance`].
const DATAPATHS: TableDefinition<&str, &[u8]> = TableDefinition::new("datapaths");
/// Sequence number -> [`AuditEntry`].
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Scalars: the current generation.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const CURRENT: &str = "current_generation";

/// The most memory redb keeps as its page cache and write buffer. Its
/// default, 1 GiB, held every page of the last few 1M-rule generations
/// (250 bytes a rule each); reads of a whole generation are sequential
/// and gain nothing from it, and a commit's pages past the write buffer
/// go to the file before the commit instead of after.
pub const CACHE_BYTES: usize = 32 << 20;

/// Past generations kept besides the current one (for diffs and rollback).
pub const KEPT_GENERATIONS: u64 = 8;

/// Patches of at most this many rules (added, replaced or removed) are
/// journaled; larger changes take a durable redb commit, whose cost they
/// dwarf anyway.
pub const JOURNALED_RULES: usize = 1024;

/// When the journaled patches go into the database: once patches stop
/// coming for a moment, and in a long burst every so many or so often.
const CHECKPOINTS: committer::Policy = committer::Policy {
    quiet: Duration::from_millis(200),
    oldest: Duration::from_secs(10),
    waiting: 16_384,
};
/// How often the checkpoint thread looks whether one is due.
const CHECKPOINT_POLL: Duration = Duration::from_millis(50);

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database open.
    #[error(
        "the store {path} is in use by another process (is another `dse serve` running?): stop it, or give this one another database"
    )]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// The database could not be opened or created.
    #[error("opening the store {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        #[source]
        source: Box<redb::Error>,
    },
    /// A read or write failed.
    #[error("store {what}: {source}")]
    Storage {
        /// What was being done.
        what: &'static str,
        /// What redb said.
        #[source]
        source: Box<redb::Error>,
    },
    /// The caller expected another generation to be current (optimistic
    /// concurrency): someone else changed the rules since it read them.
    #[error(
        "generation conflict: the change expected generation {expected}, but the store is at {current}; read the rules again and retry"
    )]
    Conflict {
        /// The generation the caller based its change on.
        expected: u64,
        /// The generation the store is at.
        current: u64,
    },
    /// The journal could not be read, written or checkpointed.
    #[error("the store's journal beside {path}: {what}: {source}")]
    Journal {
        /// The database file the journal is beside.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A stored record does not decode (the file was damaged or written by
    /// an incompatible version).
    #[error("the store's {table} record {key} does not decode: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// The record's key.
        key: String,
        /// What does not decode.
        reason: String,
    },
}

/// [`StoreError::Storage`] from any of redb's error types.
fn re<E: Into<redb::Error>>(what: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Storage {
        what,
        source: Box::new(e.into()),
    }
}

/// One committed rule set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Its number: 1 for the first rule set, then one more per change.
    pub generation: u64,
    /// The rules.
    pub rules: RuleSet,
    /// Who committed it.
    pub by: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// Which datapath runs a datapath instance's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The offloaded datapath: the XDP program on the interfaces.
    Xdp,
    /// The host's software path: the emulated datapath on the host CPU.
    Emu,
    /// The emulated datapath on in-memory ports, bound to no interface:
    /// it compiles and runs the rules but carries no traffic. For hosts
    /// at scale, and for checking that a rule set applies.
    Memory,
}

/// A datapath instance: a backend bound to interfaces, one per port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatapathInstance {
    /// Its name, unique in the store.
    pub name: String,
    /// The backend.
    pub backend: Backend,
    /// Port name -> interface name.
    pub interfaces: std::collections::BTreeMap<String, String>,
    /// The XDP object it runs, when not the built-in one (a datapath
    /// upgraded through the lifecycle manager runs its depot payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<std::path::PathBuf>,
}

/// One change, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its position in the log, from 1.
    pub seq: u64,
    /// When, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Who asked.
    pub who: String,
    /// What was asked.
    pub what: String,
    /// What came of it: `ok`, or the error.
    pub result: String,
}

/// The desired state on disk.
pub struct Store {
    db: Arc<Database>,
    committer: Arc<Committer>,
    /// Wakes the checkpoint thread; dropping it stops the thread after a
    /// last checkpoint.
    wake: Option<Sender<()>>,
    checkpointer: Option<std::thread::JoinHandle<()>>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn decode<T: for<'de> Deserialize<'de>>(
    table: &'static str,
    key: impl ToString,
    bytes: &[u8],
) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table,
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// Every record of `t` (the table `name`, keyed by name), decoded.
fn named_records<T, R>(t: &R, name: &'static str) -> Result<Vec<T>, StoreError>
where
    T: for<'de> Deserialize<'de>,
    R: ReadableTable<&'static str, &'static [u8]>,
{
    t.iter()
        .map_err(re("reading"))?
        .map(|e| {
            let (k, v) = e.map_err(re("reading"))?;
            decode(name, k.value(), v.value())
        })
        .collect()
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).expect("store records are plain data that always serialize")
}

impl Store {
    /// Opens the database at `path`, creating it (its directory and its
    /// tables) if missing.
    ///
    /// # Errors
    /// [`StoreError::InUse`] if another process has it open;
    /// [`StoreError::Open`] if it cannot be created or is not a database.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                source: Box::new(redb::Error::Io(e)),
            })?;
        }
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                    path: path.to_path_buf(),
                },
                e => StoreError::Open {
                    path: path.to_path_buf(),
                    source: Box::new(e.into()),
                },
            })?;
        let tx = db.begin_write().map_err(re("creating tables"))?;
        tx.open_table(rules::RULE_CHUNKS)
            .map_err(re("creating tables"))?;
        tx.open_table(rules::GENERATIONS)
            .map_err(re("creating tables"))?;
        tx.open_table(DATAPATHS).map_err(re("creating tables"))?;
        tx.open_table(AUDIT).map_err(re("creating tables"))?;
        tx.open_table(META).map_err(re("creating tables"))?;
        tx.open_table(clusters::CLUSTERS)
            .map_err(re("creating tables"))?;
        tx.open_table(depot::DEPOT).map_err(re("creating tables"))?;
        tx.open_table(remediations::REMEDIATIONS)
            .map_err(re("creating tables"))?;
        tx.commit().map_err(re("creating tables"))?;
        let db = Arc::new(db);
        let committer = Arc::new(Committer::open(db.clone(), path)?);
        let (wake, woken) = std::sync::mpsc::channel();
        let checkpointer = {
            let committer = committer.clone();
            std::thread::Builder::new()
                .name("dse-checkpoint".into())
                .spawn(move || checkpoints(&committer, &woken))
                .map_err(|source| StoreError::Journal {
                    path: path.to_path_buf(),
                    what: "starting the checkpoint thread",
                    source,
                })?
        };
        Ok(Store {
            db,
            committer,
            wake: Some(wake),
            checkpointer: Some(checkpointer),
        })
    }

    /// The current generation's number, 0 before the first rule set.
    ///
    /// # Errors
    /// [`StoreError::Storage`] if the database cannot be read.
    pub fn current_generation(&self) -> Result<u64, StoreError> {
        Ok(self.committer.current())
    }

    /// The current rule set, if one was ever committed.
    ///
    /// # Errors
    /// [`StoreError::Storage`] or [`StoreError::Corrupt`].
    pub fn current(&self) -> Result<Option<Generation>, StoreError> {
        match self.current_generation()? {
            0 => Ok(None),
            g => self.generation(g),
        }
    }

    /// Generation `generation`, if the store still keeps it.
    ///
    /// # Errors
    /// [`StoreError::Storage`] or [`StoreError::Corrupt`].
    pub fn generation(&self, generation: u64) -> Result<Option<Generation>, StoreError> {
        // Records just out of the window may still wait to be pruned.
        if generation + KEPT_GENERATIONS < self.current_generation()? {
            return Ok(None);
        }
        self.committer.checkpoint()?;
        let tx = self.db.begin_read().map_err(re("reading"))?;
        Ok(
            rules::read(&tx, generation)?.map(|(rules, record)| Generation {
                generation,
                rules,
                by: record.by,
                at_unix_ms: record.at_unix_ms,
            }),
        )
    }

    /// Commits `rules` as the next generation; see [`Store::commit`].
    ///
    /// # Errors
    /// As [`Store::commit`].
    pub fn commit_rules(
        &self,
        rules: &RuleSet,
        expected: Option<u64>,
        who: &str,
    ) -> Result<u64, StoreError> {
        self.commit(Change::Replace(rules), expected, who)
    }

    /// Commits `change` to the current rule set as the next generation, by
    /// `who`, and returns its number. With `expected`, the commit happens
    /// only if the current generation is still `expected`. Generations
    /// older than [`KEPT_GENERATIONS`] before the new one are dropped in
    /// the same transaction. The caller validates the rules first
    /// (compiling them); the store keeps what it is given.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] (recorded in the audit log, nothing else
    /// changes); [`StoreError::Storage`]; [`StoreError::Corrupt`] if the
    /// chunks a patch changes do not decode.
    pub fn commit(
        &self,
        change: Change<'_>,
        expected: Option<u64>,
        who: &str,
    ) -> Result<u64, StoreError> {
        let conflict = |expected, current| {
            let err = StoreError::Conflict { expected, current };
            self.audit_only(who, &change.describe(), &err.to_string())?;
            Err(err)
        };
        if let Change::Patch { upsert, remove } = change
            && upsert.len() + remove.len() <= JOURNALED_RULES
        {
            let entry = Entry {
                generation: 0,
                at_unix_ms: now_ms(),
                who: who.to_string(),
                upsert: upsert.to_vec(),
                remove: remove.to_vec(),
            };
            return match self.committer.journal(entry, expected, CHECKPOINTS)? {
                Journaled::Committed { generation, full } => {
                    if full && let Some(wake) = &self.wake {
                        let _ = wake.send(());
                    }
                    Ok(generation)
                }
                Journaled::Conflict { current } => conflict(expected.unwrap_or(0), current),
            };
        }
        let at_unix_ms = now_ms();
        let committed = self.committer.durable(|tx, current| {
            if let Some(expected) = expected.filter(|&e| e != current) {
                return Ok((Err((expected, current)), current));
            }
            let next = current + 1;
            let written = write_generation(tx, current, next, change, who, at_unix_ms)?;
            audit_generation(tx, change, next, who, at_unix_ms)?;
            committer::prune(tx, next, written)?;
            Ok((Ok(next), next))
        })?;
        committed.or_else(|(expected, current)| conflict(expected, current))
    }

    /// Records or replaces datapath instance `inst`, by `who`.
    ///
    /// # Errors
    /// [`StoreError::Storage`].
    pub fn put_datapath(&self, inst: &DatapathInstance, who: &str) -> Result<(), StoreError> {
        self.committer.durable(|tx, current| {
            tx.open_table(DATAPATHS)
                .map_err(re("writing"))?
                .insert(inst.name.as_str(), encode(inst).as_slice())
                .map_err(re("writing"))?;
            let what = format!("attach datapath {} ({:?})", inst.name, inst.backend);
            append_audit(tx, now_ms(), who, &what, "ok")?;
            Ok(((), current))
        })
    }

    /// Removes datapath instance `name`; returns whether it existed.
    ///
    /// # Errors
    /// [`StoreError::Storage`].
    pub fn remove_datapath(&self, name: &str, who: &str) -> Result<bool, StoreError> {
        self.committer.durable(|tx, current| {
            let existed = tx
                .open_table(DATAPATHS)
                .map_err(re("writing"))?
                .remove(name)
                .map_err(re("writing"))?
                .is_some();
            let result = if existed { "ok" } else { "no such datapath" };
            let what = format!("detach datapath {name}");
            append_audit(tx, now_ms(), who, &what, result)?;
            Ok((existed, current))
        })
    }

    /// Every datapath instance, by name.
    ///
    /// # Errors
    /// [`StoreError::Storage`] or [`StoreError::Corrupt`].
    pub fn datapaths(&self) -> Result<Vec<DatapathInstance>, StoreError> {
        self.read_named(DATAPATHS, "datapaths")
    }

    /// Every record of `table` (named `name`, keyed by name), in key order.
    fn read_named<T: for<'de> Deserialize<'de>>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        name: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let tx = self.db.begin_read().map_err(re("reading"))?;
        named_records(&tx.open_table(table).map_err(re("reading"))?, name)
    }

    /// Records a refused change (bad input, a failed apply), or one that
    /// changed nothing, in the audit log.
    ///
    /// # Errors
    /// [`StoreError::Storage`].
    pub fn audit_only(&self, who: &str, what: &str, result: &str) -> Result<(), StoreError> {
        self.committer.durable(|tx, current| {
            append_audit(tx, now_ms(), who, what, result)?;
            Ok(((), current))
        })
    }

    /// The audit entries after `after` (a sequence number; 0 for all), at
    /// most `limit`, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Storage`] or [`StoreError::Corrupt`].
    pub fn audit(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.committer.checkpoint()?;
        let tx = self.db.begin_read().map_err(re("reading"))?;
        let t = tx.open_table(AUDIT).map_err(re("reading"))?;
        t.range(after + 1..)
            .map_err(re("reading"))?
            .take(limit)
            .map(|e| {
                let (k, v) = e.map_err(re("reading"))?;
                decode("audit", k.value(), v.value())
            })
            .collect()
    }

    /// The newest `last` audit entries, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Storage`] or [`StoreError::Corrupt`].
    pub fn audit_last(&self, last: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.committer.checkpoint()?;
        let tx = self.db.begin_read().map_err(re("reading"))?;
        let t = tx.open_table(AUDIT).map_err(re("reading"))?;
        let mut entries = t
            .iter()
            .map_err(re("reading"))?
            .rev()
            .take(last)
            .map(|e| {
                let (k, v) = e.map_err(re("reading"))?;
                decode("audit", k.value(), v.value())
            })
            .collect::<Result<Vec<AuditEntry>, StoreError>>()?;
        entries.reverse();
        Ok(entries)
    }
}

fn append_audit(
    tx: &redb::WriteTransaction,
    at_unix_ms: u64,
    who: &str,
    what: &str,
    result: &str,
) -> Result<(), StoreError> {
    let mut t = tx.open_table(AUDIT).map_err(re("writing the audit log"))?;
    let seq = t
        .last()
        .map_err(re("writing the audit log"))?
        .map_or(0, |(k, _)| k.value())
        + 1;
    let entry = AuditEntry {
        seq,
        at_unix_ms,
        who: who.to_string(),
        what: what.to_string(),
        result: result.to_string(),
    };
    t.insert(seq, encode(&entry).as_slice())
        .map_err(re("writing the audit log"))?;
    Ok(())
}

/// The current generation as `tx` sees it.
fn current_in(tx: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let meta = tx.open_table(META).map_err(re("writing"))?;
    Ok(meta
        .get(CURRENT)
        .map_err(re("writing"))?
        .map_or(0, |v| v.value()))
}

/// The audit log's entry for `change`, committed as `generation`.
fn audit_generation(
    tx: &redb::WriteTransaction,
    change: Change<'_>,
    generation: u64,
    who: &str,
    at_unix_ms: u64,
) -> Result<(), StoreError> {
    let what = format!("{} as generation {generation}", change.describe());
    append_audit(tx, at_unix_ms, who, &what, "ok")
}

/// Writes `change` to generation `current` as generation `next` (later
/// ones between are not kept), and makes it current, in `tx`; returns how
/// many chunk versions it wrote.
fn write_generation(
    tx: &redb::WriteTransaction,
    current: u64,
    next: u64,
    change: Change<'_>,
    who: &str,
    at_unix_ms: u64,
) -> Result<usize, StoreError> {
    let written = rules::write(tx, current, next, change, who, at_unix_ms)?;
    tx.open_table(META)
        .map_err(re("writing"))?
        .insert(CURRENT, next)
        .map_err(re("writing"))?;
    Ok(written)
}

/// The checkpoint thread: checkpoints when woken (many patches wait), when
/// [`CHECKPOINTS`] says one is due, and a last time when the store is
/// dropped.
fn checkpoints(committer: &Committer, woken: &Receiver<()>) {
    // Below the daemon's other threads: a request is served before a
    // checkpoint goes on, on these two-core machines. Best effort.
    // SAFETY: plain system calls on this thread's own id.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
    loop {
        let last = match woken.recv_timeout(CHECKPOINT_POLL) {
            Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) if !committer.due(CHECKPOINTS) => continue,
            Ok(()) | Err(RecvTimeoutError::Timeout) => false,
        };
        if let Err(e) = committer.checkpoint() {
            tracing::error!("checkpointing the store: {e} (the journal keeps the patches)");
        }
        if last {
            committer.close();
            return;
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(t) = self.checkpointer.take() {
            let _ = t.join();
        }
    }
}
