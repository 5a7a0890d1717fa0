//! The `dse` binary's library: the benchmark harness (`dse bench`) and the
//! namespace lab it and the demo build their topologies in.

pub mod bench;
pub mod lab;
