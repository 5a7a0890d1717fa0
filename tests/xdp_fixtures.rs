//! The fixture table through the XDP program with BPF_PROG_TEST_RUN: the
//! same verdicts and output bytes as the reference pipeline. Needs root and
//! bpffs; under CI=true a missing capability fails instead of skipping.

mod common;

use common::bpf::PinDir;
use common::fixtures::{Expect, document, table};
use dse_datapath::RuleSet;
use dse_datapath::compile::Compiler;
use dse_datapath::pipeline::Verdict;
use dse_datapath::xdp::{XdpInstance, XdpLimits};

#[test]
fn xdp_program_runs_the_table() {
    let mut failures = Vec::new();
    for (i, fx) in table().into_iter().enumerate() {
        let Some(pins) = PinDir::new(&format!("fx{i}")) else {
            return;
        };
        let set = RuleSet::from_yaml(&document(fx.rules))
            .unwrap_or_else(|e| panic!("{}: rules do not load: {e}", fx.name));
        let compiler = Compiler::new(set).unwrap_or_else(|e| panic!("{}: {e}", fx.name));
        let mut xdp = XdpInstance::load(&pins.0, XdpLimits::small()).expect("loads");
        let slots: Vec<u32> = compiler.tables().live_rules().map(|(s, _)| s).collect();
        xdp.install(compiler.tables(), &slots).expect("installs");
        if fx.input.len() < 14 {
            // The kernel hands no XDP program a frame shorter than an
            // Ethernet header: BPF_PROG_TEST_RUN refuses it, and on a link
            // it never reaches the program.
            assert!(xdp.run(fx.in_port, &fx.input).is_err(), "{}", fx.name);
            continue;
        }
        for round in ["miss", "cached"] {
            let (verdict, bytes) = xdp
                .run(fx.in_port, &fx.input)
                .unwrap_or_else(|e| panic!("{} ({} bytes): {e}", fx.name, fx.input.len()));
            let got = match verdict {
                Verdict::Output(p) => Expect::Output(p, bytes),
                Verdict::Pass => Expect::Pass(bytes),
                Verdict::Tx => Expect::Tx(bytes),
                Verdict::Drop(r) => Expect::Drop(r),
            };
            if got != fx.expect {
                failures.push(format!(
                    "{} ({round}):\n  want {:?}\n  got  {:?}",
                    fx.name, fx.expect, got
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
