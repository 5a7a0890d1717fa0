//! The whole pipeline on arbitrary frames against a rule set with every
//! action: it never panics, and a frame that leaves is at least a header long.
#![no_main]

use dse_datapath::pipeline::{Installed, Pipeline, Verdict};
use dse_datapath::{Frame, RuleSet};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const RULES: &str = r#"
ports: [{name: a, index: 0}, {name: b, index: 1, default: drop}]
meters: [{name: m, unit: bps, rate: 1000000, burst: 100000}]
rules:
  - {id: 1, priority: 90, match: {ip_proto: udp, l4_dst: 4789}, actions: [decap]}
  - {id: 2, priority: 90, match: {ip_proto: udp, l4_dst: 6081}, actions: [decap]}
  - {id: 3, priority: 80, match: {vni: 5}, actions: [{encap_geneve: {vni: 9, eth_src: '02:00:00:00:00:01', eth_dst: '02:00:00:00:00:02', ip_src: '2001:db8::1', ip_dst: '2001:db8::2', options: [{class: 1, type: 2, data: '01020304'}]}}, {output: b}]}
  - {id: 4, priority: 70, match: {ip_proto: tcp}, actions: [{set_ip_src: 10.9.9.9}, {set_l4_dst: 80}, {push_vlan: {vid: 7}}, {output: a}]}
  - {id: 5, priority: 70, match: {ip_proto: udp}, actions: [{set_ip_dst: '2001:db8::7'}, {set_l4_src: 1}, pop_vlan, {meter: m}, tx]}
  - {id: 6, priority: 60, match: {eth_type: ipv6}, actions: [{set_ip_dst: '2001:db8::8'}, {encap_vxlan: {vni: 1, eth_src: '02:00:00:00:00:01', eth_dst: '02:00:00:00:00:02', ip_src: 10.0.0.1, ip_dst: 10.0.0.2}}, pass]}
  - {id: 7, priority: 50, match: {vlan: 7}, actions: [pop_vlan, pop_vlan, {output: b}]}
"#;

fuzz_target!(|data: &[u8]| {
    static INSTALLED: OnceLock<Installed> = OnceLock::new();
    let inst = INSTALLED.get_or_init(|| Installed::build(1, &RuleSet::from_yaml(RULES).expect("valid rules")).expect("compiles"));
    thread_local! {
        // One pipeline for the whole run: its counter block is large to set up.
        static PIPELINE: std::cell::RefCell<Pipeline> = std::cell::RefCell::new(Pipeline::new(64));
    }
    let mut frame = Frame::new(data);
    let in_port = u16::from(data.first().copied().unwrap_or(0) & 1);
    let verdict = PIPELINE.with(|p| p.borrow_mut().process(inst, &mut frame, in_port, 0));
    match verdict {
        Verdict::Output(_) | Verdict::Tx | Verdict::Pass => assert!(frame.len() >= 14 || frame.len() == data.len()),
        Verdict::Drop(_) => {}
    }
});
