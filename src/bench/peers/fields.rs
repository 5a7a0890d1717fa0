//! What the peers' translations share: rule order, a rule's mask, its
//! terminal action, and the error that names a rule a peer cannot express.

use dse_datapath::rule::{Action, Match, Rule, RuleSet};
use std::collections::BTreeMap;

/// A rule set a peer cannot express as it stands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// A rule uses something the peer's translation does not carry.
    #[error("{peer}: rule {rule}: {what}")]
    Rule {
        /// `nftables` or `OpenFlow`.
        peer: &'static str,
        /// The rule's id.
        rule: u32,
        /// What it uses.
        what: String,
    },
    /// A port has no interface to forward to or from.
    #[error("{peer}: port {port:?} has no interface")]
    Unbound {
        /// `nftables` or `OpenFlow`.
        peer: &'static str,
        /// The port's name.
        port: String,
    },
    /// The rule set as a whole does not fit the peer.
    #[error("{peer}: {what}")]
    Set {
        /// `nftables` or `OpenFlow`.
        peer: &'static str,
        /// Why not.
        what: String,
    },
}

/// What a rule finally does with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Terminal<'a> {
    /// Out of this port.
    Output(&'a str),
    /// Dropped.
    Drop,
    /// To the host stack.
    Pass,
    /// Back out of the port it came in on.
    Tx,
}

/// The rule's terminal action, or what it uses that is not one (a rewrite,
/// an encapsulation, a meter: the peers' translations carry forwarding and
/// filtering only).
pub fn terminal<'r>(peer: &'static str, rule: &'r Rule) -> Result<Terminal<'r>, TranslateError> {
    let refuse = |what: String| TranslateError::Rule {
        peer,
        rule: rule.id,
        what,
    };
    match rule.actions.as_slice() {
        [Action::Output(p)] => Ok(Terminal::Output(p)),
        [Action::Drop] => Ok(Terminal::Drop),
        [Action::Pass] => Ok(Terminal::Pass),
        [Action::Tx] => Ok(Terminal::Tx),
        actions => {
            let names: Vec<String> = actions
                .iter()
                .map(|a| {
                    serde_json::to_value(a)
                        .ok()
                        .and_then(|v| match v {
                            serde_json::Value::String(s) => Some(s),
                            serde_json::Value::Object(m) => m.keys().next().cloned(),
                            _ => None,
                        })
                        .unwrap_or_default()
                })
                .collect();
            Err(refuse(format!(
                "actions [{}]: only one of output, drop, pass or tx is translated",
                names.join(", ")
            )))
        }
    }
}

/// The rules in the order a first-match peer must see them: priority
/// descending, then id ascending, as dse orders them.
pub fn in_order(set: &RuleSet) -> Vec<&Rule> {
    let mut rules: Vec<&Rule> = set.rules.iter().collect();
    rules.sort_by_key(|r| (std::cmp::Reverse(r.priority), r.id));
    rules
}

/// A rule's mask: which fields it matches and how wide, without values.
/// Two rules with equal masks and different values never match the same
/// packet (their prefixes and port ranges are then disjoint or equal).
pub fn mask_of(m: &Match) -> String {
    let prefix = |p: &Option<dse_datapath::rule::IpPrefix>| {
        p.as_ref().map(|p| {
            let family = if p.addr.is_ipv4() { 4 } else { 6 };
            (family, p.len)
        })
    };
    format!(
        "{}{}{}{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}{:?}",
        m.in_port.is_some(),
        m.eth_src.is_some(),
        m.eth_dst.is_some(),
        m.vlan.as_ref().map(|_| ()),
        m.eth_type.is_some(),
        prefix(&m.ip_src),
        prefix(&m.ip_dst),
        m.ip_proto.is_some(),
        m.l4_src.map(|p| p.mask),
        m.l4_dst.map(|p| p.mask),
        m.tcp_flags.map(|f| f.0.mask),
        m.vni.is_some()
    )
}

/// A masked port as the inclusive range it covers, if its mask is
/// contiguous high bits (what a range can express).
pub fn port_range(value: u16, mask: u16) -> Option<(u16, u16)> {
    if mask.leading_ones() + mask.trailing_zeros() != 16 {
        return None;
    }
    let lo = value & mask;
    Some((lo, lo | !mask))
}

/// The ports of `set` by name, with the interface each is bound to.
pub fn bound_ports<'a>(
    peer: &'static str,
    set: &'a RuleSet,
    interfaces: &'a BTreeMap<String, String>,
) -> Result<Vec<(&'a dse_datapath::rule::PortDef, &'a str)>, TranslateError> {
    set.ports
        .iter()
        .map(|p| {
            interfaces
                .get(&p.name)
                .map(|i| (p, i.as_str()))
                .ok_or_else(|| TranslateError::Unbound {
                    peer,
                    port: p.name.clone(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_only_for_contiguous_masks() {
        assert_eq!(port_range(7000, 0xffff), Some((7000, 7000)));
        assert_eq!(port_range(0x1234, 0xfff0), Some((0x1230, 0x123f)));
        assert_eq!(port_range(0, 0), Some((0, 0xffff)));
        assert_eq!(port_range(1, 0x0f0f), None);
    }
}
