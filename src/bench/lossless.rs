//! Throughput without loss (after RFC 2544's): the highest offered rate a
//! subject forwards with at most [`TOLERANCE`] of it lost, found by a
//! binary search over paced offers.
//!
//! Each probe is paced frame by frame (see [`super::generator`]): by the
//! live-frame program, or by the AF_XDP sender. The search starts from an
//! unpaced probe, so it is capped by the generator's own rate: a subject
//! that keeps up with it is reported as capped. Over the AF_PACKET
//! fallback the figures are upper bounds (see [`super::sender`]).

use super::generator::{Generator, Mix, Sink};
use super::measure::{Cpus, Window, counted_window};
use super::subject::Running;
use super::topology::Topology;
use super::{BenchError, Workload};
use std::time::Duration;

/// The share of offered packets a window may lose and still pass.
pub const TOLERANCE: f64 = 0.001;

/// Halvings of the search interval after the unpaced probe.
pub const STEPS: usize = 6;

/// Windows a paced rate gets before it fails: it passes if any of them
/// does.
/// This machine's CPUs are virtual, and the host now and then takes the
/// DUT's away for a millisecond or more, while its receive ring (256
/// frames on a veth) fills; a rate the subject carries can lose a few
/// hundred frames to that in one window and not in the next. A rate that
/// fails every window is one the subject cannot carry.
pub const TRIALS: usize = 3;

/// What the search found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Lossless {
    /// The highest offered rate, packets a second, of a passing probe (0
    /// if none passed).
    pub pps: f64,
    /// Whether the unpaced probe passed: the subject kept up with the
    /// generator, whose rate is then all `pps` says.
    pub capped: bool,
    /// Each window: the rate asked for (`None`: unpaced) and what it
    /// counted; a rate's failed trials come before its passing one.
    pub probes: Vec<(Option<f64>, Window)>,
}

/// Whether `w` lost at most [`TOLERANCE`] of what it offered.
pub fn passes(w: &Window) -> bool {
    w.offered > 0 && w.loss() <= TOLERANCE
}

/// The rate [`Lossless::pps`] reports for `probes`: the highest offered
/// rate among the passing ones.
pub fn best(probes: &[(Option<f64>, Window)]) -> f64 {
    probes
        .iter()
        .filter(|(_, w)| passes(w))
        .map(|(_, w)| w.offered_pps())
        .fold(0.0, f64::max)
}

/// Searches `running`'s lossless rate on `workload`'s flows, 64-byte
/// frames, each probe `window` long.
///
/// # Errors
/// [`BenchError`] if a probe fails.
pub fn search(
    generator: &mut Generator,
    sink: &Sink,
    topo: &Topology,
    running: &Running,
    workload: Workload,
    window: Duration,
    cpus: Cpus,
) -> Result<Lossless, BenchError> {
    let mut probes = Vec::new();
    let mut probe = |pps: Option<f64>| -> Result<Window, BenchError> {
        // The unpaced probe overloads most subjects: one window is enough.
        let trials = if pps.is_some() { TRIALS } else { 1 };
        let mut last = None;
        for _ in 0..trials {
            let w = counted_window(sink, running, cpus, || {
                generator.offer_paced(topo, Mix::Small, workload.flows, window, pps)
            })?;
            probes.push((pps, w));
            // Let the subject's queues drain before the next window.
            std::thread::sleep(Duration::from_millis(100));
            if passes(&w) {
                return Ok(w);
            }
            last = Some(w);
        }
        Ok(last.expect("at least one trial"))
    };
    let top = probe(None)?;
    let capped = passes(&top);
    if !capped {
        let (mut lo, mut hi) = (0.0, top.offered_pps());
        for _ in 0..STEPS {
            let mid = (lo + hi) / 2.0;
            let w = probe(Some(mid))?;
            if passes(&w) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    Ok(Lossless {
        pps: best(&probes),
        capped,
        probes,
    })
}
