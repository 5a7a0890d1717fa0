/* Internet checksums: full (RFC 1071) over a bounded buffer, and
 * incremental updates (RFC 1624), as dse-datapath's wire::checksum. */
#ifndef DSE_CSUM_H
#define DSE_CSUM_H

#include <linux/types.h>

static __always_inline __u16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return sum;
}

/* HC' = ~(~HC + ~m + m') over `n` 16-bit words (n even bytes / 2). */
static __always_inline __u16 csum_update(__u16 check, const __u8 *old,
					 const __u8 *new, int words)
{
	__u32 sum = (__u16)~check;
#pragma unroll
	for (int i = 0; i < 8; i++) {
		if (i >= words)
			break;
		sum += (__u16)~(((__u16)old[2 * i] << 8) | old[2 * i + 1]);
		sum += ((__u16)new[2 * i] << 8) | new[2 * i + 1];
	}
	return ~csum_fold32(sum);
}

/* As csum_update for a UDP checksum: 0 (none) stays 0; a result of 0 is
 * sent as 0xffff. */
static __always_inline __u16 csum_update_udp(__u16 check, const __u8 *old,
					     const __u8 *new, int words)
{
	__u16 c;
	if (check == 0)
		return 0;
	c = csum_update(check, old, new, words);
	return c == 0 ? 0xffff : c;
}

/* The one's-complement sum of 20 bytes (an IPv4 header), folded. */
static __always_inline __u16 csum_ipv4_header(const __u8 *h)
{
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += ((__u16)h[2 * i] << 8) | h[2 * i + 1];
	return ~csum_fold32(sum);
}

#endif
