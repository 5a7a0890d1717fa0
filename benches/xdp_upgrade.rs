//! The upgrade harness: a datapath with 1M exact rules attached to a veth,
//! upgraded back and forth between program versions 1 and 2 (whose rule
//! counter layouts differ, so every upgrade migrates 1M counters). Prints
//! the median link switch and migration times of 6 upgrades. Needs root.
//!
//! `cargo bench --bench xdp_upgrade`

#![allow(missing_docs)]

use dse_datapath::datapath::Datapath;
use dse_datapath::xdp::{Program, XdpConfig, XdpDatapath, XdpLimits};
use std::process::Command;
use std::time::Instant;

mod common;

use common::{Pins, median};

struct Veth(String);

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let name = format!("dxu{}", std::process::id() % 100_000);
    let _ = Command::new("ip").args(["link", "del", &name]).output();
    let ok = Command::new("ip")
        .args([
            "link",
            "add",
            &name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{name}p"),
        ])
        .status()
        .expect("runs ip")
        .success();
    assert!(ok, "creating a veth needs root");
    let veth = Veth(name.clone());
    for dev in [name.clone(), format!("{name}p")] {
        Command::new("ip")
            .args(["link", "set", &dev, "up"])
            .status()
            .unwrap();
    }
    let pins = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/dse-bench-upgrade-{}",
        std::process::id()
    ));
    let _cleanup = Pins(pins.clone());
    let set = common::exact_rules(1_000_000);
    let t = Instant::now();
    let dp = XdpDatapath::start(
        set,
        XdpConfig {
            pin_dir: pins.clone(),
            interfaces: [("p0".to_string(), veth.0.clone())].into(),
            skb_mode: false,
            limits: XdpLimits::default(),
            program: Program::V1,
        },
    )
    .expect("starts");
    println!(
        "start with 1M rules (compile, load, install, attach): {:.2?}",
        t.elapsed()
    );
    assert_eq!(dp.rule_counters().len(), 1_000_000);
    let (mut switch, mut migrate, mut load) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..6 {
        let to = if round % 2 == 0 {
            Program::V2
        } else {
            Program::V1
        };
        let r = dp.upgrade(to).expect("upgrades");
        assert_eq!(r.links, 1);
        assert_eq!(r.migrated, 1_000_000);
        println!(
            "upgrade to {to:?}: load {:.2?}, link switch {:.2?}, migrate {} counters {:.2?}",
            r.load, r.switch, r.migrated, r.migrate
        );
        switch.push(r.switch);
        migrate.push(r.migrate);
        load.push(r.load);
    }
    println!(
        "median of 6: link switch {:.2?} (target <= 50 ms), migration of 1M counters {:.2?} (target <= 1 s), load {:.2?}",
        median(switch),
        median(migrate),
        median(load)
    );
    drop(dp);
}
