//! The compiled tables: flat, fixed-size records that every backend executes.

use super::chunked::Chunked;
use super::subtable::Subtable;
use crate::rule::MAX_PORTS;
use std::sync::Arc;

/// Most distinct masks one rule set may use; the XDP program's mask loop has this bound.
pub const MAX_MASKS: usize = 32;

/// Rule slot meaning "no rule matched".
pub const NO_RULE: u32 = u32::MAX;

/// Most rule slots: the capacity of the per-rule counter arrays.
pub const MAX_RULES: usize = 1 << 22;

/// A rule's rank: higher wins. Priority first, then the lower id.
#[inline]
pub const fn rank(priority: u32, id: u32) -> u64 {
    ((priority as u64) << 32) | (u32::MAX - id) as u64
}

/// A rule as the datapath sees it, in a slot that stays the rule's for as
/// long as it is installed (its counters are kept by slot).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleRecord {
    /// The rule's id.
    pub id: u32,
    /// The rule's priority.
    pub priority: u32,
    /// Index of the first action in [`CompiledTables::actions`].
    pub first_action: u32,
    /// Number of actions.
    pub n_actions: u16,
    /// 1 if a rule occupies this slot.
    pub live: u16,
}

impl Default for RuleRecord {
    fn default() -> Self {
        RuleRecord::EMPTY
    }
}

impl RuleRecord {
    /// An empty slot.
    pub const EMPTY: RuleRecord = RuleRecord {
        id: 0,
        priority: 0,
        first_action: 0,
        n_actions: 0,
        live: 0,
    };

    /// This rule's rank.
    #[inline]
    pub fn rank(&self) -> u64 {
        rank(self.priority, self.id)
    }
}

const _: () = assert!(size_of::<RuleRecord>() == 16);

/// Action opcodes of [`ActionRecord::op`].
pub mod op {
    /// `data[0..6]` = MAC.
    pub const SET_ETH_SRC: u8 = 1;
    /// `data[0..6]` = MAC.
    pub const SET_ETH_DST: u8 = 2;
    /// `data[0..16]` = address in key layout; `flags & FLAG_V6`.
    pub const SET_IP_SRC: u8 = 3;
    /// As `SET_IP_SRC`.
    pub const SET_IP_DST: u8 = 4;
    /// `arg16` = port.
    pub const SET_L4_SRC: u8 = 5;
    /// `arg16` = port.
    pub const SET_L4_DST: u8 = 6;
    /// `arg16` = TCI, `arg32` = TPID.
    pub const PUSH_VLAN: u8 = 7;
    /// No arguments.
    pub const POP_VLAN: u8 = 8;
    /// See [`super::encap`].
    pub const ENCAP_VXLAN: u8 = 9;
    /// See [`super::encap`].
    pub const ENCAP_GENEVE: u8 = 10;
    /// No arguments.
    pub const DECAP: u8 = 11;
    /// `arg32` = meter index.
    pub const METER: u8 = 12;
    /// `arg16` = port index.
    pub const OUTPUT: u8 = 13;
    /// Terminal.
    pub const DROP: u8 = 14;
    /// Terminal.
    pub const PASS: u8 = 15;
    /// Terminal.
    pub const TX: u8 = 16;

    /// Whether `op` ends the action list (`output`, `drop`, `pass`, `tx`).
    #[inline]
    pub const fn is_terminal(op: u8) -> bool {
        matches!(op, OUTPUT | DROP | PASS | TX)
    }
}

/// Layout of an encap action's `data`; `arg32` = VNI, `arg16` = UDP destination port.
pub mod encap {
    use core::ops::Range;
    /// Outer Ethernet destination.
    pub const ETH_DST: Range<usize> = 0..6;
    /// Outer Ethernet source.
    pub const ETH_SRC: Range<usize> = 6..12;
    /// Outer IP source (key layout).
    pub const IP_SRC: Range<usize> = 12..28;
    /// Outer IP destination (key layout).
    pub const IP_DST: Range<usize> = 28..44;
    /// Fixed UDP source port (with `FLAG_FIXED_SRC`), big-endian.
    pub const UDP_SRC: Range<usize> = 44..46;
    /// Offset of the Geneve options in [`super::CompiledTables::options`], little-endian u32.
    pub const OPT_OFF: Range<usize> = 46..50;
    /// Length of the Geneve options, little-endian u16.
    pub const OPT_LEN: Range<usize> = 50..52;
}

/// `flags`: the address (or outer header) is IPv6.
pub const FLAG_V6: u8 = 0x01;
/// `flags`: an encap's UDP source port is fixed, not taken from the flow hash.
pub const FLAG_FIXED_SRC: u8 = 0x02;

/// One action, fixed size.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActionRecord {
    /// Opcode, one of [`op`].
    pub op: u8,
    /// Opcode-specific flags.
    pub flags: u8,
    /// Opcode-specific 16-bit argument.
    pub arg16: u16,
    /// Opcode-specific 32-bit argument.
    pub arg32: u32,
    /// Opcode-specific bytes.
    pub data: [u8; 56],
}

const _: () = assert!(size_of::<ActionRecord>() == 64);

impl Default for ActionRecord {
    fn default() -> Self {
        ActionRecord::new(0)
    }
}

impl ActionRecord {
    /// An action with only an opcode.
    pub const fn new(op: u8) -> ActionRecord {
        ActionRecord {
            op,
            flags: 0,
            arg16: 0,
            arg32: 0,
            data: [0; 56],
        }
    }
}

/// A port slot.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortRecord {
    /// 1 if the rule set defines this port.
    pub present: u8,
    /// 1 if a miss on this port drops, 0 if it passes.
    pub default_drop: u8,
}

/// A meter's configuration.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterRecord {
    /// Tokens per second.
    pub rate: u64,
    /// Bucket depth in tokens.
    pub burst: u64,
    /// 1 if tokens are bits, 0 if packets.
    pub bits: u8,
    /// Always zero.
    pub pad: [u8; 7],
}

/// What a rule set compiles to. Cloning is cheap: the large parts are
/// shared chunks, copied only where a transaction changes them.
#[derive(Debug, Clone)]
pub struct CompiledTables {
    /// Rules by slot.
    pub rules: Chunked<RuleRecord>,
    /// Action lists, shared by rules with identical lists.
    pub actions: Chunked<ActionRecord>,
    /// Geneve option bytes referenced by encap actions.
    pub options: Arc<Vec<u8>>,
    /// Tuple-space subtables, ordered by their best rule's rank, best first.
    pub subtables: Vec<Arc<Subtable>>,
    /// Port slots by index, [`MAX_PORTS`] of them.
    pub ports: Arc<Vec<PortRecord>>,
    /// Each port's name and index, in rule-set order.
    pub port_names: Arc<Vec<(String, u16)>>,
    /// Meters, in rule-set order.
    pub meters: Arc<Vec<MeterRecord>>,
    /// Meter names, parallel to `meters`.
    pub meter_names: Arc<Vec<String>>,
}

impl CompiledTables {
    /// The index of the port named `name`, if the rules have it.
    pub fn port_index(&self, name: &str) -> Option<u16> {
        self.port_names
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, i)| i)
    }

    /// Whether a miss on `port` drops.
    #[inline]
    pub fn miss_drops(&self, port: u16) -> bool {
        self.ports
            .get(usize::from(port))
            .is_some_and(|p| p.default_drop != 0)
    }

    /// The installed rules as (slot, record).
    pub fn live_rules(&self) -> impl Iterator<Item = (u32, &RuleRecord)> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.live != 0)
            .map(|(i, r)| (i as u32, r))
    }

    /// Heap bytes held by the tables.
    pub fn heap_bytes(&self) -> usize {
        self.rules.heap_bytes()
            + self.actions.heap_bytes()
            + self.options.capacity()
            + self.subtables.iter().map(|s| s.heap_bytes()).sum::<usize>()
            + self.ports.capacity() * size_of::<PortRecord>()
            + self.meters.capacity() * size_of::<MeterRecord>()
    }

    /// Number of port slots.
    pub const fn port_slots() -> usize {
        MAX_PORTS as usize
    }
}
