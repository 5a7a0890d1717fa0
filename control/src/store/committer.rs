//! How changes reach the database: small patches through the [`journal`]
//! (durable once their entry is synced, about 0.2 ms), into the database
//! later, many to a transaction, by a checkpoint on a thread of its own;
//! everything else in a durable write transaction that first takes in the
//! patches still waiting.
//!
//! A patch never waits for redb: its commit is the journal entry and a
//! place in the in-memory list of waiting patches. Applying them together
//! also writes less: patches to the same chunk of rules in one checkpoint
//! share its B-tree pages and its sync.
//!
//! Order: patches are journaled and listed under one lock, with the
//! generation they make, so entries and list are in generation order. A
//! transaction applies waiting patches newer than the database's generation
//! (one already applied by a concurrent checkpoint is skipped). A journal
//! segment is deleted only once every entry in it is in a durable commit:
//! the segment is rotated out before the waiting list is read, so each of
//! its entries is on that list.

use super::journal::{self, Entry, Journal};
use super::{
    Change, KEPT_GENERATIONS, StoreError, audit_generation, current_in, re, rules, write_generation,
};
use dse_datapath::rule::Rule;
use redb::{Database, WriteTransaction};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Chunk histories a transaction prunes beyond as many as it writes: with
/// that, the history left to prune stays within about one window's writes.
const PRUNE_BUDGET: usize = 2;
/// A checkpoint, off every request's path, prunes this many chunk
/// histories per patch it applies, beyond what it writes: it works off what
/// large commits left, too.
const PRUNE_PER_PATCH: usize = 4;

/// The generation and the patches journaled but not yet in the database.
struct State {
    /// The newest generation, journaled or committed.
    current: u64,
    pending: Vec<Entry>,
    /// When the newest and the oldest waiting patch were journaled.
    newest_at: Option<Instant>,
    oldest_at: Option<Instant>,
}

/// When a checkpoint is due.
#[derive(Debug, Clone, Copy)]
pub(super) struct Policy {
    /// No patch journaled for this long: the checkpoint's writes and syncs
    /// do not slow a burst of patches down.
    pub quiet: Duration,
    /// A patch waited this long, burst or not.
    pub oldest: Duration,
    /// This many patches wait, burst or not.
    pub waiting: usize,
}

/// Commits changes; see the module's documentation.
pub(super) struct Committer {
    db: Arc<Database>,
    path: PathBuf,
    journal: Journal,
    state: Mutex<State>,
}

/// What journaling a patch came to.
pub(super) enum Journaled {
    /// It is generation `generation`; `full` when so many patches wait
    /// that a checkpoint is due now.
    Committed { generation: u64, full: bool },
    /// The expected generation was not the current one.
    Conflict { current: u64 },
}

impl Committer {
    /// Replays the journal beside `path` into `db` (entries newer than its
    /// generation, in one durable transaction), deletes it and starts a new
    /// one.
    ///
    /// # Errors
    /// [`StoreError::Journal`] for a journal that cannot be read, or whose
    /// entries skip a generation (it is not this database's);
    /// [`StoreError::Storage`].
    pub fn open(db: Arc<Database>, path: &Path) -> Result<Committer, StoreError> {
        let err = |what| journal_error(path, what);
        let segments = journal::segments(path).map_err(err("listing segments"))?;
        let mut pending = Vec::new();
        for (_, segment) in &segments {
            let (entries, torn) =
                journal::read_segment(segment).map_err(err("reading a segment"))?;
            if torn {
                tracing::warn!(
                    "{}: the entry after the last whole one is torn (a crash while it was written; it was never acknowledged)",
                    segment.display()
                );
            }
            pending.extend(entries);
        }
        let tx = db.begin_write().map_err(re("replaying the journal"))?;
        let before = current_in(&tx)?;
        let current = apply(&tx, &pending, path)?;
        tx.commit().map_err(re("replaying the journal"))?;
        if current > before {
            tracing::info!(
                "replayed {} journaled patches, to generation {current}",
                current - before
            );
        }
        let newest = segments.last().map_or(0, |(n, _)| *n);
        journal::delete_segments(path, newest).map_err(err("deleting replayed segments"))?;
        let journal = Journal::create(path, newest + 1).map_err(err("starting a segment"))?;
        Ok(Committer {
            db,
            path: path.to_path_buf(),
            journal,
            state: Mutex::new(State {
                current,
                pending: Vec::new(),
                newest_at: None,
                oldest_at: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest generation.
    pub fn current(&self) -> u64 {
        self.lock().current
    }

    /// Whether patches wait to go into the database.
    pub fn pending(&self) -> bool {
        !self.lock().pending.is_empty()
    }

    /// Whether a checkpoint is due under `policy`.
    pub fn due(&self, policy: Policy) -> bool {
        let st = self.lock();
        let since = |at: Option<Instant>| at.map_or(Duration::ZERO, |t| t.elapsed());
        !st.pending.is_empty()
            && (since(st.newest_at) >= policy.quiet
                || since(st.oldest_at) >= policy.oldest
                || st.pending.len() >= policy.waiting)
    }

    /// Journals `entry` (its generation is set here) as the next
    /// generation, if the current one is `expected` (when given).
    ///
    /// # Errors
    /// [`StoreError::Journal`] if the entry cannot be written and synced
    /// (nothing changed).
    pub fn journal(
        &self,
        mut entry: Entry,
        expected: Option<u64>,
        policy: Policy,
    ) -> Result<Journaled, StoreError> {
        let mut st = self.lock();
        if expected.is_some_and(|e| e != st.current) {
            return Ok(Journaled::Conflict {
                current: st.current,
            });
        }
        entry.generation = st.current + 1;
        self.journal
            .writer()
            .append(&entry)
            .map_err(journal_error(&self.path, "appending a patch"))?;
        st.current = entry.generation;
        st.pending.push(entry);
        let now = Instant::now();
        st.newest_at = Some(now);
        st.oldest_at.get_or_insert(now);
        Ok(Journaled::Committed {
            generation: st.current,
            full: st.pending.len() == policy.waiting,
        })
    }

    /// Runs `write` in a durable write transaction, after the waiting
    /// patches, with no patch journaled meanwhile. `write` gets the
    /// transaction and the current generation, and returns its result and
    /// the generation it leaves current.
    ///
    /// # Errors
    /// What `write` returns; [`StoreError::Storage`] if committing fails
    /// (then nothing of it, and no waiting patch, is in the database).
    pub fn durable<T>(
        &self,
        write: impl FnOnce(&WriteTransaction, u64) -> Result<(T, u64), StoreError>,
    ) -> Result<T, StoreError> {
        let mut st = self.lock();
        let rotated = if st.pending.is_empty() {
            None
        } else {
            Some(
                self.journal
                    .rotate()
                    .map_err(journal_error(&self.path, "starting a segment"))?,
            )
        };
        let tx = self.db.begin_write().map_err(re("writing"))?;
        let current = apply(&tx, &st.pending, &self.path)?;
        let (result, now) = write(&tx, current)?;
        tx.commit().map_err(re("committing"))?;
        st.pending.clear();
        st.oldest_at = None;
        st.current = now;
        drop(st);
        if let Some(old) = rotated {
            self.delete_upto(old);
        }
        Ok(result)
    }

    /// Puts the waiting patches into the database in one durable
    /// transaction, then deletes the journal segments that held them.
    /// Patches are journaled meanwhile.
    ///
    /// # Errors
    /// [`StoreError::Journal`] or [`StoreError::Storage`]: the patches
    /// stay journaled and waiting.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        if !self.pending() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let old = self
            .journal
            .rotate()
            .map_err(journal_error(&self.path, "starting a segment"))?;
        // Every entry of the rotated segments is on this list.
        let batch = self.lock().pending.clone();
        let tx = self.db.begin_write().map_err(re("checkpointing"))?;
        let applied = apply(&tx, &batch, &self.path)?;
        tx.commit().map_err(re("checkpointing"))?;
        {
            let mut st = self.lock();
            st.pending.retain(|e| e.generation > applied);
            // The oldest still waiting came after the batch was taken.
            st.oldest_at = (!st.pending.is_empty()).then_some(started);
        }
        self.delete_upto(old);
        tracing::debug!(patches = batch.len(), took = ?started.elapsed(), "checkpoint");
        Ok(())
    }

    /// Deletes the journal, as the store closes: nothing may be journaled
    /// after this. Keeps it if patches still wait (a checkpoint failed).
    pub fn close(&self) {
        if !self.pending() {
            self.delete_upto(u64::MAX);
        }
    }

    fn delete_upto(&self, segment: u64) {
        if let Err(e) = journal::delete_segments(&self.path, segment) {
            tracing::warn!(
                "deleting checkpointed journal segments: {e} (replaying them skips what the database has)"
            );
        }
    }
}

/// [`StoreError::Journal`] for the journal beside `path`, doing `what`.
fn journal_error(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Journal { path, what, source }
}

/// Applies the patches of `entries` newer than `tx`'s generation, in order,
/// then prunes; returns the generation `tx` leaves current.
///
/// Only the last [`KEPT_GENERATIONS`] generations and the one before them
/// stay readable, so the patches up to that one are folded into one write
/// of the rules they change, as that generation; each still gets its own
/// entry in the audit log. A checkpoint of a thousand one-rule patches to
/// one chunk of rules then rewrites that chunk nine times, not a thousand.
///
/// # Errors
/// [`StoreError::Journal`] if an entry skips a generation.
fn apply(tx: &WriteTransaction, entries: &[Entry], path: &Path) -> Result<u64, StoreError> {
    let current = current_in(tx)?;
    let new = &entries[entries.partition_point(|e| e.generation <= current)..];
    if let Some((i, e)) = (1..).zip(new).find(|(i, e)| e.generation != current + i) {
        return Err(journal_error(path, "applying")(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "a journal entry is generation {} where {} comes next: the journal is not this database's",
                e.generation,
                current + i
            ),
        )));
    }
    let Some(last) = new.last().map(|e| e.generation) else {
        return Ok(current);
    };
    let oldest_readable = last.saturating_sub(KEPT_GENERATIONS);
    let folded = new.partition_point(|e| e.generation <= oldest_readable);
    let mut written = 0;
    let mut at = current;
    if folded > 1 {
        let (upsert, remove) = fold(&new[..folded]);
        let change = Change::Patch {
            upsert: &upsert,
            remove: &remove,
        };
        let as_of = &new[folded - 1];
        written += write_generation(
            tx,
            at,
            as_of.generation,
            change,
            &as_of.who,
            as_of.at_unix_ms,
        )?;
        for e in &new[..folded] {
            audit_generation(tx, e.change(), e.generation, &e.who, e.at_unix_ms)?;
        }
        at = as_of.generation;
    }
    for e in &new[if folded > 1 { folded } else { 0 }..] {
        written += write_generation(tx, at, e.generation, e.change(), &e.who, e.at_unix_ms)?;
        audit_generation(tx, e.change(), e.generation, &e.who, e.at_unix_ms)?;
        at = e.generation;
    }
    prune(tx, last, written + PRUNE_PER_PATCH * new.len())?;
    Ok(last)
}

/// The patches of `entries`, in order, as one: the rules added or replaced
/// last, and the ids removed last.
fn fold(entries: &[Entry]) -> (Vec<Rule>, Vec<u32>) {
    let mut by_id: BTreeMap<u32, Option<&Rule>> = BTreeMap::new();
    for e in entries {
        for r in e.upsert.iter() {
            by_id.insert(r.id, Some(r));
        }
        for id in e.remove.iter() {
            by_id.insert(*id, None);
        }
    }
    let mut upsert = Vec::new();
    let mut remove = Vec::new();
    for (id, r) in by_id {
        match r {
            Some(r) => upsert.push(r.clone()),
            None => remove.push(id),
        }
    }
    (upsert, remove)
}

/// Prunes, in `tx`, a few more chunk histories than the `written` it
/// wrote, for generation `current` being the newest.
pub(super) fn prune(tx: &WriteTransaction, current: u64, written: usize) -> Result<(), StoreError> {
    let oldest_kept = current.saturating_sub(KEPT_GENERATIONS);
    rules::prune(tx, oldest_kept, written + PRUNE_BUDGET).map(|_| ())
}
