//! The host path on real interfaces: three veths into its namespace, one
//! per port, each frame sent in at its port's peer.
//!
//! - The fixture table, on AF_XDP and on AF_PACKET forced: the same
//!   verdicts and output bytes as the reference pipeline. What leaves a
//!   port arrives at its peer as the expected bytes; a `pass` reaches the
//!   kernel stack of the host path's interface (on AF_XDP, where the stack
//!   sees nothing else, as the expected bytes); every verdict is counted
//!   once. On AF_PACKET a frame the kernel drops before any packet socket
//!   (a cut VLAN tag) is dropped unseen, as the table wants it dropped.
//! - Random rule sets and packets, well-formed and malformed, on AF_XDP:
//!   the reference's verdict and bytes for each, and its rule counters.
//! - With addresses on its interfaces, the stack answers only what the
//!   rules pass.
//!
//! Needs root; under CI=true that is a failure.

mod common;

use common::fixtures::{Expect, document, table};
use common::forward::af_xdp_refused;
use dse::lab::{Netns, Veth};
use dse_datapath::RuleSet;
use dse_datapath::datapath::Datapath;
use dse_datapath::emu::{EmuConfig, HostIo, HostPath, IoChoice, MAX_FRAME, PacketSocket};
use dse_datapath::netdev::interface_index;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The host path's namespace and the wire's, with one veth per port.
struct Wires {
    dut: Netns,
    wire: Netns,
    /// Port index -> the veth: `a` the host path's end, `b` the wire's.
    veths: Vec<Veth>,
}

impl Wires {
    fn build(tag: &str) -> Wires {
        let dut = Netns::create(&format!("dsefx-{tag}-dut")).unwrap();
        let wire = Netns::create(&format!("dsefx-{tag}-wire")).unwrap();
        let veths = (0..3)
            .map(|i| {
                Veth::create(&format!("fd{tag}{i}"), &dut, &format!("fw{tag}{i}"), &wire).unwrap()
            })
            .collect();
        Wires { dut, wire, veths }
    }

    fn interfaces(&self) -> BTreeMap<String, String> {
        self.veths
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("p{i}"), v.a.clone()))
            .collect()
    }
}

fn socket(ns: &Netns, ifname: &str) -> PacketSocket {
    let ifname = ifname.to_string();
    ns.run(move || {
        let i = interface_index(&ifname).expect("the veth");
        PacketSocket::open(i, Duration::from_millis(5)).expect("a packet socket")
    })
    .expect("enters the namespace")
}

/// Every frame `s` receives until it has been quiet for a while.
fn frames(s: &PacketSocket) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut bufs = vec![[0u8; MAX_FRAME]; 8];
    let mut lens = vec![0usize; 8];
    loop {
        let n = s.recv_batch(&mut bufs, &mut lens).expect("receives");
        if n == 0 {
            return got;
        }
        got.extend(
            bufs.iter()
                .zip(&lens)
                .take(n)
                .map(|(b, &l)| b[..l].to_vec()),
        );
    }
}

/// Whether `f` holds within a second.
fn within_a_second(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

fn runs_the_table(w: &Wires, choice: IoChoice, io: HostIo) -> Vec<String> {
    let wire: Vec<PacketSocket> = w.veths.iter().map(|v| socket(&w.wire, &v.b)).collect();
    let stack: Vec<PacketSocket> = w.veths.iter().map(|v| socket(&w.dut, &v.a)).collect();
    let interfaces = w.interfaces();
    let mut failures = Vec::new();
    for fx in table() {
        if fx.input.len() < 14 {
            // No interface carries a frame shorter than an Ethernet header.
            continue;
        }
        let set = RuleSet::from_yaml(&document(fx.rules)).unwrap();
        let host = w
            .dut
            .run(|| HostPath::start_with(set, EmuConfig::default(), &interfaces, choice))
            .unwrap()
            .unwrap_or_else(|e| panic!("{}: {e}", fx.name));
        assert_eq!(host.io().0, io, "{}", fx.name);
        for s in wire.iter().chain(&stack) {
            frames(s);
        }
        let sent = wire[usize::from(fx.in_port)]
            .send_batch(&[&fx.input])
            .expect("sends");
        assert_eq!(sent, 1, "{}", fx.name);
        if !within_a_second(|| host.stats().processed() == 1) {
            // A frame the kernel drops itself (a cut VLAN tag) reaches no
            // packet socket: on AF_PACKET it is dropped unseen.
            let unseen_drop = io == HostIo::AfPacket
                && fx.expect == Expect::Drop(dse_datapath::pipeline::DropReason::Malformed);
            if unseen_drop {
                continue;
            }
            failures.push(format!(
                "{io:?} {}: the host path never saw the frame ({} bytes)",
                fx.name,
                fx.input.len()
            ));
            continue;
        }
        // What the verdict sent anywhere has arrived within moments.
        std::thread::sleep(Duration::from_millis(10));
        let out: Vec<Vec<Vec<u8>>> = wire.iter().map(frames).collect();
        let seen: Vec<Vec<Vec<u8>>> = stack.iter().map(frames).collect();
        let s = host.stats();
        let at = usize::from(fx.in_port);
        let got = match &fx.expect {
            Expect::Output(p, _) if s.output == 1 => out[usize::from(*p)]
                .first()
                .map(|b| Expect::Output(*p, b.clone())),
            Expect::Tx(_) if s.tx == 1 => out[at].first().map(|b| Expect::Tx(b.clone())),
            // On AF_PACKET the stack had its own copy of every frame.
            Expect::Pass(want) if s.pass == 1 && io == HostIo::AfPacket => {
                Some(Expect::Pass(want.clone()))
            }
            Expect::Pass(_) if s.pass == 1 => seen[at].first().map(|b| Expect::Pass(b.clone())),
            Expect::Drop(r) => {
                let key = serde_json::to_value(r).unwrap();
                (s.drops[key.as_str().unwrap()] == 1).then_some(Expect::Drop(*r))
            }
            _ => None,
        };
        let emitted: usize = out.iter().map(Vec::len).sum();
        let want_emitted = usize::from(matches!(fx.expect, Expect::Output(..) | Expect::Tx(_)));
        if got.as_ref() != Some(&fx.expect) || emitted != want_emitted {
            failures.push(format!(
                "{io:?} {}:\n  want {:?}\n  got  {got:?}; {emitted} frames out; stats {s:?}",
                fx.name, fx.expect
            ));
        }
        if io == HostIo::AfXdp && !matches!(fx.expect, Expect::Pass(_)) {
            // The stack sees only what the rules pass.
            let stray: usize = seen.iter().map(Vec::len).sum();
            if stray > 0 {
                failures.push(format!("{io:?} {}: the stack saw {stray} frames", fx.name));
            }
        }
    }
    failures
}

#[test]
fn the_host_path_runs_the_table_on_af_xdp_and_on_af_packet() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var("CI").is_err(), "CI runs this as root");
        return;
    }
    let w = Wires::build(&format!("{}", std::process::id() % 100_000));
    let mut failures = match af_xdp_refused() {
        None => runs_the_table(&w, IoChoice::AfXdp, HostIo::AfXdp),
        Some(why) => {
            // Where AF_XDP is refused, the automatic choice says why.
            let set = RuleSet::from_yaml(&document(table()[0].rules)).unwrap();
            let interfaces = w.interfaces();
            let host = w
                .dut
                .run(|| HostPath::start(set, EmuConfig::default(), &interfaces))
                .unwrap()
                .unwrap();
            assert_eq!(host.io().0, HostIo::AfPacket, "{why}");
            assert!(
                host.io().1.is_some_and(|w| w.contains("live frames")),
                "{:?}, where AF_XDP was refused: {why}",
                host.io()
            );
            Vec::new()
        }
    };
    failures.extend(runs_the_table(&w, IoChoice::AfPacket, HostIo::AfPacket));
    assert!(
        failures.is_empty(),
        "{} fixture failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

const ADDRESSED: &str = r#"
ports:
  - {name: p0, index: 0, default: drop}
  - {name: p1, index: 1, default: drop}
  - {name: p2, index: 2, default: drop}
rules:
  - {id: 1, priority: 10, match: {in_port: p0, ip_proto: udp}, actions: [{output: p1}]}
  - {id: 2, priority: 10, match: {eth_type: arp}, actions: [pass]}
  - {id: 3, priority: 10, match: {in_port: p0, ip_proto: icmp}, actions: [pass]}
"#;

/// An IPv4/UDP frame to the wire's p1 side, marker `n`.
fn udp_frame(n: u8) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 9, 0, 1], [10, 9, 1, 2], 64)
        .udp(1, 2)
        .write(&mut v, &[n])
        .unwrap();
    v
}

#[test]
fn on_af_xdp_the_stack_answers_only_what_the_rules_pass() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var("CI").is_err(), "CI runs this as root");
        return;
    }
    if af_xdp_refused().is_some() {
        return;
    }
    let w = Wires::build(&format!("a{}", std::process::id() % 10_000));
    // The host path's interfaces carry addresses, as a host's do.
    w.dut
        .exec(&["ip", "addr", "add", "10.9.0.1/24", "dev", &w.veths[0].a])
        .unwrap();
    w.dut
        .exec(&["ip", "addr", "add", "10.9.1.1/24", "dev", &w.veths[1].a])
        .unwrap();
    w.wire
        .exec(&["ip", "addr", "add", "10.9.0.2/24", "dev", &w.veths[0].b])
        .unwrap();
    let dut_mac = dse::lab::mac_of(&w.dut, &w.veths[0].a).unwrap();
    let wire_mac = dse::lab::mac_of(&w.wire, &w.veths[0].b).unwrap();
    let wire0 = socket(&w.wire, &w.veths[0].b);
    // An ICMP echo request from the wire to the host path's address: the
    // stack answers it once it has resolved the wire's address by ARP,
    // which the rules must pass too.
    let ping = |seq: u16| {
        frames(&wire0);
        let mut request = Vec::new();
        etherparse::PacketBuilder::ethernet2(wire_mac, dut_mac)
            .ipv4([10, 9, 0, 2], [10, 9, 0, 1], 64)
            .icmpv4_echo_request(7, seq)
            .write(&mut request, b"dse")
            .unwrap();
        wire0.send_batch(&[&request]).unwrap();
        within_a_second(|| {
            frames(&wire0).iter().any(|f| {
                etherparse::SlicedPacket::from_ethernet(f).is_ok_and(|p| {
                    matches!(
                        p.transport,
                        Some(etherparse::TransportSlice::Icmpv4(ref i))
                            if i.icmp_type() == etherparse::Icmpv4Type::EchoReply(
                                etherparse::IcmpEchoHeader { id: 7, seq }
                            )
                    )
                })
            })
        })
    };
    let set = RuleSet::from_yaml(ADDRESSED).unwrap();
    let interfaces = w.interfaces();
    let host = w
        .dut
        .run(|| HostPath::start_with(set, EmuConfig::default(), &interfaces, IoChoice::AfXdp))
        .unwrap()
        .unwrap();
    // ARP and ICMP are passed: the stack answers the ping.
    assert!(
        ping(1),
        "the stack answers what the rules pass: {:?} {:?}",
        host.stats(),
        host.io_counters()
    );
    // UDP is forwarded, addresses or not, and the stack never sees it.
    let rx = socket(&w.wire, &w.veths[1].b);
    let tap = socket(&w.dut, &w.veths[0].a);
    frames(&rx);
    frames(&tap);
    for n in 0..10 {
        wire0.send_batch(&[&udp_frame(n)]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    let out = frames(&rx);
    assert_eq!(out.len(), 10, "every datagram forwarded");
    assert!(
        out.iter().zip(0..).all(|(f, n)| *f == udp_frame(n)),
        "unchanged"
    );
    assert!(frames(&tap).is_empty(), "the stack saw none of them");
    // Without the ICMP rule, a miss on p0 drops: the stack hears nothing.
    let no_icmp = ADDRESSED
        .lines()
        .filter(|l| !l.contains("icmp"))
        .collect::<Vec<_>>();
    let set = RuleSet::from_yaml(&no_icmp.join("\n")).unwrap();
    host.apply(dse_datapath::datapath::Transaction::Replace(set.into()))
        .unwrap();
    assert!(!ping(2), "the stack hears only what the rules pass");
    let s = host.stats();
    assert!(s.pass >= 2 && s.output == 10, "{s:?}");
}

/// Rule sets of the randomized differential, and packets per set.
const RANDOM_SETS: u64 = 8;
const RANDOM_PACKETS: usize = 400;

#[test]
fn on_af_xdp_random_rules_and_packets_agree_with_the_reference() {
    use common::random::{Rng, packet, rule_set};
    use dse_datapath::Frame;
    use dse_datapath::pipeline::{Installed, Pipeline, Verdict};
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var("CI").is_err(), "CI runs this as root");
        return;
    }
    if af_xdp_refused().is_some() {
        return;
    }
    let w = Wires::build(&format!("r{}", std::process::id() % 10_000));
    let wire: Vec<PacketSocket> = w.veths.iter().map(|v| socket(&w.wire, &v.b)).collect();
    let stack: Vec<PacketSocket> = w.veths.iter().map(|v| socket(&w.dut, &v.a)).collect();
    let interfaces = w.interfaces();
    let mut mismatches = Vec::new();
    for round in 0..RANDOM_SETS {
        let mut rng = Rng(0xaf_0000 + round * 0x9e37_79b9);
        let set = rule_set(&mut rng);
        let inst = Installed::build(1, &set).expect("builds");
        let mut reference = Pipeline::new(1024);
        let host = w
            .dut
            .run(|| {
                HostPath::start_with(
                    set.clone(),
                    EmuConfig::default(),
                    &interfaces,
                    IoChoice::AfXdp,
                )
            })
            .unwrap()
            .unwrap();
        for s in wire.iter().chain(&stack) {
            frames(s);
        }
        for i in 0..RANDOM_PACKETS {
            let input = packet(&mut rng);
            let in_port = rng.below(3) as u16;
            let mut frame = Frame::new(&input);
            let want = reference.process(&inst, &mut frame, in_port, 0);
            let want_bytes = frame.data().to_vec();
            let before = host.stats().processed();
            wire[usize::from(in_port)].send_batch(&[&input]).unwrap();
            if !within_a_second(|| host.stats().processed() > before) {
                mismatches.push(format!("set {round} packet {i}: never processed"));
                continue;
            }
            let at = |s: &PacketSocket| {
                let mut got = Vec::new();
                within_a_second(|| {
                    got.extend(frames(s));
                    !got.is_empty()
                });
                got
            };
            let got = match want {
                Verdict::Output(p) => at(&wire[usize::from(p)]),
                Verdict::Tx => at(&wire[usize::from(in_port)]),
                Verdict::Pass => at(&stack[usize::from(in_port)]),
                Verdict::Drop(_) => Vec::new(),
            };
            let same = match want {
                Verdict::Drop(_) => true,
                _ => got == [want_bytes.clone()],
            };
            if !same && mismatches.len() < 10 {
                mismatches.push(format!(
                    "set {round} packet {i} in_port {in_port}: reference {want:?}\n  input {input:02x?}\n  want {want_bytes:02x?}\n  got  {got:02x?}\n  rules {}",
                    serde_json::to_string(&set.rules).unwrap()
                ));
            }
        }
        // Nothing came out that the reference did not send, and the
        // counts agree.
        std::thread::sleep(Duration::from_millis(20));
        let stray: usize = wire.iter().chain(&stack).map(|s| frames(s).len()).sum();
        if stray > 0 {
            mismatches.push(format!("set {round}: {stray} frames nobody expected"));
        }
        let want = reference.counts(&inst);
        let got = host.rule_counters();
        if want != got {
            mismatches.push(format!(
                "set {round}: rule counters\n  reference {want:?}\n  host path {got:?}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
