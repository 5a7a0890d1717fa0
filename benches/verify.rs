//! `dse verify`'s throughput per backend over a million random frames that
//! cover `examples/verify.yaml` (every match field and every action): the
//! reference pipeline, the XDP program under BPF_PROG_TEST_RUN (in
//! batches: the thread pinned once, one test run a frame, the verdict its
//! return value), and the host path's emulated datapath. Beside them, the same
//! run's floor for XDP: one bare BPF_PROG_TEST_RUN a frame, nothing read
//! back. Medians of five rounds. Needs root and bpffs. Run with
//! `cargo bench --bench verify`.

use dse_datapath::RuleSet;
use dse_datapath::verify::{Emu, Subject, Xdp, compare_many, generate};
use dse_datapath::xdp::{XdpInstance, XdpLimits};
use std::time::{Duration, Instant};

const FRAMES: usize = 1_000_000;
const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/verify.yaml"))
            .expect("the example reads");
    let set = RuleSet::from_yaml(&text).expect("the example loads");
    let frames = generate(&set, FRAMES, 1);
    let pins = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/dse-bench-verify-{}",
        std::process::id()
    ));
    let rate = |took: Duration| FRAMES as f64 / took.as_secs_f64();
    let (mut reference, mut xdp, mut emu, mut floor) = (vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        let mut subjects: Vec<Box<dyn Subject>> = vec![
            Box::new(Xdp::load(&set, &pins.join("xdp")).expect("XDP loads: root and bpffs")),
            Box::new(Emu::start(&set).expect("the emulated datapath starts")),
        ];
        let c = compare_many(&set, &frames, &mut subjects, false).expect("the rules compile");
        assert_eq!(c.disagreeing, 0, "every frame agrees");
        drop(subjects);
        let _ = std::fs::remove_dir_all(pins.join("xdp"));
        reference.push(rate(c.took[0].1));
        xdp.push(rate(c.took[1].1));
        emu.push(rate(c.took[2].1));
        // The floor: one bare test run a frame, the same frames.
        let mut bare = XdpInstance::load(pins.join("bare"), XdpLimits::small()).expect("XDP loads");
        let started = Instant::now();
        for p in &frames {
            bare.time_runs(p.in_port, &p.frame, 1).expect("a test run");
        }
        floor.push(rate(started.elapsed()));
        drop(bare);
        let _ = std::fs::remove_dir_all(pins.join("bare"));
        eprintln!(
            "round {}: reference {:.0}/s, xdp {:.0}/s, emu {:.0}/s, bare test run {:.0}/s",
            round + 1,
            reference[round],
            xdp[round],
            emu[round],
            floor[round]
        );
    }
    let _ = std::fs::remove_dir_all(&pins);
    let (r, x, e, f) = (median(reference), median(xdp), median(emu), median(floor));
    println!("dse verify over {FRAMES} random frames of examples/verify.yaml, median of {ROUNDS}:");
    println!("  reference pipeline      {:>10.0} frames/s", r);
    println!(
        "  xdp (test run, batches) {:>10.0} frames/s  ({:.2}x the bare test run)",
        x,
        x / f
    );
    println!("  bare test run (floor)   {:>10.0} frames/s", f);
    println!("  emu (host path)         {:>10.0} frames/s", e);
}
