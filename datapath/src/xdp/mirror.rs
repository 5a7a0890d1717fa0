//! Conversions from the compiler's records to the BPF mirrors of `dse-ebpf`.

use crate::compile::{ActionRecord, FlowKey, MeterRecord, RuleRecord};

pub(crate) fn key(k: &FlowKey) -> dse_ebpf::FlowKey {
    dse_ebpf::FlowKey {
        ip_src: k.ip_src,
        ip_dst: k.ip_dst,
        eth_src: k.eth_src,
        in_port: k.in_port,
        eth_dst: k.eth_dst,
        vlan: k.vlan,
        eth_type: k.eth_type,
        ip_proto: k.ip_proto,
        flags: k.flags,
        l4_src: k.l4_src,
        l4_dst: k.l4_dst,
        tun_id: k.tun_id,
        tcp_flags: k.tcp_flags,
        pad: [0; 3],
    }
}

/// The inverse of [`key`].
pub(crate) fn flow_key(k: &dse_ebpf::FlowKey) -> FlowKey {
    FlowKey {
        ip_src: k.ip_src,
        ip_dst: k.ip_dst,
        eth_src: k.eth_src,
        in_port: k.in_port,
        eth_dst: k.eth_dst,
        vlan: k.vlan,
        eth_type: k.eth_type,
        ip_proto: k.ip_proto,
        flags: k.flags,
        l4_src: k.l4_src,
        l4_dst: k.l4_dst,
        tun_id: k.tun_id,
        tcp_flags: k.tcp_flags,
        pad: [0; 3],
    }
}

pub(crate) fn rule(r: &RuleRecord) -> dse_ebpf::RuleRecord {
    dse_ebpf::RuleRecord {
        id: r.id,
        priority: r.priority,
        first_action: r.first_action,
        n_actions: r.n_actions,
        live: r.live,
    }
}

pub(crate) fn action(a: &ActionRecord) -> dse_ebpf::ActionRecord {
    dse_ebpf::ActionRecord {
        op: a.op,
        flags: a.flags,
        arg16: a.arg16,
        arg32: a.arg32,
        data: a.data,
    }
}

pub(crate) fn meter(m: &MeterRecord) -> dse_ebpf::MeterRecord {
    dse_ebpf::MeterRecord {
        rate: m.rate,
        burst: m.burst,
        bits: m.bits,
        pad: [0; 7],
    }
}
