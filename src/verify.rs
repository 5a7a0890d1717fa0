//! `dse verify`: a rule set's probe frames through the reference pipeline
//! and each backend, every disagreement with a reproducer, and the rules
//! no packet reaches.

use crate::pcap::Place;
use anyhow::{Context, Result, bail};
use dse_datapath::RuleSet;
use dse_datapath::analysis::{Finding, unreached};
use dse_datapath::pipeline::Verdict;
use dse_datapath::verify::{
    CounterDisagreement, Disagreement, Emu, Got, Probe, Subject, Xdp, compare_many, generate,
    probes, reproducer,
};
use dse_datapath::xdp::Program;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A backend `dse verify` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The XDP program under BPF_PROG_TEST_RUN (root and bpffs).
    Xdp,
    /// The host path's emulated datapath on in-memory ports.
    Emu,
}

/// Where `dse verify` takes its frames from, and what it checks them on.
pub struct Options<'a> {
    /// The backends.
    pub backends: &'a [Backend],
    /// The bpffs mount XDP pins under.
    pub bpffs: &'a Path,
    /// An XDP object to load in place of the one built in.
    pub object: Option<&'a Path>,
    /// Frames from a pcap or pcapng file.
    pub pcap: Option<&'a Path>,
    /// The port of the file's frames whose interface names no port.
    pub in_port: Option<&'a str>,
    /// This many random frames besides.
    pub generate: usize,
    /// Their seed.
    pub seed: u64,
    /// Where to write what each sent and the reproducers.
    pub out: Option<&'a Path>,
}

/// What `dse verify` found.
pub struct Report {
    /// Frames run: probes, the file's, generated.
    pub frames: Frames,
    /// Backends checked.
    pub backends: Vec<String>,
    /// Where a backend and the reference differ (the first
    /// [`dse_datapath::verify::MAX_KEPT`]).
    pub disagreements: Vec<Disagreement>,
    /// How many frames disagreed on a backend, in all.
    pub disagreeing: usize,
    /// Frames a backend's meter dropped that the reference's full buckets
    /// let through.
    pub metering: usize,
    /// Rules a backend counted otherwise than the reference.
    pub counters: Vec<CounterDisagreement>,
    /// Rules no packet reaches.
    pub unreached: Vec<Finding>,
    /// The reproducers written, one per disagreement up to
    /// [`MAX_REPRODUCERS`] (with `--out`).
    pub written: Vec<PathBuf>,
    /// How long the frames took on each backend (the reference first).
    pub took: Vec<(String, Duration)>,
}

/// How many frames of each kind ran.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Frames {
    /// Made to cover each rule, its fields' edges and its ties.
    pub probes: usize,
    /// Read from the file.
    pub pcap: usize,
    /// Random.
    pub generated: usize,
}

impl Frames {
    /// All of them.
    pub fn total(&self) -> usize {
        self.probes + self.pcap + self.generated
    }
}

/// The most reproducers a run writes.
pub const MAX_REPRODUCERS: usize = 100;

/// The most disagreements a report prints for people (JSON has them all).
const MAX_PRINTED: usize = 20;

/// A bpffs directory of this run's own, removed on drop.
pub(crate) struct Pins(pub(crate) PathBuf);

impl Pins {
    /// `dse-<what>-<pid>` under the bpffs mount `bpffs`.
    pub(crate) fn new(bpffs: &Path, what: &str) -> Pins {
        Pins(bpffs.join(format!("dse-{what}-{}", std::process::id())))
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Checks `set` as `o` says. With `o.out`, writes there what each backend
/// (and the reference) sent, as `<backend>.pcapng`, and a reproducer of
/// each disagreement.
///
/// # Errors
/// A backend that cannot start (XDP without root or bpffs, say), a file
/// that does not read, or a reproducer that cannot be written.
pub fn run(set: &RuleSet, o: &Options) -> Result<Report> {
    let pins = Pins::new(o.bpffs, "verify");
    let program = match o.object {
        None => Program::V1,
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("reading the XDP object {}", path.display()))?;
            // One object a run: it lives as long as the process.
            Program::Custom(Box::leak(bytes.into_boxed_slice()))
        }
    };
    let mut subjects: Vec<Box<dyn Subject>> = Vec::new();
    for b in o.backends {
        subjects.push(match b {
            Backend::Xdp => Box::new(Xdp::load_program(set, &pins.0, program).with_context(
                || {
                    format!(
                        "loading the XDP program (pins under {}): it needs root and bpffs; --backend emu checks the host path alone",
                        pins.0.display()
                    )
                },
            )?),
            Backend::Emu => {
                Box::new(Emu::start(set).context("starting the emulated datapath")?)
            }
        });
    }
    let mut frames = probes(set);
    let mut counts = Frames {
        probes: frames.len(),
        ..Frames::default()
    };
    if let Some(path) = o.pcap {
        let read = crate::pcap::read(path, set, o.in_port)?;
        counts.pcap = read.len();
        frames.extend(read);
    }
    counts.generated = o.generate;
    frames.extend(generate(set, o.generate, o.seed));
    let c = compare_many(set, &frames, &mut subjects, o.out.is_some())?;
    let mut written = Vec::new();
    if let Some(dir) = o.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (name, outcomes) in &c.outcomes {
            let path = dir.join(format!("{name}.pcapng"));
            crate::pcap::write(&path, set, frames_out(&frames, outcomes))?;
        }
        for (i, d) in c.disagreements.iter().take(MAX_REPRODUCERS).enumerate() {
            written.push(write_reproducer(dir, i + 1, set, d)?);
        }
    }
    Ok(Report {
        frames: counts,
        backends: subjects.iter().map(|s| s.name().to_string()).collect(),
        disagreements: c.disagreements,
        disagreeing: c.disagreeing,
        metering: c.metering,
        counters: c.counters,
        unreached: unreached(set),
        written,
        took: c.took,
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
        small.to_yaml()
    );
    std::fs::write(&rules, text).with_context(|| format!("writing {}", rules.display()))?;
    let frame = dir.join(format!("disagreement-{n}.pcapng"));
    let input = [(Place::Port(d.probe.in_port), d.probe.frame.as_slice())];
    crate::pcap::write(&frame, &small, input)?;
    Ok(rules)
}

/// Which rules the backend's outcome points to.
fn chose(d: &Disagreement) -> String {
    let named: Vec<String> = d
        .backend_rules
        .iter()
        .map(|&id| match id {
            0 => "no rule (the port's miss action)".to_string(),
            id => format!("rule {id}"),
        })
        .collect();
    match named.as_slice() {
        [] => format!(
            "{}'s outcome is no rule's that matches the frame",
            d.subject
        ),
        _ => format!(
            "{}'s outcome is what {} gives",
            d.subject,
            named.join(" or ")
        ),
    }
}

/// The report for people.
pub fn print(r: &Report) {
    let f = &r.frames;
    crate::outln!(
        "{} frames ({} probes, {} from the file, {} random) through the reference and {}",
        f.total(),
        f.probes,
        f.pcap,
        f.generated,
        r.backends.join(", ")
    );
    for (i, d) in r.disagreements.iter().take(MAX_PRINTED).enumerate() {
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
        crate::outln!("  {}", chose(d));
        if let Some(p) = r.written.get(i) {
            crate::outln!("  reproducer: {}", p.display());
        }
    }
    if r.disagreeing > MAX_PRINTED {
        crate::outln!(
            "... and {} more disagreements (-o json lists the first {})",
            r.disagreeing - MAX_PRINTED,
            dse_datapath::verify::MAX_KEPT
        );
    }
    if r.metering > 0 {
        crate::outln!(
            "{} frames a backend's meter dropped (the rate exceeded), which the reference's full buckets let through",
            r.metering
        );
    }
    for c in &r.counters {
        crate::outln!("counter disagreement: {c}");
    }
    for f in &r.unreached {
        crate::outln!("warning: {f}");
    }
    for (name, took) in &r.took {
        crate::outln!(
            "{name}: {} frames in {took:.2?} ({:.0} frames/s)",
            r.frames.total(),
            rate(r.frames.total(), *took)
        );
    }
    if agree(r) {
        crate::outln!("every frame and every counter agrees");
    }
}

/// Frames a second.
fn rate(frames: usize, took: Duration) -> f64 {
    frames as f64 / took.as_secs_f64().max(1e-9)
}

/// Whether every frame and every counter agreed.
fn agree(r: &Report) -> bool {
    r.disagreeing == 0 && r.counters.is_empty()
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
                "backend_rules": d.backend_rules,
                "reference": d.reference.to_string(),
                "got": d.got.to_string(),
                "reproducer": r.written.get(i),
            })
        })
        .collect();
    let counters: Vec<Value> = r
        .counters
        .iter()
        .map(|c| {
            json!({
                "backend": c.subject,
                "rule": c.rule,
                "reference": c.reference,
                "got": c.got.as_ref().ok(),
                "error": c.got.as_ref().err(),
            })
        })
        .collect();
    let unreached: Vec<Value> = r
        .unreached
        .iter()
        .map(|f| json!({"rule": f.rule, "warning": f.to_string()}))
        .collect();
    let took: serde_json::Map<String, Value> = r
        .took
        .iter()
        .map(|(name, took)| {
            let v = json!({
                "seconds": took.as_secs_f64(),
                "frames_per_second": rate(r.frames.total(), *took),
            });
            (name.clone(), v)
        })
        .collect();
    json!({
        "frames": r.frames,
        "probes": r.frames.total(),
        "backends": r.backends,
        "agree": agree(r),
        "disagreeing": r.disagreeing,
        "metering": r.metering,
        "disagreements": disagreements,
        "counters": counters,
        "unreached": unreached,
        "took": took,
    })
}

/// Fails when a frame or a counter disagreed, so that the exit code says
/// so.
///
/// # Errors
/// How many disagreed.
pub fn verdict(r: &Report) -> Result<()> {
    if !agree(r) {
        bail!(
            "{} of {} frames and {} rule counters disagree with the reference",
            r.disagreeing,
            r.frames.total(),
            r.counters.len()
        );
    }
    Ok(())
}
