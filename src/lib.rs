//! The `dse` binary's library: the benchmark harness (`dse bench`), the
//! demo (`dse demo`) and the namespace lab both build their topologies in.

pub mod bench;
pub mod demo;
pub mod depot;
pub mod lab;
pub mod out;
pub mod pcap;
pub mod trace;
pub mod verify;
