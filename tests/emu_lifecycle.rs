//! The emulated backend's transactions and lifecycle: atomic generation
//! swaps under traffic, counters that survive transactions, quiesce rules,
//! and snapshot round trips.

use dse_datapath::datapath::{Datapath, DatapathError, LifecycleState, Transaction};
use dse_datapath::emu::{EmuConfig, EmuDatapath};
use dse_datapath::snapshot::{Snapshot, SnapshotError};
use dse_datapath::{Frame, RuleSet};
use etherparse::PacketBuilder;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(sport, dport)
        .write(&mut v, b"payload")
        .unwrap();
    v
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Two overlapping rules whose priorities swap every generation; each
/// generation stamps both MACs with its number and the winner's letter.
fn swapping_rules(generation: u32) -> RuleSet {
    let (a, b) = if generation % 2 == 1 {
        (20, 10)
    } else {
        (10, 20)
    };
    let mac = |g: u32, who: u8| {
        format!(
            "02:{:02x}:{:02x}:{:02x}:{:02x}:00",
            who,
            (g >> 16) & 0xff,
            (g >> 8) & 0xff,
            g & 0xff
        )
    };
    let doc = format!(
        "ports: [{{name: p0, index: 0}}, {{name: p1, index: 1}}]\nrules:\n\
         - {{id: 1, priority: {a}, match: {{ip_proto: udp}}, actions: [{{set_eth_src: '{sa}'}}, {{set_eth_dst: '{sa}'}}, {{output: p1}}]}}\n\
         - {{id: 2, priority: {b}, match: {{ip_proto: udp, l4_dst: 53}}, actions: [{{set_eth_src: '{sb}'}}, {{set_eth_dst: '{sb}'}}, {{output: p1}}]}}\n",
        sa = mac(generation, 0xaa),
        sb = mac(generation, 0xbb),
    );
    RuleSet::from_yaml(&doc).unwrap()
}

#[test]
fn no_packet_is_classified_by_a_mix_of_generations() {
    let dp = Arc::new(
        EmuDatapath::start(
            swapping_rules(1),
            EmuConfig {
                workers: 2,
                queue_depth: 1 << 14,
                ..EmuConfig::default()
            },
        )
        .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let injector = {
        let (dp, stop) = (Arc::clone(&dp), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Many flows, so both workers are busy.
                let _ = dp.inject(0, Frame::new(&udp(1000 + (sent % 512) as u16, 53)));
                sent += 1;
            }
        })
    };
    let mut seen = 0u64;
    let mut generations = std::collections::BTreeSet::new();
    let mut check = |dp: &EmuDatapath| {
        while let Some(e) = dp.recv(1) {
            let d = e.frame.data();
            assert_eq!(
                d[0..6],
                d[6..12],
                "source and destination MAC stamped by different generations: {:02x?}",
                &d[..12]
            );
            let g = u32::from_be_bytes([0, d[2], d[3], d[4]]);
            let winner = d[1];
            let expected = if g % 2 == 1 { 0xaa } else { 0xbb };
            assert_eq!(
                winner, expected,
                "generation {g} classified by the other generation's priorities"
            );
            generations.insert(g);
            seen += 1;
        }
    };
    for g in 2..=200u32 {
        assert_eq!(
            dp.apply(Transaction::Replace(swapping_rules(g).into()))
                .unwrap(),
            u64::from(g)
        );
        check(&dp);
        std::thread::sleep(Duration::from_micros(300));
    }
    stop.store(true, Ordering::Relaxed);
    injector.join().unwrap();
    wait_until("the queues to drain", || dp.idle());
    std::thread::sleep(Duration::from_millis(20));
    check(&dp);
    assert!(seen > 1000, "only {seen} packets checked");
    assert!(
        generations.len() > 20,
        "traffic crossed only {} generations",
        generations.len()
    );
}

fn base_rules() -> RuleSet {
    RuleSet::from_yaml(
        "ports: [{name: p0, index: 0}, {name: p1, index: 1, default: drop}]\n\
         meters: [{name: m, unit: pps, rate: 10, burst: 50}]\n\
         rules:\n\
         - {id: 1, priority: 10, match: {ip_proto: udp, l4_dst: 53}, actions: [{output: p1}]}\n\
         - {id: 2, priority: 10, match: {ip_proto: udp, l4_dst: 54}, actions: [{meter: m}, {output: p1}]}\n",
    )
    .unwrap()
}

fn pump(dp: &EmuDatapath, n: u64, dport: u16) {
    let before = dp.stats().processed();
    for i in 0..n {
        dp.inject_blocking(0, Frame::new(&udp(2000 + (i % 64) as u16, dport)))
            .unwrap();
    }
    wait_until("traffic to be processed", || {
        dp.stats().processed() == before + n
    });
    while dp.recv(1).is_some() {}
}

#[test]
fn counters_survive_transactions() {
    let dp = EmuDatapath::start(base_rules(), EmuConfig::default()).unwrap();
    pump(&dp, 300, 53);
    assert_eq!(dp.rule_counters()[&1].packets, 300);
    let added = RuleSet::from_yaml("ports: [{name: p0, index: 0}, {name: p1, index: 1}]\nrules:\n- {id: 3, priority: 5, actions: [pass]}\n").unwrap().rules;
    dp.apply(Transaction::Patch {
        upsert: added,
        remove: vec![2],
    })
    .unwrap();
    pump(&dp, 100, 53);
    let c = dp.rule_counters();
    assert_eq!(
        c[&1].packets, 400,
        "rule 1 kept its count across the transaction"
    );
    assert!(!c.contains_key(&2), "removed rule has no counter");
    assert_eq!(c[&3].packets, 0);
    // A replace that changes the ports renumbers every slot: counts move by id.
    let mut wider = dp.rules();
    wider.ports.push(dse_datapath::rule::PortDef {
        name: "p9".into(),
        index: 9,
        default: Default::default(),
    });
    assert_eq!(dp.apply(Transaction::Replace(wider.into())).unwrap(), 3);
    pump(&dp, 10, 53);
    assert_eq!(
        dp.rule_counters()[&1].packets,
        410,
        "rule 1 kept its count across a rebuild"
    );
    let err = dp
        .apply(Transaction::Patch {
            upsert: vec![],
            remove: vec![99],
        })
        .unwrap_err();
    assert!(err.to_string().contains("rule 99"), "{err}");
    assert_eq!(dp.generation(), 3, "a refused transaction changes nothing");
}

#[test]
fn quiesce_freezes_rules_but_keeps_forwarding() {
    let dp = EmuDatapath::start(base_rules(), EmuConfig::default()).unwrap();
    assert!(matches!(
        dp.snapshot(),
        Err(DatapathError::State {
            operation: "snapshot",
            ..
        })
    ));
    dp.quiesce().unwrap();
    assert_eq!(dp.state(), LifecycleState::Quiesced);
    let err = dp
        .apply(Transaction::Replace(base_rules().into()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            DatapathError::State {
                operation: "apply",
                ..
            }
        ),
        "{err}"
    );
    pump(&dp, 50, 53);
    assert_eq!(
        dp.rule_counters()[&1].packets,
        50,
        "a quiesced datapath forwards"
    );
    dp.resume().unwrap();
    assert_eq!(
        dp.apply(Transaction::Replace(base_rules().into())).unwrap(),
        2
    );
}

#[test]
fn snapshot_restore_round_trip_is_exact() {
    let dp = EmuDatapath::start(
        base_rules(),
        EmuConfig {
            workers: 2,
            ..EmuConfig::default()
        },
    )
    .unwrap();
    dp.apply(Transaction::Replace(base_rules().into())).unwrap();
    pump(&dp, 500, 53);
    pump(&dp, 80, 54); // 50 pass the meter's burst, the rest are over rate
    dp.quiesce().unwrap();
    let snap = dp.snapshot().unwrap();
    assert_eq!(snap.generation, 2);
    assert_eq!(snap.counters[&1].packets, 500);
    assert_eq!(snap.counters[&2].packets, 80);
    assert!(
        snap.meters["m"].nano_tokens < 50 * 1_000_000_000,
        "the meter spent tokens"
    );
    let bytes = snap.encode();

    // Another datapath, other rules, other worker count: restore makes it the same.
    let other = EmuDatapath::start(
        RuleSet::from_yaml("ports: [{name: x, index: 5}]\nrules: []\n").unwrap(),
        EmuConfig {
            workers: 1,
            ..EmuConfig::default()
        },
    )
    .unwrap();
    assert!(matches!(
        other.restore(&snap),
        Err(DatapathError::State {
            operation: "restore",
            ..
        })
    ));
    other.quiesce().unwrap();
    other.restore(&Snapshot::decode(&bytes).unwrap()).unwrap();
    let again = other.snapshot().unwrap();
    assert_eq!(again.rules, snap.rules);
    assert_eq!(again.generation, snap.generation);
    assert_eq!(again.counters, snap.counters);
    for (name, b) in &snap.meters {
        let r = &again.meters[name];
        assert_eq!(r.nano_tokens, b.nano_tokens, "meter {name} tokens");
        let (age, age_again) = (snap.clock_ns - b.last_ns, again.clock_ns - r.last_ns);
        assert!(
            age_again >= age && age_again - age < 1_000_000_000,
            "meter {name} refill time rebased: {age} vs {age_again}"
        );
    }
    other.resume().unwrap();
    pump(&other, 10, 53);
    assert_eq!(
        other.rule_counters()[&1].packets,
        510,
        "counting goes on from the restored value"
    );
}

#[test]
fn bad_snapshots_are_refused_with_a_reason() {
    let dp = EmuDatapath::start(base_rules(), EmuConfig::default()).unwrap();
    dp.quiesce().unwrap();
    let good = dp.snapshot().unwrap().encode();

    let mut corrupt = good.clone();
    let last = corrupt.len() - 3;
    corrupt[last] ^= 0x20;
    assert!(matches!(
        Snapshot::decode(&corrupt),
        Err(SnapshotError::Checksum { .. })
    ));

    let mut newer = good.clone();
    newer[8..12].copy_from_slice(&3u32.to_le_bytes());
    let err = Snapshot::decode(&newer).unwrap_err();
    assert_eq!(
        err,
        SnapshotError::NewerFormat {
            found: 3,
            supported: 2
        }
    );
    assert!(err.to_string().contains("newer"), "{err}");

    assert!(matches!(
        Snapshot::decode(&good[..good.len() - 1]),
        Err(SnapshotError::Truncated { .. })
    ));
    assert_eq!(
        Snapshot::decode(b"not a snapshot at all, no no no no no no no no no no"),
        Err(SnapshotError::BadMagic)
    );
    // A refused restore changes nothing.
    assert_eq!(dp.generation(), 1);
}

#[test]
fn a_format_1_snapshot_with_a_json_body_is_still_read() {
    use sha2::Digest;
    let dp = EmuDatapath::start(base_rules(), EmuConfig::default()).unwrap();
    dp.quiesce().unwrap();
    let snap = dp.snapshot().unwrap();
    let body = serde_json::to_vec(&snap).unwrap();
    let mut old = b"DSESNAP\0".to_vec();
    old.extend_from_slice(&1u32.to_le_bytes());
    old.extend_from_slice(&(body.len() as u64).to_le_bytes());
    old.extend_from_slice(&sha2::Sha256::digest(&body));
    old.extend_from_slice(&body);
    assert_eq!(Snapshot::decode(&old).unwrap(), snap);
    assert_eq!(
        Snapshot::decode(&snap.encode()).unwrap(),
        snap,
        "format 2 round-trips"
    );
}

/// Each worker's flow cache read through [`EmuDatapath::cached`]: nothing
/// before a frame, the rule after one (on the worker that took it alone),
/// a cached miss for a frame no rule takes, and a stale entry once a
/// transaction makes a new generation; traffic goes on after each reading.
#[test]
fn the_workers_flow_caches_are_read_and_traffic_goes_on() {
    use dse_datapath::pipeline::{Cached, parse};
    let dp = EmuDatapath::start(
        swapping_rules(1),
        EmuConfig {
            workers: 2,
            ..EmuConfig::default()
        },
    )
    .unwrap();
    let key = |frame: &[u8]| parse(frame, 0, 0).unwrap().0;
    let (hit, none) = (udp(1000, 53), {
        let mut tcp = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1000, 80, 1, 1000)
            .write(&mut tcp, b"")
            .unwrap();
        tcp
    });
    assert_eq!(dp.cached(&key(&hit)).unwrap(), vec![Cached::Miss; 2]);
    let send = |frame: &[u8], port: u16| {
        dp.inject(0, Frame::new(frame)).unwrap();
        wait_until("the frame out", || dp.recv(port).is_some());
    };
    // Rule 1 (priority 20 in generation 1) takes UDP to port 53.
    send(&hit, 1);
    let w = dp.worker_for(&hit, 0);
    let got = dp.cached(&key(&hit)).unwrap();
    assert!(
        matches!(got[w], Cached::Hit { rule: 1, .. }) && got[1 - w] == Cached::Miss,
        "{got:?}"
    );
    // No rule takes TCP: its port's default hands it to the host.
    dp.inject(0, Frame::new(&none)).unwrap();
    wait_until("the frame to the host", || dp.recv_host().is_some());
    assert_eq!(
        dp.cached(&key(&none)).unwrap()[dp.worker_for(&none, 0)],
        Cached::NoRule
    );
    // A new generation (rule 2 above rule 1): the entry stays, stale,
    // until a frame refills it.
    dp.apply(Transaction::Replace(Arc::new(swapping_rules(2))))
        .unwrap();
    assert!(
        matches!(dp.cached(&key(&hit)).unwrap()[w], Cached::Stale { generation, current } if generation < current),
        "{:?}",
        dp.cached(&key(&hit)).unwrap()
    );
    send(&hit, 1);
    assert!(matches!(
        dp.cached(&key(&hit)).unwrap()[w],
        Cached::Hit { rule: 2, .. }
    ));
}
