//! One measurement window, and the run that strings them together.
//!
//! A window: offer traffic for a while, then read what the sink counted,
//! what the subject's own counters say (dse's rule counters) and how busy
//! the DUT's CPU was. Every figure of the report is computed from these
//! counts and nothing else.

use super::generator::{Generator, Offered, Sink, TrafficError};
use super::report::{Forwarding, Install, Machine, Report};
use super::subject::{Places, Running, Subject, set_up};
use super::topology::Topology;
use super::{BenchError, Mix, Options, Workload, install};
use crate::lab::{cpu_busy, online_cpus, pin_napi, pin_thread};
use dse_datapath::datapath::Datapath;
use std::time::{Duration, Instant};

/// The counts of one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Window {
    /// Frames the generator handed to its veth.
    pub offered: u64,
    /// Datagrams the sink counted.
    pub delivered: u64,
    /// Their bytes (frames without FCS).
    pub delivered_bytes: u64,
    /// Packets the subject's own rule counters counted, where it has them
    /// (dse's backends).
    pub counted: Option<u64>,
    /// How long the generator offered.
    pub seconds: f64,
    /// Busy seconds of the DUT's CPU over the window.
    pub dut_busy_seconds: f64,
    /// The busy share of the DUT's CPU over the window (0 to 1).
    pub dut_busy_share: f64,
}

impl Window {
    /// Delivered packets per second.
    pub fn delivered_pps(&self) -> f64 {
        self.delivered as f64 / self.seconds.max(1e-9)
    }

    /// Offered packets per second.
    pub fn offered_pps(&self) -> f64 {
        self.offered as f64 / self.seconds.max(1e-9)
    }

    /// The share of offered packets not delivered (0 to 1).
    pub fn loss(&self) -> f64 {
        if self.offered == 0 {
            return 0.0;
        }
        self.offered.saturating_sub(self.delivered) as f64 / self.offered as f64
    }

    /// DUT CPU nanoseconds per delivered packet.
    pub fn ns_per_packet(&self) -> Option<f64> {
        (self.delivered > 0).then(|| self.dut_busy_seconds * 1e9 / self.delivered as f64)
    }
}

/// The packets counted by the subject's rules so far, if it has counters.
fn counted(running: &Running) -> Option<u64> {
    match running {
        Running::Xdp(x) => Some(x.datapath().fingerprint().packets),
        Running::Emu(dp) => Some(dp.fingerprint().packets),
        Running::Nft(_) | Running::Ovs(_) | Running::Limit(_) | Running::Floor(_) => None,
    }
}

/// Where the generator's and the DUT's work go.
#[derive(Debug, Clone, Copy)]
pub struct Cpus {
    /// The generator's (and the harness's) CPU.
    pub generator: usize,
    /// The DUT's: its NAPI threads and the subject's threads.
    pub dut: usize,
}

impl Cpus {
    /// CPU 0 and CPU 1, or CPU 0 for both on a one-CPU machine.
    pub fn pick() -> Cpus {
        let dut = usize::from(online_cpus() >= 2);
        Cpus { generator: 0, dut }
    }
}

/// Offers `mix` briefly (flow caches filled, NAPI threads awake) and waits
/// for it to drain, so that a window that follows starts quiescent.
///
/// # Errors
/// [`BenchError`] if the generator fails.
pub fn warm_up(
    generator: &mut Generator,
    topo: &Topology,
    mix: Mix,
    flows: u16,
) -> Result<(), BenchError> {
    generator.offer(topo, mix, flows, Duration::from_millis(100))?;
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}

/// Offers `mix` through `running` for `window` and returns the window's
/// counts: the sink's, the subject's rule counters' and the DUT CPU's,
/// each read just before the offer and again once the frames in flight
/// have arrived.
///
/// # Errors
/// [`BenchError`] if the generator or the counters fail.
#[allow(clippy::too_many_arguments)]
pub fn window(
    generator: &mut Generator,
    sink: &Sink,
    topo: &Topology,
    running: &Running,
    mix: Mix,
    flows: u16,
    window: Duration,
    cpus: Cpus,
) -> Result<Window, BenchError> {
    counted_window(sink, running, cpus, || {
        generator.offer(topo, mix, flows, window)
    })
}

/// The counts of a window in which `offer` offers the traffic (see
/// [`window`]).
///
/// # Errors
/// [`BenchError`] if the offer or the counters fail.
pub fn counted_window(
    sink: &Sink,
    running: &Running,
    cpus: Cpus,
    offer: impl FnOnce() -> Result<Offered, TrafficError>,
) -> Result<Window, BenchError> {
    let counted0 = counted(running);
    let (d0, b0) = sink.counts()?;
    let busy0 = cpu_busy(cpus.dut);
    let offered = offer()?;
    // Frames still in rings reach the sink now.
    std::thread::sleep(Duration::from_millis(100));
    let busy1 = cpu_busy(cpus.dut);
    let (d1, b1) = sink.counts()?;
    let counted1 = counted(running);
    let busy_s = busy1.since(&busy0);
    // The share is of the window alone: the offer may take longer (the
    // live-frame program runs on past its window, dropping), and the DUT
    // is idle then.
    let seconds = offered.elapsed.as_secs_f64();
    let share = if seconds > 0.0 {
        (busy_s / seconds).min(1.0)
    } else {
        0.0
    };
    Ok(Window {
        offered: offered.packets,
        delivered: d1 - d0,
        delivered_bytes: b1 - b0,
        counted: counted0.zip(counted1).map(|(a, b)| b - a),
        seconds,
        dut_busy_seconds: busy_s,
        dut_busy_share: share,
    })
}

/// The tool name a subject's rule installation is reported under (the
/// limit installs none).
fn install_tool(subject: Subject) -> Option<&'static str> {
    match subject {
        Subject::Xdp => Some("dse library (xdp)"),
        Subject::Emu => Some("dse library (emu)"),
        Subject::Nft => Some("nft -f"),
        Subject::Ovs => Some("ovs-ofctl add-flows --bundle"),
        Subject::Limit | Subject::Floor => None,
    }
}

/// Runs the whole bench (see [`Options`]); the topology and every file
/// the run made are removed whether it succeeds or not.
///
/// # Errors
/// [`BenchError`] naming what failed.
pub fn run(o: &Options) -> Result<Report, BenchError> {
    let workloads = o.workloads()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(BenchError::Options(
            "dse bench needs root: it makes namespaces and veths and loads XDP programs".into(),
        ));
    }
    let cpus = Cpus::pick();
    let _ = pin_thread(cpus.generator);
    let topo = Topology::build(&o.tag)?;
    let places = Places {
        pins: format!("/sys/fs/bpf/dse-bench-{}", o.tag).into(),
        work: std::env::temp_dir().join(format!("dse-bench-{}", o.tag)),
        cpu: cpus.dut,
    };
    let result = run_in(o, &workloads, &topo, &places, cpus);
    let _ = std::fs::remove_dir_all(&places.pins);
    let _ = std::fs::remove_dir_all(&places.work);
    result
}

fn run_in(
    o: &Options,
    workloads: &[Workload],
    topo: &Topology,
    at: &Places,
    cpus: Cpus,
) -> Result<Report, BenchError> {
    let sink = Sink::attach(topo)?;
    let mut generator = Generator::load(o.generator, topo, o.flows)?;
    let mut skipped = Vec::new();
    let mut subjects = Vec::new();
    for &s in &o.subjects {
        match s.missing() {
            Some(why) => skipped.push((s, why.to_string())),
            None if !subjects.contains(&s) => subjects.push(s),
            None => {}
        }
    }
    let mut forwarding: Vec<Forwarding> = Vec::new();
    let mut installs: Vec<Install> = Vec::new();
    let mut measure = |w: Workload,
                       mix: Mix,
                       subject: Subject,
                       record_install: bool|
     -> Result<Window, BenchError> {
        let set = w.rule_set();
        let (running, took) = set_up(subject, topo, &set, at)?;
        pin_napi(&topo.dut, &topo.ingress.b, cpus.dut)?;
        warm_up(&mut generator, topo, mix, w.flows)?;
        let win = window(
            &mut generator,
            &sink,
            topo,
            &running,
            mix,
            w.flows,
            o.window,
            cpus,
        )?;
        drop(running);
        eprintln!(
            "bench: {:<22} {:>9} rules {:>2} masks {:<4}  {:>8.0} kpps delivered of {:>8.0} offered, {} ns/packet, DUT CPU {:.0}% busy",
            subject.label(),
            w.rules,
            w.masks,
            mix.label(),
            win.delivered_pps() / 1e3,
            win.offered_pps() / 1e3,
            win.ns_per_packet()
                .map_or("-".into(), |n| format!("{n:.0}")),
            win.dut_busy_share * 100.0,
        );
        if let Some(tool) = install_tool(subject).filter(|_| record_install) {
            installs.push(Install::new(tool, w, took));
        }
        Ok(win)
    };
    // The comparison: subjects interleaved within each round.
    let base = workloads[0];
    for &mix in &o.mixes {
        let mut rows: Vec<Forwarding> = subjects
            .iter()
            .map(|&s| Forwarding::new(base, mix, s))
            .collect();
        for round in 0..o.rounds {
            for row in &mut rows {
                let record = round == 0 && mix == o.mixes[0];
                row.windows.push(measure(base, mix, row.subject, record)?);
            }
        }
        forwarding.extend(rows);
    }
    // Scaling: one window each, 64-byte frames.
    for &w in &workloads[1..] {
        for &s in &subjects {
            let mut row = Forwarding::new(w, Mix::Small, s);
            row.windows.push(measure(w, Mix::Small, s, true)?);
            forwarding.push(row);
        }
    }
    // Throughput without loss: the comparison's workload, 64-byte frames.
    let mut lossless = Vec::new();
    if o.lossless {
        let set = base.rule_set();
        for &s in &subjects {
            let (running, _) = set_up(s, topo, &set, at)?;
            pin_napi(&topo.dut, &topo.ingress.b, cpus.dut)?;
            warm_up(&mut generator, topo, Mix::Small, base.flows)?;
            let found = super::lossless::search(
                &mut generator,
                &sink,
                topo,
                &running,
                base,
                o.window,
                cpus,
            )?;
            drop(running);
            eprintln!(
                "bench: {:<22} {:>9} rules without loss: {:.0} kpps{}",
                s.label(),
                base.rules,
                found.pps / 1e3,
                if found.capped {
                    " (the paced generator's most)"
                } else {
                    ""
                }
            );
            lossless.push((s, found));
        }
    }
    for &rules in &o.api_install {
        let w = Workload {
            rules,
            masks: 1,
            flows: o.flows,
        };
        w.check().map_err(BenchError::Options)?;
        let start = Instant::now();
        let took = install::through_api(topo, &w.rule_set(), &at.work.join("api"), &at.pins)?;
        eprintln!(
            "bench: dse API {rules} rules in {:.2} s ({:.2} s with the daemon's start)",
            took.as_secs_f64(),
            start.elapsed().as_secs_f64()
        );
        installs.push(Install::new("dse API (PUT /v1/rules, xdp)", w, took));
    }
    let mut report = Report::new(
        Machine::here(generator.kind(), cpus),
        o,
        skipped,
        forwarding,
        installs,
    );
    report.lossless = lossless
        .into_iter()
        .map(|(subject, found)| super::report::LosslessRow {
            workload: base,
            subject,
            found,
        })
        .collect();
    Ok(report)
}
