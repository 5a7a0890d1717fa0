//! The flow key: every field a rule can match, in one flat 64-byte record.
//!
//! The XDP program mirrors this struct byte for byte. Multi-byte fields are
//! in host order. Masks are keys too, and masking is a bitwise AND of the
//! eight 64-bit words.

use crate::rule::{Match, RuleSet};
use crate::wire::ethertype;

/// The flow key.
#[repr(C, align(8))]
#[derive(Debug, Clone, Copy, Default)]
pub struct FlowKey {
    /// IP source: IPv4 in the first four bytes, or IPv6.
    pub ip_src: [u8; 16],
    /// IP destination, laid out as `ip_src`.
    pub ip_dst: [u8; 16],
    /// Ethernet source.
    pub eth_src: [u8; 6],
    /// Index of the port the packet came in on.
    pub in_port: u16,
    /// Ethernet destination.
    pub eth_dst: [u8; 6],
    /// Outer VLAN: 0 when untagged, else [`VLAN_PRESENT`] | VID.
    pub vlan: u16,
    /// EtherType after the VLAN tags.
    pub eth_type: u16,
    /// IP protocol after IPv6 extension headers; 0 when not IP.
    pub ip_proto: u8,
    /// [`FLAG_IP`] and [`FLAG_L4`].
    pub flags: u8,
    /// TCP/UDP source port or ICMP type; 0 without an L4 header.
    pub l4_src: u16,
    /// TCP/UDP destination port or ICMP code; 0 without an L4 header.
    pub l4_dst: u16,
    /// 0 unless the frame came out of a tunnel: then [`TUNNEL_PRESENT`] | VNI.
    pub tun_id: u32,
    /// TCP flags; 0 when not TCP.
    pub tcp_flags: u8,
    /// Always zero.
    pub pad: [u8; 3],
}

const _: () = assert!(size_of::<FlowKey>() == 64);
const _: () = assert!(align_of::<FlowKey>() == 8);

/// Marks a tagged frame in [`FlowKey::vlan`].
pub const VLAN_PRESENT: u16 = 0x1000;
/// Marks a decapsulated frame in [`FlowKey::tun_id`].
pub const TUNNEL_PRESENT: u32 = 0x0100_0000;
/// The packet has a valid IPv4 or IPv6 header.
pub const FLAG_IP: u8 = 0x01;
/// The packet has an L4 header (TCP, UDP, ICMP, ICMPv6) that was parsed:
/// not a later fragment.
pub const FLAG_L4: u8 = 0x02;

impl FlowKey {
    /// The key as eight 64-bit words.
    #[inline]
    pub fn words(&self) -> &[u64; 8] {
        // SAFETY: FlowKey is repr(C), 64 bytes, 8-aligned, with no implicit
        // padding (asserted above), and every bit pattern is a valid u64.
        unsafe { &*(self as *const FlowKey).cast::<[u64; 8]>() }
    }

    /// Builds a key from eight words.
    #[inline]
    pub fn from_words(words: [u64; 8]) -> FlowKey {
        // SAFETY: as in `words`; every bit pattern is a valid FlowKey (all fields are integers).
        unsafe { core::mem::transmute::<[u64; 8], FlowKey>(words) }
    }

    /// The key's 64 bytes in memory order: the XDP program's `struct
    /// flow_key`, and the form the API takes a key in (as hex).
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut out = [0; 64];
        for (chunk, w) in out.chunks_exact_mut(8).zip(self.words()) {
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        out
    }

    /// The key whose [`FlowKey::to_bytes`] are `bytes`.
    pub fn from_bytes(bytes: &[u8; 64]) -> FlowKey {
        FlowKey::from_words(core::array::from_fn(|i| {
            u64::from_ne_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        }))
    }

    /// `self & mask`.
    #[inline]
    pub fn masked(&self, mask: &FlowKey) -> FlowKey {
        let (a, m) = (self.words(), mask.words());
        FlowKey::from_words(core::array::from_fn(|i| a[i] & m[i]))
    }

    /// The 64-bit hash used by the flow cache, the subtables and RSS.
    #[inline]
    pub fn hash(&self) -> u64 {
        hash_words(self.words())
    }

    /// The hash the XDP program can compute too (see [`portable_hash`]).
    pub fn portable_hash(&self) -> u64 {
        portable_hash(self.words())
    }
}

impl PartialEq for FlowKey {
    #[inline]
    fn eq(&self, other: &FlowKey) -> bool {
        // Word-wise rather than field by field: eight compares, no early exits to mispredict.
        let (a, b) = (self.words(), other.words());
        (0..8).fold(0, |acc, i| acc | (a[i] ^ b[i])) == 0
    }
}

impl Eq for FlowKey {}

impl core::hash::Hash for FlowKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.words().hash(state);
    }
}

/// The hash of a sequence of key words, for the flow cache, the subtables
/// and RSS: one 64x64->128-bit multiply per pair of words, the pairs
/// independent of each other (so the multiplies overlap), each pair keyed
/// by its position. Userspace only: BPF has no 128-bit product, and BPF
/// hash maps hash for themselves.
#[inline]
pub fn hash_words(words: &[u64]) -> u64 {
    const SECRET: [u64; 5] = [
        0xa076_1d64_78bd_642f,
        0xe703_7ed1_a0b4_28db,
        0x8ebc_6af0_9c88_c6e3,
        0x5899_65cc_7537_4cc3,
        0x1d8e_4e27_c47d_124f,
    ];
    #[inline(always)]
    fn mum(a: u64, b: u64) -> u64 {
        let r = u128::from(a) * u128::from(b);
        (r as u64) ^ ((r >> 64) as u64)
    }
    let mut h = SECRET[4] ^ words.len() as u64;
    let mut pairs = words.chunks_exact(2);
    for (i, p) in (&mut pairs).enumerate() {
        h ^= mum(p[0] ^ SECRET[i & 3], p[1] ^ SECRET[(i + 1) & 3] ^ SECRET[4]);
    }
    if let [last] = pairs.remainder() {
        h ^= mum(last ^ SECRET[3], SECRET[1] ^ 0x9e37_79b9_7f4a_7c15);
    }
    mum(h ^ SECRET[0], h ^ SECRET[2])
}

/// A hash of a sequence of key words in 64-bit operations only, so that the
/// XDP program can compute the same value: the encap entropy port uses it.
pub fn portable_hash(words: &[u64]) -> u64 {
    const M1: u64 = 0x9e37_79b9_7f4a_7c15;
    const M2: u64 = 0xc2b2_ae3d_27d4_eb4f;
    let mut a: u64 = 0x243f_6a88_85a3_08d3;
    let mut b: u64 = 0x1319_8a2e_0370_7344;
    let mut pairs = words.chunks_exact(2);
    for p in &mut pairs {
        a = a.rotate_left(23) ^ (p[0] ^ 0xa409_3822_299f_31d0).wrapping_mul(M1);
        b = b.rotate_left(23) ^ (p[1] ^ 0x082e_fa98_ec4e_6c89).wrapping_mul(M2);
    }
    if let [last] = pairs.remainder() {
        a = a.rotate_left(23) ^ (last ^ 0x4528_21e6_38d0_1377).wrapping_mul(M1);
    }
    let mut h = a ^ b.rotate_left(32) ^ (words.len() as u64);
    h ^= h >> 32;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 29;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 32)
}

/// A rule's match as a masked key: `value & !mask == 0` always holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaskedKey {
    /// Values of the matched fields.
    pub value: FlowKey,
    /// Which bits matter.
    pub mask: FlowKey,
}

impl MaskedKey {
    /// Whether `key` matches.
    pub fn matches(&self, key: &FlowKey) -> bool {
        key.masked(&self.mask) == self.value
    }

    /// Builds the masked key of a validated match. Prerequisites become
    /// fields: an IP prefix pins the EtherType and the IP flag, an L4 match
    /// the L4 flag (so that it never matches a later fragment).
    pub fn from_match(m: &Match, set: &RuleSet) -> MaskedKey {
        let mut v = FlowKey::default();
        let mut k = FlowKey::default();
        if let Some(p) = &m.in_port {
            v.in_port = set.port(p).expect("validated port").index;
            k.in_port = 0xffff;
        }
        if let Some(mac) = m.eth_src {
            (v.eth_src, k.eth_src) = (mac.0, [0xff; 6]);
        }
        if let Some(mac) = m.eth_dst {
            (v.eth_dst, k.eth_dst) = (mac.0, [0xff; 6]);
        }
        if let Some(vlan) = m.vlan {
            v.vlan = match vlan {
                crate::rule::VlanMatch::Untagged => 0,
                crate::rule::VlanMatch::Vid(id) => VLAN_PRESENT | id,
            };
            k.vlan = VLAN_PRESENT | 0x0fff;
        }
        if let Some(t) = m.eth_type {
            (v.eth_type, k.eth_type) = (t.0, 0xffff);
        }
        for (p, vf, kf) in [
            (m.ip_src, &mut v.ip_src, &mut k.ip_src),
            (m.ip_dst, &mut v.ip_dst, &mut k.ip_dst),
        ] {
            if let Some(p) = p {
                (*vf, *kf) = (p.key_bytes(), p.mask_bytes());
                v.eth_type = if p.addr.is_ipv4() {
                    ethertype::IPV4
                } else {
                    ethertype::IPV6
                };
                k.eth_type = 0xffff;
                v.flags |= FLAG_IP;
                k.flags |= FLAG_IP;
            }
        }
        if let Some(p) = m.ip_proto {
            (v.ip_proto, k.ip_proto) = (p.0, 0xff);
            v.flags |= FLAG_IP;
            k.flags |= FLAG_IP;
        }
        if let Some(l4) = m.l4_src {
            (v.l4_src, k.l4_src) = (l4.value, l4.mask);
        }
        if let Some(l4) = m.l4_dst {
            (v.l4_dst, k.l4_dst) = (l4.value, l4.mask);
        }
        if let Some(f) = m.tcp_flags {
            (v.tcp_flags, k.tcp_flags) = (f.0.value, f.0.mask);
        }
        if m.l4_src.is_some() || m.l4_dst.is_some() || m.tcp_flags.is_some() {
            v.flags |= FLAG_L4;
            k.flags |= FLAG_L4;
        }
        if let Some(vni) = m.vni {
            (v.tun_id, k.tun_id) = (TUNNEL_PRESENT | vni, TUNNEL_PRESENT | 0x00ff_ffff);
        }
        debug_assert_eq!(v.masked(&k), v);
        MaskedKey { value: v, mask: k }
    }
}
