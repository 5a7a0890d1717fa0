//! The socket senders of the generator: an AF_XDP socket (the paced
//! sender where XDP live frames are refused) and an AF_PACKET socket (the
//! last resort), both paced in user space by [`Pace`].
//!
//! The AF_XDP sender counts a frame as offered once the kernel has taken
//! it from the TX ring: on a veth that is the frame handed to the peer's
//! receive ring or dropped because that ring was full, which is the
//! subject's loss. An AF_PACKET `sendmmsg` stops at the first frame the
//! peer's ring refuses and counts none of them, so its offers hide what
//! the subject dropped there: its lossless figures are upper bounds.

use super::generator::{Mix, Offered, TrafficError, frames, on_generator_cpu};
use super::topology::Topology;
use dse_datapath::emu::{PacketSocket, XskPort};
use std::time::{Duration, Instant};

/// The most frames a sender hands over at once: unpaced, or catching up.
const BURST: usize = 32;
/// The most frames a paced sender owes before it forgets the rest (they
/// are not offered): a sender that fell behind catches up in a burst no
/// larger than this.
const CREDIT: u64 = 8;

/// A window's schedule: one frame each `1/pps` seconds, or as fast as the
/// sender goes.
struct Pace {
    start: Instant,
    window: Duration,
    pps: Option<f64>,
    /// Frames due that were never sent: the sender fell more than
    /// [`CREDIT`] behind.
    forgone: u64,
}

impl Pace {
    fn new(window: Duration, pps: Option<f64>) -> Pace {
        Pace {
            start: Instant::now(),
            window,
            pps,
            forgone: 0,
        }
    }

    /// Waits until a frame is due, `sent` frames into the window, and
    /// returns how many are (at most [`BURST`]); `None` once the window
    /// has closed.
    fn next(&mut self, sent: u64) -> Option<usize> {
        loop {
            let elapsed = self.start.elapsed();
            if elapsed >= self.window {
                return None;
            }
            let Some(pps) = self.pps else {
                return Some(BURST);
            };
            let due = (elapsed.as_secs_f64() * pps) as u64 - self.forgone;
            if due > sent {
                let owed = due - sent;
                self.forgone += owed.saturating_sub(CREDIT);
                return Some(owed.min(CREDIT) as usize);
            }
            let at = Duration::from_secs_f64((sent + self.forgone + 1) as f64 / pps);
            match at.checked_sub(elapsed) {
                // Sleeps are coarse; spin the last stretch.
                Some(wait) if wait > Duration::from_micros(200) => {
                    std::thread::sleep(wait - Duration::from_micros(100));
                }
                _ => std::hint::spin_loop(),
            }
        }
    }
}

/// Runs `f` where the generator sends (see [`on_generator_cpu`]), with the
/// generator veth's index and `mix`'s frames for `flows` flows.
fn sending<T: Send>(
    topo: &Topology,
    mix: Mix,
    flows: u16,
    f: impl FnOnce(u32, &[Vec<u8>]) -> Result<T, TrafficError> + Send,
) -> Result<T, TrafficError> {
    // At least one of each IMIX size, whatever the flows.
    let frames = frames(topo, mix, flows.max(12));
    on_generator_cpu(topo, |ifindex| f(ifindex, &frames))
}

fn socket_error(what: &'static str) -> impl FnOnce(std::io::Error) -> TrafficError {
    move |e| TrafficError::Bpf {
        what,
        detail: e.to_string(),
    }
}

/// Whether an AF_XDP socket opens on the generator's veth.
///
/// # Errors
/// [`TrafficError`] with the kernel's refusal.
pub fn af_xdp_available(topo: &Topology) -> Result<(), TrafficError> {
    sending(topo, Mix::Small, 1, |ifindex, _| {
        XskPort::open(ifindex, 0)
            .map(drop)
            .map_err(socket_error("an AF_XDP socket"))
    })
}

/// Offers `mix` for `window` over an AF_XDP socket on queue 0 of the
/// generator's veth, at `pps` or as fast as it goes.
///
/// # Errors
/// [`TrafficError`] if the socket does not open.
pub fn offer_af_xdp(
    topo: &Topology,
    mix: Mix,
    flows: u16,
    window: Duration,
    pps: Option<f64>,
) -> Result<Offered, TrafficError> {
    sending(topo, mix, flows, |ifindex, frames| {
        let mut port = XskPort::open(ifindex, 0).map_err(socket_error("an AF_XDP socket"))?;
        let mut pace = Pace::new(window, pps);
        let mut queued = 0u64;
        let mut next = 0usize;
        while let Some(n) = pace.next(queued) {
            port.refill();
            let mut k = 0;
            while k < n && port.send_copy(&frames[next]) {
                next = (next + 1) % frames.len();
                k += 1;
            }
            queued += k as u64;
            queued -= port.flush() as u64;
        }
        let elapsed = pace.start.elapsed();
        // What the ring still holds goes out now, with the window's count.
        let until = Instant::now() + Duration::from_millis(100);
        while port.sending() && Instant::now() < until {
            port.refill();
            port.flush();
        }
        Ok(Offered {
            packets: queued - port.in_flight() as u64,
            elapsed,
        })
    })
}

/// Offers `mix` for `window` over an AF_PACKET socket on the generator's
/// veth, at `pps` or as fast as it goes.
///
/// # Errors
/// [`TrafficError`] if the socket does not open.
pub fn offer_af_packet(
    topo: &Topology,
    mix: Mix,
    flows: u16,
    window: Duration,
    pps: Option<f64>,
) -> Result<Offered, TrafficError> {
    sending(topo, mix, flows, |ifindex, frames| {
        let socket = PacketSocket::open(ifindex, Duration::from_millis(50))
            .map_err(socket_error("an AF_PACKET socket"))?;
        let mut pace = Pace::new(window, pps);
        let mut packets = 0u64;
        let mut next = 0usize;
        while let Some(n) = pace.next(packets) {
            let batch: Vec<&[u8]> = (0..n)
                .map(|k| frames[(next + k) % frames.len()].as_slice())
                .collect();
            next = (next + n) % frames.len();
            packets += socket.send_batch(&batch).unwrap_or(0) as u64;
        }
        Ok(Offered {
            packets,
            elapsed: pace.start.elapsed(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unpaced_window_asks_for_bursts_until_it_closes() {
        let mut pace = Pace::new(Duration::from_millis(20), None);
        assert_eq!(pace.next(0), Some(BURST));
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(pace.next(1_000_000), None);
    }

    #[test]
    fn a_paced_window_spaces_frames_and_forgets_what_it_fell_behind() {
        // 1,000 frames a second: one due each millisecond.
        let mut pace = Pace::new(Duration::from_millis(200), Some(1_000.0));
        let not_early = |pace: &Pace, nth: u64| {
            pace.start.elapsed() >= Duration::from_millis(nth + pace.forgone)
        };
        assert_eq!(pace.next(0), Some(1));
        assert!(not_early(&pace, 1));
        // 30 ms without sending: at most CREDIT are owed, the rest forgone.
        std::thread::sleep(Duration::from_millis(30));
        let owed = pace.next(1).unwrap();
        assert_eq!(owed as u64, CREDIT);
        assert!(pace.forgone >= 20, "forgone {}", pace.forgone);
        // Caught up: the next frame waits for its turn.
        assert_eq!(pace.next(1 + CREDIT), Some(1));
        assert!(not_early(&pace, 2 + CREDIT));
    }
}
