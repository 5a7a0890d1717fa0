//! A fleet controller's statistics and counters: statistics as each agent
//! last reported them, per-rule counters asked of the agents when wanted.

use super::ApiError;
use super::fleet::FleetApi;
use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

type Answer = Result<Response, ApiError>;

/// Query of `GET /v1/counters` on a fleet.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountersQuery {
    host: Option<String>,
    datapath: Option<String>,
}

/// How long a host's agent has to answer for its counters.
const COUNTERS_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /v1/counters[?host=H][&datapath=D]`: per-rule counters, asked of
/// each available host's agent at once (of H's only), named
/// `host/datapath` (only `datapath` with a host).
pub async fn counters(State(s): State<Arc<FleetApi>>, Query(q): Query<CountersQuery>) -> Answer {
    let hosts = s.controller.hosts().await?;
    let targets: Vec<String> = match &q.host {
        Some(h) => match hosts.iter().find(|v| &v.host == h) {
            None => return Err(no_host(h)),
            Some(v) if v.state != "available" => {
                return Err(ApiError {
                    status: StatusCode::CONFLICT,
                    code: "host_unavailable",
                    message: format!(
                        "host {h} is unavailable: no agent of it is live, so nothing answers for its counters (dse host list)"
                    ),
                });
            }
            Some(_) => vec![h.clone()],
        },
        None => hosts
            .iter()
            .filter(|v| v.state == "available")
            .map(|v| v.host.clone())
            .collect(),
    };
    let mut asks = tokio::task::JoinSet::new();
    for h in targets {
        let (etcd, datapath) = (s.controller.etcd().clone(), q.datapath.clone());
        asks.spawn(async move {
            let a =
                crate::fleet::counters::ask(&etcd, &h, datapath.as_deref(), COUNTERS_WITHIN).await;
            (h, a)
        });
    }
    let mut out = serde_json::Map::new();
    let mut missing = 0;
    while let Some(done) = asks.join_next().await {
        let (h, answer) = done.expect("a counters request does not panic");
        let answer = answer?;
        if let Some(e) = answer.error {
            if answer.not_found && q.host.is_none() {
                missing += 1;
                continue;
            }
            return Err(if answer.not_found {
                ApiError {
                    status: StatusCode::NOT_FOUND,
                    code: "not_found",
                    message: format!("host {h}: {e}"),
                }
            } else {
                ApiError::refused(format!("host {h}: {e}"))
            });
        }
        for (dp, c) in answer.counters.unwrap_or_default() {
            let name = if q.host.is_some() {
                dp
            } else {
                format!("{h}/{dp}")
            };
            out.insert(name, serde_json::to_value(c).expect("counters serialize"));
        }
    }
    if let Some(dp) = &q.datapath
        && out.is_empty()
        && missing > 0
    {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("no host runs a datapath {dp:?}; dse host list shows them"),
        });
    }
    Ok(Json(Value::Object(out)).into_response())
}

/// The 404 of a host the fleet does not know.
fn no_host(h: &str) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        message: format!("no host {h:?} in the fleet; dse host list names them"),
    }
}

/// Query of `GET /v1/stats` on a fleet.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    host: Option<String>,
}

/// `GET /v1/stats[?host=H]`: each datapath's statistics as its agent last
/// reported them, named `host/datapath` (only `datapath` with a host).
pub async fn stats(State(s): State<Arc<FleetApi>>, Query(q): Query<StatsQuery>) -> Answer {
    let hosts = s.controller.hosts().await?;
    if let Some(h) = &q.host
        && !hosts.iter().any(|v| &v.host == h)
    {
        return Err(no_host(h));
    }
    let mut out = serde_json::Map::new();
    for view in hosts {
        if q.host.as_ref().is_some_and(|h| *h != view.host) {
            continue;
        }
        for d in view.report.into_iter().flat_map(|r| r.datapaths) {
            let name = match &q.host {
                Some(_) => d.name,
                None => format!("{}/{}", view.host, d.name),
            };
            out.insert(
                name,
                serde_json::to_value(d.stats).expect("stats serialize"),
            );
        }
    }
    Ok(Json(Value::Object(out)).into_response())
}
