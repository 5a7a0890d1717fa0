/* The datapath's maps. Userspace pins each under the instance's bpffs
 * directory by its name (LIBBPF_PIN_BY_NAME), so that a new program version
 * can reuse them. */
#ifndef DSE_MAPS_H
#define DSE_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "structs.h"

/* The active generation (one entry). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dse_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dse_state SEC(".maps");

/* The install journal (one entry): see struct dse_journal. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dse_journal);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dse_journal SEC(".maps");

/* The counter moves of the install the journal names, so that a process
 * taking over after a crash between the flip and the moves runs them. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DSE_MAX_RULES);
	__uint(map_flags, BPF_F_MMAPABLE); /* userspace writes through a mapping */
	__type(key, __u32);
	__type(value, struct move_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dse_moves SEC(".maps");

/* Masks by bank: entries [bank * DSE_MAX_MASKS, +DSE_MAX_MASKS), best
 * first, ended by a record with live == 0. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * DSE_MAX_MASKS);
	__type(key, __u32);
	__type(value, struct mask_record);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dse_masks SEC(".maps");

/* Subtable entries of both banks. Preallocated (BPF's default): a million
 * inserts take 0.6 s instead of 0.9 s, at the cost of ~144 bytes of kernel
 * memory per possible entry from map creation on (302 MB at 2M). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DSE_MAX_RULES);
	__type(key, struct sub_key);
	__type(value, struct sub_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dse_subtables SEC(".maps");

/* Rule records by slot. A slot is written only while no installed
 * generation refers to it (the compiler's slot discipline). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DSE_MAX_RULES);
	__uint(map_flags, BPF_F_MMAPABLE); /* userspace writes through a mapping */
	__type(key, __u32);
	__type(value, struct rule_record);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dse_rules SEC(".maps");

/* Action records (interned, append-only between rebuilds). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DSE_MAX_ACTION_RECORDS);
	__uint(map_flags, BPF_F_MMAPABLE); /* userspace writes through a mapping */
	__type(key, __u32);
	__type(value, struct action_record);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dse_actions SEC(".maps");

/* Geneve option bytes (one entry). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct option_pool);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dse_options SEC(".maps");

/* Port slots by index. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DSE_MAX_PORTS);
	__type(key, __u32);
	__type(value, struct port_record);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dse_ports SEC(".maps");

/* Ingress interface index -> port index + 1 (0: not one of our ports). An
 * array, not a hash: one bounds check instead of a hash per packet. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DSE_MAX_IFINDEX);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dse_ifports SEC(".maps");

/* Port index -> egress interface, for output. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, DSE_MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dse_tx_ports SEC(".maps");

/* Meter configuration and buckets by meter index. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DSE_MAX_METERS);
	__type(key, __u32);
	__type(value, struct meter_record);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dse_meter_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, DSE_MAX_METERS);
	__type(key, __u32);
	__type(value, struct meter_state);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dse_meters SEC(".maps");

/* The exact-match flow cache: an LRU hash with an LRU list per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, DSE_CACHE_ENTRIES);
	__type(key, __u64);
	__type(value, struct cache_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dse_cache SEC(".maps");

/* Room to build a cache entry in, and for the key of a re-parse after an
 * action changed the headers (the stack is too small for either). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cache_entry);
} dse_cache_scratch SEC(".maps");

/* Per-rule counters by slot, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DSE_MAX_RULES);
	__type(key, __u32);
	__type(value, struct rule_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dse_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dse_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dse_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dse_last);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dse_last SEC(".maps");

#endif
