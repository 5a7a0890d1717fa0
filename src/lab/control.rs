//! A control plane in a namespace: `dse serve` with its embedded store,
//! run in-process on threads of the namespace where the datapaths' ports
//! are, driven over its REST API as the CLI drives it, and stopped (its
//! datapaths detached) on drop. The demo's cluster and the bench's API
//! installation both run one.

use anyhow::{Context, Result, bail};
use dse_control::client::{Call, Endpoint, Method};
use dse_control::daemon::DaemonConfig;
use dse_control::lifecycle::depot::{Acceptance, DepotConfig};
use dse_control::serve::{ServeConfig, ServeError, serve};
use dse_datapath::xdp::XdpLimits;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The daemon's settings for a cluster whose files are under `dir` (the
/// store `dse.redb`, the depot's `trusted-keys`), pinning XDP datapaths
/// under `pins`: one host-path worker, small XDP maps.
pub fn daemon_config(dir: &Path, pins: &Path) -> DaemonConfig {
    DaemonConfig {
        db: dir.join("dse.redb"),
        bpffs: pins.to_path_buf(),
        emu_workers: 1,
        xdp_limits: XdpLimits::small(),
        xdp_skb_mode: false,
        depot: DepotConfig {
            trusted_keys: Some(dir.join("trusted-keys")),
            lowest_acceptance: Acceptance::PartnerSupported,
        },
    }
}

/// The serve settings of [`ControlPlane::start`]: [`daemon_config`], the
/// socket `dir/dse.sock`, Unix socket only, bodies up to 64 MiB.
pub fn serve_config(dir: &Path, pins: &Path) -> ServeConfig {
    ServeConfig {
        daemon: daemon_config(dir, pins),
        socket: dir.join("dse.sock"),
        tcp: None,
        token_file: None,
        max_body: 64 << 20,
        limits: Default::default(),
        fleet: None,
    }
}

/// A running daemon and a client of it.
pub struct ControlPlane {
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
    endpoint: Endpoint,
    pins: PathBuf,
}

impl ControlPlane {
    /// Starts `dse serve` on a store and socket under `dir`, pinning XDP
    /// datapaths under `pins`, trusting `dir/trusted-keys`; its threads run
    /// in `ns`.
    ///
    /// # Errors
    /// If it does not come up.
    pub fn start(ns: &crate::lab::Netns, dir: &Path, pins: &Path) -> Result<ControlPlane> {
        Self::start_with(ns, serve_config(dir, pins))
    }

    /// Starts `dse serve` with `config`; its threads run in `ns`.
    ///
    /// # Errors
    /// If it does not come up.
    pub fn start_with(ns: &crate::lab::Netns, config: ServeConfig) -> Result<ControlPlane> {
        let pins = config.daemon.bpffs.clone();
        let endpoint = Endpoint::Unix(config.socket.clone());
        // A runtime built on a thread of the namespace: its threads, and
        // every thread they start, are in it too.
        let rt = ns.run(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        })??;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(serve(config, async move {
            let _ = stopped.await;
        }));
        let cp = ControlPlane {
            rt,
            stop: Some(stop),
            task: Some(task),
            endpoint,
            pins,
        };
        for _ in 0..500 {
            if cp.call(Method::GET, "/v1/health", None).is_ok() {
                return Ok(cp);
            }
            if cp.task.as_ref().is_some_and(|t| t.is_finished()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!("dse serve did not come up")
    }

    /// Sends a request with a JSON body, if any, and returns the answer's
    /// JSON.
    ///
    /// # Errors
    /// An unreachable daemon, or its error answer (status and message).
    pub fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let body = body.map(|b| ("application/json", b.to_string().into()));
        self.send(method, path, body)
    }

    /// Sends a request with `body` (content type and bytes), if any, and
    /// returns the answer's JSON.
    ///
    /// # Errors
    /// An unreachable daemon, or its error answer (status and message).
    pub fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, bytes::Bytes)>,
    ) -> Result<Value> {
        let mut call = Call::new(method.clone(), path);
        call.body = body;
        let (status, bytes) = self
            .rt
            .block_on(self.endpoint.send(call))
            .with_context(|| format!("{method} {path}"))?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{method} {path}: {status}: {}",
                v["error"].as_str().unwrap_or("no message")
            );
        }
        Ok(v)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // The DPUs' datapaths are detached first: XDP datapaths stay pinned
        // and forwarding when the daemon stops, which the demo must not
        // leave behind.
        if let Ok(list) = self.call(Method::GET, "/v1/datapaths", None) {
            for d in list.as_array().into_iter().flatten() {
                if let Some(name) = d["name"].as_str() {
                    let _ = self.call(Method::DELETE, &format!("/v1/datapaths/{name}"), None);
                }
            }
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = self.rt.block_on(task);
        }
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}
