//! Hitless upgrades under traffic: a steady UDP stream from namespace A to
//! namespace B through the XDP datapath while (1) the program is upgraded
//! to version 2, whose rule-counter layout differs (the counters map is
//! migrated), and (2) the owning process is killed, another adopts the
//! pinned maps and links, and upgrades. Every datagram must arrive and be
//! counted. Needs root; under CI=true that is a failure.

mod common;

use common::bpf::PinDir;
use common::stream::Stream;
use common::topology::Topology;
use dse_datapath::datapath::Datapath;
use dse_datapath::xdp::{Program, XdpDatapath};
use std::time::{Duration, Instant};

const RULES: &str = "  \
  - {id: 1, priority: 10, match: {in_port: pa, ip_proto: udp, l4_dst: 7000}, actions: [{output: pb}]}
  - {id: 2, priority: 1, match: {ip_proto: udp}, actions: [drop]}
";

#[test]
fn upgrade_to_a_new_counter_layout_under_traffic() {
    let Some(pins) = PinDir::new("upgrade") else {
        return;
    };
    let t = Topology::new("g", 5);
    let dp = t.start(&pins, RULES);
    let stream = Stream::start(&t);
    std::thread::sleep(Duration::from_millis(500));
    let before = dp.rule_counters()[&1].packets;
    assert!(before > 0, "traffic flows before the upgrade");
    dp.upgrade(Program::V2).expect("upgrades");
    assert_eq!(dp.program(), Program::V2);
    std::thread::sleep(Duration::from_millis(500));
    let (sent, received) = stream.finish();
    let counted = dp.rule_counters()[&1].packets;
    assert_eq!(received, sent, "every datagram arrived across the upgrade");
    assert_eq!(
        counted, sent,
        "every datagram was counted, before and after the migration"
    );
    assert_eq!(dp.stats().dropped(), 0);
    assert_eq!(dp.rules(), Topology::rule_set(RULES));
}

/// The owning process of the cross-process test: started by it, killed by it.
#[test]
#[ignore = "run by kill_the_owner_adopt_and_upgrade_under_traffic as a child process"]
fn owner_process() {
    let Ok(dir) = std::env::var("DSE_OWNER_PINS") else {
        return;
    };
    let pins = common::bpf::PinDir::adopt(dir.into());
    let t = Topology::existing("k", 6);
    let _dp = t.start(&pins, RULES);
    // The parent owns the namespaces and the pins.
    std::mem::forget(t);
    std::mem::forget(pins);
    std::fs::write(std::env::var("DSE_OWNER_READY").unwrap(), b"ready").unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn kill_the_owner_adopt_and_upgrade_under_traffic() {
    let Some(pins) = PinDir::new("adopt") else {
        return;
    };
    let t = Topology::new("k", 6);
    let ready = std::env::temp_dir().join(format!("dse-owner-ready-{}", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let mut owner = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "owner_process", "--ignored", "--nocapture"])
        .env("DSE_OWNER_PINS", &pins.0)
        .env("DSE_OWNER_READY", &ready)
        .spawn()
        .expect("starts the owner");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the owner comes up");
        assert!(
            owner.try_wait().unwrap().is_none(),
            "the owner exited early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stream = Stream::start(&t);
    std::thread::sleep(Duration::from_millis(400));
    owner.kill().unwrap();
    owner.wait().unwrap();
    // Nobody owns the datapath now; the pinned links keep it forwarding.
    std::thread::sleep(Duration::from_millis(400));
    let dp = XdpDatapath::adopt(Topology::rule_set(RULES), 1, t.config(&pins)).expect("adopts");
    std::thread::sleep(Duration::from_millis(300));
    dp.upgrade(Program::V2).expect("upgrades");
    std::thread::sleep(Duration::from_millis(300));
    let (sent, received) = stream.finish();
    let _ = std::fs::remove_file(&ready);
    assert_eq!(
        received, sent,
        "every datagram arrived across the kill, the adoption and the upgrade"
    );
    assert_eq!(
        dp.rule_counters()[&1].packets,
        sent,
        "and every one was counted"
    );
    assert_eq!(dp.stats().dropped(), 0);
}
