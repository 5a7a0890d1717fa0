//! Encoding of actions into fixed-size records.

use super::*;
use crate::rule::{Action, RuleSet, ip_key_bytes};
use std::collections::HashMap;

pub(super) fn encode_action(
    a: &Action,
    set: &RuleSet,
    meter_ix: &dyn Fn(&str) -> u32,
    options: &mut OptionPool,
) -> ActionRecord {
    let port = |name: &str| set.port(name).expect("validated port").index;
    let ip = |rec: &mut ActionRecord, addr: std::net::IpAddr| {
        rec.data[..16].copy_from_slice(&ip_key_bytes(addr));
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
            rec.data[encap::IP_SRC].copy_from_slice(&ip_key_bytes(e.ip_src));
            rec.data[encap::IP_DST].copy_from_slice(&ip_key_bytes(e.ip_dst));
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
            rec.arg32 = meter_ix(m.as_str());
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
pub(super) struct OptionPool {
    /// The pool's bytes.
    pub(super) bytes: Vec<u8>,
    seen: HashMap<Vec<u8>, u32>,
}

impl OptionPool {
    pub(super) fn intern(&mut self, blob: &[u8]) -> u32 {
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
