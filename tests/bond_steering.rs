//! Steering a host's uplink bond as the agent does before and after a DPU
//! reboots, on a bridge-kind bond in a namespace of the test's own (this
//! kernel has no bonding): the host's frames leave through the active
//! member only, a switch announces the host through the new member, the
//! backup member still takes frames in, and bad steering is refused by
//! name with nothing changed. Needs root; under CI=true that is a failure.

mod common;

use common::netns::{Netns, in_ns};
use dse_control::daemon::{bond_active, steer_bond};
use dse_control::lifecycle::{Bond, BondKind};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The host's address on its bond.
const ADDR: [u8; 4] = [10, 77, 0, 2];

/// A namespace with bridge `up0` over members `m2` and `m3`, each a veth
/// whose other end (`p2`, `p3`) stays in the namespace to watch the wire.
fn host(tag: &str) -> (Netns, Bond) {
    let ns = Netns::new(&format!("dse-bond-{tag}"));
    let run = |cmd: &[&str]| in_ns(&ns.name, cmd);
    run(&[
        "ip",
        "link",
        "add",
        "up0",
        "type",
        "bridge",
        "stp_state",
        "0",
    ]);
    for (m, p) in [("m2", "p2"), ("m3", "p3")] {
        run(&["ip", "link", "add", m, "type", "veth", "peer", "name", p]);
        run(&["ip", "link", "set", m, "master", "up0"]);
        run(&["ip", "link", "set", m, "up"]);
        run(&["ip", "link", "set", p, "up"]);
    }
    run(&["ip", "addr", "add", "10.77.0.2/24", "dev", "up0"]);
    run(&["ip", "link", "set", "up0", "up"]);
    // A peer that never answers: datagrams to it are sent at once.
    run(&[
        "ip",
        "neigh",
        "add",
        "10.77.0.9",
        "lladdr",
        "02:00:00:00:00:09",
        "dev",
        "up0",
    ]);
    let bond = Bond {
        name: "up0".into(),
        kind: BondKind::Bridge,
        netns: Some(ns.name.clone()),
        members: [("S2".into(), "m2".into()), ("S3".into(), "m3".into())].into(),
    };
    (ns, bond)
}

/// A packet socket taking every frame that arrives at `ifname` of `ns`.
fn tap(ns: &Netns, ifname: &str) -> OwnedFd {
    ns.run(|| {
        let name = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: plain socket calls with valid arguments; the fd is owned
        // at once.
        unsafe {
            let index = libc::if_nametoindex(name.as_ptr());
            assert_ne!(index, 0, "{ifname} exists");
            let proto = (libc::ETH_P_ALL as u16).to_be();
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                proto.into(),
            );
            assert!(fd >= 0, "a packet socket");
            let sock = OwnedFd::from_raw_fd(fd);
            let mut at: libc::sockaddr_ll = std::mem::zeroed();
            at.sll_family = libc::AF_PACKET as u16;
            at.sll_protocol = proto;
            at.sll_ifindex = index as i32;
            let r = libc::bind(
                fd,
                (&raw const at).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(r, 0, "binds to {ifname}");
            sock
        }
    })
}

/// Every frame `sock` took by `wait` from now (at least those queued now).
fn frames(sock: &OwnedFd, wait: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        // SAFETY: a valid fd and buffer of the stated length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 {
            out.push(buf[..n as usize].to_vec());
        } else if Instant::now() >= deadline {
            return out;
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Whether `f` is a gratuitous ARP for [`ADDR`].
fn is_garp(f: &[u8]) -> bool {
    f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[28..32] == ADDR && f[38..42] == ADDR
}

/// Whether `f` is a UDP datagram to port 7000.
fn is_datagram(f: &[u8]) -> bool {
    f.len() >= 38 && f[12..14] == [0x08, 0x00] && f[23] == 17 && f[36..38] == 7000u16.to_be_bytes()
}

/// Sends a datagram from the host to its silent peer.
fn send(ns: &Netns) {
    ns.run(|| {
        let s = std::net::UdpSocket::bind("10.77.0.2:0").unwrap();
        s.send_to(b"hello", "10.77.0.9:7000").unwrap();
    });
}

#[test]
fn the_host_sends_through_the_active_member_only_and_a_switch_announces_it() {
    if !common::root() {
        return;
    }
    let (ns, bond) = host("st");
    assert_eq!(
        bond_active(&bond).unwrap(),
        None,
        "never steered: no member is active"
    );
    let (p2, p3) = (tap(&ns, "p2"), tap(&ns, "p3"));
    steer_bond(&bond, "m2").expect("steers to m2");
    assert_eq!(bond_active(&bond).unwrap().as_deref(), Some("m2"));
    send(&ns);
    let (on2, on3) = (
        frames(&p2, Duration::from_millis(300)),
        frames(&p3, Duration::ZERO),
    );
    assert!(on2.iter().any(|f| is_garp(f)), "m2 announced the host");
    assert!(
        on2.iter().any(|f| is_datagram(f)),
        "the datagram left by m2"
    );
    assert!(
        !on3.iter().any(|f| is_garp(f) || is_datagram(f)),
        "nothing of the host's left by m3: {on3:?}"
    );

    steer_bond(&bond, "m3").expect("steers to m3");
    assert_eq!(bond_active(&bond).unwrap().as_deref(), Some("m3"));
    send(&ns);
    let (on2, on3) = (
        frames(&p2, Duration::from_millis(300)),
        frames(&p3, Duration::ZERO),
    );
    assert!(on3.iter().any(|f| is_garp(f)), "m3 announced the host");
    assert!(
        on3.iter().any(|f| is_datagram(f)),
        "the datagram left by m3"
    );
    assert!(
        !on2.iter().any(|f| is_garp(f) || is_datagram(f)),
        "nothing of the host's left by m2 any more: {on2:?}"
    );
    // Steering to the active member again changes nothing, says nothing.
    steer_bond(&bond, "m3").unwrap();
    assert!(
        !frames(&p3, Duration::from_millis(200))
            .iter()
            .any(|f| is_garp(f)),
        "no second announcement"
    );

    // The backup member still takes frames in: one that was on its way
    // through the old DPU arrives.
    let rx = ns.run(|| std::net::UdpSocket::bind("10.77.0.2:7100").unwrap());
    rx.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mac = ns.run(|| common::netns::mac_of("up0"));
    let frame = common::packets::v4_macs(
        [2, 0, 0, 0, 0, 9],
        mac,
        None,
        [10, 77, 0, 9],
        ADDR,
        common::packets::L4::Udp(7101, 7100),
        b"late",
    );
    let into_m2 = tap(&ns, "p2");
    // SAFETY: a valid fd and frame; the socket is bound to p2.
    let n = unsafe { libc::send(into_m2.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    assert_eq!(n as usize, frame.len(), "sent into the backup member");
    let mut buf = [0u8; 16];
    let n = rx
        .recv(&mut buf)
        .expect("the late frame arrives through m2");
    assert_eq!(&buf[..n], b"late");
}

#[test]
fn bad_steering_is_refused_by_name_and_changes_nothing() {
    if !common::root() {
        return;
    }
    let (ns, bond) = host("bad");
    steer_bond(&bond, "m2").unwrap();
    let err = steer_bond(&bond, "p2").unwrap_err().to_string();
    assert!(
        err.contains("p2 is not a member of bond up0 in namespace dse-bond-bad"),
        "{err}"
    );
    let as_bonding = Bond {
        kind: BondKind::Bond,
        ..bond.clone()
    };
    let err = steer_bond(&as_bonding, "m3").unwrap_err().to_string();
    assert!(
        err.contains("up0 in namespace dse-bond-bad is not an active-backup bond (kind bridge"),
        "{err}"
    );
    let missing = Bond {
        name: "nope0".into(),
        ..bond.clone()
    };
    let err = steer_bond(&missing, "m3").unwrap_err().to_string();
    assert!(
        err.contains("bond nope0 in namespace dse-bond-bad"),
        "{err}"
    );
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(
        bond_active(&bond).unwrap().as_deref(),
        Some("m2"),
        "still on m2"
    );
    drop(ns);
}

/// Numbers every datagram the host sends to its silent peer while the bond
/// is steered back and forth, and counts each number on both members'
/// wires: each datagram leaves exactly once, through one member or the
/// other, however the switch falls between its copies.
#[test]
fn a_switch_under_load_sends_each_datagram_exactly_once() {
    if !common::root() {
        return;
    }
    let (ns, bond) = host("load");
    let taps = [tap(&ns, "p2"), tap(&ns, "p3")];
    for t in &taps {
        let size: libc::c_int = 64 << 20;
        // SAFETY: a valid fd and option of the stated size.
        let r = unsafe {
            libc::setsockopt(
                t.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                size_of::<libc::c_int>() as u32,
            )
        };
        assert_eq!(r, 0, "a 64 MiB capture buffer");
    }
    steer_bond(&bond, "m2").unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (sent, seen) = std::thread::scope(|s| {
        let counting: Vec<_> = taps
            .iter()
            .map(|t| {
                let stop = &stop;
                s.spawn(move || {
                    let mut seqs = Vec::new();
                    let mut buf = [0u8; 2048];
                    let mut idle_after_stop = 0;
                    while idle_after_stop < 20 {
                        // SAFETY: a valid fd and buffer of the stated length.
                        let n = unsafe {
                            libc::recv(t.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                        };
                        if n > 0 {
                            let f = &buf[..n as usize];
                            if is_datagram(f) && f.len() >= 50 {
                                seqs.push(u64::from_be_bytes(f[42..50].try_into().unwrap()));
                            }
                        } else if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            idle_after_stop += 1;
                            std::thread::sleep(Duration::from_millis(5));
                        } else {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                    }
                    seqs
                })
            })
            .collect();
        let sender = s.spawn(|| {
            ns.enter();
            let sock = std::net::UdpSocket::bind("10.77.0.2:0").unwrap();
            let mut seq = 0u64;
            // Bursts of 50 every half millisecond: about 100,000 a second,
            // well under what a veth and a packet socket take.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..50 {
                    if sock.send_to(&seq.to_be_bytes(), "10.77.0.9:7000").is_ok() {
                        seq += 1;
                    }
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            seq
        });
        for i in 0..150 {
            let to = if i % 2 == 0 { "m3" } else { "m2" };
            steer_bond(&bond, to).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = sender.join().unwrap();
        let seen: Vec<Vec<u64>> = counting.into_iter().map(|c| c.join().unwrap()).collect();
        (sent, seen)
    });
    let drops: Vec<u32> = taps
        .iter()
        .map(|t| {
            let mut st: libc::tpacket_stats = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::tpacket_stats>() as u32;
            // SAFETY: a valid fd and option buffer of the stated size.
            let r = unsafe {
                libc::getsockopt(
                    t.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_STATISTICS,
                    (&raw mut st).cast(),
                    &raw mut len,
                )
            };
            assert_eq!(r, 0);
            st.tp_drops
        })
        .collect();
    assert_eq!(drops, [0, 0], "the captures kept every frame");
    let mut times = vec![0u8; sent as usize];
    for s in seen.iter().flatten() {
        times[*s as usize] += 1;
    }
    let lost: Vec<usize> = (0..times.len()).filter(|&i| times[i] == 0).collect();
    let twice: Vec<usize> = (0..times.len()).filter(|&i| times[i] > 1).collect();
    eprintln!(
        "{sent} datagrams over 150 switches: {} by m2, {} by m3",
        seen[0].len(),
        seen[1].len()
    );
    assert!(
        lost.is_empty() && twice.is_empty(),
        "of {sent} datagrams, {} never left ({:?}...) and {} left twice ({:?}...)",
        lost.len(),
        &lost[..lost.len().min(5)],
        twice.len(),
        &twice[..twice.len().min(5)]
    );
}
