//! API errors: a status code and a JSON body that says what was wrong.

use crate::daemon::ControlError;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error as the API answers it: `{"error": "...", "code": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code.
    pub code: &'static str,
    /// What was wrong and what to do.
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    code: &'static str,
}

impl ApiError {
    /// A 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }

    /// A 422: the request is well formed, but refused by a rule that the
    /// API document cannot state (two parameters that exclude each other).
    pub fn refused(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "refused",
            message: message.into(),
        }
    }

    /// A 413: the body is over the limit.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "body_too_large",
            message: format!(
                "the request body is over the limit of {limit} bytes; split the change, or start dse serve with a larger --max-body"
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: &self.message,
            code: self.code,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        let (status, code) = match &e {
            ControlError::Rules(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_rules"),
            ControlError::Conflict { .. } => (StatusCode::CONFLICT, "generation_conflict"),
            ControlError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ControlError::Refused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "refused"),
            ControlError::Exists(_) => (StatusCode::CONFLICT, "exists"),
            ControlError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            ControlError::Datapath { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "datapath_failed"),
            ControlError::ClusterRules(_) => (StatusCode::UNPROCESSABLE_ENTITY, "cluster_rules"),
            ControlError::Image(_) => (StatusCode::UNPROCESSABLE_ENTITY, "image_refused"),
            ControlError::Unsupported(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unsupported"),
            ControlError::Lifecycle(_) => (StatusCode::CONFLICT, "lifecycle_refused"),
            ControlError::Depot(_) => (StatusCode::UNPROCESSABLE_ENTITY, "depot_refused"),
            ControlError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store_failed"),
        };
        ApiError {
            status,
            code,
            message: e.to_string(),
        }
    }
}
