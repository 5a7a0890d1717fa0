//! Two namespaces joined through an XDP datapath on veth.

#![allow(dead_code)]

use super::bpf::PinDir;
use super::netns::{Netns, Veth, in_ns, mac_text};
use dse_datapath::RuleSet;
use dse_datapath::xdp::{XdpConfig, XdpDatapath};
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

/// Two namespaces joined through the datapath: ports `pa` and `pb`.
pub struct Topology {
    pub a: Netns,
    pub b: Netns,
    pub va: Veth,
    pub vb: Veth,
    pub a_ip: String,
    pub b_ip: String,
}

impl Topology {
    /// `tag` (a few characters) keeps names and the subnet 10.77.`net`.0/24
    /// apart from other tests running at the same time.
    pub fn new(tag: &str, net: u8) -> Topology {
        let a = Netns::new(&format!("dse-{tag}-a"));
        let b = Netns::new(&format!("dse-{tag}-b"));
        let (a_ip, b_ip) = (format!("10.77.{net}.1"), format!("10.77.{net}.2"));
        let va = Veth::new(
            &format!("dx{tag}a"),
            &format!("dx{tag}ai"),
            &a,
            &format!("{a_ip}/24"),
        );
        let vb = Veth::new(
            &format!("dx{tag}b"),
            &format!("dx{tag}bi"),
            &b,
            &format!("{b_ip}/24"),
        );
        // Static neighbours: the datapath forwards IP, not ARP.
        in_ns(
            &a.name,
            &[
                "ip",
                "neigh",
                "add",
                &b_ip,
                "lladdr",
                &mac_text(vb.inner_mac),
                "dev",
                &va.inner,
            ],
        );
        in_ns(
            &b.name,
            &[
                "ip",
                "neigh",
                "add",
                &a_ip,
                "lladdr",
                &mac_text(va.inner_mac),
                "dev",
                &vb.inner,
            ],
        );
        Topology {
            a,
            b,
            va,
            vb,
            a_ip,
            b_ip,
        }
    }

    /// The topology `Topology::new(tag, net)` made in another process, by
    /// its names only. Dropping it removes the namespaces: forget it in a
    /// process that is not the topology's owner.
    pub fn existing(tag: &str, net: u8) -> Topology {
        let veth = |outer: String, inner: String| Veth {
            outer,
            inner,
            inner_mac: [0; 6],
        };
        Topology {
            a: Netns {
                name: format!("dse-{tag}-a"),
            },
            b: Netns {
                name: format!("dse-{tag}-b"),
            },
            va: veth(format!("dx{tag}a"), format!("dx{tag}ai")),
            vb: veth(format!("dx{tag}b"), format!("dx{tag}bi")),
            a_ip: format!("10.77.{net}.1"),
            b_ip: format!("10.77.{net}.2"),
        }
    }

    /// The rule set `rules` (YAML list lines) over ports `pa` and `pb`
    /// and a meter `slow` (100 pps, burst 10).
    pub fn rule_set(rules: &str) -> RuleSet {
        let doc = format!(
            "ports:\n  - {{name: pa, index: 0}}\n  - {{name: pb, index: 1}}\n\
             meters:\n  - {{name: slow, unit: pps, rate: 100, burst: 10}}\nrules:\n{rules}"
        );
        RuleSet::from_yaml(&doc).expect("rules load")
    }

    /// A datapath started on both ports with `rules`.
    pub fn start(&self, pins: &PinDir, rules: &str) -> XdpDatapath {
        XdpDatapath::start(Self::rule_set(rules), self.config(pins)).expect("the datapath starts")
    }

    /// The configuration binding `pa` and `pb` to the two root-side veths.
    pub fn config(&self, pins: &PinDir) -> XdpConfig {
        XdpConfig {
            interfaces: [
                ("pa".to_string(), self.va.outer.clone()),
                ("pb".to_string(), self.vb.outer.clone()),
            ]
            .into(),
            ..pins.config()
        }
    }

    pub fn udp_in_b(&self, port: u16) -> UdpSocket {
        let addr: SocketAddr = format!("{}:{port}", self.b_ip).parse().unwrap();
        self.b.run(|| {
            let s = UdpSocket::bind(addr).expect("binds in B");
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            // Room for a whole burst: on a busy machine the receiving
            // thread may not run for a while, and a default-sized queue
            // (about 300 small datagrams) then overflows in the test, not
            // in the datapath (seen as B's UDP RcvbufErrors).
            force_rcvbuf(&s, 8 << 20);
            s
        })
    }

    pub fn udp_in_a(&self) -> UdpSocket {
        let addr: SocketAddr = format!("{}:0", self.a_ip).parse().unwrap();
        self.a.run(|| UdpSocket::bind(addr).expect("binds in A"))
    }

    pub fn b_addr(&self, port: u16) -> SocketAddr {
        format!("{}:{port}", self.b_ip).parse().unwrap()
    }
}

/// Sets `sock`'s receive buffer to `bytes`, past `net.core.rmem_max`
/// (the tests run as root).
fn force_rcvbuf(sock: &UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt reads `bytes` for the length given.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

/// Datagrams `sock` receives before it times out.
pub fn drain(sock: &UdpSocket) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}
