//! A steady, paced UDP stream from namespace A to namespace B, counted at
//! both ends: what "no packet lost" is measured with.

#![allow(dead_code)]

use super::topology::Topology;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use dse::demo::flows::widen_receive_buffer;

/// Counts the datagrams a socket in B receives, until stopped.
fn receiver(sock: UdpSocket, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    widen_receive_buffer(&sock);
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    std::thread::spawn(move || {
        let mut n = 0;
        let mut buf = [0u8; 64];
        loop {
            match sock.recv(&mut buf) {
                Ok(_) => n += 1,
                Err(_) if stop.load(Ordering::Acquire) => return n,
                Err(_) => {}
            }
        }
    })
}

/// Sends numbered datagrams at about `pps` until stopped; returns how many.
fn sender(
    sock: UdpSocket,
    to: std::net::SocketAddr,
    pps: u64,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut i: u64 = 0;
        while !stop.load(Ordering::Acquire) {
            let due = start + Duration::from_nanos(i * 1_000_000_000 / pps);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            sock.send_to(&i.to_be_bytes(), to).expect("sends");
            i += 1;
            sent.store(i, Ordering::Release);
        }
    })
}

/// A running stream to UDP port 7000 in B.
pub struct Stream {
    stop_send: Arc<AtomicBool>,
    stop_recv: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    tx: Option<std::thread::JoinHandle<()>>,
    rx: Option<std::thread::JoinHandle<u64>>,
}

impl Stream {
    /// Starts 5,000 datagrams a second from A to B's port 7000.
    pub fn start(t: &Topology) -> Stream {
        let (stop_send, stop_recv) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let sent = Arc::new(AtomicU64::new(0));
        let rx = receiver(t.udp_in_b(7000), stop_recv.clone());
        let tx = sender(
            t.udp_in_a(),
            t.b_addr(7000),
            5_000,
            stop_send.clone(),
            sent.clone(),
        );
        Stream {
            stop_send,
            stop_recv,
            sent,
            tx: Some(tx),
            rx: Some(rx),
        }
    }

    /// Stops sending, lets the last datagrams land; returns (sent, received).
    pub fn finish(mut self) -> (u64, u64) {
        self.stop_send.store(true, Ordering::Release);
        self.tx.take().unwrap().join().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        self.stop_recv.store(true, Ordering::Release);
        let received = self.rx.take().unwrap().join().unwrap();
        (self.sent.load(Ordering::Acquire), received)
    }
}
