//! `dse verify`'s throughput per backend over a million random frames that
//! cover `examples/verify.yaml` (every match field and every action): the
//! reference pipeline, the XDP program under BPF_PROG_TEST_RUN (in
//! batches spread over the CPUs: one test run a frame, the verdict its
//! return value), and the host path's emulated datapath, each backend
//! alone. Beside them, the same run's floor for XDP: one bare
//! BPF_PROG_TEST_RUN a frame, nothing read back, on one CPU and on all.
//! Medians of five rounds. Needs root and bpffs. Run with `cargo bench
//! --bench verify`.

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
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let (mut reference, mut xdp, mut emu) = (vec![], vec![], vec![]);
    let (mut floor_one, mut floor_all) = (vec![], vec![]);
    for round in 0..ROUNDS {
        // Each backend alone, so that none takes CPU from another.
        let mut subjects: Vec<Box<dyn Subject>> = vec![Box::new(
            Xdp::load(&set, &pins.join("xdp")).expect("XDP loads: root and bpffs"),
        )];
        let c = compare_many(&set, &frames, &mut subjects, false).expect("the rules compile");
        assert_eq!(c.disagreeing, 0, "every frame agrees");
        drop(subjects);
        let _ = std::fs::remove_dir_all(pins.join("xdp"));
        reference.push(rate(c.took[0].1));
        xdp.push(rate(c.took[1].1));
        let mut subjects: Vec<Box<dyn Subject>> = vec![Box::new(
            Emu::start(&set).expect("the emulated datapath starts"),
        )];
        let c = compare_many(&set, &frames, &mut subjects, false).expect("the rules compile");
        assert_eq!(c.disagreeing, 0, "every frame agrees");
        drop(subjects);
        emu.push(rate(c.took[1].1));
        // The floor: one bare test run a frame, the same frames, on one
        // CPU and on each CPU at once (an instance each).
        floor_one.push(rate(bare(&pins, &frames, 1)));
        floor_all.push(rate(bare(&pins, &frames, cpus)));
        eprintln!(
            "round {}: reference {:.0}/s, xdp {:.0}/s, emu {:.0}/s, bare test run {:.0}/s on one CPU, {:.0}/s on {cpus}",
            round + 1,
            reference[round],
            xdp[round],
            emu[round],
            floor_one[round],
            floor_all[round],
        );
    }
    let _ = std::fs::remove_dir_all(&pins);
    let (r, x, e) = (median(reference), median(xdp), median(emu));
    let (f1, fa) = (median(floor_one), median(floor_all));
    println!("dse verify over {FRAMES} random frames of examples/verify.yaml, median of {ROUNDS}:");
    println!("  reference pipeline          {r:>10.0} frames/s");
    println!(
        "  xdp (test runs on {cpus} CPUs)   {x:>10.0} frames/s  ({:.2}x the bare test run on {cpus} CPUs)",
        x / fa
    );
    println!("  bare test run, {cpus} CPUs      {fa:>10.0} frames/s");
    println!("  bare test run, one CPU      {f1:>10.0} frames/s");
    println!("  emu (host path)             {e:>10.0} frames/s");
}

/// How long one bare test run a frame takes over `frames`, split over
/// `cpus` threads, each pinned to its CPU with an instance of its own.
fn bare(pins: &std::path::Path, frames: &[dse_datapath::verify::Probe], cpus: usize) -> Duration {
    let per = frames.len().div_ceil(cpus);
    let mut instances: Vec<XdpInstance> = (0..cpus)
        .map(|i| {
            XdpInstance::load(pins.join(format!("bare-{i}")), XdpLimits::small())
                .expect("XDP loads")
        })
        .collect();
    let started = Instant::now();
    std::thread::scope(|s| {
        for (cpu, (part, x)) in frames.chunks(per).zip(&mut instances).enumerate() {
            s.spawn(move || {
                pin(cpu);
                for p in part {
                    x.time_runs(p.in_port, &p.frame, 1).expect("a test run");
                }
            });
        }
    });
    let took = started.elapsed();
    drop(instances);
    for i in 0..cpus {
        let _ = std::fs::remove_dir_all(pins.join(format!("bare-{i}")));
    }
    took
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; the call reads the set given, for
    // the calling thread (pid 0).
    unsafe {
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one);
    }
}
