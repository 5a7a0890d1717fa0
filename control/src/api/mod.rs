//! The REST API of `dse serve`.
//!
//! Every endpoint is in [`routes`], which both builds the router and is
//! checked against the OpenAPI document (`control/openapi.json`, served at
//! `/openapi.json`) by a test, so neither can drift from the other.

pub mod conn;
mod error;
pub mod fleet;
mod fleet_lifecycle;
mod fleet_rules;
mod fleet_stats;
mod guard;
mod handlers;
mod hosts;
mod lifecycle;
mod metrics;
mod stream;

pub use error::ApiError;
pub use metrics::Metrics;

use crate::daemon::Daemon;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// What the handlers share.
pub struct ApiState {
    /// The daemon.
    pub daemon: Arc<Daemon>,
    /// The largest request body accepted, in bytes.
    pub max_body: usize,
    /// Request counters and timings.
    pub metrics: Metrics,
    /// One large request body is read at a time.
    pub large_bodies: tokio::sync::Semaphore,
}

impl metrics::Measured for ApiState {
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

impl guard::BodyGate for ApiState {
    fn max_body(&self) -> usize {
        self.max_body
    }
    fn large_bodies(&self) -> &tokio::sync::Semaphore {
        &self.large_bodies
    }
}

/// Who is asking, for the audit log: the Unix user, or the TCP peer.
#[derive(Debug, Clone)]
pub struct Peer(pub String);

/// Every endpoint: method, path (axum syntax) and handler.
pub fn routes() -> Vec<(Method, &'static str, MethodRouter<Arc<ApiState>>)> {
    use handlers::*;
    vec![
        (Method::GET, "/v1/health", get(health)),
        (Method::GET, "/v1/rules", get(get_rules)),
        (Method::PUT, "/v1/rules", put(put_rules)),
        (Method::POST, "/v1/rules/batch", post(batch)),
        (Method::GET, "/v1/counters", get(counters)),
        (Method::GET, "/v1/stats", get(stats)),
        (Method::GET, "/v1/datapaths", get(datapaths)),
        (Method::POST, "/v1/datapaths", post(attach)),
        (Method::DELETE, "/v1/datapaths/{name}", delete(detach)),
        (
            Method::GET,
            "/v1/datapaths/{name}/cache",
            get(datapath_cache),
        ),
        (Method::GET, "/v1/clusters", get(clusters)),
        (Method::POST, "/v1/clusters", post(create_cluster)),
        (Method::POST, "/v1/clusters/{name}/hosts", post(add_host)),
        (
            Method::PUT,
            "/v1/clusters/{name}/image",
            put(lifecycle::set_image),
        ),
        (
            Method::GET,
            "/v1/clusters/{name}/compliance",
            get(lifecycle::compliance),
        ),
        (
            Method::POST,
            "/v1/clusters/{name}/precheck",
            post(lifecycle::precheck),
        ),
        (
            Method::POST,
            "/v1/clusters/{name}/stage",
            post(lifecycle::stage),
        ),
        (
            Method::POST,
            "/v1/clusters/{name}/remediate",
            post(lifecycle::remediate),
        ),
        (
            Method::POST,
            "/v1/clusters/{name}/hosts/{host}/install",
            post(lifecycle::fresh_install),
        ),
        (
            Method::POST,
            "/v1/clusters/{name}/recommendations",
            post(lifecycle::recommendations),
        ),
        (
            Method::POST,
            "/v1/clusters/{name}/hardware-compatibility",
            post(lifecycle::hardware_compatibility),
        ),
        (
            Method::GET,
            "/v1/remediations",
            get(lifecycle::remediations),
        ),
        (
            Method::GET,
            "/v1/remediations/{id}",
            get(lifecycle::remediation),
        ),
        (
            Method::PUT,
            "/v1/dpus/{serial}/emulation",
            put(lifecycle::emulate),
        ),
        (Method::GET, "/v1/depot", get(depot)),
        (Method::POST, "/v1/depot/import", post(depot_import)),
        (Method::GET, "/v1/audit", get(audit)),
        (Method::GET, "/v1/hosts", get(hosts::hosts)),
        (Method::PUT, "/v1/hosts/{host}", put(hosts::set_host)),
        (Method::GET, "/v1/fleet", get(hosts::fleet)),
        (Method::GET, "/metrics", get(metrics)),
        (Method::GET, "/openapi.json", get(openapi)),
    ]
}

pub(crate) async fn no_such_endpoint(req: Request) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "no_such_endpoint",
        message: format!(
            "no endpoint {} {}; GET /openapi.json lists them",
            req.method(),
            req.uri().path()
        ),
    }
}

/// The router over `state`, with the body limit and request metrics.
pub fn router(state: Arc<ApiState>) -> Router {
    let limit = state.max_body;
    let mut r = Router::new();
    for (_, path, handler) in routes() {
        r = r.route(path, handler);
    }
    r.fallback(no_such_endpoint)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            metrics::record::<ApiState>,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            guard::admit_body::<ApiState>,
        ))
        .layer(axum::middleware::from_fn(guard::json_errors))
        .with_state(state)
}

/// The SHA-256 of a token: compared instead of the token itself, so that
/// the comparison is constant-time whatever the lengths.
#[derive(Clone)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The digest of `token` (surrounding whitespace ignored).
    pub fn of(token: &str) -> TokenDigest {
        TokenDigest(Sha256::digest(token.trim().as_bytes()).into())
    }
}

/// Refuses a request without `Authorization: Bearer <the token>` (401).
pub async fn require_token(State(want): State<TokenDigest>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let ok = given.is_some_and(|t| bool::from(TokenDigest::of(t).0.ct_eq(&want.0)));
    if ok {
        return next.run(req).await;
    }
    let mut resp = ApiError {
        status: StatusCode::UNAUTHORIZED,
        code: "unauthorized",
        message: if given.is_some() {
            "the bearer token is wrong".into()
        } else {
            "this endpoint needs `Authorization: Bearer <token>` (the token in dse serve's --token-file)".into()
        },
    }
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        "Bearer".parse().expect("a valid header"),
    );
    resp
}
