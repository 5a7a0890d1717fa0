//! Human-readable tables of the API's answers, and the upload progress bar.

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// Prints rows as columns aligned to their widest cell.
pub(super) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        dse::outln!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Each item of a list as a table cell.
pub(super) fn texts(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().map(text).collect()
}

/// A value as a table cell: a string without its quotes.
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

/// A progress bar over `total` bytes of upload (hidden when stderr is not
/// a terminal, or `visible` is false) and the callback that advances it.
pub fn upload_bar(total: u64, visible: bool) -> (Box<dyn FnMut(usize) + Send>, ProgressBar) {
    let bar = if visible && total > (4 << 20) {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} {wide_bar} {bytes}/{total_bytes} {elapsed}")
            .expect("a valid template"),
    );
    bar.set_message("sending rules");
    let b = bar.clone();
    let progress = Box::new(move |sent: usize| {
        b.set_position(sent as u64);
        if sent as u64 >= total {
            b.set_message("applying");
            b.enable_steady_tick(std::time::Duration::from_millis(200));
        }
    });
    (progress, bar)
}

/// The answer to a rule change.
pub fn applied(v: &Value) {
    if let Some(rule_set) = v["rule_set"].as_str() {
        // A fleet controller's answer: the agents apply it.
        let verb = if v["dry_run"] == Value::Bool(true) {
            "dry run: valid; nothing changed; rule set"
        } else {
            "published rule set"
        };
        dse::outln!(
            "{verb} {rule_set} generation {} ({} bytes); each host's agent applies it",
            text(&v["generation"]),
            text(&v["bytes"])
        );
        let s = &v["summary"];
        if s.is_object() {
            dse::outln!(
                "{} added, {} changed, {} removed",
                text(&s["added"]),
                text(&s["changed"]),
                text(&s["removed"])
            );
        }
        return;
    }
    if v["dry_run"] == Value::Bool(true) {
        dse::outln!(
            "dry run against generation {}: nothing changed",
            text(&v["generation"])
        );
        let diff = &v["diff"];
        if diff["ports_or_meters"] == Value::Bool(true) {
            dse::outln!("~ ports or meters change (the datapaths will be rebuilt)");
        }
        for (sign, key) in [("+", "added"), ("~", "changed")] {
            for r in diff[key].as_array().into_iter().flatten() {
                dse::outln!(
                    "{sign} rule {} priority {}: match {} actions {}",
                    text(&r["id"]),
                    text(&r["priority"]),
                    r["match"],
                    r["actions"]
                );
            }
        }
        for id in diff["removed"].as_array().into_iter().flatten() {
            dse::outln!("- rule {id}");
        }
    } else {
        dse::outln!("generation {}", text(&v["generation"]));
        for (name, g) in v["datapaths"].as_object().into_iter().flatten() {
            dse::outln!("  datapath {name}: runs generation {g}");
        }
    }
    dse::outln!(
        "{} added, {} changed, {} removed{}",
        text(&v["added"]),
        text(&v["changed"]),
        text(&v["removed"]),
        if v["ports_or_meters"] == Value::Bool(true) {
            ", ports or meters changed"
        } else {
            ""
        }
    );
}

/// The desired rules.
pub fn rules(v: &Value) {
    let set = &v["rules"];
    dse::outln!("generation {}", text(&v["generation"]));
    let ports: Vec<String> = set["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| format!("{}={}", text(&p["name"]), text(&p["index"])))
        .collect();
    dse::outln!("ports: {}", ports.join(" "));
    let rows: Vec<Vec<String>> = set["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                text(&r["id"]),
                text(&r["priority"]),
                r["match"].to_string(),
                r["actions"].to_string(),
            ]
        })
        .collect();
    table(&["ID", "PRIORITY", "MATCH", "ACTIONS"], &rows);
    if let Some(next) = v["next"].as_u64() {
        dse::outln!("more: dse rules get --after {next}");
    }
}

/// Per-rule counters by datapath.
pub fn counters(v: &Value) {
    let mut rows = Vec::new();
    for (dp, by_rule) in v.as_object().into_iter().flatten() {
        for (id, c) in by_rule.as_object().into_iter().flatten() {
            rows.push(vec![
                dp.clone(),
                id.clone(),
                text(&c["packets"]),
                text(&c["bytes"]),
            ]);
        }
    }
    table(&["DATAPATH", "RULE", "PACKETS", "BYTES"], &rows);
}

/// Datapath statistics.
pub fn stats(v: &Value) {
    let rows: Vec<Vec<String>> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(dp, s)| {
            let dropped: u64 = s["drops"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, n)| n.as_u64())
                .sum();
            vec![
                dp.clone(),
                text(&s["rx_packets"]),
                text(&s["output"]),
                text(&s["pass"]),
                text(&s["tx"]),
                dropped.to_string(),
                text(&s["cache_hits"]),
                text(&s["cache_misses"]),
            ]
        })
        .collect();
    table(
        &[
            "DATAPATH",
            "RX",
            "OUTPUT",
            "PASS",
            "TX",
            "DROPPED",
            "CACHE HITS",
            "MISSES",
        ],
        &rows,
    );
}

/// Datapath instances.
pub fn datapaths(v: &Value) {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let ports: Vec<String> = d["interfaces"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(p, i)| format!("{p}={}", text(i)))
                .collect();
            let mut state = text(&d["state"]);
            if d["adopted"] == Value::Bool(true) {
                state.push_str(" (adopted)");
            }
            if let Some(e) = d["error"].as_str() {
                state = format!("{state}: {e}");
            }
            if let Some(io) = d["host_io"].as_str() {
                state = format!("{state}, host path on {io}");
                if let Some(why) = d["host_io_fallback"].as_str() {
                    state = format!("{state} ({why})");
                }
            }
            let sync = match (&d["in_sync"], &d["generation"]) {
                (Value::Bool(true), _) => "in sync".to_string(),
                (_, Value::Null) => "-".to_string(),
                _ => format!("differs: desired {}", text(&d["desired_generation"])),
            };
            vec![
                text(&d["name"]),
                text(&d["backend"]),
                ports.join(" "),
                text(&d["generation"]),
                sync,
                state,
            ]
        })
        .collect();
    table(
        &["NAME", "BACKEND", "PORTS", "GENERATION", "SYNC", "STATE"],
        &rows,
    );
}

/// Health and instances.
pub fn status(v: &Value) {
    let h = &v["health"];
    dse::outln!(
        "dse serve: {}, desired generation {}, {} datapaths ({} failed)",
        text(&h["status"]),
        text(&h["generation"]),
        text(&h["datapaths"]),
        text(&h["failed_datapaths"])
    );
    if v["datapaths"].as_array().is_some_and(|a| !a.is_empty()) {
        datapaths(&v["datapaths"]);
    }
}

/// One row per audit entry, its time in UTC.
pub fn audit(v: &Value) {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let at = e["at_unix_ms"].as_u64().map_or_else(
                || "-".to_owned(),
                |ms| {
                    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                    humantime::format_rfc3339_millis(t).to_string()
                },
            );
            vec![
                text(&e["seq"]),
                at,
                text(&e["who"]),
                text(&e["what"]),
                text(&e["result"]),
            ]
        })
        .collect();
    table(&["SEQ", "AT", "WHO", "WHAT", "RESULT"], &rows);
}

/// One row per DPU (a host without one gets a row of its own, and so does
/// a cluster without hosts).
pub fn clusters(v: &Value) {
    let mut rows = Vec::new();
    for c in v.as_array().into_iter().flatten() {
        let cluster = vec![
            text(&c["name"]),
            text(&c["management"]),
            text(&c["manager_version"]),
        ];
        let hosts = c["hosts"].as_array().cloned().unwrap_or_default();
        if hosts.is_empty() {
            rows.push([cluster.clone(), vec![String::new(); 9]].concat());
        }
        for h in &hosts {
            let host = vec![text(&h["name"]), text(&h["version"])];
            let dpus = h["dpus"].as_array().cloned().unwrap_or_default();
            if dpus.is_empty() {
                rows.push([cluster.clone(), host.clone(), vec![String::new(); 7]].concat());
            }
            for d in &dpus {
                let dpu = [
                    "serial",
                    "vendor",
                    "model",
                    "generation",
                    "hardware_revision",
                    "firmware",
                    "os",
                ]
                .iter()
                .map(|k| text(&d[*k]))
                .collect::<Vec<_>>();
                rows.push([cluster.clone(), host.clone(), dpu].concat());
            }
        }
    }
    table(
        &[
            "CLUSTER",
            "MANAGED BY",
            "MANAGER",
            "HOST",
            "VERSION",
            "DPU",
            "VENDOR",
            "MODEL",
            "GEN",
            "HW REV",
            "FIRMWARE",
            "DPU OS",
        ],
        &rows,
    );
}

/// One row per manifest.
pub fn manifests(v: &Value) {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let targets = texts(&m["targets"]);
            vec![
                text(&m["kind"]),
                text(&m["name"]),
                text(&m["version"]),
                text(&m["acceptance"]),
                targets.join(","),
                text(&m["solution"]),
            ]
        })
        .collect();
    table(
        &[
            "KIND",
            "NAME",
            "VERSION",
            "ACCEPTANCE",
            "TARGETS",
            "SOLUTION",
        ],
        &rows,
    );
}
