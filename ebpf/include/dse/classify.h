/* Classification: the exact-match flow cache, then the tuple-space search
 * over the active bank's masks, best first, with early exit. The same
 * order and tie-break as dse-datapath's pipeline::search. */
#ifndef DSE_CLASSIFY_H
#define DSE_CLASSIFY_H

#include "maps.h"

struct hit {
	__u32 slot;
	__u32 first_action;
	__u16 n_actions;
	__u8 terminal_op; /* as in cache_value */
	__u16 terminal_port;
};

static __always_inline __u64 rule_rank(const struct rule_record *r)
{
	return ((__u64)r->priority << 32) | (__u32)(0xffffffffu - r->id);
}

/* The best rule's slot for `key` in bank `bank`, or DSE_NO_RULE. A global
 * function: the verifier checks it once, not at every call. */
__noinline __u32 dse_search(struct flow_key *key, __u32 bank)
{
	struct sub_key sk;
	__u32 best = DSE_NO_RULE;
	__u64 best_rank = 0;
	__u64 *kw = (__u64 *)key;
	__u64 *sw = (__u64 *)&sk.key;

	if (!key)
		return DSE_NO_RULE;
	bank &= 1;
	sk.pad = 0;
	for (__u32 i = 0; i < DSE_MAX_MASKS; i++) {
		__u32 idx = bank * DSE_MAX_MASKS + i;
		struct mask_record *m = bpf_map_lookup_elem(&dse_masks, &idx);
		struct sub_value *v;
		struct rule_record *r;
		__u64 *mw;
		__u32 slot;

		if (!m || !m->live)
			break;
		if (best != DSE_NO_RULE && m->best_rank <= best_rank)
			break;
		mw = (__u64 *)&m->mask;
		sk.mask_id = m->mask_id;
#pragma unroll
		for (int w = 0; w < 8; w++)
			sw[w] = kw[w] & mw[w];
		v = bpf_map_lookup_elem(&dse_subtables, &sk);
		if (!v)
			continue;
		slot = v->slot[bank & 1];
		if (slot == DSE_NO_RULE)
			continue;
		r = bpf_map_lookup_elem(&dse_rules, &slot);
		if (!r)
			continue;
		if (best == DSE_NO_RULE || rule_rank(r) > best_rank) {
			best = slot;
			best_rank = rule_rank(r);
		}
	}
	return best;
}

/* Set to 0 at load time to run without the flow cache (every packet takes
 * the tuple-space search), as the benchmarks of the search path do. */
const volatile __u32 dse_use_cache = 1;

/* The cache's key for `key`: one multiply per word. Collisions only share
 * an entry; the entry's full key decides a hit. */
static __always_inline __u64 cache_hash(const struct flow_key *key)
{
	const __u64 *w = (const __u64 *)key;
	__u64 h = 0x243f6a8885a308d3ULL;
#pragma unroll
	for (int i = 0; i < 8; i++)
		h = (h ^ w[i]) * 0x9e3779b97f4a7c15ULL;
	return h ^ (h >> 29);
}

static __always_inline int same_key(const struct flow_key *a, const struct flow_key *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;
	__u64 d = 0;
#pragma unroll
	for (int i = 0; i < 8; i++)
		d |= x[i] ^ y[i];
	return d == 0;
}

/* Classifies `key` under generation `gen`: the cache, else the search and
 * a cache fill. Counts the hit or miss in `st`. */
static __always_inline void classify(struct flow_key *key, __u32 gen,
				     struct dse_stats *st, struct hit *h)
{
	__u64 hk = cache_hash(key);
	struct cache_entry *c = dse_use_cache ? bpf_map_lookup_elem(&dse_cache, &hk) : 0;
	__u32 zero = 0, slot;
	struct cache_entry *ne;
	struct rule_record *r;

	if (c && c->value.generation == gen && same_key(&c->key, key)) {
		st->cache_hits++;
		h->slot = c->value.slot;
		h->first_action = c->value.first_action;
		h->n_actions = c->value.n_actions;
		h->terminal_op = c->value.terminal_op;
		h->terminal_port = c->value.terminal_port;
		return;
	}
	st->cache_misses++;
	slot = dse_search(key, gen & 1);
	h->slot = DSE_NO_RULE;
	h->first_action = 0;
	h->n_actions = 0;
	h->terminal_op = 0;
	h->terminal_port = 0;
	if (slot != DSE_NO_RULE) {
		r = bpf_map_lookup_elem(&dse_rules, &slot);
		if (r) {
			__u32 idx = r->first_action;
			struct action_record *a = bpf_map_lookup_elem(&dse_actions, &idx);

			h->slot = slot;
			h->first_action = r->first_action;
			h->n_actions = r->n_actions;
			if (a && r->n_actions == 1 && a->op >= OP_OUTPUT && a->op <= OP_TX) {
				h->terminal_op = a->op;
				h->terminal_port = a->arg16;
			}
		}
	}
	ne = bpf_map_lookup_elem(&dse_cache_scratch, &zero);
	if (dse_use_cache && ne) {
		ne->key = *key;
		ne->value.generation = gen;
		ne->value.slot = h->slot;
		ne->value.first_action = h->first_action;
		ne->value.n_actions = h->n_actions;
		ne->value.terminal_op = h->terminal_op;
		ne->value.terminal_port = h->terminal_port;
		bpf_map_update_elem(&dse_cache, &hk, ne, BPF_ANY);
	}
}

#endif
