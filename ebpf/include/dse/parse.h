/* Parsing a frame into a flow key and a layout: the same rules as
 * dse-datapath's pipeline::parse (Ethernet, up to two VLAN tags, IPv4 with
 * options and fragments, IPv6 with a bounded extension-header walk, TCP,
 * UDP, ICMP/ICMPv6). Later fragments carry no L4 fields. */
#ifndef DSE_PARSE_H
#define DSE_PARSE_H

#include <linux/types.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "consts.h"
#include "structs.h"

/* Offsets are masked with this before they move a packet pointer, so that
 * the verifier sees them bounded. Frames are shorter than this. */
#define OFF_MASK 0x3fff

/* Where the headers are, as offsets from the frame start; 0 when absent. */
struct layout {
	__u32 l3;
	__u32 l4;
	__u32 ip_end;
	__u8 v6;
	__u8 l4_proto;
	__u16 pad;
};

static __always_inline __u16 rd16(const __u8 *p)
{
	return ((__u16)p[0] << 8) | p[1];
}

static __always_inline void wr16(__u8 *p, __u16 v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

/* A pointer to `n` bytes at `off`, or NULL if they are not in the frame. */
#define AT(data, end, off, n)                                                  \
	({                                                                     \
		__u8 *__p = (__u8 *)(data) + ((off) & OFF_MASK);               \
		(__p + (n) > (__u8 *)(end)) ? (__u8 *)0 : __p;                 \
	})

/* The common frame: untagged IPv4 without options, not a later fragment,
 * carrying UDP or TCP. Builds its key word by word (the general parser's
 * byte copies cost more than the rest of a cache hit) and returns 1; any
 * other frame returns 0 and takes parse_frame's general path, which gives
 * the same key and layout for a frame both accept. Only the main program
 * calls it: the re-parse after an action changed the headers is rare. */
static __always_inline int parse_ipv4_fast(void *data, void *end, __u16 in_port,
					   __u32 tun_id, struct flow_key *key,
					   struct layout *l)
{
	__u8 *d = data;
	__u64 *w = (__u64 *)key;
	__u32 len = (__u8 *)end - d, total, l4_end, hl = 8;
	__u8 proto, tcp_flags = 0;

	if (d + 14 + 20 + 20 > (__u8 *)end)
		return 0;
	if (*(__u16 *)(d + 12) != bpf_htons(ETH_P_IPV4) || d[14] != 0x45 ||
	    (*(__u16 *)(d + 20) & bpf_htons(0x1fff)))
		return 0;
	total = rd16(d + 16);
	proto = d[23];
	l4_end = 14 + total;
	if (total < 20 || l4_end > len)
		return 0;
	if (proto == PROTO_TCP) {
		hl = (d[46] >> 4) * 4;
		if (hl < 20)
			return 0;
		tcp_flags = d[47];
	} else if (proto != PROTO_UDP) {
		return 0;
	}
	if (34 + hl > l4_end)
		return 0;
	w[0] = *(__u32 *)(d + 26);
	w[1] = 0;
	w[2] = *(__u32 *)(d + 30);
	w[3] = 0;
	w[4] = *(__u32 *)(d + 6) | (__u64)*(__u16 *)(d + 10) << 32 | (__u64)in_port << 48;
	w[5] = *(__u32 *)d | (__u64)*(__u16 *)(d + 4) << 32;
	w[6] = ETH_P_IPV4 | (__u64)proto << 16 | (__u64)(DSE_FLAG_IP | DSE_FLAG_L4) << 24 |
	       (__u64)rd16(d + 34) << 32 | (__u64)rd16(d + 36) << 48;
	w[7] = tun_id | (__u64)tcp_flags << 32;
	l->l3 = 14;
	l->l4 = 34;
	l->ip_end = l4_end;
	l->v6 = 0;
	l->l4_proto = proto;
	l->pad = 0;
	return 1;
}

/* Parses the frame in [data, end) that came in on `in_port` (with tunnel id
 * `tun_id`, 0 outside a tunnel). Returns 0, or -1 for a malformed frame. */
static __always_inline int parse_frame(void *data, void *end, __u16 in_port,
				       __u32 tun_id, struct flow_key *key,
				       struct layout *l)
{
	__u32 len = (__u8 *)end - (__u8 *)data;
	__u8 *eth = AT(data, end, 0, 14);
	__u32 off, l4_off, l4_end;
	__u16 et;
	__u8 proto;

	__builtin_memset(key, 0, sizeof(*key));
	__builtin_memset(l, 0, sizeof(*l));
	if (!eth)
		return -1;
	__builtin_memcpy(key->eth_dst, eth, 6);
	__builtin_memcpy(key->eth_src, eth + 6, 6);
	key->in_port = in_port;
	key->tun_id = tun_id;
	et = rd16(eth + 12);
	off = 14;
	if (et == ETH_P_VLAN || et == ETH_P_QINQ) {
		__u8 *tag = AT(data, end, 14, 4);
		if (!tag)
			return -1;
		key->vlan = DSE_VLAN_PRESENT | (rd16(tag) & 0x0fff);
		et = rd16(tag + 2);
		off = 18;
		if (et == ETH_P_VLAN) {
			tag = AT(data, end, 18, 4);
			if (!tag)
				return -1;
			et = rd16(tag + 2);
			off = 22;
		}
	}
	key->eth_type = et;
	if (et == ETH_P_IPV4) {
		__u8 *ip = AT(data, end, off, 20);
		__u32 hl, total;
		if (!ip || ip[0] >> 4 != 4)
			return -1;
		hl = (ip[0] & 0x0f) * 4;
		total = rd16(ip + 2);
		if (hl < 20 || off + hl > len || total < hl || off + total > len)
			return -1;
		__builtin_memcpy(key->ip_src, ip + 12, 4);
		__builtin_memcpy(key->ip_dst, ip + 16, 4);
		proto = ip[9];
		key->ip_proto = proto;
		key->flags |= DSE_FLAG_IP;
		l->l3 = off;
		l->ip_end = off + total;
		if (rd16(ip + 6) & 0x1fff)
			return 0;
		l4_off = off + hl;
		l4_end = l->ip_end;
	} else if (et == ETH_P_IPV6_) {
		__u8 *ip = AT(data, end, off, 40);
		__u32 at = 40, chain_end;
		__u8 later = 0, done = 0;
		if (!ip || ip[0] >> 4 != 6)
			return -1;
		chain_end = 40 + rd16(ip + 4);
		if (off + chain_end > len)
			return -1;
		proto = ip[6];
#pragma unroll
		for (int i = 0; i < DSE_MAX_EXT_HEADERS; i++) {
			__u8 *h;
			if (proto == PROTO_HOPOPT || proto == PROTO_ROUTING ||
			    proto == PROTO_DSTOPTS) {
				__u32 n;
				if (at + 8 > chain_end)
					return -1;
				h = AT(data, end, off + at, 8);
				if (!h)
					return -1;
				n = 8 + (__u32)h[1] * 8;
				if (at + n > chain_end)
					return -1;
				proto = h[0];
				at += n;
			} else if (proto == PROTO_FRAGMENT) {
				if (at + 8 > chain_end)
					return -1;
				h = AT(data, end, off + at, 8);
				if (!h)
					return -1;
				proto = h[0];
				at += 8;
				/* A later fragment: what follows is the middle of
				 * the fragmentable part, not headers; its protocol
				 * is what the fragment header names. */
				if (rd16(h + 2) & 0xfff8) {
					later = 1;
					done = 1;
					break;
				}
			} else {
				done = 1;
				break;
			}
		}
		if (!done && (proto == PROTO_HOPOPT || proto == PROTO_ROUTING ||
			      proto == PROTO_DSTOPTS || proto == PROTO_FRAGMENT))
			return -1;
		__builtin_memcpy(key->ip_src, ip + 8, 16);
		__builtin_memcpy(key->ip_dst, ip + 24, 16);
		key->ip_proto = proto;
		key->flags |= DSE_FLAG_IP;
		l->l3 = off;
		l->v6 = 1;
		l->ip_end = off + chain_end;
		if (later)
			return 0;
		l4_off = off + at;
		l4_end = l->ip_end;
	} else {
		return 0;
	}
	if (proto == PROTO_TCP) {
		__u8 *t;
		__u32 hl;
		if (l4_off + 20 > l4_end)
			return -1;
		t = AT(data, end, l4_off, 20);
		if (!t)
			return -1;
		hl = (t[12] >> 4) * 4;
		if (hl < 20 || l4_off + hl > l4_end)
			return -1;
		key->l4_src = rd16(t);
		key->l4_dst = rd16(t + 2);
		key->tcp_flags = t[13];
	} else if (proto == PROTO_UDP) {
		__u8 *u;
		if (l4_off + 8 > l4_end)
			return -1;
		u = AT(data, end, l4_off, 8);
		if (!u)
			return -1;
		key->l4_src = rd16(u);
		key->l4_dst = rd16(u + 2);
	} else if (proto == PROTO_ICMP || proto == PROTO_ICMPV6) {
		__u8 *c;
		if ((proto == PROTO_ICMP) == (l->v6 != 0))
			return 0;
		if (l4_off + 4 > l4_end)
			return -1;
		c = AT(data, end, l4_off, 4);
		if (!c)
			return -1;
		key->l4_src = c[0];
		key->l4_dst = c[1];
	} else {
		return 0;
	}
	key->flags |= DSE_FLAG_L4;
	l->l4 = l4_off;
	l->l4_proto = proto;
	return 0;
}

#endif
