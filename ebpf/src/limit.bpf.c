// SPDX-License-Identifier: GPL-2.0
/* `dse bench`'s limit: the fastest this machine forwards a frame from one
 * veth to another. dse_limit parses nothing and redirects every frame to
 * the one interface in limit_port (a devmap), as any XDP forwarder must at
 * the least; every subject's rate is also given as a fraction of its. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} limit_port SEC(".maps");

SEC("xdp")
int dse_limit(struct xdp_md *ctx)
{
	return bpf_redirect_map(&limit_port, 0, XDP_DROP);
}

char LICENSE[] SEC("license") = "GPL";
