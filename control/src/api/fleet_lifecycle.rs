//! A fleet controller's lifecycle endpoints: the depot and images in etcd,
//! and remediations ordered host by host. Same paths, bodies and answers
//! as on one machine, so the CLI is the same.

use super::ApiError;
use super::fleet::FleetApi;
use crate::daemon::ControlError;
use crate::fleet::controller::{ComplianceError, EmulateError, FleetImportError, HostWorkError};
use crate::fleet::depot::ImportError;
use crate::fleet::remediation::StartError;
use crate::lifecycle::device::Emulation;
use crate::lifecycle::{DesiredImage, Unready};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

type Answer = Result<Response, ApiError>;

impl From<FleetImportError> for ControlError {
    fn from(e: FleetImportError) -> ControlError {
        match e {
            FleetImportError::NoKeys => ControlError::Refused(e.to_string()),
            FleetImportError::Keys(k) => ControlError::Depot(vec![k]),
            FleetImportError::Refused(ImportError::Refused(all)) => ControlError::Depot(all),
            FleetImportError::Refused(e @ ImportError::TooLarge { .. }) => {
                ControlError::Refused(e.to_string())
            }
            FleetImportError::Refused(e @ ImportError::Exists(_)) => {
                ControlError::Exists(e.to_string())
            }
        }
    }
}

impl From<StartError> for ControlError {
    fn from(e: StartError) -> ControlError {
        match e {
            StartError::Unready(u) => u.into(),
            StartError::Options(m) => ControlError::BadRequest(m),
            StartError::Busy(_) => ControlError::Lifecycle(e.to_string()),
        }
    }
}

impl From<ComplianceError> for ControlError {
    fn from(e: ComplianceError) -> ControlError {
        match e {
            ComplianceError::Unready(u) => u.into(),
            ComplianceError::Image(broken) => ControlError::Image(broken),
        }
    }
}

/// `GET /v1/clusters/{name}/compliance`: each host by its agent's report;
/// a host whose agent is not live is `unavailable`.
pub async fn compliance(State(s): State<Arc<FleetApi>>, Path(name): Path<String>) -> Answer {
    let c = s
        .controller
        .compliance(&name)
        .await?
        .map_err(ControlError::from)?;
    Ok(Json(c).into_response())
}

/// `POST /v1/clusters/{name}/precheck`: as on one machine, by what the
/// agents report.
pub async fn precheck(State(s): State<Arc<FleetApi>>, Path(name): Path<String>) -> Answer {
    let p = s
        .controller
        .precheck(&name)
        .await?
        .map_err(ControlError::from)?;
    Ok(Json(p).into_response())
}

/// `POST /v1/clusters/{name}/stage`: each host's agent stages the image
/// on its DPUs (leader only); as on one machine, the serials staged on.
pub async fn stage(State(s): State<Arc<FleetApi>>, Path(name): Path<String>) -> Answer {
    let staged = s.controller.stage(&name).await?.map_err(host_work)?;
    Ok(Json(serde_json::json!({ "staged": staged })).into_response())
}

/// `POST /v1/clusters/{name}/hosts/{host}/install`: the host's agent
/// installs the image afresh on it and its DPUs (leader only); as on one
/// machine, the host's compliance afterwards.
pub async fn fresh_install(
    State(s): State<Arc<FleetApi>>,
    Path((name, host)): Path<(String, String)>,
) -> Answer {
    let installed = s
        .controller
        .fresh_install(&name, &host)
        .await?
        .map_err(host_work)?;
    Ok(Json(installed).into_response())
}

/// The answer to work on hosts refused, with a single machine's codes.
fn host_work(e: HostWorkError) -> ApiError {
    match e {
        HostWorkError::Unready(u) => ControlError::from(u).into(),
        HostWorkError::Image(broken) => ControlError::Image(broken).into(),
        HostWorkError::NoHost { cluster, host } => ControlError::NotFound {
            what: format!("host {host} in cluster {cluster}"),
        }
        .into(),
        HostWorkError::Unavailable(_) => ApiError {
            status: StatusCode::CONFLICT,
            code: "host_unavailable",
            message: e.to_string(),
        },
        HostWorkError::Busy(_) | HostWorkError::Failed { .. } => {
            ControlError::Lifecycle(e.to_string()).into()
        }
    }
}

/// `PUT /v1/dpus/{serial}/emulation`: set through the agent of the DPU's
/// host (leader only); the settings are the answer, as on one machine.
pub async fn emulate(
    State(s): State<Arc<FleetApi>>,
    Path(serial): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let bytes = super::handlers::body(s.max_body, raw)?;
    let emulation: Emulation = super::handlers::parse_json(&bytes)?;
    s.controller
        .emulate(&serial, &emulation)
        .await?
        .map_err(|e| match e {
            EmulateError::NoDpu(_) => ApiError::from(ControlError::NotFound {
                what: format!("DPU {serial} in the inventory: add its host first (dse host add)"),
            }),
            EmulateError::Unavailable(_) => ApiError {
                status: StatusCode::CONFLICT,
                code: "host_unavailable",
                message: e.to_string(),
            },
            EmulateError::Refused(m) => ApiError::bad_request(m),
        })?;
    Ok(Json(emulation).into_response())
}

/// Refuses `what` on cluster `name`, as one machine does.
async fn unsupported(s: &FleetApi, name: &str, what: &str) -> ApiError {
    let clusters = match s.controller.clusters().await {
        Ok(c) => c,
        Err(e) => return e.into(),
    };
    match clusters.iter().find(|c| c.name == name) {
        Some(c) => crate::daemon::unsupported(c, what).into(),
        None => ControlError::from(Unready::NoCluster(name.to_string())).into(),
    }
}

/// `POST /v1/clusters/{name}/recommendations`: refused on a DPU cluster.
pub async fn recommendations(State(s): State<Arc<FleetApi>>, Path(name): Path<String>) -> Answer {
    Err(unsupported(&s, &name, "recommendation generation").await)
}

/// `POST /v1/clusters/{name}/hardware-compatibility`: refused on a DPU
/// cluster.
pub async fn hardware_compatibility(
    State(s): State<Arc<FleetApi>>,
    Path(name): Path<String>,
) -> Answer {
    Err(unsupported(&s, &name, "the hardware compatibility check").await)
}

/// `GET /v1/depot`: the fleet's depot.
pub async fn depot(State(s): State<Arc<FleetApi>>) -> Answer {
    Ok(Json(s.controller.depot().await?).into_response())
}

/// `POST /v1/depot/import` (leader only): a directory on the leader's
/// machine, checked with its trusted keys, into etcd.
pub async fn depot_import(
    State(s): State<Arc<FleetApi>>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let bytes = super::handlers::body(s.max_body, raw)?;
    let request: super::handlers::ImportRequest = super::handlers::parse_json(&bytes)?;
    let manifests = s
        .controller
        .depot_import(&request.path)
        .await?
        .map_err(ControlError::from)?;
    Ok((StatusCode::CREATED, Json(manifests)).into_response())
}

/// `PUT /v1/clusters/{name}/image` (leader only).
pub async fn set_image(
    State(s): State<Arc<FleetApi>>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let bytes = super::handlers::body(s.max_body, raw)?;
    let image: DesiredImage = super::handlers::parse_json(&bytes)?;
    s.controller
        .set_image(&name, image.clone())
        .await?
        .map_err(ControlError::from)?;
    Ok(Json(image).into_response())
}

/// `POST /v1/clusters/{name}/remediate` (leader only): 202 with the
/// remediation, whose hosts the leader then orders. A dry run is not
/// served on a fleet (422 `refused`).
pub async fn remediate(
    State(s): State<Arc<FleetApi>>,
    ConnectInfo(peer): ConnectInfo<super::Peer>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let bytes = super::handlers::body(s.max_body, raw)?;
    let (options, dry_run) =
        super::lifecycle::remediate_request(super::handlers::parse_json(&bytes)?)?;
    if dry_run {
        return Err(ApiError::refused(
            "a fleet does not dry-run a remediation: each host's agent plans its own; see each host's plan in the remediation",
        ));
    }
    let r = s
        .controller
        .remediate(&name, options, &peer.0)
        .await?
        .map_err(ControlError::from)?;
    Ok((StatusCode::ACCEPTED, Json(r)).into_response())
}

/// `GET /v1/remediations`: every remediation, with each host's steps.
pub async fn remediations(State(s): State<Arc<FleetApi>>) -> Answer {
    Ok(Json(s.controller.remediations().await?).into_response())
}

/// `GET /v1/remediations/{id}`.
pub async fn remediation(State(s): State<Arc<FleetApi>>, Path(id): Path<u64>) -> Answer {
    let r = s
        .controller
        .remediations()
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ControlError::NotFound {
            what: format!("remediation {id}: dse lifecycle history lists them"),
        })?;
    Ok(Json(r).into_response())
}
