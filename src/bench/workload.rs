//! The bench's rule sets and the traffic they are made for.
//!
//! The traffic is `flows` UDP flows from [`SRC_IP`] to [`DST_IP`] port
//! [`DPORT`], source ports from [`SPORT_BASE`], arriving on port `pa`. One
//! exact rule per flow forwards it to port `pb`. The rest of the rules are
//! filler the traffic never hits: in the same mask as the flows' rules, and
//! in `masks - 1` other masks (destination prefixes of other lengths, to
//! port 7001) at a higher priority, so that every lookup searches every
//! mask. Misses drop.

use dse_datapath::rule::{Action, DefaultAction, IpPrefix, Masked, Match, PortDef, Rule, RuleSet};
use std::net::{IpAddr, Ipv4Addr};

/// The flows' IPv4 source.
pub const SRC_IP: [u8; 4] = [10, 90, 0, 1];
/// The flows' IPv4 destination.
pub const DST_IP: [u8; 4] = [10, 90, 1, 1];
/// The flows' UDP destination port.
pub const DPORT: u16 = 7000;
/// The first flow's UDP source port.
pub const SPORT_BASE: u16 = 10_000;
/// The most masks a workload may ask for (filler prefixes /31 down to /16).
pub const MAX_MASKS: usize = 16;

/// One rule set's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Workload {
    /// Rules in all.
    pub rules: usize,
    /// Distinct masks (1 to [`MAX_MASKS`]).
    pub masks: usize,
    /// Flows in the traffic, each with its own rule.
    pub flows: u16,
}

impl Workload {
    /// Checks the shape: at least one rule per flow, 1 to [`MAX_MASKS`]
    /// masks, and at least one filler rule per extra mask.
    ///
    /// # Errors
    /// A message naming what is out of range.
    pub fn check(&self) -> Result<(), String> {
        if self.flows == 0 {
            return Err("a workload needs at least one flow".into());
        }
        if !(1..=MAX_MASKS).contains(&self.masks) {
            return Err(format!(
                "{} masks asked for; the bench makes 1 to {MAX_MASKS}",
                self.masks
            ));
        }
        let least = usize::from(self.flows) + self.masks - 1;
        if self.rules < least {
            return Err(format!(
                "{} rules are too few for {} flows over {} masks: at least {least}",
                self.rules, self.flows, self.masks
            ));
        }
        if self.rules > 4_000_000 {
            return Err(format!("{} rules: the bench makes at most 4M", self.rules));
        }
        // The narrowest filler mask, /(33 - masks), has this many prefixes.
        let room = 1usize << (33 - self.masks).min(32);
        if self.masks > 1 && self.rules / self.masks > room {
            return Err(format!(
                "{} rules over {} masks: at most {} per mask fit in distinct /{} prefixes",
                self.rules,
                self.masks,
                room,
                33 - self.masks
            ));
        }
        Ok(())
    }

    /// The rule set: ports `pa` (index 0) and `pb` (index 1), both
    /// dropping misses; rule ids from 1.
    pub fn rule_set(&self) -> RuleSet {
        let flows = usize::from(self.flows);
        let filler = self.rules - flows;
        let other_masks = self.masks - 1;
        // Filler is spread evenly; the flows' own mask takes what is left.
        let per_mask = if other_masks == 0 {
            0
        } else {
            (filler / self.masks).max(1)
        };
        let mut rules = Vec::with_capacity(self.rules);
        let mut id = 0u32;
        let mut next = || {
            id += 1;
            id
        };
        for i in 0..self.flows {
            rules.push(exact(
                next(),
                10,
                SRC_IP,
                DST_IP,
                SPORT_BASE + i,
                output("pb"),
            ));
        }
        for j in 1..=other_masks {
            let len = 32 - j as u8;
            for k in 0..per_mask {
                // Distinct /len prefixes (wrapping round the address
                // space); port 7001 keeps the traffic out of them.
                let base = u32::from(Ipv4Addr::new(172, 16, 0, 0)).wrapping_add((k as u32) << j);
                rules.push(Rule {
                    id: next(),
                    priority: 100 + j as u32,
                    matches: Match {
                        in_port: Some("pa".into()),
                        ip_dst: Some(IpPrefix {
                            addr: IpAddr::V4(Ipv4Addr::from(base)),
                            len,
                        }),
                        ip_proto: Some(dse_datapath::rule::IpProto(17)),
                        l4_dst: Some(Masked {
                            value: DPORT + 1,
                            mask: 0xffff,
                        }),
                        ..Match::default()
                    },
                    actions: vec![Action::Drop],
                });
            }
        }
        let rest = self.rules - rules.len();
        for k in 0..rest {
            // Same mask as the flows' rules, other destinations.
            let dst = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + k as u32;
            let sport = SPORT_BASE.wrapping_add((k % 512) as u16);
            let r = exact(
                next(),
                10,
                SRC_IP,
                Ipv4Addr::from(dst).octets(),
                sport,
                Action::Drop,
            );
            rules.push(r);
        }
        RuleSet {
            ports: vec![port("pa", 0), port("pb", 1)],
            meters: Vec::new(),
            rules,
        }
    }
}

fn port(name: &str, index: u16) -> PortDef {
    PortDef {
        name: name.into(),
        index,
        default: DefaultAction::Drop,
    }
}

fn output(port: &str) -> Action {
    Action::Output(port.into())
}

fn exact(id: u32, priority: u32, src: [u8; 4], dst: [u8; 4], sport: u16, action: Action) -> Rule {
    let prefix = |a: [u8; 4]| IpPrefix {
        addr: IpAddr::V4(Ipv4Addr::from(a)),
        len: 32,
    };
    Rule {
        id,
        priority,
        matches: Match {
            in_port: Some("pa".into()),
            ip_src: Some(prefix(src)),
            ip_dst: Some(prefix(dst)),
            ip_proto: Some(dse_datapath::rule::IpProto(17)),
            l4_src: Some(Masked {
                value: sport,
                mask: 0xffff,
            }),
            l4_dst: Some(Masked {
                value: DPORT,
                mask: 0xffff,
            }),
            ..Match::default()
        },
        actions: vec![action],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_compile_to_the_masks_asked_for() {
        for (rules, masks) in [(300, 1), (300, 4), (1000, 16)] {
            let w = Workload {
                rules,
                masks,
                flows: 256,
            };
            w.check().unwrap();
            let set = w.rule_set();
            assert_eq!(set.rules.len(), rules);
            let t = dse_datapath::compile(&set).expect("compiles");
            assert_eq!(t.subtables.len(), masks, "{rules} rules, {masks} masks");
        }
    }

    #[test]
    fn bad_shapes_are_named() {
        let w = |rules, masks, flows| Workload {
            rules,
            masks,
            flows,
        };
        assert!(w(10, 1, 256).check().unwrap_err().contains("too few"));
        assert!(w(1000, 17, 256).check().unwrap_err().contains("17 masks"));
        assert!(w(1000, 1, 0).check().unwrap_err().contains("one flow"));
    }
}
