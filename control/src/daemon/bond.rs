//! A host's uplink bond, as the agent steers it: which member is active.
//!
//! Through iproute2's `ip` (its `-n` flag enters the bond's namespace),
//! the tool every host that runs a bond has: reading and setting a few
//! attributes twice per DPU reboot is not worth a netlink stack. A bond
//! of kind [`BondKind::Bridge`] sends the host's own frames through its
//! active member with a traffic-control redirect on the bridge (`tc`),
//! and gets its gratuitous ARP from here, sent on a packet socket in the
//! bond's namespace.

use crate::lifecycle::{Bond, BondKind};
use serde_json::Value;
use std::process::Command;

/// Why a bond could not be read or steered.
#[derive(Debug, thiserror::Error)]
pub enum BondError {
    /// `ip` or `tc` could not be run.
    #[error("running iproute2 for bond {bond}: {source}; install iproute2")]
    Spawn {
        /// The bond.
        bond: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// `ip` or `tc` refused.
    #[error("bond {bond}{ns}: {args}: {stderr}")]
    Refused {
        /// The bond.
        bond: String,
        /// ` in namespace NS`, or nothing.
        ns: String,
        /// Its arguments.
        args: String,
        /// What it said.
        stderr: String,
    },
    /// The interface is not what the inventory says it is.
    #[error("{bond}{ns} is not {want} ({found}): {fix}")]
    Kind {
        /// The bond.
        bond: String,
        /// ` in namespace NS`, or nothing.
        ns: String,
        /// What the inventory says it is.
        want: &'static str,
        /// What it is.
        found: String,
        /// How to make it one.
        fix: &'static str,
    },
    /// Asked to make active an interface that is not its member.
    #[error(
        "{member} is not a member of bond {bond}{ns}: enslave it, or fix the host's bond.members"
    )]
    NotMember {
        /// The bond.
        bond: String,
        /// ` in namespace NS`, or nothing.
        ns: String,
        /// The interface.
        member: String,
    },
    /// The gratuitous ARP could not be sent.
    #[error("bond {bond}{ns}: sending its gratuitous ARP: {source}")]
    Announce {
        /// The bond.
        bond: String,
        /// ` in namespace NS`, or nothing.
        ns: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

fn in_ns(bond: &Bond) -> String {
    bond.netns
        .as_ref()
        .map_or(String::new(), |ns| format!(" in namespace {ns}"))
}

/// Runs `ip [-n NS] ARGS` for `bond`; its standard output.
fn ip(bond: &Bond, args: &[&str]) -> Result<Vec<u8>, BondError> {
    iproute2(bond, "ip", args)
}

/// Runs `tc [-n NS] ARGS` for `bond`; its standard output.
fn tc(bond: &Bond, args: &[&str]) -> Result<Vec<u8>, BondError> {
    iproute2(bond, "tc", args)
}

/// Runs iproute2's `tool [-n NS] ARGS` for `bond`; its standard output.
fn iproute2(bond: &Bond, tool: &str, args: &[&str]) -> Result<Vec<u8>, BondError> {
    let mut cmd = Command::new(tool);
    if let Some(ns) = &bond.netns {
        cmd.args(["-n", ns]);
    }
    let out = cmd.args(args).output().map_err(|source| BondError::Spawn {
        bond: bond.name.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(BondError::Refused {
            bond: bond.name.clone(),
            ns: in_ns(bond),
            args: format!("{tool} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// `ip -d -j link show dev IFNAME` in `bond`'s namespace: the link's JSON.
fn link(bond: &Bond, ifname: &str) -> Result<Value, BondError> {
    let out = ip(bond, &["-d", "-j", "link", "show", "dev", ifname])?;
    let mut links: Value = serde_json::from_slice(&out).unwrap_or_default();
    Ok(links[0].take())
}

/// Checks that `bond` is what its kind says.
fn check_kind(bond: &Bond) -> Result<(), BondError> {
    let l = link(bond, &bond.name)?;
    let kind = l["linkinfo"]["info_kind"].as_str().unwrap_or("none");
    let (ok, want, fix, found) = match bond.kind {
        BondKind::Bond => {
            let mode = l["linkinfo"]["info_data"]["mode"]
                .as_str()
                .unwrap_or("none");
            (
                kind == "bond" && mode == "active-backup",
                "an active-backup bond",
                "make it with `ip link add NAME type bond mode active-backup`",
                format!("kind {kind}, mode {mode}"),
            )
        }
        BondKind::Bridge => (
            kind == "bridge",
            "a bridge",
            "make it with `ip link add NAME type bridge`, or give the bond's kind",
            format!("kind {kind}"),
        ),
    };
    if ok {
        return Ok(());
    }
    Err(BondError::Kind {
        bond: bond.name.clone(),
        ns: in_ns(bond),
        want,
        found,
        fix,
    })
}

/// The link of `member`, checked to be a member of `bond`.
fn member_link(bond: &Bond, member: &str) -> Result<Value, BondError> {
    let l = link(bond, member)?;
    if l["master"].as_str() != Some(bond.name.as_str()) {
        return Err(BondError::NotMember {
            bond: bond.name.clone(),
            ns: in_ns(bond),
            member: member.to_string(),
        });
    }
    Ok(l)
}

/// The active member of `bond` (none while no member is up, or, for a
/// bridge, none learns).
///
/// # Errors
/// [`BondError`]: `ip` failed, `bond` is not of its kind, or a member of
/// the inventory's is not its member.
pub fn active(bond: &Bond) -> Result<Option<String>, BondError> {
    check_kind(bond)?;
    match bond.kind {
        BondKind::Bond => {
            let l = link(bond, &bond.name)?;
            Ok(l["linkinfo"]["info_data"]["active_slave"]
                .as_str()
                .map(str::to_string))
        }
        BondKind::Bridge => {
            let Some(to) = redirected_to(bond)? else {
                return Ok(None);
            };
            member_link(bond, &to)?;
            Ok(Some(to))
        }
    }
}

/// Makes `member` the active member of `bond`, unless it is already; the
/// bond's peers then learn from a gratuitous ARP where it is now.
///
/// # Errors
/// [`BondError`]: `ip` failed, `bond` is not of its kind, or `member` is
/// not its member (the active member is then unchanged).
pub fn make_active(bond: &Bond, member: &str) -> Result<(), BondError> {
    if active(bond)?.as_deref() == Some(member) {
        return Ok(());
    }
    member_link(bond, member)?;
    match bond.kind {
        BondKind::Bond => {
            // Bonding announces the move itself (`num_grat_arp`).
            let set = ["link", "set", "dev", &bond.name, "type", "bond"];
            ip(bond, &[&set[..], &["active_slave", member]].concat())?;
        }
        BondKind::Bridge => {
            // The host's frames never reach the bridge's own forwarding:
            // a filter on its egress redirects each to the active member.
            // Steering replaces that filter; the kernel classifies each
            // frame once, by the old filter or the new, so no frame
            // leaves twice or not at all. (Flags on the bridge's ports
            // would not do: a flooded frame is copied port by port, and a
            // switch between two copies sends it by both or by neither.)
            // The members stay isolated, so nothing crosses from one to
            // the other, and each still takes frames in.
            for m in bond.members.values() {
                let set = ["link", "set", "dev", m, "type", "bridge_slave"];
                ip(
                    bond,
                    &[&set[..], &["isolated", "on", "learning", "off"]].concat(),
                )?;
            }
            if !has_clsact(bond)? {
                tc(bond, &["qdisc", "add", "dev", &bond.name, "clsact"])?;
            }
            let filter = ["filter", "replace", "dev", &bond.name, "egress"];
            let redirect = ["action", "mirred", "egress", "redirect", "dev", member];
            tc(bond, &[&filter[..], &REDIRECT[..], &redirect[..]].concat())?;
            announce(bond)?;
        }
    }
    Ok(())
}

/// The steering filter of a bridge-kind bond, on its egress: one u32
/// filter at a fixed preference and handle, matching every frame, so that
/// `tc filter replace` swaps it whole.
const REDIRECT: [&str; 9] = [
    "pref", "1", "handle", "800::800", "u32", "match", "u32", "0", "0",
];

/// Whether `bond` has its `clsact` queueing discipline.
fn has_clsact(bond: &Bond) -> Result<bool, BondError> {
    let out = tc(bond, &["-j", "qdisc", "show", "dev", &bond.name])?;
    let qdiscs: Value = serde_json::from_slice(&out).unwrap_or_default();
    Ok(qdiscs
        .as_array()
        .is_some_and(|q| q.iter().any(|d| d["kind"] == "clsact")))
}

/// The member a bridge-kind bond's egress filter redirects the host's
/// frames to, if it was steered.
fn redirected_to(bond: &Bond) -> Result<Option<String>, BondError> {
    if !has_clsact(bond)? {
        return Ok(None);
    }
    let out = tc(bond, &["-j", "filter", "show", "dev", &bond.name, "egress"])?;
    let filters: Value = serde_json::from_slice(&out).unwrap_or_default();
    Ok(filters
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["pref"] == 1)
        .flat_map(|f| f["options"]["actions"].as_array().into_iter().flatten())
        .find(|a| a["kind"] == "mirred")
        .and_then(|a| a["to_dev"].as_str())
        .map(str::to_string))
}

/// Sends a gratuitous ARP for each IPv4 address of `bond`, from its MAC,
/// out of its active member (a bridge-kind bond; a bonding one sends its
/// own), so that the wire learns where the host is.
///
/// # Errors
/// [`BondError`]: `ip` failed, or the frames could not be sent.
pub fn announce(bond: &Bond) -> Result<(), BondError> {
    let l = link(bond, &bond.name)?;
    let mac = l["address"].as_str().and_then(parse_mac);
    let out = ip(bond, &["-j", "-4", "addr", "show", "dev", &bond.name])?;
    let addrs: Value = serde_json::from_slice(&out).unwrap_or_default();
    let ips: Vec<[u8; 4]> = addrs[0]["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["local"].as_str()?.parse::<std::net::Ipv4Addr>().ok())
        .map(|a| a.octets())
        .collect();
    let Some(mac) = mac else {
        return Ok(());
    };
    let frames: Vec<Vec<u8>> = ips.iter().map(|ip| gratuitous_arp(mac, *ip)).collect();
    let failed = |source| BondError::Announce {
        bond: bond.name.clone(),
        ns: in_ns(bond),
        source,
    };
    let name = bond.name.clone();
    let netns = bond.netns.clone();
    std::thread::spawn(move || {
        if let Some(ns) = netns {
            enter_netns(&ns)?;
        }
        send_raw(&name, &frames)
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("the sending thread panicked")))
    .map_err(failed)
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    Some(mac)
}

/// A broadcast ARP request from `mac` for its own address `ip`.
fn gratuitous_arp(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
    use etherparse::{ArpEthIpv4Packet, ArpOperation, PacketBuilder};
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: mac,
        sender_ipv4: ip,
        target_mac: [0; 6],
        target_ipv4: ip,
    };
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(mac, [0xff; 6])
        .arp(arp.into())
        .write_to_vec(&mut frame)
        .expect("an ARP frame fits a Vec");
    frame
}

/// Moves the calling thread into network namespace `ns` (`ip netns`'s).
fn enter_netns(ns: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{ns}"))?;
    // SAFETY: setns on a valid namespace fd changes only this thread's
    // network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `frames` out of interface `ifname` on a packet socket.
fn send_raw(ifname: &str, frames: &[Vec<u8>]) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let name = std::ffi::CString::new(ifname).map_err(std::io::Error::other)?;
    // SAFETY: a C string for if_nametoindex; a socket call with constant
    // arguments whose fd is owned at once.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_ll is valid; its fields are set below.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_ifindex = index as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    for f in frames {
        // SAFETY: a valid fd, buffer and address of the stated lengths.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                f.as_ptr().cast(),
                f.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gratuitous_arp_names_its_sender_as_its_target() {
        let mac = [2, 0, 0, 0, 0, 7];
        let f = gratuitous_arp(mac, [10, 79, 1, 2]);
        let p = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = &p.link else {
            panic!("an Ethernet frame: {p:?}")
        };
        assert_eq!(eth.destination(), [0xff; 6]);
        assert_eq!(eth.source(), mac);
        let Some(etherparse::NetSlice::Arp(arp)) = &p.net else {
            panic!("an ARP packet: {p:?}")
        };
        assert_eq!(arp.operation(), etherparse::ArpOperation::REQUEST);
        assert_eq!(arp.sender_hw_addr(), mac);
        assert_eq!(arp.sender_protocol_addr(), [10, 79, 1, 2]);
        assert_eq!(arp.target_protocol_addr(), [10, 79, 1, 2]);
    }

    #[test]
    fn macs_are_read_as_ip_prints_them() {
        assert_eq!(
            parse_mac("02:0a:ff:00:01:9c"),
            Some([2, 10, 255, 0, 1, 156])
        );
        assert_eq!(parse_mac("02:0a"), None);
        assert_eq!(parse_mac("zz:0a:ff:00:01:9c"), None);
    }
}
