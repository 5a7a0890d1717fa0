//! Clients that go away early through the real binary: a hundred clients
//! over the Unix socket and over TCP write a request and close without
//! reading the answer, and `dse serve` lives on and answers; a CLI whose
//! reader closes its output ends with an error, not a signal; the whole
//! rule set streams, and reading it costs the daemon little memory.

mod common;

use common::daemon::{DaemonProcess, free_port, rss_kb};
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A rule set of `n` exact rules.
fn rules(n: u32) -> String {
    let rules: Vec<_> = (0..n)
        .map(|i| {
            json!({"id": i + 1, "priority": 10,
                   "match": {"in_port": "p0", "ip_proto": "udp", "ip_src": format!("10.{}.{}.{}/32", i >> 16, (i >> 8) & 255, i & 255), "l4_dst": 53},
                   "actions": ["drop"]})
        })
        .collect();
    json!({"ports": [{"name": "p0", "index": 0}], "rules": rules}).to_string()
}

#[test]
fn clients_that_close_before_reading_cost_the_daemon_nothing() {
    let (dir, bpffs) = DaemonProcess::paths("disc");
    let token = dir.join("token");
    std::fs::write(&token, "a-token\n").unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let token_arg = token.to_string_lossy().into_owned();
    let mut d = DaemonProcess::start_with(
        dir.clone(),
        bpffs,
        &["--listen", &addr, "--token-file", &token_arg],
    );
    let file = dir.join("rules.json");
    std::fs::write(&file, rules(20_000)).unwrap();
    let out = d.cli(&["rules", "apply", "-f", &file.to_string_lossy()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..100 {
        let path = if i % 2 == 0 {
            "/openapi.json"
        } else {
            "/v1/rules"
        };
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: dse\r\nAuthorization: Bearer a-token\r\n\r\n");
        if i % 4 < 2 {
            let mut s = UnixStream::connect(d.socket()).expect("connects");
            s.write_all(request.as_bytes()).unwrap();
        } else {
            let mut s = TcpStream::connect(&addr).expect("connects over TCP");
            s.write_all(request.as_bytes()).unwrap();
            // Closing with the answer unread resets the connection.
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: a valid socket and a linger struct of the size given.
            unsafe {
                libc::setsockopt(
                    std::os::fd::AsRawFd::as_raw_fd(&s),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&linger as *const libc::linger).cast(),
                    size_of::<libc::linger>() as u32,
                )
            };
        }
    }
    // The answers meet closed sockets meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "dse serve is alive: {}",
        d.log()
    );
    let status = d.json(&["status"]);
    assert_eq!(status["health"]["status"], "ok", "{status}");

    // A reader that stops early: the CLI fails with an error, no signal.
    let mut cli = d
        .command(&["-o", "json", "rules", "get"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    cli.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = cli.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the CLI ends with an error, not killed by SIGPIPE: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.child.try_wait().unwrap().is_none(), "dse serve is alive");

    // Paging and ids.
    let page = d.json(&["rules", "get", "--limit", "3", "--after", "10"]);
    let ids: Vec<u64> = page["rules"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [11, 12, 13]);
    assert_eq!(page["next"], 13);
    let some = d.json(&["rules", "get", "--ids", "5,7,999999"]);
    assert_eq!(
        some["rules"]["rules"].as_array().unwrap().len(),
        2,
        "{some}"
    );
}

#[test]
fn reading_a_million_rules_streams_in_bounded_memory() {
    let (dir, bpffs) = DaemonProcess::paths("stream");
    let d = DaemonProcess::start(dir.clone(), bpffs);
    let file = dir.join("rules.json");
    std::fs::write(&file, rules(1_000_000)).unwrap();
    let out = d.cli(&["rules", "apply", "-f", &file.to_string_lossy()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&file).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let before = rss_kb(d.child.id());
    let mut s = UnixStream::connect(d.socket()).unwrap();
    let started = Instant::now();
    s.write_all(b"GET /v1/rules HTTP/1.1\r\nHost: dse\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let n = s.read(&mut buf).unwrap();
    let first = started.elapsed();
    assert!(n > 0 && buf.starts_with(b"HTTP/1.1 200"));
    assert!(
        first < Duration::from_secs(1),
        "first bytes after {first:?}"
    );
    // Read slowly: the daemon must not buffer the answer meanwhile.
    let (mut total, mut peak) = (n, 0u64);
    let mut body = Vec::new();
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
        body.extend_from_slice(&buf[..n]);
        if total % (8 << 20) < n {
            peak = peak.max(rss_kb(d.child.id()));
        }
    }
    peak = peak.max(rss_kb(d.child.id()));
    let extra_mb = peak.saturating_sub(before) / 1024;
    eprintln!(
        "{total} bytes; first after {first:?}; daemon RSS {before} kB before, +{extra_mb} MB at most while read"
    );
    assert!(total > 50 << 20, "the whole set came ({total} bytes)");
    // The chunks in flight, and what the allocator keeps around them.
    assert!(
        extra_mb < 64,
        "reading 1M rules took the daemon {extra_mb} MB more"
    );
    // The last chunk closes the document, then the chunked body ends.
    assert!(
        body.ends_with(b"]}}\r\n0\r\n\r\n"),
        "the answer ends whole: {:?}",
        String::from_utf8_lossy(&body[body.len().saturating_sub(32)..])
    );
}
