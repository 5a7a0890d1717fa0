//! The fixture table through the emulated backend: frames in through an
//! in-memory port, out of the expected queue, as the expected bytes, with
//! exactly one verdict counted for each.

mod common;

use common::fixtures::run_table;
use dse_datapath::verify::{Emu, Subject};

#[test]
fn emulated_backend_runs_the_table() {
    // A fresh datapath for each fixture: meters and counters start anew.
    let failures = run_table(&["once"], |_, case| {
        let emu = Emu::start(&case.rules).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        Some(Box::new(emu) as Box<dyn Subject>)
    });
    assert!(
        failures.is_empty(),
        "{} fixture failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
