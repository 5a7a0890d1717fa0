/* Actions on the frame: MAC and NAT rewrites with incremental checksums,
 * VLAN push/pop, VXLAN/Geneve encap and decap, meters. The same effects,
 * byte for byte, as dse-datapath's pipeline::actions. */
#ifndef DSE_ACTIONS_H
#define DSE_ACTIONS_H

#include "csum.h"
#include "maps.h"
#include "parse.h"

/* What the action list decided. */
struct step {
	__u8 kind; /* VERDICT_*, or STEP_RECIRCULATE */
	__u8 reason; /* DROP_* with VERDICT_DROP */
	__u16 port; /* with VERDICT_OUTPUT */
	__u32 vni; /* with STEP_RECIRCULATE */
};

#define STEP_NEXT 0
#define STEP_RECIRCULATE 5

static __always_inline void fix_l4_checksum(void *data, void *end,
					    const struct layout *l,
					    const __u8 *old, const __u8 *new,
					    int words)
{
	__u32 at;
	__u8 *c;
	if (!l->l4)
		return;
	if (l->l4_proto == PROTO_TCP)
		at = l->l4 + 16;
	else if (l->l4_proto == PROTO_UDP)
		at = l->l4 + 6;
	else if (l->l4_proto == PROTO_ICMPV6 && l->v6)
		at = l->l4 + 2;
	else
		return;
	c = AT(data, end, at, 2);
	if (!c)
		return;
	if (l->l4_proto == PROTO_UDP)
		wr16(c, csum_update_udp(rd16(c), old, new, words));
	else
		wr16(c, csum_update(rd16(c), old, new, words));
}

static __always_inline void set_ip(struct xdp_md *ctx, const struct layout *l,
				   const struct action_record *a, int src)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u8 old[16];
	if (!l->l3 || (l->v6 != 0) != ((a->flags & ACT_FLAG_V6) != 0))
		return;
	if (l->v6) {
		__u8 *p = AT(data, end, l->l3 + (src ? 8 : 24), 16);
		if (!p)
			return;
		__builtin_memcpy(old, p, 16);
		__builtin_memcpy(p, a->data, 16);
		fix_l4_checksum(data, end, l, old, a->data, 8);
	} else {
		__u8 *ip = AT(data, end, l->l3, 20);
		__u8 *p;
		if (!ip)
			return;
		p = ip + (src ? 12 : 16);
		__builtin_memcpy(old, p, 4);
		__builtin_memcpy(p, a->data, 4);
		wr16(ip + 10, csum_update(rd16(ip + 10), old, a->data, 2));
		fix_l4_checksum(data, end, l, old, a->data, 2);
	}
}

static __always_inline void set_l4(struct xdp_md *ctx, const struct layout *l,
				   __u16 port, int src)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u8 old[2], new[2];
	__u8 *p;
	if (!l->l4 || (l->l4_proto != PROTO_TCP && l->l4_proto != PROTO_UDP))
		return;
	p = AT(data, end, l->l4 + (src ? 0 : 2), 2);
	if (!p)
		return;
	old[0] = p[0];
	old[1] = p[1];
	wr16(new, port);
	p[0] = new[0];
	p[1] = new[1];
	fix_l4_checksum(data, end, l, old, new, 1);
}

/* Returns 0, or -1 if the frame could not grow. */
static __always_inline int push_vlan(struct xdp_md *ctx, __u16 tci, __u16 tpid)
{
	void *data, *end;
	__u8 *d;
	if (bpf_xdp_adjust_head(ctx, -4))
		return -1;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	d = AT(data, end, 0, 18);
	if (!d)
		return -1;
#pragma unroll
	for (int i = 0; i < 12; i++)
		d[i] = d[i + 4];
	wr16(d + 12, tpid);
	wr16(d + 14, tci);
	return 0;
}

static __always_inline void pop_vlan(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u8 *d = AT(data, end, 0, 18);
	__u16 tpid;
	if (!d)
		return;
	tpid = rd16(d + 12);
	if (tpid != ETH_P_VLAN && tpid != ETH_P_QINQ)
		return;
#pragma unroll
	for (int i = 11; i >= 0; i--)
		d[i + 4] = d[i];
	bpf_xdp_adjust_head(ctx, 4);
}

/* dse-datapath's FlowKey::portable_hash. */
static __always_inline __u64 rotl64(__u64 x, int r)
{
	return (x << r) | (x >> (64 - r));
}

static __always_inline __u64 portable_hash(const struct flow_key *key)
{
	const __u64 *w = (const __u64 *)key;
	const __u64 m1 = 0x9e3779b97f4a7c15ULL, m2 = 0xc2b2ae3d27d4eb4fULL;
	__u64 a = 0x243f6a8885a308d3ULL, b = 0x13198a2e03707344ULL, h;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		a = rotl64(a, 23) ^ ((w[2 * i] ^ 0xa4093822299f31d0ULL) * m1);
		b = rotl64(b, 23) ^ ((w[2 * i + 1] ^ 0x082efa98ec4e6c89ULL) * m2);
	}
	h = a ^ rotl64(b, 32) ^ 8;
	h ^= h >> 32;
	h *= 0xbf58476d1ce4e5b9ULL;
	h ^= h >> 29;
	h *= 0x94d049bb133111ebULL;
	return h ^ (h >> 32);
}

/* Sums `n` bytes of the frame from `off` into `sum` (one's complement,
 * unfolded), `n` at most 2048. */
static __always_inline __u32 csum_frame(void *data, void *end, __u32 off,
					__u32 n, __u32 sum)
{
	for (__u32 i = 0; i < 1024; i++) {
		__u8 *p;
		if (2 * i + 1 >= n)
			break;
		p = AT(data, end, off + 2 * i, 2);
		if (!p)
			break;
		sum += rd16(p);
	}
	if (n & 1) {
		__u8 *p = AT(data, end, off + n - 1, 1);
		if (p)
			sum += (__u32)p[0] << 8;
	}
	return sum;
}

/* Wraps the frame in Ethernet + IPv4/IPv6 + UDP + VXLAN/Geneve. Returns 0,
 * or -1 if the frame could not grow. */
__noinline int dse_encap(struct xdp_md *ctx, const struct action_record *a,
			 const struct flow_key *key, int geneve)
{
	__u32 zero = 0, opt_off, opt_len = 0, ip_len, tun_len, inner, outer,
	      udp_len, u, t;
	int v6;
	struct option_pool *pool = bpf_map_lookup_elem(&dse_options, &zero);
	void *data, *end;
	__u8 *d;
	__u16 sport;

	if (!pool || !a || !key)
		return -1;
	v6 = (a->flags & ACT_FLAG_V6) != 0;
	opt_off = a->data[ENC_OPT_OFF] | (__u32)a->data[ENC_OPT_OFF + 1] << 8 |
		  (__u32)a->data[ENC_OPT_OFF + 2] << 16 |
		  (__u32)a->data[ENC_OPT_OFF + 3] << 24;
	if (geneve)
		opt_len = (a->data[ENC_OPT_LEN] | (__u32)a->data[ENC_OPT_LEN + 1] << 8) & 0x1fc;
	if (opt_len > 252 || opt_off + opt_len > DSE_OPTIONS_BYTES)
		return -1;
	ip_len = v6 ? 40 : 20;
	tun_len = 8 + opt_len;
	inner = ctx->data_end - ctx->data;
	udp_len = 8 + tun_len + inner;
	outer = 14 + ip_len + 8 + tun_len;
	if (outer > 14 + 40 + 8 + 8 + 252)
		return -1;
	if (bpf_xdp_adjust_head(ctx, -(int)outer))
		return -1;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	d = AT(data, end, 0, 14 + 40 + 8 + 8);
	if (!d)
		return -1;
	__builtin_memcpy(d, a->data + ENC_ETH_DST, 6);
	__builtin_memcpy(d + 6, a->data + ENC_ETH_SRC, 6);
	wr16(d + 12, v6 ? ETH_P_IPV6_ : ETH_P_IPV4);
	if (v6) {
		__u8 *ip = d + 14;
		__builtin_memset(ip, 0, 40);
		ip[0] = 0x60;
		wr16(ip + 4, udp_len);
		ip[6] = PROTO_UDP;
		ip[7] = 64;
		__builtin_memcpy(ip + 8, a->data + ENC_IP_SRC, 16);
		__builtin_memcpy(ip + 24, a->data + ENC_IP_DST, 16);
	} else {
		__u8 *ip = d + 14;
		__builtin_memset(ip, 0, 20);
		ip[0] = 0x45;
		wr16(ip + 2, udp_len + 20);
		wr16(ip + 6, 0x4000);
		ip[8] = 64;
		ip[9] = PROTO_UDP;
		__builtin_memcpy(ip + 12, a->data + ENC_IP_SRC, 4);
		__builtin_memcpy(ip + 16, a->data + ENC_IP_DST, 4);
		wr16(ip + 10, csum_ipv4_header(ip));
	}
	u = 14 + ip_len;
	if (a->flags & ACT_FLAG_FIXED_SRC)
		sport = ((__u16)a->data[ENC_UDP_SRC] << 8) | a->data[ENC_UDP_SRC + 1];
	else
		sport = 0xc000 | (__u16)(portable_hash(key) >> 50);
	{
		__u8 *h = AT(data, end, u, 16);
		if (!h)
			return -1;
		wr16(h, sport);
		wr16(h + 2, a->arg16);
		wr16(h + 4, udp_len);
		wr16(h + 6, 0);
		t = u + 8;
		__builtin_memset(h + 8, 0, 8);
		h[8] = geneve ? opt_len / 4 : 0x08;
		if (geneve)
			wr16(h + 10, ETH_P_TEB);
		h[12] = a->arg32 >> 16;
		h[13] = a->arg32 >> 8;
		h[14] = a->arg32;
	}
	for (__u32 i = 0; i < 252; i++) {
		__u8 *o;
		if (i >= opt_len)
			break;
		o = AT(data, end, t + 8 + i, 1);
		if (!o)
			return -1;
		o[0] = pool->bytes[(opt_off + i) & (DSE_OPTIONS_BYTES - 1)];
	}
	if (v6) {
		__u8 *ip = d + 14, *c;
		__u32 sum = 0;
		__u16 r;
#pragma unroll
		for (int i = 0; i < 16; i++)
			sum += ((__u16)ip[8 + 2 * i] << 8) | ip[8 + 2 * i + 1];
		sum += PROTO_UDP + udp_len;
		sum = csum_frame(data, end, u, udp_len, sum);
		r = ~csum_fold32(sum);
		c = AT(data, end, u + 6, 2);
		if (!c)
			return -1;
		wr16(c, r == 0 ? 0xffff : r);
	}
	return 0;
}

/* Strips a VXLAN or Geneve tunnel: returns the VNI, or -1 if the frame is
 * not such a tunnel packet carrying Ethernet. */
__noinline int dse_decap(struct xdp_md *ctx, __u32 l4, __u32 ip_end,
			 __u32 l4_proto)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u32 len = ctx->data_end - ctx->data, udp_end, tun, hdr, vni, ulen;
	__u8 *u, *b;
	__u16 port;

	if (!l4 || l4_proto != PROTO_UDP)
		return -1;
	u = AT(data, end, l4, 8);
	if (!u)
		return -1;
	port = rd16(u + 2);
	ulen = rd16(u + 4);
	udp_end = l4 + (ulen < ip_end - l4 ? ulen : ip_end - l4);
	tun = l4 + 8;
	if (tun > udp_end || udp_end > len || udp_end - tun < 8)
		return -1;
	b = AT(data, end, tun, 8);
	if (!b)
		return -1;
	vni = ((__u32)b[4] << 16) | ((__u32)b[5] << 8) | b[6];
	if (port == PORT_VXLAN) {
		if (!(b[0] & 0x08))
			return -1;
		hdr = 8;
	} else if (port == PORT_GENEVE) {
		if (b[0] >> 6)
			return -1;
		hdr = 8 + (b[0] & 0x3f) * 4;
		if (tun + hdr > udp_end || rd16(b + 2) != ETH_P_TEB)
			return -1;
	} else {
		return -1;
	}
	/* Not a tunnel carrying Ethernet: no room for the inner header. */
	if (udp_end - tun < hdr + 14)
		return -1;
	if (udp_end < len && bpf_xdp_adjust_tail(ctx, (int)udp_end - (int)len))
		return -1;
	if (bpf_xdp_adjust_head(ctx, (int)(tun + hdr)))
		return -1;
	return vni;
}

#define NANO 1000000000ULL

static __always_inline __u64 sat_mul(__u64 a, __u64 b)
{
	__u64 limit;
	if (!a)
		return 0;
	limit = 0xffffffffffffffffULL / a;
	/* Keeps clang from turning the test into a 128-bit multiply, which BPF lacks. */
	asm volatile("" : "+r"(limit));
	return b > limit ? 0xffffffffffffffffULL : a * b;
}

static __always_inline __u64 sat_add(__u64 a, __u64 b)
{
	return a + b < a ? 0xffffffffffffffffULL : a + b;
}

/* The token bucket of dse-datapath's pipeline::Bucket::admit. */
static __always_inline int meter_admit(__u32 idx, __u32 len, __u64 now)
{
	struct meter_record *cfg = bpf_map_lookup_elem(&dse_meter_cfg, &idx);
	struct meter_state *s = bpf_map_lookup_elem(&dse_meters, &idx);
	__u64 cap, cost;
	int ok;
	if (!cfg || !s)
		return 0;
	cap = sat_mul(cfg->burst, NANO);
	cost = cfg->bits ? (__u64)len * 8 * NANO : NANO;
	bpf_spin_lock(&s->lock);
	if (now > s->last_ns) {
		s->nano_tokens = sat_add(s->nano_tokens, sat_mul(now - s->last_ns, cfg->rate));
		s->last_ns = now;
	}
	if (s->nano_tokens > cap)
		s->nano_tokens = cap;
	ok = s->nano_tokens >= cost;
	if (ok)
		s->nano_tokens -= cost;
	bpf_spin_unlock(&s->lock);
	return ok;
}

#endif
