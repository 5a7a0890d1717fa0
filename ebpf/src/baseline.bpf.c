// SPDX-License-Identifier: GPL-2.0
/* The benchmarks' floor: parse Ethernet/IPv4/UDP and look the 5-tuple up
 * in one hash map, then drop or pass. No counters, no cache, no actions. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct five_tuple {
	__u32 src;
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u32 proto;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 20);
	__type(key, struct five_tuple);
	__type(value, __u32);
} baseline_flows SEC(".maps");

SEC("xdp")
int baseline_xdp(struct xdp_md *ctx)
{
	__u8 *d = (void *)(long)ctx->data;
	__u8 *end = (void *)(long)ctx->data_end;
	struct five_tuple k = {};
	__u32 *verdict;

	if (d + 14 + 20 + 8 > end || d[12] != 0x08 || d[13] != 0x00 || d[14] != 0x45)
		return XDP_PASS;
	__builtin_memcpy(&k.src, d + 26, 4);
	__builtin_memcpy(&k.dst, d + 30, 4);
	__builtin_memcpy(&k.sport, d + 34, 2);
	__builtin_memcpy(&k.dport, d + 36, 2);
	k.proto = d[23];
	verdict = bpf_map_lookup_elem(&baseline_flows, &k);
	return verdict ? *verdict : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
