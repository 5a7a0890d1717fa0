//! A host path handing its interfaces back (to an XDP program that took
//! them) lets through every frame it had already taken, however slowly its
//! threads run: [`HostPath::drain`] ends when its sockets and queues are
//! empty, where a fixed wait lost what a busy machine had not yet
//! scheduled. Here its workers are held while a burst queues up, and let
//! go only after the drain began, on AF_XDP and on AF_PACKET. Needs root.

mod common;

use common::forward::{PA_TO_PB, af_xdp_refused, marked};

use common::exchange::exchange;
use dse::bench::topology::Topology;
use dse_datapath::RuleSet;
use dse_datapath::emu::{EmuConfig, HostIo, HostPath, IoChoice};
use std::time::Duration;

#[test]
fn a_draining_host_path_lets_through_every_frame_it_took() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(std::env::var("CI").is_err(), "CI runs this as root");
        return;
    }
    if af_xdp_refused().is_none() {
        drains(IoChoice::AfXdp, HostIo::AfXdp);
    }
    drains(IoChoice::AfPacket, HostIo::AfPacket);
}

fn drains(choice: IoChoice, io: HostIo) {
    let topo = Topology::build(&format!("dr{}", std::process::id() % 100_000)).unwrap();
    let set = RuleSet::from_yaml(PA_TO_PB).unwrap();
    let interfaces = topo.interfaces();
    let config = EmuConfig {
        workers: 1,
        ..EmuConfig::default()
    };
    let mut host = topo
        .dut
        .run(|| HostPath::start_with(set, config, &interfaces, choice))
        .unwrap()
        .unwrap();
    assert_eq!(host.io().0, io);
    // The workers are held: what arrives waits in the host path.
    host.emu().hold();
    const N: u32 = 500;
    let frames: Vec<Vec<u8>> = (0..N).map(marked).collect();
    let views: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let got = std::thread::scope(|s| {
        let sink = s.spawn(|| exchange(&topo, &views, Duration::from_secs(3)));
        std::thread::sleep(Duration::from_millis(300));
        // Let go 300 ms into the drain: far past any fixed grace.
        let emu = host.shared_emu();
        let releaser = s.spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            emu.release();
        });
        host.drain(Duration::from_secs(5));
        releaser.join().unwrap();
        sink.join().unwrap()
    });
    assert_eq!(got.len(), N as usize, "{io:?}: every frame taken came out");
}
