//! The rule model: what a control plane asks the datapath to do.
//!
//! A [`RuleSet`] names its ports and meters and lists its rules. It reads from
//! YAML or JSON ([`RuleSet::from_yaml`], [`RuleSet::from_json`]) with unknown
//! fields refused, and [`RuleSet::validate`] checks everything a compiler
//! needs. Every error names the rule id (or the port or meter) and the field.

mod error;
mod load;
mod packed;
mod validate;
mod value;

pub use error::RuleError;
pub use packed::Packed;
pub(crate) use validate::encode_options as encode_geneve_options;
pub use value::{EthType, IpPrefix, IpProto, Mac, Masked, TcpFlags, VlanMatch, ip_key_bytes};

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Highest port index plus one; the XDP devmap has this many slots.
pub const MAX_PORTS: u16 = 64;
/// Most meters one rule set may define.
pub const MAX_METERS: usize = 1024;
/// Most actions in one rule.
pub const MAX_ACTIONS: usize = 16;
/// Most bytes of Geneve options one encap action may carry.
pub const MAX_GENEVE_OPTIONS: usize = 252;

/// A complete desired state: ports, meters and rules.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSet {
    /// The datapath's ports, by name.
    #[serde(default)]
    pub ports: Vec<PortDef>,
    /// Token-bucket meters that rules may reference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meters: Vec<MeterDef>,
    /// The flow rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// A port: a name rules use, the index the datapath uses, and what a miss does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortDef {
    /// Name rules refer to.
    pub name: String,
    /// Index, below [`MAX_PORTS`].
    pub index: u16,
    /// What a packet arriving here that matches no rule gets.
    #[serde(default)]
    pub default: DefaultAction,
}

/// The action a miss takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultAction {
    /// Hand the packet to the host stack.
    #[default]
    Pass,
    /// Drop it.
    Drop,
}

/// A token-bucket meter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterDef {
    /// Name rules refer to.
    pub name: String,
    /// Whether rate and burst count packets or bits.
    pub unit: MeterUnit,
    /// Tokens added per second.
    pub rate: u64,
    /// Bucket depth: the most tokens that can accumulate.
    pub burst: u64,
}

/// What a meter's tokens count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeterUnit {
    /// Packets: rate in packets per second, burst in packets.
    Pps,
    /// Bits: rate in bits per second, burst in bits; a frame costs 8 per byte.
    Bps,
}

/// One flow rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Identity, unique in the set; it names the rule's counters.
    pub id: u32,
    /// Higher wins; ties go to the lower id.
    pub priority: u32,
    /// Which packets the rule takes; an empty match takes all.
    #[serde(rename = "match", default)]
    pub matches: Match,
    /// Applied in order; the last is terminal (`output`, `drop`, `pass`,
    /// `tx`) or `decap`, which classifies the inner frame again.
    #[serde(deserialize_with = "exactly")]
    pub actions: Vec<Action>,
}

/// A list read into exactly the memory it needs: a deserializer grows a
/// vector of unknown length by doubling, which a million rules would keep.
fn exactly<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    let mut v = Vec::<T>::deserialize(d)?;
    v.shrink_to_fit();
    Ok(v)
}

/// Match fields; an absent field is a wildcard.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Port the packet arrived on, by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_port: Option<String>,
    /// Ethernet source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eth_src: Option<Mac>,
    /// Ethernet destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eth_dst: Option<Mac>,
    /// Outer VLAN id, or untagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<VlanMatch>,
    /// EtherType after the VLAN tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eth_type: Option<EthType>,
    /// IPv4 or IPv6 source prefix (implies the EtherType).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_src: Option<IpPrefix>,
    /// IPv4 or IPv6 destination prefix (implies the EtherType).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_dst: Option<IpPrefix>,
    /// IP protocol (after IPv6 extension headers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_proto: Option<IpProto>,
    /// TCP/UDP source port, or ICMP type; needs `ip_proto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l4_src: Option<Masked<u16>>,
    /// TCP/UDP destination port, or ICMP code; needs `ip_proto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l4_dst: Option<Masked<u16>>,
    /// TCP flags; needs `ip_proto: tcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<TcpFlags>,
    /// Tunnel VNI of a frame that a `decap` action took out of its tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
}

/// One action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Rewrite the Ethernet source.
    SetEthSrc(Mac),
    /// Rewrite the Ethernet destination.
    SetEthDst(Mac),
    /// Rewrite the IP source (applies to packets of the address's family).
    SetIpSrc(IpAddr),
    /// Rewrite the IP destination (applies to packets of the address's family).
    SetIpDst(IpAddr),
    /// Rewrite the TCP/UDP source port.
    SetL4Src(u16),
    /// Rewrite the TCP/UDP destination port.
    SetL4Dst(u16),
    /// Push an outer VLAN tag.
    PushVlan(PushVlan),
    /// Pop the outer VLAN tag (no-op on an untagged frame).
    PopVlan,
    /// Wrap the frame in Ethernet/IP/UDP/VXLAN. (Boxed, as the Geneve
    /// one: an action is then 32 bytes, not 96, in every rule.)
    EncapVxlan(Box<Encap>),
    /// Wrap the frame in Ethernet/IP/UDP/Geneve.
    EncapGeneve(Box<Encap>),
    /// Strip an outer VXLAN or Geneve tunnel and classify the inner frame again.
    Decap,
    /// Police through the named meter; packets over the rate are dropped.
    Meter(String),
    /// Send out of the named port.
    Output(String),
    /// Drop.
    Drop,
    /// Hand to the host stack.
    Pass,
    /// Send back out of the port it came in on.
    Tx,
}

/// Parameters of a VLAN push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushVlan {
    /// VLAN id, 1..=4094.
    pub vid: u16,
    /// Priority code point, 0..=7.
    #[serde(default)]
    pub pcp: u8,
    /// TPID: 0x8100 (802.1Q, the default) or 0x88a8 (802.1ad).
    #[serde(default = "default_tpid")]
    pub tpid: u16,
}

fn default_tpid() -> u16 {
    crate::wire::ethertype::VLAN
}

/// The outer headers of a tunnel encapsulation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encap {
    /// 24-bit VNI.
    pub vni: u32,
    /// Outer Ethernet source.
    pub eth_src: Mac,
    /// Outer Ethernet destination.
    pub eth_dst: Mac,
    /// Outer IP source; its family picks IPv4 or IPv6.
    pub ip_src: IpAddr,
    /// Outer IP destination; the same family as `ip_src`.
    pub ip_dst: IpAddr,
    /// Outer UDP source port; absent means derived from the inner flow's hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_src: Option<u16>,
    /// Outer UDP destination port; absent means the protocol's well-known port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_dst: Option<u16>,
    /// Geneve option TLVs (Geneve only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<GeneveOption>,
}

/// One Geneve option TLV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneveOption {
    /// Option class.
    pub class: u16,
    /// Option type.
    #[serde(rename = "type")]
    pub kind: u8,
    /// Data as hex, a multiple of 4 bytes, at most 124.
    pub data: String,
}

impl Action {
    /// Whether the action ends a rule's action list.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Action::Output(_) | Action::Drop | Action::Pass | Action::Tx | Action::Decap
        )
    }
}

impl RuleSet {
    /// Looks a port up by name.
    pub fn port(&self, name: &str) -> Option<&PortDef> {
        self.ports.iter().find(|p| p.name == name)
    }
}
