//! The demo's report: what the hosts ended as, what each flow sent and lost
//! before, during and after the remediation, and whether the counters and
//! rules are what they must be after the upgrade.

use super::flows::Delivery;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Rule id -> packets, by DPU serial.
pub type Counters = BTreeMap<String, BTreeMap<u64, u64>>;

/// The rules' state: the desired generation, the rule count, a digest of
/// the rule set, and each DPU datapath's generation.
pub type RulesState = (u64, usize, String, BTreeMap<String, u64>);

/// What the demo saw.
pub struct Outcome<'a> {
    /// The finished remediation, as `GET /v1/remediations/{id}` has it.
    pub remediation: &'a Value,
    /// The cluster's compliance after it.
    pub compliance: &'a Value,
    /// The steady flows, by name.
    pub flows: &'a [(&'a str, Delivery)],
    /// When the demo started.
    pub started: Instant,
    /// When the remediation started and ended.
    pub remediation_span: (Instant, Instant),
    /// The counters before the remediation.
    pub before: &'a Counters,
    /// The counters after it.
    pub after: &'a Counters,
    /// Bulk datagrams that passed the meter.
    pub metered: u64,
    /// The rules before the remediation.
    pub rules_before: &'a RulesState,
    /// The rules after it.
    pub rules_after: &'a RulesState,
}

/// Prints the report and returns the promises that did not hold (none:
/// every host OK and compliant, nothing lost, the counters equal to the
/// traffic and never gone back, the rules unchanged).
pub fn report(o: &Outcome) -> Vec<String> {
    let (done, compliance, flows, t0) = (o.remediation, o.compliance, o.flows, o.started);
    let (remediation_start, remediation_end) = o.remediation_span;
    let (before, after, metered) = (o.before, o.after, o.metered);
    let (state_before, state_after) = (o.rules_before, o.rules_after);
    let mut broken = Vec::new();
    for h in done["hosts"].as_array().into_iter().flatten() {
        let took = h["finished_ms"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(h["started_ms"].as_u64().unwrap_or(0));
        let result = h["result"].as_str().unwrap_or("?");
        crate::outln!(
            "    host {}: {result} in {:.2} s",
            h["host"].as_str().unwrap_or("?"),
            took as f64 / 1000.0
        );
        if result != "OK" {
            broken.push(format!("host {} ended {result}", h["host"]));
        }
    }
    for h in compliance["hosts"].as_array().into_iter().flatten() {
        let status = h["status"].as_str().unwrap_or("?");
        crate::outln!(
            "    after: host {} {status}",
            h["host"].as_str().unwrap_or("?")
        );
        if status != "compliant" {
            broken.push(format!(
                "host {} is {status} after the remediation",
                h["host"]
            ));
        }
    }
    crate::outln!(
        "\n    {:<20} {:>26} {:>26} {:>26}",
        "flow",
        "before: sent / lost",
        "remediation: sent / lost",
        "after: sent / lost"
    );
    let origin = flows.iter().map(|(_, f)| f.started).min().unwrap_or(t0);
    let far = Instant::now() + Duration::from_secs(3600);
    for (name, f) in flows {
        let spans = [
            (origin, remediation_start),
            (remediation_start, remediation_end),
            (remediation_end, far),
        ];
        let cells: Vec<String> = spans
            .iter()
            .map(|(x, y)| {
                let (sent, lost) = f.in_span(*x, *y);
                format!("{sent} / {lost}")
            })
            .collect();
        crate::outln!(
            "    {name:<20} {:>26} {:>26} {:>26}",
            cells[0],
            cells[1],
            cells[2]
        );
        let lost = f.sent - f.delivered();
        if lost > 0 {
            broken.push(format!("{name}: {lost} datagrams lost"));
        }
    }
    let (ab, cd, nat) = (&flows[0].1, &flows[1].1, &flows[2].1);
    let c = |dpu: &str, rule: u64| {
        after
            .get(dpu)
            .and_then(|r| r.get(&rule))
            .copied()
            .unwrap_or(0)
    };
    let checks = [
        (
            "S1 rule 30 (Geneve encap) = A -> B sent",
            c("S1", 30),
            ab.sent,
        ),
        ("S1 rule 40 (VLAN push) = C -> D sent", c("S1", 40), cd.sent),
        (
            "S1 rule 20 (NAT) = service flow sent",
            c("S1", 20),
            nat.sent,
        ),
        (
            "S2 + S3 rule 32 (overlay -> B) = A -> B and service delivered",
            c("S2", 32) + c("S3", 32),
            ab.delivered() + nat.delivered(),
        ),
        (
            "S2 + S3 rule 41 (VLAN pop -> D) = C -> D delivered + metered passed",
            c("S2", 41) + c("S3", 41),
            cd.delivered() + metered,
        ),
    ];
    crate::outln!("\n    counters after the upgrade (kept through every reboot, none reset):");
    for (what, counted, want) in checks {
        let ok = counted == want;
        crate::outln!(
            "    {} {what}: {counted} counted, {want} expected",
            if ok { "ok  " } else { "FAIL" }
        );
        if !ok {
            broken.push(format!("{what}: {counted} counted, {want} expected"));
        }
    }
    for (dpu, rules) in before {
        for (id, n) in rules {
            if after.get(dpu).and_then(|r| r.get(id)).copied().unwrap_or(0) < *n {
                broken.push(format!("{dpu} rule {id}'s counter went back"));
            }
        }
    }
    let same_rules = state_before == state_after;
    crate::outln!(
        "    {} rules: generation {}, {} rules (digest {}) before and after; DPU datapaths at generations {:?}",
        if same_rules { "ok  " } else { "FAIL" },
        state_after.0,
        state_after.1,
        state_after.2,
        state_after.3
    );
    if !same_rules {
        broken.push(format!(
            "rules changed: {state_before:?} before, {state_after:?} after"
        ));
    }
    crate::outln!(
        "    time: remediation {:.2} s, demo {:.2} s",
        (remediation_end - remediation_start).as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    broken
}
