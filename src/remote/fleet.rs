//! The fleet's commands: `dse host list`, `dse host set`, `dse fleet status`.

use super::exit::Failure;
use super::show::{table, text, texts};
use dse_control::client::{Call, Method, segment};
use serde_json::Value;

/// `dse host list`'s call.
pub fn host_list() -> Call {
    Call::new(Method::GET, "/v1/hosts")
}

/// `dse host set`'s call: the host's rule set and the datapath instances
/// read from `file` (a YAML or JSON list), none without one.
///
/// # Errors
/// A bad host name, or a file that does not read as a list of instances.
pub fn host_set(
    host: &str,
    rule_set: &str,
    file: Option<&std::path::Path>,
) -> Result<Call, Failure> {
    dse_datapath::name::check("host name", host).map_err(|e| Failure::invalid(e.to_string()))?;
    let datapaths: Vec<dse_control::store::DatapathInstance> = match file {
        None => Vec::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::invalid(format!("reading {}: {e}", path.display())))?;
            serde_norway::from_str(&text)
                .map_err(|e| Failure::invalid(format!("{}: {e}", path.display())))?
        }
    };
    let body = serde_json::json!({"rule_set": rule_set, "datapaths": datapaths});
    Ok(Call::new(Method::PUT, format!("/v1/hosts/{}", segment(host))).json(body.to_string()))
}

/// `dse fleet status`'s call.
pub fn status() -> Call {
    Call::new(Method::GET, "/v1/fleet")
}

/// Milliseconds since the epoch as seconds ago.
fn ago(ms: &Value) -> String {
    let Some(ms) = ms.as_u64().filter(|&m| m > 0) else {
        return "-".into();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    format!("{:.1}s ago", now.saturating_sub(ms) as f64 / 1000.0)
}

/// The hosts as a table.
pub fn show_hosts(v: &Value) {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let report = &h["report"];
            let datapaths: Vec<String> = report["datapaths"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    let sync = if d["in_sync"] == Value::Bool(true) {
                        ""
                    } else {
                        " (behind)"
                    };
                    format!("{} {}{sync}", text(&d["name"]), text(&d["state"]))
                })
                .collect();
            let rule_set = match (&h["desired"]["rule_set"], &report["applied"]["rule_set"]) {
                (Value::String(want), Value::String(has)) if want != has => {
                    format!("{has} (wants {want})")
                }
                (_, Value::String(has)) if !has.is_empty() => has.clone(),
                (Value::String(want), _) => want.clone(),
                _ => "-".into(),
            };
            vec![
                text(&h["host"]),
                text(&h["state"]),
                rule_set,
                report["applied"]["generation"]
                    .as_u64()
                    .map_or_else(|| "-".into(), |g| g.to_string()),
                if datapaths.is_empty() {
                    "-".into()
                } else {
                    datapaths.join(", ")
                },
                ago(&report["reported_unix_ms"]),
                report["error"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    table(
        &[
            "HOST",
            "STATE",
            "RULE SET",
            "GENERATION",
            "DATAPATHS",
            "REPORTED",
            "ERROR",
        ],
        &rows,
    );
}

/// What `dse host set` wrote.
pub fn show_set(v: &Value) {
    let datapaths = v["desired"]["datapaths"].as_array().map_or(0, Vec::len);
    dse::outln!(
        "host {} runs rule set {} with {datapaths} datapath(s) (etcd revision {}); its agent applies it",
        text(&v["host"]),
        text(&v["desired"]["rule_set"]),
        text(&v["revision"])
    );
}

/// The fleet status.
pub fn show_status(v: &Value) {
    let leader = v["leader"].as_str().unwrap_or("");
    dse::outln!(
        "leader: {}",
        if leader.is_empty() { "none" } else { leader }
    );
    let rows: Vec<Vec<String>> = v["controllers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let id = text(&c["id"]);
            let role = if id == leader { "leader" } else { "follower" };
            vec![id, role.into(), text(&c["api"])]
        })
        .collect();
    table(&["CONTROLLER", "ROLE", "API"], &rows);
    let rows: Vec<Vec<String>> = v["etcd_members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let urls = texts(&m["client_urls"]);
            vec![
                text(&m["name"]),
                if m["healthy"] == Value::Bool(true) {
                    "healthy".into()
                } else {
                    "unreachable".into()
                },
                if m["leader"] == Value::Bool(true) {
                    "leader".into()
                } else {
                    String::new()
                },
                urls.join(","),
            ]
        })
        .collect();
    table(&["ETCD MEMBER", "HEALTH", "RAFT", "CLIENT URLS"], &rows);
    dse::outln!(
        "agents alive: {} of {} hosts",
        text(&v["agents_alive"]),
        text(&v["hosts"])
    );
}
