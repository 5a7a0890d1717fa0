//! Checking a backend against what the rules say, frame by frame: the
//! runner behind the fixture tables, for users' own tests too.
//!
//! A [`Case`] is a rule set, a frame that arrives on a port, and the
//! [`Outcome`] expected: the verdict and the frame as it leaves. Every
//! backend is a [`Subject`]: the reference pipeline ([`Reference`]), the
//! XDP program under `BPF_PROG_TEST_RUN` ([`Xdp`], root and bpffs), and the
//! host path's emulated datapath on in-memory ports ([`Emu`]).
//!
//! ```
//! use dse_datapath::RuleSet;
//! use dse_datapath::pipeline::Verdict;
//! use dse_datapath::verify::{Case, Outcome, Reference, check};
//!
//! let rules = RuleSet::from_yaml(
//!     "ports: [{name: a, index: 0}, {name: b, index: 1}]\n\
//!      rules:\n  - {id: 1, priority: 10, match: {ip_proto: udp}, actions: [{output: b}]}\n",
//! )
//! .unwrap();
//! // Ethernet, IPv4 and UDP from 10.0.0.1:1000 to 10.0.0.2:53, no payload.
//! let mut frame = Vec::new();
//! etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
//!     .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
//!     .udp(1000, 53)
//!     .write(&mut frame, &[])
//!     .unwrap();
//! let case = Case {
//!     name: "UDP goes out of b, unchanged".into(),
//!     rules,
//!     in_port: 0,
//!     input: frame.clone(),
//!     expect: Outcome::new(Verdict::Output(1), frame),
//! };
//! let mut reference = Reference::new(&case.rules).unwrap();
//! check(&case, &mut reference).unwrap();
//! // With root and bpffs, the same case through the XDP program:
//! // let mut xdp = Xdp::load(&case.rules, Path::new("/sys/fs/bpf/my-test"))?;
//! // check(&case, &mut xdp)?;
//! ```

mod compare;
mod generate;
mod probes;

pub use compare::{
    Comparison, CounterDisagreement, Disagreement, MAX_KEPT, candidates, compare, compare_many,
    reproducer,
};
pub use generate::generate;
pub use probes::{Probe, frame_for, probes, tcp_with_flags};

use crate::compile::{CompiledTables, Compiler};
use crate::emu::{EmuConfig, EmuDatapath};
use crate::pipeline::{Count, DropReason, Installed, Pipeline, Verdict};
use crate::rule::{RuleError, RuleSet};
use crate::xdp::{Program, XdpError, XdpInstance, XdpLimits};
use crate::{Datapath, DatapathError, Frame};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

/// What became of a frame: its verdict, and the frame as it left (empty
/// when it was dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The verdict.
    pub verdict: Verdict,
    /// The bytes that left; empty for a drop.
    pub bytes: Vec<u8>,
}

impl Outcome {
    /// `verdict` with `bytes`, which a drop does not keep.
    pub fn new(verdict: Verdict, bytes: Vec<u8>) -> Outcome {
        let bytes = match verdict {
            Verdict::Drop(_) => Vec::new(),
            _ => bytes,
        };
        Outcome { verdict, bytes }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.verdict {
            Verdict::Output(p) => write!(f, "output to port {p}")?,
            Verdict::Pass => f.write_str("pass to the host stack")?,
            Verdict::Tx => f.write_str("tx back out of its port")?,
            Verdict::Drop(r) => return write!(f, "drop ({})", r.name()),
        }
        write!(f, ", {} bytes: {}", self.bytes.len(), hex(&self.bytes))
    }
}

/// `bytes` in lower-case hex, as reports print frames.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A backend that takes frames one at a time.
pub trait Subject {
    /// Its name, for reports.
    fn name(&self) -> &str;
    /// Runs `frame` as if it arrived on port `in_port`.
    ///
    /// # Errors
    /// Why the backend could not run it.
    fn run(&mut self, in_port: u16, frame: &[u8]) -> Result<Outcome, String>;
    /// Runs each of `probes` in turn, as [`Subject::run`] does; a backend
    /// that does better with many at once overrides it.
    fn run_batch(&mut self, probes: &[Probe]) -> Vec<Result<Outcome, String>> {
        probes
            .iter()
            .map(|p| self.run(p.in_port, &p.frame))
            .collect()
    }
    /// What each rule counted of the frames run so far, by rule id
    /// (rules that counted nothing may be left out).
    ///
    /// # Errors
    /// Why the counters could not be read.
    fn counters(&self) -> Result<BTreeMap<u32, Count>, String>;
}

/// The reference pipeline: what the rules say. Its clock moves on an hour
/// a frame, so its meters' buckets are full for each: a meter drops a
/// frame here only if the frame costs more than the meter's burst.
pub struct Reference {
    installed: Installed,
    pipeline: Pipeline,
    now_ns: u64,
}

impl Reference {
    /// The reference pipeline running `rules`.
    ///
    /// # Errors
    /// [`RuleError`] if they do not compile.
    pub fn new(rules: &RuleSet) -> Result<Reference, RuleError> {
        Ok(Reference {
            installed: Installed::build(1, rules)?,
            pipeline: Pipeline::new(64),
            now_ns: 0,
        })
    }
}

impl Subject for Reference {
    fn name(&self) -> &str {
        "reference"
    }

    fn run(&mut self, in_port: u16, frame: &[u8]) -> Result<Outcome, String> {
        let mut f = Frame::new(frame);
        self.now_ns += 3_600 * 1_000_000_000;
        let verdict = self
            .pipeline
            .process(&self.installed, &mut f, in_port, self.now_ns);
        Ok(Outcome::new(verdict, f.data().to_vec()))
    }

    fn counters(&self) -> Result<BTreeMap<u32, Count>, String> {
        Ok(self.pipeline.counts(&self.installed))
    }
}

/// The XDP program, run with `BPF_PROG_TEST_RUN` (needs root and bpffs).
pub struct Xdp {
    instance: XdpInstance,
    tables: CompiledTables,
}

impl Xdp {
    /// Loads the XDP program with `rules` installed, its maps pinned under
    /// `pin_dir` (which the caller removes afterwards).
    ///
    /// # Errors
    /// [`DatapathError`] if the rules do not compile or the program does
    /// not load.
    pub fn load(rules: &RuleSet, pin_dir: &Path) -> Result<Xdp, DatapathError> {
        Xdp::load_program(rules, pin_dir, Program::V1)
    }

    /// As [`Xdp::load`], with `program`: a build of the XDP program of
    /// one's own, say, with the maps of version 1.
    ///
    /// # Errors
    /// As [`Xdp::load`].
    pub fn load_program(
        rules: &RuleSet,
        pin_dir: &Path,
        program: Program,
    ) -> Result<Xdp, DatapathError> {
        let compiler = Compiler::new(rules)?;
        let mut instance = XdpInstance::load_for_test_runs(pin_dir, XdpLimits::small(), program)?;
        let slots: Vec<u32> = compiler.tables().live_rules().map(|(s, _)| s).collect();
        instance.install(compiler.tables(), &slots)?;
        Ok(Xdp {
            instance,
            tables: compiler.tables().clone(),
        })
    }
}

impl Subject for Xdp {
    fn name(&self) -> &str {
        "xdp"
    }

    fn run(&mut self, in_port: u16, frame: &[u8]) -> Result<Outcome, String> {
        let (verdict, bytes) = self
            .instance
            .run(in_port, frame)
            .map_err(|e: XdpError| e.to_string())?;
        Ok(Outcome::new(verdict, bytes))
    }

    fn run_batch(&mut self, probes: &[Probe]) -> Vec<Result<Outcome, String>> {
        self.instance
            .run_many(probes.iter().map(|p| (p.in_port, p.frame.as_slice())))
            .into_iter()
            .map(|r| {
                r.map(|(verdict, bytes)| Outcome::new(verdict, bytes))
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    fn counters(&self) -> Result<BTreeMap<u32, Count>, String> {
        self.instance
            .rule_counters(&self.tables)
            .map_err(|e| e.to_string())
    }
}

/// The host path's emulated datapath on in-memory ports: each frame is
/// injected and its verdict read from what the datapath counted and
/// queued.
pub struct Emu {
    dp: EmuDatapath,
    ports: Vec<u16>,
}

impl Emu {
    /// The emulated datapath running `rules` (one worker, so that frames
    /// are taken in order).
    ///
    /// # Errors
    /// [`DatapathError`] if it does not start.
    pub fn start(rules: &RuleSet) -> Result<Emu, DatapathError> {
        let ports = rules.ports.iter().map(|p| p.index).collect();
        let dp = EmuDatapath::start(
            rules.clone(),
            EmuConfig {
                workers: 1,
                ..EmuConfig::default()
            },
        )?;
        Ok(Emu { dp, ports })
    }
}

impl Subject for Emu {
    fn name(&self) -> &str {
        "emu"
    }

    fn run(&mut self, in_port: u16, frame: &[u8]) -> Result<Outcome, String> {
        let before = self.dp.stats();
        self.dp
            .inject_blocking(in_port, Frame::new(frame))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let after = loop {
            let s = self.dp.stats();
            if s.processed() > before.processed() {
                break s;
            }
            if Instant::now() > deadline {
                return Err("the frame was not processed within 5 s".into());
            }
            std::thread::yield_now();
        };
        let verdicts = after.processed() - before.processed();
        if verdicts != 1 {
            return Err(format!("{verdicts} verdicts counted for one frame"));
        }
        let taken = |what: &str, f: &mut dyn FnMut() -> Option<crate::emu::Egress>| {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Some(e) = f() {
                    return Ok(e.frame.data().to_vec());
                }
                if Instant::now() > deadline {
                    return Err(format!("counted {what}, but nothing was queued"));
                }
                std::thread::yield_now();
            }
        };
        if after.output > before.output {
            let ports = self.ports.clone();
            let mut port = 0;
            let bytes = taken("an output", &mut || {
                ports.iter().find_map(|&p| {
                    port = p;
                    self.dp.recv(p)
                })
            })?;
            return Ok(Outcome::new(Verdict::Output(port), bytes));
        }
        if after.tx > before.tx {
            let bytes = taken("a tx", &mut || self.dp.recv(in_port))?;
            return Ok(Outcome::new(Verdict::Tx, bytes));
        }
        if after.pass > before.pass {
            let bytes = taken("a pass", &mut || self.dp.recv_host())?;
            return Ok(Outcome::new(Verdict::Pass, bytes));
        }
        let reason = DropReason::ALL
            .into_iter()
            .find(|r| after.drops.get(r.name()) > before.drops.get(r.name()))
            .ok_or("processed, but neither sent, passed nor dropped")?;
        Ok(Outcome::new(Verdict::Drop(reason), Vec::new()))
    }

    fn counters(&self) -> Result<BTreeMap<u32, Count>, String> {
        Ok(self.dp.rule_counters())
    }
}

/// One frame through a rule set, and what should become of it.
#[derive(Debug, Clone)]
pub struct Case {
    /// What it shows.
    pub name: String,
    /// The rules.
    pub rules: RuleSet,
    /// The port the frame arrives on.
    pub in_port: u16,
    /// The frame.
    pub input: Vec<u8>,
    /// What should become of it.
    pub expect: Outcome,
}

/// A backend that did not do what a case expects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{case}: {subject}: want {want}; got {got}")]
pub struct Mismatch {
    /// The case.
    pub case: String,
    /// The backend.
    pub subject: String,
    /// What the case expects.
    pub want: Outcome,
    /// What the backend did, or why it could not run the frame.
    pub got: Got,
}

/// What a backend did with a case's frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    /// This.
    Outcome(Outcome),
    /// It could not run it.
    Error(String),
}

impl fmt::Display for Got {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Got::Outcome(o) => o.fmt(f),
            Got::Error(e) => write!(f, "an error: {e}"),
        }
    }
}

/// Runs `case` through `subject` and compares.
///
/// # Errors
/// [`Mismatch`] saying what was expected and what happened.
pub fn check(case: &Case, subject: &mut dyn Subject) -> Result<(), Mismatch> {
    let got = match subject.run(case.in_port, &case.input) {
        Ok(o) if o == case.expect => return Ok(()),
        Ok(o) => Got::Outcome(o),
        Err(e) => Got::Error(e),
    };
    Err(Mismatch {
        case: case.name.clone(),
        subject: subject.name().to_string(),
        want: case.expect.clone(),
        got,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp() -> Vec<u8> {
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000, 53)
            .write(&mut frame, &[])
            .unwrap();
        frame
    }

    #[test]
    fn a_backend_that_does_otherwise_is_reported_with_both_outcomes() {
        let rules = RuleSet::from_yaml(
            "ports: [{name: a, index: 0}, {name: b, index: 1}]\nrules:\n  - {id: 1, priority: 10, match: {ip_proto: udp}, actions: [{output: b}]}\n",
        )
        .unwrap();
        let mut case = Case {
            name: "udp to a".into(),
            rules,
            in_port: 0,
            input: udp(),
            expect: Outcome::new(Verdict::Output(0), udp()),
        };
        let mut reference = Reference::new(&case.rules).unwrap();
        let m = check(&case, &mut reference).unwrap_err();
        assert_eq!(m.got, Got::Outcome(Outcome::new(Verdict::Output(1), udp())));
        let text = m.to_string();
        assert!(
            text.starts_with("udp to a: reference: want output to port 0, 42 bytes: 0200"),
            "{text}"
        );
        assert!(
            text.contains("; got output to port 1, 42 bytes: "),
            "{text}"
        );
        case.expect = Outcome::new(Verdict::Drop(DropReason::Rule), udp());
        assert!(case.expect.bytes.is_empty(), "a drop keeps no bytes");
        let m = check(&case, &mut reference).unwrap_err();
        assert!(m.to_string().contains("want drop (rule)"), "{m}");
    }
}
