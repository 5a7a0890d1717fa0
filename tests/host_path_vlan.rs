//! A VLAN-tagged frame keeps its tag on the host path: the kernel takes
//! the outer tag off before packet sockets see a frame, and the host path
//! puts it back, so that its rules match the tag and the frame leaves as it
//! came, exactly as on the offloaded path. Needs root and bpffs.

mod common;

use common::exchange::exchange;
use dse::bench::Subject;
use dse::bench::subject::{Places, set_up};
use dse::bench::topology::Topology;
use dse_datapath::RuleSet;
use std::time::Duration;

const RULES: &str = r#"
ports:
  - {name: pa, index: 0, default: drop}
  - {name: pb, index: 1, default: drop}
rules:
  - {id: 1, priority: 10, match: {in_port: pa, vlan: 42}, actions: [{output: pb}]}
  - {id: 2, priority: 10, match: {in_port: pa, vlan: untagged}, actions: [drop]}
"#;

/// An IPv4/UDP frame, tagged with VID `vid` if given, marker `n`.
fn frame(vid: Option<u16>, n: u8) -> Vec<u8> {
    let mut v = Vec::new();
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let payload = [b'v', b'l', b'a', b'n', n];
    match vid {
        Some(vid) => b
            .single_vlan(etherparse::VlanId::try_new(vid).unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut v, &payload)
            .unwrap(),
        None => b
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut v, &payload)
            .unwrap(),
    }
    v
}

#[test]
fn tagged_frames_keep_their_tag_on_both_backends() {
    let set = RuleSet::from_yaml(RULES).unwrap();
    let topo = Topology::build(&format!("vl{}", std::process::id() % 100_000)).unwrap();
    let places = Places {
        pins: format!("/sys/fs/bpf/dse-test-vlan-{}", std::process::id()).into(),
        work: std::env::temp_dir().join(format!("dse-test-vlan-{}", std::process::id())),
        cpu: 0,
    };
    let (tagged, untagged) = (frame(Some(42), 1), frame(None, 2));
    for subject in [Subject::Xdp, Subject::Emu] {
        let (running, _) = set_up(subject, &topo, &set, &places).unwrap();
        let got = exchange(&topo, &[&untagged, &tagged], Duration::from_millis(600));
        drop(running);
        assert_eq!(
            got,
            vec![tagged.clone()],
            "{}: only the tagged frame, tag and all",
            subject.label()
        );
    }
    let _ = std::fs::remove_dir_all(&places.work);
}
