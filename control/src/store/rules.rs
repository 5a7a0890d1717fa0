//! Rule sets by generation, stored as versioned chunks of rules.
//!
//! Rules are grouped by id into chunks of [`CHUNK_IDS`] ids. A chunk holds,
//! for each of its rules in id order, the id (u32, little-endian), the
//! length of the rule's record (u32) and the record (MessagePack with field
//! names): a patch replaces records without decoding the others. A commit
//! writes a new version, keyed `(chunk, generation)`, of only the chunks
//! whose contents change (an empty version marks a chunk emptied), plus a
//! small record of the generation itself (ports, meters, who, when, which
//! chunks it wrote). Generation `g` is, per chunk, its newest version at or
//! before `g`. So adding one rule to a million writes one chunk, and
//! re-applying the same million rules writes none.
//!
//! Once a generation falls out of the kept window, the chunk versions it
//! superseded are deleted by [`prune`]: a large commit prunes as many as it
//! writes (and two more) in its own transaction, so the backlog stays
//! within about one window's writes; the store's checkpoints prune the
//! rest (what journaled patches leave) in small transactions of their own.

use super::{StoreError, decode, encode, re};
use dse_datapath::rule::{MeterDef, PortDef, Rule, RuleSet};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// `(chunk, generation)` -> the chunk's rules as of that generation
/// (MessagePack with field names; empty when the chunk was emptied).
pub(super) const RULE_CHUNKS: TableDefinition<(u32, u64), &[u8]> =
    TableDefinition::new("rule_chunks");
/// Generation -> [`GenerationRecord`].
pub(super) const GENERATIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("generations");

/// Rule ids per chunk: small enough that a one-rule change rewrites
/// little, large enough that a million rules are a few thousand records.
pub const CHUNK_IDS: u32 = 128;

fn chunk_of(id: u32) -> u32 {
    id / CHUNK_IDS
}

/// What a generation stores besides its rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct GenerationRecord {
    pub ports: Vec<PortDef>,
    pub meters: Vec<MeterDef>,
    pub by: String,
    pub at_unix_ms: u64,
    /// Chunks this generation wrote a version of, each a u32
    /// little-endian: pruning reads one at a time from the stored bytes
    /// ([`TouchedView`]) instead of decoding thousands of numbers per
    /// commit.
    #[serde(with = "serde_bytes")]
    pub touched: Vec<u8>,
}

/// Only the touched chunks of a [`GenerationRecord`], borrowed.
#[derive(Deserialize)]
struct TouchedView<'a> {
    #[serde(borrow, with = "serde_bytes")]
    touched: &'a [u8],
}

impl TouchedView<'_> {
    fn len(&self) -> usize {
        self.touched.len() / 4
    }

    fn get(&self, i: usize) -> u32 {
        let b = &self.touched[i * 4..i * 4 + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// A change to the rules.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// The whole rule set becomes this.
    Replace(&'a RuleSet),
    /// Add or replace these rules (by id) and remove those ids, keeping
    /// ports and meters.
    Patch {
        /// Rules to add or replace.
        upsert: &'a [Rule],
        /// Ids to remove.
        remove: &'a [u32],
    },
}

impl Change<'_> {
    /// A short description for the audit log.
    pub fn describe(&self) -> String {
        match self {
            Change::Replace(set) => format!("apply {} rules", set.rules.len()),
            Change::Patch { upsert, remove } => {
                format!("add {} rules, delete {}", upsert.len(), remove.len())
            }
        }
    }
}

/// The newest version at or before `generation` of every chunk, as raw
/// bytes (empty versions left out).
fn chunk_versions<T: ReadableTable<(u32, u64), &'static [u8]>>(
    t: &T,
    generation: u64,
    only: Option<&BTreeSet<u32>>,
) -> Result<BTreeMap<u32, Vec<u8>>, StoreError> {
    let mut out: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut visit = |range: redb::Range<'_, (u32, u64), &'static [u8]>| {
        for e in range {
            let (k, v) = e.map_err(re("reading rules"))?;
            let (chunk, g) = k.value();
            if g <= generation {
                let bytes = v.value();
                if bytes.is_empty() {
                    out.remove(&chunk);
                } else {
                    out.insert(chunk, bytes.to_vec());
                }
            }
        }
        Ok::<(), StoreError>(())
    };
    match only {
        None => visit(t.range::<(u32, u64)>(..).map_err(re("reading rules"))?)?,
        Some(chunks) => {
            for &c in chunks {
                visit(
                    t.range((c, 0)..=(c, generation))
                        .map_err(re("reading rules"))?,
                )?;
            }
        }
    }
    Ok(out)
}

fn corrupt(chunk: u32, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table: "rule_chunks",
        key: format!("chunk {chunk}"),
        reason: reason.into(),
    }
}

/// The (id, record) entries of a chunk's bytes.
fn entries(chunk: u32, mut bytes: &[u8]) -> Result<Vec<(u32, &[u8])>, StoreError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Some((head, rest)) = bytes.split_at_checked(8) else {
            return Err(corrupt(chunk, "a rule's header is cut short"));
        };
        let id = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) as usize;
        let Some((record, rest)) = rest.split_at_checked(len) else {
            return Err(corrupt(chunk, format!("rule {id}'s record is cut short")));
        };
        out.push((id, record));
        bytes = rest;
    }
    Ok(out)
}

/// A chunk's bytes from its (id, record) entries, in id order.
fn frame<'a>(entries: impl IntoIterator<Item = (u32, &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (id, record) in entries {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&(record.len() as u32).to_le_bytes());
        out.extend_from_slice(record);
    }
    out
}

fn decode_chunk(chunk: u32, bytes: &[u8]) -> Result<Vec<Rule>, StoreError> {
    entries(chunk, bytes)?
        .into_iter()
        .map(|(id, record)| decode("rule_chunks", format!("chunk {chunk} rule {id}"), record))
        .collect()
}

/// Decodes chunks on every CPU, in chunk (so id) order.
pub(super) fn decode_chunks(chunks: &BTreeMap<u32, Vec<u8>>) -> Result<Vec<Rule>, StoreError> {
    let items: Vec<(&u32, &Vec<u8>)> = chunks.iter().collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = items.len().div_ceil(threads).max(1);
    let parts: Vec<Result<Vec<Rule>, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    let mut rules = Vec::new();
                    for (c, bytes) in part {
                        rules.extend(decode_chunk(**c, bytes)?);
                    }
                    Ok(rules)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("decoding never panics"))
            .collect()
    });
    let mut rules = Vec::new();
    for p in parts {
        rules.extend(p?);
    }
    Ok(rules)
}

/// Encodes one chunk: each rule's header and record written straight into
/// one buffer (no buffer per rule).
fn encode_chunk(rules: &[&Rule]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rules.len() * 160);
    for r in rules {
        out.extend_from_slice(&r.id.to_le_bytes());
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        rmp_serde::encode::write_named(&mut out, r)
            .expect("store records are plain data that always serialize");
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    out
}

/// Encodes each chunk's rules on every CPU.
fn encode_chunks(chunks: BTreeMap<u32, Vec<&Rule>>) -> Vec<(u32, Vec<u8>)> {
    let items: Vec<(u32, Vec<&Rule>)> = chunks.into_iter().collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|(c, rules)| (*c, encode_chunk(rules)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("encoding never panics"))
            .collect()
    })
}

/// Reads generation `generation`'s rule set and record, if kept.
pub(super) fn read(
    tx: &redb::ReadTransaction,
    generation: u64,
) -> Result<Option<(RuleSet, GenerationRecord)>, StoreError> {
    let gens = tx.open_table(GENERATIONS).map_err(re("reading"))?;
    let Some(record) = gens.get(generation).map_err(re("reading"))? else {
        return Ok(None);
    };
    let record: GenerationRecord = decode("generations", generation, record.value())?;
    let t = tx.open_table(RULE_CHUNKS).map_err(re("reading rules"))?;
    let rules = decode_chunks(&chunk_versions(&t, generation, None)?)?;
    let set = RuleSet {
        ports: record.ports.clone(),
        meters: record.meters.clone(),
        rules,
    };
    Ok(Some((set, record)))
}

/// Chunks to write, by chunk: its bytes, or `None` for one written already
/// (listed only as touched).
type Writes = Vec<(u32, Option<Vec<u8>>)>;

/// Chunks encoded at a time by [`replace_chunks`]: what it holds is a
/// batch's bytes (about 20 kB a chunk of 128 exact rules), never a whole
/// generation's, old or new.
const REPLACE_BATCH: usize = 256;

/// Writes `set` as generation `next`'s chunks where they differ from
/// generation `current`'s, and an empty version for each chunk of
/// `current` that `set` lacks; returns each chunk it wrote (`None`: the
/// bytes are written already, only the list of touched chunks needs it).
fn replace_chunks(
    chunks: &mut redb::Table<'_, (u32, u64), &'static [u8]>,
    current: u64,
    next: u64,
    set: &RuleSet,
) -> Result<Writes, StoreError> {
    let mut by_chunk: BTreeMap<u32, Vec<&Rule>> = BTreeMap::new();
    for r in &set.rules {
        by_chunk.entry(chunk_of(r.id)).or_default().push(r);
    }
    for rules in by_chunk.values_mut() {
        rules.sort_unstable_by_key(|r| r.id);
    }
    let gone: Vec<u32> = live_chunks(chunks, current)?
        .into_iter()
        .filter(|c| !by_chunk.contains_key(c))
        .collect();
    let mut written = Vec::new();
    let mut pending = by_chunk.into_iter().peekable();
    while pending.peek().is_some() {
        let batch: BTreeMap<u32, Vec<&Rule>> = pending.by_ref().take(REPLACE_BATCH).collect();
        for (c, bytes) in encode_chunks(batch) {
            if newest(chunks, c, current)?.as_deref() != Some(bytes.as_slice()) {
                chunks
                    .insert((c, next), bytes.as_slice())
                    .map_err(re("writing rules"))?;
                written.push((c, None));
            }
        }
    }
    for c in gone {
        chunks
            .insert((c, next), [].as_slice())
            .map_err(re("writing rules"))?;
        written.push((c, None));
    }
    Ok(written)
}

/// The newest non-empty version of chunk `c` at or before `generation`.
fn newest<T: ReadableTable<(u32, u64), &'static [u8]>>(
    t: &T,
    c: u32,
    generation: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    let mut range = t
        .range((c, 0)..=(c, generation))
        .map_err(re("reading rules"))?;
    match range.next_back() {
        Some(e) => {
            let (_, v) = e.map_err(re("reading rules"))?;
            let bytes = v.value();
            Ok((!bytes.is_empty()).then(|| bytes.to_vec()))
        }
        None => Ok(None),
    }
}

/// The chunks that hold rules at generation `generation`, found without
/// copying any chunk's bytes.
fn live_chunks<T: ReadableTable<(u32, u64), &'static [u8]>>(
    t: &T,
    generation: u64,
) -> Result<BTreeSet<u32>, StoreError> {
    let mut live = BTreeSet::new();
    for e in t.range::<(u32, u64)>(..).map_err(re("reading rules"))? {
        let (k, v) = e.map_err(re("reading rules"))?;
        let (chunk, g) = k.value();
        if g <= generation {
            if v.value().is_empty() {
                live.remove(&chunk);
            } else {
                live.insert(chunk);
            }
        }
    }
    Ok(live)
}

/// Writes generation `next` as `change` applied to generation `current`;
/// returns how many chunk versions it wrote.
pub(super) fn write(
    tx: &WriteTransaction,
    current: u64,
    next: u64,
    change: Change<'_>,
    by: &str,
    at_unix_ms: u64,
) -> Result<usize, StoreError> {
    let mut gens = tx.open_table(GENERATIONS).map_err(re("writing"))?;
    let mut chunks = tx.open_table(RULE_CHUNKS).map_err(re("writing rules"))?;
    let previous: Option<GenerationRecord> = match gens.get(current).map_err(re("reading"))? {
        Some(v) => Some(decode("generations", current, v.value())?),
        None => None,
    };
    let (ports, meters, writes) = match change {
        Change::Replace(set) => {
            let written = replace_chunks(&mut chunks, current, next, set)?;
            (set.ports.clone(), set.meters.clone(), written)
        }
        Change::Patch { upsert, remove } => {
            let affected: BTreeSet<u32> = upsert
                .iter()
                .map(|r| chunk_of(r.id))
                .chain(remove.iter().map(|&id| chunk_of(id)))
                .collect();
            let old = chunk_versions(&chunks, current, Some(&affected))?;
            let upserted: BTreeMap<u32, Vec<u8>> =
                upsert.iter().map(|r| (r.id, encode(r))).collect();
            let mut writes = Vec::new();
            for &c in &affected {
                let mut records: BTreeMap<u32, &[u8]> = match old.get(&c) {
                    Some(bytes) => entries(c, bytes)?.into_iter().collect(),
                    None => BTreeMap::new(),
                };
                for (id, record) in upserted.range(c * CHUNK_IDS..=c * CHUNK_IDS + (CHUNK_IDS - 1))
                {
                    records.insert(*id, record);
                }
                for id in remove.iter().filter(|&&id| chunk_of(id) == c) {
                    records.remove(id);
                }
                let bytes = frame(records);
                if old.get(&c).map_or(!bytes.is_empty(), |o| *o != bytes) {
                    writes.push((c, Some(bytes)));
                }
            }
            let (ports, meters) = previous.map(|p| (p.ports, p.meters)).unwrap_or_default();
            (ports, meters, writes)
        }
    };
    let touched: Vec<u8> = writes.iter().flat_map(|(c, _)| c.to_le_bytes()).collect();
    for (c, bytes) in writes.iter().filter_map(|(c, b)| Some((c, b.as_ref()?))) {
        chunks
            .insert((*c, next), bytes.as_slice())
            .map_err(re("writing rules"))?;
    }
    let record = GenerationRecord {
        ports,
        meters,
        by: by.to_string(),
        at_unix_ms,
        touched,
    };
    gens.insert(next, encode(&record).as_slice())
        .map_err(re("writing"))?;
    Ok(writes.len())
}
/// The generation whose superseded chunk versions are being pruned, and
/// the position in its list of touched chunks.
const PRUNE_GENERATION: &str = "prune_generation";
const PRUNE_POSITION: &str = "prune_position";

/// Deletes chunk versions that only generations before `oldest_kept` could
/// read: for each generation `g` up to `oldest_kept`, the versions older
/// than `g`'s of the chunks `g` wrote. At most `budget` chunks per call,
/// resuming where the last call stopped; the records of generations before
/// both the window and that point go too. Returns whether any is left.
pub(super) fn prune(
    tx: &WriteTransaction,
    oldest_kept: u64,
    mut budget: usize,
) -> Result<bool, StoreError> {
    let mut gens = tx.open_table(GENERATIONS).map_err(re("pruning"))?;
    let mut chunks = tx.open_table(RULE_CHUNKS).map_err(re("pruning"))?;
    let mut meta = tx.open_table(super::META).map_err(re("pruning"))?;
    let get = |k| -> Result<u64, StoreError> {
        Ok(meta.get(k).map_err(re("pruning"))?.map_or(0, |v| v.value()))
    };
    let (mut g, mut pos) = (get(PRUNE_GENERATION)?.max(1), get(PRUNE_POSITION)? as usize);
    while g <= oldest_kept && budget > 0 {
        let record = gens.get(g).map_err(re("pruning"))?;
        let touched = match &record {
            Some(v) => rmp_serde::from_slice::<TouchedView>(v.value()).map_err(|e| {
                StoreError::Corrupt {
                    table: "generations",
                    key: g.to_string(),
                    reason: e.to_string(),
                }
            })?,
            None => TouchedView { touched: &[] },
        };
        while pos < touched.len() && budget > 0 {
            let c = touched.get(pos);
            chunks
                .retain_in((c, 0)..(c, g), |_, _| false)
                .map_err(re("pruning old rules"))?;
            let emptied = chunks
                .get((c, g))
                .map_err(re("pruning old rules"))?
                .is_some_and(|v| v.value().is_empty());
            if emptied {
                chunks.remove((c, g)).map_err(re("pruning old rules"))?;
            }
            pos += 1;
            budget -= 1;
        }
        if pos >= touched.len() {
            g += 1;
            pos = 0;
        }
    }
    meta.insert(PRUNE_GENERATION, g).map_err(re("pruning"))?;
    meta.insert(PRUNE_POSITION, pos as u64)
        .map_err(re("pruning"))?;
    gens.retain_in(..g.min(oldest_kept), |_, _| false)
        .map_err(re("pruning old generations"))?;
    Ok(g <= oldest_kept)
}
