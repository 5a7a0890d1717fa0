//! Middleware that holds the API to its promises whatever a client sends:
//! a body over the limit is refused by its `Content-Length` before a byte
//! of it is kept, large bodies are read one at a time (changes are applied
//! one at a time anyway), and every error is the documented JSON.

use super::ApiError;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Bodies above this many bytes, or of unknown length, wait their turn.
pub const LARGE_BODY: u64 = 1 << 20;

/// The state of a router whose bodies [`admit_body`] guards: a single
/// machine's and a fleet controller's.
pub trait BodyGate: Send + Sync + 'static {
    /// The largest body accepted, in bytes.
    fn max_body(&self) -> usize;
    /// One permit: the turn of a large body.
    fn large_bodies(&self) -> &tokio::sync::Semaphore;
}

/// Refuses a body whose `Content-Length` is over the limit (413) before
/// reading it, and admits large bodies one at a time, so that the memory
/// bodies take stays near one limit whatever many clients send at once.
pub async fn admit_body<S: BodyGate>(
    State(s): State<Arc<S>>,
    req: Request,
    next: Next,
) -> Response {
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let max_body = s.max_body();
    if length.is_some_and(|n| n > max_body as u64) {
        // A lingering close, as web servers do: what the client is still
        // sending is read and thrown away (for a while), so that it gets
        // to read the 413 rather than a broken pipe.
        discard(req.into_body()).await;
        return ApiError::too_large(max_body).into_response();
    }
    let has_body = matches!(*req.method(), Method::PUT | Method::POST | Method::PATCH);
    if has_body && length.is_none_or(|n| n > LARGE_BODY) {
        let Ok(_turn) = s.large_bodies().acquire().await else {
            return ApiError::bad_request("the daemon is stopping").into_response();
        };
        return next.run(req).await;
    }
    next.run(req).await
}

/// Reads and drops `body` until it ends, nothing arrives for 250 ms, or
/// 10 s have passed: memory stays flat whatever its length.
async fn discard(body: axum::body::Body) {
    use http_body_util::BodyExt;
    let mut body = body;
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while tokio::time::Instant::now() < until {
        match tokio::time::timeout(std::time::Duration::from_millis(250), body.frame()).await {
            Ok(Some(Ok(_))) => {}
            _ => return,
        }
    }
}

/// Turns an error answer that is not JSON (axum's own rejections of a bad
/// query string, path or method) into the documented
/// `{"error": ..., "code": ...}`.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let asked = format!("{} {}", req.method(), req.uri().path());
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let allow = resp.headers().get(header::ALLOW).cloned();
    let text = axum::body::to_bytes(resp.into_body(), 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "bad_request",
        _ if status.is_server_error() => "internal",
        _ => "error",
    };
    let message = match (text.is_empty(), status) {
        (false, _) => text,
        (true, StatusCode::METHOD_NOT_ALLOWED) => {
            format!("{asked}: no such operation; GET /openapi.json lists them")
        }
        (true, _) => format!("{asked}: {status}"),
    };
    let mut out = ApiError {
        status,
        code,
        message,
    }
    .into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}
