//! Randomized differential test: the XDP program against the reference
//! pipeline over random rule sets (every action but a limiting meter) and
//! 100,000 random packets, well-formed and malformed: the same verdict and
//! output bytes for every packet, then the same rule counters and stats.

mod common;

use common::bpf::PinDir;
use common::random::{Rng, packet, rule_set};
use dse_datapath::Frame;
use dse_datapath::compile::Compiler;
use dse_datapath::pipeline::{Installed, Pipeline, Stats, Verdict};
use dse_datapath::rule::*;
use dse_datapath::xdp::{XdpInstance, XdpLimits};

const RULE_SETS: usize = 25;
const PACKETS_PER_SET: usize = 4_000;

#[test]
fn xdp_agrees_with_the_reference_pipeline() {
    let mut mismatches = Vec::new();
    let mut packets = 0;
    for round in 0..RULE_SETS {
        let Some(pins) = PinDir::new(&format!("diff{round}")) else {
            return;
        };
        let mut rng = Rng(0x5eed_0000 + round as u64 * 0x9e37_79b9);
        let set = rule_set(&mut rng);
        let compiler = Compiler::new(&set).expect("generated sets compile");
        let inst = Installed::build(1, &set).expect("builds");
        let mut reference = Pipeline::new(1024);
        let mut xdp = XdpInstance::load(&pins.0, XdpLimits::small()).expect("loads");
        let slots: Vec<u32> = compiler.tables().live_rules().map(|(s, _)| s).collect();
        xdp.install(compiler.tables(), &slots).expect("installs");
        for i in 0..PACKETS_PER_SET {
            let input = packet(&mut rng);
            let in_port = rng.below(3) as u16;
            let mut frame = Frame::new(&input);
            let want = reference.process(&inst, &mut frame, in_port, 0);
            let want_bytes = frame.data().to_vec();
            let (got, got_bytes) = xdp.run(in_port, &input).expect("runs");
            packets += 1;
            let same = want == got && (matches!(want, Verdict::Drop(_)) || want_bytes == got_bytes);
            if !same && mismatches.len() < 10 {
                mismatches.push(format!(
                    "set {round} packet {i} in_port {in_port}: reference {want:?}, xdp {got:?}\n  input {input:02x?}\n  reference out {want_bytes:02x?}\n  xdp out       {got_bytes:02x?}\n  rules {}",
                    serde_json::to_string(&set.rules).unwrap()
                ));
            }
        }
        let want = reference.counts(&inst);
        let got = xdp.rule_counters(compiler.tables()).expect("counters");
        if want != got {
            mismatches.push(format!(
                "set {round}: rule counters\n  reference {want:?}\n  xdp       {got:?}"
            ));
        }
        let mut ws = Stats::default();
        reference.stats().add_to(&mut ws);
        let mut gs = xdp.stats().expect("stats");
        // The caches differ in size and sharing (per worker vs per CPU LRU).
        (
            ws.cache_hits,
            ws.cache_misses,
            gs.cache_hits,
            gs.cache_misses,
        ) = (0, 0, 0, 0);
        if ws != gs {
            mismatches.push(format!(
                "set {round}: stats\n  reference {ws:?}\n  xdp       {gs:?}"
            ));
        }
    }
    assert_eq!(packets, RULE_SETS * PACKETS_PER_SET);
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// Incremental transactions: a rule set patched 30 times (rules added,
/// changed and removed), each patch installed into the inactive bank and
/// flipped, with a rebuild from a fresh compiler every seventh round; after each, the XDP program classifies like a reference built
/// from scratch for the same rules.
#[test]
fn xdp_patches_agree_with_a_fresh_reference() {
    let Some(pins) = PinDir::new("patches") else {
        return;
    };
    let mut rng = Rng(0x0ba7_c4e5);
    let mut set = rule_set(&mut rng);
    let mut compiler = Compiler::new(&set).expect("compiles");
    let mut xdp = XdpInstance::load(&pins.0, XdpLimits::small()).expect("loads");
    let slots: Vec<u32> = compiler.tables().live_rules().map(|(s, _)| s).collect();
    xdp.install(compiler.tables(), &slots).expect("installs");
    let mut mismatches = Vec::new();
    for round in 0..30u64 {
        let fresh = rule_set(&mut rng);
        let ids: Vec<u32> = set.rules.iter().map(|r| r.id).collect();
        let remove: Vec<u32> = ids.iter().copied().filter(|_| rng.chance(30)).collect();
        let upsert: Vec<Rule> = fresh
            .rules
            .into_iter()
            .filter(|r| !remove.contains(&r.id) && rng.chance(50))
            .collect();
        let generation = u64::from(xdp.generation()) + 1;
        let patched = compiler
            .patch(upsert, &remove, generation, generation - 1)
            .expect("generated patches apply");
        if round % 7 == 3 {
            // Now and then a rebuild: a fresh compiler, the other slot half.
            compiler = Compiler::new(&compiler.rule_set()).expect("compiles");
            xdp.install_rebuilt(compiler.tables()).expect("installs");
        } else {
            xdp.install(&patched.tables, &patched.new_slots)
                .expect("installs");
        }
        set = compiler.rule_set();
        let inst = Installed::build(1, &set).expect("builds");
        let mut reference = Pipeline::new(1024);
        for i in 0..500 {
            let input = packet(&mut rng);
            let in_port = rng.below(3) as u16;
            let mut frame = Frame::new(&input);
            let want = reference.process(&inst, &mut frame, in_port, 0);
            let (got, got_bytes) = xdp.run(in_port, &input).expect("runs");
            let same =
                want == got && (matches!(want, Verdict::Drop(_)) || frame.data() == got_bytes);
            if !same && mismatches.len() < 10 {
                mismatches.push(format!(
                    "round {round} packet {i}: reference {want:?}, xdp {got:?}, input {input:02x?}"
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
