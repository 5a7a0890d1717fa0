//! Per-rule counters and per-datapath statistics.
//!
//! Each worker owns its blocks and is their only writer, so it counts with a
//! relaxed load and store rather than a locked read-modify-write; readers on
//! other threads sum the blocks.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A counter written by one thread and read by any.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker calls this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Adds `n` with release ordering: a reader that sees it (with
    /// [`Counter::get_acquire`]) also sees every count made before it.
    #[inline]
    pub fn add_release(&self, n: u64) {
        self.0.store(
            self.0.load(Relaxed).wrapping_add(n),
            std::sync::atomic::Ordering::Release,
        );
    }

    /// Overwrites the value (control side, when no one counts into it).
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    /// Reads the value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    /// Reads the value with acquire ordering (pairs with [`Counter::add_release`]).
    #[inline]
    pub fn get_acquire(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Packets and bytes of one rule on one worker.
#[derive(Debug, Default)]
pub struct RuleCounter {
    /// Packets the rule classified.
    pub packets: Counter,
    /// Their bytes, as they arrived.
    pub bytes: Counter,
}

/// Packets and bytes, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Count {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

impl core::ops::AddAssign for Count {
    fn add_assign(&mut self, o: Count) {
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// A rule's `drop` action.
    Rule,
    /// No rule matched and the port's default is `drop`.
    Miss,
    /// Over a meter's rate.
    Meter,
    /// A header was cut short or invalid.
    Malformed,
    /// `decap` on a frame that is not a VXLAN/Geneve packet carrying Ethernet.
    Tunnel,
    /// `decap` on a frame that was already decapsulated once.
    Recirculation,
}

impl DropReason {
    /// The reason's name, as in [`Stats::drops`] and the serde form.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Rule => "rule",
            DropReason::Miss => "miss",
            DropReason::Meter => "meter",
            DropReason::Malformed => "malformed",
            DropReason::Tunnel => "tunnel",
            DropReason::Recirculation => "recirculation",
        }
    }

    /// Every reason, in stats order.
    pub const ALL: [DropReason; 6] = [
        DropReason::Rule,
        DropReason::Miss,
        DropReason::Meter,
        DropReason::Malformed,
        DropReason::Tunnel,
        DropReason::Recirculation,
    ];
}

/// Counters of one worker (or, summed, of a datapath).
#[derive(Debug, Default)]
pub struct StatsBlock {
    pub(crate) rx_packets: Counter,
    pub(crate) rx_bytes: Counter,
    pub(crate) output: Counter,
    pub(crate) pass: Counter,
    pub(crate) tx: Counter,
    pub(crate) drops: [Counter; 6],
    pub(crate) cache_hits: Counter,
    pub(crate) cache_misses: Counter,
}

/// Datapath statistics, as read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets sent out of a port by `output`.
    pub output: u64,
    /// Packets handed to the host stack (`pass`, or a miss on a passing port).
    pub pass: u64,
    /// Packets sent back out of their port (`tx`).
    pub tx: u64,
    /// Drops by reason.
    pub drops: std::collections::BTreeMap<String, u64>,
    /// Flow-cache hits.
    pub cache_hits: u64,
    /// Flow-cache misses.
    pub cache_misses: u64,
}

impl Stats {
    /// All drops.
    pub fn dropped(&self) -> u64 {
        self.drops.values().sum()
    }

    /// Packets whose processing has finished (every verdict). Once this
    /// reaches a number, the rule counters of those packets are visible.
    pub fn processed(&self) -> u64 {
        self.output + self.pass + self.tx + self.dropped()
    }
}

impl StatsBlock {
    /// Packets whose processing has finished (every verdict).
    pub fn processed(&self) -> u64 {
        self.output.get_acquire()
            + self.pass.get_acquire()
            + self.tx.get_acquire()
            + self.drops.iter().map(Counter::get_acquire).sum::<u64>()
    }

    /// Adds this block into `s`.
    pub fn add_to(&self, s: &mut Stats) {
        s.rx_packets += self.rx_packets.get();
        s.rx_bytes += self.rx_bytes.get();
        s.output += self.output.get();
        s.pass += self.pass.get();
        s.tx += self.tx.get();
        for (r, c) in DropReason::ALL.iter().zip(&self.drops) {
            *s.drops.entry(r.name().to_string()).or_default() += c.get();
        }
        s.cache_hits += self.cache_hits.get();
        s.cache_misses += self.cache_misses.get();
    }
}

#[cfg(test)]
mod tests {
    use super::DropReason;

    #[test]
    fn reason_names_are_the_serde_names() {
        for r in DropReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.name());
        }
    }
}
