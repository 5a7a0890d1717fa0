//! The install journal in the maps: which desired generation runs, and the
//! counter moves that follow a flip, so that a process taking a datapath
//! over after another died at any point of an install (before the flip,
//! between the flip and the moves, during the moves) runs exactly one
//! generation with every kept rule's counts.
//!
//! An install writes its moves, then the journal (`next_flip`, the kernel
//! generation it is about to flip to), then flips. The moves run once no
//! packet can still be counting under the old generation. A move zeroes
//! the slot it reads, so running the journaled moves again after a crash
//! moves nothing twice.

use super::load::{XdpError, XdpInstance};
use super::{batch, counters};
use aya::maps::Array;
use dse_ebpf::{Journal, MoveEntry, SubKey, SubValue, maps};
use rustc_hash::FxHashMap;
use std::time::{Duration, Instant};

/// How long a program run that started before a flip can still be counting.
pub(crate) const GRACE: Duration = Duration::from_millis(20);

fn map_err(what: &'static str) -> impl FnOnce(aya::maps::MapError) -> XdpError {
    move |e| XdpError::Map {
        map: maps::JOURNAL,
        what,
        source: Box::new(e),
    }
}

impl XdpInstance {
    /// The desired generation of the tables in force: the control plane's
    /// number, given with each install (0 before the first one).
    pub fn desired(&self) -> u64 {
        let j = &self.journal;
        if j.next_flip != 0 && j.next_flip == self.generation() {
            j.next_desired
        } else {
            j.desired
        }
    }

    /// Labels the tables in force desired generation `desired`, without an
    /// install (a datapath started on rules whose number the control plane
    /// gives afterwards).
    ///
    /// # Errors
    /// [`XdpError::Map`] if the journal cannot be written.
    pub fn set_desired(&mut self, desired: u64) -> Result<(), XdpError> {
        self.settle()?;
        let journal = Journal {
            desired,
            ..Journal::default()
        };
        self.write_journal(journal)
    }

    fn write_journal(&mut self, journal: Journal) -> Result<(), XdpError> {
        Array::<_, Journal>::try_from(self.map_mut(maps::JOURNAL))
            .and_then(|mut a| a.set(0, journal, 0))
            .map_err(map_err("write"))?;
        self.journal = journal;
        Ok(())
    }

    /// Journals the install about to flip to kernel generation `flip` as
    /// desired generation `desired`, with `moves` to run after the flip.
    pub(super) fn journal_next(
        &mut self,
        flip: u32,
        desired: u64,
        moves: &[MoveEntry],
    ) -> Result<(), XdpError> {
        let idx: Vec<u32> = (0..moves.len() as u32).collect();
        self.moves
            .write(&idx, moves)
            .map_err(|source| XdpError::MapIo {
                map: maps::MOVES,
                what: "write",
                source,
            })?;
        let journal = Journal {
            desired: self.desired(),
            next_desired: desired,
            next_flip: flip,
            moves: moves.len() as u32,
        };
        self.write_journal(journal)
    }

    /// Runs the last install's counter moves if they are still due,
    /// waiting out what is left of the grace after its flip. Every counter
    /// read goes through here first.
    ///
    /// # Errors
    /// [`XdpError`] if a move run or the journal write fails.
    pub fn settle(&mut self) -> Result<(), XdpError> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        if let Some(left) = GRACE.checked_sub(p.flipped.elapsed()) {
            std::thread::sleep(left);
        }
        if let Err(e) = self.run_moves(&p.moves) {
            self.pending = Some(p);
            return Err(e);
        }
        let journal = Journal {
            moves: 0,
            ..self.journal
        };
        self.write_journal(journal)
    }

    /// Finishes what the process that last wrote these maps left undone:
    /// an install that flipped has its counter moves run; one that did
    /// not flip is forgotten (its writes went where no generation reads).
    /// Reads both banks of subtable entries, so that this instance's first
    /// installs keep the running generation's entries and empty what
    /// older ones left. Call it once, right after loading maps another
    /// process used, before installing.
    ///
    /// # Errors
    /// [`XdpError`] if a map cannot be read or written.
    pub fn recover(&mut self) -> Result<(), XdpError> {
        let j = self.journal;
        if j.next_flip != 0 && j.next_flip == self.generation() && j.moves != 0 {
            let moves = self
                .moves
                .read(0, j.moves as usize)
                .map_err(|source| XdpError::MapIo {
                    map: maps::MOVES,
                    what: "read",
                    source,
                })?;
            tracing::info!(
                moves = moves.len(),
                "finishing the counter moves of an install another process flipped"
            );
            std::thread::sleep(GRACE);
            self.run_moves(&moves)?;
        }
        let desired = self.desired();
        self.write_journal(Journal {
            desired,
            ..Journal::default()
        })?;
        if self.generation() == 0 {
            return Ok(());
        }
        let started = Instant::now();
        let entries: Vec<(SubKey, SubValue)> = batch::lookup_all(self.fd_of(maps::SUBTABLES))
            .map_err(|source| XdpError::MapIo {
                map: maps::SUBTABLES,
                what: "batch lookup",
                source,
            })?;
        let active = (self.generation() & 1) as usize;
        let mut foreign: [Vec<SubKey>; 2] = [Vec::new(), Vec::new()];
        let mut slots = FxHashMap::default();
        for (k, v) in entries {
            for (bank, held) in foreign.iter_mut().enumerate() {
                if v.slot[bank] != dse_ebpf::NO_RULE {
                    held.push(k);
                }
            }
            if v.slot[active] != dse_ebpf::NO_RULE {
                slots.insert(k, v.slot[active]);
            }
        }
        tracing::debug!(
            entries = slots.len(),
            took = ?started.elapsed(),
            "read the subtable entries left in the maps"
        );
        self.foreign = foreign;
        self.foreign_active = Some(slots);
        Ok(())
    }

    /// Moves each entry's counts on every CPU (the `dse_move` program).
    fn run_moves(&self, moves: &[MoveEntry]) -> Result<(), XdpError> {
        if moves.is_empty() {
            return Ok(());
        }
        let cpus = counters::cpus().map_err(|source| XdpError::MapIo {
            map: maps::COUNTERS,
            what: "counting CPUs",
            source,
        })?;
        for cpu in 0..cpus {
            self.run_entries(
                dse_ebpf::MOVE_PROGRAM,
                cpu,
                moves,
                dse_ebpf::MOVE_BATCH,
                "moving counters",
            )?;
        }
        Ok(())
    }
}
