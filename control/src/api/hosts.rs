//! The fleet's endpoints as a single-machine `dse serve` answers them: its
//! one host, whose datapaths it runs in-process. It is no fleet, so the
//! fleet's own changes and status are refused with 409 `not_a_fleet`.

use super::handlers::{Answer, blocking};
use super::{ApiError, ApiState};
use crate::fleet::agent::{AppliedRecord, DEFAULT_RULE_SET, host_status};
use crate::fleet::controller::HostView;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use std::sync::Arc;

/// This machine's name, as the kernel has it.
pub fn local_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `GET /v1/hosts`: this machine, always available, and what it runs.
pub async fn hosts(State(s): State<Arc<ApiState>>) -> Answer {
    let daemon = Arc::clone(&s.daemon);
    let view = blocking(move || {
        let host = local_host();
        let applied = AppliedRecord {
            rule_set: DEFAULT_RULE_SET.into(),
            generation: daemon.generation(),
            sha256: daemon.rules_digest(),
        };
        HostView {
            report: Some(host_status(&daemon, &host, applied, None)),
            host,
            state: "available",
            desired: None,
        }
    })
    .await;
    Ok(Json(vec![view]).into_response())
}

/// The refusal of a fleet-only request.
pub fn not_a_fleet(what: &str) -> ApiError {
    ApiError {
        status: StatusCode::CONFLICT,
        code: "not_a_fleet",
        message: format!(
            "{what} needs a fleet: this dse serve runs without --etcd (attach datapaths here with POST /v1/datapaths)"
        ),
    }
}

/// `PUT /v1/hosts/{host}` on a single machine: refused.
pub async fn set_host() -> ApiError {
    not_a_fleet("setting a host's desired state")
}

/// `GET /v1/fleet` on a single machine: refused.
pub async fn fleet() -> ApiError {
    not_a_fleet("the fleet's status")
}

/// Refuses a rule set other than `default` on a single machine, which runs
/// one.
///
/// # Errors
/// 422 `refused`, naming the rule set.
pub fn only_default(rule_set: Option<&str>) -> Result<(), ApiError> {
    match rule_set {
        None | Some(DEFAULT_RULE_SET) => Ok(()),
        Some(other) => Err(ApiError::refused(format!(
            "rule set {other:?}: a single-machine dse serve runs one rule set, {DEFAULT_RULE_SET}; named rule sets need a fleet (dse serve --etcd)"
        ))),
    }
}

/// Refuses a host other than this machine, the one host a single-machine
/// daemon has.
///
/// # Errors
/// 404 `not_found`, naming this machine.
pub fn only_this_host(host: Option<&str>) -> Result<(), ApiError> {
    let here = local_host();
    match host {
        Some(h) if h != here => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!(
                "no host {h:?} here: this single-machine dse serve is host {here:?} (a fleet controller, dse serve --etcd, knows many)"
            ),
        }),
        _ => Ok(()),
    }
}
