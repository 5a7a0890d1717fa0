//! Throughput without loss (after RFC 2544's): the highest offered rate a
//! subject forwards with at most [`TOLERANCE`] of it lost, found by a
//! binary search over paced offers.
//!
//! The paced offers go over an AF_PACKET socket (small batches on a
//! schedule): XDP live frames cannot be paced without tiny repeats, which
//! set up a page pool each. The search is therefore capped by that
//! socket's rate; a subject that keeps up with it is reported as capped.

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

/// What the search found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Lossless {
    /// The highest offered rate, packets a second, of a passing probe (0
    /// if none passed).
    pub pps: f64,
    /// Whether the unpaced probe passed: the subject kept up with the
    /// generator, whose rate is then all `pps` says.
    pub capped: bool,
    /// Each probe: the rate asked for (`None`: unpaced) and its window.
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
    generator: &Generator,
    sink: &Sink,
    topo: &Topology,
    running: &Running,
    workload: Workload,
    window: Duration,
    cpus: Cpus,
) -> Result<Lossless, BenchError> {
    let mut probes = Vec::new();
    let mut probe = |pps: Option<f64>| -> Result<Window, BenchError> {
        let w = counted_window(sink, running, cpus, || {
            generator.offer_paced(topo, Mix::Small, workload.flows, window, pps)
        })?;
        probes.push((pps, w));
        // Let the subject's queues drain before the next probe.
        std::thread::sleep(Duration::from_millis(100));
        Ok(w)
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
