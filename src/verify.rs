//! `dse verify`: a rule set's probe frames through the reference pipeline
//! and each backend, every disagreement with a reproducer, and the rules
//! no packet reaches.

use crate::pcap::Place;
use anyhow::{Context, Result, bail};
use dse_datapath::RuleSet;
use dse_datapath::analysis::{Finding, unreached};
use dse_datapath::pipeline::Verdict;
use dse_datapath::verify::{
    Disagreement, Emu, Got, Probe, Subject, Xdp, compare, probes, reproducer,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// A backend `dse verify` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The XDP program under BPF_PROG_TEST_RUN (root and bpffs).
    Xdp,
    /// The host path's emulated datapath on in-memory ports.
    Emu,
}

/// What `dse verify` found.
pub struct Report {
    /// Probe frames run.
    pub probes: usize,
    /// Backends checked.
    pub backends: Vec<String>,
    /// Where a backend and the reference differ.
    pub disagreements: Vec<Disagreement>,
    /// Rules no packet reaches.
    pub unreached: Vec<Finding>,
    /// The reproducers written, one per disagreement (with `--out`).
    pub written: Vec<PathBuf>,
}

/// A bpffs directory of this run's own, removed on drop.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Checks `set` on `backends`; XDP pins under `bpffs`. With `out`, writes
/// there what each backend (and the reference) sent, as
/// `<backend>.pcapng`, and a reproducer of each disagreement.
///
/// # Errors
/// A backend that cannot start (XDP without root or bpffs, say), or a
/// reproducer that cannot be written.
pub fn run(
    set: &RuleSet,
    backends: &[Backend],
    bpffs: &Path,
    out: Option<&Path>,
) -> Result<Report> {
    let pins = Pins(bpffs.join(format!("dse-verify-{}", std::process::id())));
    let mut subjects: Vec<Box<dyn Subject>> = Vec::new();
    for b in backends {
        subjects.push(match b {
            Backend::Xdp => Box::new(Xdp::load(set, &pins.0).with_context(|| {
                format!(
                    "loading the XDP program (pins under {}): it needs root and bpffs; --backend emu checks the host path alone",
                    pins.0.display()
                )
            })?),
            Backend::Emu => {
                Box::new(Emu::start(set).context("starting the emulated datapath")?)
            }
        });
    }
    let frames = probes(set);
    let c = compare(set, &frames, &mut subjects)?;
    let mut written = Vec::new();
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, outcomes) in &c.outcomes {
            let path = dir.join(format!("{name}.pcapng"));
            crate::pcap::write(&path, set, frames_out(&frames, outcomes))?;
        }
        for (i, d) in c.disagreements.iter().enumerate() {
            written.push(write_reproducer(dir, i + 1, set, d)?);
        }
    }
    Ok(Report {
        probes: frames.len(),
        backends: subjects.iter().map(|s| s.name().to_string()).collect(),
        disagreements: c.disagreements,
        unreached: unreached(set),
        written,
    })
}

/// The frames a backend sent, where it sent them: out of a port (`output`,
/// or `tx` out of the one it came in on), or to the host stack.
fn frames_out<'a>(
    probes: &'a [Probe],
    outcomes: &'a [Got],
) -> impl Iterator<Item = (Place, &'a [u8])> {
    probes.iter().zip(outcomes).filter_map(|(p, got)| {
        let Got::Outcome(o) = got else {
            return None;
        };
        let place = match o.verdict {
            Verdict::Output(port) => Place::Port(port),
            Verdict::Tx => Place::Port(p.in_port),
            Verdict::Pass => Place::Host,
            Verdict::Drop(_) => return None,
        };
        Some((place, o.bytes.as_slice()))
    })
}

/// Writes disagreement `n`'s reproducer under `dir`: `disagreement-N.yaml`,
/// the rules involved (all of them when none matched), and
/// `disagreement-N.pcapng`, the frame on the port it arrives on.
fn write_reproducer(dir: &Path, n: usize, set: &RuleSet, d: &Disagreement) -> Result<PathBuf> {
    let small = if d.rules.is_empty() {
        set.clone()
    } else {
        reproducer(set, &d.rules)
    };
    let rules = dir.join(format!("disagreement-{n}.yaml"));
    let text = format!(
        "# {} on {}: disagreement-{n}.pcapng arrives on port index {}\n{}",
        d.probe.why,
        d.subject,
        d.probe.in_port,
        serde_norway::to_string(&small).context("writing the rules")?
    );
    std::fs::write(&rules, text).with_context(|| format!("writing {}", rules.display()))?;
    let frame = dir.join(format!("disagreement-{n}.pcapng"));
    let input = [(Place::Port(d.probe.in_port), d.probe.frame.as_slice())];
    crate::pcap::write(&frame, &small, input)?;
    Ok(rules)
}

/// The report for people.
pub fn print(r: &Report) {
    crate::outln!(
        "{} probe frames through the reference and {}",
        r.probes,
        r.backends.join(", ")
    );
    for (i, d) in r.disagreements.iter().enumerate() {
        crate::outln!(
            "disagreement {}: {} on {} (in_port {})",
            i + 1,
            d.subject,
            d.probe.why,
            d.probe.in_port
        );
        crate::outln!("  frame:     {}", hex::encode(&d.probe.frame));
        crate::outln!(
            "  rules that match it, first the reference's: {:?}",
            d.rules
        );
        crate::outln!("  reference: {}", d.reference);
        crate::outln!("  {:<10} {}", format!("{}:", d.subject), d.got);
        if let Some(p) = r.written.get(i) {
            crate::outln!("  reproducer: {}", p.display());
        }
    }
    for f in &r.unreached {
        crate::outln!("warning: {f}");
    }
    if r.disagreements.is_empty() {
        crate::outln!("every frame agrees");
    }
}

/// The report for scripts.
pub fn json(r: &Report) -> Value {
    let disagreements: Vec<Value> = r
        .disagreements
        .iter()
        .enumerate()
        .map(|(i, d)| {
            json!({
                "backend": d.subject,
                "probe": d.probe.why,
                "in_port": d.probe.in_port,
                "frame": hex::encode(&d.probe.frame),
                "rules": d.rules,
                "reference": d.reference.to_string(),
                "got": d.got.to_string(),
                "reproducer": r.written.get(i),
            })
        })
        .collect();
    let unreached: Vec<Value> = r
        .unreached
        .iter()
        .map(|f| json!({"rule": f.rule, "warning": f.to_string()}))
        .collect();
    json!({
        "probes": r.probes,
        "backends": r.backends,
        "agree": r.disagreements.is_empty(),
        "disagreements": disagreements,
        "unreached": unreached,
    })
}

/// Fails when a frame disagreed, so that the exit code says so.
///
/// # Errors
/// How many disagreed.
pub fn verdict(r: &Report) -> Result<()> {
    if !r.disagreements.is_empty() {
        bail!(
            "{} of {} probe frames disagree with the reference",
            r.disagreements.len(),
            r.probes
        );
    }
    Ok(())
}
