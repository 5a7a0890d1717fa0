//! A traffic generator for the demo: frames built with etherparse, many
//! flows per kind, each kind aimed at one rule of `examples/demo.yaml`.

use etherparse::PacketBuilder;

const MAC_PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const MAC_HOST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// A kind of traffic and the port it arrives on.
pub struct Kind {
    /// What it is.
    pub name: &'static str,
    /// Port index it arrives on.
    pub in_port: u16,
    /// Frames of its flows.
    pub frames: Vec<Vec<u8>>,
}

fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_PEER, MAC_HOST)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, payload)
        .expect("builds");
    v
}

fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_PEER, MAC_HOST)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 1024)
        .syn()
        .write(&mut v, &[])
        .expect("builds");
    v
}

fn icmp(src: [u8; 4], dst: [u8; 4], seq: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(MAC_PEER, MAC_HOST)
        .ipv4(src, dst, 64)
        .icmpv4_echo_request(1, seq)
        .write(&mut v, &[0; 32])
        .expect("builds");
    v
}

fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut body = vec![0x08, 0, 0, 0];
    body.extend_from_slice(&(vni << 8).to_be_bytes());
    body.extend_from_slice(inner);
    udp([198, 51, 100, 1], [198, 51, 100, 2], 49152, 4789, &body)
}

/// The demo's traffic mix, `flows` flows per kind.
pub fn demo_mix(flows: u16) -> Vec<Kind> {
    let client = |i: u16| [203, 0, 113, (i % 250) as u8 + 1];
    let sport = |i: u16| 10_000 + i;
    vec![
        Kind {
            name: "telnet (dropped)",
            in_port: 0,
            frames: (0..flows)
                .map(|i| tcp(client(i), [192, 0, 2, 10], sport(i), 23))
                .collect(),
        },
        Kind {
            name: "DNS (NAT to vm1)",
            in_port: 0,
            frames: (0..flows)
                .map(|i| udp(client(i), [192, 0, 2, 10], sport(i), 53, b"query"))
                .collect(),
        },
        Kind {
            name: "HTTPS (VLAN to vm2)",
            in_port: 0,
            frames: (0..flows)
                .map(|i| tcp(client(i), [192, 0, 2, 20], sport(i), 443))
                .collect(),
        },
        Kind {
            name: "ICMP (metered)",
            in_port: 0,
            frames: (0..flows)
                .map(|i| icmp(client(i), [192, 0, 2, 10], i))
                .collect(),
        },
        Kind {
            name: "VXLAN 5001 (decap to vm2)",
            in_port: 0,
            frames: (0..flows)
                .map(|i| {
                    vxlan(
                        5001,
                        &udp([10, 2, 0, 1], [10, 2, 0, 2], sport(i), 80, b"inner"),
                    )
                })
                .collect(),
        },
        Kind {
            name: "from vm1 (SNAT out)",
            in_port: 1,
            frames: (0..flows)
                .map(|i| udp([10, 1, 0, 53], client(i), 53, sport(i), b"answer"))
                .collect(),
        },
        Kind {
            name: "unmatched (uplink drops)",
            in_port: 0,
            frames: (0..flows)
                .map(|i| udp(client(i), [192, 0, 2, 99], sport(i), 9999, b"x"))
                .collect(),
        },
    ]
}
