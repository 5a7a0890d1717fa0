//! Paced flows of numbered UDP datagrams between the demo's VMs, each
//! datagram's arrival recorded, so that loss can be put down to the phase
//! (before, during or after the remediation) it was sent in.

use crate::lab::Netns;
use anyhow::{Context, Result};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// A running flow; [`Flow::finish`] stops it.
pub struct Flow {
    stop: Arc<AtomicBool>,
    rx_stop: Arc<AtomicBool>,
    started: Instant,
    started_ms: u64,
    pps: u64,
    tx: Option<std::thread::JoinHandle<u64>>,
    rx: Option<std::thread::JoinHandle<(Vec<Option<Duration>>, u64)>>,
}

/// What a flow delivered.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Datagrams sent.
    pub sent: u64,
    /// When each datagram, by number, first arrived (since the start).
    pub arrived: Vec<Option<Duration>>,
    /// Datagrams that arrived more than once.
    pub duplicates: u64,
    /// When the flow started.
    pub started: Instant,
    /// When the flow started, wall clock (Unix ms).
    pub started_ms: u64,
    /// Datagrams a second.
    pub pps: u64,
}

impl Delivery {
    /// Numbers of the datagrams lost.
    pub fn lost(&self) -> Vec<u64> {
        (0..self.sent)
            .filter(|&i| self.arrived.get(i as usize).copied().flatten().is_none())
            .collect()
    }

    /// Datagrams that arrived (each once).
    pub fn delivered(&self) -> u64 {
        self.arrived.iter().filter(|a| a.is_some()).count() as u64
    }

    /// Datagrams sent in `[from, to)`, and how many of them were lost.
    pub fn in_span(&self, from: Instant, to: Instant) -> (u64, u64) {
        let number = |t: Instant| {
            let d = t.saturating_duration_since(self.started);
            ((d.as_nanos() * u128::from(self.pps)) / 1_000_000_000) as u64
        };
        let (a, b) = (number(from).min(self.sent), number(to).min(self.sent));
        let lost = (a..b)
            .filter(|&i| self.arrived.get(i as usize).copied().flatten().is_none())
            .count() as u64;
        (b - a, lost)
    }

    /// The longest time between two delivered datagrams.
    pub fn longest_gap(&self) -> Duration {
        let mut times: Vec<Duration> = self.arrived.iter().flatten().copied().collect();
        times.sort();
        times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }

    /// When datagram `i` was sent, wall clock (Unix ms).
    pub fn sent_ms(&self, i: u64) -> u64 {
        self.started_ms + i * 1000 / self.pps.max(1)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Gives `sock` an 8 MiB receive buffer, so that a burst is not dropped
/// before the receiving thread reads it: past `net.core.rmem_max` when
/// this process may (root), else up to it.
pub fn widen_receive_buffer(sock: &UdpSocket) {
    let bytes: libc::c_int = 8 << 20;
    let set = |option: libc::c_int| {
        // SAFETY: a valid socket fd and option value for setsockopt.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&bytes as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as u32,
            )
        }
    };
    if set(libc::SO_RCVBUFFORCE) != 0 {
        set(libc::SO_RCVBUF);
    }
}

/// A sender bound to `from` (any port) in `src`, and a receiver bound to
/// `at` in `dst` with a wide receive buffer.
fn bind_pair(
    src: &Netns,
    from: &str,
    dst: &Netns,
    at: SocketAddr,
) -> Result<(UdpSocket, UdpSocket)> {
    let rx = dst
        .run(|| UdpSocket::bind(at))?
        .with_context(|| format!("binding {at} in {}", dst.name()))?;
    widen_receive_buffer(&rx);
    let from: SocketAddr = format!("{from}:0").parse().context("a source address")?;
    let tx = src
        .run(|| UdpSocket::bind(from))?
        .with_context(|| format!("binding {from} in {}", src.name()))?;
    Ok((tx, rx))
}

impl Flow {
    /// Starts sending `pps` datagrams a second from `from` (in namespace
    /// `src`) to `to`, and receiving them at `at` in namespace `dst`.
    ///
    /// # Errors
    /// A socket that cannot be bound.
    pub fn start(
        src: &Netns,
        from: &str,
        to: SocketAddr,
        dst: &Netns,
        at: SocketAddr,
        pps: u64,
    ) -> Result<Flow> {
        let (tx, rx) = bind_pair(src, from, dst, at)?;
        Ok(Flow::from_sockets(tx, rx, to, pps))
    }

    /// Starts sending `pps` numbered datagrams a second out of `tx` to
    /// `to`, and recording those `rx` receives.
    pub fn from_sockets(tx: UdpSocket, rx: UdpSocket, to: SocketAddr, pps: u64) -> Flow {
        widen_receive_buffer(&rx);
        let _ = rx.set_read_timeout(Some(Duration::from_millis(50)));
        let stop = Arc::new(AtomicBool::new(false));
        let rx_stop = Arc::new(AtomicBool::new(false));
        let (started, started_ms) = (Instant::now(), now_ms());
        let rx_thread = {
            let stop = rx_stop.clone();
            std::thread::spawn(move || {
                let mut arrived: Vec<Option<Duration>> = Vec::new();
                let mut duplicates = 0;
                let mut buf = [0u8; 64];
                loop {
                    match rx.recv(&mut buf) {
                        Ok(n) if n >= 8 => {
                            let number = buf[..8].try_into().map(u64::from_be_bytes);
                            let i = number.unwrap_or_default() as usize;
                            if arrived.len() <= i {
                                arrived.resize(i + 1, None);
                            }
                            if arrived[i].is_some() {
                                duplicates += 1;
                            }
                            arrived[i].get_or_insert(started.elapsed());
                        }
                        Ok(_) => {}
                        Err(_) if stop.load(Ordering::Acquire) => return (arrived, duplicates),
                        Err(_) => {}
                    }
                }
            })
        };
        let tx_thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i: u64 = 0;
                while !stop.load(Ordering::Acquire) {
                    let due = started + Duration::from_nanos(i * 1_000_000_000 / pps.max(1));
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let _ = tx.send_to(&i.to_be_bytes(), to);
                    i += 1;
                }
                i
            })
        };
        Flow {
            stop,
            rx_stop,
            started,
            started_ms,
            pps,
            tx: Some(tx_thread),
            rx: Some(rx_thread),
        }
    }

    /// Stops sending, lets the last datagrams land, and says what arrived.
    pub fn finish(mut self) -> Delivery {
        self.stop.store(true, Ordering::Release);
        let sent = self.tx.take().map_or(0, |t| t.join().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(300));
        self.rx_stop.store(true, Ordering::Release);
        let (mut arrived, duplicates) = self
            .rx
            .take()
            .map_or_else(Default::default, |t| t.join().unwrap_or_default());
        arrived.resize(sent as usize, None);
        Delivery {
            sent,
            arrived,
            duplicates,
            started: self.started,
            started_ms: self.started_ms,
            pps: self.pps,
        }
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.rx_stop.store(true, Ordering::Release);
    }
}

/// Sends `n` datagrams from `from` (namespace `src`) to `to` as fast as
/// the socket takes them, and returns how many `at` (namespace `dst`)
/// received.
///
/// # Errors
/// A socket that cannot be bound.
pub fn burst(
    src: &Netns,
    from: &str,
    to: SocketAddr,
    dst: &Netns,
    at: SocketAddr,
    n: u64,
) -> Result<u64> {
    let (tx, rx) = bind_pair(src, from, dst, at)?;
    rx.set_read_timeout(Some(Duration::from_millis(300)))?;
    for i in 0..n {
        let _ = tx.send_to(&i.to_be_bytes(), to);
    }
    let mut got = 0;
    let mut buf = [0u8; 64];
    while rx.recv(&mut buf).is_ok() {
        got += 1;
    }
    Ok(got)
}
