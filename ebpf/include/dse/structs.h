/* Records shared with userspace, byte for byte. dse-ebpf mirrors each one
 * with #[repr(C)] and asserts its size and field offsets. Multi-byte fields
 * are in host order unless named _be. */
#ifndef DSE_STRUCTS_H
#define DSE_STRUCTS_H

#include <linux/types.h>

/* The flow key: dse-datapath's FlowKey. */
struct flow_key {
	__u8 ip_src[16];
	__u8 ip_dst[16];
	__u8 eth_src[6];
	__u16 in_port;
	__u8 eth_dst[6];
	__u16 vlan;
	__u16 eth_type;
	__u8 ip_proto;
	__u8 flags;
	__u16 l4_src;
	__u16 l4_dst;
	__u32 tun_id;
	__u8 tcp_flags;
	__u8 pad[3];
} __attribute__((aligned(8)));

/* A rule in its slot: RuleRecord. */
struct rule_record {
	__u32 id;
	__u32 priority;
	__u32 first_action;
	__u16 n_actions;
	__u16 live;
};

/* One action: ActionRecord. */
struct action_record {
	__u8 op;
	__u8 flags;
	__u16 arg16;
	__u32 arg32;
	__u8 data[56];
};

/* A port slot: present, miss action, and the interface it sends to. */
struct port_record {
	__u8 present;
	__u8 default_drop;
	__u16 pad;
	__u32 ifindex;
};

/* A meter's configuration: MeterRecord. */
struct meter_record {
	__u64 rate;
	__u64 burst;
	__u8 bits;
	__u8 pad[7];
};

/* A meter's bucket, shared by all CPUs. */
struct meter_state {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 nano_tokens;
	__u64 last_ns;
};

/* One mask of a bank's ordered mask list. */
struct mask_record {
	struct flow_key mask;
	__u64 best_rank;
	__u32 mask_id;
	__u32 live;
};

/* A subtable entry's key: the mask's id and the masked flow key. */
struct sub_key {
	__u32 mask_id;
	__u32 pad;
	struct flow_key key;
};

/* A subtable entry's value: the rule slot in each bank (DSE_NO_RULE if the
 * entry is absent from that bank). */
struct sub_value {
	__u32 slot[2];
};

/* A flow-cache entry, valid only under the generation it was made in. */
struct cache_value {
	__u32 generation;
	__u32 slot;
	__u32 first_action;
	__u8 n_actions;
	/* The rule's only action when it is terminal (OP_OUTPUT..OP_TX),
	 * held here so that a hit reads no action record; 0 otherwise. */
	__u8 terminal_op;
	__u16 terminal_port;
};

/* A flow-cache entry: keyed by a 64-bit hash of the flow key (a 64-byte
 * key costs the map's hash far more), holding the whole key to compare. */
struct cache_entry {
	struct flow_key key;
	struct cache_value value;
};

/* Per-rule, per-CPU counters. */
struct rule_counter {
	__u64 packets;
	__u64 bytes;
#if DSE_PROGRAM_VERSION >= 2
	__u64 last_seen_ns; /* CLOCK_MONOTONIC of the last packet */
#endif
};

/* Per-CPU datapath statistics: StatsBlock. */
struct dse_stats {
	__u64 rx_packets;
	__u64 rx_bytes;
	__u64 output;
	__u64 pass;
	__u64 tx;
	__u64 drops[DROP_REASONS];
	__u64 cache_hits;
	__u64 cache_misses;
};

/* The active generation: the one word a transaction flips. Its low bit is
 * the bank that the masks and subtable entries are read from. `half` says
 * which half of the rule slots holds its records (for userspace only). */
struct dse_state {
	__u32 generation;
	__u32 half;
};

/* What userspace is in the middle of, for a process that takes the maps
 * over after this one died: the desired generation (the control plane's
 * number) of the tables in force, and an install whose flip may have
 * happened, with the counter moves that must follow that flip. The
 * datapath program never reads it. */
struct dse_journal {
	__u64 desired;      /* desired generation of the tables in force */
	__u64 next_desired; /* desired generation of the pending install */
	__u32 next_flip;    /* dse_state.generation after its flip; 0: none pending */
	__u32 moves;        /* entries of dse_moves to run once it flipped */
};

/* A rule's counts moving from the slot it leaves to the slot it takes
 * (dse_move). */
struct move_entry {
	__u32 from;
	__u32 to;
};

/* The last verdict on this CPU, for BPF_PROG_TEST_RUN callers. */
struct dse_last {
	__u32 kind;
	__u32 port;
	__u32 reason;
	__u32 pad;
};

/* Geneve options pool. */
struct option_pool {
	__u8 bytes[DSE_OPTIONS_BYTES];
};

/* The layout dse-ebpf's mirrors assert too (ebpf/src/lib.rs). */
_Static_assert(sizeof(struct flow_key) == 64, "flow_key");
_Static_assert(__builtin_offsetof(struct flow_key, in_port) == 38, "flow_key.in_port");
_Static_assert(__builtin_offsetof(struct flow_key, vlan) == 46, "flow_key.vlan");
_Static_assert(__builtin_offsetof(struct flow_key, l4_src) == 52, "flow_key.l4_src");
_Static_assert(__builtin_offsetof(struct flow_key, tun_id) == 56, "flow_key.tun_id");
_Static_assert(__builtin_offsetof(struct flow_key, tcp_flags) == 60, "flow_key.tcp_flags");
_Static_assert(sizeof(struct rule_record) == 16, "rule_record");
_Static_assert(sizeof(struct action_record) == 64, "action_record");
_Static_assert(__builtin_offsetof(struct action_record, data) == 8, "action_record.data");
_Static_assert(sizeof(struct port_record) == 8, "port_record");
_Static_assert(sizeof(struct meter_record) == 24, "meter_record");
_Static_assert(sizeof(struct meter_state) == 24, "meter_state");
_Static_assert(sizeof(struct mask_record) == 80, "mask_record");
_Static_assert(sizeof(struct sub_key) == 72, "sub_key");
_Static_assert(sizeof(struct sub_value) == 8, "sub_value");
_Static_assert(sizeof(struct cache_value) == 16, "cache_value");
_Static_assert(__builtin_offsetof(struct cache_value, terminal_port) == 14, "cache_value.terminal_port");
_Static_assert(sizeof(struct rule_counter) == (DSE_PROGRAM_VERSION >= 2 ? 24 : 16), "rule_counter");
_Static_assert(sizeof(struct dse_stats) == 13 * 8, "dse_stats");
_Static_assert(sizeof(struct dse_state) == 8, "dse_state");
_Static_assert(sizeof(struct dse_journal) == 24, "dse_journal");
_Static_assert(sizeof(struct move_entry) == 8, "move_entry");
_Static_assert(sizeof(struct dse_last) == 16, "dse_last");

#endif
