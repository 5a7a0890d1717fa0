//! Leaf values of match fields: each parses from the text a user writes and
//! prints back to the same text, so rule files round-trip.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::wire::{ethertype, ipproto, tcp::flags};

/// Reads a value written as a number or a string: numbers go through
/// `from_num`, strings through `T::from_str`. A visitor of its own rather
/// than an untagged enum: serde buffers an untagged value and formats an
/// error for every variant it tries, which made a million rules parse
/// several times slower.
struct StrOrNum<F, T> {
    from_num: F,
    _value: std::marker::PhantomData<T>,
}

impl<'de, F, T> de::Visitor<'de> for StrOrNum<F, T>
where
    F: Fn(u64) -> Result<T, String>,
    T: FromStr<Err = String>,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number or a string")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.from_num)(v).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        match u64::try_from(v) {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::custom(format!("{v} is negative"))),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

fn de_str_or_num<'de, D, T>(
    d: D,
    from_num: impl Fn(u64) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    d.deserialize_any(StrOrNum {
        from_num,
        _value: std::marker::PhantomData,
    })
}

fn parse_int(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|_| format!("`{s}` is not a number"))
}

fn in_range(n: u64, max: u64, what: &str) -> Result<u64, String> {
    if n > max {
        Err(format!("{what} {n} out of range (at most {max})"))
    } else {
        Ok(n)
    }
}

macro_rules! serde_via_str {
    ($t:ty, $from_num:expr) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                de_str_or_num(d, $from_num)
            }
        }
    };
}

/// A MAC address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("invalid MAC address `{s}`: expected six hex bytes like 02:00:00:00:00:01");
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}
serde_via_str!(Mac, |_| Err(
    "a MAC address must be a string like 02:00:00:00:00:01".to_string()
));

/// An IPv4 or IPv6 prefix, written `10.0.0.0/8`; a bare address is a host prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    /// Network address; bits past `len` are zero.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl IpPrefix {
    /// The address as 16 bytes: IPv4 in the first four, the rest zero (the flow key's layout).
    pub fn key_bytes(&self) -> [u8; 16] {
        ip_key_bytes(self.addr)
    }

    /// The prefix's mask in the flow key's layout.
    pub fn mask_bytes(&self) -> [u8; 16] {
        // The top `len` bits of the 16 bytes (IPv4 lives in the first four).
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.len))
            .unwrap_or(0);
        mask.to_be_bytes()
    }
}

/// An address in the flow key's 16-byte layout.
pub fn ip_key_bytes(addr: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match addr {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out = a.octets(),
    }
    out
}

impl FromStr for IpPrefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("invalid prefix `{s}`: `{a}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => l.parse::<u8>().ok().filter(|&n| n <= max).ok_or_else(|| {
                format!("invalid prefix `{s}`: length must be a number from 0 to {max}")
            })?,
        };
        let p = IpPrefix { addr, len };
        let bytes = p.key_bytes();
        let mask = p.mask_bytes();
        if bytes.iter().zip(mask).any(|(b, m)| b & !m != 0) {
            return Err(format!(
                "invalid prefix `{s}`: bits set past the prefix length {len}"
            ));
        }
        Ok(p)
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}
serde_via_str!(IpPrefix, |_| Err(
    "an IP prefix must be a string like 10.0.0.0/8".to_string()
));

/// A value under a mask, written `value` (exact) or `value/mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Masked<T> {
    /// Value; bits outside the mask are zero.
    pub value: T,
    /// Mask; a 1 bit must match.
    pub mask: T,
}

impl FromStr for Masked<u16> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let field = |t: &str| in_range(parse_int(t)?, 0xffff, "value").map(|n| n as u16);
        let (value, mask) = match s.split_once('/') {
            Some((v, m)) => (field(v)?, field(m)?),
            None => (field(s)?, 0xffff),
        };
        if value & !mask != 0 {
            return Err(format!("`{s}`: value has bits outside the mask"));
        }
        Ok(Masked { value, mask })
    }
}

impl fmt::Display for Masked<u16> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mask == 0xffff {
            write!(f, "{}", self.value)
        } else {
            write!(f, "{:#06x}/{:#06x}", self.value, self.mask)
        }
    }
}
serde_via_str!(Masked<u16>, |n| in_range(n, 0xffff, "port").map(|v| {
    Masked {
        value: v as u16,
        mask: 0xffff,
    }
}));

/// TCP flags under a mask, written `+syn-ack` (OVS style) or `0x02/0x12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpFlags(pub Masked<u8>);

const FLAG_NAMES: [(&str, u8); 8] = [
    ("fin", flags::FIN),
    ("syn", flags::SYN),
    ("rst", flags::RST),
    ("psh", flags::PSH),
    ("ack", flags::ACK),
    ("urg", flags::URG),
    ("ece", flags::ECE),
    ("cwr", flags::CWR),
];

impl FromStr for TcpFlags {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.starts_with(['+', '-']) {
            let (mut value, mut mask) = (0u8, 0u8);
            let mut rest = s;
            while let Some(sign) = rest.chars().next() {
                rest = &rest[1..];
                let end = rest.find(['+', '-']).unwrap_or(rest.len());
                let name = &rest[..end];
                rest = &rest[end..];
                let bit = FLAG_NAMES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b).ok_or_else(|| {
                    format!("invalid TCP flags `{s}`: unknown flag `{name}` (fin syn rst psh ack urg ece cwr)")
                })?;
                mask |= bit;
                if sign == '+' {
                    value |= bit;
                }
            }
            return Ok(TcpFlags(Masked { value, mask }));
        }
        let byte = |t: &str| in_range(parse_int(t)?, 0xff, "TCP flags").map(|n| n as u8);
        let (value, mask) = match s.split_once('/') {
            Some((v, m)) => (byte(v)?, byte(m)?),
            None => (byte(s)?, 0xff),
        };
        if value & !mask != 0 {
            return Err(format!(
                "invalid TCP flags `{s}`: value has bits outside the mask"
            ));
        }
        Ok(TcpFlags(Masked { value, mask }))
    }
}

impl fmt::Display for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#04x}/{:#04x}", self.0.value, self.0.mask)
    }
}
serde_via_str!(TcpFlags, |n| in_range(n, 0xff, "TCP flags").map(|v| {
    TcpFlags(Masked {
        value: v as u8,
        mask: 0xff,
    })
}));

/// A VLAN match: a VID (1..=4094), or `untagged`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VlanMatch {
    /// Frames without a VLAN tag.
    Untagged,
    /// Frames whose outer tag carries this VID.
    Vid(u16),
}

fn vid(n: u64) -> Result<VlanMatch, String> {
    if (1..=4094).contains(&n) {
        Ok(VlanMatch::Vid(n as u16))
    } else {
        Err(format!("VLAN id {n} out of range (1 to 4094)"))
    }
}

impl FromStr for VlanMatch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "untagged" {
            Ok(VlanMatch::Untagged)
        } else {
            vid(parse_int(s).map_err(|e| format!("{e}: expected a VLAN id or `untagged`"))?)
        }
    }
}

impl fmt::Display for VlanMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VlanMatch::Untagged => f.write_str("untagged"),
            VlanMatch::Vid(v) => write!(f, "{v}"),
        }
    }
}
serde_via_str!(VlanMatch, vid);

/// An EtherType: a number (at least 0x0600) or `ipv4`, `ipv6`, `arp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EthType(pub u16);

fn ethtype(n: u64) -> Result<EthType, String> {
    if (0x0600..=0xffff).contains(&n) {
        Ok(EthType(n as u16))
    } else {
        Err(format!("EtherType {n:#x} out of range (0x0600 to 0xffff)"))
    }
}

impl FromStr for EthType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ipv4" => Ok(EthType(ethertype::IPV4)),
            "ipv6" => Ok(EthType(ethertype::IPV6)),
            "arp" => Ok(EthType(ethertype::ARP)),
            _ => ethtype(
                parse_int(s)
                    .map_err(|e| format!("{e}: expected an EtherType or ipv4, ipv6, arp"))?,
            ),
        }
    }
}

impl fmt::Display for EthType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ethertype::IPV4 => f.write_str("ipv4"),
            ethertype::IPV6 => f.write_str("ipv6"),
            ethertype::ARP => f.write_str("arp"),
            n => write!(f, "{n:#06x}"),
        }
    }
}
serde_via_str!(EthType, ethtype);

/// An IP protocol: a number or `tcp`, `udp`, `icmp`, `icmpv6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpProto(pub u8);

fn proto(n: u64) -> Result<IpProto, String> {
    in_range(n, 255, "IP protocol").map(|n| IpProto(n as u8))
}

impl FromStr for IpProto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(IpProto(ipproto::TCP)),
            "udp" => Ok(IpProto(ipproto::UDP)),
            "icmp" => Ok(IpProto(ipproto::ICMP)),
            "icmpv6" => Ok(IpProto(ipproto::ICMPV6)),
            _ => proto(parse_int(s).map_err(|e| {
                format!("{e}: expected a protocol number or tcp, udp, icmp, icmpv6")
            })?),
        }
    }
}

impl fmt::Display for IpProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ipproto::TCP => f.write_str("tcp"),
            ipproto::UDP => f.write_str("udp"),
            ipproto::ICMP => f.write_str("icmp"),
            ipproto::ICMPV6 => f.write_str("icmpv6"),
            n => write!(f, "{n}"),
        }
    }
}
serde_via_str!(IpProto, proto);

/// Decodes hex text (Geneve option data).
pub(crate) fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim_start_matches("0x");
    if !s.len().is_multiple_of(2) {
        return Err(format!("`{s}` is not hex: odd number of digits"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("`{s}` is not hex")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!("10.0.0.0/8".parse::<IpPrefix>().unwrap().len, 8);
        assert_eq!("10.0.0.1".parse::<IpPrefix>().unwrap().len, 32);
        assert!(
            "10.0.0.1/8"
                .parse::<IpPrefix>()
                .unwrap_err()
                .contains("bits set past")
        );
        assert!(
            "10.0.0.0/33"
                .parse::<IpPrefix>()
                .unwrap_err()
                .contains("length")
        );
        assert_eq!(
            "2001:db8::/32".parse::<IpPrefix>().unwrap().mask_bytes()[..5],
            [0xff, 0xff, 0xff, 0xff, 0]
        );
        assert_eq!(
            "10.0.0.0/12".parse::<IpPrefix>().unwrap().mask_bytes()[..3],
            [0xff, 0xf0, 0]
        );
    }

    #[test]
    fn tcp_flags_ovs_syntax() {
        let f: TcpFlags = "+syn-ack".parse().unwrap();
        assert_eq!(
            f.0,
            Masked {
                value: flags::SYN,
                mask: flags::SYN | flags::ACK
            }
        );
        assert!("+syn-bogus".parse::<TcpFlags>().is_err());
    }

    #[test]
    fn masked_port() {
        assert_eq!(
            "0x0400/0xfc00".parse::<Masked<u16>>().unwrap(),
            Masked {
                value: 0x400,
                mask: 0xfc00
            }
        );
        assert!("0x0401/0xfc00".parse::<Masked<u16>>().is_err());
        assert!("70000".parse::<Masked<u16>>().is_err());
    }
}
