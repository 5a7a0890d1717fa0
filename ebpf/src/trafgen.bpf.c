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
 * With a window set, the program also times its offer: the window opens at
 * its first run, and once it has closed every frame is dropped. With an
 * interval set too, it sends a frame only when one is due (a frame each
 * interval, with at most PACE_CREDIT frames of catch-up) and drops the
 * others, which the kernel recycles at once: the offer is paced frame by
 * frame inside one long test run, whose set-up and tear-down (tens of
 * milliseconds) would otherwise break it into bursts. gen_state counts the
 * frames sent.
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
	__u64 window_ns;   /* 0: no window, every run sends */
	__u64 interval_ns; /* within a window, 0: every run sends */
};

/* Frames a paced offer may send back to back to catch up. */
#define PACE_CREDIT 8

struct gen_state {
	__u64 start_ns; /* when the window opened; 0: not yet */
	__u64 next_ns;  /* when the next paced frame is due */
	__u64 sent;     /* frames returned XDP_TX */
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

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_state);
} gen_state SEC(".maps");

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

/* Whether a frame is due now in `cfg`'s window and pace. */
static __always_inline int due(const struct gen_config *cfg, struct gen_state *st)
{
	__u64 now, credit;

	if (!cfg->window_ns)
		return 1;
	now = bpf_ktime_get_ns();
	if (!st->start_ns) {
		st->start_ns = now;
		st->next_ns = now;
	}
	if (now - st->start_ns >= cfg->window_ns)
		return 0;
	if (!cfg->interval_ns)
		return 1;
	credit = PACE_CREDIT * cfg->interval_ns;
	if (st->next_ns + credit < now)
		st->next_ns = now - credit;
	if (now < st->next_ns)
		return 0;
	st->next_ns += cfg->interval_ns;
	return 1;
}

SEC("xdp")
int dse_gen(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct gen_config *cfg = bpf_map_lookup_elem(&gen_config, &zero);
	struct gen_state *st = bpf_map_lookup_elem(&gen_state, &zero);
	__u64 *seq = bpf_map_lookup_elem(&gen_seq, &zero);
	__u8 *d, *end;
	__u32 len;
	__u64 n;

	if (!cfg || !st || !seq)
		return XDP_ABORTED;
	if (!due(cfg, st))
		return XDP_DROP;
	st->sent++;
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
