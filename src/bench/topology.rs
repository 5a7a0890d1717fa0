//! The bench's topology: three namespaces in a line.
//!
//! ```text
//!  gen ns            dut ns                       sink ns
//!  g<tag> ------- i<tag> [subject] o<tag> ------- s<tag>
//!  dse_gen (XDP live frames)   port pa   port pb   dse_sink (XDP)
//! ```
//!
//! The subject under test (the XDP datapath, the host path, nftables or
//! Open vSwitch) forwards from `i<tag>` (dse port `pa`) to `o<tag>` (port
//! `pb`) inside the DUT namespace, so nothing of the root namespace is
//! touched. Every interface lives in one of the namespaces: dropping the
//! topology deletes the namespaces and with them everything.

use crate::lab::{LabError, Netns, Veth, mac_of};
use std::collections::BTreeMap;

/// The three namespaces and two veth pairs; deleted on drop.
#[derive(Debug)]
pub struct Topology {
    /// Where the generator sends from.
    pub gen_ns: Netns,
    /// Where the subject forwards.
    pub dut: Netns,
    /// Where the sink counts.
    pub sink_ns: Netns,
    /// Generator end (`a`, in `gen_ns`) and ingress port end (`b`, in `dut`).
    pub ingress: Veth,
    /// Egress port end (`a`, in `dut`) and sink end (`b`, in `sink_ns`).
    pub egress: Veth,
    /// The generator end's MAC (the frames' source).
    pub gen_mac: [u8; 6],
    /// The sink end's MAC (the frames' destination).
    pub sink_mac: [u8; 6],
}

impl Topology {
    /// Builds the topology; `tag` (at most 8 characters, letters and
    /// digits) keeps its names apart from any other run's.
    ///
    /// # Errors
    /// [`LabError`] naming the step that failed (not root, say); whatever
    /// was made before it is removed.
    pub fn build(tag: &str) -> Result<Topology, LabError> {
        if tag.is_empty() || tag.len() > 8 || !tag.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(LabError::Command {
                command: format!("bench topology {tag:?}"),
                stderr: "a tag is 1 to 8 letters or digits".into(),
            });
        }
        let gen_ns = Netns::create(&format!("dseb-{tag}-gen"))?;
        let dut = Netns::create(&format!("dseb-{tag}-dut"))?;
        let sink_ns = Netns::create(&format!("dseb-{tag}-sink"))?;
        let ingress = Veth::create(&format!("g{tag}"), &gen_ns, &format!("i{tag}"), &dut)?;
        let egress = Veth::create(&format!("o{tag}"), &dut, &format!("s{tag}"), &sink_ns)?;
        let gen_mac = mac_of(&gen_ns, &ingress.a)?;
        let sink_mac = mac_of(&sink_ns, &egress.b)?;
        Ok(Topology {
            gen_ns,
            dut,
            sink_ns,
            ingress,
            egress,
            gen_mac,
            sink_mac,
        })
    }

    /// The dse ports bound to the DUT's interfaces: `pa` in, `pb` out.
    pub fn interfaces(&self) -> BTreeMap<String, String> {
        [
            ("pa".to_string(), self.ingress.b.clone()),
            ("pb".to_string(), self.egress.a.clone()),
        ]
        .into()
    }

    /// The namespaces' names, for checks that they are gone.
    pub fn namespaces(&self) -> [String; 3] {
        [
            self.gen_ns.name().to_string(),
            self.dut.name().to_string(),
            self.sink_ns.name().to_string(),
        ]
    }
}

/// Whether namespace `name` exists.
pub fn namespace_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}
