//! The daemon's start adopts an XDP datapath left pinned and forwarding by
//! an earlier run, even one that runs other rules than the store wants
//! (drift): the datapath converges to the store's rules without a packet
//! lost. Needs root; under CI=true that is a failure.

mod common;

use common::bpf::PinDir;
use common::stream::Stream;
use common::topology::Topology;
use dse_control::daemon::{Daemon, DaemonConfig};
use dse_control::store::{Backend, DatapathInstance, Store};
use dse_datapath::xdp::{Program, XdpConfig, XdpDatapath, XdpLimits};
use std::time::Duration;

const WANTED: &str = "  \
  - {id: 1, priority: 10, match: {in_port: pa, ip_proto: udp, l4_dst: 7000}, actions: [{output: pb}]}
  - {id: 2, priority: 1, match: {ip_proto: tcp}, actions: [drop]}
";

const DRIFTED: &str = "  \
  - {id: 1, priority: 10, match: {in_port: pa, ip_proto: udp, l4_dst: 7000}, actions: [{output: pb}]}
  - {id: 3, priority: 1, match: {ip_proto: udp, l4_dst: 9}, actions: [drop]}
";

#[test]
fn start_adopts_a_drifted_xdp_datapath_without_losing_a_packet() {
    let Some(root) = PinDir::new("adopt-root") else {
        return;
    };
    let t = Topology::new("ca", 83);
    let dir = std::env::temp_dir().join(format!("dse-adopt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("dse.redb");
    let interfaces: std::collections::BTreeMap<String, String> = [
        ("pa".to_string(), t.va.outer.clone()),
        ("pb".to_string(), t.vb.outer.clone()),
    ]
    .into();
    {
        let store = Store::open(&db).unwrap();
        store
            .commit_rules(&Topology::rule_set(WANTED), None, "test")
            .unwrap();
        store
            .put_datapath(
                &DatapathInstance {
                    name: "off".into(),
                    backend: Backend::Xdp,
                    interfaces: interfaces.clone(),
                    object: None,
                },
                "test",
            )
            .unwrap();
    }
    // An earlier run left this datapath pinned, forwarding other rules.
    let earlier = XdpDatapath::start(
        Topology::rule_set(DRIFTED),
        XdpConfig {
            pin_dir: root.0.join("off"),
            interfaces,
            skb_mode: false,
            limits: XdpLimits::small(),
            program: Program::V1,
        },
    )
    .expect("starts");
    drop(earlier);
    let stream = Stream::start(&t);
    std::thread::sleep(Duration::from_millis(300));
    let daemon = Daemon::open(DaemonConfig {
        db: db.clone(),
        bpffs: root.0.clone(),
        emu_workers: 1,
        xdp_limits: XdpLimits::small(),
        xdp_skb_mode: false,
        depot: Default::default(),
    })
    .expect("the daemon starts");
    let status = daemon.datapaths();
    assert_eq!(status[0].state, "running", "{status:?}");
    assert!(status[0].adopted, "{status:?}");
    std::thread::sleep(Duration::from_millis(300));
    let (sent, received) = stream.finish();
    assert_eq!(received, sent, "no packet lost across the adoption");
    let counters = &daemon.counters(Some("off")).unwrap()["off"];
    let ids: Vec<u32> = counters.keys().copied().collect();
    assert_eq!(ids, [1, 2], "the datapath converged to the store's rules");
    assert_eq!(
        counters[&1].packets, sent,
        "rule 1 counted every packet, before and after"
    );
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
