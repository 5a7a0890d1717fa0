//! The host path takes an XDP datapath's traffic and gives it back on
//! AF_XDP by moving the datapath's links between the two programs (one
//! `BPF_LINK_UPDATE` each), as a DPU's fail-over and restore do: under a
//! steady stream through `dse bench`'s topology, no frame is lost at
//! either switch, the XDP datapath counts what came before and after, and
//! the host path what came between. Needs root and bpffs.

mod common;

use common::forward::{PA_TO_PB, af_xdp_refused, marked, marker};

use common::bpf::PinDir;
use dse::bench::topology::Topology;
use dse_datapath::RuleSet;
use dse_datapath::datapath::Datapath;
use dse_datapath::emu::{EmuConfig, HostIo, HostPath, MAX_FRAME, PacketSocket};
use dse_datapath::netdev::interface_index;
use dse_datapath::xdp::{Program, XdpConfig, XdpDatapath, XdpLimits};
use std::time::{Duration, Instant};

/// Frames sent, one every `GAP`.
const FRAMES: u32 = 3000;
const GAP: Duration = Duration::from_micros(200);

fn socket(ns: &dse::lab::Netns, ifname: &str) -> PacketSocket {
    let ifname = ifname.to_string();
    ns.run(move || {
        let i = interface_index(&ifname).expect("the topology's veth");
        PacketSocket::open(i, Duration::from_millis(100)).expect("a packet socket")
    })
    .expect("enters the namespace")
}

#[test]
fn the_host_path_takes_an_xdp_datapaths_links_and_gives_them_back_losing_nothing() {
    let Some(pins) = PinDir::new("take-over") else {
        return;
    };
    if af_xdp_refused().is_some() {
        return;
    }
    let topo = Topology::build(&format!("to{}", std::process::id() % 100_000)).unwrap();
    let set = RuleSet::from_yaml(PA_TO_PB).unwrap();
    let interfaces = topo.interfaces();
    let config = XdpConfig {
        pin_dir: pins.0.clone(),
        interfaces: interfaces.clone(),
        skb_mode: false,
        limits: XdpLimits::small(),
        program: Program::V1,
    };
    let xdp = topo
        .dut
        .run({
            let (set, config) = (set.clone(), config.clone());
            move || XdpDatapath::start(set, config)
        })
        .unwrap()
        .unwrap();
    let rx = socket(&topo.sink_ns, &topo.egress.b);
    let tx = socket(&topo.gen_ns, &topo.ingress.a);
    let received = std::thread::scope(|s| {
        let receiver = s.spawn(|| {
            let mut got = Vec::new();
            let mut bufs = vec![[0u8; MAX_FRAME]; 32];
            let mut lens = vec![0usize; 32];
            let mut last = Instant::now();
            while last.elapsed() < Duration::from_secs(1) {
                let n = rx.recv_batch(&mut bufs, &mut lens).expect("receives");
                if n > 0 {
                    last = Instant::now();
                }
                for (b, &l) in bufs.iter().zip(&lens).take(n) {
                    got.push(marker(&b[..l]));
                }
            }
            got
        });
        let sender = s.spawn(|| {
            let start = Instant::now();
            for n in 0..FRAMES {
                let at = start + GAP * n;
                if let Some(wait) = at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                assert_eq!(tx.send_batch(&[&marked(n)]).expect("sends"), 1);
            }
        });
        // A third of the way in, the host path takes the links.
        std::thread::sleep(GAP * (FRAMES / 3));
        let mut host = topo
            .dut
            .run({
                let (set, interfaces, dir) = (set.clone(), interfaces.clone(), pins.0.clone());
                move || HostPath::take_over(set, EmuConfig::default(), &interfaces, &dir)
            })
            .unwrap()
            .unwrap();
        assert_eq!(host.io(), (HostIo::AfXdp, None));
        xdp.detach().unwrap();
        // Two thirds in, it gives them back to the XDP datapath.
        std::thread::sleep(GAP * (FRAMES / 3));
        host.give_back(&pins.0).unwrap();
        topo.dut.run(|| xdp.attach()).unwrap().unwrap();
        host.drain(Duration::from_secs(2));
        sender.join().unwrap();
        let carried = host.stats().output;
        (receiver.join().unwrap(), carried)
    });
    let (got, by_host) = received;
    let want: Vec<u32> = (0..FRAMES).collect();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted.len(),
        want.len(),
        "every frame arrived once (host path carried {by_host})"
    );
    assert!(sorted == want, "every frame arrived once");
    let by_xdp = xdp.stats().output;
    assert!(by_host > 0, "the host path carried some");
    assert!(by_xdp > 0, "the XDP datapath carried some");
    assert_eq!(
        by_host + by_xdp,
        u64::from(FRAMES),
        "each frame met one path"
    );
}
