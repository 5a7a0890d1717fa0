//! Frames sent into `dse bench`'s topology at port `pa` (from the
//! generator's namespace), and those that come out of port `pb` (at the
//! sink's namespace), over packet sockets.

#![allow(dead_code)]

use dse::bench::topology::Topology;
use dse_datapath::emu::{MAX_FRAME, PacketSocket};
use dse_datapath::netdev::interface_index;
use std::time::{Duration, Instant};

/// Sends `frames` in order and returns every frame that arrives at the
/// sink within `wait` of the last send.
pub fn exchange(topo: &Topology, frames: &[&[u8]], wait: Duration) -> Vec<Vec<u8>> {
    let open = |ns: &dse::lab::Netns, ifname: &str| {
        let ifname = ifname.to_string();
        ns.run(move || {
            let i = interface_index(&ifname).expect("the topology's veth");
            PacketSocket::open(i, Duration::from_millis(100)).expect("a packet socket")
        })
        .expect("enters the namespace")
    };
    let rx = open(&topo.sink_ns, &topo.egress.b);
    let tx = open(&topo.gen_ns, &topo.ingress.a);
    for f in frames {
        assert_eq!(
            tx.send_batch(&[f]).expect("sends"),
            1,
            "the kernel takes the frame"
        );
    }
    let mut got = Vec::new();
    let mut bufs = vec![[0u8; MAX_FRAME]; 16];
    let mut lens = vec![0usize; 16];
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        let n = rx.recv_batch(&mut bufs, &mut lens).expect("receives");
        got.extend(
            bufs.iter()
                .zip(&lens)
                .take(n)
                .map(|(b, &l)| b[..l].to_vec()),
        );
    }
    got
}
