//! Rule installation through dse's API: a `dse serve` in the DUT namespace
//! with an XDP datapath instance on the DUT's ports, and the time from
//! sending `PUT /v1/rules` to its answer (the rules stored, synced and in
//! force in the datapath).

use super::BenchError;
use super::subject::limits_for;
use super::topology::Topology;
use crate::lab::control::{ControlPlane, serve_config};
use dse_control::client::Method;
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
    let api = |e: anyhow::Error| BenchError::Api {
        what: format!("{e:#}"),
    };
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).map_err(|source| BenchError::Io {
        what: format!("creating {}", work.display()),
        source,
    })?;
    let body = serde_json::to_vec(rules).map_err(|e| api(e.into()))?;
    let mut config = serve_config(work, pins);
    config.daemon.xdp_limits = limits_for(rules);
    config.max_body = body.len() + (1 << 20);
    let took = (|| {
        let cp = ControlPlane::start_with(&topo.dut, config)?;
        // The ports first (a datapath binds only ports the rules define),
        // then the datapath, then the timed rule set.
        let ports = serde_json::json!({"ports": rules.ports});
        cp.call(Method::PUT, "/v1/rules", Some(&ports))?;
        let attach =
            serde_json::json!({"name": "bench", "backend": "xdp", "interfaces": topo.interfaces()});
        cp.call(Method::POST, "/v1/datapaths", Some(&attach))?;
        let start = Instant::now();
        cp.send(
            Method::PUT,
            "/v1/rules",
            Some(("application/json", body.into())),
        )?;
        Ok(start.elapsed())
    })()
    .map_err(api);
    let _ = std::fs::remove_dir_all(work);
    took
}
