/* Build-time limits, opcodes and flags shared with userspace.
 * Every value here has a mirror in dse-ebpf (src/lib.rs) or in
 * dse-datapath's compiler; the crate asserts they agree. */
#ifndef DSE_CONSTS_H
#define DSE_CONSTS_H

/* The program version: 2 adds a last-seen time to each rule counter, a
 * change of a shared map's value layout that an upgrade must migrate. */
#ifndef DSE_PROGRAM_VERSION
#define DSE_PROGRAM_VERSION 1
#endif

/* Limits: override with -D at build time. */
#ifndef DSE_MAX_MASKS
#define DSE_MAX_MASKS 32 /* the compiler refuses a rule set with more */
#endif
#ifndef DSE_MAX_RULES
#define DSE_MAX_RULES (1 << 21) /* rule slots (records and counters) */
#endif
#ifndef DSE_MAX_ACTION_RECORDS
#define DSE_MAX_ACTION_RECORDS (1 << 20)
#endif
#ifndef DSE_MAX_ACTIONS
#define DSE_MAX_ACTIONS 16 /* actions per rule */
#endif
#ifndef DSE_MAX_PORTS
#define DSE_MAX_PORTS 64
#endif
#ifndef DSE_MAX_IFINDEX
#define DSE_MAX_IFINDEX (1 << 16) /* interfaces with a higher index cannot be ports */
#endif
#ifndef DSE_MAX_METERS
#define DSE_MAX_METERS 1024
#endif
#ifndef DSE_CACHE_ENTRIES
#define DSE_CACHE_ENTRIES (1 << 18) /* per CPU */
#endif
#ifndef DSE_OPTIONS_BYTES
#define DSE_OPTIONS_BYTES 4096 /* Geneve option pool */
#endif
#ifndef DSE_MAX_EXT_HEADERS
#define DSE_MAX_EXT_HEADERS 8 /* IPv6 extension headers walked */
#endif

#define DSE_NO_RULE 0xffffffffu
#define DSE_VLAN_PRESENT 0x1000
#define DSE_TUNNEL_PRESENT 0x01000000u
#define DSE_FLAG_IP 0x01
#define DSE_FLAG_L4 0x02

/* Action opcodes (ActionRecord.op). */
#define OP_SET_ETH_SRC 1
#define OP_SET_ETH_DST 2
#define OP_SET_IP_SRC 3
#define OP_SET_IP_DST 4
#define OP_SET_L4_SRC 5
#define OP_SET_L4_DST 6
#define OP_PUSH_VLAN 7
#define OP_POP_VLAN 8
#define OP_ENCAP_VXLAN 9
#define OP_ENCAP_GENEVE 10
#define OP_DECAP 11
#define OP_METER 12
#define OP_OUTPUT 13
#define OP_DROP 14
#define OP_PASS 15
#define OP_TX 16

/* ActionRecord.flags */
#define ACT_FLAG_V6 0x01
#define ACT_FLAG_FIXED_SRC 0x02

/* Encap action data layout (ActionRecord.data offsets). */
#define ENC_ETH_DST 0
#define ENC_ETH_SRC 6
#define ENC_IP_SRC 12
#define ENC_IP_DST 28
#define ENC_UDP_SRC 44
#define ENC_OPT_OFF 46
#define ENC_OPT_LEN 50

/* Drop reasons, in the order of dse-datapath's DropReason. */
#define DROP_RULE 0
#define DROP_MISS 1
#define DROP_METER 2
#define DROP_MALFORMED 3
#define DROP_TUNNEL 4
#define DROP_RECIRCULATION 5
#define DROP_REASONS 6

/* Verdict kinds (struct dse_last.kind). */
#define VERDICT_OUTPUT 1
#define VERDICT_PASS 2
#define VERDICT_TX 3
#define VERDICT_DROP 4

#define ETH_P_IPV4 0x0800
#define ETH_P_IPV6_ 0x86dd
#define ETH_P_VLAN 0x8100
#define ETH_P_QINQ 0x88a8
#define ETH_P_TEB 0x6558

#define PROTO_HOPOPT 0
#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_ROUTING 43
#define PROTO_FRAGMENT 44
#define PROTO_ICMPV6 58
#define PROTO_DSTOPTS 60

#define PORT_VXLAN 4789
#define PORT_GENEVE 6081

#endif
