//! The minimal parse + one hash lookup XDP program that the XDP benches
//! compare the datapath with, loaded and holding one flow.

use aya::programs::{TestRun, TestRunOptions, Xdp};
use std::time::Duration;

/// The loaded minimal program, dropping one flow.
pub struct Baseline {
    ebpf: aya::Ebpf,
}

impl Baseline {
    /// Loads the program and installs `key` with the verdict drop.
    pub fn load(key: dse_ebpf::BaselineKey) -> Baseline {
        let mut ebpf = aya::EbpfLoader::new()
            .load(dse_ebpf::baseline_object())
            .expect("the baseline object loads (root needed)");
        let mut flows: aya::maps::HashMap<_, dse_ebpf::BaselineKey, u32> =
            aya::maps::HashMap::try_from(ebpf.map_mut("baseline_flows").expect("has the map"))
                .expect("a hash map");
        flows.insert(key, 1 /* XDP_DROP */, 0).expect("inserts");
        let prog: &mut Xdp = ebpf
            .program_mut("baseline_xdp")
            .expect("has the program")
            .try_into()
            .expect("an XDP program");
        prog.load().expect("passes the verifier");
        Baseline { ebpf }
    }

    /// The kernel's average time per run over `n` runs of `frame`, which
    /// must be the installed flow's.
    pub fn time_runs(&self, frame: &[u8], n: u32) -> Duration {
        let prog: &Xdp = self
            .ebpf
            .program("baseline_xdp")
            .expect("has the program")
            .try_into()
            .expect("an XDP program");
        let mut o = TestRunOptions::new();
        o.data_in = Some(frame);
        o.repeat = n;
        let r = prog.test_run(o).expect("test_run");
        assert_eq!(r.return_value, 1, "the baseline drops the flow");
        r.duration
    }
}
