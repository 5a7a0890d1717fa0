//! The CLI commands that drive `dse serve` through its API, and `dse serve`
//! itself.

mod agent;
pub mod exit;
mod fleet;
mod lifecycle;
mod show;

use crate::cli::{
    BackendArg, ClusterCommand, Command, Connection, DatapathCommand, DepotCommand, FleetCommand,
    HostCommand, Output, RulesCommand, ServeArgs,
};
pub use agent::agent;
use anyhow::Context;
use bytes::Bytes;
use dse_control::client::{Call, Endpoint, Method, StatusCode, segment};
use dse_control::daemon::DaemonConfig;
use dse_control::lifecycle::depot::DepotConfig;
use dse_control::serve::ServeConfig;
use dse_datapath::xdp::XdpLimits;
use exit::Failure;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::process::ExitCode;

/// Runs `dse serve` until SIGINT or SIGTERM.
///
/// # Errors
/// What kept the daemon from starting.
pub fn serve(args: ServeArgs, connection: &Connection) -> anyhow::Result<()> {
    let daemon = DaemonConfig {
        db: args.db,
        bpffs: args.bpffs,
        emu_workers: args.emu_workers,
        xdp_limits: XdpLimits {
            rules: args.xdp_max_rules,
            action_records: args.xdp_max_rules,
            ..XdpLimits::default()
        },
        xdp_skb_mode: args.xdp_skb,
        depot: DepotConfig {
            trusted_keys: args.trusted_keys,
            lowest_acceptance: args.lowest_acceptance.level(),
        },
    };
    let config = ServeConfig {
        daemon,
        socket: connection.socket.clone(),
        tcp: args.listen,
        token_file: connection.token_file.clone(),
        max_body: args.max_body,
        limits: dse_control::api::conn::ConnLimits {
            header_timeout: std::time::Duration::from_secs(args.header_timeout),
            max_connections: args.max_connections,
        },
        fleet: match &args.etcd {
            None => None,
            Some(endpoints) => Some(dse_control::serve::FleetServe {
                etcd: args.etcd_args.config(endpoints)?,
                id: match &args.controller_id {
                    Some(id) => {
                        dse_datapath::name::check("controller id", id)?;
                        id.clone()
                    }
                    None => format!(
                        "{}-{}",
                        std::fs::read_to_string("/proc/sys/kernel/hostname")
                            .map_or_else(|_| "controller".into(), |h| h.trim().to_string()),
                        std::process::id()
                    ),
                },
                ttl: args.etcd_args.ttl(),
            }),
        },
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM can be watched");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("stopping; XDP datapaths stay pinned and forwarding");
        };
        dse_control::serve::serve(config, shutdown).await
    })?;
    Ok(())
}

fn endpoint(c: &Connection) -> Result<Endpoint, Failure> {
    match &c.server {
        None => Ok(Endpoint::Unix(c.socket.clone())),
        Some(addr) => {
            let Some(path) = &c.token_file else {
                return Err(Failure::usage(
                    "--server needs --token-file (or DSE_TOKEN_FILE): the daemon's TCP API wants a bearer token",
                ));
            };
            let token = std::fs::read_to_string(path).map_err(|e| {
                Failure::usage(format!("reading the token file {}: {e}", path.display()))
            })?;
            Ok(Endpoint::Tcp {
                addr: addr.clone(),
                token: token.trim().to_string(),
            })
        }
    }
}

/// Sends `call` and returns the answer's JSON, or the failure the daemon
/// (or the lack of one) reported.
fn send(rt: &tokio::runtime::Runtime, ep: &Endpoint, call: Call) -> Result<Value, Failure> {
    let body = send_bytes(rt, ep, call)?;
    if body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body)
        .map_err(|e| Failure::failed(format!("the daemon's answer is not JSON: {e}")))
}

/// Sends `call` and returns the body of a successful answer, or the
/// daemon's error as a [`Failure`].
fn send_bytes(rt: &tokio::runtime::Runtime, ep: &Endpoint, call: Call) -> Result<Bytes, Failure> {
    let (status, body) = rt
        .block_on(ep.send(call))
        .map_err(|e| Failure::unreachable(e.to_string()))?;
    if status.is_success() {
        return Ok(body);
    }
    let answer = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let message = answer["error"].as_str().map_or_else(
        || String::from_utf8_lossy(&body).into_owned(),
        str::to_string,
    );
    Err(Failure::from_status(
        status,
        answer["code"].as_str(),
        message,
    ))
}

/// `f` with an async runtime and the daemon's endpoint.
fn on_daemon<T>(
    connection: &Connection,
    f: impl FnOnce(&tokio::runtime::Runtime, &Endpoint) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let ep = endpoint(connection)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("starting the async runtime: {e}")))?;
    f(&rt, &ep)
}

/// Runs a command that talks to the daemon; prints the result, or the
/// error and what to do, and returns the exit code.
pub fn run(connection: &Connection, output: Output, command: Command) -> ExitCode {
    let result = on_daemon(connection, |rt, ep| dispatch(rt, ep, output, command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// The rules datapath `name` of the daemon runs, for `dse trace`: the
/// desired rules, when the datapath has applied their generation. On an
/// error, prints it and what to do, and returns the exit code.
pub fn datapath_rules(
    connection: &Connection,
    name: &str,
) -> Result<dse_datapath::RuleSet, ExitCode> {
    let fetched = on_daemon(connection, |rt, ep| {
        let get = |path: &str| -> Result<Value, Failure> {
            let body = send_bytes(rt, ep, Call::new(Method::GET, path.to_string()))?;
            serde_json::from_slice(&body)
                .map_err(|e| Failure::failed(format!("the daemon's answer is not JSON: {e}")))
        };
        let datapaths = get("/v1/datapaths")?;
        let list = datapaths.as_array().cloned().unwrap_or_default();
        let Some(dp) = list.iter().find(|d| d["name"] == name) else {
            let names: Vec<&str> = list.iter().filter_map(|d| d["name"].as_str()).collect();
            return Err(Failure::not_found(format!(
                "no datapath {name}: the daemon runs {} (dse datapath list)",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        };
        let rules = get("/v1/rules")?;
        let (want, has) = (rules["generation"].as_u64(), dp["generation"].as_u64());
        if want != has {
            return Err(Failure::failed(format!(
                "datapath {name} runs generation {}, the desired rules are at {}: it is catching up or has failed (dse datapath list); trace again when it runs them",
                has.map_or_else(|| "none".into(), |g| g.to_string()),
                want.map_or_else(|| "none".into(), |g| g.to_string()),
            )));
        }
        serde_json::from_value(rules["rules"].clone())
            .map_err(|e| Failure::failed(format!("the daemon's rules do not read: {e}")))
    });
    fetched.map_err(|f| {
        eprintln!("error: {}", f.message);
        ExitCode::from(f.code)
    })
}

/// What the flow caches of the daemon's datapath `name` hold for each of
/// `keys`, in order (`GET /v1/datapaths/{name}/cache`), for `dse trace`;
/// why not, as text, if the daemon did not answer.
pub fn datapath_caches(
    connection: &Connection,
    name: &str,
    keys: &[dse_datapath::compile::FlowKey],
) -> Result<Vec<Vec<dse_datapath::pipeline::Cached>>, String> {
    on_daemon(connection, |rt, ep| {
        keys.iter()
            .map(|key| {
                let path = format!(
                    "/v1/datapaths/{}/cache?key={}",
                    segment(name),
                    hex::encode(key.to_bytes())
                );
                let body = send_bytes(rt, ep, Call::new(Method::GET, path))?;
                let answer: Value = serde_json::from_slice(&body).map_err(|e| {
                    Failure::failed(format!("the daemon's answer is not JSON: {e}"))
                })?;
                serde_json::from_value(answer["caches"].clone())
                    .map_err(|e| Failure::failed(format!("the daemon's caches do not read: {e}")))
            })
            .collect()
    })
    .map_err(|f| f.message)
}

fn dispatch(
    rt: &tokio::runtime::Runtime,
    ep: &Endpoint,
    output: Output,
    command: Command,
) -> Result<(), Failure> {
    let json = output == Output::Json;
    let print = |v: &Value, table: fn(&Value)| {
        if json {
            dse::outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            table(v);
        }
    };
    // Large answers (every rule, every counter): with -o json, the bytes
    // as they came, never a JSON tree of a million rules.
    let show_answer =
        |call: Call, table: fn(&Value)| -> Result<(), Failure> {
            let body = send_bytes(rt, ep, call)?;
            if json {
                dse::outln!("{}", String::from_utf8_lossy(&body).trim_end());
            } else {
                table(&serde_json::from_slice(&body).map_err(|e| {
                    Failure::failed(format!("the daemon's answer is not JSON: {e}"))
                })?);
            }
            Ok(())
        };
    match command {
        Command::Rules { command } => match command {
            RulesCommand::Apply {
                file,
                dry_run,
                expect_generation,
                rule_set,
            } => {
                let (content_type, data) = read_rules_file(&file)?;
                let mut query = format!("/v1/rules?dry_run={dry_run}");
                if let Some(g) = expect_generation {
                    query.push_str(&format!("&expected_generation={g}"));
                }
                if let Some(name) = rule_set {
                    query.push_str(&format!("&rule_set={}", segment(&name)));
                }
                let (progress, bar) = show::upload_bar(data.len() as u64, !json);
                let call = Call {
                    method: Method::PUT,
                    path: query,
                    body: Some((content_type, data)),
                    progress: Some(progress),
                };
                let answer = send(rt, ep, call);
                bar.finish_and_clear();
                print(&answer?, show::applied);
            }
            RulesCommand::Get {
                rule_set,
                ids,
                after,
                limit,
            } => {
                let mut query = Vec::new();
                query.extend(rule_set.map(|n| format!("rule_set={}", segment(&n))));
                if !ids.is_empty() {
                    let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
                    query.push(format!("ids={}", ids.join(",")));
                }
                query.extend(after.map(|a| format!("after={a}")));
                query.extend(limit.map(|l| format!("limit={l}")));
                let path = if query.is_empty() {
                    "/v1/rules".to_string()
                } else {
                    format!("/v1/rules?{}", query.join("&"))
                };
                show_answer(Call::new(Method::GET, path), show::rules)?
            }
            RulesCommand::Add {
                file,
                expect_generation,
                rule_set,
            } => {
                let rules = read_rule_list(&file)?;
                let body = format!(
                    r#"{{"add": {}, "expected_generation": {}}}"#,
                    rules.get(),
                    json!(expect_generation)
                );
                let call = Call::new(Method::POST, batch_path(rule_set)).json(body);
                print(&send(rt, ep, call)?, show::applied);
            }
            RulesCommand::Delete {
                ids,
                expect_generation,
                rule_set,
            } => {
                let body = json!({"delete": ids, "expected_generation": expect_generation});
                let call = Call::new(Method::POST, batch_path(rule_set)).json(body.to_string());
                print(&send(rt, ep, call)?, show::applied);
            }
            RulesCommand::Counters { datapath, host } => {
                let mut query: Vec<String> = Vec::new();
                query.extend(datapath.map(|d| format!("datapath={}", segment(&d))));
                query.extend(host.map(|h| format!("host={}", segment(&h))));
                let path = if query.is_empty() {
                    "/v1/counters".to_string()
                } else {
                    format!("/v1/counters?{}", query.join("&"))
                };
                show_answer(Call::new(Method::GET, path), show::counters)?;
            }
            RulesCommand::Check { .. } => unreachable!("handled offline"),
        },
        Command::Datapath { command } => match command {
            DatapathCommand::Attach {
                name,
                backend,
                ports,
            } => {
                let backend = match backend {
                    BackendArg::Xdp => "xdp",
                    BackendArg::Emu => "emu",
                    BackendArg::Memory => "memory",
                };
                let interfaces: serde_json::Map<String, Value> = ports
                    .into_iter()
                    .map(|(p, i)| (p, Value::String(i)))
                    .collect();
                let body = json!({"name": name, "backend": backend, "interfaces": interfaces});
                let call = Call::new(Method::POST, "/v1/datapaths").json(body.to_string());
                let answer = send(rt, ep, call)?;
                print(&json!([answer]), show::datapaths);
            }
            DatapathCommand::Detach { name } => {
                send(
                    rt,
                    ep,
                    Call::new(Method::DELETE, format!("/v1/datapaths/{}", segment(&name))),
                )?;
                if !json {
                    dse::outln!("detached {name}");
                }
            }
            DatapathCommand::List => print(
                &send(rt, ep, Call::new(Method::GET, "/v1/datapaths"))?,
                show::datapaths,
            ),
        },
        Command::Cluster { command } => match command {
            ClusterCommand::Create {
                name,
                manager_version,
                baselines,
            } => {
                let management = if baselines { "baselines" } else { "image" };
                let body = json!({"name": name, "management": management, "manager_version": manager_version});
                let call = Call::new(Method::POST, "/v1/clusters").json(body.to_string());
                let answer = send(rt, ep, call)?;
                print(&json!([answer]), show::clusters);
            }
            ClusterCommand::List => print(
                &send(rt, ep, Call::new(Method::GET, "/v1/clusters"))?,
                show::clusters,
            ),
        },
        Command::Host { command } => match command {
            HostCommand::List => show_answer(fleet::host_list(), fleet::show_hosts)?,
            HostCommand::Set {
                host,
                rule_set,
                file,
            } => {
                let call = fleet::host_set(&host, &rule_set, file.as_deref())?;
                print(&send(rt, ep, call)?, fleet::show_set);
            }
            HostCommand::Add { cluster, file } => {
                let host = read_host(&file)?;
                let body = serde_json::to_string(&host).expect("a host serialises");
                let call = Call::new(
                    Method::POST,
                    format!("/v1/clusters/{}/hosts", segment(&cluster)),
                )
                .json(body);
                let answer = send(rt, ep, call)?;
                if json {
                    print(&answer, |_| {});
                } else {
                    dse::outln!(
                        "added host {} to cluster {cluster}",
                        show::text(&answer["name"])
                    );
                }
            }
        },
        Command::Fleet {
            command: FleetCommand::Status,
        } => show_answer(fleet::status(), fleet::show_status)?,
        Command::Depot { command } => match command {
            DepotCommand::Import { dir } => {
                let dir = std::fs::canonicalize(&dir)
                    .map_err(|e| Failure::invalid(format!("{}: {e}", dir.display())))?;
                let body = json!({"path": dir});
                let call = Call::new(Method::POST, "/v1/depot/import").json(body.to_string());
                let answer = send(rt, ep, call)?;
                print(&answer, show::manifests);
            }
            DepotCommand::List => {
                let all = send(rt, ep, Call::new(Method::GET, "/v1/depot"))?;
                let manifests: Vec<Value> = all
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| i["manifest"].clone())
                    .collect();
                if json {
                    print(&all, |_| {});
                } else {
                    show::manifests(&Value::Array(manifests));
                }
            }
            DepotCommand::Keygen { .. } | DepotCommand::Add { .. } => {
                unreachable!("run locally")
            }
        },
        Command::Image { command } => lifecycle::image(rt, ep, json, command)?,
        Command::Lifecycle { command } => lifecycle::lifecycle(rt, ep, json, command)?,
        Command::Dpu { command } => lifecycle::dpu(rt, ep, json, command)?,
        Command::Audit { last, after, limit } => {
            let path = match after {
                Some(after) => format!("/v1/audit?after={after}&limit={limit}"),
                None => format!("/v1/audit?last={}&limit={limit}", last.unwrap_or(20)),
            };
            print(&send(rt, ep, Call::new(Method::GET, path))?, show::audit);
        }
        Command::Stats { host } => {
            let path = match host {
                Some(h) => format!("/v1/stats?host={}", segment(&h)),
                None => "/v1/stats".into(),
            };
            print(&send(rt, ep, Call::new(Method::GET, path))?, show::stats);
        }
        Command::Status => {
            let health = send(rt, ep, Call::new(Method::GET, "/v1/health"))?;
            let datapaths = send(rt, ep, Call::new(Method::GET, "/v1/datapaths"))?;
            print(
                &json!({"health": health, "datapaths": datapaths}),
                show::status,
            );
        }
        Command::Demo { .. }
        | Command::Serve(_)
        | Command::Agent(_)
        | Command::Bench(_)
        | Command::Verify(_)
        | Command::Trace(_)
        | Command::Completions { .. }
        | Command::Man => unreachable!("run locally"),
    }
    Ok(())
}

/// A rule file's bytes and content type, checked locally only for being
/// readable: the daemon validates (and names the rule and field).
fn read_rules_file(path: &std::path::Path) -> Result<(&'static str, Bytes), Failure> {
    let data = std::fs::read(path)
        .map_err(|e| Failure::invalid(format!("reading {}: {e}", path.display())))?;
    let json = data
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{');
    let content_type = if json {
        "application/json"
    } else {
        "application/yaml"
    };
    Ok((content_type, Bytes::from(data)))
}

/// A YAML or JSON file as a JSON value, checked locally only for being
/// either: the daemon validates (and names the field).
fn read_document(path: &std::path::Path) -> Result<Value, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::invalid(format!("reading {}: {e}", path.display())))?;
    serde_norway::from_str(&text)
        .map_err(|e| Failure::invalid(format!("{}: not YAML or JSON: {e}", path.display())))
}

/// A host file (YAML or JSON) read as the inventory reads it, so that an
/// error names the file, the field, and where in the file it is.
fn read_host(path: &std::path::Path) -> Result<dse_control::lifecycle::Host, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::invalid(format!("reading {}: {e}", path.display())))?;
    // serde_norway's errors name the field and the line and column.
    serde_norway::from_str(&text).map_err(|e| Failure::invalid(format!("{}: {e}", path.display())))
}

/// The rules of a file that holds a rule set (`rules:` is used) or a list
/// of rules, as the JSON text of a list for a batch. A JSON file is only
/// checked for syntax and passed on as it is (the daemon validates): a
/// YAML parse or a JSON tree of 100k rules costs seconds and hundreds of
/// megabytes.
fn read_rule_list(path: &std::path::Path) -> Result<Box<RawValue>, Failure> {
    #[derive(serde::Deserialize)]
    struct Set<'a> {
        #[serde(borrow)]
        rules: Option<&'a RawValue>,
    }
    let not_rules = || {
        Failure::invalid(format!(
            "{}: expected a list of rules, or a document with `rules:`",
            path.display()
        ))
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::invalid(format!("reading {}: {e}", path.display())))?;
    let bad_json =
        |e: serde_json::Error| Failure::invalid(format!("{}: not valid JSON: {e}", path.display()));
    let list = match text.trim_start().as_bytes().first() {
        Some(b'[') => serde_json::from_str::<&RawValue>(&text).map_err(bad_json)?,
        Some(b'{') => serde_json::from_str::<Set>(&text)
            .map_err(bad_json)?
            .rules
            .ok_or_else(not_rules)?,
        _ => {
            let rules = match read_document(path)? {
                Value::Array(rules) => rules,
                Value::Object(mut m) => match m.remove("rules") {
                    Some(Value::Array(rules)) => rules,
                    _ => return Err(not_rules()),
                },
                _ => return Err(not_rules()),
            };
            return Ok(serde_json::value::to_raw_value(&rules).expect("JSON values serialise"));
        }
    };
    if !list.get().starts_with('[') {
        return Err(not_rules());
    }
    Ok(list.to_owned())
}

impl Failure {
    fn from_status(status: StatusCode, code: Option<&str>, message: String) -> Failure {
        let code = match status {
            StatusCode::CONFLICT if code == Some("generation_conflict") => exit::CONFLICT,
            StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNPROCESSABLE_ENTITY
            | StatusCode::CONFLICT => exit::INVALID,
            StatusCode::UNAUTHORIZED => exit::UNAUTHORIZED,
            StatusCode::NOT_FOUND => exit::NOT_FOUND,
            _ => exit::FAILED,
        };
        Failure { code, message }
    }
}

/// The path of a batch change of `rule_set` (the server's default unless
/// given).
fn batch_path(rule_set: Option<String>) -> String {
    match rule_set {
        Some(name) => format!("/v1/rules/batch?rule_set={}", segment(&name)),
        None => "/v1/rules/batch".to_string(),
    }
}
