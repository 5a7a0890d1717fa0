//! The host path on AF_XDP: frames through `dse bench`'s topology come out
//! of the egress port as the rules say, in order, taken from the ingress
//! interface (not tapped). Needs root.

mod common;

use common::forward::{PA_TO_PB, af_xdp_refused, marked};

use common::exchange::exchange;
use dse::bench::topology::Topology;
use dse_datapath::RuleSet;
use dse_datapath::datapath::Datapath;
use dse_datapath::emu::{EmuConfig, HostIo, HostPath, IoChoice};
use std::time::Duration;

#[test]
fn frames_cross_the_host_path_on_af_xdp_in_order() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var("CI").is_err(), "CI runs this as root");
        return;
    }
    if af_xdp_refused().is_some() {
        return;
    }
    let topo = Topology::build(&format!("ax{}", std::process::id() % 100_000)).unwrap();
    let set = RuleSet::from_yaml(PA_TO_PB).unwrap();
    let interfaces = topo.interfaces();
    let host = topo
        .dut
        .run(|| HostPath::start_with(set, EmuConfig::default(), &interfaces, IoChoice::AfXdp))
        .unwrap()
        .unwrap();
    assert_eq!(host.io(), (HostIo::AfXdp, None));
    const N: u32 = 300;
    let frames: Vec<Vec<u8>> = (0..N).map(marked).collect();
    let views: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let got = exchange(&topo, &views, Duration::from_secs(1));
    let s = host.stats();
    assert_eq!(
        got.len(),
        frames.len(),
        "every frame out of pb: stats {s:?}, I/O {:?}",
        host.io_counters()
    );
    assert!(got == frames, "in order, unchanged");
    assert_eq!(
        (s.rx_packets, s.output),
        (u64::from(N), u64::from(N)),
        "{s:?}"
    );
}
