//! Whole-set checks: references, uniqueness, ranges and match prerequisites.

use super::value::decode_hex;
use super::*;
use crate::wire::{ethertype, ipproto};
use std::collections::HashSet;

impl RuleSet {
    /// Checks everything a compiler relies on.
    ///
    /// # Errors
    /// The first problem found, naming the rule id (or port or meter) and the field.
    pub fn validate(&self) -> Result<(), RuleError> {
        let mut names = HashSet::new();
        let mut indices = HashSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            crate::name::check("port name", &p.name)
                .map_err(|e| RuleError::doc(format!("ports[{i}].name"), e.to_string()))?;
            if !names.insert(p.name.as_str()) {
                return Err(RuleError::doc(
                    format!("ports[{i}].name"),
                    format!("duplicate port name `{}`", p.name),
                ));
            }
            if p.index >= MAX_PORTS {
                return Err(RuleError::doc(
                    format!("ports[{i}].index"),
                    format!(
                        "port `{}`: index {} out of range (0 to {})",
                        p.name,
                        p.index,
                        MAX_PORTS - 1
                    ),
                ));
            }
            if !indices.insert(p.index) {
                return Err(RuleError::doc(
                    format!("ports[{i}].index"),
                    format!("port `{}`: index {} used twice", p.name, p.index),
                ));
            }
        }
        if self.meters.len() > MAX_METERS {
            return Err(RuleError::doc(
                "meters",
                format!("{} meters, at most {MAX_METERS}", self.meters.len()),
            ));
        }
        let mut meters = HashSet::new();
        for (i, m) in self.meters.iter().enumerate() {
            crate::name::check("meter name", &m.name)
                .map_err(|e| RuleError::doc(format!("meters[{i}].name"), e.to_string()))?;
            if !meters.insert(m.name.as_str()) {
                return Err(RuleError::doc(
                    format!("meters[{i}].name"),
                    format!("duplicate meter name `{}`", m.name),
                ));
            }
            if m.rate == 0 || m.burst == 0 {
                return Err(RuleError::doc(
                    format!("meters[{i}]"),
                    format!("meter `{}`: rate and burst must be above 0", m.name),
                ));
            }
            // The token arithmetic works in nano-tokens in 64 bits.
            if m.burst > 1 << 34 || m.rate > 1 << 40 {
                return Err(RuleError::doc(
                    format!("meters[{i}]"),
                    format!("meter `{}`: rate or burst too large", m.name),
                ));
            }
        }
        for r in &self.rules {
            self.validate_match(r)?;
            self.validate_actions(r, &meters)?;
        }
        self.validate_ids()
    }

    /// Refuses a duplicate rule id, naming both rules. Sorting the ids
    /// (nearly always in order already: linear) costs far less than a
    /// million hash-set inserts.
    fn validate_ids(&self) -> Result<(), RuleError> {
        let mut ids: Vec<u32> = self.rules.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        let Some(dup) = ids.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]) else {
            return Ok(());
        };
        let mut at = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.id == dup)
            .map(|(i, _)| i);
        let (first, second) = (at.next().unwrap_or(0), at.next().unwrap_or(0));
        Err(RuleError::rule(
            dup,
            "id",
            format!("duplicate id (rules[{first}] and rules[{second}])"),
        ))
    }

    fn validate_match(&self, r: &Rule) -> Result<(), RuleError> {
        let m = &r.matches;
        if let Some(p) = &m.in_port
            && self.port(p).is_none()
        {
            return Err(RuleError::rule(
                r.id,
                "match.in_port",
                format!("unknown port `{p}`"),
            ));
        }
        let v4 = |p: &Option<IpPrefix>| p.map(|p| p.addr.is_ipv4());
        let family = match (v4(&m.ip_src), v4(&m.ip_dst)) {
            (Some(a), Some(b)) if a != b => {
                return Err(RuleError::rule(
                    r.id,
                    "match.ip_dst",
                    "ip_src and ip_dst are of different address families",
                ));
            }
            (a, b) => a.or(b),
        };
        if let (Some(is_v4), Some(t)) = (family, m.eth_type) {
            let want = if is_v4 {
                ethertype::IPV4
            } else {
                ethertype::IPV6
            };
            if t.0 != want {
                return Err(RuleError::rule(
                    r.id,
                    "match.eth_type",
                    format!("{t} contradicts the address family of the IP match"),
                ));
            }
        }
        if let (Some(t), Some(_)) = (m.eth_type, m.ip_proto)
            && t.0 != ethertype::IPV4
            && t.0 != ethertype::IPV6
        {
            return Err(RuleError::rule(
                r.id,
                "match.ip_proto",
                format!("needs an IP eth_type, not {t}"),
            ));
        }
        let l4 = matches!(
            m.ip_proto.map(|p| p.0),
            Some(ipproto::TCP | ipproto::UDP | ipproto::ICMP | ipproto::ICMPV6)
        );
        for (name, set) in [
            ("match.l4_src", m.l4_src.is_some()),
            ("match.l4_dst", m.l4_dst.is_some()),
        ] {
            if set && !l4 {
                return Err(RuleError::rule(
                    r.id,
                    name,
                    "needs ip_proto tcp, udp, icmp or icmpv6",
                ));
            }
        }
        if m.tcp_flags.is_some() && m.ip_proto.map(|p| p.0) != Some(ipproto::TCP) {
            return Err(RuleError::rule(
                r.id,
                "match.tcp_flags",
                "needs ip_proto tcp",
            ));
        }
        if let Some(vni) = m.vni
            && vni >= 1 << 24
        {
            return Err(RuleError::rule(
                r.id,
                "match.vni",
                format!("VNI {vni} out of range (0 to 16777215)"),
            ));
        }
        Ok(())
    }

    fn validate_actions(&self, r: &Rule, meters: &HashSet<&str>) -> Result<(), RuleError> {
        let n = r.actions.len();
        if n == 0 {
            return Err(RuleError::rule(
                r.id,
                "actions",
                "empty: end with output, drop, pass, tx or decap",
            ));
        }
        if n > MAX_ACTIONS {
            return Err(RuleError::rule(
                r.id,
                "actions",
                format!("{n} actions, at most {MAX_ACTIONS}"),
            ));
        }
        for (i, a) in r.actions.iter().enumerate() {
            // Formatted only on error: validation runs over every action of a million rules.
            let field = || format!("actions[{i}]");
            let last = i + 1 == n;
            if a.is_terminal() != last {
                let reason = if last {
                    "the last action must be output, drop, pass, tx or decap"
                } else {
                    "a terminal action (output, drop, pass, tx, decap) must come last"
                };
                return Err(RuleError::rule(r.id, field(), reason));
            }
            match a {
                Action::Output(p) if self.port(p).is_none() => {
                    return Err(RuleError::rule(
                        r.id,
                        format!("{}.output", field()),
                        format!("unknown port `{p}`"),
                    ));
                }
                Action::Meter(m) if !meters.contains(m.as_str()) => {
                    return Err(RuleError::rule(
                        r.id,
                        format!("{}.meter", field()),
                        format!("meter `{m}` does not exist"),
                    ));
                }
                Action::PushVlan(v) => {
                    if !(1..=4094).contains(&v.vid) {
                        return Err(RuleError::rule(
                            r.id,
                            format!("{}.push_vlan.vid", field()),
                            format!("VLAN id {} out of range (1 to 4094)", v.vid),
                        ));
                    }
                    if v.pcp > 7 {
                        return Err(RuleError::rule(
                            r.id,
                            format!("{}.push_vlan.pcp", field()),
                            format!("PCP {} out of range (0 to 7)", v.pcp),
                        ));
                    }
                    if v.tpid != ethertype::VLAN && v.tpid != ethertype::QINQ {
                        return Err(RuleError::rule(
                            r.id,
                            format!("{}.push_vlan.tpid", field()),
                            format!("TPID {:#06x} is neither 0x8100 nor 0x88a8", v.tpid),
                        ));
                    }
                }
                Action::EncapVxlan(e) => {
                    validate_encap(r.id, &format!("{}.encap_vxlan", field()), e, false)?
                }
                Action::EncapGeneve(e) => {
                    validate_encap(r.id, &format!("{}.encap_geneve", field()), e, true)?
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn validate_encap(rule: u32, field: &str, e: &Encap, geneve: bool) -> Result<(), RuleError> {
    if e.vni >= 1 << 24 {
        return Err(RuleError::rule(
            rule,
            format!("{field}.vni"),
            format!("VNI {} out of range (0 to 16777215)", e.vni),
        ));
    }
    if e.ip_src.is_ipv4() != e.ip_dst.is_ipv4() {
        return Err(RuleError::rule(
            rule,
            format!("{field}.ip_dst"),
            "ip_src and ip_dst are of different address families",
        ));
    }
    if !geneve && !e.options.is_empty() {
        return Err(RuleError::rule(
            rule,
            format!("{field}.options"),
            "only Geneve carries options",
        ));
    }
    let mut total = 0;
    for (i, o) in e.options.iter().enumerate() {
        let data = decode_hex(&o.data).map_err(|reason| {
            RuleError::rule(rule, format!("{field}.options[{i}].data"), reason)
        })?;
        if !data.len().is_multiple_of(4) || data.len() > 124 {
            return Err(RuleError::rule(
                rule,
                format!("{field}.options[{i}].data"),
                format!("{} bytes: must be a multiple of 4, at most 124", data.len()),
            ));
        }
        total += 4 + data.len();
    }
    if total > MAX_GENEVE_OPTIONS {
        return Err(RuleError::rule(
            rule,
            format!("{field}.options"),
            format!("{total} bytes of options, at most {MAX_GENEVE_OPTIONS}"),
        ));
    }
    Ok(())
}

/// Encodes an encap action's Geneve options as TLVs.
pub(crate) fn encode_options(e: &Encap) -> Vec<u8> {
    let mut out = Vec::new();
    for o in &e.options {
        let data = decode_hex(&o.data).expect("validated");
        crate::wire::geneve::encode_option(&mut out, o.class, o.kind, &data);
    }
    out
}
