//! Forwarding on veth, one core each: the host's software path (the
//! emulated datapath, on AF_XDP where the kernel allows it) next to the
//! offloaded path (XDP), on the same traffic and the same rules.
//!
//! A generator in namespace A sends 64-byte UDP frames (256 flows) from
//! CPU 0 through an AF_PACKET socket (no UDP/IP stack on the way); they
//! cross veth A into the datapath, which forwards them by rule out of veth
//! B into namespace B, where a socket takes them. Everything the datapath
//! does runs on CPU 1: the veth's NAPI thread (threaded NAPI, pinned) and,
//! for the host path, its I/O and worker threads. The forwarded rate is
//! the rule's packet counter over 1 s of a 2 s run, per backend,
//! interleaved for 3 rounds; medians and the ratio of each round.
//!
//! Needs root. Run with `cargo bench --bench host_path`.

#[path = "../tests/common/netns.rs"]
mod netns;

use dse_datapath::datapath::Datapath;
use dse_datapath::emu::{EmuConfig, HostPath, PacketSocket};
use dse_datapath::netdev::interface_index;
use dse_datapath::rule::RuleSet;
use dse_datapath::xdp::{Program, XdpConfig, XdpDatapath, XdpLimits};
use netns::{Netns, Veth, in_ns, mac_text};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const RULES: &str = "
ports:
  - {name: pa, index: 0}
  - {name: pb, index: 1}
rules:
  - {id: 1, priority: 10, match: {in_port: pa, ip_proto: udp, l4_dst: 7000}, actions: [{output: pb}]}
";

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    let _ = dse::lab::pin_thread(cpu);
}

/// Turns on threaded NAPI for root-namespace `iface` and pins its NAPI
/// threads to `cpu`.
fn napi_on(iface: &str, cpu: usize) {
    let _ = std::fs::write(format!("/sys/class/net/{iface}/threaded"), "1");
    let _ = dse::lab::pin_napi_threads(iface, cpu);
}

/// 64-byte UDP frames of 256 flows from A to B's port 7000.
fn frames(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<Vec<u8>> {
    (0..256u16)
        .map(|i| {
            let b = etherparse::PacketBuilder::ethernet2(src_mac, dst_mac)
                .ipv4(src, dst, 64)
                .udp(10_000 + i, 7000);
            let payload = [0u8; 18];
            let mut out = Vec::with_capacity(b.size(payload.len()));
            b.write(&mut out, &payload).expect("builds");
            out
        })
        .collect()
}

/// Sends `frames` round and round out of `socket` from CPU 0 until
/// stopped; counts what the kernel took.
fn generator(
    socket: PacketSocket,
    frames: Vec<Vec<u8>>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        pin_to(0);
        let views: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        while !stop.load(Ordering::Relaxed) {
            for batch in views.chunks(32) {
                let n = socket.send_batch(batch).unwrap_or(0);
                sent.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    })
}

struct Bench {
    a: Netns,
    b: Netns,
    va: Veth,
    vb: Veth,
    frames: Vec<Vec<u8>>,
}

impl Bench {
    fn new() -> Bench {
        let a = Netns::new("dse-hp-a");
        let b = Netns::new("dse-hp-b");
        let va = Veth::new("dxhpa", "dxhpai", &a, "10.78.0.1/24");
        let vb = Veth::new("dxhpb", "dxhpbi", &b, "10.78.0.2/24");
        // B takes the datagrams into a socket nobody reads: no ICMP replies.
        in_ns(&b.name, &["ip", "link", "set", "dxhpbi", "promisc", "on"]);
        let frames = frames(va.inner_mac, vb.inner_mac, [10, 78, 0, 1], [10, 78, 0, 2]);
        let _ = mac_text(vb.inner_mac);
        Bench {
            a,
            b,
            va,
            vb,
            frames,
        }
    }

    fn interfaces(&self) -> BTreeMap<String, String> {
        [
            ("pa".to_string(), self.va.outer.clone()),
            ("pb".to_string(), self.vb.outer.clone()),
        ]
        .into()
    }

    /// Offered and forwarded packets per second through `dp`, and how busy
    /// CPU 1 (the datapath's) was meanwhile, from 0 to 1.
    fn measure(&self, dp: &dyn Datapath) -> (f64, f64, f64) {
        let _sink = self
            .b
            .run(|| std::net::UdpSocket::bind("10.78.0.2:7000").expect("binds in B"));
        let socket = self.a.run(|| {
            let i = interface_index("dxhpai").expect("the generator's veth");
            PacketSocket::open(i, Duration::from_millis(50)).expect("opens")
        });
        let (stop, sent) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let g = generator(socket, self.frames.clone(), stop.clone(), sent.clone());
        std::thread::sleep(Duration::from_millis(500));
        let count = || dp.rule_counters().get(&1).map_or(0, |c| c.packets);
        let (c0, s0, t0, j0) = (
            count(),
            sent.load(Ordering::Relaxed),
            Instant::now(),
            dse::lab::cpu_busy(1),
        );
        std::thread::sleep(Duration::from_secs(1));
        let (c1, s1, t1, j1) = (
            count(),
            sent.load(Ordering::Relaxed),
            Instant::now(),
            dse::lab::cpu_busy(1),
        );
        stop.store(true, Ordering::Relaxed);
        g.join().unwrap();
        let secs = (t1 - t0).as_secs_f64();
        let busy = (j1.since(&j0) / secs).min(1.0);
        ((s1 - s0) as f64 / secs, (c1 - c0) as f64 / secs, busy)
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("host_path bench: needs root; skipped");
        return;
    }
    let bench = Bench::new();
    let rules = RuleSet::from_yaml(RULES).expect("rules load");
    let pins = std::path::PathBuf::from(format!("/sys/fs/bpf/dse-bench-hp-{}", std::process::id()));
    // The datapath's side of veth A works in a NAPI thread on CPU 1.
    in_ns(&bench.a.name, &["ethtool", "-K", "dxhpai", "tx", "off"]);
    let _ = Command::new("ethtool")
        .args(["-K", &bench.va.outer, "gro", "on"])
        .output();
    napi_on(&bench.va.outer, 1);
    let (mut xdp, mut host, mut ratios, mut offered) = (vec![], vec![], vec![], vec![]);
    let mut per_core = (vec![], vec![]);
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(&pins);
        let dp = XdpDatapath::start(
            rules.clone(),
            XdpConfig {
                pin_dir: pins.clone(),
                interfaces: bench.interfaces(),
                skb_mode: false,
                limits: XdpLimits::small(),
                program: Program::V1,
            },
        )
        .expect("the XDP datapath starts");
        napi_on(&bench.va.outer, 1);
        let (o, x, x_busy) = bench.measure(&dp);
        drop(dp);
        let _ = std::fs::remove_dir_all(&pins);
        // The host path's threads inherit CPU 1 from this thread.
        let h = std::thread::scope(|s| {
            s.spawn(|| {
                pin_to(1);
                let dp = HostPath::start(
                    rules.clone(),
                    EmuConfig {
                        workers: 1,
                        ..EmuConfig::default()
                    },
                    &bench.interfaces(),
                )
                .expect("the host path starts");
                napi_on(&bench.va.outer, 1);
                bench.measure(&dp)
            })
            .join()
            .unwrap()
        });
        let (ho, h, h_busy) = h;
        println!(
            "host_path/round: xdp {:.0} kpps of {:.0} offered, CPU 1 {:.0}% busy; host path {:.0} kpps of {:.0} offered, CPU 1 {:.0}% busy",
            x / 1e3,
            o / 1e3,
            x_busy * 100.0,
            h / 1e3,
            ho / 1e3,
            h_busy * 100.0
        );
        per_core.0.push(x / x_busy.max(0.01));
        per_core.1.push(h / h_busy.max(0.01));
        offered.push(o);
        xdp.push(x);
        host.push(h);
        ratios.push(x / h);
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "host_path/per_busy_core: xdp {:.0} kpps, host path {:.0} kpps (forwarded / CPU 1's busy share; medians)",
        med(per_core.0) / 1e3,
        med(per_core.1) / 1e3
    );
    println!(
        "host_path/forward_64B_udp_one_core: host path (emu) {:.0} kpps, offloaded (xdp) {:.0} kpps, offered {:.0} kpps; xdp/host {:.1}x (median of per-round ratios)",
        med(host) / 1e3,
        med(xdp) / 1e3,
        med(offered) / 1e3,
        med(ratios)
    );
}
