//! One frame through a rule set, step by step: what the parser saw, each
//! subtable the search probed, the rule chosen and why each rule ranked
//! above it did not match, each action with the frame after it, and the
//! verdict. The steps are the reference pipeline's own (its parser, its
//! search and its actions, watched), so a trace cannot tell a story the
//! pipeline does not.

use crate::compile::{FLAG_IP, FLAG_L4, FlowKey, MaskedKey, NO_RULE, TUNNEL_PRESENT, VLAN_PRESENT};
use crate::frame::Frame;
use crate::pipeline::{
    ActionObserver, DropReason, Installed, SearchObserver, Step, Verdict, parse, run_actions,
    search_observed,
};
use crate::rule::{EthType, IpProto, Match, Rule, RuleError, RuleSet};
use crate::verify::{Outcome, hex};
use crate::wire::{ethertype, ipproto};
use serde::Serialize;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The most rules above the chosen one a trace explains.
pub const MAX_EXPLAINED: usize = 20;

/// A frame's way through a rule set.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// The port it arrived on.
    pub in_port: Port,
    /// The frame, as hex.
    #[serde(serialize_with = "as_hex")]
    pub input: Vec<u8>,
    /// Its classifications: the first, and the inner frame's after a
    /// decap.
    pub passes: Vec<Pass>,
    /// Where it went.
    pub verdict: Destination,
    /// The frame as it left (empty for a drop), as hex.
    #[serde(serialize_with = "as_hex")]
    pub output: Vec<u8>,
}

/// A port, by index and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Port {
    /// Its index.
    pub index: u16,
    /// Its name in the rules (`port N` if they name none).
    pub name: String,
}

/// A verdict, with its port named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Destination {
    /// Out of this port.
    Output {
        /// The port.
        port: Port,
    },
    /// To the host stack.
    Pass,
    /// Back out of the port it came in on.
    Tx,
    /// Dropped.
    Drop {
        /// Why.
        reason: &'static str,
    },
}

/// One classification and what followed it.
#[derive(Debug, Clone, Serialize)]
pub struct Pass {
    /// The tunnel's VNI, for the inner frame after a decap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// The fields the parser read, in rule syntax, or why it refused the
    /// frame.
    pub parsed: Result<Vec<(String, String)>, String>,
    /// The flow key it classified by.
    #[serde(skip)]
    pub key: Option<FlowKey>,
    /// What a flow cache holds for the key: a trace of rules alone has
    /// none ([`Pass::cache`] says so); a running datapath's can be read
    /// and put here.
    pub cache: String,
    /// Each subtable probed, best first.
    pub subtables: Vec<Probed>,
    /// The subtable the search stopped before: none of its rules, nor any
    /// later one's, ranks above the rule found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_before: Option<usize>,
    /// The rule chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleRef>,
    /// The rules ranked above it (every rule, on a miss) and the fields of
    /// each that the frame does not meet: the first [`MAX_EXPLAINED`].
    pub not_matched: Vec<NotMatched>,
    /// How many rules rank above it in all.
    pub ranked_above: usize,
    /// Rules of its priority that match too, which its lower id beats.
    pub tied: Vec<RuleRef>,
    /// The rule's actions that ran, each with the frame after it.
    pub actions: Vec<ActionStep>,
    /// What ended the pass.
    pub ended: String,
}

/// A rule, by id and priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// Its id.
    pub id: u32,
    /// Its priority.
    pub priority: u32,
}

impl RuleRef {
    fn of_rank(rank: u64) -> RuleRef {
        RuleRef {
            id: u32::MAX - rank as u32,
            priority: (rank >> 32) as u32,
        }
    }
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {} (priority {})", self.id, self.priority)
    }
}

/// A subtable the search probed.
#[derive(Debug, Clone, Serialize)]
pub struct Probed {
    /// Its place in the search order.
    pub index: usize,
    /// The fields its mask keeps, such as `ip_dst/24`.
    pub mask: Vec<String>,
    /// Its best rule.
    pub best: RuleRef,
    /// What it held for the frame.
    pub found: Found,
}

/// What a subtable held for a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "found", rename_all = "snake_case")]
pub enum Found {
    /// Its prefilter ruled the frame out without a lookup.
    Filtered,
    /// No entry.
    Nothing,
    /// This rule.
    Rule {
        /// The rule.
        rule: RuleRef,
    },
}

/// A rule that ranks above the one chosen, and why it did not match.
#[derive(Debug, Clone, Serialize)]
pub struct NotMatched {
    /// The rule.
    pub rule: RuleRef,
    /// Each of its fields the frame does not meet.
    pub fields: Vec<String>,
}

/// An action that ran.
#[derive(Debug, Clone, Serialize)]
pub struct ActionStep {
    /// Its place in the rule's actions, from 1.
    pub index: usize,
    /// The action, as the rules write it.
    pub action: String,
    /// The frame after it, as hex.
    #[serde(serialize_with = "as_hex")]
    pub frame: Vec<u8>,
}

fn as_hex<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(bytes))
}

/// Traces `frame` arriving on port `in_port` through `set`, as the
/// reference pipeline runs it with its meters' buckets full.
///
/// # Errors
/// [`RuleError`] if the rules do not compile.
pub fn trace(set: &RuleSet, in_port: u16, frame: &[u8]) -> Result<Trace, RuleError> {
    let inst = Installed::build(1, set)?;
    let mut f = Frame::new(frame);
    let mut passes = Vec::new();
    let mut tun_id = 0;
    let verdict = loop {
        let (pass, step) = classify(set, &inst, &mut f, in_port, tun_id);
        passes.push(pass);
        match step {
            Step::Done(v) => break v,
            Step::Recirculate(_) if tun_id != 0 => {
                break Verdict::Drop(DropReason::Recirculation);
            }
            Step::Recirculate(vni) => tun_id = TUNNEL_PRESENT | vni,
        }
    };
    let outcome = Outcome::new(verdict, f.data().to_vec());
    Ok(Trace {
        in_port: port(set, in_port),
        input: frame.to_vec(),
        passes,
        verdict: destination(set, verdict),
        output: outcome.bytes,
    })
}

/// Port `index` of `set`, named.
fn port(set: &RuleSet, index: u16) -> Port {
    Port {
        index,
        name: set
            .ports
            .iter()
            .find(|p| p.index == index)
            .map_or_else(|| format!("port {index}"), |p| p.name.clone()),
    }
}

fn destination(set: &RuleSet, v: Verdict) -> Destination {
    match v {
        Verdict::Output(p) => Destination::Output { port: port(set, p) },
        Verdict::Pass => Destination::Pass,
        Verdict::Tx => Destination::Tx,
        Verdict::Drop(r) => Destination::Drop { reason: r.name() },
    }
}

/// One classification of `frame` and its rule's actions.
fn classify(
    set: &RuleSet,
    inst: &Installed,
    frame: &mut Frame,
    in_port: u16,
    tun_id: u32,
) -> (Pass, Step) {
    let mut pass = Pass {
        vni: (tun_id != 0).then_some(tun_id & !TUNNEL_PRESENT),
        parsed: Err(String::new()),
        key: None,
        cache: "none: the rules are classified afresh, as on a cache miss".into(),
        subtables: Vec::new(),
        stopped_before: None,
        rule: None,
        not_matched: Vec::new(),
        ranked_above: 0,
        tied: Vec::new(),
        actions: Vec::new(),
        ended: String::new(),
    };
    let (key, layout) = match parse(frame.data(), in_port, tun_id) {
        Ok(parsed) => parsed,
        Err(e) => {
            pass.parsed = Err(e.to_string());
            pass.ended = "the parser refused it".into();
            return (pass, Step::Done(Verdict::Drop(DropReason::Malformed)));
        }
    };
    pass.parsed = Ok(fields(set, &key));
    pass.key = Some(key);
    let mut seen = Seen::default();
    let slot = search_observed(&inst.tables, &key, &mut seen);
    pass.stopped_before = seen.stopped;
    pass.subtables = seen
        .probed
        .into_iter()
        .map(|(index, filtered, found)| {
            let st = &inst.tables.subtables[index];
            Probed {
                index,
                mask: mask_fields(st.mask()),
                best: RuleRef::of_rank(st.best_rank()),
                found: match (filtered, found) {
                    (true, _) => Found::Filtered,
                    (false, None) => Found::Nothing,
                    (false, Some((_, rank))) => Found::Rule {
                        rule: RuleRef::of_rank(rank),
                    },
                },
            }
        })
        .collect();
    let chosen = (slot != NO_RULE).then(|| {
        let r = inst.tables.rules.get(slot as usize);
        RuleRef {
            id: r.id,
            priority: r.priority,
        }
    });
    pass.rule = chosen;
    let (above, total) = not_matched(set, &key, chosen);
    (pass.not_matched, pass.ranked_above) = (above, total);
    if let Some(c) = chosen {
        let mut tied: Vec<RuleRef> = set
            .rules
            .iter()
            .filter(|r| r.priority == c.priority && r.id > c.id)
            .filter(|r| MaskedKey::from_match(&r.matches, set).matches(&key))
            .map(|r| RuleRef {
                id: r.id,
                priority: r.priority,
            })
            .collect();
        tied.sort_by_key(|r| r.id);
        pass.tied = tied;
    }
    let Some(chosen) = chosen else {
        let drops = inst.tables.miss_drops(in_port);
        pass.ended = format!(
            "no rule matched: port {}'s miss action, {}",
            port(set, in_port).name,
            if drops { "drop" } else { "pass" }
        );
        let v = if drops {
            Verdict::Drop(DropReason::Miss)
        } else {
            Verdict::Pass
        };
        return (pass, Step::Done(v));
    };
    let rule = set.rules.iter().find(|r| r.id == chosen.id);
    let mut ran = Ran(Vec::new());
    let step = run_actions(inst, slot, frame, layout, &key, u64::MAX / 2, &mut ran);
    let written = |i: usize| {
        rule.and_then(|r| r.actions.get(i))
            .map_or_else(|| "?".into(), action)
    };
    pass.actions = ran
        .0
        .into_iter()
        .map(|(i, frame)| ActionStep {
            index: i + 1,
            action: written(i),
            frame,
        })
        .collect();
    let last = pass.actions.len();
    pass.ended = match step {
        Step::Recirculate(vni) => format!("action {} decap: VNI {vni}, classified again", last + 1),
        Step::Done(Verdict::Drop(DropReason::Meter)) => {
            format!(
                "action {} {}: over the meter's burst",
                last + 1,
                written(last)
            )
        }
        Step::Done(Verdict::Drop(r)) if r != DropReason::Rule => {
            format!("action {} {}: {}", last + 1, written(last), r.name())
        }
        Step::Done(_) => format!("action {} {}", last + 1, written(last)),
    };
    (pass, step)
}

/// A subtable probed: its index, whether its prefilter ruled the key out,
/// and the slot and rank of its entry.
type Probe = (usize, bool, Option<(u32, u64)>);

/// What the search probed and where it stopped.
#[derive(Default)]
struct Seen {
    probed: Vec<Probe>,
    stopped: Option<usize>,
}

impl SearchObserver for Seen {
    fn probed(&mut self, index: usize, filtered: bool, found: Option<(u32, u64)>) {
        self.probed.push((index, filtered, found));
    }

    fn stopped(&mut self, index: usize) {
        self.stopped = Some(index);
    }
}

/// Each action that ran, and the frame after it.
struct Ran(Vec<(usize, Vec<u8>)>);

impl ActionObserver for Ran {
    fn ran(&mut self, index: usize, frame: &[u8]) {
        self.0.push((index, frame.to_vec()));
    }
}

/// An action as the rules write it: `pop_vlan`, `output p1`.
fn action(a: &crate::rule::Action) -> String {
    match serde_json::to_value(a) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(m)) if m.len() == 1 => {
            let (k, v) = m.into_iter().next().expect("one entry");
            match v {
                serde_json::Value::String(s) => format!("{k} {s}"),
                v => format!("{k} {v}"),
            }
        }
        Ok(v) => v.to_string(),
        Err(e) => format!("? ({e})"),
    }
}

/// The fields of `key`, in rule syntax.
fn fields(set: &RuleSet, key: &FlowKey) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut put = |name: &str, value: String| out.push((name.to_string(), value));
    put("in_port", port(set, key.in_port).name);
    put("eth_src", mac(key.eth_src));
    put("eth_dst", mac(key.eth_dst));
    put(
        "vlan",
        if key.vlan & VLAN_PRESENT == 0 {
            "untagged".into()
        } else {
            (key.vlan & 0x0fff).to_string()
        },
    );
    put("eth_type", EthType(key.eth_type).to_string());
    if key.flags & FLAG_IP != 0 {
        let v6 = key.eth_type == ethertype::IPV6;
        put("ip_src", ip(&key.ip_src, v6));
        put("ip_dst", ip(&key.ip_dst, v6));
        put("ip_proto", IpProto(key.ip_proto).to_string());
    }
    if key.flags & FLAG_L4 != 0 {
        put("l4_src", key.l4_src.to_string());
        put("l4_dst", key.l4_dst.to_string());
        if key.ip_proto == ipproto::TCP {
            put("tcp_flags", tcp_flags(key.tcp_flags));
        }
    }
    if key.tun_id & TUNNEL_PRESENT != 0 {
        put("vni", (key.tun_id & !TUNNEL_PRESENT).to_string());
    }
    out
}

fn mac(b: [u8; 6]) -> String {
    crate::rule::Mac(b).to_string()
}

fn ip(b: &[u8; 16], v6: bool) -> String {
    if v6 {
        Ipv6Addr::from(*b).to_string()
    } else {
        Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()
    }
}

/// TCP flags as the rules write them, those set: `+syn+ack`.
fn tcp_flags(f: u8) -> String {
    const NAMES: [&str; 8] = ["fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr"];
    let set: String = (0..8)
        .filter(|b| f & (1 << b) != 0)
        .map(|b| format!("+{}", NAMES[b]))
        .collect();
    if set.is_empty() { "none".into() } else { set }
}

/// The fields a subtable's mask keeps: `ip_dst/24`, `l4_dst/0xfff0`, or
/// the field's name when it keeps all of it.
fn mask_fields(m: &FlowKey) -> Vec<String> {
    let mut out = Vec::new();
    let ones = |b: &[u8]| b.iter().map(|x| x.count_ones()).sum::<u32>();
    let v6 = m.ip_src[4..].iter().chain(&m.ip_dst[4..]).any(|&b| b != 0);
    let full = if v6 { 128 } else { 32 };
    for (name, bytes) in [("ip_src", &m.ip_src), ("ip_dst", &m.ip_dst)] {
        match ones(bytes) {
            0 => {}
            n if n == full => out.push(name.to_string()),
            n => out.push(format!("{name}/{n}")),
        }
    }
    let mut whole = |name: &str, set: bool| {
        if set {
            out.push(name.to_string());
        }
    };
    whole("in_port", m.in_port != 0);
    whole("eth_src", m.eth_src != [0; 6]);
    whole("eth_dst", m.eth_dst != [0; 6]);
    whole("vlan", m.vlan != 0);
    whole("eth_type", m.eth_type != 0);
    whole("ip_proto", m.ip_proto != 0);
    for (name, mask) in [("l4_src", m.l4_src), ("l4_dst", m.l4_dst)] {
        match mask {
            0 => {}
            0xffff => out.push(name.to_string()),
            n => out.push(format!("{name}/{n:#06x}")),
        }
    }
    if m.tcp_flags != 0 {
        out.push(format!("tcp_flags/{:#04x}", m.tcp_flags));
    }
    if m.tun_id != 0 {
        out.push("vni".into());
    }
    out
}

/// The rules that rank above `chosen` (all, without one), best first, each
/// with the fields `key` does not meet: the first [`MAX_EXPLAINED`], and
/// how many in all.
fn not_matched(set: &RuleSet, key: &FlowKey, chosen: Option<RuleRef>) -> (Vec<NotMatched>, usize) {
    let rank = |r: &Rule| crate::compile::rank(r.priority, r.id);
    let floor = chosen.map_or(0, |c| crate::compile::rank(c.priority, c.id));
    let mut above: Vec<&Rule> = set
        .rules
        .iter()
        .filter(|r| chosen.is_none() || rank(r) > floor)
        .collect();
    above.sort_by_key(|r| std::cmp::Reverse(rank(r)));
    let total = above.len();
    let packet = fields(set, key);
    let explained = above
        .into_iter()
        .take(MAX_EXPLAINED)
        .map(|r| NotMatched {
            rule: RuleRef {
                id: r.id,
                priority: r.priority,
            },
            fields: unmet(set, r, key, &packet),
        })
        .collect();
    (explained, total)
}

/// Each field of `r`'s match that `key` does not meet: `ip_dst: the
/// packet's 10.0.0.2 is not 198.51.100.7/32`.
fn unmet(set: &RuleSet, r: &Rule, key: &FlowKey, packet: &[(String, String)]) -> Vec<String> {
    let written = serde_json::to_value(&r.matches).unwrap_or_default();
    let Some(written) = written.as_object() else {
        return Vec::new();
    };
    written
        .iter()
        .filter_map(|(name, want)| {
            let mut only = serde_json::Map::new();
            only.insert(name.clone(), want.clone());
            let one: Match = serde_json::from_value(only.into()).ok()?;
            if MaskedKey::from_match(&one, set).matches(key) {
                return None;
            }
            let want = want
                .as_str()
                .map_or_else(|| want.to_string(), str::to_string);
            let have = packet
                .iter()
                .find(|(n, _)| n == name)
                .map_or_else(|| "none".to_string(), |(_, v)| v.clone());
            Some(format!("{name}: the packet's {have} is not {want}"))
        })
        .collect()
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "frame: {} bytes on {} (index {})",
            self.input.len(),
            self.in_port.name,
            self.in_port.index
        )?;
        writeln!(f, "  {}", hex(&self.input))?;
        for (n, p) in self.passes.iter().enumerate() {
            match p.vni {
                None => writeln!(f, "pass {}", n + 1)?,
                Some(vni) => writeln!(f, "pass {}: the inner frame, VNI {vni}", n + 1)?,
            }
            p.fmt(f)?;
        }
        write!(f, "verdict: {}", self.verdict)?;
        if !self.output.is_empty() {
            write!(f, ", {} bytes:\n  {}", self.output.len(), hex(&self.output))?;
        }
        Ok(())
    }
}

impl fmt::Display for Pass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields = match &self.parsed {
            Err(e) => {
                writeln!(f, "  parsed: malformed: {e}")?;
                return writeln!(f, "  ended: {}", self.ended);
            }
            Ok(fields) => fields,
        };
        let fields: Vec<String> = fields.iter().map(|(n, v)| format!("{n}={v}")).collect();
        writeln!(f, "  parsed: {}", fields.join(" "))?;
        writeln!(f, "  flow cache: {}", self.cache)?;
        for s in &self.subtables {
            let found = match s.found {
                Found::Filtered => "ruled out by its prefilter".to_string(),
                Found::Nothing => "no entry".to_string(),
                Found::Rule { rule } => format!("hit {rule}"),
            };
            writeln!(
                f,
                "  subtable {} [{}] best {}: {found}",
                s.index,
                s.mask.join(" "),
                s.best
            )?;
        }
        if let Some(i) = self.stopped_before {
            writeln!(
                f,
                "  search stopped before subtable {i}: no rule from there on ranks above what was found"
            )?;
        }
        match self.rule {
            Some(r) => writeln!(f, "  chosen: {r}")?,
            None => writeln!(f, "  chosen: none")?,
        }
        if !self.tied.is_empty() {
            let ids: Vec<String> = self.tied.iter().map(|r| r.id.to_string()).collect();
            writeln!(
                f,
                "  tied at its priority, and beaten by its lower id: rule {}",
                ids.join(", rule ")
            )?;
        }
        if self.ranked_above > 0 {
            let what = if self.rule.is_some() {
                "ranked above it, not matching"
            } else {
                "not matching"
            };
            writeln!(f, "  {what}:")?;
            for n in &self.not_matched {
                writeln!(f, "    {}: {}", n.rule, n.fields.join("; "))?;
            }
            if self.ranked_above > self.not_matched.len() {
                writeln!(
                    f,
                    "    ... and {} more",
                    self.ranked_above - self.not_matched.len()
                )?;
            }
        }
        for a in &self.actions {
            writeln!(
                f,
                "  action {} {}:\n    {}",
                a.index,
                a.action,
                hex(&a.frame)
            )?;
        }
        writeln!(f, "  ended: {}", self.ended)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Output { port } => {
                write!(f, "output to {} (index {})", port.name, port.index)
            }
            Destination::Pass => f.write_str("pass to the host stack"),
            Destination::Tx => f.write_str("tx back out of its port"),
            Destination::Drop { reason } => write!(f, "drop ({reason})"),
        }
    }
}
