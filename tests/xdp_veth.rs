//! Real traffic through the XDP datapath on veth: namespace A <-> veth <->
//! [XDP on the root-namespace ends] <-> veth <-> namespace B, with real
//! UDP and TCP sockets. Needs root; under CI=true that is a failure.

mod common;

use common::bpf::PinDir;
use common::topology::{Topology, drain};
use dse_datapath::datapath::Datapath;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

const RULES: &str = "  \
  - {id: 1, priority: 10, match: {in_port: pa, ip_proto: udp, l4_dst: 5001}, actions: [{output: pb}]}
  - {id: 2, priority: 10, match: {in_port: pa, ip_proto: udp, l4_dst: 5002}, actions: [drop]}
  - {id: 3, priority: 10, match: {in_port: pa, ip_proto: udp, l4_dst: 5003}, actions: [{set_l4_dst: 5004}, {set_ip_src: 10.77.3.9}, {output: pb}]}
  - {id: 4, priority: 10, match: {in_port: pa, ip_proto: udp, l4_dst: 5005}, actions: [pass]}
  - {id: 5, priority: 10, match: {in_port: pa, ip_proto: udp, l4_dst: 5006}, actions: [{meter: slow}, {output: pb}]}
  - {id: 6, priority: 5, match: {in_port: pa, ip_proto: tcp}, actions: [{output: pb}]}
  - {id: 7, priority: 5, match: {in_port: pb, ip_proto: tcp}, actions: [{output: pa}]}
";

#[test]
fn udp_forward_drop_pass_nat_and_meter() {
    let Some(pins) = PinDir::new("veth-udp") else {
        return;
    };
    let t = Topology::new("u", 3);
    let dp = t.start(&pins, RULES);
    let a = t.udp_in_a();
    let (b1, b2, b4, b5, b6) = (
        t.udp_in_b(5001),
        t.udp_in_b(5002),
        t.udp_in_b(5004),
        t.udp_in_b(5005),
        t.udp_in_b(5006),
    );

    for i in 0..5u8 {
        a.send_to(&[b'f', i], t.b_addr(5001)).unwrap();
        a.send_to(&[b'd', i], t.b_addr(5002)).unwrap();
        a.send_to(&[b'n', i], t.b_addr(5003)).unwrap();
        a.send_to(&[b'p', i], t.b_addr(5005)).unwrap();
    }
    assert_eq!(drain(&b1).len(), 5, "output to pb reaches B's socket");
    assert!(drain(&b2).is_empty(), "dropped datagrams never reach B");
    // NAT: the kernel in B delivers only datagrams whose checksums hold.
    let mut buf = [0u8; 64];
    for i in 0..5u8 {
        let (n, from) = b4
            .recv_from(&mut buf)
            .expect("rewritten datagrams reach port 5004");
        assert_eq!(&buf[..n], &[b'n', i]);
        assert_eq!(
            from.ip().to_string(),
            "10.77.3.9",
            "the source address was rewritten"
        );
    }
    assert!(
        drain(&b5).is_empty(),
        "passed datagrams go to the root stack, not B"
    );

    // The meter: 10 packets of burst, then 100 per second.
    let start = Instant::now();
    for i in 0..1000u32 {
        a.send_to(&i.to_be_bytes(), t.b_addr(5006)).unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let passed = drain(&b6).len() as f64;
    assert!(
        passed >= 10.0 && passed <= 10.0 + 100.0 * elapsed + 2.0,
        "meter passed {passed} of 1000 in {elapsed:.3} s"
    );

    let counts = dp.rule_counters();
    assert_eq!(counts[&1].packets, 5);
    assert_eq!(counts[&2].packets, 5);
    assert_eq!(counts[&3].packets, 5);
    assert_eq!(counts[&4].packets, 5);
    assert_eq!(counts[&5].packets, 1000);
    let s = dp.stats();
    assert_eq!(s.drops["rule"], 5);
    // Also whatever else the namespaces send (IPv6 router solicitations) misses and passes.
    assert!(s.pass >= 5, "{s:?}");
    assert_eq!(s.drops["meter"] as f64, 1000.0 - passed);
}

#[test]
fn tcp_connection_through_the_datapath() {
    let Some(pins) = PinDir::new("veth-tcp") else {
        return;
    };
    let t = Topology::new("t", 4);
    let dp = t.start(&pins, RULES);
    let listen: SocketAddr = t.b_addr(6000);
    let listener = t.b.run(|| TcpListener::bind(listen).expect("listens in B"));
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accepts");
        let mut buf = Vec::new();
        conn.read_to_end(&mut buf).unwrap();
        conn.write_all(&buf).unwrap();
        buf.len()
    });
    let mut client = t.a.run(|| {
        TcpStream::connect_timeout(&listen, Duration::from_secs(3)).expect("connects through XDP")
    });
    let payload = vec![0x5au8; 100_000];
    client.write_all(&payload).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut echo = Vec::new();
    client.read_to_end(&mut echo).unwrap();
    assert_eq!(server.join().unwrap(), payload.len());
    assert_eq!(echo, payload, "the echo comes back intact");
    let counts = dp.rule_counters();
    assert!(
        counts[&6].packets > 10 && counts[&7].packets > 10,
        "{counts:?}"
    );
}
