// SPDX-License-Identifier: GPL-2.0
/* `dse bench`'s traffic generator and sink.
 *
 * dse_gen runs under BPF_PROG_TEST_RUN with the live-frames flag on the
 * generator's veth: every frame it returns XDP_TX for leaves that veth for
 * its peer, the datapath under test. Live frames reuse their pages without
 * resetting the bytes, so every header is written again on every frame;
 * only the frame's length is reset by the kernel. A frame's flow (its UDP
 * source port) and, for IMIX, its size follow a per-CPU sequence.
 *
 * dse_sink runs on the receiving veth: it counts the datagrams addressed
 * to the bench's port and drops every frame, so that the receiver costs the
 * same, and little, for every datapath under test. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* Simple IMIX, 7:4:1 of 64, 594 and 1518 bytes on the wire (frames 4 bytes
 * shorter: no FCS). The live frame handed in must be IMIX_MAX long. */
#define IMIX_SMALL 60
#define IMIX_MEDIUM 590
#define IMIX_MAX 1514
#define HEADERS (14 + 20 + 8)

struct gen_config {
	__u8 dst_mac[6];
	__u8 src_mac[6];
	__u32 src_ip;     /* network order */
	__u32 dst_ip;     /* network order */
	__u16 sport_base; /* host order */
	__u16 dport;      /* host order */
	__u32 flows;      /* at least 1 */
	__u32 imix;       /* 0: every frame as handed in; 1: simple IMIX */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_config);
} gen_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} gen_seq SEC(".maps");

/* Index 0: the UDP port the sink counts (host order). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} sink_port SEC(".maps");

/* Index 0: datagrams counted; index 1: their bytes (frames, no FCS). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} sink_counts SEC(".maps");

static __always_inline __u16 ipv4_csum(const __u16 *h)
{
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += h[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

static __always_inline __u32 imix_size(__u64 n)
{
	__u32 slot = n % 12;

	return slot < 7 ? IMIX_SMALL : slot < 11 ? IMIX_MEDIUM : IMIX_MAX;
}

SEC("xdp")
int dse_gen(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct gen_config *cfg = bpf_map_lookup_elem(&gen_config, &zero);
	__u64 *seq = bpf_map_lookup_elem(&gen_seq, &zero);
	__u8 *d, *end;
	__u32 len;
	__u64 n;

	if (!cfg || !seq)
		return XDP_ABORTED;
	n = (*seq)++;
	if (cfg->imix) {
		len = ctx->data_end - ctx->data;
		if (len != IMIX_MAX)
			return XDP_ABORTED;
		if (bpf_xdp_adjust_tail(ctx, (int)imix_size(n) - IMIX_MAX))
			return XDP_ABORTED;
	}
	d = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (d + HEADERS > end)
		return XDP_ABORTED;
	len = end - d;

	__builtin_memcpy(d, cfg->dst_mac, 6);
	__builtin_memcpy(d + 6, cfg->src_mac, 6);
	d[12] = 0x08;
	d[13] = 0x00;

	__u8 *ip = d + 14;
	ip[0] = 0x45;
	ip[1] = 0;
	*(__u16 *)(ip + 2) = bpf_htons(len - 14);
	*(__u32 *)(ip + 4) = 0; /* id, flags, fragment offset */
	ip[8] = 64;
	ip[9] = 17; /* UDP */
	*(__u16 *)(ip + 10) = 0;
	__builtin_memcpy(ip + 12, &cfg->src_ip, 4);
	__builtin_memcpy(ip + 16, &cfg->dst_ip, 4);
	*(__u16 *)(ip + 10) = ipv4_csum((const __u16 *)ip);

	__u8 *udp = ip + 20;
	__u32 flows = cfg->flows ? cfg->flows : 1;
	*(__u16 *)udp = bpf_htons(cfg->sport_base + (__u16)(n % flows));
	*(__u16 *)(udp + 2) = bpf_htons(cfg->dport);
	*(__u16 *)(udp + 4) = bpf_htons(len - 34);
	*(__u16 *)(udp + 6) = 0; /* no checksum: allowed for UDP over IPv4 */
	return XDP_TX;
}

SEC("xdp")
int dse_sink(struct xdp_md *ctx)
{
	__u8 *d = (void *)(long)ctx->data;
	__u8 *end = (void *)(long)ctx->data_end;
	__u32 zero = 0, one = 1;
	__u32 *port;
	__u64 *count;

	if (d + HEADERS > end || d[12] != 0x08 || d[13] != 0x00 || (d[14] & 0xf0) != 0x40 ||
	    d[23] != 17)
		return XDP_DROP;
	port = bpf_map_lookup_elem(&sink_port, &zero);
	/* The UDP header right after a 20-byte IPv4 header: the generator's. */
	if (!port || (d[14] & 0x0f) != 5 || bpf_ntohs(*(__u16 *)(d + 36)) != *port)
		return XDP_DROP;
	count = bpf_map_lookup_elem(&sink_counts, &zero);
	if (count)
		*count += 1;
	count = bpf_map_lookup_elem(&sink_counts, &one);
	if (count)
		*count += end - d;
	return XDP_DROP;
}

char _license[] SEC("license") = "GPL";
