//! Frames written as pcapng, one interface per port of a rule set (and one
//! for the host stack), readable by tcpdump and Wireshark.

use anyhow::{Context, Result};
use dse_datapath::RuleSet;
use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
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
