//! `dse trace`: one frame through a rule set, step by step, with the XDP
//! program's answer beside the reference's.

use crate::pcap::Place;
use anyhow::{Context, Result, bail};
use dse_datapath::RuleSet;
use dse_datapath::pipeline::Cached;
use dse_datapath::rule::Match;
use dse_datapath::trace::Trace;
use dse_datapath::verify::{Outcome, Subject, Xdp};
use serde_json::{Value, json};
use std::path::Path;

/// The frame to trace, as the command line gives it.
pub enum Packet<'a> {
    /// Its bytes in hex.
    Hex(&'a str),
    /// Packet `n` (from 1) of a pcap or pcapng file.
    Pcap(&'a Path, usize),
    /// A flow spec: `in_port=uplink,udp,ip_dst=192.0.2.10,l4_dst=53`.
    Flow(&'a str),
}

/// The frame `packet` names and the port it arrives on: `in_port` if
/// given, else the flow spec's or the pcapng interface's, else the first
/// port.
///
/// # Errors
/// Bad hex, a packet the file does not hold, a flow spec that does not
/// read, or a port the rules do not have; each says what is wrong.
pub fn frame(set: &RuleSet, packet: &Packet, in_port: Option<&str>) -> Result<(u16, Vec<u8>)> {
    let named = |name: &str| crate::pcap::port_index(set, name);
    let first = set.ports.first().map_or(0, |p| p.index);
    let given = in_port.map(named).transpose()?;
    match packet {
        Packet::Hex(text) => {
            let clean: String = text
                .chars()
                .filter(|c| !c.is_whitespace() && *c != ':')
                .collect();
            let bytes = hex::decode(&clean).with_context(|| {
                format!("--hex {text:?} is not hex: give the frame's bytes as 0200000000010200...")
            })?;
            Ok((given.unwrap_or(first), bytes))
        }
        Packet::Pcap(path, n) => {
            let frames = crate::pcap::read(path, set, in_port)?;
            let Some(p) = n.checked_sub(1).and_then(|i| frames.get(i)) else {
                bail!(
                    "{} holds {} packets: --packet {n} is not one of them (from 1)",
                    path.display(),
                    frames.len()
                );
            };
            Ok((given.unwrap_or(p.in_port), p.frame.clone()))
        }
        Packet::Flow(spec) => {
            let m = flow(spec)?;
            let from_spec = m.in_port.as_deref().map(named).transpose()?;
            let (index, bytes) = dse_datapath::verify::frame_for(set, &m).with_context(|| {
                format!("flow {spec:?}: no frame is built for it (a vni is set only by a decap; trace the encapsulated frame)")
            })?;
            Ok((given.or(from_spec).unwrap_or(index), bytes))
        }
    }
}

/// A flow spec read as a match: comma-separated `field=value`, and the
/// shorthands `tcp`, `udp`, `icmp`, `icmpv6` (an `ip_proto`) and `ipv4`,
/// `ipv6`, `arp` (an `eth_type`).
///
/// # Errors
/// An unknown field or a value the field does not take, named.
pub fn flow(spec: &str) -> Result<Match> {
    let mut fields = serde_json::Map::new();
    for token in spec.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (name, value) = match token.split_once('=') {
            Some((n, v)) => (n.trim(), v.trim()),
            None => match token {
                "tcp" | "udp" | "icmp" | "icmpv6" => ("ip_proto", token),
                "ipv4" | "ipv6" | "arp" => ("eth_type", token),
                other => bail!(
                    "flow {spec:?}: {other:?} is neither field=value nor one of tcp, udp, icmp, icmpv6, ipv4, ipv6, arp"
                ),
            },
        };
        if fields
            .insert(name.to_string(), Value::String(value.to_string()))
            .is_some()
        {
            bail!("flow {spec:?}: {name} is given twice");
        }
    }
    serde_json::from_value(Value::Object(fields)).map_err(|e| {
        anyhow::anyhow!(
            "flow {spec:?}: {e} (fields are those of a rule's match: in_port, eth_src, eth_dst, vlan, eth_type, ip_src, ip_dst, ip_proto, l4_src, l4_dst, tcp_flags)"
        )
    })
}

/// Puts what a running datapath's flow caches hold for each pass's key
/// into `t`: `caches` gives them for the passes' keys, in order (the XDP
/// program's one cache, or one a host-path worker), or why they were not
/// read.
pub fn put_caches(t: &mut Trace, caches: Result<Vec<Vec<Cached>>, String>) {
    let passes = t.passes.iter_mut().filter(|p| p.key.is_some());
    match caches {
        Ok(caches) => {
            for (p, c) in passes.zip(caches) {
                p.cache = match c.as_slice() {
                    [] => "the datapath has none".into(),
                    [one] => cache_text(*one),
                    workers => workers
                        .iter()
                        .enumerate()
                        .map(|(i, c)| format!("worker {i}: {}", cache_text(*c)))
                        .collect::<Vec<_>>()
                        .join("; "),
                };
            }
        }
        Err(e) => passes.for_each(|p| p.cache = format!("the datapath's was not read: {e}")),
    }
}

/// The keys of `t`'s passes that have one, in order, for [`put_caches`].
pub fn pass_keys(t: &Trace) -> Vec<dse_datapath::compile::FlowKey> {
    t.passes.iter().filter_map(|p| p.key).collect()
}

/// What a datapath's flow cache entry means for the flow's next frame.
pub fn cache_text(c: Cached) -> String {
    match c {
        Cached::Miss => {
            "the datapath's holds nothing for it: its next frame takes the search below".into()
        }
        Cached::Other => {
            "the datapath's holds another flow in its place: its next frame takes the search below"
                .into()
        }
        Cached::Stale {
            generation,
            current,
        } => format!(
            "the datapath's holds an entry of generation {generation}, not the tables' {current}: its next frame takes the search below"
        ),
        Cached::Hit { rule, slot } => {
            format!("the datapath's holds rule {rule} (slot {slot}) for it")
        }
        Cached::NoRule => {
            "the datapath's holds that no rule matches: its next frame takes its port's default"
                .into()
        }
    }
}

/// What the XDP program did with the frame, or why it did not run.
pub type XdpAnswer = Option<Result<Outcome, String>>;

/// The frame through the XDP program, loaded apart with `set`, pinned
/// under `bpffs`.
pub fn xdp(set: &RuleSet, bpffs: &Path, in_port: u16, frame: &[u8]) -> Result<Outcome, String> {
    let pins = crate::verify::Pins::new(bpffs, "trace");
    Xdp::load(set, &pins.0)
        .map_err(|e| format!("it did not load ({e}): it needs root and bpffs"))
        .and_then(|mut x| x.run(in_port, frame))
        .map_err(|e| match frame.len() {
            // A test run's frame carries its port in 4 bytes before it.
            n if n + 4 < 14 => format!(
                "the kernel runs no XDP program on a frame of {n} bytes, under an Ethernet header's 14 (its port's 4 bytes besides)"
            ),
            _ => e,
        })
}

/// Writes the frame in and the frame out (if it left) to `path` as pcapng.
///
/// # Errors
/// The file cannot be written.
pub fn write_pcap(path: &Path, set: &RuleSet, t: &Trace) -> Result<()> {
    use dse_datapath::trace::Destination;
    let out = match &t.verdict {
        Destination::Output { port } => Some(Place::Port(port.index)),
        Destination::Tx => Some(Place::Port(t.in_port.index)),
        Destination::Pass => Some(Place::Host),
        Destination::Drop { .. } => None,
    };
    let frames = std::iter::once((Place::Port(t.in_port.index), t.input.as_slice()))
        .chain(out.map(|place| (place, t.output.as_slice())));
    crate::pcap::write(path, set, frames)
}

/// Whether the XDP program did what the reference did.
fn agrees(t: &Trace, xdp: &Outcome) -> bool {
    use dse_datapath::pipeline::Verdict;
    use dse_datapath::trace::Destination;
    let same = match (&t.verdict, xdp.verdict) {
        (Destination::Output { port }, Verdict::Output(p)) => port.index == p,
        (Destination::Pass, Verdict::Pass) | (Destination::Tx, Verdict::Tx) => true,
        (Destination::Drop { reason }, Verdict::Drop(r)) => *reason == r.name(),
        _ => false,
    };
    same && xdp.bytes == t.output
}

/// The trace for people, the XDP program's answer beside the verdict.
pub fn print(t: &Trace, xdp: &XdpAnswer) {
    crate::outln!("{t}");
    match xdp {
        None => {}
        Some(Err(why)) => crate::outln!("xdp:     not run: {why}"),
        Some(Ok(o)) if agrees(t, o) => crate::outln!("xdp:     the same"),
        Some(Ok(o)) => crate::outln!("xdp:     DIFFERS: {o}"),
    }
}

/// The trace for scripts.
pub fn json(t: &Trace, xdp: &XdpAnswer) -> Value {
    let mut v = serde_json::to_value(t).expect("a trace serializes");
    v["xdp"] = match xdp {
        None => Value::Null,
        Some(Err(why)) => json!({"error": why}),
        Some(Ok(o)) => json!({
            "agrees": agrees(t, o),
            "outcome": o.to_string(),
        }),
    };
    v
}

/// Fails if the XDP program did otherwise, so that the exit code says so.
///
/// # Errors
/// That it differs.
pub fn verdict(t: &Trace, xdp: &XdpAnswer) -> Result<()> {
    if let Some(Ok(o)) = xdp
        && !agrees(t, o)
    {
        bail!("the XDP program did otherwise than the reference: {o}");
    }
    Ok(())
}
