//! Bad rule input is refused whole, with an error naming the rule and the field.

use dse_datapath::RuleSet;
use dse_datapath::compile::MAX_MASKS;

const PORTS: &str = "ports:\n  - {name: p0, index: 0}\n  - {name: p1, index: 1}\nmeters:\n  - {name: m, unit: pps, rate: 10, burst: 5}\n";

fn refused(rules: &str) -> String {
    let doc = format!("{PORTS}rules:\n{rules}");
    match RuleSet::from_yaml(&doc) {
        Ok(_) => panic!("accepted:\n{doc}"),
        Err(e) => e.to_string(),
    }
}

fn assert_names(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "error `{msg}` should mention `{p}`");
    }
}

#[test]
fn unknown_field() {
    let e = refused("  - {id: 7, priority: 1, match: {ip_sorc: 10.0.0.1}, actions: [drop]}\n");
    assert_names(&e, &["rule 7", "match", "ip_sorc"]);
}

#[test]
fn invalid_prefix() {
    assert_names(
        &refused("  - {id: 8, priority: 1, match: {ip_src: 10.0.0.0/33}, actions: [drop]}\n"),
        &["rule 8", "match.ip_src", "10.0.0.0/33"],
    );
    assert_names(
        &refused("  - {id: 9, priority: 1, match: {ip_dst: 10.0.0.1/8}, actions: [drop]}\n"),
        &["rule 9", "match.ip_dst", "bits set"],
    );
}

#[test]
fn port_out_of_range() {
    let e = RuleSet::from_yaml("ports:\n  - {name: big, index: 64}\nrules: []\n")
        .unwrap_err()
        .to_string();
    assert_names(&e, &["ports[0].index", "out of range"]);
    assert_names(
        &refused(
            "  - {id: 3, priority: 1, match: {ip_proto: udp, l4_dst: 70000}, actions: [drop]}\n",
        ),
        &["rule 3", "match.l4_dst", "70000"],
    );
}

#[test]
fn unknown_port() {
    assert_names(
        &refused("  - {id: 4, priority: 1, match: {in_port: nope}, actions: [drop]}\n"),
        &["rule 4", "match.in_port", "unknown port `nope`"],
    );
    assert_names(
        &refused("  - {id: 5, priority: 1, actions: [{output: nope}]}\n"),
        &["rule 5", "actions[0].output", "unknown port"],
    );
}

#[test]
fn missing_meter() {
    assert_names(
        &refused("  - {id: 6, priority: 1, actions: [{meter: ghost}, drop]}\n"),
        &["rule 6", "actions[0].meter", "ghost", "does not exist"],
    );
}

#[test]
fn duplicate_id() {
    assert_names(
        &refused(
            "  - {id: 2, priority: 1, actions: [drop]}\n  - {id: 2, priority: 3, actions: [pass]}\n",
        ),
        &["rule 2", "id", "duplicate"],
    );
}

#[test]
fn terminal_action_rules() {
    assert_names(
        &refused("  - {id: 1, priority: 1, actions: [{set_l4_dst: 1}]}\n"),
        &["rule 1", "actions[0]", "last action"],
    );
    assert_names(
        &refused("  - {id: 1, priority: 1, actions: [drop, pass]}\n"),
        &["rule 1", "actions[0]", "must come last"],
    );
}

#[test]
fn prerequisites() {
    assert_names(
        &refused("  - {id: 1, priority: 1, match: {l4_dst: 80}, actions: [drop]}\n"),
        &["rule 1", "match.l4_dst", "ip_proto"],
    );
    assert_names(
        &refused(
            "  - {id: 1, priority: 1, match: {ip_proto: udp, tcp_flags: '+syn'}, actions: [drop]}\n",
        ),
        &["match.tcp_flags", "tcp"],
    );
    assert_names(
        &refused(
            "  - {id: 1, priority: 1, match: {eth_type: ipv6, ip_src: 10.0.0.0/8}, actions: [drop]}\n",
        ),
        &["match.eth_type", "contradicts"],
    );
}

#[test]
fn too_many_masks_names_the_first_rule_over_the_limit() {
    // Each rule matches a different prefix length: one distinct mask each.
    let rules: String = (0..=MAX_MASKS)
        .map(|i| {
            format!(
                "  - {{id: {}, priority: {}, match: {{ip_src: 0.0.0.0/{}}}, actions: [drop]}}\n",
                100 + i,
                1000 - i,
                i
            )
        })
        .collect();
    let doc = format!("{PORTS}rules:\n{rules}");
    let set = RuleSet::from_yaml(&doc).expect("validates: the mask limit is the compiler's");
    let e = dse_datapath::compile(&set).unwrap_err().to_string();
    assert_names(
        &e,
        &[&format!("rule {}", 100 + MAX_MASKS), "match", "distinct"],
    );
}

#[test]
fn json_errors_name_the_rule_too() {
    let e = RuleSet::from_json(r#"{"ports": [{"name": "p0", "index": 0}], "rules": [{"id": 11, "priority": 1, "match": {"vlan": 5000}, "actions": ["drop"]}]}"#).unwrap_err().to_string();
    assert_names(&e, &["rule 11", "match.vlan", "5000"]);
}

#[test]
fn round_trips_through_yaml() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.yaml"))
        .unwrap();
    let set = RuleSet::from_yaml(&doc).unwrap();
    assert_eq!(RuleSet::from_yaml(&set.to_yaml()).unwrap(), set);
}

/// serde reads a list as a struct's fields in order; a rule file never is.
#[test]
fn lists_where_mappings_belong_are_refused_at_any_depth() {
    let cases = [
        (
            "a port",
            "ports[1]",
            r#"{"ports": [{"name": "p0", "index": 0}, ["p1", 1]], "rules": []}"#,
        ),
        (
            "a meter",
            "meters[0]",
            r#"{"ports": [], "meters": [["m", "pps", 10, 5]], "rules": []}"#,
        ),
        (
            "a rule",
            "rules[0]",
            r#"{"ports": [], "rules": [[3, 1, {}, ["drop"]]]}"#,
        ),
        (
            "a match",
            "rule 4, field `match`",
            r#"{"ports": [], "rules": [{"id": 4, "priority": 1, "match": ["p0"], "actions": ["drop"]}]}"#,
        ),
        (
            "push_vlan's parameters",
            "rule 5, field `actions[0].push_vlan`",
            r#"{"ports": [{"name": "p0", "index": 0}], "rules": [{"id": 5, "priority": 1, "match": {}, "actions": [{"push_vlan": [100, 0, 33024]}, {"output": "p0"}]}]}"#,
        ),
        (
            "encap_vxlan's parameters",
            "rule 6, field `actions[0].encap_vxlan`",
            r#"{"ports": [{"name": "p0", "index": 0}], "rules": [{"id": 6, "priority": 1, "match": {}, "actions": [{"encap_vxlan": [7, "02:00:00:00:00:01", "02:00:00:00:00:02", "192.0.2.1", "192.0.2.2"]}, {"output": "p0"}]}]}"#,
        ),
    ];
    for (what, names, json) in cases {
        // The fast parse, the checked one, and YAML (JSON is YAML) alike.
        let errors = [
            RuleSet::parse_json_bytes(json.as_bytes()).map(|_| ()),
            RuleSet::from_json(json).map(|_| ()),
            RuleSet::from_yaml(json).map(|_| ()),
        ];
        for e in errors {
            let e = e.expect_err(what).to_string();
            assert_names(&e, &[names, "a mapping of fields"]);
        }
    }
}
