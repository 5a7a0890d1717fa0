//! Hitless upgrades under traffic: a steady UDP stream from namespace A to
//! namespace B through the XDP datapath while (1) the program is upgraded
//! to version 2, whose rule-counter layout differs (the counters map is
//! migrated), and (2) the owning process is killed, another adopts the
//! pinned maps and links, and upgrades. Every datagram must arrive and be
//! counted. Needs root; under CI=true that is a failure.

mod common;

use common::bpf::PinDir;
use common::topology::Topology;
use dse_datapath::datapath::Datapath;
use dse_datapath::xdp::{Program, XdpDatapath};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const RULES: &str = "  \
  - {id: 1, priority: 10, match: {in_port: pa, ip_proto: udp, l4_dst: 7000}, actions: [{output: pb}]}
  - {id: 2, priority: 1, match: {ip_proto: udp}, actions: [drop]}
";

/// Counts the datagrams a socket in B receives, until stopped.
fn receiver(sock: UdpSocket, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let bytes: libc::c_int = 8 << 20;
    // SAFETY: a valid socket fd and option value for setsockopt.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        );
    }
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

struct Stream {
    stop_send: Arc<AtomicBool>,
    stop_recv: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    tx: Option<std::thread::JoinHandle<()>>,
    rx: Option<std::thread::JoinHandle<u64>>,
}

impl Stream {
    fn start(t: &Topology) -> Stream {
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
    fn finish(mut self) -> (u64, u64) {
        self.stop_send.store(true, Ordering::Release);
        self.tx.take().unwrap().join().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        self.stop_recv.store(true, Ordering::Release);
        let received = self.rx.take().unwrap().join().unwrap();
        (self.sent.load(Ordering::Acquire), received)
    }
}

#[test]
fn upgrade_to_a_new_counter_layout_under_traffic() {
    let Some(pins) = PinDir::new("upgrade") else {
        return;
    };
    let t = Topology::new("g", 5);
    let dp = t.start(&pins, RULES);
    let stream = Stream::start(&t);
    std::thread::sleep(Duration::from_millis(500));
    let before = dp.rule_counters()[&1].packets;
    assert!(before > 0, "traffic flows before the upgrade");
    dp.upgrade(Program::V2).expect("upgrades");
    assert_eq!(dp.program(), Program::V2);
    std::thread::sleep(Duration::from_millis(500));
    let (sent, received) = stream.finish();
    let counted = dp.rule_counters()[&1].packets;
    assert_eq!(received, sent, "every datagram arrived across the upgrade");
    assert_eq!(
        counted, sent,
        "every datagram was counted, before and after the migration"
    );
    assert_eq!(dp.stats().dropped(), 0);
    assert_eq!(dp.rules(), Topology::rule_set(RULES));
}

/// The owning process of the cross-process test: started by it, killed by it.
#[test]
#[ignore = "run by kill_the_owner_adopt_and_upgrade_under_traffic as a child process"]
fn owner_process() {
    let Ok(dir) = std::env::var("DSE_OWNER_PINS") else {
        return;
    };
    let pins = common::bpf::PinDir::adopt(dir.into());
    let t = Topology::existing("k", 6);
    let _dp = t.start(&pins, RULES);
    // The parent owns the namespaces and the pins.
    std::mem::forget(t);
    std::mem::forget(pins);
    std::fs::write(std::env::var("DSE_OWNER_READY").unwrap(), b"ready").unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn kill_the_owner_adopt_and_upgrade_under_traffic() {
    let Some(pins) = PinDir::new("adopt") else {
        return;
    };
    let t = Topology::new("k", 6);
    let ready = std::env::temp_dir().join(format!("dse-owner-ready-{}", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let mut owner = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "owner_process", "--ignored", "--nocapture"])
        .env("DSE_OWNER_PINS", &pins.0)
        .env("DSE_OWNER_READY", &ready)
        .spawn()
        .expect("starts the owner");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the owner comes up");
        assert!(
            owner.try_wait().unwrap().is_none(),
            "the owner exited early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stream = Stream::start(&t);
    std::thread::sleep(Duration::from_millis(400));
    owner.kill().unwrap();
    owner.wait().unwrap();
    // Nobody owns the datapath now; the pinned links keep it forwarding.
    std::thread::sleep(Duration::from_millis(400));
    let dp = XdpDatapath::adopt(Topology::rule_set(RULES), t.config(&pins)).expect("adopts");
    std::thread::sleep(Duration::from_millis(300));
    dp.upgrade(Program::V2).expect("upgrades");
    std::thread::sleep(Duration::from_millis(300));
    let (sent, received) = stream.finish();
    let _ = std::fs::remove_file(&ready);
    assert_eq!(
        received, sent,
        "every datagram arrived across the kill, the adoption and the upgrade"
    );
    assert_eq!(
        dp.rule_counters()[&1].packets,
        sent,
        "and every one was counted"
    );
    assert_eq!(dp.stats().dropped(), 0);
}
