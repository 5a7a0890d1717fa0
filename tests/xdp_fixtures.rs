//! The fixture table through the XDP program with BPF_PROG_TEST_RUN: the
//! same verdicts and output bytes as the reference pipeline. Needs root and
//! bpffs; under CI=true a missing capability fails instead of skipping.

mod common;

use common::bpf::PinDir;
use common::fixtures::table;
use dse_datapath::verify::{Subject, Xdp, check};

#[test]
fn xdp_program_runs_the_table() {
    let mut failures = Vec::new();
    for (i, fx) in table().into_iter().enumerate() {
        let Some(pins) = PinDir::new(&format!("fx{i}")) else {
            return;
        };
        let case = fx.case();
        let mut xdp = Xdp::load(&case.rules, &pins.0).expect("loads");
        if case.input.len() < 14 {
            // The kernel hands no XDP program a frame shorter than an
            // Ethernet header: on a link it never reaches the program. A
            // test run's frame carries 4 bytes of port before it: from 10
            // bytes it runs, and is dropped as malformed, as the reference
            // drops it; under that BPF_PROG_TEST_RUN refuses it.
            match xdp.run(case.in_port, &case.input) {
                Err(_) => assert!(case.input.len() < 10, "{}", fx.name),
                Ok(o) => assert_eq!(o, case.expect, "{}", fx.name),
            }
            continue;
        }
        for round in ["miss", "cached"] {
            if let Err(m) = check(&case, &mut xdp) {
                failures.push(format!("{m} ({round})"));
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
