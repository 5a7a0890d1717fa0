//! The bench compares like with like: the nftables and OpenFlow rule sets
//! translated from a dse rule set forward and drop exactly the packets
//! that dse's reference pipeline forwards and drops, on the same traffic
//! through the bench's own topology (and so do dse's two backends); the
//! limit and the host path's AF_XDP floor forward every frame.
//!
//! Needs root, bpffs, nft and Open vSwitch (CI installs both; a subject
//! that is not installed fails the test rather than passing it silently).

mod common;

use common::exchange::exchange;
use dse::bench::Subject;
use dse::bench::peers::{TranslateError, nft, openflow};
use dse::bench::subject::{Places, set_up};
use dse::bench::topology::Topology;
use dse_datapath::pipeline::{Installed, Pipeline, Verdict};
use dse_datapath::{Frame, RuleSet};
use etherparse::PacketBuilder;
use std::time::Duration;

const RULES: &str = r#"
ports:
  - {name: pa, index: 0, default: drop}
  - {name: pb, index: 1, default: drop}
rules:
  - {id: 1, priority: 50, match: {in_port: pa, ip_proto: udp, ip_dst: 10.90.1.0/24, l4_dst: 7000}, actions: [{output: pb}]}
  - {id: 2, priority: 60, match: {in_port: pa, ip_proto: udp, ip_src: 10.90.0.128/25}, actions: [drop]}
  - {id: 3, priority: 40, match: {in_port: pa, ip_proto: tcp, l4_dst: "8080/0xfff0"}, actions: [{output: pb}]}
  - {id: 4, priority: 45, match: {in_port: pa, ip_proto: tcp, l4_dst: 8081}, actions: [drop]}
  - {id: 5, priority: 30, match: {in_port: pa, ip_proto: udp, l4_src: 5353}, actions: [{output: pb}]}
  - {id: 6, priority: 30, match: {in_port: pa, ip_proto: udp, l4_src: 5354}, actions: [drop]}
  - {id: 7, priority: 30, match: {in_port: pa, ip_proto: udp, l4_src: 5355}, actions: [{output: pb}]}
  - {id: 8, priority: 10, match: {in_port: pa, eth_type: 0x0800}, actions: [{output: pb}]}
  - {id: 9, priority: 20, match: {in_port: pa, ip_proto: icmp}, actions: [drop]}
  - {id: 10, priority: 5, match: {in_port: pb}, actions: [{output: pa}]}
"#;

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];

/// A frame with marker `n` in its payload.
fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, n: u8) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, &marker(n))
        .unwrap();
    v
}

fn tcp(dport: u16, n: u8) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4([10, 90, 0, 1], [10, 90, 1, 1], 64)
        .tcp(40000, dport, 1, 1024)
        .write(&mut v, &marker(n))
        .unwrap();
    v
}

fn marker(n: u8) -> [u8; 16] {
    let mut m = *b"dse-equivalence-";
    m[15] = n;
    m
}

/// The traffic: each kind of packet the rules tell apart.
fn traffic() -> Vec<(&'static str, Vec<u8>)> {
    let mut icmp = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4([10, 90, 0, 1], [10, 90, 1, 1], 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut icmp, &marker(8))
        .unwrap();
    let mut v6 = Vec::new();
    PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6([0xfd; 16], [0xfe; 16], 64)
        .udp(1000, 7000)
        .write(&mut v6, &marker(10))
        .unwrap();
    vec![
        (
            "udp to 10.90.1.1:7000",
            udp([10, 90, 0, 1], [10, 90, 1, 1], 1000, 7000, 1),
        ),
        (
            "udp from 10.90.0.200",
            udp([10, 90, 0, 200], [10, 90, 1, 1], 1000, 7000, 2),
        ),
        ("tcp to 8085", tcp(8085, 3)),
        ("tcp to 8081", tcp(8081, 4)),
        (
            "udp from 5353",
            udp([10, 90, 0, 1], [10, 50, 0, 1], 5353, 9, 5),
        ),
        (
            "udp from 5354",
            udp([10, 90, 0, 1], [10, 50, 0, 1], 5354, 9, 6),
        ),
        (
            "udp from 5355",
            udp([10, 90, 0, 1], [10, 50, 0, 1], 5355, 9, 7),
        ),
        ("icmp echo", icmp),
        ("tcp to 22", tcp(22, 9)),
        ("ipv6 udp", v6),
        (
            "udp to 10.90.2.1:7000",
            udp([10, 90, 0, 1], [10, 90, 2, 1], 1000, 7000, 11),
        ),
        (
            "udp 5353 from 10.90.0.129",
            udp([10, 90, 0, 129], [10, 50, 0, 1], 5353, 9, 12),
        ),
        ("tcp to 8096", tcp(8096, 13)),
    ]
}

/// Sends each frame into port `pa` and returns the names of those that
/// came out of port `pb`.
fn forwarded(topo: &Topology, frames: &[(&'static str, Vec<u8>)]) -> Vec<&'static str> {
    let sent: Vec<&[u8]> = frames.iter().map(|(_, f)| f.as_slice()).collect();
    let got = exchange(topo, &sent, Duration::from_millis(800));
    let mut out: Vec<&'static str> = frames
        .iter()
        .filter(|(_, f)| {
            let marker = &f[f.len() - 16..];
            got.iter().any(|g| g.windows(16).any(|w| w == marker))
        })
        .map(|(name, _)| *name)
        .collect();
    out.sort();
    out
}

#[test]
fn translations_forward_and_drop_what_dse_does() {
    let set = RuleSet::from_yaml(RULES).unwrap();
    let inst = Installed::build(1, &set).unwrap();
    let mut pipeline = Pipeline::new(64);
    let frames = traffic();
    let mut expected: Vec<&str> = frames
        .iter()
        .filter(|(_, f)| {
            let mut frame = Frame::new(f);
            pipeline.process(&inst, &mut frame, 0, 0) == Verdict::Output(1)
        })
        .map(|(n, _)| *n)
        .collect();
    expected.sort();
    // The set tells packets apart: some are forwarded, some are not.
    assert!(
        expected.len() >= 5 && expected.len() <= frames.len() - 5,
        "{expected:?}"
    );

    let topo = Topology::build(&format!("eq{}", std::process::id() % 100_000)).unwrap();
    let places = Places {
        pins: format!("/sys/fs/bpf/dse-test-eq-{}", std::process::id()).into(),
        work: std::env::temp_dir().join(format!("dse-test-eq-{}", std::process::id())),
        cpu: 0,
    };
    let mut failures = Vec::new();
    // The limit and the floor parse nothing: they forward every frame.
    let mut everything: Vec<&str> = frames.iter().map(|(n, _)| *n).collect();
    everything.sort();
    for subject in Subject::ALL {
        if let Some(why) = subject.missing() {
            failures.push(format!("{}: {why}", subject.label()));
            continue;
        }
        let expected = if subject.follows_rules() {
            &expected
        } else {
            &everything
        };
        let (running, _) = set_up(subject, &topo, &set, &places).unwrap();
        let got = forwarded(&topo, &frames);
        drop(running);
        if got != *expected {
            failures.push(format!(
                "{}: forwarded {got:?}, dse forwards {expected:?}",
                subject.label()
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&places.work);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn translations_refuse_what_they_cannot_carry_by_rule() {
    let interfaces = [
        ("pa".to_string(), "x0".to_string()),
        ("pb".to_string(), "x1".to_string()),
    ]
    .into();
    let nat = RuleSet::from_yaml(
        "ports: [{name: pa, index: 0}, {name: pb, index: 1}]\nrules:\n  - {id: 7, priority: 1, match: {ip_proto: udp}, actions: [{set_ip_dst: 10.0.0.1}, {output: pb}]}\n",
    )
    .unwrap();
    for e in [
        nft::translate(&nat, &interfaces).unwrap_err(),
        openflow::translate(&nat, &interfaces).unwrap_err(),
    ] {
        let text = e.to_string();
        assert!(
            text.contains("rule 7") && text.contains("set_ip_dst"),
            "{text}"
        );
    }
    let tied = RuleSet::from_yaml(
        "ports: [{name: pa, index: 0}, {name: pb, index: 1}]\nrules:\n  - {id: 1, priority: 5, match: {ip_proto: udp}, actions: [drop]}\n  - {id: 2, priority: 5, match: {ip_proto: tcp, l4_dst: 80}, actions: [drop]}\n",
    )
    .unwrap();
    match openflow::translate(&tied, &interfaces) {
        Err(TranslateError::Set { what, .. }) => {
            assert!(what.contains("rules 1 and 2 share priority 5"), "{what}")
        }
        other => panic!("tied priorities over different masks must be refused, got {other:?}"),
    }
    let unbound = [("pa".to_string(), "x0".to_string())].into();
    let e = nft::translate(&nat, &unbound).unwrap_err().to_string();
    assert!(e.contains("\"pb\" has no interface"), "{e}");
}
