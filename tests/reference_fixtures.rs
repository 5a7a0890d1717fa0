//! The fixture table through the reference pipeline (twice: the second run
//! of each packet is served by the flow cache).

mod common;

use common::fixtures::{Expect, document, table};
use common::packets::verify_checksums;
use dse_datapath::pipeline::{Installed, Pipeline, Verdict};
use dse_datapath::{Frame, RuleSet};

#[test]
fn table_has_at_least_sixty_cases() {
    assert!(table().len() >= 60, "only {} fixtures", table().len());
}

#[test]
fn reference_pipeline_runs_the_table() {
    let mut failures = Vec::new();
    for fx in table() {
        let set = RuleSet::from_yaml(&document(fx.rules))
            .unwrap_or_else(|e| panic!("{}: rules do not load: {e}", fx.name));
        let inst = Installed::build(1, &set).unwrap_or_else(|e| panic!("{}: {e}", fx.name));
        let mut pipeline = Pipeline::new(64);
        for round in ["miss", "cached"] {
            let mut frame = Frame::new(&fx.input);
            let verdict = pipeline.process(&inst, &mut frame, fx.in_port, 0);
            let got = match verdict {
                Verdict::Output(p) => Expect::Output(p, frame.data().to_vec()),
                Verdict::Pass => Expect::Pass(frame.data().to_vec()),
                Verdict::Tx => Expect::Tx(frame.data().to_vec()),
                Verdict::Drop(r) => Expect::Drop(r),
            };
            if got != fx.expect {
                failures.push(format!(
                    "{} ({round}):\n  want {:?}\n  got  {:?}",
                    fx.name, fx.expect, got
                ));
            }
            if let Expect::Output(_, bytes) | Expect::Pass(bytes) | Expect::Tx(bytes) = &got
                && let Err(e) = verify_checksums(bytes)
                && !fx.name.contains("cut")
            {
                failures.push(format!("{} ({round}): {e}", fx.name));
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
