//! Frames written as pcapng, one interface per port of a rule set (and one
//! for the host stack), readable by tcpdump and Wireshark; frames read
//! from pcap or pcapng.

use anyhow::{Context, Result, bail};
use dse_datapath::RuleSet;
use dse_datapath::verify::Probe;
use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::Block;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{PcapNgReader, PcapNgWriter};
use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

/// Where a frame was: on a port (by index), or handed to the host stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// On this port.
    Port(u16),
    /// Handed to the host stack.
    Host,
}

/// Writes `frames` to `path` as pcapng: an interface for each port of
/// `set`, named as the port, and one named `host`; the frames in order, a
/// microsecond apart.
///
/// # Errors
/// The file cannot be created or written.
pub fn write<'a>(
    path: &Path,
    set: &RuleSet,
    frames: impl IntoIterator<Item = (Place, &'a [u8])>,
) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = PcapNgWriter::new(std::io::BufWriter::new(file))
        .with_context(|| format!("writing {}", path.display()))?;
    let names: Vec<&str> = set
        .ports
        .iter()
        .map(|p| p.name.as_str())
        .chain(["host"])
        .collect();
    for name in &names {
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: 0,
            options: vec![InterfaceDescriptionOption::IfName(Cow::Borrowed(name))],
        })
        .with_context(|| format!("writing {}", path.display()))?;
    }
    for (i, (place, frame)) in frames.into_iter().enumerate() {
        let interface = match place {
            Place::Port(index) => set.ports.iter().position(|p| p.index == index),
            Place::Host => None,
        }
        .unwrap_or(names.len() - 1);
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: interface as u32,
            timestamp: Duration::from_micros(i as u64),
            original_len: frame.len() as u32,
            data: Cow::Borrowed(frame),
            options: vec![],
        })
        .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The Ethernet frames of the pcap or pcapng file `path`, as probes: a
/// frame arrives on the port its pcapng interface is named after, else on
/// `in_port` (a port name), else on `set`'s first port.
///
/// # Errors
/// The file does not read, is neither pcap nor pcapng, holds frames of
/// another link type, or `in_port` names no port.
pub fn read(path: &Path, set: &RuleSet, in_port: Option<&str>) -> Result<Vec<Probe>> {
    let fallback = match in_port {
        Some(name) => port_index(set, name)?,
        None => set.ports.first().map_or(0, |p| p.index),
    };
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path.display();
    let why = |n: usize| format!("{name} #{n}");
    let mut out = Vec::new();
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut r = PcapNgReader::new(bytes.as_slice())
            .with_context(|| format!("{name} is not a pcapng file"))?;
        while let Some(block) = r.next_block() {
            let block = block.with_context(|| format!("{name}: a damaged block"))?;
            let Block::EnhancedPacket(p) = block else {
                continue;
            };
            let p = p.into_owned();
            let interface = r
                .interfaces()
                .get(p.interface_id as usize)
                .with_context(|| format!("{name}: a packet of an undescribed interface"))?;
            if interface.linktype != DataLink::ETHERNET {
                bail!(
                    "{name}: interface {} is {:?}; only Ethernet frames run through the rules",
                    p.interface_id,
                    interface.linktype
                );
            }
            let port = interface
                .options
                .iter()
                .find_map(|o| match o {
                    InterfaceDescriptionOption::IfName(n) => set.port(n).map(|p| p.index),
                    _ => None,
                })
                .unwrap_or(fallback);
            out.push(Probe {
                in_port: port,
                frame: p.data.into_owned(),
                why: why(out.len() + 1),
            });
        }
    } else {
        let mut r = PcapReader::new(bytes.as_slice())
            .with_context(|| format!("{name} is neither a pcap nor a pcapng file"))?;
        if r.header().datalink != DataLink::ETHERNET {
            bail!(
                "{name} is {:?}; only Ethernet frames run through the rules",
                r.header().datalink
            );
        }
        while let Some(p) = r.next_packet() {
            let p = p.with_context(|| format!("{name}: a damaged packet"))?;
            out.push(Probe {
                in_port: fallback,
                frame: p.data.into_owned(),
                why: why(out.len() + 1),
            });
        }
    }
    Ok(out)
}

/// The index of `set`'s port `name`.
///
/// # Errors
/// It has none of that name; the message names those it has.
pub fn port_index(set: &RuleSet, name: &str) -> Result<u16> {
    set.port(name).map(|p| p.index).with_context(|| {
        let names: Vec<&str> = set.ports.iter().map(|p| p.name.as_str()).collect();
        format!(
            "port {name} is not in the rules: they have {}",
            names.join(", ")
        )
    })
}
