//! The compiler: `RuleSet -> CompiledTables`, pure and backend-agnostic.
//!
//! Rules are ordered by (priority descending, id ascending), a total order,
//! and stored in that order so that the lower index wins. Each distinct mask
//! gets a subtable; subtables are ordered by their best rule, which lets the
//! classifier stop once no later subtable can beat what it has found.

mod key;
mod subtable;
mod tables;

pub use key::{FLAG_IP, FLAG_L4, FlowKey, MaskedKey, TUNNEL_PRESENT, VLAN_PRESENT, hash_words};
pub use subtable::Subtable;
pub use tables::*;

use crate::rule::{Action, MeterUnit, Rule, RuleError, RuleSet, value_ip_key_bytes};
use std::collections::HashMap;

/// Compiles a rule set, validating it first.
///
/// # Errors
/// [`RuleError`] for invalid input, or when the rules need more than
/// [`MAX_MASKS`] distinct masks (naming the first rule over the limit).
pub fn compile(set: &RuleSet) -> Result<CompiledTables, RuleError> {
    set.validate()?;
    let mut order: Vec<&Rule> = set.rules.iter().collect();
    order.sort_unstable_by_key(|r| (core::cmp::Reverse(r.priority), r.id));

    let keys: Vec<MaskedKey> = order
        .iter()
        .map(|r| MaskedKey::from_match(&r.matches, set))
        .collect();
    let mut mask_index: HashMap<FlowKey, usize> = HashMap::new();
    let mut mask_of = Vec::with_capacity(order.len());
    let mut counts: Vec<(FlowKey, usize)> = Vec::new();
    for (r, k) in order.iter().zip(&keys) {
        let next = counts.len();
        let m = *mask_index.entry(k.mask).or_insert(next);
        if m == next {
            if next == MAX_MASKS {
                return Err(RuleError::Rule {
                    rule: r.id,
                    field: "match".into(),
                    reason: format!(
                        "this rule needs a {}th distinct combination of matched fields and masks; at most {MAX_MASKS} are allowed",
                        MAX_MASKS + 1
                    ),
                });
            }
            counts.push((k.mask, 0));
        }
        counts[m].1 += 1;
        mask_of.push(m);
    }
    let mut subtables: Vec<Subtable> = counts
        .iter()
        .map(|(mask, n)| Subtable::new(*mask, *n))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        subtables[mask_of[i]].insert(&k.value, i as u32);
    }

    let meter_ix: HashMap<&str, u32> = set
        .meters
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.as_str(), i as u32))
        .collect();
    let mut options = OptionPool::default();
    let mut actions = Vec::new();
    let mut interned: HashMap<Vec<ActionRecord>, u32> = HashMap::new();
    let mut rules = Vec::with_capacity(order.len());
    let mut list = Vec::new();
    for r in &order {
        list.clear();
        for a in &r.actions {
            list.push(encode_action(a, set, &meter_ix, &mut options));
        }
        let first = match interned.get(&list) {
            Some(&f) => f,
            None => {
                let f = actions.len() as u32;
                actions.extend_from_slice(&list);
                interned.insert(list.clone(), f);
                f
            }
        };
        rules.push(RuleRecord {
            id: r.id,
            priority: r.priority,
            first_action: first,
            n_actions: list.len() as u16,
            pad: 0,
        });
    }

    let mut ports = vec![PortRecord::default(); CompiledTables::port_slots()];
    for p in &set.ports {
        ports[usize::from(p.index)] = PortRecord {
            present: 1,
            default_drop: u8::from(p.default == crate::rule::DefaultAction::Drop),
        };
    }
    let meters = set
        .meters
        .iter()
        .map(|m| MeterRecord {
            rate: m.rate,
            burst: m.burst,
            bits: u8::from(m.unit == MeterUnit::Bps),
            pad: [0; 7],
        })
        .collect();
    Ok(CompiledTables {
        rules,
        actions,
        options: options.bytes,
        subtables,
        ports,
        meters,
        meter_names: set.meters.iter().map(|m| m.name.clone()).collect(),
    })
}

fn encode_action(
    a: &Action,
    set: &RuleSet,
    meter_ix: &HashMap<&str, u32>,
    options: &mut OptionPool,
) -> ActionRecord {
    let port = |name: &str| set.port(name).expect("validated port").index;
    let ip = |rec: &mut ActionRecord, addr: std::net::IpAddr| {
        rec.data[..16].copy_from_slice(&value_ip_key_bytes(addr));
        if addr.is_ipv6() {
            rec.flags |= FLAG_V6;
        }
    };
    match a {
        Action::SetEthSrc(m) | Action::SetEthDst(m) => {
            let mut rec = ActionRecord::new(if matches!(a, Action::SetEthSrc(_)) {
                op::SET_ETH_SRC
            } else {
                op::SET_ETH_DST
            });
            rec.data[..6].copy_from_slice(&m.0);
            rec
        }
        Action::SetIpSrc(addr) | Action::SetIpDst(addr) => {
            let mut rec = ActionRecord::new(if matches!(a, Action::SetIpSrc(_)) {
                op::SET_IP_SRC
            } else {
                op::SET_IP_DST
            });
            ip(&mut rec, *addr);
            rec
        }
        Action::SetL4Src(p) | Action::SetL4Dst(p) => {
            let mut rec = ActionRecord::new(if matches!(a, Action::SetL4Src(_)) {
                op::SET_L4_SRC
            } else {
                op::SET_L4_DST
            });
            rec.arg16 = *p;
            rec
        }
        Action::PushVlan(v) => {
            let mut rec = ActionRecord::new(op::PUSH_VLAN);
            rec.arg16 = (u16::from(v.pcp) << 13) | v.vid;
            rec.arg32 = u32::from(v.tpid);
            rec
        }
        Action::PopVlan => ActionRecord::new(op::POP_VLAN),
        Action::EncapVxlan(e) | Action::EncapGeneve(e) => {
            let geneve = matches!(a, Action::EncapGeneve(_));
            let mut rec = ActionRecord::new(if geneve {
                op::ENCAP_GENEVE
            } else {
                op::ENCAP_VXLAN
            });
            rec.arg32 = e.vni;
            rec.arg16 = e.udp_dst.unwrap_or(if geneve {
                crate::wire::udpport::GENEVE
            } else {
                crate::wire::udpport::VXLAN
            });
            rec.data[encap::ETH_DST].copy_from_slice(&e.eth_dst.0);
            rec.data[encap::ETH_SRC].copy_from_slice(&e.eth_src.0);
            rec.data[encap::IP_SRC].copy_from_slice(&value_ip_key_bytes(e.ip_src));
            rec.data[encap::IP_DST].copy_from_slice(&value_ip_key_bytes(e.ip_dst));
            if e.ip_src.is_ipv6() {
                rec.flags |= FLAG_V6;
            }
            if let Some(src) = e.udp_src {
                rec.flags |= FLAG_FIXED_SRC;
                rec.data[encap::UDP_SRC].copy_from_slice(&src.to_be_bytes());
            }
            let opts = crate::rule::encode_geneve_options(e);
            let off = options.intern(opts.as_slice());
            rec.data[encap::OPT_OFF].copy_from_slice(&off.to_le_bytes());
            rec.data[encap::OPT_LEN].copy_from_slice(&(opts.len() as u16).to_le_bytes());
            rec
        }
        Action::Decap => ActionRecord::new(op::DECAP),
        Action::Meter(m) => {
            let mut rec = ActionRecord::new(op::METER);
            rec.arg32 = meter_ix[m.as_str()];
            rec
        }
        Action::Output(p) => {
            let mut rec = ActionRecord::new(op::OUTPUT);
            rec.arg16 = port(p);
            rec
        }
        Action::Drop => ActionRecord::new(op::DROP),
        Action::Pass => ActionRecord::new(op::PASS),
        Action::Tx => ActionRecord::new(op::TX),
    }
}

/// Geneve option blobs, each stored once so that identical action lists stay identical.
#[derive(Default)]
struct OptionPool {
    bytes: Vec<u8>,
    seen: HashMap<Vec<u8>, u32>,
}

impl OptionPool {
    fn intern(&mut self, blob: &[u8]) -> u32 {
        if blob.is_empty() {
            return 0;
        }
        if let Some(&off) = self.seen.get(blob) {
            return off;
        }
        let off = self.bytes.len() as u32;
        self.bytes.extend_from_slice(blob);
        self.seen.insert(blob.to_vec(), off);
        off
    }
}
