//! Rule installation through dse's API: a `dse serve` in the DUT namespace
//! with an XDP datapath instance on the DUT's ports, and the time from
//! sending `PUT /v1/rules` to its answer (the rules stored, synced and in
//! force in the datapath).

use super::BenchError;
use super::subject::limits_for;
use super::topology::Topology;
use dse_control::client::{Call, Endpoint, Method};
use dse_control::daemon::DaemonConfig;
use dse_control::serve::{ServeConfig, serve};
use dse_datapath::rule::RuleSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// The time `PUT /v1/rules` with `rules` took to be answered, through a
/// daemon started for it under `work` (its store, socket and pins there).
///
/// # Errors
/// [`BenchError::Api`] with the daemon's answer if it refused.
pub fn through_api(
    topo: &Topology,
    rules: &RuleSet,
    work: &Path,
    pins: &Path,
) -> Result<Duration, BenchError> {
    let api = |what: String| BenchError::Api { what };
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).map_err(|source| BenchError::Io {
        what: format!("creating {}", work.display()),
        source,
    })?;
    let body = serde_json::to_vec(rules).map_err(|e| api(e.to_string()))?;
    let config = ServeConfig {
        daemon: DaemonConfig {
            db: work.join("dse.redb"),
            bpffs: pins.to_path_buf(),
            emu_workers: 1,
            xdp_limits: limits_for(rules),
            xdp_skb_mode: false,
            depot: Default::default(),
        },
        socket: work.join("dse.sock"),
        tcp: None,
        token_file: None,
        max_body: body.len() + (1 << 20),
    };
    let interfaces = topo.interfaces();
    // The runtime's threads start in the DUT namespace, where the ports are.
    let took = topo.dut.run(|| {
        let rt = tokio::runtime::Runtime::new().map_err(|e| api(format!("a runtime: {e}")))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = rt.spawn(serve(config.clone(), async move {
            let _ = stopped.await;
        }));
        let ep = Endpoint::Unix(config.socket.clone());
        let result = rt.block_on(async {
            for _ in 0..500 {
                if ep.send(Call::new(Method::GET, "/v1/health")).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // The ports first (a datapath binds only ports the rules
            // define), then the datapath, then the timed rule set.
            let ports = serde_json::json!({"ports": rules.ports});
            let (status, answer) = ep
                .send(Call::new(Method::PUT, "/v1/rules").json(ports.to_string()))
                .await
                .map_err(|e| api(e.to_string()))?;
            if !status.is_success() {
                return Err(api(format!(
                    "defining the ports: {status} {}",
                    String::from_utf8_lossy(&answer)
                )));
            }
            let attach =
                serde_json::json!({"name": "bench", "backend": "xdp", "interfaces": interfaces});
            let (status, answer) = ep
                .send(Call::new(Method::POST, "/v1/datapaths").json(attach.to_string()))
                .await
                .map_err(|e| api(e.to_string()))?;
            if !status.is_success() {
                return Err(api(format!(
                    "attaching: {status} {}",
                    String::from_utf8_lossy(&answer)
                )));
            }
            let mut call = Call::new(Method::PUT, "/v1/rules");
            call.body = Some(("application/json", body.into()));
            let start = Instant::now();
            let (status, answer) = ep.send(call).await.map_err(|e| api(e.to_string()))?;
            let took = start.elapsed();
            if !status.is_success() {
                return Err(api(format!(
                    "PUT /v1/rules: {status} {}",
                    String::from_utf8_lossy(&answer)
                )));
            }
            let _ = ep
                .send(Call::new(Method::DELETE, "/v1/datapaths/bench"))
                .await;
            Ok(took)
        });
        let _ = stop.send(());
        let _ = rt.block_on(task);
        result
    })?;
    let _ = std::fs::remove_dir_all(work);
    let _ = std::fs::remove_dir_all(pins);
    took
}
