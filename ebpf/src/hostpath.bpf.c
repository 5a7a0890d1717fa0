// SPDX-License-Identifier: GPL-2.0
/* The host path's taking of frames on AF_XDP.
 *
 * dse_xsk runs on each interface of the host path: it redirects every frame
 * into the AF_XDP socket bound to the queue it arrived on. One map holds the
 * sockets of every interface: an interface's are at the base dse_xsk_bases
 * gives its ifindex, plus the queue (rx_queue_index). A frame of an
 * interface or queue without a socket goes to the kernel stack, as it would
 * without the program. Frames it redirects never reach the stack: the host
 * path owns them.
 *
 * dse_pass hands a frame to the kernel stack. The host path runs it under
 * BPF_PROG_TEST_RUN with live frames, ingress set to the interface a frame
 * came in on, for each frame its rules `pass`: the stack then receives it as
 * if from that interface, once. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Interfaces, and queues per interface, a host path can take frames from. */
#define MAX_IFACES 64
#define MAX_QUEUES 64

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_IFACES);
	__type(key, __u32);   /* ifindex */
	__type(value, __u32); /* its first entry in dse_xsks */
} dse_xsk_bases SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_IFACES * MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} dse_xsks SEC(".maps");

SEC("xdp")
int dse_xsk(struct xdp_md *ctx)
{
	__u32 ifindex = ctx->ingress_ifindex;
	__u32 *base = bpf_map_lookup_elem(&dse_xsk_bases, &ifindex);

	if (!base || ctx->rx_queue_index >= MAX_QUEUES)
		return XDP_PASS;
	return bpf_redirect_map(&dse_xsks, *base + ctx->rx_queue_index, XDP_PASS);
}

SEC("xdp")
int dse_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
