//! A rule packed into a few dozen bytes, for what holds many rules for a
//! long time: the daemon's desired state and the compiler's index.
//!
//! A [`Rule`] in memory is 144 bytes inline and its actions 32 bytes each,
//! most of both the padding of absent fields; packed, an exact 5-tuple
//! rule with one output is 35 bytes. Each field is written only when
//! present, after a bitmap of those present, so equal rules pack to equal
//! bytes and a rule is compared with a packed one by packing it
//! ([`Packed::is`]) without unpacking anything. Every value a `Rule` can
//! hold, valid or not, packs and unpacks to itself.

use super::{
    Action, Encap, EthType, GeneveOption, IpPrefix, IpProto, Mac, Masked, Match, PushVlan, Rule,
    TcpFlags, VlanMatch,
};
use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A rule in its packed form: the id and priority in the first eight
/// bytes, then its match fields and actions.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Packed(Box<[u8]>);

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.unpack().fmt(f)
    }
}

thread_local! {
    /// The buffer [`Packed::is`] packs into.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Packed {
    /// `rule`, packed.
    pub fn new(rule: &Rule) -> Packed {
        let mut out = Vec::with_capacity(64);
        write_rule(rule, &mut out);
        Packed(out.into_boxed_slice())
    }

    /// The rule back, equal to the one packed.
    pub fn unpack(&self) -> Rule {
        read_rule(&self.0)
    }

    /// Whether this is `rule` packed: true exactly when `unpack() == *rule`.
    pub fn is(&self, rule: &Rule) -> bool {
        SCRATCH.with_borrow_mut(|buf| {
            buf.clear();
            write_rule(rule, buf);
            buf[..] == self.0[..]
        })
    }

    /// The rule's id.
    pub fn id(&self) -> u32 {
        Reader(&self.0).u32()
    }

    /// The rule's priority.
    pub fn priority(&self) -> u32 {
        Reader(&self.0[4..]).u32()
    }

    /// The bytes it holds on the heap.
    pub fn heap_bytes(&self) -> usize {
        self.0.len()
    }
}

impl From<&Rule> for Packed {
    fn from(rule: &Rule) -> Packed {
        Packed::new(rule)
    }
}

/// Rules packed end to end in one buffer, each behind its length: many
/// rules held a moment (while a parse still holds the text it read) at
/// their packed size, 40 bytes an exact rule, and at no allocation a rule.
#[derive(Debug, Default)]
pub(crate) struct PackedRun {
    bytes: Vec<u8>,
    count: usize,
}

impl PackedRun {
    /// An empty run with room for `bytes`.
    pub(crate) fn with_capacity(bytes: usize) -> PackedRun {
        PackedRun {
            bytes: Vec::with_capacity(bytes),
            count: 0,
        }
    }

    /// Packs `rule` onto the end.
    pub(crate) fn push(&mut self, rule: &Rule) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(&[0; 4]);
        write_rule(rule, &mut self.bytes);
        let len = u32::try_from(self.bytes.len() - at - 4).expect("a rule packs below 4 GiB");
        self.bytes[at..at + 4].copy_from_slice(&len.to_le_bytes());
        self.count += 1;
    }

    /// The rules pushed.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The rules back, in the order pushed.
    pub(crate) fn rules(&self) -> impl Iterator<Item = Rule> + '_ {
        let mut rest = &self.bytes[..];
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let (rule, tail) = tail.split_at(u32::from_le_bytes(*len) as usize);
            rest = tail;
            Some(read_rule(rule))
        })
    }
}

fn read_rule(bytes: &[u8]) -> Rule {
    let mut r = Reader(bytes);
    let id = r.u32();
    let priority = r.u32();
    let matches = read_match(&mut r);
    // Most rules have one action: room for one spares a reallocation.
    let mut actions = Vec::with_capacity(1);
    while !r.0.is_empty() {
        actions.push(read_action(&mut r));
    }
    actions.shrink_to_fit();
    Rule {
        id,
        priority,
        matches,
        actions,
    }
}

// Bits of the bitmap of present match fields, in the order written.
const IN_PORT: u16 = 1;
const ETH_SRC: u16 = 1 << 1;
const ETH_DST: u16 = 1 << 2;
const VLAN: u16 = 1 << 3;
const ETH_TYPE: u16 = 1 << 4;
const IP_SRC: u16 = 1 << 5;
const IP_DST: u16 = 1 << 6;
const IP_PROTO: u16 = 1 << 7;
const L4_SRC: u16 = 1 << 8;
const L4_DST: u16 = 1 << 9;
const TCP_FLAGS: u16 = 1 << 10;
const VNI: u16 = 1 << 11;

fn write_rule(rule: &Rule, out: &mut Vec<u8>) {
    out.extend_from_slice(&rule.id.to_le_bytes());
    out.extend_from_slice(&rule.priority.to_le_bytes());
    write_match(&rule.matches, out);
    for a in &rule.actions {
        write_action(a, out);
    }
}

fn write_match(m: &Match, out: &mut Vec<u8>) {
    let present = [
        (m.in_port.is_some(), IN_PORT),
        (m.eth_src.is_some(), ETH_SRC),
        (m.eth_dst.is_some(), ETH_DST),
        (m.vlan.is_some(), VLAN),
        (m.eth_type.is_some(), ETH_TYPE),
        (m.ip_src.is_some(), IP_SRC),
        (m.ip_dst.is_some(), IP_DST),
        (m.ip_proto.is_some(), IP_PROTO),
        (m.l4_src.is_some(), L4_SRC),
        (m.l4_dst.is_some(), L4_DST),
        (m.tcp_flags.is_some(), TCP_FLAGS),
        (m.vni.is_some(), VNI),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0u16, |bits, (_, bit)| bits | bit);
    out.extend_from_slice(&present.to_le_bytes());
    if let Some(p) = &m.in_port {
        write_str(p, out);
    }
    for mac in [&m.eth_src, &m.eth_dst].into_iter().flatten() {
        out.extend_from_slice(&mac.0);
    }
    match m.vlan {
        Some(VlanMatch::Untagged) => out.push(0),
        Some(VlanMatch::Vid(v)) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        None => {}
    }
    if let Some(t) = m.eth_type {
        out.extend_from_slice(&t.0.to_le_bytes());
    }
    for p in [&m.ip_src, &m.ip_dst].into_iter().flatten() {
        out.push(p.len);
        write_ip(&p.addr, out);
    }
    if let Some(p) = m.ip_proto {
        out.push(p.0);
    }
    for l4 in [&m.l4_src, &m.l4_dst].into_iter().flatten() {
        out.extend_from_slice(&l4.value.to_le_bytes());
        out.extend_from_slice(&l4.mask.to_le_bytes());
    }
    if let Some(f) = m.tcp_flags {
        out.extend_from_slice(&[f.0.value, f.0.mask]);
    }
    if let Some(v) = m.vni {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn read_match(r: &mut Reader<'_>) -> Match {
    let present = r.u16();
    let has = |bit: u16| present & bit != 0;
    let mut m = Match::default();
    if has(IN_PORT) {
        m.in_port = Some(r.string());
    }
    if has(ETH_SRC) {
        m.eth_src = Some(r.mac());
    }
    if has(ETH_DST) {
        m.eth_dst = Some(r.mac());
    }
    if has(VLAN) {
        m.vlan = Some(match r.u8() {
            0 => VlanMatch::Untagged,
            _ => VlanMatch::Vid(r.u16()),
        });
    }
    if has(ETH_TYPE) {
        m.eth_type = Some(EthType(r.u16()));
    }
    if has(IP_SRC) {
        m.ip_src = Some(r.prefix());
    }
    if has(IP_DST) {
        m.ip_dst = Some(r.prefix());
    }
    if has(IP_PROTO) {
        m.ip_proto = Some(IpProto(r.u8()));
    }
    if has(L4_SRC) {
        m.l4_src = Some(r.masked());
    }
    if has(L4_DST) {
        m.l4_dst = Some(r.masked());
    }
    if has(TCP_FLAGS) {
        let (value, mask) = (r.u8(), r.u8());
        m.tcp_flags = Some(TcpFlags(Masked { value, mask }));
    }
    if has(VNI) {
        m.vni = Some(r.u32());
    }
    m
}

/// Action tags, one byte before each action's fields.
mod tag {
    pub const SET_ETH_SRC: u8 = 0;
    pub const SET_ETH_DST: u8 = 1;
    pub const SET_IP_SRC: u8 = 2;
    pub const SET_IP_DST: u8 = 3;
    pub const SET_L4_SRC: u8 = 4;
    pub const SET_L4_DST: u8 = 5;
    pub const PUSH_VLAN: u8 = 6;
    pub const POP_VLAN: u8 = 7;
    pub const ENCAP_VXLAN: u8 = 8;
    pub const ENCAP_GENEVE: u8 = 9;
    pub const DECAP: u8 = 10;
    pub const METER: u8 = 11;
    pub const OUTPUT: u8 = 12;
    pub const DROP: u8 = 13;
    pub const PASS: u8 = 14;
    pub const TX: u8 = 15;
}

fn write_action(a: &Action, out: &mut Vec<u8>) {
    match a {
        Action::SetEthSrc(m) | Action::SetEthDst(m) => {
            let t = if matches!(a, Action::SetEthSrc(_)) {
                tag::SET_ETH_SRC
            } else {
                tag::SET_ETH_DST
            };
            out.push(t);
            out.extend_from_slice(&m.0);
        }
        Action::SetIpSrc(ip) => {
            out.push(tag::SET_IP_SRC);
            write_ip(ip, out);
        }
        Action::SetIpDst(ip) => {
            out.push(tag::SET_IP_DST);
            write_ip(ip, out);
        }
        Action::SetL4Src(p) => {
            out.push(tag::SET_L4_SRC);
            out.extend_from_slice(&p.to_le_bytes());
        }
        Action::SetL4Dst(p) => {
            out.push(tag::SET_L4_DST);
            out.extend_from_slice(&p.to_le_bytes());
        }
        Action::PushVlan(v) => {
            out.push(tag::PUSH_VLAN);
            out.extend_from_slice(&v.vid.to_le_bytes());
            out.push(v.pcp);
            out.extend_from_slice(&v.tpid.to_le_bytes());
        }
        Action::PopVlan => out.push(tag::POP_VLAN),
        Action::EncapVxlan(e) => {
            out.push(tag::ENCAP_VXLAN);
            write_encap(e, out);
        }
        Action::EncapGeneve(e) => {
            out.push(tag::ENCAP_GENEVE);
            write_encap(e, out);
        }
        Action::Decap => out.push(tag::DECAP),
        Action::Meter(name) => {
            out.push(tag::METER);
            write_str(name, out);
        }
        Action::Output(name) => {
            out.push(tag::OUTPUT);
            write_str(name, out);
        }
        Action::Drop => out.push(tag::DROP),
        Action::Pass => out.push(tag::PASS),
        Action::Tx => out.push(tag::TX),
    }
}

fn read_action(r: &mut Reader<'_>) -> Action {
    match r.u8() {
        tag::SET_ETH_SRC => Action::SetEthSrc(r.mac()),
        tag::SET_ETH_DST => Action::SetEthDst(r.mac()),
        tag::SET_IP_SRC => Action::SetIpSrc(r.ip()),
        tag::SET_IP_DST => Action::SetIpDst(r.ip()),
        tag::SET_L4_SRC => Action::SetL4Src(r.u16()),
        tag::SET_L4_DST => Action::SetL4Dst(r.u16()),
        tag::PUSH_VLAN => Action::PushVlan(PushVlan {
            vid: r.u16(),
            pcp: r.u8(),
            tpid: r.u16(),
        }),
        tag::POP_VLAN => Action::PopVlan,
        tag::ENCAP_VXLAN => Action::EncapVxlan(Box::new(read_encap(r))),
        tag::ENCAP_GENEVE => Action::EncapGeneve(Box::new(read_encap(r))),
        tag::DECAP => Action::Decap,
        tag::METER => Action::Meter(r.string()),
        tag::OUTPUT => Action::Output(r.string()),
        tag::DROP => Action::Drop,
        tag::PASS => Action::Pass,
        tag::TX => Action::Tx,
        t => unreachable!("action tag {t}: only Packed::new writes these bytes"),
    }
}

fn write_encap(e: &Encap, out: &mut Vec<u8>) {
    out.extend_from_slice(&e.vni.to_le_bytes());
    out.extend_from_slice(&e.eth_src.0);
    out.extend_from_slice(&e.eth_dst.0);
    write_ip(&e.ip_src, out);
    write_ip(&e.ip_dst, out);
    for port in [e.udp_src, e.udp_dst] {
        match port {
            Some(p) => {
                out.push(1);
                out.extend_from_slice(&p.to_le_bytes());
            }
            None => out.push(0),
        }
    }
    write_len(e.options.len(), out);
    for o in &e.options {
        out.extend_from_slice(&o.class.to_le_bytes());
        out.push(o.kind);
        write_str(&o.data, out);
    }
}

fn read_encap(r: &mut Reader<'_>) -> Encap {
    let vni = r.u32();
    let (eth_src, eth_dst) = (r.mac(), r.mac());
    let (ip_src, ip_dst) = (r.ip(), r.ip());
    let mut port = || (r.u8() != 0).then(|| r.u16());
    let (udp_src, udp_dst) = (port(), port());
    let options = (0..r.len())
        .map(|_| GeneveOption {
            class: r.u16(),
            kind: r.u8(),
            data: r.string(),
        })
        .collect();
    Encap {
        vni,
        eth_src,
        eth_dst,
        ip_src,
        ip_dst,
        udp_src,
        udp_dst,
        options,
    }
}

fn write_ip(ip: &IpAddr, out: &mut Vec<u8>) {
    match ip {
        IpAddr::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(6);
            out.extend_from_slice(&a.octets());
        }
    }
}

/// A length as LEB128: one byte below 128.
fn write_len(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    write_len(s.len(), out);
    out.extend_from_slice(s.as_bytes());
}

/// Reads what the writers above wrote; the bytes are only ever theirs.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().expect("split at N")
    }

    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }

    fn mac(&mut self) -> Mac {
        Mac(self.take())
    }

    fn ip(&mut self) -> IpAddr {
        match self.u8() {
            4 => IpAddr::V4(Ipv4Addr::from(self.take::<4>())),
            _ => IpAddr::V6(Ipv6Addr::from(self.take::<16>())),
        }
    }

    fn prefix(&mut self) -> IpPrefix {
        let len = self.u8();
        IpPrefix {
            addr: self.ip(),
            len,
        }
    }

    fn masked(&mut self) -> Masked<u16> {
        let value = self.u16();
        Masked {
            value,
            mask: self.u16(),
        }
    }

    fn len(&mut self) -> usize {
        let mut n = 0usize;
        let mut shift = 0;
        loop {
            let b = self.u8();
            n |= usize::from(b & 0x7f) << shift;
            if b < 0x80 {
                return n;
            }
            shift += 7;
        }
    }

    fn string(&mut self) -> String {
        let n = self.len();
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8(s.to_vec()).expect("packed from a String")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::RuleSet;

    /// Every match field and every action, as the rule files spell them.
    fn every_field_and_action() -> Vec<Rule> {
        let text = include_str!("../../../examples/verify.yaml");
        RuleSet::parse_yaml(text).expect("the example parses").rules
    }

    /// Values no rule file gives but a program can build: a VID out of
    /// range, a name longer than one length byte holds, IPv6 everywhere,
    /// an empty action list.
    fn odd_values() -> Vec<Rule> {
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7));
        vec![
            Rule {
                id: u32::MAX,
                priority: 0,
                matches: Match {
                    in_port: Some("p".repeat(300)),
                    vlan: Some(VlanMatch::Vid(0)),
                    ip_src: Some(IpPrefix { addr: v6, len: 128 }),
                    vni: Some(u32::MAX),
                    ..Match::default()
                },
                actions: vec![],
            },
            Rule {
                id: 0,
                priority: u32::MAX,
                matches: Match {
                    vlan: Some(VlanMatch::Untagged),
                    ..Match::default()
                },
                actions: vec![
                    Action::SetIpDst(v6),
                    Action::EncapGeneve(Box::new(Encap {
                        vni: 1 << 24,
                        eth_src: Mac([1; 6]),
                        eth_dst: Mac([2; 6]),
                        ip_src: v6,
                        ip_dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                        udp_src: None,
                        udp_dst: Some(0),
                        options: vec![GeneveOption {
                            class: 0xffff,
                            kind: 0,
                            data: String::new(),
                        }],
                    })),
                    Action::Meter(String::new()),
                ],
            },
        ]
    }

    #[test]
    fn every_rule_unpacks_to_itself_and_is_itself() {
        let rules: Vec<Rule> = every_field_and_action()
            .into_iter()
            .chain(odd_values())
            .collect();
        assert!(rules.len() > 10);
        for r in &rules {
            let p = Packed::new(r);
            assert_eq!(&p.unpack(), r);
            assert!(p.is(r), "rule {}", r.id);
            assert_eq!((p.id(), p.priority()), (r.id, r.priority));
        }
    }

    #[test]
    fn a_run_gives_back_every_rule_in_order() {
        let rules: Vec<Rule> = every_field_and_action()
            .into_iter()
            .chain(odd_values())
            .collect();
        let mut run = PackedRun::with_capacity(8);
        for r in &rules {
            run.push(r);
        }
        assert_eq!(run.len(), rules.len());
        assert_eq!(run.rules().collect::<Vec<_>>(), rules);
        assert_eq!(PackedRun::default().rules().count(), 0);
    }

    #[test]
    fn a_rule_that_differs_in_any_one_thing_is_not_the_packed_one() {
        for r in every_field_and_action().iter().chain(&odd_values()) {
            let p = Packed::new(r);
            let mut changes: Vec<Rule> = Vec::new();
            let mut with = |f: &dyn Fn(&mut Rule)| {
                let mut c = r.clone();
                f(&mut c);
                if c != *r {
                    changes.push(c);
                }
            };
            with(&|c| c.id ^= 1);
            with(&|c| c.priority ^= 1);
            with(&|c| c.matches = Match::default());
            with(&|c| c.matches.ip_proto = Some(IpProto(99)));
            with(&|c| c.matches.in_port = None);
            with(&|c| c.matches.l4_dst = None);
            with(&|c| c.actions.push(Action::Drop));
            with(&|c| {
                c.actions.pop();
            });
            with(&|c| c.actions.reverse());
            assert!(!changes.is_empty());
            for c in &changes {
                assert!(!p.is(c), "rule {} is not {c:?}", r.id);
                assert_ne!(Packed::new(c), p);
            }
        }
    }

    #[test]
    fn an_exact_five_tuple_rule_packs_small() {
        let r = Rule {
            id: 7,
            priority: 10,
            matches: Match {
                ip_src: Some(IpPrefix {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                    len: 32,
                }),
                ip_dst: Some(IpPrefix {
                    addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                    len: 32,
                }),
                ip_proto: Some(IpProto(17)),
                l4_src: Some(Masked {
                    value: 1,
                    mask: 0xffff,
                }),
                l4_dst: Some(Masked {
                    value: 2,
                    mask: 0xffff,
                }),
                ..Match::default()
            },
            actions: vec![Action::Output("p1".into())],
        };
        assert_eq!(Packed::new(&r).heap_bytes(), 35);
    }
}
