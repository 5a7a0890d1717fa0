//! Rule counters in either program version's layout.

use super::batch;
use crate::pipeline::Count;
use aya::maps::{Map, PerCpuArray};
use std::os::fd::{AsFd, BorrowedFd};

/// A per-CPU rule-counter value of one program version.
pub(crate) trait Layout: Sync + aya::Pod + Default {
    fn count(&self) -> Count;
    fn from_count(c: Count) -> Self;
}

impl Layout for dse_ebpf::RuleCounter {
    fn count(&self) -> Count {
        Count {
            packets: self.packets,
            bytes: self.bytes,
        }
    }
    fn from_count(c: Count) -> Self {
        dse_ebpf::RuleCounter {
            packets: c.packets,
            bytes: c.bytes,
        }
    }
}

impl Layout for dse_ebpf::RuleCounterV2 {
    fn count(&self) -> Count {
        Count {
            packets: self.packets,
            bytes: self.bytes,
        }
    }
    fn from_count(c: Count) -> Self {
        dse_ebpf::RuleCounterV2 {
            packets: c.packets,
            bytes: c.bytes,
            last_seen_ns: 0,
        }
    }
}

/// The counts of `slots`, per CPU, from a counters map of `version`.
/// Many slots are read with batch lookups over the range they span.
pub(crate) fn read(
    map: &Map,
    version: u32,
    slots: &[u32],
) -> Result<Vec<Vec<Count>>, aya::maps::MapError> {
    fn go<L: Layout>(map: &Map, slots: &[u32]) -> Result<Vec<Vec<Count>>, aya::maps::MapError> {
        let (Some(lo), Some(hi)) = (slots.iter().min(), slots.iter().max()) else {
            return Ok(Vec::new());
        };
        let span = (hi - lo) as usize + 1;
        if slots.len() >= 64 && span <= 4 * slots.len() {
            let fd = match map {
                Map::PerCpuArray(m) => m.fd().as_fd(),
                _ => unreachable!("the counters map is a per-CPU array"),
            };
            let cpus = cpus().map_err(|e| {
                aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "nr_cpus",
                    io_error: e,
                })
            })?;
            let values: Vec<L> = batch::lookup_range(fd, *lo, span, cpus).map_err(|e| {
                aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_lookup_batch",
                    io_error: e,
                })
            })?;
            return Ok(slots
                .iter()
                .map(|s| {
                    let at = (s - lo) as usize * cpus;
                    values[at..at + cpus].iter().map(L::count).collect()
                })
                .collect());
        }
        let a = PerCpuArray::<_, L>::try_from(map)?;
        slots
            .iter()
            .map(|s| Ok(a.get(s, 0)?.iter().map(L::count).collect()))
            .collect()
    }
    match version {
        1 => go::<dse_ebpf::RuleCounter>(map, slots),
        _ => go::<dse_ebpf::RuleCounterV2>(map, slots),
    }
}

/// The counts of `slots` summed over slots and CPUs, from a counters map
/// of `version`: one batch read over the range they span, nothing
/// allocated per slot.
pub(crate) fn total(map: &Map, version: u32, slots: &[u32]) -> Result<Count, aya::maps::MapError> {
    fn go<L: Layout>(map: &Map, version: u32, slots: &[u32]) -> Result<Count, aya::maps::MapError> {
        let (Some(lo), Some(hi)) = (slots.iter().min(), slots.iter().max()) else {
            return Ok(Count::default());
        };
        let span = (hi - lo) as usize + 1;
        let Map::PerCpuArray(m) = map else {
            unreachable!("the counters map is a per-CPU array")
        };
        if slots.len() < 64 || span > 4 * slots.len() {
            let per_slot = read(map, version, slots)?;
            return Ok(per_slot
                .iter()
                .flatten()
                .fold(Count::default(), |t, c| Count {
                    packets: t.packets + c.packets,
                    bytes: t.bytes + c.bytes,
                }));
        }
        let syscall = |call, io_error| {
            aya::maps::MapError::SyscallError(aya::sys::SyscallError { call, io_error })
        };
        let cpus = cpus().map_err(|e| syscall("nr_cpus", e))?;
        let values: Vec<L> = batch::lookup_range(m.fd().as_fd(), *lo, span, cpus)
            .map_err(|e| syscall("bpf_map_lookup_batch", e))?;
        let mut t = Count::default();
        for s in slots {
            let at = (s - lo) as usize * cpus;
            for v in &values[at..at + cpus] {
                let c = v.count();
                t.packets += c.packets;
                t.bytes += c.bytes;
            }
        }
        Ok(t)
    }
    match version {
        1 => go::<dse_ebpf::RuleCounter>(map, version, slots),
        _ => go::<dse_ebpf::RuleCounterV2>(map, version, slots),
    }
}

/// Writes per-CPU counts (`per_cpu[i]` for `slots[i]`, `cpus` each) into a
/// counters map of `version`.
pub(crate) fn write(
    fd: BorrowedFd<'_>,
    version: u32,
    slots: &[u32],
    per_cpu: &[Vec<Count>],
    cpus: usize,
) -> std::io::Result<()> {
    fn go<L: Layout>(
        fd: BorrowedFd<'_>,
        slots: &[u32],
        per_cpu: &[Vec<Count>],
        cpus: usize,
    ) -> std::io::Result<()> {
        let mut values = vec![L::default(); slots.len() * cpus];
        for (i, counts) in per_cpu.iter().enumerate() {
            for (c, n) in counts.iter().take(cpus).enumerate() {
                values[i * cpus + c] = L::from_count(*n);
            }
        }
        batch::update(fd, slots, &values, cpus)
    }
    match version {
        1 => go::<dse_ebpf::RuleCounter>(fd, slots, per_cpu, cpus),
        _ => go::<dse_ebpf::RuleCounterV2>(fd, slots, per_cpu, cpus),
    }
}

/// The number of possible CPUs (the length of per-CPU values), read from
/// sysfs once: it cannot change while the system runs.
pub(crate) fn cpus() -> std::io::Result<usize> {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if let Some(n) = CPUS.get() {
        return Ok(*n);
    }
    let n = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    Ok(*CPUS.get_or_init(|| n))
}
