//! The dse XDP datapath as a compiled BPF object, and `#[repr(C)]` mirrors
//! of every record it shares with userspace.
//!
//! The object is `dse.bpf.o`, built from `src/dse.bpf.c` and the headers in
//! `include/dse/` by `make -C ebpf` and committed, so that building this
//! crate needs no clang. Each mirror asserts the same sizes and offsets that
//! `include/dse/structs.h` asserts with `_Static_assert`, so the two sides
//! cannot drift apart silently.

#![cfg_attr(not(feature = "aya"), no_std)]

/// Bytes aligned for an ELF parser.
#[repr(C, align(32))]
pub struct Aligned<B: ?Sized>(pub B);

/// Asserts a record's size and its fields' offsets at compile time.
macro_rules! layout {
    ($t:ty, $size:expr $(, $field:ident == $off:expr)*) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        $(const _: () = assert!(core::mem::offset_of!($t, $field) == $off);)*
    };
}

static OBJECT_ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!("../dse.bpf.o"));

static OBJECT_V2_ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!("../dse_v2.bpf.o"));

/// The compiled XDP datapath object, version 1 (ELF, BTF, no DWARF).
pub fn object() -> &'static [u8] {
    &OBJECT_ALIGNED.0
}

static BASELINE_ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!("../baseline.bpf.o"));

/// The benchmarks' floor (`src/baseline.bpf.c`): program `baseline_xdp`
/// parses Ethernet/IPv4/UDP and looks the 5-tuple up in one hash map
/// (`baseline_flows`, key [`BaselineKey`], value an XDP action).
pub fn baseline_object() -> &'static [u8] {
    &BASELINE_ALIGNED.0
}

static TRAFGEN_ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!("../trafgen.bpf.o"));

/// `dse bench`'s traffic generator and sink (`src/trafgen.bpf.c`):
/// [`GEN_PROGRAM`] writes a UDP frame per [`GenConfig`] (map `gen_config`)
/// and returns `XDP_TX`, for BPF_PROG_TEST_RUN with live frames;
/// [`SINK_PROGRAM`] counts the datagrams to the port in map `sink_port`
/// into `sink_counts` (packets, bytes; per CPU) and drops every frame.
pub fn trafgen_object() -> &'static [u8] {
    &TRAFGEN_ALIGNED.0
}

static HOSTPATH_ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!("../hostpath.bpf.o"));

/// The host path's AF_XDP programs (`src/hostpath.bpf.c`):
/// [`XSK_PROGRAM`] redirects each frame into the socket of its receive
/// queue in map [`XSK_MAP`]; [`PASS_PROGRAM`] hands a frame to the kernel
/// stack, run with live frames.
pub fn hostpath_object() -> &'static [u8] {
    &HOSTPATH_ALIGNED.0
}

/// The redirect program in [`hostpath_object`].
pub const XSK_PROGRAM: &str = "dse_xsk";

/// The hand-over program in [`hostpath_object`].
pub const PASS_PROGRAM: &str = "dse_pass";

/// The XSKMAP in [`hostpath_object`]: an interface's base in
/// [`XSK_BASES`] plus a receive queue -> AF_XDP socket.
pub const XSK_MAP: &str = "dse_xsks";

/// The hash in [`hostpath_object`]: ifindex -> the interface's first
/// entry in [`XSK_MAP`].
pub const XSK_BASES: &str = "dse_xsk_bases";

/// Interfaces a host path can take frames from.
pub const XSK_IFACES: u32 = 64;

/// Receive queues per interface a host path can take frames from.
pub const XSK_QUEUES: u32 = 64;

static LIMIT_ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!("../limit.bpf.o"));

/// `dse bench`'s limit (`src/limit.bpf.c`): [`LIMIT_PROGRAM`] parses
/// nothing and redirects every frame to the interface at entry 0 of the
/// devmap [`LIMIT_PORT`].
pub fn limit_object() -> &'static [u8] {
    &LIMIT_ALIGNED.0
}

/// The program in [`limit_object`].
pub const LIMIT_PROGRAM: &str = "dse_limit";

/// The devmap in [`limit_object`]: entry 0, the egress interface.
pub const LIMIT_PORT: &str = "limit_port";

/// The generator program in [`trafgen_object`].
pub const GEN_PROGRAM: &str = "dse_gen";

/// The sink program in [`trafgen_object`].
pub const SINK_PROGRAM: &str = "dse_sink";

/// The frame length the generator needs handed in for IMIX: it trims each
/// frame to its size from there.
pub const IMIX_FRAME: usize = 1514;

/// The generator's configuration (`struct gen_config`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenConfig {
    /// Destination MAC of every frame.
    pub dst_mac: [u8; 6],
    /// Source MAC of every frame.
    pub src_mac: [u8; 6],
    /// IPv4 source, network order.
    pub src_ip: [u8; 4],
    /// IPv4 destination, network order.
    pub dst_ip: [u8; 4],
    /// The first flow's UDP source port; flow `i` uses `sport_base + i`.
    pub sport_base: u16,
    /// UDP destination port.
    pub dport: u16,
    /// Flows (distinct source ports), at least 1.
    pub flows: u32,
    /// 0: every frame as long as handed in; 1: simple IMIX (7:4:1 of 64,
    /// 594 and 1518 bytes on the wire), from a frame of [`IMIX_FRAME`].
    pub imix: u32,
    /// 0: every run sends a frame; otherwise the window, nanoseconds from
    /// the first run, after which every run drops its frame.
    pub window_ns: u64,
    /// Within a window, 0: every run sends; otherwise one frame is sent
    /// each interval (nanoseconds) and the runs between drop theirs.
    pub interval_ns: u64,
}
layout!(
    GenConfig,
    48,
    flows == 24,
    window_ns == 32,
    interval_ns == 40
);

/// The generator's per-CPU state (`struct gen_state`, map `gen_state`):
/// zero it before each timed offer.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenState {
    /// CLOCK_MONOTONIC nanoseconds when the window opened; 0: not yet.
    pub start_ns: u64,
    /// When the next paced frame is due.
    pub next_ns: u64,
    /// Frames sent (returned XDP_TX).
    pub sent: u64,
}
layout!(GenState, 24, next_ns == 8, sent == 16);

/// The key of `baseline_flows`: addresses and ports as on the wire.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct BaselineKey {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub proto: u32,
}
const _: () = assert!(core::mem::size_of::<BaselineKey>() == 16);

/// Version 2 of the object: the same program with a last-seen time in
/// each rule counter ([`RuleCounterV2`]), a changed map value layout that
/// an upgrade from version 1 migrates.
pub fn object_v2() -> &'static [u8] {
    &OBJECT_V2_ALIGNED.0
}

/// Name of the XDP datapath program in [`object`].
pub const PROGRAM: &str = "dse_xdp";

/// Name of the counter-merge program (see `dse_merge` in the C source).
pub const MERGE_PROGRAM: &str = "dse_merge";

/// Name of the counter-sum program (see `dse_sum` in the C source).
pub const SUM_PROGRAM: &str = "dse_sum";

/// Name of the counter-move program (see `dse_move` in the C source).
pub const MOVE_PROGRAM: &str = "dse_move";

/// Entries per `dse_move` run.
pub const MOVE_BATCH: usize = 256;

/// Slots per `dse_sum` run.
pub const SUM_BATCH: usize = 512;

/// Entries per `dse_merge` run.
pub const MERGE_BATCH: usize = 128;

/// One entry of a `dse_merge` frame.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MergeEntry {
    pub slot: u32,
    pub pad: u32,
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<MergeEntry>() == 24);

/// Build-time limits of the object (`include/dse/consts.h`).
pub mod limits {
    /// Masks per bank: the bound of the tuple-space loop.
    pub const MAX_MASKS: u32 = 32;
    /// Rule slots (records and counters).
    pub const MAX_RULES: u32 = 1 << 21;
    /// Action records.
    pub const MAX_ACTION_RECORDS: u32 = 1 << 20;
    /// Actions per rule.
    pub const MAX_ACTIONS: u32 = 16;
    /// Port slots.
    pub const MAX_PORTS: u32 = 64;
    /// Meters.
    pub const MAX_METERS: u32 = 1024;
    /// Interface indices below this can be ports.
    pub const MAX_IFINDEX: u32 = 1 << 16;
    /// Flow-cache entries (per CPU).
    pub const CACHE_ENTRIES: u32 = 1 << 18;
    /// Bytes of the Geneve option pool.
    pub const OPTIONS_BYTES: usize = 4096;
}

/// Map names, as pinned under an instance's bpffs directory.
pub mod maps {
    /// [`super::State`], one entry.
    pub const STATE: &str = "dse_state";
    /// [`super::MaskRecord`] by bank and order.
    pub const MASKS: &str = "dse_masks";
    /// [`super::SubKey`] -> [`super::SubValue`].
    pub const SUBTABLES: &str = "dse_subtables";
    /// [`super::RuleRecord`] by slot.
    pub const RULES: &str = "dse_rules";
    /// [`super::ActionRecord`] by index.
    pub const ACTIONS: &str = "dse_actions";
    /// [`super::OptionPool`], one entry.
    pub const OPTIONS: &str = "dse_options";
    /// [`super::PortRecord`] by port index.
    pub const PORTS: &str = "dse_ports";
    /// Interface index -> port index + 1 (0: not a port), an array.
    pub const IFPORTS: &str = "dse_ifports";
    /// Devmap: port index -> egress interface.
    pub const TX_PORTS: &str = "dse_tx_ports";
    /// [`super::MeterRecord`] by meter index.
    pub const METER_CFG: &str = "dse_meter_cfg";
    /// [`super::MeterState`] by meter index.
    pub const METERS: &str = "dse_meters";
    /// Flow key -> [`super::CacheValue`], LRU, per CPU.
    pub const CACHE: &str = "dse_cache";
    /// [`super::RuleCounter`] by slot, per CPU.
    pub const COUNTERS: &str = "dse_counters";
    /// [`super::Stats`], per CPU.
    pub const STATS: &str = "dse_stats";
    /// [`super::Last`], per CPU.
    pub const LAST: &str = "dse_last";
    /// [`super::Journal`], one entry.
    pub const JOURNAL: &str = "dse_journal";
    /// [`super::MoveEntry`] by index: the journaled install's moves.
    pub const MOVES: &str = "dse_moves";
    /// Every map, in load order.
    pub const ALL: [&str; 17] = [
        STATE, JOURNAL, MOVES, MASKS, SUBTABLES, RULES, ACTIONS, OPTIONS, PORTS, IFPORTS, TX_PORTS,
        METER_CFG, METERS, CACHE, COUNTERS, STATS, LAST,
    ];
}

/// Rule slot meaning "no rule".
pub const NO_RULE: u32 = u32::MAX;

/// Verdict kinds of [`Last::kind`].
pub mod verdict {
    /// Redirected to [`super::Last::port`].
    pub const OUTPUT: u32 = 1;
    /// To the host stack.
    pub const PASS: u32 = 2;
    /// Back out of the ingress interface.
    pub const TX: u32 = 3;
    /// Dropped for [`super::Last::reason`].
    pub const DROP: u32 = 4;
}

/// `struct flow_key`: every field a rule matches, host order.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub struct FlowKey {
    pub ip_src: [u8; 16],
    pub ip_dst: [u8; 16],
    pub eth_src: [u8; 6],
    pub in_port: u16,
    pub eth_dst: [u8; 6],
    pub vlan: u16,
    pub eth_type: u16,
    pub ip_proto: u8,
    pub flags: u8,
    pub l4_src: u16,
    pub l4_dst: u16,
    pub tun_id: u32,
    pub tcp_flags: u8,
    pub pad: [u8; 3],
}
layout!(
    FlowKey,
    64,
    in_port == 38,
    vlan == 46,
    l4_src == 52,
    tun_id == 56,
    tcp_flags == 60
);

/// `struct rule_record`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct RuleRecord {
    pub id: u32,
    pub priority: u32,
    pub first_action: u32,
    pub n_actions: u16,
    pub live: u16,
}
layout!(RuleRecord, 16, first_action == 8, live == 14);

/// `struct action_record`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ActionRecord {
    pub op: u8,
    pub flags: u8,
    pub arg16: u16,
    pub arg32: u32,
    pub data: [u8; 56],
}
layout!(ActionRecord, 64, arg16 == 2, arg32 == 4, data == 8);

/// `struct port_record`: a port slot and the interface it sends to.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct PortRecord {
    pub present: u8,
    pub default_drop: u8,
    pub pad: u16,
    pub ifindex: u32,
}
layout!(PortRecord, 8, ifindex == 4);

/// `struct meter_record`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MeterRecord {
    pub rate: u64,
    pub burst: u64,
    pub bits: u8,
    pub pad: [u8; 7],
}
layout!(MeterRecord, 24, burst == 8, bits == 16);

/// `struct meter_state`: a bucket (the first word is the program's spin lock).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MeterState {
    pub lock: u32,
    pub pad: u32,
    pub nano_tokens: u64,
    pub last_ns: u64,
}
layout!(MeterState, 24, nano_tokens == 8, last_ns == 16);

/// `struct mask_record`: one mask of a bank's list, best first.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MaskRecord {
    pub mask: FlowKey,
    pub best_rank: u64,
    pub mask_id: u32,
    pub live: u32,
}
layout!(MaskRecord, 80, best_rank == 64, mask_id == 72, live == 76);

/// `struct sub_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub struct SubKey {
    pub mask_id: u32,
    pub pad: u32,
    pub key: FlowKey,
}
layout!(SubKey, 72, key == 8);

/// `struct sub_value`: the slot in each bank.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct SubValue {
    pub slot: [u32; 2],
}
layout!(SubValue, 8);

/// `struct cache_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct CacheValue {
    pub generation: u32,
    pub slot: u32,
    pub first_action: u32,
    pub n_actions: u8,
    pub terminal_op: u8,
    pub terminal_port: u16,
}
layout!(
    CacheValue,
    16,
    first_action == 8,
    terminal_op == 13,
    terminal_port == 14
);

/// `struct cache_entry`: a flow cache entry, the full key and its answer.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct CacheEntry {
    pub key: FlowKey,
    pub value: CacheValue,
}
layout!(CacheEntry, 80, value == 64);

/// `struct rule_counter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct RuleCounter {
    pub packets: u64,
    pub bytes: u64,
}
layout!(RuleCounter, 16);

/// `struct rule_counter` of version 2.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct RuleCounterV2 {
    pub packets: u64,
    pub bytes: u64,
    pub last_seen_ns: u64,
}
layout!(RuleCounterV2, 24, last_seen_ns == 16);

/// `struct dse_stats`; `drops` by dse-datapath's `DropReason` order.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Stats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub output: u64,
    pub pass: u64,
    pub tx: u64,
    pub drops: [u64; 6],
    pub cache_hits: u64,
    pub cache_misses: u64,
}
layout!(Stats, 104, drops == 40, cache_hits == 88);

/// `struct dse_state`: the active generation (its low bit is the bank)
/// and the half of the rule slots its records are in.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct State {
    pub generation: u32,
    pub half: u32,
}
layout!(State, 8);

/// `struct dse_journal`: the desired generation of the tables in force,
/// and an install whose flip to `next_flip` may have happened, with
/// `moves` counter moves in [`maps::MOVES`] to run once it has.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Journal {
    pub desired: u64,
    pub next_desired: u64,
    pub next_flip: u32,
    pub moves: u32,
}
layout!(Journal, 24, next_flip == 16);

/// `struct move_entry`: a rule's counts moving between slots.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct MoveEntry {
    pub from: u32,
    pub to: u32,
}
layout!(MoveEntry, 8);

/// `struct dse_last`: the last verdict on a CPU.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Last {
    pub kind: u32,
    pub port: u32,
    pub reason: u32,
    pub pad: u32,
}
layout!(Last, 16);

/// `struct option_pool`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct OptionPool {
    pub bytes: [u8; limits::OPTIONS_BYTES],
}
layout!(OptionPool, limits::OPTIONS_BYTES);

#[cfg(test)]
mod tests {
    #[test]
    fn the_object_is_an_ebpf_elf() {
        let o = super::object();
        assert_eq!(&o[..4], b"\x7fELF");
        assert_eq!(
            u16::from_le_bytes([o[18], o[19]]),
            247,
            "e_machine is EM_BPF"
        );
    }
}

#[cfg(feature = "aya")]
mod pod {
    // SAFETY: each type is repr(C), made only of integers and integer
    // arrays, with no implicit padding (the layout! asserts cover every
    // byte), so every bit pattern is valid and copying bytes is sound.
    macro_rules! pod {
        ($($t:ty),*) => { $(unsafe impl aya::Pod for $t {})* };
    }
    pod!(
        super::FlowKey,
        super::RuleRecord,
        super::ActionRecord,
        super::PortRecord,
        super::MeterRecord,
        super::MeterState,
        super::MaskRecord,
        super::SubKey,
        super::SubValue,
        super::CacheValue,
        super::CacheEntry,
        super::RuleCounter,
        super::RuleCounterV2,
        super::Stats,
        super::State,
        super::Journal,
        super::MoveEntry,
        super::MergeEntry,
        super::Last,
        super::OptionPool,
        super::BaselineKey,
        super::GenConfig,
        super::GenState
    );
}
