//! The API over a real Unix socket (and TCP with a token): bad input of
//! every kind gets a clear error and changes nothing, a second daemon is
//! refused, and the OpenAPI document and the code do not drift.

mod common;

use common::{Served, TempDir, config, rule_set_json};
use dse_control::api::routes;
use dse_control::client::{Endpoint, Method, StatusCode};
use dse_control::serve::{ServeError, serve};
use serde_json::Value;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

/// The desired generation and rule count, to show a refusal changed nothing.
fn state(s: &Served) -> (u64, usize) {
    let (status, v) = s.call(Method::GET, "/v1/rules", None);
    assert_eq!(status, StatusCode::OK);
    (
        v["generation"].as_u64().unwrap(),
        v["rules"]["rules"].as_array().map_or(0, Vec::len),
    )
}

fn refused(s: &Served, (status, v): (StatusCode, Value), want: StatusCode, says: &[&str]) {
    assert_eq!(status, want, "{v}");
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("a JSON error: {v}"));
    for s in says {
        assert!(msg.contains(s), "{msg:?} should mention {s:?}");
    }
    assert!(v["code"].is_string(), "{v}");
    let _ = s;
}

/// A bad request: what it is, the answer, the status wanted, and what the
/// error must say.
type Case<'a> = (&'a str, (StatusCode, Value), StatusCode, Vec<&'a str>);

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let s = Served::start("bad");
    let (status, v) = s.json(Method::PUT, "/v1/rules", &rule_set_json(3));
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["generation"], 1);
    let before = state(&s);
    assert_eq!(before, (1, 3));

    let cases: Vec<Case> = vec![
        (
            "malformed JSON",
            s.json(Method::PUT, "/v1/rules", r#"{"rules": [ {"id": 1,"#),
            StatusCode::BAD_REQUEST,
            vec!["request body"],
        ),
        (
            "malformed YAML",
            s.call(
                Method::PUT,
                "/v1/rules",
                Some(("application/yaml", b"rules: [ {id: 1, priority: \n  - ]".to_vec())),
            ),
            StatusCode::BAD_REQUEST,
            vec!["request body"],
        ),
        (
            "unknown field in a rule",
            s.json(
                Method::PUT,
                "/v1/rules",
                r#"{"ports": [{"name": "p0", "index": 0}], "rules": [{"id": 7, "priority": 1, "colour": "red", "actions": ["drop"]}]}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["rule 7", "colour"],
        ),
        (
            "invalid rule",
            s.json(
                Method::PUT,
                "/v1/rules",
                r#"{"ports": [{"name": "p0", "index": 0}], "rules": [{"id": 9, "priority": 1, "match": {"in_port": "nowhere"}, "actions": ["drop"]}]}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["rule 9", "in_port"],
        ),
        (
            "stale expected generation",
            s.json(Method::PUT, "/v1/rules?expected_generation=0", &rule_set_json(4)),
            StatusCode::CONFLICT,
            vec!["expected generation 0", "at generation 1"],
        ),
        (
            "oversized body",
            s.json(
                Method::PUT,
                "/v1/rules",
                // One byte over: the daemon sees the limit passed only
                // once the whole body is written, so it answers before it
                // closes and the client never meets a broken pipe.
                &format!(
                    r#"{{"rules": [], "pad": "{}"}}"#,
                    "x".repeat((1 << 20) + 1 - r#"{"rules": [], "pad": ""}"#.len())
                ),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            vec!["over the limit", "--max-body"],
        ),
        (
            "batch deleting a rule that does not exist",
            s.json(Method::POST, "/v1/rules/batch", r#"{"delete": [42]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["rule 42", "no rule with this id"],
        ),
        (
            "batch with an invalid rule",
            s.json(
                Method::POST,
                "/v1/rules/batch",
                r#"{"add": [{"id": 50, "priority": 1, "match": {"l4_dst": 80}, "actions": ["drop"]}]}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["rule 50", "l4_dst"],
        ),
        (
            "batch with a rule of the wrong shape",
            s.json(
                Method::POST,
                "/v1/rules/batch",
                r#"{"add": [{"id": 51, "priority": 1, "match": {"l4_dst": "http"}, "actions": ["drop"]}]}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["rule 51", "field `match.l4_dst`"],
        ),
        (
            "batch with a rule without an id",
            s.json(
                Method::POST,
                "/v1/rules/batch",
                r#"{"add": [{"id": 52, "priority": 1, "actions": ["drop"]}, {"priority": 1, "actions": ["drop"]}]}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["add[1]", "id"],
        ),
        (
            "batch with an unknown field",
            s.json(Method::POST, "/v1/rules/batch", r#"{"remove": [1]}"#),
            StatusCode::BAD_REQUEST,
            vec!["remove"],
        ),
        (
            "batch that does nothing",
            s.json(Method::POST, "/v1/rules/batch", r#"{}"#),
            StatusCode::BAD_REQUEST,
            vec!["nothing"],
        ),
        (
            "batch with a stale expected generation",
            s.json(
                Method::POST,
                "/v1/rules/batch",
                r#"{"delete": [1], "expected_generation": 5}"#,
            ),
            StatusCode::CONFLICT,
            vec!["expected generation 5"],
        ),
        (
            "an interface that does not exist",
            s.json(
                Method::POST,
                "/v1/datapaths",
                r#"{"name": "a", "backend": "emu", "interfaces": {"p0": "dse-no-such0"}}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["dse-no-such0", "does not exist"],
        ),
        (
            "a port the rules do not define",
            s.json(
                Method::POST,
                "/v1/datapaths",
                r#"{"name": "a", "backend": "emu", "interfaces": {"uplink": "lo"}}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["uplink", "p0, p1"],
        ),
        (
            "a bad datapath name",
            s.json(
                Method::POST,
                "/v1/datapaths",
                r#"{"name": "../x", "backend": "xdp", "interfaces": {"p0": "lo"}}"#,
            ),
            StatusCode::BAD_REQUEST,
            vec!["datapath name"],
        ),
        (
            "a memory datapath given an interface",
            s.json(
                Method::POST,
                "/v1/datapaths",
                r#"{"name": "a", "backend": "memory", "interfaces": {"p0": "lo"}}"#,
            ),
            StatusCode::BAD_REQUEST,
            vec!["memory datapath", "give no port=interface"],
        ),
        (
            "an emu datapath given no interface",
            s.json(
                Method::POST,
                "/v1/datapaths",
                r#"{"name": "a", "backend": "emu", "interfaces": {}}"#,
            ),
            StatusCode::BAD_REQUEST,
            vec!["at least one port=interface"],
        ),
        (
            "an unknown backend",
            s.json(
                Method::POST,
                "/v1/datapaths",
                r#"{"name": "a", "backend": "dpdk", "interfaces": {"p0": "lo"}}"#,
            ),
            StatusCode::BAD_REQUEST,
            vec!["dpdk"],
        ),
        (
            "detaching what does not exist",
            s.call(Method::DELETE, "/v1/datapaths/ghost", None),
            StatusCode::NOT_FOUND,
            vec!["ghost"],
        ),
        (
            "an endpoint that does not exist",
            s.call(Method::GET, "/v1/nothing", None),
            StatusCode::NOT_FOUND,
            vec!["/v1/nothing", "openapi.json"],
        ),
        (
            "the audit log both after a point and newest",
            s.call(Method::GET, "/v1/audit?after=2&last=5", None),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["after", "last", "not both"],
        ),
    ];
    for (what, answer, want, says) in cases {
        eprintln!("case: {what}");
        refused(&s, answer, want, &says);
        assert_eq!(state(&s), before, "{what} changed nothing");
    }
    // The refusals are in the audit log.
    let (_, log) = s.call(Method::GET, "/v1/audit?limit=1000", None);
    let results: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    assert!(results.iter().any(|r| r.contains("generation conflict")));
    assert!(results.iter().any(|r| r.contains("rule 42")));
}

#[test]
fn rules_apply_patch_and_dry_run() {
    let s = Served::start("apply");
    let (status, v) = s.json(Method::PUT, "/v1/rules?dry_run=true", &rule_set_json(2));
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (v["dry_run"].as_bool(), v["added"].as_u64()),
        (Some(true), Some(2))
    );
    assert_eq!(v["diff"]["added"].as_array().unwrap().len(), 2);
    assert_eq!(state(&s), (0, 0), "a dry run changes nothing");
    s.json(
        Method::PUT,
        "/v1/rules?expected_generation=0",
        &rule_set_json(2),
    );
    let (status, v) = s.json(
        Method::POST,
        "/v1/rules/batch",
        r#"{"add": [{"id": 100, "priority": 5, "actions": ["drop"]}], "delete": [1], "expected_generation": 1}"#,
    );
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["generation"].as_u64(),
            v["added"].as_u64(),
            v["removed"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    let (_, rules) = s.call(Method::GET, "/v1/rules", None);
    let ids: Vec<u64> = rules["rules"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [2, 100]);
    let (status, v) = s.json(Method::PUT, "/v1/rules?dry_run=true", &rule_set_json(3));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            v["added"].as_u64(),
            v["removed"].as_u64(),
            v["changed"].as_u64()
        ),
        (Some(2), Some(1), Some(0)),
        "{v}"
    );
}

#[test]
fn a_memory_datapath_runs_each_generation_and_counts_it() {
    let s = Served::start("memory");
    s.json(Method::PUT, "/v1/rules", &rule_set_json(2));
    let (status, v) = s.json(
        Method::POST,
        "/v1/datapaths",
        r#"{"name": "m", "backend": "memory", "interfaces": {}}"#,
    );
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(
        (&v["backend"], &v["state"]),
        (&"memory".into(), &"running".into()),
        "{v}"
    );
    assert_eq!(
        (v["generation"].as_u64(), v["in_sync"].as_bool()),
        (Some(1), Some(true)),
        "{v}"
    );
    s.json(Method::PUT, "/v1/rules", &rule_set_json(3));
    let (_, all) = s.call(Method::GET, "/v1/datapaths", None);
    let m = &all[0];
    assert_eq!(
        (m["generation"].as_u64(), m["installs"].as_u64()),
        (Some(2), Some(2)),
        "{all}"
    );
    assert_eq!(m["in_sync"], true, "{all}");
    let (status, counters) = s.call(Method::GET, "/v1/counters?datapath=m", None);
    assert_eq!(status, StatusCode::OK, "{counters}");
    assert_eq!(
        counters["m"].as_object().map(|c| c.len()),
        Some(3),
        "{counters}"
    );
    let (status, _) = s.call(Method::DELETE, "/v1/datapaths/m", None);
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[test]
fn the_socket_is_private_and_tcp_needs_the_token() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token_dir = TempDir::new("token");
    let token_file = token_dir.0.join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let s = Served::start_with("tcp", |c| {
        c.tcp = Some(addr);
        c.token_file = Some(token_file.clone());
    });
    let mode = std::fs::metadata(&s.config.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the socket is its owner's only");
    let tcp = |token: &str| Endpoint::Tcp {
        addr: addr.to_string(),
        token: token.into(),
    };
    // Wait for the TCP listener.
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let (status, v) = s.call_at(&tcp("wrong"), Method::GET, "/v1/health", None);
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{v}");
    assert!(v["error"].as_str().unwrap().contains("wrong"));
    let (status, _) = s.call_at(&tcp("s3cret-token"), Method::GET, "/v1/health", None);
    assert_eq!(status, StatusCode::OK);
    let (status, v) = s.call_at(
        &tcp("s3cret-token"),
        Method::PUT,
        "/v1/rules",
        Some(("application/json", rule_set_json(1).into_bytes())),
    );
    assert_eq!(status, StatusCode::OK, "{v}");
    // Without any Authorization header.
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    write!(
        stream,
        "GET /v1/rules HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("Bearer"), "{answer}");
    // The Unix socket needs no token.
    assert_eq!(s.call(Method::GET, "/v1/health", None).0, StatusCode::OK);
}

#[test]
fn a_second_daemon_is_refused_on_the_same_socket_or_store() {
    let s = Served::start("second");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let same_socket = rt.block_on(serve(s.config.clone(), async {}));
    assert!(
        matches!(same_socket, Err(ServeError::SocketInUse(_))),
        "{same_socket:?}"
    );
    assert!(
        same_socket
            .unwrap_err()
            .to_string()
            .contains("another dse serve"),
        "names the cause"
    );
    let other = TempDir::new("second-other");
    let mut same_store = config(&other);
    same_store.daemon.db = s.config.daemon.db.clone();
    let err = rt
        .block_on(serve(same_store.clone(), async {}))
        .expect_err("the store is locked");
    assert!(err.to_string().contains("another `dse serve`"), "{err}");
    assert!(
        !same_store.socket.exists(),
        "the refused daemon leaves no socket"
    );
    // The first still answers.
    assert_eq!(s.call(Method::GET, "/v1/health", None).0, StatusCode::OK);
}

/// The documented operations, as (METHOD, path).
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

/// Checks `value`'s keys against the schema `name` in the document: every
/// key documented, every required key present.
fn conforms(doc: &Value, name: &str, value: &Value) {
    let schema = &doc["components"]["schemas"][name];
    let props = schema["properties"].as_object().unwrap();
    for key in value.as_object().unwrap().keys() {
        assert!(props.contains_key(key), "{name}.{key} is not documented");
    }
    for req in schema["required"].as_array().into_iter().flatten() {
        assert!(
            value.get(req.as_str().unwrap()).is_some(),
            "{name}.{req} is missing"
        );
    }
}

#[test]
fn the_openapi_document_and_the_code_do_not_drift() {
    let doc: Value = serde_json::from_str(dse_control::api::OPENAPI).expect("the document is JSON");
    let code: BTreeSet<(String, String)> = routes()
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented(&doc), code, "routes and the document differ");
    // A fleet controller serves a part of the same document.
    for (m, p, _) in dse_control::api::fleet::fleet_routes() {
        assert!(
            code.contains(&(m.to_string(), p.to_string())),
            "the fleet's {m} {p} is not in the document"
        );
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"]["401"].is_object(),
                "{method} {path} documents its 401 (over TCP without the token)"
            );
        }
    }

    let s = Served::start("openapi");
    let (status, served) = s.call(Method::GET, "/openapi.json", None);
    assert_eq!((status, &served), (StatusCode::OK, &doc));
    // Every documented operation is routed (not the fallback, not 405).
    for (method, path) in documented(&doc) {
        let path = path
            .replace("{name}", "nothing-here")
            .replace("{serial}", "nothing-here")
            .replace("{host}", "nothing-here")
            .replace("{id}", "1");
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let (status, v) = s.call(m, &path, Some(("application/json", b"{}".to_vec())));
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_ne!(v["code"], "no_such_endpoint", "{method} {path} is routed");
    }
    // Answers conform to their schemas.
    let (_, applied) = s.json(Method::PUT, "/v1/rules?dry_run=true", &rule_set_json(1));
    conforms(&doc, "Applied", &applied);
    let (_, applied) = s.json(Method::PUT, "/v1/rules", &rule_set_json(1));
    conforms(&doc, "Applied", &applied);
    let (_, refused) = s.json(Method::PUT, "/v1/rules", "{");
    conforms(&doc, "Error", &refused);
    let code = refused["code"].clone();
    let codes = &doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"];
    assert!(
        codes.as_array().unwrap().contains(&code),
        "{code} is documented"
    );
    let (_, log) = s.call(Method::GET, "/v1/audit", None);
    conforms(&doc, "AuditEntry", &log[0]);
    // Every documented property of a batch is accepted.
    let batch = &doc["components"]["schemas"]["Batch"]["properties"];
    let mut body = serde_json::Map::new();
    for key in batch.as_object().unwrap().keys() {
        body.insert(
            key.clone(),
            match key.as_str() {
                "add" => serde_json::json!([{"id": 77, "priority": 1, "actions": ["drop"]}]),
                "delete" => serde_json::json!([]),
                _ => Value::Null,
            },
        );
    }
    let (status, v) = s.json(
        Method::POST,
        "/v1/rules/batch",
        &Value::Object(body).to_string(),
    );
    assert_eq!(status, StatusCode::OK, "{v}");
}

#[test]
fn metrics_show_the_generation_and_the_requests() {
    let s = Served::start("metrics");
    let (status, _) = s.json(Method::PUT, "/v1/rules", &rule_set_json(2));
    assert_eq!(status, StatusCode::OK);
    s.json(Method::PUT, "/v1/rules", "{");
    let (status, text) = s.call(Method::GET, "/metrics", None);
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().expect("the text format");
    assert!(text.contains("dse_desired_generation 1"), "{text}");
    assert!(
        text.contains(r#"dse_api_requests_total{method="PUT",route="/v1/rules",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"dse_api_requests_total{method="PUT",route="/v1/rules",status="400"} 1"#),
        "{text}"
    );
    assert!(text.contains("dse_api_request_seconds_bucket"), "{text}");
}

#[test]
fn the_inventory_through_the_api_keeps_the_cluster_rules() {
    let doc: Value = serde_json::from_str(dse_control::api::OPENAPI).unwrap();
    let s = Served::start("inventory");
    let dpu = |serial: &str, firmware: &str| {
        format!(
            r#"{{"serial": "{serial}", "vendor": "nvidia-bluefield", "model": "BlueField-3", "generation": 3, "hardware_revision": "B1", "firmware": "{firmware}", "os": "8.0.3", "datapath": "1.0"}}"#
        )
    };
    let cluster = r#"{"name": "c1", "management": "image", "manager_version": "8.0.3"}"#;
    let (status, created) = s.json(Method::POST, "/v1/clusters", cluster);
    assert_eq!(status, StatusCode::CREATED, "{created}");
    conforms(&doc, "Cluster", &created);
    let (status, again) = s.json(Method::POST, "/v1/clusters", cluster);
    assert_eq!(
        (status, again["code"].as_str()),
        (StatusCode::CONFLICT, Some("exists"))
    );
    let host = format!(
        r#"{{"name": "h1", "version": "8.0.3", "dpus": [{}, {}]}}"#,
        dpu("S1", "32.41.1000"),
        dpu("S2", "32.42.0")
    );
    let (status, refused) = s.json(Method::POST, "/v1/clusters/c1/hosts", &host);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    conforms(&doc, "Error", &refused);
    assert_eq!(refused["code"], "cluster_rules");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("host h1's two DPUs differ in firmware: 32.41.1000 on S1, 32.42.0 on S2"),
        "{refused}"
    );
    let (status, missing) = s.json(Method::POST, "/v1/clusters/nope/hosts", &host);
    assert_eq!(
        (status, missing["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, bad) = s.json(
        Method::POST,
        "/v1/clusters/c1/hosts",
        r#"{"name": "h1", "version": "8.x"}"#,
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("\"8.x\" is not a version"),
        "{bad}"
    );
    let host = format!(
        r#"{{"name": "h1", "version": "8.0.3", "dpus": [{}, {}]}}"#,
        dpu("S1", "32.41.1000"),
        dpu("S2", "32.41.1000")
    );
    let (status, added) = s.json(Method::POST, "/v1/clusters/c1/hosts", &host);
    assert_eq!(status, StatusCode::CREATED, "{added}");
    conforms(&doc, "Host", &added);
    let (status, all) = s.call(Method::GET, "/v1/clusters", None);
    assert_eq!(status, StatusCode::OK);
    conforms(&doc, "Cluster", &all[0]);
    conforms(&doc, "Dpu", &all[0]["hosts"][0]["dpus"][1]);
    assert_eq!(all[0]["hosts"][0]["dpus"].as_array().unwrap().len(), 2);
}
