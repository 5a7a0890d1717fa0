//! The dse rule set as an nftables rule set that forwards and drops the
//! same packets: one `netdev` ingress chain per port, its rules in dse's
//! order (priority descending, then id), `fwd to` for `output`, the port's
//! default as the chain's policy. A run of rules with the same mask becomes
//! one verdict-map lookup (what keeps 1M rules loadable), which is exact:
//! rules of one mask that differ in value never match the same packet, and
//! where two are equal the first in order wins, as in dse.

use super::fields::{
    Terminal, TranslateError, bound_ports, in_order, mask_of, port_range, terminal,
};
use dse_datapath::rule::{IpPrefix, Match, Rule, RuleSet};
use std::collections::BTreeMap;
use std::fmt::Write;

const PEER: &str = "nftables";

/// The nftables table the translation replaces.
pub const TABLE: &str = "dse_bench";

/// One matched field: its expression, its type in a map key, its value.
struct Field {
    expr: &'static str,
    kind: &'static str,
    value: String,
    interval: bool,
}

/// `set` as an `nft -f` script binding each port to the interface named in
/// `interfaces`. Running it replaces table `netdev dse_bench` whole.
///
/// # Errors
/// [`TranslateError`] naming the rule (and what in it) or the port that
/// the translation cannot carry.
pub fn translate(
    set: &RuleSet,
    interfaces: &BTreeMap<String, String>,
) -> Result<String, TranslateError> {
    let ports = bound_ports(PEER, set, interfaces)?;
    let ordered = in_order(set);
    let mut out = format!(
        "table netdev {TABLE} {{}}\ndelete table netdev {TABLE}\ntable netdev {TABLE} {{\n"
    );
    for (port, dev) in &ports {
        writeln!(
            out,
            "  chain out_{} {{\n    fwd to \"{dev}\"\n  }}",
            port.name
        )
        .ok();
    }
    let mut maps = String::new();
    let mut map_count = 0usize;
    for (port, dev) in &ports {
        let policy = match port.default {
            dse_datapath::rule::DefaultAction::Pass => "accept",
            dse_datapath::rule::DefaultAction::Drop => "drop",
        };
        writeln!(
            out,
            "  chain in_{name} {{\n    type filter hook ingress device \"{dev}\" priority 0; policy {policy};",
            name = port.name
        )
        .ok();
        let mine: Vec<&Rule> = ordered
            .iter()
            .copied()
            .filter(|r| r.matches.in_port.as_deref().is_none_or(|p| p == port.name))
            .collect();
        let mut i = 0;
        while i < mine.len() {
            let mask = mask_of(&mine[i].matches);
            let mut j = i + 1;
            while j < mine.len() && mask_of(&mine[j].matches) == mask {
                j += 1;
            }
            let run = &mine[i..j];
            // A run of empty matches: the first takes every packet.
            if run.len() == 1 || mask == mask_of(&Match::default()) {
                let (guard, fields) = fields_of(run[0])?;
                let matches: Vec<String> = fields
                    .iter()
                    .map(|f| format!("{} {}", f.expr, f.value))
                    .collect();
                let verdict = verdict(run[0], dev, false)?;
                writeln!(out, "    {guard}{} {verdict}", matches.join(" ")).ok();
            } else {
                map_count += 1;
                let name = format!("m{map_count}");
                let (guard, fields) = fields_of(run[0])?;
                let exprs: Vec<&str> = fields.iter().map(|f| f.expr).collect();
                let kinds: Vec<&str> = fields.iter().map(|f| f.kind).collect();
                let interval = fields.iter().any(|f| f.interval);
                write!(
                    maps,
                    "  map {name} {{\n    type {} : verdict\n{}    elements = {{ ",
                    kinds.join(" . "),
                    if interval { "    flags interval\n" } else { "" }
                )
                .ok();
                let mut seen = std::collections::HashSet::new();
                let mut first = true;
                for r in run {
                    let (_, fields) = fields_of(r)?;
                    let key: Vec<String> = fields.into_iter().map(|f| f.value).collect();
                    let key = key.join(" . ");
                    let verdict = verdict(r, dev, true)?;
                    // An equal key later in order is shadowed, as in dse.
                    if seen.insert(key.clone()) {
                        if !first {
                            maps.push_str(",\n      ");
                        }
                        first = false;
                        write!(maps, "{key} : {verdict}").ok();
                    }
                }
                maps.push_str(" }\n  }\n");
                writeln!(out, "    {guard}{} vmap @{name}", exprs.join(" . ")).ok();
            }
            i = j;
        }
        out.push_str("  }\n");
    }
    out.push_str(&maps);
    out.push_str("}\n");
    Ok(out)
}

/// The nftables verdict of `rule` arriving on device `dev`; in a map, an
/// output is a `goto` to the port's forwarding chain.
fn verdict(rule: &Rule, dev: &str, in_map: bool) -> Result<String, TranslateError> {
    Ok(match terminal(PEER, rule)? {
        Terminal::Output(p) => format!("goto out_{p}"),
        Terminal::Drop => "drop".into(),
        Terminal::Pass => "accept".into(),
        Terminal::Tx if in_map => {
            return Err(TranslateError::Rule {
                peer: PEER,
                rule: rule.id,
                what: "tx among rules of one mask is not translated".into(),
            });
        }
        Terminal::Tx => format!("fwd to \"{dev}\""),
    })
}

/// The rule's family guard (`meta protocol ip `, say) and its fields in a
/// fixed order.
fn fields_of(rule: &Rule) -> Result<(String, Vec<Field>), TranslateError> {
    let refuse = |what: &str| TranslateError::Rule {
        peer: PEER,
        rule: rule.id,
        what: what.into(),
    };
    let m: &Match = &rule.matches;
    if m.vlan.is_some() {
        return Err(refuse("match vlan is not translated"));
    }
    if m.tcp_flags.is_some() {
        return Err(refuse("match tcp_flags is not translated"));
    }
    if m.vni.is_some() {
        return Err(refuse("match vni is not translated"));
    }
    let mut fields = Vec::new();
    let mac = |expr, mac: &dse_datapath::rule::Mac| Field {
        expr,
        kind: "ether_addr",
        value: crate::lab::mac_text(mac.0),
        interval: false,
    };
    if let Some(a) = &m.eth_src {
        fields.push(mac("ether saddr", a));
    }
    if let Some(a) = &m.eth_dst {
        fields.push(mac("ether daddr", a));
    }
    let mut guard = String::new();
    if let Some(t) = m.eth_type {
        fields.push(Field {
            expr: "meta protocol",
            kind: "ether_type",
            value: format!("0x{:04x}", t.0),
            interval: false,
        });
    }
    let family = [&m.ip_src, &m.ip_dst]
        .into_iter()
        .flatten()
        .map(|p| p.addr.is_ipv4())
        .next();
    if let Some(v4) = family {
        if m.eth_type.is_none() {
            guard = if v4 {
                "meta protocol ip "
            } else {
                "meta protocol ip6 "
            }
            .into();
        }
        let prefix = |expr4, expr6, p: &IpPrefix| {
            let full = if v4 { 32 } else { 128 };
            Field {
                expr: if v4 { expr4 } else { expr6 },
                kind: if v4 { "ipv4_addr" } else { "ipv6_addr" },
                value: if p.len == full {
                    p.addr.to_string()
                } else {
                    format!("{}/{}", p.addr, p.len)
                },
                interval: p.len != full,
            }
        };
        if let Some(p) = &m.ip_src {
            fields.push(prefix("ip saddr", "ip6 saddr", p));
        }
        if let Some(p) = &m.ip_dst {
            fields.push(prefix("ip daddr", "ip6 daddr", p));
        }
    }
    if let Some(p) = m.ip_proto {
        fields.push(Field {
            expr: "meta l4proto",
            kind: "inet_proto",
            value: p.0.to_string(),
            interval: false,
        });
    }
    for (expr, port) in [("th sport", m.l4_src), ("th dport", m.l4_dst)] {
        let Some(port) = port else { continue };
        if !matches!(m.ip_proto.map(|p| p.0), Some(6 | 17)) {
            return Err(refuse("l4 ports are translated for TCP and UDP only"));
        }
        let (lo, hi) = port_range(port.value, port.mask)
            .ok_or_else(|| refuse("a port mask that is not a range"))?;
        fields.push(Field {
            expr,
            kind: "inet_service",
            value: if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            },
            interval: lo != hi,
        });
    }
    Ok((guard, fields))
}
