//! The dse rule set as OpenFlow flows (`ovs-ofctl add-flows` syntax) that
//! forward and drop the same packets on a bridge whose OpenFlow port
//! numbers are the dse port indexes plus one.
//!
//! OpenFlow also picks the highest priority, but its priorities are 16-bit
//! and it leaves the order of two overlapping flows of equal priority
//! undefined, where dse takes the lower id. So each distinct dse priority
//! becomes its rank, equal-priority rules must share a mask (then they
//! cannot overlap unless equal, and of equal ones the lower id is kept),
//! and a port's miss is a priority-0 flow.

use super::fields::{Terminal, TranslateError, bound_ports, in_order, mask_of, terminal};
use dse_datapath::rule::{DefaultAction, Match, Rule, RuleSet};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

const PEER: &str = "OpenFlow";

/// The OpenFlow port number of dse port index `index`.
pub fn of_port(index: u16) -> u32 {
    u32::from(index) + 1
}

/// `set` as flows, one per line, for a bridge whose ports are numbered by
/// [`of_port`] (every port must have an interface in `interfaces`).
///
/// # Errors
/// [`TranslateError`] naming the rule the translation cannot carry, or
/// the priorities OpenFlow cannot order as dse does.
pub fn translate(
    set: &RuleSet,
    interfaces: &BTreeMap<String, String>,
) -> Result<String, TranslateError> {
    let ports = bound_ports(PEER, set, interfaces)?;
    let index_of: BTreeMap<&str, u16> = set
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.index))
        .collect();
    let ordered = in_order(set);
    let mut ranks: BTreeMap<u32, u32> = BTreeMap::new();
    let mut masks: BTreeMap<u32, (String, u32)> = BTreeMap::new();
    for r in &ordered {
        let mask = mask_of(&r.matches);
        match masks.get(&r.priority) {
            Some((m, first)) if *m != mask => {
                return Err(TranslateError::Set {
                    peer: PEER,
                    what: format!(
                        "rules {first} and {} share priority {} but match different fields; \
                         OpenFlow leaves the order of such rules undefined",
                        r.id, r.priority
                    ),
                });
            }
            Some(_) => {}
            None => {
                masks.insert(r.priority, (mask, r.id));
            }
        }
        let next = ranks.len() as u32;
        ranks.entry(r.priority).or_insert(next);
    }
    let levels = ranks.len() as u32;
    if levels > 65_534 {
        return Err(TranslateError::Set {
            peer: PEER,
            what: format!("{levels} distinct priorities; OpenFlow has 65534 above the misses"),
        });
    }
    let mut out = String::new();
    let mut seen = HashSet::new();
    for r in &ordered {
        // `ordered` is by priority descending: rank 0 is the highest.
        let priority = levels - ranks[&r.priority];
        let actions = match terminal(PEER, r)? {
            Terminal::Output(p) => format!("output:{}", of_port(index_of[p])),
            Terminal::Drop => "drop".into(),
            Terminal::Pass => "LOCAL".into(),
            Terminal::Tx => "in_port".into(),
        };
        for m in matches_of(r, &index_of)? {
            let flow = format!("priority={priority},{m}");
            // An equal flow later in order is shadowed, as in dse.
            if seen.insert(flow.clone()) {
                writeln!(out, "{flow},actions={actions}").ok();
            }
        }
    }
    for (port, _) in ports {
        let miss = match port.default {
            DefaultAction::Drop => "drop",
            DefaultAction::Pass => "LOCAL",
        };
        writeln!(
            out,
            "priority=0,in_port={},actions={miss}",
            of_port(port.index)
        )
        .ok();
    }
    Ok(out)
}

/// The rule's match in `ovs-ofctl` syntax: two when it matches an IP
/// protocol of either family (OpenFlow needs the EtherType spelled out).
fn matches_of(rule: &Rule, index_of: &BTreeMap<&str, u16>) -> Result<Vec<String>, TranslateError> {
    let refuse = |what: &str| TranslateError::Rule {
        peer: PEER,
        rule: rule.id,
        what: what.into(),
    };
    let m: &Match = &rule.matches;
    if m.tcp_flags.is_some() {
        return Err(refuse("match tcp_flags is not translated"));
    }
    if m.vni.is_some() {
        return Err(refuse("match vni is not translated"));
    }
    let mut common = Vec::new();
    if let Some(p) = &m.in_port {
        common.push(format!("in_port={}", of_port(index_of[p.as_str()])));
    }
    if let Some(a) = &m.eth_src {
        common.push(format!("dl_src={}", crate::lab::mac_text(a.0)));
    }
    if let Some(a) = &m.eth_dst {
        common.push(format!("dl_dst={}", crate::lab::mac_text(a.0)));
    }
    match &m.vlan {
        Some(dse_datapath::rule::VlanMatch::Untagged) => {
            common.push("vlan_tci=0x0000/0x1000".into())
        }
        Some(dse_datapath::rule::VlanMatch::Vid(v)) => common.push(format!("dl_vlan={v}")),
        None => {}
    }
    let family = [&m.ip_src, &m.ip_dst]
        .into_iter()
        .flatten()
        .map(|p| p.addr.is_ipv4())
        .next();
    let types: Vec<u16> = match (m.eth_type, family) {
        (Some(t), _) => vec![t.0],
        (None, Some(true)) => vec![0x0800],
        (None, Some(false)) => vec![0x86dd],
        (None, None) if m.ip_proto.is_some() => vec![0x0800, 0x86dd],
        (None, None) => vec![],
    };
    if types.is_empty() {
        return Ok(vec![common.join(",")]);
    }
    let mut out = Vec::new();
    for t in types {
        let v4 = t == 0x0800;
        let mut f = common.clone();
        f.push(format!("dl_type=0x{t:04x}"));
        let (src, dst) = if v4 {
            ("nw_src", "nw_dst")
        } else {
            ("ipv6_src", "ipv6_dst")
        };
        for (name, p) in [(src, &m.ip_src), (dst, &m.ip_dst)] {
            if let Some(p) = p {
                f.push(format!("{name}={}/{}", p.addr, p.len));
            }
        }
        if let Some(p) = m.ip_proto {
            f.push(format!("nw_proto={}", p.0));
        }
        for (name, port) in [("tp_src", m.l4_src), ("tp_dst", m.l4_dst)] {
            let Some(port) = port else { continue };
            if !matches!(m.ip_proto.map(|p| p.0), Some(6 | 17)) {
                return Err(refuse("l4 ports are translated for TCP and UDP only"));
            }
            f.push(format!(
                "{name}=0x{:04x}/0x{:04x}",
                port.value & port.mask,
                port.mask
            ));
        }
        out.push(f.join(","));
    }
    Ok(out)
}
