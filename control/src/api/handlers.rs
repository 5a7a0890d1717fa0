//! The endpoints. Each runs the daemon's blocking work off the async
//! threads and answers JSON; every failure is an [`ApiError`].

use super::{ApiError, ApiState, Peer};
use crate::daemon::ControlError;
use crate::lifecycle::{Cluster, Host};
use crate::store::DatapathInstance;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dse_datapath::rule::{Rule, RuleError, RuleSet};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::sync::Arc;

pub(super) type Answer = Result<Response, ApiError>;

/// Runs `f` (blocking daemon work) on the blocking pool.
pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("daemon work does not panic")
}

/// The body, or 413 over the limit / 400 if it could not be read.
pub(super) fn body(
    max_body: usize,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(max_body)
        } else {
            ApiError::bad_request(format!("reading the request body: {r}"))
        }
    })
}

/// The body parsed as JSON `T`, or 413 / 400 naming what is wrong.
pub(super) fn json_body<T: serde::de::DeserializeOwned>(
    state: &ApiState,
    raw: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    parse_json(&body(state.max_body, raw)?)
}

/// `bytes` parsed as JSON `T`, or 400 naming the field that is wrong. A
/// list is never read where a struct belongs ([`dse_datapath::strict`]).
pub(super) fn parse_json<'de, T: serde::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = dse_datapath::strict::with_path(&mut de).map_err(body_error)?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("request body: {e}")))?;
    Ok(value)
}

/// A 400 naming the body's field that did not read.
pub(super) fn body_error(e: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let field = e.path().to_string();
    let reason = e.into_inner();
    ApiError::bad_request(if field == "." {
        format!("request body: {reason}; see /openapi.json for its fields")
    } else {
        format!("request body: {field}: {reason}")
    })
}

fn is_yaml(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("yaml"))
}

/// A rule set from a JSON or (by content type) YAML body: 400 if the body
/// is not a JSON or YAML mapping, 422 (`invalid_rules`, naming the rule and
/// the field) for anything wrong inside it, whether its shape or a value.
/// The body is freed as soon as it is read (see [`RuleSet::parse_json_bytes`]).
pub(super) fn parse_rule_set(headers: &HeaderMap, bytes: Bytes) -> Result<RuleSet, ApiError> {
    let parsed = if is_yaml(headers) {
        std::str::from_utf8(&bytes)
            .map_err(|e| RuleError::Syntax(format!("the document is not UTF-8: {e}")))
            .and_then(RuleSet::parse_yaml)
    } else {
        RuleSet::parse_json_bytes(bytes)
    };
    let set = parsed.map_err(|e| match e {
        RuleError::Syntax(_) => ApiError::bad_request(format!("request body: {e}")),
        e => ApiError::from(ControlError::Rules(e)),
    })?;
    set.validate()
        .map_err(|e| ApiError::from(ControlError::Rules(e)))?;
    Ok(set)
}

/// `GET /v1/health`
pub async fn health(State(s): State<Arc<ApiState>>) -> Json<Value> {
    let daemon = Arc::clone(&s.daemon);
    let (generation, datapaths) = blocking(move || (daemon.generation(), daemon.datapaths())).await;
    let failed = datapaths.iter().filter(|d| d.state != "running").count();
    Json(json!({
        "status": if failed == 0 { "ok" } else { "degraded" },
        "generation": generation,
        "datapaths": datapaths.len(),
        "failed_datapaths": failed,
    }))
}

/// Query of `GET /v1/rules`: a page of the rules, or some by id.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesQuery {
    rule_set: Option<String>,
    after: Option<u32>,
    limit: Option<usize>,
    ids: Option<String>,
}

/// Most rules one page holds.
const MAX_PAGE: usize = 100_000;

/// `GET /v1/rules`: every rule, streamed as it is read; or, with `after`,
/// `limit` or `ids`, one page with the id to continue after (`next`).
pub async fn get_rules(State(s): State<Arc<ApiState>>, Query(q): Query<RulesQuery>) -> Answer {
    super::hosts::only_default(q.rule_set.as_deref())?;
    let daemon = Arc::clone(&s.daemon);
    if q.after.is_none() && q.limit.is_none() && q.ids.is_none() {
        let body = axum::body::Body::new(super::stream::all_rules(daemon));
        return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response());
    }
    let ids = rule_ids(q.ids)?;
    let limit = page_limit(q.limit)?;
    let page = crate::daemon::RulesPage {
        after: q.after,
        limit,
        ids,
    };
    let paged = page.ids.is_none();
    let (generation, set) = blocking(move || daemon.rules_page(&page)).await;
    let next = set
        .rules
        .last()
        .filter(|_| paged && set.rules.len() == limit)
        .map(|r| r.id);
    Ok(Json(json!({"generation": generation, "rules": set, "next": next})).into_response())
}

/// The ids of `ids=1,2,3`. A number past the largest id names no rule:
/// left out, as ids that do not exist are.
///
/// # Errors
/// 400 naming what is not a rule id.
pub(super) fn rule_ids(ids: Option<String>) -> Result<Option<Vec<u32>>, ApiError> {
    ids.map(|list| {
        list.split(',')
            .map(str::trim)
            .filter_map(|id| match id.parse::<u32>() {
                Ok(id) => Some(Ok(id)),
                Err(_) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) => None,
                Err(_) => Some(Err(ApiError::bad_request(format!(
                    "ids: {id:?} is not a rule id; give ids as 1,2,3"
                )))),
            })
            .collect::<Result<Vec<u32>, ApiError>>()
    })
    .transpose()
}

/// The rules a page holds: `limit`, 1000 unless given.
///
/// # Errors
/// 400 outside 1 to [`MAX_PAGE`].
pub(super) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit {limit}: give 1 to {MAX_PAGE} rules a page"
        )));
    }
    Ok(limit)
}

/// Query of a whole-set apply.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyQuery {
    rule_set: Option<String>,
    expected_generation: Option<u64>,
    #[serde(default)]
    dry_run: bool,
}

/// `PUT /v1/rules`
pub async fn put_rules(
    State(s): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Query(q): Query<ApplyQuery>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    super::hosts::only_default(q.rule_set.as_deref())?;
    let bytes = body(s.max_body, raw)?;
    let daemon = Arc::clone(&s.daemon);
    let applied = blocking(move || {
        let (t, len) = (std::time::Instant::now(), bytes.len());
        let set = parse_rule_set(&headers, bytes)?;
        tracing::debug!(bytes = len, took = ?t.elapsed(), "parsed a rule set");
        daemon
            .apply(set, q.expected_generation, q.dry_run, &peer.0)
            .map_err(ApiError::from)
    })
    .await?;
    Ok(Json(applied).into_response())
}

/// Body of a batch change. Each rule is kept as its text until
/// [`batch_rule`] reads it: a JSON tree of 100k rules would cost more than
/// the rest of the change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch<'a> {
    #[serde(default, borrow)]
    add: Vec<&'a RawValue>,
    #[serde(default)]
    delete: Vec<u32>,
    expected_generation: Option<u64>,
}

/// Reads one rule of a batch: 422 (`invalid_rules`) naming its id and the
/// field that is wrong, as for a rule set.
fn batch_rule(i: usize, raw: &RawValue) -> Result<Rule, ApiError> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    dse_datapath::strict::with_path::<_, Rule>(&mut de).map_err(|e| {
        #[derive(Deserialize)]
        struct Id {
            id: Option<u64>,
        }
        let id = serde_json::from_str::<Id>(raw.get())
            .ok()
            .and_then(|r| r.id);
        let field = e.path().to_string();
        // The line and column are within the rule's own text: left out.
        let reason = e.into_inner().to_string();
        let reason = reason.split(" at line ").next().unwrap_or(&reason);
        let message = match (id, field.as_str()) {
            (_, ".") => format!("rules refused: add[{i}]: {reason}"),
            (Some(id), _) => format!("rules refused: rule {id}, field `{field}`: {reason}"),
            (None, _) => format!("rules refused: add[{i}].{field}: {reason}"),
        };
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "invalid_rules",
            message,
        }
    })
}

/// `POST /v1/rules/batch`
pub async fn batch(
    State(s): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Query(q): Query<BatchQuery>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    super::hosts::only_default(q.rule_set.as_deref())?;
    let bytes = body(s.max_body, raw)?;
    let daemon = Arc::clone(&s.daemon);
    let applied = blocking(move || {
        let batch = parse_batch(&bytes)?;
        daemon
            .patch(batch.add, batch.delete, batch.expected_generation, &peer.0)
            .map_err(ApiError::from)
    })
    .await?;
    Ok(Json(applied).into_response())
}

/// Query of a batch change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchQuery {
    /// The named rule set (`default` unless given).
    pub rule_set: Option<String>,
}

/// A batch change read and checked for form: the rules to add or
/// replace, the ids to delete, and the generation it expects.
pub struct ParsedBatch {
    /// Rules added, or replacing the rule of their id.
    pub add: Vec<Rule>,
    /// Ids of rules deleted.
    pub delete: Vec<u32>,
    /// Apply only at this generation.
    pub expected_generation: Option<u64>,
}

/// Reads a batch body: 400 if it is malformed or changes nothing, 422
/// naming the rule and field of a rule that is wrong.
pub(super) fn parse_batch(bytes: &[u8]) -> Result<ParsedBatch, ApiError> {
    let batch: Batch = parse_json(bytes)?;
    let add = batch
        .add
        .iter()
        .enumerate()
        .map(|(i, raw)| batch_rule(i, raw))
        .collect::<Result<Vec<Rule>, ApiError>>()?;
    if add.is_empty() && batch.delete.is_empty() {
        return Err(ApiError::bad_request(
            "request body: the batch adds and deletes nothing; give `add`, `delete` or both",
        ));
    }
    Ok(ParsedBatch {
        add,
        delete: batch.delete,
        expected_generation: batch.expected_generation,
    })
}

/// Query of the counters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountersQuery {
    datapath: Option<String>,
    host: Option<String>,
}

/// `GET /v1/counters`
pub async fn counters(State(s): State<Arc<ApiState>>, Query(q): Query<CountersQuery>) -> Answer {
    super::hosts::only_this_host(q.host.as_deref())?;
    let daemon = Arc::clone(&s.daemon);
    let counters = blocking(move || daemon.counters(q.datapath.as_deref())).await?;
    Ok(Json(counters).into_response())
}

/// Query of `GET /v1/stats`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    host: Option<String>,
}

/// `GET /v1/stats`
pub async fn stats(State(s): State<Arc<ApiState>>, Query(q): Query<StatsQuery>) -> Answer {
    super::hosts::only_this_host(q.host.as_deref())?;
    let daemon = Arc::clone(&s.daemon);
    Ok(Json(blocking(move || daemon.stats()).await).into_response())
}

/// `GET /v1/datapaths`
pub async fn datapaths(State(s): State<Arc<ApiState>>) -> Answer {
    let daemon = Arc::clone(&s.daemon);
    Ok(Json(blocking(move || daemon.datapaths()).await).into_response())
}

/// Query of `GET /v1/datapaths/{name}/cache`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheQuery {
    key: String,
}

/// `GET /v1/datapaths/{name}/cache?key=HEX`: what the datapath's flow
/// caches hold for a flow key (its 64 bytes as hex), one entry per cache.
pub async fn datapath_cache(
    State(s): State<Arc<ApiState>>,
    Path(name): Path<String>,
    Query(q): Query<CacheQuery>,
) -> Answer {
    let key = hex::decode(&q.key)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| dse_datapath::compile::FlowKey::from_bytes(&b))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "key: {:?} is not a flow key: give its 64 bytes as 128 hex digits",
                q.key.chars().take(140).collect::<String>()
            ))
        })?;
    let daemon = Arc::clone(&s.daemon);
    let caches = {
        let name = name.clone();
        blocking(move || daemon.cached(&name, &key)).await?
    };
    Ok(Json(json!({ "datapath": name, "caches": caches })).into_response())
}

/// `POST /v1/datapaths`
pub async fn attach(
    State(s): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let record: DatapathInstance = json_body(&s, raw)?;
    let daemon = Arc::clone(&s.daemon);
    let status = blocking(move || daemon.attach(record, &peer.0)).await?;
    Ok((StatusCode::CREATED, Json(status)).into_response())
}

/// `DELETE /v1/datapaths/{name}`
pub async fn detach(
    State(s): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
) -> Answer {
    let daemon = Arc::clone(&s.daemon);
    blocking(move || daemon.detach(&name, &peer.0)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/clusters`
pub async fn clusters(State(s): State<Arc<ApiState>>) -> Answer {
    let daemon = Arc::clone(&s.daemon);
    Ok(Json(blocking(move || daemon.clusters()).await?).into_response())
}

/// `POST /v1/clusters`
pub async fn create_cluster(
    State(s): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let cluster: Cluster = json_body(&s, raw)?;
    let daemon = Arc::clone(&s.daemon);
    let answer = cluster.clone();
    blocking(move || daemon.create_cluster(cluster, &peer.0)).await?;
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `POST /v1/clusters/{name}/hosts`
pub async fn add_host(
    State(s): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let host: Host = json_body(&s, raw)?;
    let daemon = Arc::clone(&s.daemon);
    let answer = host.clone();
    blocking(move || daemon.add_host(&name, host, &peer.0)).await?;
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `GET /v1/depot`
pub async fn depot(State(s): State<Arc<ApiState>>) -> Answer {
    let daemon = Arc::clone(&s.daemon);
    Ok(Json(blocking(move || daemon.depot()).await?).into_response())
}

/// Body of `POST /v1/depot/import`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    pub(super) path: std::path::PathBuf,
}

/// `POST /v1/depot/import`
pub async fn depot_import(
    State(s): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let request: ImportRequest = json_body(&s, raw)?;
    let daemon = Arc::clone(&s.daemon);
    let manifests = blocking(move || daemon.depot_import(&request.path, &peer.0)).await?;
    Ok((StatusCode::CREATED, Json(manifests)).into_response())
}

/// Query of the audit log.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
    last: Option<usize>,
}

/// The most audit entries one answer holds.
const MAX_AUDIT: usize = 10_000;

/// The entries an audit page holds (`limit`, 100 unless given).
///
/// # Errors
/// 400 over [`MAX_AUDIT`]; 422 for `after` and `last` together.
pub(super) fn audit_limits(
    limit: Option<usize>,
    last: Option<usize>,
    after: u64,
) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(100);
    if limit > MAX_AUDIT || last.is_some_and(|n| n > MAX_AUDIT) {
        return Err(ApiError::bad_request(format!(
            "limit and last: at most {MAX_AUDIT} entries at a time; page on with after"
        )));
    }
    if last.is_some() && after != 0 {
        return Err(ApiError::refused(
            "give either after (entries from a sequence number on) or last (the newest entries), not both",
        ));
    }
    Ok(limit)
}

/// `GET /v1/audit`
pub async fn audit(State(s): State<Arc<ApiState>>, Query(q): Query<AuditQuery>) -> Answer {
    let daemon = Arc::clone(&s.daemon);
    let limit = audit_limits(q.limit, q.last, q.after)?;
    let entries = blocking(move || daemon.audit(q.after, limit, q.last)).await?;
    Ok(Json(entries).into_response())
}

/// `GET /metrics`
pub async fn metrics(State(s): State<Arc<ApiState>>) -> Answer {
    let state = Arc::clone(&s);
    let text = blocking(move || state.metrics.render(&state.daemon))
        .await
        .map_err(|e| ApiError::bad_request(format!("rendering the metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// `GET /openapi.json`
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], super::OPENAPI).into_response()
}
