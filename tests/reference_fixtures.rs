//! The fixture table through the reference pipeline (twice: the second run
//! of each packet is served by the flow cache).

mod common;

use common::fixtures::{run_table, table};
use common::packets::verify_checksums;
use dse_datapath::verify::{Reference, Subject};

#[test]
fn table_has_at_least_sixty_cases() {
    assert!(table().len() >= 60, "only {} fixtures", table().len());
}

#[test]
fn reference_pipeline_runs_the_table() {
    let mut failures = run_table(&["miss", "cached"], |_, case| {
        let r = Reference::new(&case.rules).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        Some(Box::new(r) as Box<dyn Subject>)
    });
    // What the table expects leaves with its checksums right, unless the
    // frame was cut short on purpose.
    for fx in table() {
        let case = fx.case();
        if !case.expect.bytes.is_empty()
            && !fx.name.contains("cut")
            && let Err(e) = verify_checksums(&case.expect.bytes)
        {
            failures.push(format!("{}: {e}", fx.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
