//! The subjects under test, each set up in the DUT namespace to forward a
//! workload from port `pa` to port `pb`, and torn down on drop.

use super::BenchError;
use super::peers::{self, Ovs, nft, openflow};
use super::topology::Topology;
use crate::lab::pin_thread;
use dse_datapath::datapath::{Datapath, Transaction};
use dse_datapath::emu::{AfXdpFloor, EmuConfig, HostPath};
use dse_datapath::rule::RuleSet;
use dse_datapath::xdp::{Program, XdpConfig, XdpDatapath, XdpLimits};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What forwards the traffic.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Subject {
    /// dse's offloaded path: the XDP datapath on the DUT's veths.
    Xdp,
    /// dse's host path: the emulated datapath on AF_XDP (AF_PACKET where
    /// the kernel refuses AF_XDP), one worker.
    Emu,
    /// Linux: nftables `netdev` ingress chains with `fwd`, translated from
    /// the same rules (the baseline of the ratios).
    Nft,
    /// Open vSwitch's userspace datapath with translated OpenFlow flows.
    Ovs,
    /// The limit: an XDP program that redirects every frame to the egress
    /// port and parses nothing, the fastest this machine forwards on the
    /// same path (it ignores the rules).
    Limit,
    /// The host path's floor: its AF_XDP sockets and copies with no
    /// pipeline, every frame out of the egress port (it ignores the rules).
    Floor,
}

impl Subject {
    /// Every subject, in table order.
    pub const ALL: [Subject; 6] = [
        Subject::Xdp,
        Subject::Emu,
        Subject::Nft,
        Subject::Ovs,
        Subject::Limit,
        Subject::Floor,
    ];

    /// Whether it forwards by the rules (the limit and the floor forward
    /// every frame).
    pub fn follows_rules(self) -> bool {
        !matches!(self, Subject::Limit | Subject::Floor)
    }

    /// How it is named in tables.
    pub fn label(self) -> &'static str {
        match self {
            Subject::Xdp => "dse xdp (offloaded)",
            Subject::Emu => "dse emu (host path)",
            Subject::Nft => "Linux nftables",
            Subject::Ovs => "OVS userspace",
            Subject::Limit => "limit (XDP redirect)",
            Subject::Floor => "AF_XDP floor",
        }
    }

    /// Why it cannot run on this machine, if it cannot.
    pub fn missing(self) -> Option<&'static str> {
        match self {
            Subject::Nft if !peers::nft_available() => {
                Some("nft is not installed (apt install nftables)")
            }
            Subject::Ovs if !Ovs::available() => {
                Some("ovs-vswitchd is not installed (apt install openvswitch-switch)")
            }
            _ => None,
        }
    }
}

/// An nftables table in a namespace, deleted on drop.
pub struct NftTable {
    ns: String,
}

impl Drop for NftTable {
    fn drop(&mut self) {
        let _ = crate::lab::run(&[
            "ip",
            "netns",
            "exec",
            &self.ns,
            "nft",
            "delete",
            "table",
            "netdev",
            nft::TABLE,
        ]);
    }
}

/// An XDP datapath whose pins are removed on drop: its links are pinned
/// (to outlive the process that made them), so only removing the pins
/// takes the program off the interfaces.
pub struct PinnedXdp {
    dp: Option<XdpDatapath>,
    pins: PathBuf,
}

impl PinnedXdp {
    /// The datapath.
    pub fn datapath(&self) -> &XdpDatapath {
        self.dp.as_ref().expect("present until dropped")
    }
}

impl Drop for PinnedXdp {
    fn drop(&mut self) {
        if let Some(dp) = self.dp.take() {
            let _ = dp.detach();
        }
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

/// The limit program on the ingress interface; dropping it detaches it.
pub struct LimitProgram(#[allow(dead_code)] aya::Ebpf);

/// A subject forwarding in the DUT namespace.
pub enum Running {
    /// The XDP datapath.
    Xdp(Box<PinnedXdp>),
    /// The host path.
    Emu(HostPath),
    /// The nftables table.
    Nft(NftTable),
    /// Open vSwitch.
    Ovs(Ovs),
    /// The limit.
    Limit(LimitProgram),
    /// The host path's floor.
    Floor(AfXdpFloor),
}

/// Where a set-up subject keeps its files.
pub struct Places {
    /// The bpffs directory the XDP datapath pins under (removed after).
    pub pins: PathBuf,
    /// A scratch directory for translations and OVS's files.
    pub work: PathBuf,
    /// The CPU the subject's own threads run on.
    pub cpu: usize,
}

/// Sets `subject` up to forward `rules` in `topo`'s DUT namespace and
/// returns it with the time the rules took to go in: dse's backends start
/// with the ports only and are timed applying the rule set as one
/// transaction; `nft -f` and `ovs-ofctl add-flows --bundle` are timed
/// loading the translation into an empty table.
///
/// # Errors
/// [`BenchError`] naming the subject and what failed.
pub fn set_up(
    subject: Subject,
    topo: &Topology,
    rules: &RuleSet,
    at: &Places,
) -> Result<(Running, Duration), BenchError> {
    let failed = |what: String| BenchError::Subject { subject, what };
    let interfaces = topo.interfaces();
    match subject {
        Subject::Xdp => {
            let _ = std::fs::remove_dir_all(&at.pins);
            let config = XdpConfig {
                pin_dir: at.pins.clone(),
                interfaces,
                skb_mode: false,
                limits: limits_for(rules),
                program: Program::V1,
            };
            let dp = topo
                .dut
                .run(|| XdpDatapath::start(ports_only(rules), config))?
                .map_err(|e| failed(e.to_string()))?;
            let took = timed_apply(topo, &dp, rules)?.map_err(|e| failed(e.to_string()))?;
            let pinned = PinnedXdp {
                dp: Some(dp),
                pins: at.pins.clone(),
            };
            Ok((Running::Xdp(Box::new(pinned)), took))
        }
        Subject::Emu => {
            let config = EmuConfig {
                workers: 1,
                ..EmuConfig::default()
            };
            let cpu = at.cpu;
            // The host path's threads inherit the namespace and the CPU.
            let dp = topo
                .dut
                .run(|| {
                    let _ = pin_thread(cpu);
                    HostPath::start(ports_only(rules), config, &interfaces)
                })?
                .map_err(|e| failed(e.to_string()))?;
            let took = timed_apply(topo, &dp, rules)?.map_err(|e| failed(e.to_string()))?;
            Ok((Running::Emu(dp), took))
        }
        Subject::Nft => {
            let script = nft::translate(rules, &interfaces)?;
            let file = write(&at.work, "rules.nft", &script)?;
            let guard = NftTable {
                ns: topo.dut.name().into(),
            };
            let took = peers::nft_load(&topo.dut, &file)?;
            Ok((Running::Nft(guard), took))
        }
        Subject::Limit => {
            let (ingress, egress) = (interfaces["pa"].clone(), interfaces["pb"].clone());
            let program = topo.dut.run(|| limit(&ingress, &egress))?.map_err(failed)?;
            Ok((Running::Limit(program), Duration::ZERO))
        }
        Subject::Floor => {
            let (ingress, egress) = (&interfaces["pa"], &interfaces["pb"]);
            let cpu = at.cpu;
            // Its thread inherits the namespace and the CPU.
            let floor = topo
                .dut
                .run(|| {
                    let _ = pin_thread(cpu);
                    AfXdpFloor::start(ingress, egress)
                })?
                .map_err(|e| failed(e.to_string()))?;
            Ok((Running::Floor(floor), Duration::ZERO))
        }
        Subject::Ovs => {
            let flows = openflow::translate(rules, &interfaces)?;
            let file = write(&at.work, "flows.of", &flows)?;
            let ovs = Ovs::start(&topo.dut, &at.work.join("ovs"), Some(at.cpu))?;
            let ports: Vec<(u32, &str)> = rules
                .ports
                .iter()
                .map(|p| (openflow::of_port(p.index), interfaces[&p.name].as_str()))
                .collect();
            ovs.bridge(&ports)?;
            let took = ovs.add_flows(&file)?;
            let (want, have) = (flows.lines().count(), ovs.flow_count()?);
            if have != want {
                return Err(failed(format!("{have} flows installed of {want}")));
            }
            Ok((Running::Ovs(ovs), took))
        }
    }
}

/// The limit program, redirecting every frame of `ingress` to `egress`.
fn limit(ingress: &str, egress: &str) -> Result<LimitProgram, String> {
    let mut ebpf = aya::EbpfLoader::new()
        .load(dse_ebpf::limit_object())
        .map_err(|e| format!("loading its object: {e}"))?;
    let out = dse_datapath::netdev::interface_index(egress).map_err(|e| e.to_string())?;
    let mut port: aya::maps::DevMap<_> = ebpf
        .map_mut(dse_ebpf::LIMIT_PORT)
        .ok_or("no devmap")?
        .try_into()
        .map_err(|e: aya::maps::MapError| e.to_string())?;
    port.set(0, out, None, 0).map_err(|e| e.to_string())?;
    let prog: &mut aya::programs::Xdp = ebpf
        .program_mut(dse_ebpf::LIMIT_PROGRAM)
        .ok_or("no program")?
        .try_into()
        .map_err(|e: aya::programs::ProgramError| e.to_string())?;
    prog.load().map_err(|e| format!("verifying: {e}"))?;
    prog.attach(ingress, aya::programs::XdpMode::Driver)
        .map_err(|e| format!("attaching to {ingress}: {e}"))?;
    Ok(LimitProgram(ebpf))
}

/// The time `dp` takes to apply `rules` as one transaction, in the DUT
/// namespace (applying binds ports by name again).
fn timed_apply(
    topo: &Topology,
    dp: &impl Datapath,
    rules: &RuleSet,
) -> Result<Result<Duration, dse_datapath::datapath::DatapathError>, BenchError> {
    Ok(topo.dut.run(|| {
        let start = Instant::now();
        dp.apply(Transaction::Replace(rules.clone().into()))
            .map(|_| start.elapsed())
    })?)
}

/// `rules`' ports and meters without its rules: what a subject starts
/// with, so that the timed installation is the rules' alone.
fn ports_only(rules: &RuleSet) -> RuleSet {
    RuleSet {
        rules: Vec::new(),
        ..rules.clone()
    }
}

/// Map sizes that hold `rules` (the small maps for small sets).
pub fn limits_for(rules: &RuleSet) -> XdpLimits {
    if rules.rules.len() < 8_000 {
        XdpLimits::small()
    } else {
        XdpLimits::default()
    }
}

/// Writes `text` to `dir/name` and returns the path.
fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf, BenchError> {
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(dir.join(name), text))
        .map_err(|source| BenchError::Io {
            what: format!("writing {}", dir.join(name).display()),
            source,
        })?;
    Ok(dir.join(name))
}
