//! A `dse serve` running in the test process on a temporary socket and
//! store, stopped on drop.

#![allow(dead_code)]

use dse_control::client::{Call, Endpoint, Method, StatusCode};
use dse_control::daemon::DaemonConfig;
use dse_control::serve::{ServeConfig, ServeError, serve};
use dse_datapath::xdp::XdpLimits;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("dse-control-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("creates a temp dir");
        TempDir(p)
    }

    /// The store's database file in it.
    pub fn db(&self) -> PathBuf {
        self.0.join("dse.redb")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn config(dir: &TempDir) -> ServeConfig {
    ServeConfig {
        daemon: DaemonConfig {
            db: dir.db(),
            bpffs: PathBuf::from("/sys/fs/bpf").join(format!(
                "dse-api-{}-{}",
                std::process::id(),
                dir.0.file_name().unwrap().to_string_lossy()
            )),
            emu_workers: 1,
            xdp_limits: XdpLimits::small(),
            xdp_skb_mode: false,
            depot: Default::default(),
        },
        socket: dir.0.join("dse.sock"),
        tcp: None,
        token_file: None,
        max_body: 1 << 20,
        limits: Default::default(),
        fleet: None,
    }
}

/// A running daemon.
pub struct Served {
    pub rt: tokio::runtime::Runtime,
    pub config: ServeConfig,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
    pub dir: TempDir,
}

impl Served {
    pub fn start(name: &str) -> Served {
        Served::start_with(name, |_| {})
    }

    /// Starts with `config` adjusted by `adjust`; waits until it answers.
    pub fn start_with(name: &str, adjust: impl FnOnce(&mut ServeConfig)) -> Served {
        let dir = TempDir::new(name);
        let mut config = config(&dir);
        adjust(&mut config);
        let rt = tokio::runtime::Runtime::new().expect("a runtime");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(serve(config.clone(), async move {
            let _ = rx.await;
        }));
        let served = Served {
            rt,
            config,
            stop: Some(tx),
            task: Some(task),
            dir,
        };
        for _ in 0..200 {
            if served.task.as_ref().unwrap().is_finished() {
                break;
            }
            if served.config.socket.exists()
                && std::os::unix::net::UnixStream::connect(&served.config.socket).is_ok()
            {
                return served;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("dse serve did not come up");
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Unix(self.config.socket.clone())
    }

    /// Sends a request; returns the status and the body as JSON (or as a
    /// JSON string if it is not JSON).
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> (StatusCode, Value) {
        self.call_at(&self.endpoint(), method, path, body)
    }

    pub fn call_at(
        &self,
        ep: &Endpoint,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> (StatusCode, Value) {
        let mut call = Call::new(method, path);
        call.body = body.map(|(t, b)| (t, b.into()));
        let (status, bytes) = self.rt.block_on(ep.send(call)).expect("an answer");
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, v)
    }

    pub fn json(&self, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
        self.call(
            method,
            path,
            Some(("application/json", body.as_bytes().to_vec())),
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = self.rt.block_on(task);
        }
        let _ = std::fs::remove_dir_all(&self.config.daemon.bpffs);
    }
}

/// A small valid rule set as JSON: ports p0, p1 and `n` rules.
pub fn rule_set_json(n: u32) -> String {
    let rules: Vec<String> = (1..=n)
        .map(|i| {
            format!(
                r#"{{"id": {i}, "priority": 10, "match": {{"in_port": "p0", "ip_proto": "udp", "l4_dst": {}}}, "actions": [{{"output": "p1"}}]}}"#,
                1000 + i
            )
        })
        .collect();
    format!(
        r#"{{"ports": [{{"name": "p0", "index": 0}}, {{"name": "p1", "index": 1}}], "rules": [{}]}}"#,
        rules.join(", ")
    )
}
