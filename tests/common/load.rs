//! What the lab's fabric carries without loss while a DPU is away: the
//! rate at which flows h1->h2 and h2->h1 lose nothing with h2's traffic on
//! the partner DPU S3 (h2's bond steered to it), and with h1's S1 on the
//! host path. The traffic test and the remediation bench offer stated
//! fractions of it.

#![allow(dead_code)]

use super::lab::Lab;
use dse_control::daemon::Daemon;
use dse_control::lifecycle::engine::{Away, DpuDatapaths};
use std::time::{Duration, Instant};

/// The loads offered, as fractions of the fail-over path's lossless rate.
pub const LOADS: [f64; 3] = [0.1, 0.5, 0.9];

/// How long each rate is offered.
const WINDOW: Duration = Duration::from_millis(1000);

/// Windows per rate; a rate passes if every one of them loses nothing:
/// the rate is one the fabric carries whatever else the machine does
/// then, not its best window.
const TRIALS: usize = 2;

/// The lowest rate searched, and the highest (datagrams a second, each flow).
const FLOOR: u64 = 1_000;
const CEILING: u64 = 400_000;

/// A lossless rate, datagrams a second each flow.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// The highest rate that lost nothing.
    pub pps: u64,
    /// Whether no rate above it lost a datagram (the senders fell behind,
    /// or the search reached its ceiling): then `pps` is a floor of the
    /// path's.
    pub senders_bound: bool,
}

/// The fail-over paths' lossless rates.
#[derive(Debug, Clone, Copy)]
pub struct Lossless {
    /// h2's traffic on its partner DPU.
    pub partner: Rate,
    /// h1's traffic on the host path.
    pub host_path: Rate,
}

impl Lossless {
    /// The rate both paths carry: the flows cross both at once.
    pub fn both(&self) -> u64 {
        self.partner.pps.min(self.host_path.pps)
    }
}

/// How a window went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    /// Offered in full (the senders kept up, to within 5%), none lost.
    Clean,
    /// A datagram lost.
    Lost,
    /// None lost, but the senders fell behind.
    Short,
}

/// Both flows at `pps` each for one window.
fn window(lab: &Lab, pps: u64) -> Window {
    let fabric = lab.fabric.as_ref().expect("a fabric lab");
    let started = Instant::now();
    let flows = fabric.flows(pps);
    std::thread::sleep(WINDOW);
    let offered = pps as f64 * started.elapsed().as_secs_f64();
    let done: Vec<_> = flows.into_iter().map(|f| f.finish()).collect();
    if done.iter().any(|d| !d.lost().is_empty()) {
        Window::Lost
    } else if done.iter().any(|d| (d.sent as f64) < 0.95 * offered) {
        Window::Short
    } else {
        Window::Clean
    }
}

/// `Ok` if each of [`TRIALS`] windows at `pps` is clean, else how the
/// first that was not went.
fn passes(lab: &Lab, pps: u64) -> Result<(), Window> {
    for _ in 0..TRIALS {
        match window(lab, pps) {
            Window::Clean => {}
            w => return Err(w),
        }
    }
    Ok(())
}

/// The highest rate, to within an eighth, at which the fabric loses
/// nothing as it stands and the senders keep up: doubling from
/// [`FLOOR`], then halving the interval three times.
fn search(lab: &Lab) -> Rate {
    let mut failed = match passes(lab, FLOOR) {
        Ok(()) => Window::Clean,
        Err(w) => {
            return Rate {
                pps: 0,
                senders_bound: w == Window::Short,
            };
        }
    };
    let (mut lo, mut hi) = (FLOOR, FLOOR * 2);
    while hi <= CEILING {
        match passes(lab, hi) {
            Ok(()) => (lo, hi) = (hi, hi * 2),
            Err(w) => {
                failed = w;
                break;
            }
        }
    }
    for _ in 0..3 {
        let mid = (lo + hi) / 2;
        match passes(lab, mid) {
            Ok(()) => lo = mid,
            Err(w) => (hi, failed) = (mid, w),
        }
    }
    Rate {
        pps: lo,
        senders_bound: failed != Window::Lost,
    }
}

/// Measures both fail-over paths on a fresh fabric lab `tag`; `None`
/// without root.
pub fn measure(tag: &str) -> Option<Lossless> {
    let lab = Lab::with_fabric(tag)?;
    let d = lab.set_up(500);
    let fabric = lab.fabric.as_ref().unwrap();
    let bond = fabric.bond();
    let partner = {
        d.steer(&bond, bond.member("S3").unwrap()).unwrap();
        let rate = search(&lab);
        d.steer(&bond, bond.member("S2").unwrap()).unwrap();
        rate
    };
    let host_path = on_host_path(&d, "S1", || search(&lab));
    Some(Lossless { partner, host_path })
}

/// Runs `f` with DPU `serial`'s traffic on the host path.
fn on_host_path<T>(d: &Daemon, serial: &str, f: impl FnOnce() -> T) -> T {
    let (_, rules) = d.rules();
    d.quiesce(serial).unwrap();
    let last = d
        .fail_over(serial, &rules, Away::HostPath)
        .unwrap()
        .expect("it was on its DPU");
    let out = f();
    d.restore(serial, &last, None).unwrap();
    DpuDatapaths::resume(d, serial).unwrap();
    out
}
