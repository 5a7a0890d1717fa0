//! The lifecycle endpoints: a cluster's image, compliance, pre-check,
//! stage and remediation, the remediation history, and the emulated
//! DPUs' behaviour.

use super::handlers::{Answer, blocking, body_error, json_body};
use super::{ApiError, ApiState, Peer};
use crate::daemon::Remediate;
use crate::lifecycle::DesiredImage;
use crate::lifecycle::device::Emulation;
use crate::lifecycle::remediation::Options;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::Value;
use std::sync::Arc;

/// `PUT /v1/clusters/{name}/image`
pub async fn set_image(
    State(s): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let image: DesiredImage = json_body(&s, raw)?;
    let daemon = Arc::clone(&s.daemon);
    let answer = image.clone();
    blocking(move || daemon.set_image(&name, image, &peer.0)).await?;
    Ok(Json(answer).into_response())
}

/// `GET /v1/clusters/{name}/compliance`
pub async fn compliance(State(s): State<Arc<ApiState>>, Path(name): Path<String>) -> Answer {
    let daemon = Arc::clone(&s.daemon);
    Ok(Json(blocking(move || daemon.compliance(&name)).await?).into_response())
}

/// `POST /v1/clusters/{name}/precheck`
pub async fn precheck(State(s): State<Arc<ApiState>>, Path(name): Path<String>) -> Answer {
    let daemon = Arc::clone(&s.daemon);
    Ok(Json(blocking(move || daemon.precheck(&name)).await?).into_response())
}

/// `POST /v1/clusters/{name}/stage`
pub async fn stage(
    State(s): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
) -> Answer {
    let daemon = Arc::clone(&s.daemon);
    let staged = blocking(move || daemon.stage(&name, &peer.0)).await?;
    Ok(Json(serde_json::json!({ "staged": staged })).into_response())
}

/// The body of `POST /v1/clusters/{name}/remediate`: the [`Options`], and
/// `dry_run`. Read as two steps rather than with `#[serde(flatten)]`, which
/// buffers the fields and so reads them outside [`dse_datapath::strict`].
pub(super) fn remediate_request(body: Value) -> Result<(Options, bool), ApiError> {
    let Value::Object(mut fields) = body else {
        return Err(ApiError::bad_request(
            "request body: expected a mapping of fields (a JSON object)",
        ));
    };
    let dry_run = match fields.remove("dry_run") {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "request body: dry_run: {other} is not true or false"
            )));
        }
    };
    let options = dse_datapath::strict::with_path(Value::Object(fields)).map_err(body_error)?;
    Ok((options, dry_run))
}

/// `POST /v1/clusters/{name}/remediate`: 202 with the remediation (follow
/// it at `/v1/remediations/{id}`), or 200 with the impact for a dry run.
pub async fn remediate(
    State(s): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let (options, dry_run) = remediate_request(json_body(&s, raw)?)?;
    let daemon = Arc::clone(&s.daemon);
    let answer = blocking(move || daemon.remediate(&name, options, dry_run, &peer.0)).await?;
    let status = match answer {
        Remediate::Started(_) => StatusCode::ACCEPTED,
        Remediate::DryRun(_) => StatusCode::OK,
    };
    Ok((status, Json(answer)).into_response())
}

/// `POST /v1/clusters/{name}/hosts/{host}/install`: a fresh install.
pub async fn fresh_install(
    State(s): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path((name, host)): Path<(String, String)>,
) -> Answer {
    let daemon = Arc::clone(&s.daemon);
    let c = blocking(move || daemon.fresh_install(&name, &host, &peer.0)).await?;
    Ok(Json(c).into_response())
}

/// `POST /v1/clusters/{name}/recommendations`: refused on a DPU cluster.
pub async fn recommendations(State(s): State<Arc<ApiState>>, Path(name): Path<String>) -> Answer {
    let daemon = Arc::clone(&s.daemon);
    blocking(move || daemon.refuse_on_dpu_cluster(&name, "recommendation generation")).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /v1/clusters/{name}/hardware-compatibility`: refused on a DPU cluster.
pub async fn hardware_compatibility(
    State(s): State<Arc<ApiState>>,
    Path(name): Path<String>,
) -> Answer {
    let daemon = Arc::clone(&s.daemon);
    blocking(move || daemon.refuse_on_dpu_cluster(&name, "the hardware compatibility check"))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/remediations`: the lifecycle history.
pub async fn remediations(State(s): State<Arc<ApiState>>) -> Answer {
    let daemon = Arc::clone(&s.daemon);
    Ok(Json(blocking(move || daemon.remediations()).await?).into_response())
}

/// `GET /v1/remediations/{id}`
pub async fn remediation(State(s): State<Arc<ApiState>>, Path(id): Path<u64>) -> Answer {
    let daemon = Arc::clone(&s.daemon);
    Ok(Json(blocking(move || daemon.remediation(id)).await?).into_response())
}

/// `PUT /v1/dpus/{serial}/emulation`
pub async fn emulate(
    State(s): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(serial): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let emulation: Emulation = json_body(&s, raw)?;
    let daemon = Arc::clone(&s.daemon);
    let answer = emulation.clone();
    blocking(move || daemon.emulate(&serial, emulation, &peer.0)).await?;
    Ok(Json(answer).into_response())
}
