//! The API of a controller on etcd (`dse serve --etcd`). It answers the
//! rule endpoints from etcd, by named rule set, the fleet's own endpoints
//! (hosts, fleet status, audit log), and the depot, images and remediations
//! (see `fleet_lifecycle`). A controller that does not lead serves
//! reads and refuses changes (421 `not_leader`, naming the leader and its
//! API). The single-machine endpoints it does not serve yet answer 501
//! `not_in_fleet_mode`.

use super::fleet_lifecycle as fl;
use super::fleet_rules as fr;
use super::fleet_stats as fs;
use super::{ApiError, guard, routes};
use crate::daemon::ControlError;
use crate::fleet::FleetError;
use crate::fleet::agent::HostDesired;
use crate::fleet::controller::Controller;
use crate::lifecycle::{Cluster, Host};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// What the fleet handlers share.
pub struct FleetApi {
    /// This controller.
    pub controller: Arc<Controller>,
    /// The largest request body accepted, in bytes.
    pub max_body: usize,
    /// One large request body is read at a time.
    pub large_bodies: tokio::sync::Semaphore,
    /// Request counters and timings.
    pub metrics: super::Metrics,
}

impl super::metrics::Measured for FleetApi {
    fn metrics(&self) -> &super::Metrics {
        &self.metrics
    }
}

impl guard::BodyGate for FleetApi {
    fn max_body(&self) -> usize {
        self.max_body
    }
    fn large_bodies(&self) -> &tokio::sync::Semaphore {
        &self.large_bodies
    }
}

type Answer = Result<Response, ApiError>;

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> ApiError {
        let (status, code) = match &e {
            FleetError::NotLeader { .. } => (StatusCode::MISDIRECTED_REQUEST, "not_leader"),
            FleetError::Conflict { .. } => (StatusCode::CONFLICT, "generation_conflict"),
            FleetError::Unreachable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "etcd_unreachable"),
            FleetError::AgentSilent { .. } => (StatusCode::SERVICE_UNAVAILABLE, "agent_silent"),
            FleetError::Damaged { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "etcd_damaged"),
            _ => (StatusCode::BAD_GATEWAY, "etcd_failed"),
        };
        ApiError {
            status,
            code,
            message: e.to_string(),
        }
    }
}

/// The fleet controller's endpoints: method, path and handler. Every one
/// is also in [`routes`] and the OpenAPI document.
pub fn fleet_routes() -> Vec<(Method, &'static str, MethodRouter<Arc<FleetApi>>)> {
    vec![
        (Method::GET, "/v1/health", get(health)),
        (Method::GET, "/v1/rules", get(fr::get_rules)),
        (Method::PUT, "/v1/rules", put(fr::put_rules)),
        (Method::POST, "/v1/rules/batch", post(fr::batch)),
        (Method::GET, "/v1/hosts", get(hosts)),
        (Method::PUT, "/v1/hosts/{host}", put(set_host)),
        (Method::GET, "/v1/fleet", get(fleet)),
        (Method::GET, "/v1/stats", get(fs::stats)),
        (Method::GET, "/v1/counters", get(fs::counters)),
        (Method::GET, "/v1/clusters", get(clusters)),
        (Method::POST, "/v1/clusters", post(create_cluster)),
        (Method::POST, "/v1/clusters/{name}/hosts", post(add_host)),
        (Method::GET, "/v1/audit", get(audit)),
        (Method::GET, "/v1/depot", get(fl::depot)),
        (Method::POST, "/v1/depot/import", post(fl::depot_import)),
        (Method::PUT, "/v1/clusters/{name}/image", put(fl::set_image)),
        (
            Method::GET,
            "/v1/clusters/{name}/compliance",
            get(fl::compliance),
        ),
        (
            Method::POST,
            "/v1/clusters/{name}/precheck",
            post(fl::precheck),
        ),
        (
            Method::POST,
            "/v1/clusters/{name}/recommendations",
            post(fl::recommendations),
        ),
        (
            Method::POST,
            "/v1/clusters/{name}/hardware-compatibility",
            post(fl::hardware_compatibility),
        ),
        (Method::POST, "/v1/clusters/{name}/stage", post(fl::stage)),
        (
            Method::POST,
            "/v1/clusters/{name}/hosts/{host}/install",
            post(fl::fresh_install),
        ),
        (
            Method::POST,
            "/v1/clusters/{name}/remediate",
            post(fl::remediate),
        ),
        (Method::GET, "/v1/remediations", get(fl::remediations)),
        (Method::PUT, "/v1/dpus/{serial}/emulation", put(fl::emulate)),
        (Method::GET, "/v1/remediations/{id}", get(fl::remediation)),
        (Method::GET, "/metrics", get(metrics)),
        (Method::GET, "/openapi.json", get(super::handlers::openapi)),
    ]
}

/// The fleet controller's router, with the body limit and JSON errors.
pub fn fleet_router(state: Arc<FleetApi>) -> Router {
    let limit = state.max_body;
    let mut r = Router::new();
    let ours: Vec<_> = fleet_routes();
    for (_, path, handler) in &ours {
        r = r.route(path, handler.clone());
    }
    // The single-machine endpoints this placement does not serve.
    let mut elsewhere: std::collections::BTreeMap<&str, MethodRouter<Arc<FleetApi>>> =
        Default::default();
    for (method, path, _) in routes() {
        if ours.iter().any(|(_, p, _)| *p == path) {
            continue;
        }
        let entry = elsewhere.remove(path).unwrap_or_default();
        let filter = axum::routing::MethodFilter::try_from(method).expect("a routable method");
        elsewhere.insert(path, entry.on(filter, not_in_fleet_mode));
    }
    for (path, handler) in elsewhere {
        r = r.route(path, handler);
    }
    r.fallback(super::no_such_endpoint)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            audited,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            super::metrics::record::<FleetApi>,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            guard::admit_body::<FleetApi>,
        ))
        .layer(axum::middleware::from_fn(guard::json_errors))
        .with_state(state)
}

/// Records every request that may change something (any method but GET)
/// in the fleet's audit log: who, what, and `ok` or the error answered.
async fn audited(
    State(s): State<Arc<FleetApi>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    if req.method() == Method::GET {
        return next.run(req).await;
    }
    let who = req
        .extensions()
        .get::<axum::extract::ConnectInfo<super::Peer>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.0.clone());
    let what = format!(
        "{} {}",
        req.method(),
        req.uri().path_and_query().map_or("", |p| p.as_str())
    );
    let resp = next.run(req).await;
    let (resp, result) = if resp.status().is_success() {
        (resp, "ok".to_string())
    } else {
        // An error's body is its small JSON: read it for the entry.
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| parts.status.to_string());
        (
            Response::from_parts(parts, axum::body::Body::from(bytes)),
            message,
        )
    };
    let c = &s.controller;
    if let Err(e) = crate::fleet::audit::record(c.etcd(), c.id(), &who, &what, &result).await {
        tracing::warn!("recording {what} in the audit log: {e}");
    }
    resp
}

async fn not_in_fleet_mode(req: Request) -> ApiError {
    let path = req.uri().path();
    ApiError {
        status: StatusCode::NOT_IMPLEMENTED,
        code: "not_in_fleet_mode",
        message: format!(
            "{} {path} is served by a single-machine dse serve (without --etcd), not by a fleet controller{}",
            req.method(),
            fleet_way(path)
        ),
    }
}

/// What a fleet offers instead of single-machine endpoint `path`, if
/// anything.
fn fleet_way(path: &str) -> &'static str {
    if path.starts_with("/v1/datapaths") {
        "; on a fleet a host's datapaths are its desired record: dse host set HOST -f FILE (PUT /v1/hosts/{host}); what each runs: dse host list"
    } else {
        ""
    }
}

/// `GET /v1/health`
async fn health(State(s): State<Arc<FleetApi>>) -> Answer {
    let leader = crate::fleet::leader(s.controller.etcd()).await?;
    Ok(Json(json!({
        "status": "ok",
        "controller": s.controller.id(),
        "role": if s.controller.is_leader() { "leader" } else { "follower" },
        "leader": leader,
    }))
    .into_response())
}

/// `GET /v1/hosts`: each host's liveness, desired record and last report.
async fn hosts(State(s): State<Arc<FleetApi>>) -> Answer {
    Ok(Json(s.controller.hosts().await?).into_response())
}

/// `PUT /v1/hosts/{host}`: what the host should run (leader only).
async fn set_host(
    State(s): State<Arc<FleetApi>>,
    Path(host): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    dse_datapath::name::check("host name", &host)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let bytes = super::handlers::body(s.max_body, raw)?;
    let desired: HostDesired = super::handlers::parse_json(&bytes)?;
    check_desired(&desired)?;
    let revision = s.controller.set_host(&host, &desired).await?;
    Ok(Json(json!({"host": host, "desired": desired, "revision": revision})).into_response())
}

/// Checks what can be checked away from the host: names, and each
/// datapath's ports and interfaces (whether the interfaces exist, and the
/// rule set defines the ports, its agent checks and reports). What the
/// document states is a 400; a name or interface given twice, which it
/// cannot state, a 422.
fn check_desired(desired: &HostDesired) -> Result<(), ApiError> {
    use dse_datapath::name::check;
    let bad = |e: String| Err(ApiError::bad_request(e));
    check("rule set name", &desired.rule_set).or_else(|e| bad(format!("rule_set: {e}")))?;
    let mut interfaces = std::collections::BTreeSet::new();
    for (i, d) in desired.datapaths.iter().enumerate() {
        check("datapath name", &d.name).or_else(|e| bad(format!("datapaths[{i}].name: {e}")))?;
        if desired.datapaths[..i].iter().any(|o| o.name == d.name) {
            return Err(ApiError::refused(format!(
                "datapaths[{i}]: the name {} is given twice",
                d.name
            )));
        }
        let memory = d.backend == crate::store::Backend::Memory;
        if memory && !d.interfaces.is_empty() {
            return bad(format!(
                "datapaths[{i}]: a memory datapath runs on in-memory ports, bound to no interface: give no interfaces"
            ));
        }
        if !memory && d.interfaces.is_empty() {
            return bad(format!("datapaths[{i}]: give at least one port: interface"));
        }
        for (port, ifname) in &d.interfaces {
            check("port name", port).or_else(|e| bad(format!("datapaths[{i}].interfaces: {e}")))?;
            // Linux's rule, as the document states it: 1 to 15 printable
            // ASCII characters, no '/', ':' or spaces.
            let ok = (1..=15).contains(&ifname.len())
                && ifname
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
            if !ok {
                return bad(format!(
                    "datapaths[{i}].interfaces.{port}: {ifname:?} is not an interface name (1 to 15 printable ASCII characters, no '/', ':' or spaces)"
                ));
            }
            if !interfaces.insert(ifname.as_str()) {
                return Err(ApiError::refused(format!(
                    "datapaths[{i}].interfaces.{port}: interface {ifname} is given twice"
                )));
            }
        }
    }
    Ok(())
}

/// `GET /v1/fleet`: controllers, the leader, etcd's members, agents alive.
async fn fleet(State(s): State<Arc<FleetApi>>) -> Answer {
    let status: Value =
        serde_json::to_value(s.controller.status().await?).expect("a fleet status serializes");
    Ok(Json(status).into_response())
}

/// `GET /metrics`: whether this controller leads, and each host's
/// liveness, applied generation and datapaths from its agent's last report.
async fn metrics(State(s): State<Arc<FleetApi>>) -> Answer {
    let hosts = s.controller.hosts().await?;
    let text = s
        .metrics
        .render_fleet(s.controller.is_leader(), &hosts)
        .map_err(|e| ApiError::bad_request(format!("rendering the metrics: {e}")))?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response())
}

/// `GET /v1/clusters`: the fleet's inventory.
async fn clusters(State(s): State<Arc<FleetApi>>) -> Answer {
    Ok(Json(s.controller.clusters().await?).into_response())
}

/// `POST /v1/clusters` (leader only).
async fn create_cluster(
    State(s): State<Arc<FleetApi>>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let bytes = super::handlers::body(s.max_body, raw)?;
    let cluster: Cluster = super::handlers::parse_json(&bytes)?;
    s.controller
        .create_cluster(cluster.clone())
        .await?
        .map_err(ControlError::from)?;
    Ok((StatusCode::CREATED, Json(cluster)).into_response())
}

/// `POST /v1/clusters/{name}/hosts` (leader only).
async fn add_host(
    State(s): State<Arc<FleetApi>>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let bytes = super::handlers::body(s.max_body, raw)?;
    let host: Host = super::handlers::parse_json(&bytes)?;
    s.controller
        .add_host(&name, host.clone())
        .await?
        .map_err(ControlError::from)?;
    Ok((StatusCode::CREATED, Json(host)).into_response())
}

/// Query of `GET /v1/audit` on a fleet.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
    last: Option<usize>,
}

/// `GET /v1/audit`: the fleet's audit log (sequence numbers are etcd
/// revisions).
async fn audit(State(s): State<Arc<FleetApi>>, Query(q): Query<AuditQuery>) -> Answer {
    let limit = super::handlers::audit_limits(q.limit, q.last, q.after)?;
    let entries = crate::fleet::audit::read(s.controller.etcd(), q.after, limit, q.last).await?;
    Ok(Json(entries).into_response())
}
