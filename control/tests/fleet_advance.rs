//! The fleet remediation's decisions ([`advance`]), pure: hosts ordered in
//! journal order at most `parallel` at once; a host's result is its agent's
//! final answer to its current attempt; a host whose agent stays away past
//! the boot timeout is tried again while retries allow, then TIMED_OUT,
//! and the others go on.

use dse_control::fleet::remediation::{Ack, advance};
use dse_control::lifecycle::remediation::{HostResult, HostRun, Options, Remediation};
use std::collections::{BTreeMap, BTreeSet};

fn remediation(hosts: &[&str], parallel: usize, retries: u32) -> Remediation {
    let options = Options {
        parallel,
        retries,
        retry_delay_ms: 100,
        boot_timeout_ms: 1_000,
        ..Options::default()
    };
    serde_json::from_value(serde_json::json!({
        "id": 7,
        "cluster": "c1",
        "image": {"base_image": {"name": "esxi", "version": "8.0.4"}},
        "options": options,
        "who": "test",
        "started_ms": 0,
        "finished_ms": null,
        "hosts": hosts.iter().map(|h| serde_json::json!({
            "host": h, "result": "PENDING", "attempts": 0, "maintenance": false,
            "message": null, "plan": null, "steps": [], "started_ms": null, "finished_ms": null,
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn ack(host: &str, attempt: u32, result: HostResult) -> (String, Ack) {
    let run: HostRun = serde_json::from_value(serde_json::json!({
        "host": host, "result": result, "attempts": 1, "maintenance": false,
        "message": null, "plan": null, "steps": [], "started_ms": 1, "finished_ms": 2,
    }))
    .unwrap();
    (
        host.to_string(),
        Ack {
            id: 7,
            attempt,
            run,
            host: None,
        },
    )
}

fn live(hosts: &[&str]) -> BTreeSet<String> {
    hosts.iter().map(|h| h.to_string()).collect()
}

fn results(r: &Remediation) -> Vec<HostResult> {
    r.hosts.iter().map(|h| h.result).collect()
}

#[test]
fn hosts_go_in_order_at_most_parallel_at_once_and_end_on_their_agents_answers() {
    let mut r = remediation(&["h1", "h2", "h3"], 2, 1);
    let all = live(&["h1", "h2", "h3"]);
    let mut away = BTreeMap::new();
    let d = advance(&mut r, &BTreeMap::new(), &all, &mut away, 10);
    let ordered: Vec<&str> = d.orders.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(ordered, ["h1", "h2"]);
    assert!(d.orders.iter().all(|(_, o)| o.id == 7 && o.attempt == 1));
    use HostResult::*;
    assert_eq!(results(&r), [Running, Running, Pending]);

    // An answer to another remediation, or one not final, changes nothing.
    let mut other = ack("h1", 1, Ok);
    other.1.id = 6;
    let acks: BTreeMap<_, _> = [other, ack("h2", 1, Running)].into();
    let d = advance(&mut r, &acks, &all, &mut away, 20);
    assert_eq!(d, Default::default());
    assert_eq!(results(&r), [Running, Running, Pending]);

    // h1 ends: it is recorded and withdrawn, and h3 goes.
    let acks: BTreeMap<_, _> = [ack("h1", 1, Ok)].into();
    let d = advance(&mut r, &acks, &all, &mut away, 30);
    assert_eq!(d.withdrawn, ["h1"]);
    assert_eq!(d.orders.len(), 1);
    assert_eq!(d.orders[0].0, "h3");
    assert_eq!(results(&r), [Ok, Running, Running]);
    assert_eq!(r.finished_ms, None);

    let acks: BTreeMap<_, _> = [ack("h2", 1, Error), ack("h3", 1, Skipped)].into();
    advance(&mut r, &acks, &all, &mut away, 40);
    assert_eq!(results(&r), [Ok, Error, Skipped]);
    assert_eq!(r.finished_ms, Some(40));
}

#[test]
fn a_host_whose_agent_stays_away_is_tried_again_then_timed_out_and_the_others_go_on() {
    use HostResult::*;
    let mut r = remediation(&["h1", "h2"], 2, 1);
    let mut away = BTreeMap::new();
    let only_h2 = live(&["h2"]);
    advance(&mut r, &BTreeMap::new(), &only_h2, &mut away, 0);
    // Away from the first look (at 100), but within the boot timeout: it
    // waits.
    advance(&mut r, &BTreeMap::new(), &only_h2, &mut away, 100);
    advance(&mut r, &BTreeMap::new(), &only_h2, &mut away, 1_000);
    assert_eq!(results(&r), [Running, Running]);
    // Past it: another attempt, after the retry delay.
    advance(&mut r, &BTreeMap::new(), &only_h2, &mut away, 1_101);
    assert_eq!(results(&r), [RetryPending, Running]);
    assert!(
        r.hosts[0]
            .message
            .as_deref()
            .unwrap()
            .contains("unavailable")
    );
    let d = advance(&mut r, &BTreeMap::new(), &only_h2, &mut away, 1_150);
    assert!(d.orders.is_empty(), "the retry delay is kept");
    let d = advance(&mut r, &BTreeMap::new(), &only_h2, &mut away, 1_201);
    assert_eq!(d.orders.len(), 1);
    assert_eq!(d.orders[0].1.attempt, 2);
    // An answer to the first attempt no longer counts.
    let acks: BTreeMap<_, _> = [ack("h1", 1, Ok), ack("h2", 1, Ok)].into();
    advance(&mut r, &acks, &only_h2, &mut away, 1_300);
    assert_eq!(results(&r), [Running, Ok]);
    // Away past the timeout again, with no retry left: TIMED_OUT, its
    // order withdrawn, and the remediation ends.
    let d = advance(&mut r, &acks, &only_h2, &mut away, 2_301);
    assert_eq!(results(&r), [TimedOut, Ok]);
    assert_eq!(d.withdrawn, ["h1"]);
    assert_eq!(r.finished_ms, Some(2_301));
}
