//! A fleet controller's rule endpoints: each named rule set in etcd, read
//! whole or by page, replaced, or changed by a batch. A change is checked
//! here and published as the rule set's next generation; each host's agent
//! applies it.

use super::ApiError;
use super::fleet::FleetApi;
use super::handlers::{BatchQuery, blocking, parse_batch, parse_rule_set};
use crate::daemon::ControlError;
use crate::desired::Desired;
use crate::fleet::FleetError;
use crate::fleet::agent::DEFAULT_RULE_SET;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use dse_datapath::rule::RuleSet;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use std::sync::Arc;

type Answer = Result<Response, ApiError>;

/// A rule set's name, as every query that takes one has it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RulesQuery {
    rule_set: Option<String>,
    after: Option<u32>,
    limit: Option<usize>,
    ids: Option<String>,
}

fn rule_set_name(given: Option<String>) -> Result<String, ApiError> {
    let name = given.unwrap_or_else(|| DEFAULT_RULE_SET.to_string());
    dse_datapath::name::check("rule set name", &name)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(name)
}

/// `GET /v1/rules?rule_set=NAME`: the current generation, read from etcd.
pub(super) async fn get_rules(
    State(s): State<Arc<FleetApi>>,
    Query(q): Query<RulesQuery>,
) -> Answer {
    let name = rule_set_name(q.rule_set.clone())?;
    if q.after.is_some() || q.limit.is_some() || q.ids.is_some() {
        return rules_page(&s, &name, q).await;
    }
    let body = match s.controller.rule_set(&name).await? {
        None => json!({"rule_set": name, "generation": 0, "rules": {"rules": []}, "next": null})
            .to_string(),
        Some(t) => {
            let text = String::from_utf8(t.text).map_err(|_| FleetError::Damaged {
                what: format!("rule set {name}"),
                reason: "its text is not UTF-8".into(),
            })?;
            let rules = RawValue::from_string(text).map_err(|e| FleetError::Damaged {
                what: format!("rule set {name}"),
                reason: format!("its text is not JSON: {e}"),
            })?;
            serde_json::to_string(&json!({
                "rule_set": name,
                "generation": t.generation,
                "rules": rules,
                "next": null,
            }))
            .expect("a page serializes")
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// A page of the rule set (`after`, `limit`) or its rules by id (`ids`),
/// as a single machine answers it.
async fn rules_page(s: &FleetApi, name: &str, q: RulesQuery) -> Answer {
    let ids = super::handlers::rule_ids(q.ids)?;
    let limit = super::handlers::page_limit(q.limit)?;
    let (generation, set) = match s.controller.rule_set(name).await? {
        None => (0, RuleSet::default()),
        Some(t) => (t.generation, parse_stored(name, &t.text)?),
    };
    let page = crate::daemon::RulesPage {
        after: q.after,
        limit,
        ids,
    };
    let paged = page.ids.is_none();
    let set = page.of(set);
    let next = set
        .rules
        .last()
        .filter(|_| paged && set.rules.len() == limit)
        .map(|r| r.id);
    Ok(
        Json(json!({"rule_set": name, "generation": generation, "rules": set, "next": next}))
            .into_response(),
    )
}

/// Query of `PUT /v1/rules` on a fleet.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApplyQuery {
    rule_set: Option<String>,
    expected_generation: Option<u64>,
    #[serde(default)]
    dry_run: bool,
}

/// `PUT /v1/rules?rule_set=NAME`: checks the rule set and, unless a dry
/// run, makes it the next generation in etcd (leader only).
pub(super) async fn put_rules(
    State(s): State<Arc<FleetApi>>,
    Query(q): Query<ApplyQuery>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let name = rule_set_name(q.rule_set)?;
    let bytes = super::handlers::body(s.max_body, raw)?;
    let text = blocking(move || -> Result<Vec<u8>, ApiError> {
        let set = parse_rule_set(&headers, bytes)?;
        Ok(serde_json::to_vec(&set).expect("a rule set serializes"))
    })
    .await?;
    if q.dry_run {
        let current = s.controller.rule_set(&name).await?;
        let generation = current.map_or(0, |t| t.generation);
        return Ok(Json(json!({
            "rule_set": name, "generation": generation, "dry_run": true, "bytes": text.len(),
        }))
        .into_response());
    }
    let published = s
        .controller
        .publish(&name, q.expected_generation, &text)
        .await?;
    let bytes = text.len();
    drop(text);
    // The controller keeps no rule set: what parsing and publishing this
    // one took goes back to the system.
    crate::daemon::give_back_freed_memory();
    Ok(published_answer(&name, &published, bytes, None))
}

/// The answer to a change published as `published`: its `bytes` of text,
/// and a batch's `summary`.
fn published_answer(
    name: &str,
    published: &crate::fleet::Published,
    bytes: usize,
    summary: Option<serde_json::Value>,
) -> Response {
    let mut answer = json!({
        "rule_set": name,
        "generation": published.generation,
        "dry_run": false,
        "bytes": bytes,
        "chunks": published.chunks,
    });
    if let Some(summary) = summary {
        answer["summary"] = summary;
    }
    Json(answer).into_response()
}

/// `POST /v1/rules/batch?rule_set=NAME`: adds, replaces and deletes rules
/// of the current generation and publishes the result as the next (leader
/// only). A batch that changes nothing publishes nothing. Between its read
/// and its write another change makes it a 409, as an expected generation
/// that is not current does.
pub(super) async fn batch(
    State(s): State<Arc<FleetApi>>,
    Query(q): Query<BatchQuery>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let name = rule_set_name(q.rule_set)?;
    let bytes = super::handlers::body(s.max_body, raw)?;
    let batch = blocking(move || parse_batch(&bytes)).await?;
    let current = s.controller.rule_set(&name).await?;
    let generation = current.as_ref().map_or(0, |t| t.generation);
    if let Some(expected) = batch.expected_generation
        && expected != generation
    {
        return Err(FleetError::Conflict {
            rule_set: name,
            expected,
            current: generation,
        }
        .into());
    }
    let set = match current {
        None => RuleSet::default(),
        Some(t) => parse_stored(&name, &t.text)?,
    };
    let (text, summary) = blocking(move || -> Result<_, ApiError> {
        let mut desired = Desired::new(generation, &set);
        desired
            .check_batch(&batch.add, &batch.delete)
            .map_err(ControlError::from)?;
        let summary = desired.patch_summary(&batch.add, &batch.delete);
        desired.patch(batch.add, &batch.delete, generation + 1);
        let text = serde_json::to_vec(&desired.rule_set()).expect("a rule set serializes");
        Ok((text, summary))
    })
    .await?;
    let counts = json!({
        "added": summary.added, "changed": summary.changed, "removed": summary.removed,
    });
    if summary.added + summary.changed + summary.removed == 0 {
        return Ok(Json(json!({
            "rule_set": name, "generation": generation, "dry_run": false,
            "bytes": text.len(), "summary": counts,
        }))
        .into_response());
    }
    let published = s.controller.publish(&name, Some(generation), &text).await?;
    Ok(published_answer(
        &name,
        &published,
        text.len(),
        Some(counts),
    ))
}

/// Rule set `name` as etcd holds it, parsed.
fn parse_stored(name: &str, text: &[u8]) -> Result<RuleSet, FleetError> {
    RuleSet::parse_json_bytes(text).map_err(|e| FleetError::Damaged {
        what: format!("rule set {name}"),
        reason: e.to_string(),
    })
}
