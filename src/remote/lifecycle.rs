//! The lifecycle commands: `dse image set`, `dse lifecycle …` with live
//! progress per host and per DPU, and `dse dpu emulate`.

use super::exit::{self, Failure};
use super::send;
use super::show::{table, text};
use crate::cli::{DpuCommand, ImageCommand, LifecycleCommand};
use dse_control::client::{Call, Endpoint, Method, segment};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

type Rt = tokio::runtime::Runtime;

fn pick((name, version): &(String, String)) -> Value {
    json!({"name": name, "version": version})
}

/// `dse image …`
pub fn image(rt: &Rt, ep: &Endpoint, json: bool, command: ImageCommand) -> Result<(), Failure> {
    let ImageCommand::Set {
        cluster,
        base,
        vendor_addon,
        firmware,
        components,
    } = command;
    let mut image = json!({"base_image": pick(&base)});
    if let Some(v) = &vendor_addon {
        image["vendor_addon"] = pick(v);
    }
    if let Some(f) = &firmware {
        image["firmware_addon"] = pick(f);
    }
    if !components.is_empty() {
        image["components"] = components.iter().map(pick).collect();
    }
    let call = Call::new(
        Method::PUT,
        format!("/v1/clusters/{}/image", segment(&cluster)),
    )
    .json(image.to_string());
    let answer = send(rt, ep, call)?;
    show(json, &answer, |a| {
        dse::outln!("cluster {cluster} now wants {}", describe_image(a));
    });
    Ok(())
}

/// Prints `answer` as JSON, or as `human` tells it.
fn show(json: bool, answer: &Value, human: impl FnOnce(&Value)) {
    if json {
        dse::outln!(
            "{}",
            serde_json::to_string_pretty(answer).unwrap_or_default()
        );
    } else {
        human(answer);
    }
}

fn describe_image(image: &Value) -> String {
    let one = |v: &Value| format!("{} {}", text(&v["name"]), text(&v["version"]));
    let mut parts = vec![one(&image["base_image"])];
    for key in ["vendor_addon", "firmware_addon"] {
        if !image[key].is_null() {
            parts.push(one(&image[key]));
        }
    }
    for c in image["components"].as_array().into_iter().flatten() {
        parts.push(one(c));
    }
    parts.join(", ")
}

/// One row per DPU (or per host without one): status, impact, changes.
fn compliance(v: &Value) {
    let changes = |list: &Value| {
        let all: Vec<String> = list
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                format!(
                    "{} {}->{}",
                    text(&c["what"]),
                    text(&c["from"]),
                    text(&c["to"])
                )
            })
            .collect();
        if all.is_empty() {
            "-".into()
        } else {
            all.join(", ")
        }
    };
    let mut rows = Vec::new();
    for h in v["hosts"].as_array().into_iter().flatten() {
        rows.push(vec![
            text(&h["host"]),
            "(host)".into(),
            text(&h["status"]),
            text(&h["impact"]),
            changes(&h["changes"]),
            h["reason"].as_str().unwrap_or("").to_string(),
        ]);
        for d in h["dpus"].as_array().into_iter().flatten() {
            rows.push(vec![
                String::new(),
                text(&d["serial"]),
                text(&d["status"]),
                text(&d["impact"]),
                changes(&d["changes"]),
                d["reason"].as_str().unwrap_or("").to_string(),
            ]);
        }
    }
    table(
        &["HOST", "DPU", "STATUS", "IMPACT", "CHANGES", "REASON"],
        &rows,
    );
    dse::outln!("cluster {}: {}", text(&v["cluster"]), text(&v["status"]));
}

/// The last step of a host run, as a line of progress.
fn progress_line(h: &Value) -> String {
    let last = h["steps"].as_array().and_then(|s| s.last());
    let step = last.map_or_else(String::new, |s| {
        let dpu = s["dpu"].as_str().map_or(String::new(), |d| format!(" {d}"));
        format!(
            "{}{dpu} {}{}",
            text(&s["step"]),
            text(&s["state"]),
            s["detail"]
                .as_str()
                .map_or(String::new(), |d| format!(": {d}"))
        )
    });
    format!("{:<13} {step}", text(&h["result"]))
}

fn summary(r: &Value) {
    let rows: Vec<Vec<String>> = r["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let took = match (h["started_ms"].as_u64(), h["finished_ms"].as_u64()) {
                (Some(a), Some(b)) => format!("{:.1} s", (b - a) as f64 / 1000.0),
                _ => "-".into(),
            };
            vec![
                text(&h["host"]),
                text(&h["result"]),
                text(&h["attempts"]),
                took,
                h["message"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    table(&["HOST", "RESULT", "ATTEMPTS", "TIME", "MESSAGE"], &rows);
}

/// Follows remediation `id` until it finishes, a spinner per host.
fn follow(rt: &Rt, ep: &Endpoint, id: u64, visible: bool) -> Result<Value, Failure> {
    let bars = MultiProgress::new();
    if !visible {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let style =
        ProgressStyle::with_template("{spinner} {prefix:<8} {msg}").expect("a valid template");
    let mut per_host: BTreeMap<String, ProgressBar> = BTreeMap::new();
    loop {
        let r = send(
            rt,
            ep,
            Call::new(Method::GET, format!("/v1/remediations/{id}")),
        )?;
        for h in r["hosts"].as_array().into_iter().flatten() {
            let name = text(&h["host"]);
            let bar = per_host.entry(name.clone()).or_insert_with(|| {
                let b = bars.add(ProgressBar::new_spinner());
                b.set_style(style.clone());
                b.set_prefix(name.clone());
                b.enable_steady_tick(Duration::from_millis(120));
                b
            });
            bar.set_message(progress_line(h));
        }
        if !r["finished_ms"].is_null() {
            for b in per_host.values() {
                b.finish();
            }
            return Ok(r);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `dse lifecycle …`
pub fn lifecycle(
    rt: &Rt,
    ep: &Endpoint,
    json: bool,
    command: LifecycleCommand,
) -> Result<(), Failure> {
    let print = |v: &Value, human: fn(&Value)| show(json, v, human);
    match command {
        LifecycleCommand::Check { cluster } => {
            let v = send(
                rt,
                ep,
                Call::new(
                    Method::GET,
                    format!("/v1/clusters/{}/compliance", segment(&cluster)),
                ),
            )?;
            print(&v, compliance);
        }
        LifecycleCommand::Precheck { cluster } => {
            let v = send(
                rt,
                ep,
                Call::new(
                    Method::POST,
                    format!("/v1/clusters/{}/precheck", segment(&cluster)),
                ),
            )?;
            print(&v, |v| {
                for p in v["problems"].as_array().into_iter().flatten() {
                    dse::outln!("problem: {}", text(p));
                }
                if v["ok"] == true {
                    dse::outln!(
                        "pre-check passed: cluster {} can be remediated",
                        text(&v["cluster"])
                    );
                }
            });
            if v["ok"] != true {
                return Err(Failure {
                    code: exit::INVALID,
                    message: format!("pre-check of cluster {cluster} failed"),
                });
            }
        }
        LifecycleCommand::Stage { cluster } => {
            let v = send(
                rt,
                ep,
                Call::new(
                    Method::POST,
                    format!("/v1/clusters/{}/stage", segment(&cluster)),
                ),
            )?;
            print(&v, |v| {
                let staged: Vec<String> = v["staged"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect();
                dse::outln!("staged on {}", staged.join(", "));
            });
        }
        LifecycleCommand::Remediate {
            cluster,
            parallel,
            keep_offload,
            retries,
            boot_timeout_ms,
            dry_run,
            no_wait,
        } => {
            let body = json!({"parallel": parallel, "keep_offload": keep_offload, "retries": retries,
                "boot_timeout_ms": boot_timeout_ms, "dry_run": dry_run});
            let call = Call::new(
                Method::POST,
                format!("/v1/clusters/{}/remediate", segment(&cluster)),
            )
            .json(body.to_string());
            let v = send(rt, ep, call)?;
            if dry_run {
                print(&v, compliance);
                return Ok(());
            }
            let id = v["id"].as_u64().unwrap_or_default();
            if no_wait {
                print(&v, |v| {
                    dse::outln!("remediation {} started", text(&v["id"]))
                });
                return Ok(());
            }
            if !json {
                dse::outln!("remediation {id} of cluster {cluster}");
            }
            let done = follow(rt, ep, id, !json)?;
            print(&done, summary);
            let failed: Vec<String> = done["hosts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|h| h["result"] != "OK" && h["result"] != "SKIPPED")
                .map(|h| format!("{} {}", text(&h["host"]), text(&h["result"])))
                .collect();
            if !failed.is_empty() {
                return Err(Failure::failed(format!(
                    "remediation {id} did not bring every host to the image: {}",
                    failed.join(", ")
                )));
            }
        }
        LifecycleCommand::History { id: Some(id) } => {
            let v = send(
                rt,
                ep,
                Call::new(Method::GET, format!("/v1/remediations/{id}")),
            )?;
            print(&v, |r| {
                summary(r);
                for h in r["hosts"].as_array().into_iter().flatten() {
                    for s in h["steps"].as_array().into_iter().flatten() {
                        dse::outln!(
                            "{} #{} {}{} {} {}",
                            text(&h["host"]),
                            text(&s["attempt"]),
                            text(&s["step"]),
                            s["dpu"].as_str().map_or(String::new(), |d| format!(" {d}")),
                            text(&s["state"]),
                            s["detail"].as_str().unwrap_or("")
                        );
                    }
                }
            });
        }
        LifecycleCommand::History { id: None } => {
            let v = send(rt, ep, Call::new(Method::GET, "/v1/remediations"))?;
            print(&v, |all| {
                let rows: Vec<Vec<String>> = all
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        let results: Vec<String> = r["hosts"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|h| format!("{} {}", text(&h["host"]), text(&h["result"])))
                            .collect();
                        vec![
                            text(&r["id"]),
                            text(&r["cluster"]),
                            describe_image(&r["image"]),
                            if r["finished_ms"].is_null() {
                                "running".into()
                            } else {
                                "finished".into()
                            },
                            results.join(", "),
                        ]
                    })
                    .collect();
                table(&["ID", "CLUSTER", "IMAGE", "STATE", "HOSTS"], &rows);
            });
        }
        LifecycleCommand::Install { cluster, host } => {
            let call = Call::new(
                Method::POST,
                format!(
                    "/v1/clusters/{}/hosts/{}/install",
                    segment(&cluster),
                    segment(&host)
                ),
            );
            let v = send(rt, ep, call)?;
            let as_cluster =
                json!({"cluster": cluster, "status": v["status"], "hosts": [v.clone()]});
            if json {
                print(&v, |_| {});
            } else {
                compliance(&as_cluster);
            }
        }
        LifecycleCommand::Recommendations { cluster } => {
            send(
                rt,
                ep,
                Call::new(
                    Method::POST,
                    format!("/v1/clusters/{}/recommendations", segment(&cluster)),
                ),
            )?;
        }
        LifecycleCommand::Hcl { cluster } => {
            send(
                rt,
                ep,
                Call::new(
                    Method::POST,
                    format!("/v1/clusters/{}/hardware-compatibility", segment(&cluster)),
                ),
            )?;
        }
    }
    Ok(())
}

/// `dse dpu …`
pub fn dpu(rt: &Rt, ep: &Endpoint, json: bool, command: DpuCommand) -> Result<(), Failure> {
    let DpuCommand::Emulate {
        serial,
        boot_ms,
        watchdog_ms,
        flash_failures,
        boot_hangs,
        health_check_failures,
        unreachable,
    } = command;
    let body = json!({
        "boot_ms": boot_ms,
        "watchdog_ms": watchdog_ms,
        "faults": {
            "flash_failures": flash_failures,
            "boot_hangs": boot_hangs,
            "health_check_failures": health_check_failures,
            "unreachable": unreachable,
        }
    });
    let call = Call::new(
        Method::PUT,
        format!("/v1/dpus/{}/emulation", segment(&serial)),
    )
    .json(body.to_string());
    show(json, &send(rt, ep, call)?, |_| {
        dse::outln!("DPU {serial}: boots in {boot_ms} ms");
    });
    Ok(())
}
