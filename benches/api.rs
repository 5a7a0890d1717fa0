//! The control plane end to end, through `dse serve`'s API on its Unix
//! socket into an XDP datapath attached to a veth of the bench's own:
//!
//! - 1M exact rules applied (PUT /v1/rules, JSON), timed from the first
//!   byte sent to the answer, which comes once the XDP maps hold them and
//!   the store has committed them: into an empty datapath, and replacing 1M
//!   rules that all differ. Median of 3 each. For scale, in the same run:
//!   parsing the same body, and committing the same rules to a store alone.
//! - One rule added (POST /v1/rules/batch) until the answer, which comes
//!   after the datapath applied it and the store committed it: 1000 adds on
//!   top of the 1M rules, and 1000 on top of 100 rules; median and p99.
//!   The store commits a patch by syncing a journal entry; for scale, the
//!   same run times bare 300-byte writes + `fdatasync` in the same place.
//!
//! Needs root and bpffs. Run with `cargo bench --bench api`.

use dse_control::client::{Call, Endpoint, Method, StatusCode};
use dse_control::daemon::DaemonConfig;
use dse_control::serve::{ServeConfig, serve};
use dse_datapath::rule::RuleSet;
use dse_datapath::xdp::XdpLimits;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::*;

/// A veth pair of the bench's own, in the root namespace, deleted on drop.
struct VethPair(String);

impl VethPair {
    fn new(name: &str) -> VethPair {
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("runs ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = Command::new("ip").args(["link", "del", name]).output();
        ip(&[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("{name}p"),
        ]);
        ip(&["link", "set", name, "up"]);
        ip(&["link", "set", &format!("{name}p"), "up"]);
        VethPair(name.into())
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

struct Client {
    rt: tokio::runtime::Runtime,
    ep: Endpoint,
}

impl Client {
    fn send(&self, method: Method, path: &str, body: Vec<u8>) -> Duration {
        let started = Instant::now();
        let call = Call::new(method, path).json(body);
        let (status, answer) = self.rt.block_on(self.ep.send(call)).expect("an answer");
        let took = started.elapsed();
        assert!(
            status == StatusCode::OK || status == StatusCode::CREATED,
            "{path}: {status} {}",
            String::from_utf8_lossy(&answer)
        );
        took
    }
}

fn with_priority(set: &RuleSet, priority: u32) -> Vec<u8> {
    let mut set = set.clone();
    for r in &mut set.rules {
        r.priority = priority;
    }
    serde_json::to_vec(&set).expect("encodes")
}

fn one_rule_latency(c: &Client, base_id: u32, n: u32) -> (Duration, Duration) {
    let mut took = Vec::new();
    for i in 0..n {
        let id = base_id + i;
        let body = format!(
            r#"{{"add": [{{"id": {id}, "priority": 5, "match": {{"ip_proto": "udp", "l4_dst": {}}}, "actions": ["drop"]}}]}}"#,
            1 + i % 60_000
        );
        took.push(c.send(Method::POST, "/v1/rules/batch", body.into_bytes()));
    }
    took.sort();
    (took[took.len() / 2], took[took.len() * 99 / 100])
}

/// For scale: median and p99 of 1000 writes of 300 bytes into a file of
/// zeros in `dir`, each synced (`fdatasync`): what one journal entry costs
/// on this disk at the time, without the daemon.
fn bare_sync_latency(dir: &std::path::Path) -> (Duration, Duration) {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let path = dir.join("sync-probe");
    let mut f = std::fs::File::create(&path).expect("creates the probe file");
    f.write_all(&vec![0; 1 << 20]).expect("writes zeros");
    f.sync_all().expect("syncs");
    let mut took: Vec<Duration> = (0..1000u64)
        .map(|i| {
            let t = Instant::now();
            f.write_all_at(&[7; 300], i * 300).expect("writes");
            f.sync_data().expect("syncs");
            t.elapsed()
        })
        .collect();
    let _ = std::fs::remove_file(&path);
    took.sort();
    (took[took.len() / 2], took[took.len() * 99 / 100])
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/sys/fs/bpf").is_dir() {
        eprintln!("api bench: needs root and bpffs; skipped");
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let veth = VethPair::new(&format!("dxapi{}", std::process::id() % 10_000));
    let pins = Pins::new("api");
    let dir = std::env::temp_dir().join(format!("dse-bench-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creates a temp dir");
    let config = ServeConfig {
        daemon: DaemonConfig {
            db: dir.join("dse.redb"),
            bpffs: pins.0.clone(),
            emu_workers: 1,
            xdp_limits: XdpLimits::default(),
            xdp_skb_mode: false,
            depot: Default::default(),
        },
        socket: dir.join("dse.sock"),
        tcp: None,
        token_file: None,
        max_body: 1 << 30,
        limits: Default::default(),
        fleet: None,
    };
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(serve(config.clone(), async move {
        let _ = stopped.await;
    }));
    while std::os::unix::net::UnixStream::connect(&config.socket).is_err() {
        assert!(!server.is_finished(), "dse serve stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
    let c = Client {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        ep: Endpoint::Unix(config.socket.clone()),
    };
    let empty = serde_json::to_vec(&with_ports(vec![])).unwrap();
    c.send(Method::PUT, "/v1/rules", empty.clone());
    let attach = format!(
        r#"{{"name": "bench", "backend": "xdp", "interfaces": {{"p0": "{}"}}}}"#,
        veth.0
    );
    c.send(Method::POST, "/v1/datapaths", attach.into_bytes());

    let set = exact_rules(1_000_000);
    let n = set.rules.len() as f64;
    let (mut fresh, mut replace, mut parse) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    let rounds = std::env::var("DSE_BENCH_ROUNDS").map_or(3, |v| v.parse().expect("a number"));
    for round in 0..rounds {
        c.send(Method::PUT, "/v1/rules", empty.clone());
        let a = with_priority(&set, 10 + 2 * round);
        let b = with_priority(&set, 11 + 2 * round);
        bytes = a.len();
        let t = Instant::now();
        let parsed = RuleSet::parse_json_bytes(&a).expect("parses");
        parse.push(t.elapsed());
        drop(parsed);
        fresh.push(c.send(Method::PUT, "/v1/rules", a));
        replace.push(c.send(Method::PUT, "/v1/rules", b));
    }
    let rate = |d: Duration| n / d.as_secs_f64() / 1e3;
    let (f, r, p) = (median(fresh), median(replace), median(parse));
    println!(
        "api/apply_1M_rules_into_xdp/empty_datapath: {f:?} ({:.0}k rules/s; {} MB of JSON)",
        rate(f),
        bytes >> 20
    );
    println!(
        "api/apply_1M_rules_into_xdp/replacing_1M: {r:?} ({:.0}k rules/s)",
        rate(r)
    );
    println!("api/apply_1M_rules_into_xdp: for scale, parsing the body alone: {p:?}");
    let (med, p99) = one_rule_latency(&c, 2_000_000, 1000);
    println!("api/add_one_rule/1M_installed: median {med:?}, p99 {p99:?} (1000 adds)");
    c.send(
        Method::PUT,
        "/v1/rules",
        serde_json::to_vec(&exact_rules(100)).unwrap(),
    );
    let (med, p99) = one_rule_latency(&c, 3_000_000, 1000);
    println!("api/add_one_rule/100_installed: median {med:?}, p99 {p99:?} (1000 adds)");
    let (med, p99) = bare_sync_latency(&dir);
    println!(
        "api/add_one_rule: for scale, a bare 300-byte write + fdatasync beside the store: median {med:?}, p99 {p99:?}"
    );
    let _ = stop.send(());
    let _ = rt.block_on(server);
    drop(veth);
    let _ = std::fs::remove_dir_all(&dir);
}
