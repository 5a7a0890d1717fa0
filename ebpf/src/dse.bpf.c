// SPDX-License-Identifier: GPL-2.0
/* The dse XDP datapath: parse -> flow cache -> tuple-space search ->
 * actions -> verdict, executing the tables that dse-datapath's compiler
 * builds and the xdp backend loads into the maps. It agrees with the
 * reference pipeline packet for packet (tests/xdp_fixtures.rs). */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "dse/consts.h"
#include "dse/structs.h"
#include "dse/maps.h"
#include "dse/parse.h"
#include "dse/csum.h"
#include "dse/classify.h"
#include "dse/actions.h"

/* Bumped when the program's behaviour or map layout changes; userspace
 * reads it from the object to tell versions apart. */
const volatile __u32 dse_program_version = DSE_PROGRAM_VERSION;

/* Parses the frame (see parse_frame); a global function, verified once. */
__noinline int dse_parse(struct xdp_md *ctx, __u32 in_port, __u32 tun_id,
			 struct flow_key *key, struct layout *l)
{
	if (!key || !l)
		return -1;
	return parse_frame((void *)(long)ctx->data, (void *)(long)ctx->data_end,
			   in_port, tun_id, key, l);
}

/* Runs action record `idx` on the frame. Returns 1 when the action list
 * ends here (with the verdict in `out`), 0 to go on to the next action. */
__noinline int dse_action(struct xdp_md *ctx, __u32 idx, struct layout *l,
			  const struct flow_key *key, struct step *out)
{
	struct action_record *a = bpf_map_lookup_elem(&dse_actions, &idx);
	__u32 zero = 0;
	/* Room for a re-parse's key, off the stack (the main program's frame,
	 * this one's and dse_parse's must fit in 512 bytes together). */
	struct cache_entry *scratch = bpf_map_lookup_elem(&dse_cache_scratch, &zero);
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	if (!l || !key || !out)
		return 1;
	out->kind = VERDICT_DROP;
	out->reason = DROP_MALFORMED;
	if (!a)
		return 1;
	switch (a->op) {
	case OP_SET_ETH_SRC:
	case OP_SET_ETH_DST: {
		__u8 *d = AT(data, end, 0, 14);
		if (d)
			__builtin_memcpy(d + (a->op == OP_SET_ETH_SRC ? 6 : 0), a->data, 6);
		return 0;
	}
	case OP_SET_IP_SRC:
	case OP_SET_IP_DST:
		set_ip(ctx, l, a, a->op == OP_SET_IP_SRC);
		return 0;
	case OP_SET_L4_SRC:
	case OP_SET_L4_DST:
		set_l4(ctx, l, a->arg16, a->op == OP_SET_L4_SRC);
		return 0;
	case OP_PUSH_VLAN:
	case OP_POP_VLAN:
	case OP_ENCAP_VXLAN:
	case OP_ENCAP_GENEVE:
		if (a->op == OP_PUSH_VLAN) {
			if (push_vlan(ctx, a->arg16, a->arg32))
				return 1;
		} else if (a->op == OP_POP_VLAN) {
			pop_vlan(ctx);
		} else if (dse_encap(ctx, a, key, a->op == OP_ENCAP_GENEVE)) {
			return 1;
		}
		/* The frame only gained or lost whole headers. */
		if (!scratch || dse_parse(ctx, key->in_port, key->tun_id, &scratch->key, l))
			__builtin_memset(l, 0, sizeof(*l));
		return 0;
	case OP_DECAP: {
		int vni = dse_decap(ctx, l->l4, l->ip_end, l->l4_proto);
		if (vni < 0) {
			out->reason = DROP_TUNNEL;
			return 1;
		}
		out->kind = STEP_RECIRCULATE;
		out->vni = vni;
		return 1;
	}
	case OP_METER:
		if (!meter_admit(a->arg32, ctx->data_end - ctx->data, bpf_ktime_get_ns())) {
			out->reason = DROP_METER;
			return 1;
		}
		return 0;
	case OP_OUTPUT:
		out->kind = VERDICT_OUTPUT;
		out->port = a->arg16;
		return 1;
	case OP_DROP:
		out->reason = DROP_RULE;
		return 1;
	case OP_PASS:
		out->kind = VERDICT_PASS;
		return 1;
	case OP_TX:
		out->kind = VERDICT_TX;
		return 1;
	default:
		return 1;
	}
}

/* Set to 1 at load time by an instance that only takes test runs (`dse
 * verify`): each frame comes with its port in 4 bytes before it, and the
 * program returns the verdict itself rather than an XDP action
 * (BPF_PROG_TEST_RUN hands the return value back as it is), so that no
 * map is written or read a frame and runs on several CPUs do not share a
 * port. Never set on an interface. */
const volatile __u32 dse_verdict_in_retval = 0;

/* The verdict as a test run's return value: the kind in bits 0-7, the
 * drop reason in 8-15, the port in 16-31. */
static __always_inline int verdict_retval(const struct step *s)
{
	return s->kind | ((__u32)s->reason << 8) | ((__u32)s->port << 16);
}

SEC("xdp")
int dse_xdp(struct xdp_md *ctx)
{
	__u32 zero = 0, ifindex = ctx->ingress_ifindex, *port_of;
	struct dse_state *state = bpf_map_lookup_elem(&dse_state, &zero);
	struct dse_stats *st = bpf_map_lookup_elem(&dse_stats, &zero);
	struct dse_last *last = bpf_map_lookup_elem(&dse_last, &zero);
	struct step step = {.kind = VERDICT_DROP, .reason = DROP_MALFORMED};
	struct flow_key key;
	struct layout l;
	struct hit h;
	__u32 gen, tun = 0;
	__u16 in_port;

	if (!state || !st || !last)
		return XDP_PASS;
	if (dse_verdict_in_retval) {
		/* A test run names its port in the 4 bytes before the frame. */
		void *d = (void *)(long)ctx->data;

		if (d + 4 > (void *)(long)ctx->data_end)
			return verdict_retval(&step);
		in_port = *(__u16 *)d;
		if (bpf_xdp_adjust_head(ctx, 4))
			return verdict_retval(&step); /* under 14 bytes left */
	} else {
		port_of = bpf_map_lookup_elem(&dse_ifports, &ifindex);
		if (!port_of || !*port_of)
			return XDP_PASS; /* not one of this datapath's ports */
		in_port = *port_of - 1;
	}
	gen = state->generation;
	st->rx_packets++;
	st->rx_bytes += ctx->data_end - ctx->data;

	for (int pass = 0; pass < 2; pass++) {
		void *data = (void *)(long)ctx->data;
		void *data_end = (void *)(long)ctx->data_end;

		if (!parse_ipv4_fast(data, data_end, in_port, tun, &key, &l) &&
		    parse_frame(data, data_end, in_port, tun, &key, &l)) {
			step.kind = VERDICT_DROP;
			step.reason = DROP_MALFORMED;
			break;
		}
		classify(&key, gen, st, &h);
		if (h.slot == DSE_NO_RULE) {
			__u32 p = in_port;
			struct port_record *pr = bpf_map_lookup_elem(&dse_ports, &p);
			if (pr && pr->default_drop) {
				step.kind = VERDICT_DROP;
				step.reason = DROP_MISS;
			} else {
				step.kind = VERDICT_PASS;
			}
			break;
		}
		{
			struct rule_counter *c = bpf_map_lookup_elem(&dse_counters, &h.slot);
			if (c) {
				c->packets++;
				c->bytes += ctx->data_end - ctx->data;
#if DSE_PROGRAM_VERSION >= 2
				c->last_seen_ns = bpf_ktime_get_ns();
#endif
			}
		}
		step.kind = VERDICT_DROP;
		step.reason = DROP_MALFORMED;
		if (h.terminal_op) {
			/* Most rules only forward or drop: no action record, no
			 * call into dse_action. */
			__u8 op = h.terminal_op;
			step.kind = op == OP_OUTPUT ? VERDICT_OUTPUT
				  : op == OP_PASS   ? VERDICT_PASS
				  : op == OP_TX     ? VERDICT_TX
						    : VERDICT_DROP;
			step.reason = DROP_RULE;
			step.port = h.terminal_port;
			break;
		}
		for (__u32 i = 0; i < DSE_MAX_ACTIONS; i++) {
			if (i >= h.n_actions ||
			    dse_action(ctx, h.first_action + i, &l, &key, &step))
				break;
		}
		if (step.kind != STEP_RECIRCULATE)
			break;
		if (pass == 1) {
			step.kind = VERDICT_DROP;
			step.reason = DROP_RECIRCULATION;
			break;
		}
		tun = DSE_TUNNEL_PRESENT | step.vni;
	}

	last->kind = step.kind;
	last->port = step.port;
	last->reason = step.reason;
	switch (step.kind) {
	case VERDICT_OUTPUT:
		st->output++;
		if (dse_verdict_in_retval)
			return verdict_retval(&step);
		return bpf_redirect_map(&dse_tx_ports, step.port, 0);
	case VERDICT_PASS:
		st->pass++;
		return dse_verdict_in_retval ? verdict_retval(&step) : XDP_PASS;
	case VERDICT_TX:
		st->tx++;
		return dse_verdict_in_retval ? verdict_retval(&step) : XDP_TX;
	default:
		if (step.reason < DROP_REASONS)
			st->drops[step.reason]++;
		return dse_verdict_in_retval ? verdict_retval(&step) : XDP_DROP;
	}
}

/* One rule counter's carried-over counts, for dse_merge. */
struct merge_entry {
	__u32 slot;
	__u32 pad;
	__u64 packets;
	__u64 bytes;
};

#define MERGE_BATCH 128

/* Adds the counts in the frame (an array of merge_entry) to this CPU's
 * rule counters with atomic adds. Userspace runs it with
 * BPF_PROG_TEST_RUN on each CPU in turn after an upgrade that migrated
 * the counters map: the datapath on the same CPU runs in softirq and
 * cannot interleave with one atomic add, so no increment is lost. */
SEC("xdp")
int dse_merge(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	for (int i = 0; i < MERGE_BATCH; i++) {
		struct merge_entry *m = data + i * sizeof(struct merge_entry);
		struct rule_counter *c;
		__u32 slot;

		if ((void *)(m + 1) > end)
			break;
		slot = m->slot;
		c = bpf_map_lookup_elem(&dse_counters, &slot);
		if (!c)
			return XDP_ABORTED;
		__sync_fetch_and_add(&c->packets, m->packets);
		__sync_fetch_and_add(&c->bytes, m->bytes);
	}
	return XDP_DROP;
}

#define MOVE_BATCH 256

/* Moves this CPU's counts from each entry's `from` slot to its `to` slot
 * (the frame is an array of move_entry): a rule that changed slots keeps
 * its counts. `from` slots are ones no generation counts into any more, so
 * reading and zeroing them needs no atomics; the adds into `to`, which
 * the datapath counts into, are atomic. Moving twice moves nothing the
 * second time, so a process that takes over after a crash may run the
 * journaled moves again. Userspace runs it with BPF_PROG_TEST_RUN on each
 * CPU in turn. */
SEC("xdp")
int dse_move(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	for (int i = 0; i < MOVE_BATCH; i++) {
		struct move_entry *m = data + i * sizeof(struct move_entry);
		struct rule_counter *from, *to;
		__u32 f, t;
		__u64 packets, bytes;

		if ((void *)(m + 1) > end)
			break;
		f = m->from;
		t = m->to;
		if (f == t)
			continue;
		from = bpf_map_lookup_elem(&dse_counters, &f);
		to = bpf_map_lookup_elem(&dse_counters, &t);
		if (!from || !to)
			return XDP_ABORTED;
		packets = from->packets;
		bytes = from->bytes;
		from->packets = 0;
		from->bytes = 0;
		if (packets)
			__sync_fetch_and_add(&to->packets, packets);
		if (bytes)
			__sync_fetch_and_add(&to->bytes, bytes);
#if DSE_PROGRAM_VERSION >= 2
		if (from->last_seen_ns > to->last_seen_ns)
			to->last_seen_ns = from->last_seen_ns;
#endif
	}
	return XDP_DROP;
}

#define SUM_BATCH 512

/* Sums this CPU's counts of the rule counters whose slots the frame lists
 * (u32 each, after a 16-byte header) and writes the packets and bytes into
 * the header. Userspace runs it with BPF_PROG_TEST_RUN on each CPU in
 * turn: a rule-counter total without copying every per-CPU value out of
 * the kernel. */
SEC("xdp")
int dse_sum(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 *total = data;
	__u64 packets = 0, bytes = 0;

	if ((void *)(total + 2) > end)
		return XDP_ABORTED;
	for (int i = 0; i < SUM_BATCH; i++) {
		__u32 *s = data + 16 + i * sizeof(__u32);
		struct rule_counter *c;
		__u32 slot;

		if ((void *)(s + 1) > end)
			break;
		slot = *s;
		c = bpf_map_lookup_elem(&dse_counters, &slot);
		if (!c)
			return XDP_ABORTED;
		packets += c->packets;
		bytes += c->bytes;
	}
	total[0] = packets;
	total[1] = bytes;
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
