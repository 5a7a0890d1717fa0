//! The `dse` command.

fn main() {}
