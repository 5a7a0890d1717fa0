//! The XDP backend's lifecycle: quiesce refuses transactions, a snapshot
//! round trip reproduces rules, generation, counters and meter state, and a
//! snapshot taken on one backend restores on the other.

mod common;

use common::bpf::PinDir;
use common::packets::udp_to as udp;
use dse_datapath::datapath::{Datapath, DatapathError, LifecycleState, Transaction};
use dse_datapath::emu::{EmuConfig, EmuDatapath};
use dse_datapath::pipeline::Verdict;
use dse_datapath::xdp::{Program, XdpConfig, XdpDatapath};
use dse_datapath::{Frame, RuleSet};
use etherparse::PacketBuilder;
use std::time::{Duration, Instant};

fn rules() -> RuleSet {
    RuleSet::from_yaml(
        "ports: [{name: p0, index: 0}, {name: p1, index: 1}]\n\
         meters: [{name: m, unit: pps, rate: 1, burst: 1000}]\n\
         rules:\n\
         - {id: 1, priority: 10, match: {ip_proto: udp, l4_dst: 53}, actions: [{meter: m}, {output: p1}]}\n\
         - {id: 2, priority: 10, match: {ip_proto: udp, l4_dst: 80}, actions: [drop]}\n",
    )
    .unwrap()
}

fn xdp(pins: &PinDir, set: RuleSet) -> XdpDatapath {
    XdpDatapath::start(set, pins.config()).expect("starts")
}

#[test]
fn quiesce_snapshot_restore_resume_on_xdp() {
    let Some(pins) = PinDir::new("life") else {
        return;
    };
    let dp = xdp(&pins, rules());
    for _ in 0..7 {
        assert_eq!(dp.run_frame(0, &udp(53)).unwrap().0, Verdict::Output(1));
    }
    for _ in 0..3 {
        dp.run_frame(0, &udp(80)).unwrap();
    }
    dp.quiesce().unwrap();
    let refused = dp.apply(Transaction::Patch {
        upsert: vec![],
        remove: vec![2],
    });
    assert!(
        matches!(refused, Err(DatapathError::State { .. })),
        "{refused:?}"
    );
    // Still forwarding while quiesced.
    assert_eq!(dp.run_frame(0, &udp(53)).unwrap().0, Verdict::Output(1));
    let snap = dp.snapshot().unwrap();
    assert_eq!(snap.counters[&1].packets, 8);
    assert_eq!(snap.counters[&2].packets, 3);
    // 8 packets out of a 1000-token bucket, refilled at 1 token/s meanwhile.
    let tokens = snap.meters["m"].nano_tokens;
    assert!(
        (992 * 1_000_000_000..993 * 1_000_000_000).contains(&tokens),
        "{tokens}"
    );

    // Restore into a second instance, from the snapshot's bytes.
    let Some(pins2) = PinDir::new("life2") else {
        return;
    };
    let other = xdp(
        &pins2,
        RuleSet::from_yaml("ports: [{name: p0, index: 0}]\nrules: []\n").unwrap(),
    );
    other.quiesce().unwrap();
    let bytes = snap.encode();
    other
        .restore(&dse_datapath::snapshot::Snapshot::decode(&bytes).unwrap())
        .unwrap();
    other.resume().unwrap();
    assert_eq!(other.state(), LifecycleState::Running);
    assert_eq!(other.rules(), snap.rules);
    assert_eq!(other.generation(), snap.generation);
    assert_eq!(other.rule_counters(), snap.counters);
    other.quiesce().unwrap();
    let again = other.snapshot().unwrap();
    // The bucket refills over the time between the two snapshots (1 pps).
    let b = again.meters["m"];
    assert!(
        b.nano_tokens >= snap.meters["m"].nano_tokens && b.nano_tokens <= 994 * 1_000_000_000,
        "{b:?}"
    );
    other.resume().unwrap();
    assert_eq!(
        other.run_frame(0, &udp(80)).unwrap().0,
        Verdict::Drop(dse_datapath::pipeline::DropReason::Rule)
    );
    assert_eq!(
        other.rule_counters()[&2].packets,
        4,
        "counting goes on from the restored counters"
    );
}

#[test]
fn snapshots_move_between_the_emulated_and_xdp_backends() {
    let Some(pins) = PinDir::new("cross") else {
        return;
    };
    // emu -> xdp
    let emu = EmuDatapath::start(rules(), EmuConfig::default()).unwrap();
    for _ in 0..5 {
        emu.inject(0, Frame::new(&udp(53))).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while emu.stats().processed() < 5 {
        assert!(Instant::now() < deadline, "emu processes its packets");
        std::thread::sleep(Duration::from_millis(1));
    }
    emu.apply(Transaction::Patch {
        upsert: vec![],
        remove: vec![2],
    })
    .unwrap();
    emu.quiesce().unwrap();
    let from_emu = emu.snapshot().unwrap();
    let dp = xdp(
        &pins,
        RuleSet::from_yaml("ports: [{name: p0, index: 0}]\nrules: []\n").unwrap(),
    );
    dp.quiesce().unwrap();
    dp.restore(&from_emu).unwrap();
    assert_eq!(dp.rules(), from_emu.rules);
    assert_eq!(dp.generation(), from_emu.generation);
    assert_eq!(dp.rule_counters(), from_emu.counters);
    dp.resume().unwrap();
    dp.run_frame(0, &udp(53)).unwrap();

    // xdp -> emu
    dp.quiesce().unwrap();
    let from_xdp = dp.snapshot().unwrap();
    assert_eq!(from_xdp.counters[&1].packets, 6);
    let emu2 = EmuDatapath::start(
        RuleSet::from_yaml("ports: [{name: p0, index: 0}]\nrules: []\n").unwrap(),
        EmuConfig::default(),
    )
    .unwrap();
    emu2.quiesce().unwrap();
    emu2.restore(&from_xdp).unwrap();
    assert_eq!(emu2.rules(), from_xdp.rules);
    assert_eq!(emu2.generation(), from_xdp.generation);
    assert_eq!(emu2.rule_counters(), from_xdp.counters);
    assert_eq!(
        emu2.snapshot().unwrap().meters["m"].nano_tokens,
        from_xdp.meters["m"].nano_tokens
    );
}

/// A thousand rules: the counters are read with batch lookups over their
/// slot range; each must still land on its own rule.
#[test]
fn many_counters_read_in_batches_land_on_their_rules() {
    let Some(pins) = PinDir::new("many") else {
        return;
    };
    let rules: String = (0..1000u32)
        .map(|i| format!("- {{id: {}, priority: 1, match: {{ip_proto: udp, l4_dst: {}}}, actions: [drop]}}\n", i + 1, 2000 + i))
        .collect();
    let set =
        RuleSet::from_yaml(&format!("ports: [{{name: p0, index: 0}}]\nrules:\n{rules}")).unwrap();
    let dp = xdp(&pins, set);
    for i in [0u32, 7, 500, 999] {
        for _ in 0..=i % 3 {
            dp.run_frame(0, &udp(2000 + i as u16)).unwrap();
        }
    }
    let counts = dp.rule_counters();
    assert_eq!(counts.len(), 1000);
    for (id, c) in counts {
        let i = id - 1;
        let want = if [0, 7, 500, 999].contains(&i) {
            u64::from(i % 3 + 1)
        } else {
            0
        };
        assert_eq!(c.packets, want, "rule {id}");
    }
}

/// `n` exact UDP rules from id 100, all with `priority`.
fn many(n: u32, priority: u32) -> RuleSet {
    let mut set = rules();
    for i in 0..n {
        let yaml = format!(
            "{{id: {}, priority: {priority}, match: {{ip_proto: udp, l4_src: {}, l4_dst: 9}}, actions: [drop]}}",
            100 + i,
            1 + i
        );
        set.rules
            .push(serde_norway::from_str(&yaml).expect("a rule"));
    }
    set
}

#[test]
fn changes_too_large_to_patch_in_place_are_compiled_afresh() {
    let Some(pins) = PinDir::new("large") else {
        return;
    };
    // Small maps: 8192 rule slots a half. 6000 rules leave no room to
    // patch 6000 changed ones beside them.
    let dp = xdp(&pins, many(6000, 1));
    dp.apply(Transaction::Replace(many(6000, 2).into()))
        .expect("a whole replace of every rule fits by a fresh compile");
    assert!(
        dp.rules()
            .rules
            .iter()
            .filter(|r| r.id >= 100)
            .all(|r| r.priority == 2)
    );
    let upsert: Vec<_> = many(3000, 3)
        .rules
        .into_iter()
        .filter(|r| r.id >= 100)
        .collect();
    dp.apply(Transaction::Patch {
        upsert,
        remove: vec![],
    })
    .expect("a patch too large for the active half fits by a fresh compile");
    let rules = dp.rules().rules;
    assert_eq!(rules.iter().filter(|r| r.priority == 3).count(), 3000);
    assert_eq!(rules.iter().filter(|r| r.priority == 2).count(), 3000);
    let (verdict, _) = dp.run_frame(0, &udp(9)).expect("runs");
    assert!(matches!(verdict, Verdict::Drop(_)), "{verdict:?}");
}

/// The fingerprint's counter totals (summed in the kernel by `dse_sum`, on
/// each CPU) equal the per-rule counters added up, before and after an
/// upgrade that migrates the counters and after a rebuild from a snapshot;
/// a reset shows.
#[test]
fn fingerprints_total_the_rule_counters() {
    let Some(pins) = PinDir::new("fingerprint") else {
        return;
    };
    let set = many(1500, 10);
    let dp = xdp(&pins, set.clone());
    let from = |sport: u16| {
        let mut v = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(sport, 9)
            .write(&mut v, b"x")
            .unwrap();
        v
    };
    for sport in [1u16, 8, 1500, 701] {
        for _ in 0..=sport % 5 {
            dp.run_frame(0, &from(sport)).unwrap();
        }
    }
    dp.run_frame(0, &udp(80)).unwrap();
    let summed = |dp: &XdpDatapath| {
        let c = dp.rule_counters();
        (
            c.values().map(|c| c.packets).sum::<u64>(),
            c.values().map(|c| c.bytes).sum::<u64>(),
        )
    };
    let before = dp.fingerprint();
    assert!(before.packets > 0);
    assert_eq!((before.packets, before.bytes), summed(&dp));
    assert_eq!((before.generation, before.rules), (1, 1502));
    dp.upgrade(Program::V2).unwrap();
    let after = dp.fingerprint();
    assert_eq!(after, before, "the upgrade kept every count");
    assert!(after.continues(&before));
    dp.run_frame(0, &udp(80)).unwrap();
    assert_eq!(
        (dp.fingerprint().packets, dp.fingerprint().bytes),
        summed(&dp)
    );
    dp.quiesce().unwrap();
    let snap = dp.snapshot().unwrap();
    drop(dp);
    let fresh = PinDir::new("fingerprint-rebuilt").unwrap();
    let rebuilt = XdpDatapath::start_restored(
        &snap,
        XdpConfig {
            program: Program::V2,
            ..fresh.config()
        },
    )
    .unwrap();
    assert_eq!(rebuilt.state(), LifecycleState::Quiesced);
    assert_eq!(rebuilt.rules(), snap.rules);
    assert_eq!(rebuilt.rule_counters(), snap.counters);
    assert_eq!(rebuilt.fingerprint().packets, before.packets + 1);
    let reset = xdp(&PinDir::new("fingerprint-reset").unwrap(), set);
    assert!(!reset.fingerprint().continues(&before), "a reset shows");
}
