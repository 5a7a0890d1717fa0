//! Hostile clients against the API: JSON arrays where objects belong (400
//! for a body, 422 `invalid_rules` inside a rule set), bad
//! query strings and methods, a depot import of a directory that holds no
//! depot, connections that send nothing or half a header, and bodies whose
//! `Content-Length` is over the limit. Each is refused with the documented
//! JSON error, and nothing changes.

mod common;

use common::Served;
use dse_control::client::{Method, StatusCode};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn refused(what: &str, (status, v): (StatusCode, Value), want: StatusCode, says: &str) {
    assert_eq!(status, want, "{what}: {v}");
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: a JSON error: {v}"));
    assert!(v["code"].is_string(), "{what}: {v}");
    assert!(msg.contains(says), "{what}: {msg:?} should say {says:?}");
}

#[test]
fn arrays_bad_queries_and_empty_depots_are_refused_with_json_errors() {
    let keys = std::env::temp_dir().join(format!("dse-hostile-keys-{}", std::process::id()));
    // Any valid key: the directory holds no manifest for it to check.
    std::fs::write(&keys, format!("k1 {}\n", "11".repeat(32))).unwrap();
    let s = Served::start_with("hostile-json", |c| {
        c.daemon.depot.trusted_keys = Some(keys.clone());
    });
    let clusters = s.call(Method::GET, "/v1/clusters", None);
    let cases = [
        (
            "a cluster as an array",
            s.json(Method::POST, "/v1/clusters", r#"["c9", "image", "8.0.3"]"#),
            StatusCode::BAD_REQUEST,
            "expected a mapping of fields (a JSON object)",
        ),
        (
            "an emulation as an array",
            s.json(Method::PUT, "/v1/dpus/S1/emulation", "[]"),
            StatusCode::BAD_REQUEST,
            "expected a mapping of fields (a JSON object)",
        ),
        (
            "a rule set as an array",
            s.json(Method::PUT, "/v1/rules", r#"[[], [], []]"#),
            StatusCode::BAD_REQUEST,
            "mapping",
        ),
        (
            "a rule as an array",
            s.json(
                Method::PUT,
                "/v1/rules",
                r#"{"ports": [], "rules": [[1, 10, {}, ["drop"]]]}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "rules[0]",
        ),
        (
            "a rule's match as an array",
            s.json(
                Method::PUT,
                "/v1/rules",
                r#"{"ports": [], "rules": [{"id": 1, "priority": 10, "match": ["p0"], "actions": ["drop"]}]}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "rule 1, field `match`",
        ),
        (
            "a port as an array",
            s.json(Method::PUT, "/v1/rules", r#"{"ports": [["p0", 0]], "rules": []}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ports[0]",
        ),
        (
            "a batch rule's match as an array",
            s.json(
                Method::POST,
                "/v1/rules/batch",
                r#"{"add": [{"id": 1, "priority": 10, "match": [null], "actions": ["drop"]}]}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "rule 1, field `match`",
        ),
        (
            "a batch rule as an array",
            s.json(Method::POST, "/v1/rules/batch", r#"{"add": [[1, 10]]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
            "add[0]",
        ),
        (
            "a cluster's host as an array",
            s.json(
                Method::POST,
                "/v1/clusters",
                r#"{"name": "c8", "management": "image", "manager_version": "8.0.3",
                    "hosts": [["h1", "8.0.3", []]]}"#,
            ),
            StatusCode::BAD_REQUEST,
            "hosts[0]",
        ),
        (
            "a host's DPU as an array",
            s.json(
                Method::POST,
                "/v1/clusters/c1/hosts",
                r#"{"name": "h9", "version": "8.0.3", "dpus": [["S9", "nvidia_bluefield",
                    "BlueField-3", 3, "A1", "24.1", "8.0.3", "1.0.0"]]}"#,
            ),
            StatusCode::BAD_REQUEST,
            "dpus[0]",
        ),
        (
            "an image's pick as an array",
            s.json(
                Method::PUT,
                "/v1/clusters/c1/image",
                r#"{"base_image": ["esxi", "8.0.3"]}"#,
            ),
            StatusCode::BAD_REQUEST,
            "base_image",
        ),
        (
            "an emulation's faults as an array",
            s.json(
                Method::PUT,
                "/v1/dpus/S1/emulation",
                r#"{"faults": [1, 0, 0, false]}"#,
            ),
            StatusCode::BAD_REQUEST,
            "faults",
        ),
        (
            "an action's parameters as an array",
            s.json(
                Method::PUT,
                "/v1/rules",
                r#"{"ports": [{"name": "p0", "index": 0}], "rules": [{"id": 4, "priority": 10,
                    "match": {}, "actions": [{"push_vlan": [100]}, {"output": "p0"}]}]}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "push_vlan",
        ),
        (
            "a batch action's parameters as an array",
            s.json(
                Method::POST,
                "/v1/rules/batch",
                r#"{"add": [{"id": 5, "priority": 10, "match": {},
                    "actions": [{"push_vlan": [100]}, "drop"]}]}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "push_vlan",
        ),
        (
            "a query string that does not parse",
            s.call(Method::GET, "/v1/rules?limit=lots", None),
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            "a method the endpoint does not take",
            s.call(Method::DELETE, "/v1/rules", None),
            StatusCode::METHOD_NOT_ALLOWED,
            "DELETE /v1/rules: no such operation",
        ),
        (
            "a depot import of a directory without a depot",
            s.json(
                Method::POST,
                "/v1/depot/import",
                r#"{"path": "/proc/self"}"#,
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no depot here",
        ),
    ];
    for (what, answer, want, says) in cases {
        refused(what, answer, want, says);
    }
    assert_eq!(
        s.call(Method::GET, "/v1/clusters", None),
        clusters,
        "nothing created"
    );
    let (_, depot) = s.call(Method::GET, "/v1/depot", None);
    assert_eq!(depot, serde_json::json!([]), "nothing imported");
    let _ = std::fs::remove_file(&keys);
}

/// Reads until the daemon closes the connection; returns what it sent and
/// how long that took.
fn until_closed(mut c: UnixStream) -> (String, Duration) {
    let started = Instant::now();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn silent_and_half_sent_requests_are_closed_after_the_header_timeout() {
    let s = Served::start_with("hostile-slow", |c| {
        c.limits.header_timeout = Duration::from_secs(1);
    });
    let silent = UnixStream::connect(&s.config.socket).unwrap();
    let mut half = UnixStream::connect(&s.config.socket).unwrap();
    half.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // One request answered, then nothing: the kept-alive connection is
    // closed by the same timeout.
    let mut idle = UnixStream::connect(&s.config.socket).unwrap();
    idle.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    for (what, c, answered) in [
        ("silent", silent, false),
        ("half a header", half, false),
        ("idle after an answer", idle, true),
    ] {
        let (got, took) = until_closed(c);
        assert!(
            took < Duration::from_secs(10),
            "{what}: closed after the 1 s header timeout, not {took:?}"
        );
        assert_eq!(got.starts_with("HTTP/1.1 200"), answered, "{what}: {got:?}");
    }
    // And the daemon answers the next client.
    assert_eq!(s.call(Method::GET, "/v1/health", None).0, StatusCode::OK);
}

#[test]
fn a_body_over_the_limit_is_refused_by_its_length_before_it_is_read() {
    let s = Served::start("hostile-body");
    // 600 MB announced on a daemon whose limit is 1 MiB: the answer comes
    // after the headers alone.
    let mut c = UnixStream::connect(&s.config.socket).unwrap();
    c.write_all(
        b"PUT /v1/rules HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 600000000\r\n\r\n{",
    )
    .unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    let n = c.read(&mut buf).unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
}
