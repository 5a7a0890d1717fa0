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

/// A raw AF_PACKET socket on `ifname` in the calling thread's namespace,
/// receiving every frame (with a read timeout).
fn capture(ifname: &str) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket calls with valid arguments; the fd is owned below.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let name = std::ffi::CString::new(ifname).unwrap();
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
        let r = libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 300_000,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        );
        // The stack moves a VLAN tag out of the frame; auxdata gives it back.
        let on: libc::c_int = 1;
        let r = libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_AUXDATA,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        );
        assert_eq!(r, 0, "PACKET_AUXDATA: {}", std::io::Error::last_os_error());
        std::os::fd::OwnedFd::from_raw_fd(fd)
    }
}

/// Frames captured on `fd` until it times out, with any VLAN tag the
/// stack took out put back where it was (as libpcap does).
fn captured(fd: &std::os::fd::OwnedFd) -> Vec<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut control = [0u64; 16];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr points to live buffers of the lengths given.
        let (n, msg) = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = size_of_val(&control);
            (libc::recvmsg(fd.as_raw_fd(), &mut msg, 0), msg)
        };
        if n <= 0 {
            return out;
        }
        let mut frame = buf[..n as usize].to_vec();
        // SAFETY: walking the control messages the kernel wrote into `control`.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                    let aux = std::ptr::read_unaligned(
                        libc::CMSG_DATA(c).cast::<libc::tpacket_auxdata>(),
                    );
                    if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                        let tpid = if aux.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                            aux.tp_vlan_tpid
                        } else {
                            0x8100
                        };
                        let mut tag = tpid.to_be_bytes().to_vec();
                        tag.extend_from_slice(&aux.tp_vlan_tci.to_be_bytes());
                        frame.splice(12..12, tag);
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        out.push(frame);
    }
}

#[test]
fn vlan_push_and_geneve_encap_seen_on_the_wire() {
    let Some(pins) = PinDir::new("veth-wire") else {
        return;
    };
    let t = Topology::new("w", 7);
    // Keep the VLAN tag in the frame for the capture.
    common::netns::in_ns(&t.b.name, &["ethtool", "-K", &t.vb.inner, "rxvlan", "off"]);
    let rules = "  \
  - {id: 1, priority: 10, match: {in_port: pa, ip_proto: udp, l4_dst: 5100}, actions: [{push_vlan: {vid: 42, pcp: 5}}, {output: pb}]}
  - {id: 2, priority: 10, match: {in_port: pa, ip_proto: udp, l4_dst: 5101}, actions: [{encap_geneve: {vni: 0x123456, eth_src: '02:00:00:00:00:aa', eth_dst: '02:00:00:00:00:bb', ip_src: 172.16.1.1, ip_dst: 172.16.1.2, options: [{class: 0x0102, type: 7, data: 'cafef00d'}]}}, {output: pb}]}
";
    let _dp = t.start(&pins, rules);
    let cap = t.b.run(|| capture(&t.vb.inner));
    let a = t.udp_in_a();
    a.send_to(b"tagged", t.b_addr(5100)).unwrap();
    a.send_to(b"tunnelled", t.b_addr(5101)).unwrap();
    let frames = captured(&cap);

    // The tagged frame, parsed by etherparse.
    let tagged = frames
        .iter()
        .find_map(|f| {
            let p = etherparse::SlicedPacket::from_ethernet(f).ok()?;
            let vlan = match p.link_exts.first()? {
                etherparse::LinkExtSlice::Vlan(v) => v.to_header(),
                _ => return None,
            };
            let Some(etherparse::TransportSlice::Udp(u)) = p.transport else {
                return None;
            };
            (u.destination_port() == 5100).then_some((vlan, u.payload().to_vec()))
        })
        .expect("the tagged datagram is on B's wire");
    assert_eq!(tagged.0.vlan_id.value(), 42);
    assert_eq!(tagged.0.pcp.value(), 5);
    assert_eq!(tagged.1, b"tagged");

    // The Geneve packet: outer headers by etherparse, the Geneve header by
    // RFC 8926's layout, the inner frame by etherparse again.
    let (outer_ip, geneve) = frames
        .iter()
        .find_map(|f| {
            let p = etherparse::SlicedPacket::from_ethernet(f).ok()?;
            let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
                return None;
            };
            let Some(etherparse::TransportSlice::Udp(u)) = &p.transport else {
                return None;
            };
            (u.destination_port() == 6081).then(|| (ip.header().to_header(), u.payload().to_vec()))
        })
        .expect("the Geneve packet is on B's wire");
    assert_eq!(outer_ip.source, [172, 16, 1, 1]);
    assert_eq!(outer_ip.destination, [172, 16, 1, 2]);
    assert_eq!(outer_ip.header_checksum, outer_ip.calc_header_checksum());
    let opt_len = usize::from(geneve[0] & 0x3f) * 4;
    assert_eq!(geneve[0] >> 6, 0, "version 0");
    assert_eq!(
        &geneve[2..4],
        &[0x65, 0x58],
        "protocol: transparent Ethernet bridging"
    );
    assert_eq!(&geneve[4..7], &[0x12, 0x34, 0x56], "the VNI");
    assert_eq!(
        &geneve[8..8 + opt_len],
        &[0x01, 0x02, 7, 1, 0xca, 0xfe, 0xf0, 0x0d]
    );
    let inner =
        etherparse::SlicedPacket::from_ethernet(&geneve[8 + opt_len..]).expect("an inner frame");
    let Some(etherparse::TransportSlice::Udp(u)) = inner.transport else {
        panic!("the inner frame is the UDP datagram");
    };
    assert_eq!(
        (u.destination_port(), u.payload()),
        (5101, &b"tunnelled"[..])
    );
}

#[test]
fn vxlan_encap_decoded_by_the_kernels_vxlan_device() {
    let Some(pins) = PinDir::new("veth-vxlan") else {
        return;
    };
    let t = Topology::new("x", 8);
    let b = &t.b.name;
    common::netns::in_ns(
        b,
        &[
            "ip",
            "link",
            "add",
            "vx0",
            "type",
            "vxlan",
            "id",
            "100",
            "local",
            &t.b_ip,
            "dstport",
            "4789",
            "dev",
            &t.vb.inner,
        ],
    );
    common::netns::in_ns(b, &["ip", "addr", "add", "192.168.77.2/24", "dev", "vx0"]);
    common::netns::in_ns(b, &["ip", "link", "set", "vx0", "up"]);
    for conf in ["all", "vx0", &t.vb.inner] {
        common::netns::in_ns(
            b,
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{conf}.rp_filter=0"),
            ],
        );
    }
    let vx_mac = t.b.run(|| common::netns::mac_of("vx0"));
    let mac = common::netns::mac_text;
    let rules = format!(
        "  - {{id: 1, priority: 10, match: {{in_port: pa, ip_proto: udp, l4_dst: 5200}}, actions: [\
         {{set_eth_dst: '{}'}}, {{set_ip_dst: 192.168.77.2}}, \
         {{encap_vxlan: {{vni: 100, eth_src: '{}', eth_dst: '{}', ip_src: {}, ip_dst: {}}}}}, {{output: pb}}]}}\n",
        mac(vx_mac),
        mac(t.va.inner_mac),
        mac(t.vb.inner_mac),
        t.a_ip,
        t.b_ip
    );
    let dp = t.start(&pins, &rules);
    let sock = t.b.run(|| {
        let s = std::net::UdpSocket::bind("192.168.77.2:5200")
            .expect("binds on the VXLAN device's address");
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        s
    });
    let a = t.udp_in_a();
    for i in 0..3u8 {
        a.send_to(&[b'v', i], t.b_addr(5200)).unwrap();
    }
    let got = drain(&sock);
    assert_eq!(
        got,
        vec![vec![b'v', 0], vec![b'v', 1], vec![b'v', 2]],
        "the kernel's VXLAN device decapsulated every datagram"
    );
    assert_eq!(dp.rule_counters()[&1].packets, 3);
}
