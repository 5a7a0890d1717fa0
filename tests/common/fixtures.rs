//! The fixture table: {description, rules, input packet, expected verdict,
//! expected output packet}. Every backend runs it unchanged.

#![allow(dead_code)]

use super::packets::*;
use dse_datapath::RuleSet;
use dse_datapath::pipeline::{DropReason, Verdict};
use dse_datapath::verify::{Case, Outcome, Subject, check};

/// What a fixture expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Out of this port index, as these bytes.
    Output(u16, Vec<u8>),
    /// To the host stack, as these bytes.
    Pass(Vec<u8>),
    /// Back out of the input port, as these bytes.
    Tx(Vec<u8>),
    /// Dropped for this reason.
    Drop(DropReason),
}

/// One fixture.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: &'static str,
    /// YAML rule list (one `- {...}` per line); ports p0..p2 and meter `slow` are predefined.
    pub rules: &'static str,
    pub in_port: u16,
    pub input: Vec<u8>,
    pub expect: Expect,
}

impl Fixture {
    /// The fixture as the library's case.
    pub fn case(&self) -> Case {
        let rules = RuleSet::from_yaml(&document(self.rules))
            .unwrap_or_else(|e| panic!("{}: rules do not load: {e}", self.name));
        let (verdict, bytes) = match &self.expect {
            Expect::Output(p, b) => (Verdict::Output(*p), b.clone()),
            Expect::Pass(b) => (Verdict::Pass, b.clone()),
            Expect::Tx(b) => (Verdict::Tx, b.clone()),
            Expect::Drop(r) => (Verdict::Drop(*r), Vec::new()),
        };
        Case {
            name: self.name.to_string(),
            rules,
            in_port: self.in_port,
            input: self.input.clone(),
            expect: Outcome::new(verdict, bytes),
        }
    }
}

/// Runs each fixture `rounds` times through the subject `start` makes for
/// it (`None`: stop, the backend cannot run here); the failures, one line
/// each.
pub fn run_table(
    rounds: &[&str],
    mut start: impl FnMut(usize, &Case) -> Option<Box<dyn Subject>>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, fx) in table().into_iter().enumerate() {
        let case = fx.case();
        let Some(mut subject) = start(i, &case) else {
            return failures;
        };
        for round in rounds {
            if let Err(m) = check(&case, subject.as_mut()) {
                failures.push(format!("{m} ({round})"));
            }
        }
    }
    failures
}

/// The rule-set document of a fixture.
pub fn document(rules: &str) -> String {
    if rules.trim().is_empty() {
        return document_with("rules: []");
    }
    document_with(&format!(
        "rules:\n{}",
        rules
            .lines()
            .map(|l| format!("  {}", l.trim()))
            .collect::<Vec<_>>()
            .join("\n")
    ))
}

fn document_with(rules: &str) -> String {
    format!(
        "ports:\n  - {{name: p0, index: 0}}\n  - {{name: p1, index: 1}}\n  - {{name: p2, index: 2, default: drop}}\n\
         meters:\n  - {{name: slow, unit: pps, rate: 1, burst: 2}}\n{rules}\n"
    )
}

fn f(
    name: &'static str,
    rules: &'static str,
    in_port: u16,
    input: Vec<u8>,
    expect: Expect,
) -> Fixture {
    Fixture {
        name,
        rules,
        in_port,
        input,
        expect,
    }
}

use Expect::*;
use L4::*;

fn udp() -> Vec<u8> {
    v4(None, V4_A, V4_B, Udp(1000, 53))
}

const OUT_P1: &str = "- {id: 1, priority: 10, actions: [{output: p1}]}";

/// The whole table.
pub fn table() -> Vec<Fixture> {
    let inner = v4(None, [192, 168, 0, 1], [192, 168, 0, 2], Udp(5000, 80));
    let geneve_opts = [0x01, 0x02, 0x03, 0x01, 0xde, 0xad, 0xbe, 0xef];
    let mut padded = udp();
    padded.resize(80, 0);
    let mut padded_nat = v4(None, [172, 16, 0, 9], V4_B, Udp(1000, 53));
    padded_nat.resize(80, 0);
    let mut truncated_vlan = v4(Some(10), V4_A, V4_B, Udp(1, 2));
    truncated_vlan.truncate(16);
    let mut bad_ihl = udp();
    bad_ihl[14] = 0x44;
    let mut bad_version = udp();
    bad_version[14] = 0x55;
    let mut long_total = udp();
    long_total[16..18].copy_from_slice(&2000u16.to_be_bytes());
    fix_ipv4_checksum(&mut long_total, 14);
    let mut cut_tcp = v4(None, V4_A, V4_B, Tcp(1, 80, 0x02));
    let tcp_len = cut_tcp.len();
    cut_tcp.truncate(14 + 20 + 10);
    cut_tcp[16..18].copy_from_slice(&30u16.to_be_bytes());
    fix_ipv4_checksum(&mut cut_tcp, 14);
    let _ = tcp_len;
    let mut tcp_bad_doff = v4(None, V4_A, V4_B, Tcp(1, 80, 0x02));
    tcp_bad_doff[14 + 20 + 12] = 0x40;
    let mut v6_cut_ext = v6_with_extensions(&[ext8(0)], Udp(1000, 53));
    v6_cut_ext.truncate(14 + 40 + 4);
    v6_cut_ext[18..20].copy_from_slice(&4u16.to_be_bytes());
    let mut udp_zero_csum = udp();
    udp_zero_csum[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let mut udp_zero_csum_nat = v4(None, [172, 16, 0, 9], V4_B, Udp(1000, 53));
    udp_zero_csum_nat[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let mut double_tunnel_inner = vxlan4([10, 9, 9, 1], [10, 9, 9, 2], 1111, 7, &inner);
    double_tunnel_inner[0..6].copy_from_slice(&MAC_A);
    let double_tunnel = vxlan4([10, 1, 1, 1], [10, 1, 1, 2], 2222, 5, &double_tunnel_inner);
    let mut pushed_qinq = v4(Some(20), V4_A, V4_B, Udp(1000, 53));
    {
        // Expected: an 802.1ad tag (vid 30) in front of the existing 802.1Q tag.
        let mut e = pushed_qinq[..12].to_vec();
        e.extend_from_slice(&[0x88, 0xa8, 0x00, 30]);
        e.extend_from_slice(&pushed_qinq[12..]);
        pushed_qinq = e;
    }

    vec![
        // --- match fields ---
        f(
            "in_port matches",
            "- {id: 1, priority: 10, match: {in_port: p0}, actions: [{output: p1}]}",
            0,
            udp(),
            Output(1, udp()),
        ),
        f(
            "in_port mismatch falls to default pass",
            "- {id: 1, priority: 10, match: {in_port: p1}, actions: [drop]}",
            0,
            udp(),
            Pass(udp()),
        ),
        f(
            "eth_src matches",
            "- {id: 1, priority: 10, match: {eth_src: '02:00:00:00:00:0a'}, actions: [drop]}",
            0,
            udp(),
            Drop(DropReason::Rule),
        ),
        f(
            "eth_dst matches",
            "- {id: 1, priority: 10, match: {eth_dst: '02:00:00:00:00:0b'}, actions: [{output: p2}]}",
            0,
            udp(),
            Output(2, udp()),
        ),
        f(
            "eth_dst mismatch",
            "- {id: 1, priority: 10, match: {eth_dst: '02:00:00:00:00:0c'}, actions: [drop]}",
            0,
            udp(),
            Pass(udp()),
        ),
        f(
            "vlan vid matches tagged frame",
            "- {id: 1, priority: 10, match: {vlan: 100}, actions: [{output: p1}]}",
            0,
            v4(Some(100), V4_A, V4_B, Udp(1, 2)),
            Output(1, v4(Some(100), V4_A, V4_B, Udp(1, 2))),
        ),
        f(
            "vlan vid mismatch",
            "- {id: 1, priority: 10, match: {vlan: 101}, actions: [drop]}",
            0,
            v4(Some(100), V4_A, V4_B, Udp(1, 2)),
            Pass(v4(Some(100), V4_A, V4_B, Udp(1, 2))),
        ),
        f(
            "vlan untagged skips tagged frame",
            "- {id: 1, priority: 10, match: {vlan: untagged}, actions: [drop]}",
            0,
            v4(Some(100), V4_A, V4_B, Udp(1, 2)),
            Pass(v4(Some(100), V4_A, V4_B, Udp(1, 2))),
        ),
        f(
            "vlan untagged matches untagged frame",
            "- {id: 1, priority: 10, match: {vlan: untagged}, actions: [drop]}",
            0,
            udp(),
            Drop(DropReason::Rule),
        ),
        f(
            "eth_type arp",
            "- {id: 1, priority: 10, match: {eth_type: arp}, actions: [tx]}",
            0,
            arp(),
            Tx(arp()),
        ),
        f(
            "eth_type ipv6 skips ipv4",
            "- {id: 1, priority: 10, match: {eth_type: ipv6}, actions: [drop]}",
            0,
            udp(),
            Pass(udp()),
        ),
        f(
            "ip_src /24 matches",
            "- {id: 1, priority: 10, match: {ip_src: 10.0.0.0/24}, actions: [{output: p1}]}",
            0,
            udp(),
            Output(1, udp()),
        ),
        f(
            "ip_src /24 mismatch on drop port",
            "- {id: 1, priority: 10, match: {ip_src: 10.0.9.0/24}, actions: [{output: p1}]}",
            2,
            udp(),
            Drop(DropReason::Miss),
        ),
        f(
            "ip_dst /16 matches",
            "- {id: 1, priority: 10, match: {ip_dst: 10.0.0.0/16}, actions: [{output: p1}]}",
            0,
            udp(),
            Output(1, udp()),
        ),
        f(
            "ip_dst v6 /32 matches",
            "- {id: 1, priority: 10, match: {ip_dst: '2001:db8::/32'}, actions: [{output: p1}]}",
            0,
            v6(V6_A, V6_B, Udp(1, 2)),
            Output(1, v6(V6_A, V6_B, Udp(1, 2))),
        ),
        f(
            "ip v6 prefix skips ipv4",
            "- {id: 1, priority: 10, match: {ip_dst: '::/0'}, actions: [drop]}",
            0,
            udp(),
            Pass(udp()),
        ),
        f(
            "ip_proto udp",
            "- {id: 1, priority: 10, match: {ip_proto: udp}, actions: [{output: p1}]}",
            0,
            udp(),
            Output(1, udp()),
        ),
        f(
            "ip_proto tcp skips udp",
            "- {id: 1, priority: 10, match: {ip_proto: tcp}, actions: [drop]}",
            0,
            udp(),
            Pass(udp()),
        ),
        f(
            "ip_proto tcp",
            "- {id: 1, priority: 10, match: {ip_proto: tcp}, actions: [drop]}",
            0,
            v4(None, V4_A, V4_B, Tcp(1, 80, 0x10)),
            Drop(DropReason::Rule),
        ),
        f(
            "l4_dst exact",
            "- {id: 1, priority: 10, match: {ip_proto: udp, l4_dst: 53}, actions: [{output: p1}]}",
            0,
            udp(),
            Output(1, udp()),
        ),
        f(
            "l4_dst masked range",
            "- {id: 1, priority: 10, match: {ip_proto: udp, l4_dst: '0x0400/0xfc00'}, actions: [drop]}",
            0,
            v4(None, V4_A, V4_B, Udp(9, 1500)),
            Drop(DropReason::Rule),
        ),
        f(
            "l4_dst masked range miss",
            "- {id: 1, priority: 10, match: {ip_proto: udp, l4_dst: '0x0400/0xfc00'}, actions: [drop]}",
            0,
            v4(None, V4_A, V4_B, Udp(9, 2048)),
            Pass(v4(None, V4_A, V4_B, Udp(9, 2048))),
        ),
        f(
            "l4_src tcp",
            "- {id: 1, priority: 10, match: {ip_proto: tcp, l4_src: 4242}, actions: [drop]}",
            0,
            v4(None, V4_A, V4_B, Tcp(4242, 80, 0x10)),
            Drop(DropReason::Rule),
        ),
        f(
            "tcp_flags +syn-ack on SYN",
            "- {id: 1, priority: 10, match: {ip_proto: tcp, tcp_flags: '+syn-ack'}, actions: [drop]}",
            0,
            v4(None, V4_A, V4_B, Tcp(1, 80, 0x02)),
            Drop(DropReason::Rule),
        ),
        f(
            "tcp_flags +syn-ack skips SYN-ACK",
            "- {id: 1, priority: 10, match: {ip_proto: tcp, tcp_flags: '+syn-ack'}, actions: [drop]}",
            0,
            v4(None, V4_A, V4_B, Tcp(1, 80, 0x12)),
            Pass(v4(None, V4_A, V4_B, Tcp(1, 80, 0x12))),
        ),
        f(
            "icmp type as l4_src",
            "- {id: 1, priority: 10, match: {ip_proto: icmp, l4_src: 8}, actions: [tx]}",
            0,
            v4(None, V4_A, V4_B, IcmpEcho),
            Tx(v4(None, V4_A, V4_B, IcmpEcho)),
        ),
        f(
            "icmpv6 type as l4_src",
            "- {id: 1, priority: 10, match: {ip_proto: icmpv6, l4_src: 128}, actions: [drop]}",
            0,
            v6(V6_A, V6_B, IcmpEcho),
            Drop(DropReason::Rule),
        ),
        f(
            "vni matches after vxlan decap",
            "- {id: 1, priority: 20, match: {ip_proto: udp, l4_dst: 4789}, actions: [decap]}\n- {id: 2, priority: 10, match: {vni: 42}, actions: [{output: p1}]}",
            0,
            vxlan4([10, 1, 1, 1], [10, 1, 1, 2], 3333, 42, &inner),
            Output(1, inner.clone()),
        ),
        f(
            "vni mismatch after decap takes default",
            "- {id: 1, priority: 20, match: {ip_proto: udp, l4_dst: 4789}, actions: [decap]}\n- {id: 2, priority: 10, match: {vni: 43}, actions: [{output: p1}]}",
            0,
            vxlan4([10, 1, 1, 1], [10, 1, 1, 2], 3333, 42, &inner),
            Pass(inner.clone()),
        ),
        // --- ordering ---
        f(
            "higher priority wins",
            "- {id: 1, priority: 10, actions: [drop]}\n- {id: 2, priority: 20, match: {ip_proto: udp}, actions: [{output: p1}]}",
            0,
            udp(),
            Output(1, udp()),
        ),
        f(
            "tie goes to lower id",
            "- {id: 7, priority: 10, match: {ip_proto: udp}, actions: [{output: p2}]}\n- {id: 3, priority: 10, match: {ip_src: 10.0.0.1}, actions: [{output: p1}]}",
            0,
            udp(),
            Output(1, udp()),
        ),
        f(
            "specific low-priority rule loses to broad high one",
            "- {id: 1, priority: 5, match: {ip_proto: udp, l4_dst: 53, ip_src: 10.0.0.1}, actions: [drop]}\n- {id: 2, priority: 50, match: {in_port: p0}, actions: [{output: p1}]}",
            0,
            udp(),
            Output(1, udp()),
        ),
        f(
            "later subtable still searched when it can win",
            "- {id: 1, priority: 50, match: {ip_src: 10.9.9.9}, actions: [drop]}\n- {id: 2, priority: 40, match: {ip_proto: udp}, actions: [{output: p1}]}\n- {id: 3, priority: 30, match: {in_port: p0}, actions: [{output: p2}]}",
            0,
            udp(),
            Output(1, udp()),
        ),
        // --- actions ---
        f(
            "set_eth_src",
            "- {id: 1, priority: 10, actions: [{set_eth_src: '02:00:00:00:00:99'}, {output: p1}]}",
            0,
            udp(),
            Output(
                1,
                v4_macs(
                    [2, 0, 0, 0, 0, 0x99],
                    MAC_B,
                    None,
                    V4_A,
                    V4_B,
                    Udp(1000, 53),
                    PAYLOAD,
                ),
            ),
        ),
        f(
            "set_eth_dst",
            "- {id: 1, priority: 10, actions: [{set_eth_dst: '02:00:00:00:00:99'}, {output: p1}]}",
            0,
            udp(),
            Output(
                1,
                v4_macs(
                    MAC_A,
                    [2, 0, 0, 0, 0, 0x99],
                    None,
                    V4_A,
                    V4_B,
                    Udp(1000, 53),
                    PAYLOAD,
                ),
            ),
        ),
        f(
            "set_ip_src v4 udp",
            "- {id: 1, priority: 10, actions: [{set_ip_src: 172.16.0.9}, {output: p1}]}",
            0,
            udp(),
            Output(1, v4(None, [172, 16, 0, 9], V4_B, Udp(1000, 53))),
        ),
        f(
            "set_ip_dst v4 tcp",
            "- {id: 1, priority: 10, actions: [{set_ip_dst: 192.168.77.1}, {output: p1}]}",
            0,
            v4(None, V4_A, V4_B, Tcp(1, 80, 0x18)),
            Output(1, v4(None, V4_A, [192, 168, 77, 1], Tcp(1, 80, 0x18))),
        ),
        f(
            "set_ip_src v4 icmp",
            "- {id: 1, priority: 10, actions: [{set_ip_src: 172.16.0.9}, {output: p1}]}",
            0,
            v4(None, V4_A, V4_B, IcmpEcho),
            Output(1, v4(None, [172, 16, 0, 9], V4_B, IcmpEcho)),
        ),
        f(
            "set_ip_src v4 keeps a zero udp checksum",
            "- {id: 1, priority: 10, actions: [{set_ip_src: 172.16.0.9}, {output: p1}]}",
            0,
            udp_zero_csum,
            Output(1, udp_zero_csum_nat),
        ),
        f(
            "set_ip_src v6 udp",
            "- {id: 1, priority: 10, actions: [{set_ip_src: '2001:db8:ffff::7'}, {output: p1}]}",
            0,
            v6(V6_A, V6_B, Udp(1, 2)),
            Output(
                1,
                v6(
                    [0x20, 1, 0xd, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
                    V6_B,
                    Udp(1, 2),
                ),
            ),
        ),
        f(
            "set_ip_dst v6 tcp",
            "- {id: 1, priority: 10, actions: [{set_ip_dst: '2001:db8:ffff::7'}, {output: p1}]}",
            0,
            v6(V6_A, V6_B, Tcp(1, 2, 0x02)),
            Output(
                1,
                v6(
                    V6_A,
                    [0x20, 1, 0xd, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
                    Tcp(1, 2, 0x02),
                ),
            ),
        ),
        f(
            "set_ip_dst v6 icmpv6",
            "- {id: 1, priority: 10, actions: [{set_ip_dst: '2001:db8:ffff::7'}, {output: p1}]}",
            0,
            v6(V6_A, V6_B, IcmpEcho),
            Output(
                1,
                v6(
                    V6_A,
                    [0x20, 1, 0xd, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
                    IcmpEcho,
                ),
            ),
        ),
        f(
            "set_ip v6 leaves ipv4 alone",
            "- {id: 1, priority: 10, actions: [{set_ip_src: '2001:db8::9'}, {output: p1}]}",
            0,
            udp(),
            Output(1, udp()),
        ),
        f(
            "set_l4_src udp",
            "- {id: 1, priority: 10, actions: [{set_l4_src: 40000}, {output: p1}]}",
            0,
            udp(),
            Output(1, v4(None, V4_A, V4_B, Udp(40000, 53))),
        ),
        f(
            "set_l4_dst tcp",
            "- {id: 1, priority: 10, actions: [{set_l4_dst: 8080}, {output: p1}]}",
            0,
            v4(None, V4_A, V4_B, Tcp(1, 80, 0x10)),
            Output(1, v4(None, V4_A, V4_B, Tcp(1, 8080, 0x10))),
        ),
        f(
            "set_l4_dst v6 udp",
            "- {id: 1, priority: 10, actions: [{set_l4_dst: 8053}, {output: p1}]}",
            0,
            v6(V6_A, V6_B, Udp(1, 53)),
            Output(1, v6(V6_A, V6_B, Udp(1, 8053))),
        ),
        f(
            "full NAT: addresses, ports and MACs",
            "- {id: 1, priority: 10, match: {ip_proto: tcp, l4_dst: 80}, actions: [{set_ip_src: 172.16.0.9}, {set_ip_dst: 192.168.77.1}, {set_l4_src: 33000}, {set_l4_dst: 8080}, {set_eth_src: '02:00:00:00:00:0b'}, {set_eth_dst: '02:00:00:00:00:0a'}, {output: p1}]}",
            0,
            v4(None, V4_A, V4_B, Tcp(5555, 80, 0x18)),
            Output(
                1,
                v4_macs(
                    MAC_B,
                    MAC_A,
                    None,
                    [172, 16, 0, 9],
                    [192, 168, 77, 1],
                    Tcp(33000, 8080, 0x18),
                    PAYLOAD,
                ),
            ),
        ),
        f(
            "NAT keeps ethernet padding",
            "- {id: 1, priority: 10, actions: [{set_ip_src: 172.16.0.9}, {output: p1}]}",
            0,
            padded.clone(),
            Output(1, padded_nat),
        ),
        f(
            "push_vlan on untagged",
            "- {id: 1, priority: 10, actions: [{push_vlan: {vid: 100}}, {output: p1}]}",
            0,
            udp(),
            Output(1, v4(Some(100), V4_A, V4_B, Udp(1000, 53))),
        ),
        f(
            "push_vlan 802.1ad on tagged",
            "- {id: 1, priority: 10, actions: [{push_vlan: {vid: 30, tpid: 0x88a8}}, {output: p1}]}",
            0,
            v4(Some(20), V4_A, V4_B, Udp(1000, 53)),
            Output(1, pushed_qinq),
        ),
        f(
            "pop_vlan",
            "- {id: 1, priority: 10, actions: [pop_vlan, {output: p1}]}",
            0,
            v4(Some(100), V4_A, V4_B, Udp(1000, 53)),
            Output(1, udp()),
        ),
        f(
            "pop_vlan on untagged is a no-op",
            "- {id: 1, priority: 10, actions: [pop_vlan, {output: p1}]}",
            0,
            udp(),
            Output(1, udp()),
        ),
        f(
            "encap_vxlan ipv4",
            "- {id: 1, priority: 10, actions: [{encap_vxlan: {vni: 42, eth_src: '02:00:00:00:00:0b', eth_dst: '02:00:00:00:00:0a', ip_src: 10.1.1.1, ip_dst: 10.1.1.2, udp_src: 3333}}, {output: p1}]}",
            0,
            inner.clone(),
            Output(1, vxlan4([10, 1, 1, 1], [10, 1, 1, 2], 3333, 42, &inner)),
        ),
        f(
            "encap_vxlan ipv6 computes the udp checksum",
            "- {id: 1, priority: 10, actions: [{encap_vxlan: {vni: 42, eth_src: '02:00:00:00:00:0b', eth_dst: '02:00:00:00:00:0a', ip_src: '2001:db8::1', ip_dst: '2001:db8:1::2', udp_src: 3333}}, {output: p1}]}",
            0,
            inner.clone(),
            Output(1, vxlan6(V6_A, V6_B, 3333, 42, &inner)),
        ),
        f(
            "encap_geneve with options",
            "- {id: 1, priority: 10, actions: [{encap_geneve: {vni: 7, eth_src: '02:00:00:00:00:0b', eth_dst: '02:00:00:00:00:0a', ip_src: 10.1.1.1, ip_dst: 10.1.1.2, udp_src: 4444, options: [{class: 0x0102, type: 3, data: deadbeef}]}}, {output: p1}]}",
            0,
            inner.clone(),
            Output(
                1,
                geneve4([10, 1, 1, 1], [10, 1, 1, 2], 4444, 7, &geneve_opts, &inner),
            ),
        ),
        f(
            "decap geneve with options",
            "- {id: 1, priority: 20, match: {ip_proto: udp, l4_dst: 6081}, actions: [decap]}\n- {id: 2, priority: 10, match: {vni: 7, ip_proto: udp, l4_dst: 80}, actions: [{output: p2}]}",
            0,
            geneve4([10, 1, 1, 1], [10, 1, 1, 2], 4444, 7, &geneve_opts, &inner),
            Output(2, inner.clone()),
        ),
        f(
            "decap then NAT the inner frame",
            "- {id: 1, priority: 20, match: {ip_proto: udp, l4_dst: 4789}, actions: [decap]}\n- {id: 2, priority: 10, match: {vni: 42}, actions: [{set_ip_dst: 192.168.0.200}, {output: p1}]}",
            0,
            vxlan4([10, 1, 1, 1], [10, 1, 1, 2], 3333, 42, &inner),
            Output(
                1,
                v4(None, [192, 168, 0, 1], [192, 168, 0, 200], Udp(5000, 80)),
            ),
        ),
        f(
            "decap on a plain packet drops",
            "- {id: 1, priority: 10, actions: [decap]}",
            0,
            udp(),
            Drop(DropReason::Tunnel),
        ),
        f(
            "a second decap drops",
            "- {id: 1, priority: 10, match: {ip_proto: udp, l4_dst: 4789}, actions: [decap]}",
            0,
            double_tunnel,
            Drop(DropReason::Recirculation),
        ),
        f(
            "meter admits within the burst",
            "- {id: 1, priority: 10, actions: [{meter: slow}, {output: p1}]}",
            0,
            udp(),
            Output(1, udp()),
        ),
        f("output", OUT_P1, 0, udp(), Output(1, udp())),
        f(
            "drop",
            "- {id: 1, priority: 10, actions: [drop]}",
            0,
            udp(),
            Drop(DropReason::Rule),
        ),
        f(
            "pass",
            "- {id: 1, priority: 10, actions: [pass]}",
            2,
            udp(),
            Pass(udp()),
        ),
        f(
            "tx",
            "- {id: 1, priority: 10, actions: [tx]}",
            1,
            udp(),
            Tx(udp()),
        ),
        f("miss on a pass port", "", 0, udp(), Pass(udp())),
        f("miss on a drop port", "", 2, udp(), Drop(DropReason::Miss)),
        // --- malformed and unusual input ---
        f(
            "runt frame",
            OUT_P1,
            0,
            vec![0u8; 10],
            Drop(DropReason::Malformed),
        ),
        f(
            "truncated vlan tag",
            OUT_P1,
            0,
            truncated_vlan,
            Drop(DropReason::Malformed),
        ),
        f("bad IHL", OUT_P1, 0, bad_ihl, Drop(DropReason::Malformed)),
        f(
            "bad IP version",
            OUT_P1,
            0,
            bad_version,
            Drop(DropReason::Malformed),
        ),
        f(
            "IPv4 total length past the frame",
            OUT_P1,
            0,
            long_total,
            Drop(DropReason::Malformed),
        ),
        f(
            "IPv4 options are skipped",
            "- {id: 1, priority: 10, match: {ip_proto: udp, l4_dst: 53}, actions: [{output: p1}]}",
            0,
            v4_with_options(3, 53),
            Output(1, v4_with_options(3, 53)),
        ),
        f(
            "NAT with IPv4 options",
            "- {id: 1, priority: 10, actions: [{set_l4_dst: 5353}, {output: p1}]}",
            0,
            v4_with_options(2, 53),
            Output(1, v4_with_options(2, 5353)),
        ),
        f(
            "IPv4 first fragment matches L4",
            "- {id: 1, priority: 10, match: {ip_proto: udp, l4_dst: 53}, actions: [{output: p1}]}",
            0,
            v4_fragment(0, true, 16),
            Output(1, v4_fragment(0, true, 16)),
        ),
        f(
            "IPv4 later fragment skips L4 rule",
            "- {id: 1, priority: 20, match: {ip_proto: udp, l4_dst: 53}, actions: [drop]}\n- {id: 2, priority: 10, match: {ip_proto: udp}, actions: [{output: p1}]}",
            0,
            v4_fragment(2, false, 16),
            Output(1, v4_fragment(2, false, 16)),
        ),
        f(
            "IPv4 first fragment too short for UDP",
            OUT_P1,
            0,
            v4_fragment(0, true, 4),
            Drop(DropReason::Malformed),
        ),
        f(
            "IPv6 hop-by-hop and dest options are skipped",
            "- {id: 1, priority: 10, match: {ip_proto: udp, l4_dst: 53}, actions: [{output: p1}]}",
            0,
            v6_with_extensions(&[ext8(0), ext8(60)], Udp(1000, 53)),
            Output(1, v6_with_extensions(&[ext8(0), ext8(60)], Udp(1000, 53))),
        ),
        f(
            "IPv6 routing header is skipped",
            "- {id: 1, priority: 10, match: {ip_proto: tcp, l4_dst: 22}, actions: [drop]}",
            0,
            v6_with_extensions(&[ext8(43)], Tcp(1, 22, 0x02)),
            Drop(DropReason::Rule),
        ),
        f(
            "IPv6 first fragment matches L4",
            "- {id: 1, priority: 10, match: {ip_proto: udp, l4_dst: 53}, actions: [drop]}",
            0,
            v6_with_extensions(&[ext_frag(0, true)], Udp(1000, 53)),
            Drop(DropReason::Rule),
        ),
        f(
            "IPv6 later fragment skips L4 rule",
            "- {id: 1, priority: 20, match: {ip_proto: udp, l4_dst: 53}, actions: [drop]}\n- {id: 2, priority: 10, match: {ip_proto: udp}, actions: [{output: p1}]}",
            0,
            v6_with_extensions(&[ext_frag(5, false)], Udp(1000, 53)),
            Output(1, v6_with_extensions(&[ext_frag(5, false)], Udp(1000, 53))),
        ),
        f(
            "IPv6 later fragment naming hop-by-hop: L3 only",
            "- {id: 1, priority: 20, match: {ip_proto: udp}, actions: [drop]}\n- {id: 2, priority: 10, match: {ip_proto: 0}, actions: [{output: p1}]}",
            0,
            v6_later_fragment(0, &[17, 0, 0, 0, 0, 0, 0, 0, 3, 232, 0, 53, 0, 8, 0, 0]),
            Output(
                1,
                v6_later_fragment(0, &[17, 0, 0, 0, 0, 0, 0, 0, 3, 232, 0, 53, 0, 8, 0, 0]),
            ),
        ),
        f(
            "IPv6 later fragment naming routing: L3 only",
            "- {id: 1, priority: 20, match: {ip_proto: udp}, actions: [drop]}\n- {id: 2, priority: 10, match: {ip_proto: 43}, actions: [{output: p1}]}",
            0,
            v6_later_fragment(43, &[17, 0, 0, 0, 0, 0, 0, 0, 3, 232, 0, 53, 0, 8, 0, 0]),
            Output(
                1,
                v6_later_fragment(43, &[17, 0, 0, 0, 0, 0, 0, 0, 3, 232, 0, 53, 0, 8, 0, 0]),
            ),
        ),
        f(
            "IPv6 later fragment naming fragment: L3 only",
            "- {id: 1, priority: 20, match: {ip_proto: udp}, actions: [drop]}\n- {id: 2, priority: 10, match: {ip_proto: 44}, actions: [{output: p1}]}",
            0,
            v6_later_fragment(44, &[17, 0, 0, 0, 0, 0, 0, 0, 3, 232, 0, 53, 0, 8, 0, 0]),
            Output(
                1,
                v6_later_fragment(44, &[17, 0, 0, 0, 0, 0, 0, 0, 3, 232, 0, 53, 0, 8, 0, 0]),
            ),
        ),
        f(
            "IPv6 later fragment naming destination options: L3 only",
            "- {id: 1, priority: 20, match: {ip_proto: udp}, actions: [drop]}\n- {id: 2, priority: 10, match: {ip_proto: 60}, actions: [{output: p1}]}",
            0,
            v6_later_fragment(60, &[17, 0, 0, 0, 0, 0, 0, 0, 3, 232, 0, 53, 0, 8, 0, 0]),
            Output(
                1,
                v6_later_fragment(60, &[17, 0, 0, 0, 0, 0, 0, 0, 3, 232, 0, 53, 0, 8, 0, 0]),
            ),
        ),
        f(
            "IPv6 later fragment naming UDP: no L4 fields",
            "- {id: 1, priority: 20, match: {ip_proto: udp, l4_dst: 53}, actions: [drop]}\n- {id: 2, priority: 10, match: {ip_proto: udp}, actions: [{output: p1}]}",
            0,
            v6_later_fragment(17, &[3, 232, 0, 53, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]),
            Output(
                1,
                v6_later_fragment(17, &[3, 232, 0, 53, 0, 16, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]),
            ),
        ),
        f(
            "IPv6 later fragment naming TCP: no L4 fields",
            "- {id: 1, priority: 20, match: {ip_proto: tcp, l4_dst: 53}, actions: [drop]}\n- {id: 2, priority: 10, match: {ip_proto: tcp}, actions: [{output: p1}]}",
            0,
            v6_later_fragment(
                6,
                &[
                    3, 232, 0, 53, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
                ],
            ),
            Output(
                1,
                v6_later_fragment(
                    6,
                    &[
                        3, 232, 0, 53, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
                    ],
                ),
            ),
        ),
        f(
            "IPv6 later fragment naming ICMPv6: no L4 fields",
            "- {id: 1, priority: 20, match: {ip_proto: icmpv6, l4_src: 128}, actions: [drop]}\n- {id: 2, priority: 10, match: {ip_proto: icmpv6}, actions: [{output: p1}]}",
            0,
            v6_later_fragment(58, &[128, 0, 0, 0, 0, 1, 0, 1]),
            Output(1, v6_later_fragment(58, &[128, 0, 0, 0, 0, 1, 0, 1])),
        ),
        f(
            "IPv6 NAT with extension headers",
            "- {id: 1, priority: 10, actions: [{set_l4_dst: 5353}, {output: p1}]}",
            0,
            v6_with_extensions(&[ext8(0)], Udp(1000, 53)),
            Output(1, v6_with_extensions(&[ext8(0)], Udp(1000, 5353))),
        ),
        f(
            "IPv6 chain over the bound",
            OUT_P1,
            0,
            v6_with_extensions(
                &[
                    ext8(60),
                    ext8(60),
                    ext8(60),
                    ext8(60),
                    ext8(60),
                    ext8(60),
                    ext8(60),
                    ext8(60),
                    ext8(60),
                ],
                Udp(1, 2),
            ),
            Drop(DropReason::Malformed),
        ),
        f(
            "IPv6 cut extension header",
            OUT_P1,
            0,
            v6_cut_ext,
            Drop(DropReason::Malformed),
        ),
        f(
            "TCP header cut short",
            OUT_P1,
            0,
            cut_tcp,
            Drop(DropReason::Malformed),
        ),
        f(
            "TCP data offset below 5",
            OUT_P1,
            0,
            tcp_bad_doff,
            Drop(DropReason::Malformed),
        ),
        f(
            "zero-length UDP payload",
            "- {id: 1, priority: 10, match: {ip_proto: udp, l4_dst: 9}, actions: [{output: p1}]}",
            0,
            v4_macs(MAC_A, MAC_B, None, V4_A, V4_B, Udp(1, 9), &[]),
            Output(1, v4_macs(MAC_A, MAC_B, None, V4_A, V4_B, Udp(1, 9), &[])),
        ),
        f(
            "QinQ matches the outer vid",
            "- {id: 1, priority: 10, match: {vlan: 300, ip_proto: udp, l4_dst: 53}, actions: [{output: p1}]}",
            0,
            qinq(300, 400),
            Output(1, qinq(300, 400)),
        ),
        f(
            "QinQ pop leaves the inner tag",
            "- {id: 1, priority: 10, actions: [pop_vlan, {output: p1}]}",
            0,
            qinq(300, 400),
            Output(1, v4(Some(400), V4_A, V4_B, Udp(1000, 53))),
        ),
    ]
}
