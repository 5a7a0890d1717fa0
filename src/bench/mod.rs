//! `dse bench`: what offload buys, measured.
//!
//! The harness builds its own topology ([`topology`]), offers 64-byte and
//! IMIX traffic from one core ([`generator`]) and counts what arrives at
//! the far side, for the same rule set ([`workload`]) on dse's offloaded
//! path, dse's host path, Linux nftables and Open vSwitch's userspace
//! datapath ([`subject`], [`peers`]). It searches each one's throughput
//! without loss ([`lossless`]), times rule installation ([`install`] for
//! the API), scales the rule count and the number of masks, and reports
//! tables, JSON and plots ([`report`]).

pub mod generator;
pub mod install;
pub mod lossless;
pub mod measure;
pub mod peers;
pub mod plot;
pub mod report;
pub mod sender;
pub mod subject;
pub mod topology;
pub mod workload;

pub use generator::{GeneratorKind, Mix};
pub use measure::Window;
pub use report::Report;
pub use subject::Subject;
pub use workload::Workload;

use crate::lab::LabError;
use std::path::PathBuf;
use std::time::Duration;

/// What went wrong in a bench run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The options do not make a run.
    #[error("{0}")]
    Options(String),
    /// The lab (namespaces, veths, commands) failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// Generating or counting traffic failed.
    #[error(transparent)]
    Traffic(#[from] generator::TrafficError),
    /// A peer could not be given the rule set.
    #[error(transparent)]
    Translate(#[from] peers::TranslateError),
    /// A subject failed to start.
    #[error("{}: {what}", subject.label())]
    Subject {
        /// Which.
        subject: Subject,
        /// What failed.
        what: String,
    },
    /// dse's API refused or failed.
    #[error("dse API: {what}")]
    Api {
        /// What failed.
        what: String,
    },
    /// A file could not be written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// What a run measures.
#[derive(Debug, Clone)]
pub struct Options {
    /// Subjects to measure (those not installed are skipped, and said so).
    pub subjects: Vec<Subject>,
    /// Frame mixes for the forwarding comparison.
    pub mixes: Vec<Mix>,
    /// The comparison's rule count (one mask).
    pub base_rules: usize,
    /// Rule counts to scale over (one mask, 64-byte frames).
    pub rules: Vec<usize>,
    /// Mask counts to scale over, at `mask_rules` rules.
    pub masks: Vec<usize>,
    /// The rule count of the mask scaling.
    pub mask_rules: usize,
    /// Rule counts whose installation is timed through dse's API too.
    pub api_install: Vec<usize>,
    /// Flows in the traffic.
    pub flows: u16,
    /// How long each measurement offers traffic.
    pub window: Duration,
    /// Rounds of the comparison (subjects interleaved in each).
    pub rounds: usize,
    /// Whether to search each subject's throughput without loss (paced
    /// AF_PACKET offers) on the comparison's workload.
    pub lossless: bool,
    /// The generator.
    pub generator: GeneratorKind,
    /// Where the JSON and the plots go.
    pub out: PathBuf,
    /// Keeps this run's names apart from any other's (1 to 8 letters or
    /// digits).
    pub tag: String,
}

impl Options {
    /// The full run: 1k rules compared at 64 bytes and IMIX, 1k/100k/1M
    /// rules, 1/4/16 masks at 100k, installs at 100k and 1M.
    pub fn full() -> Options {
        Options {
            subjects: Subject::ALL.to_vec(),
            mixes: vec![Mix::Small, Mix::Imix],
            base_rules: 1_000,
            rules: vec![1_000, 100_000, 1_000_000],
            masks: vec![1, 4, 16],
            mask_rules: 100_000,
            api_install: vec![100_000, 1_000_000],
            flows: 256,
            window: Duration::from_secs(1),
            rounds: 3,
            lossless: true,
            generator: GeneratorKind::Auto,
            out: PathBuf::from("bench-results"),
            tag: format!("{}", std::process::id() % 100_000),
        }
    }

    /// A short run for checks: small rule sets, short windows, one round.
    pub fn quick() -> Options {
        Options {
            base_rules: 300,
            rules: vec![300, 2_000],
            masks: vec![1, 4],
            mask_rules: 2_000,
            api_install: vec![2_000],
            window: Duration::from_millis(300),
            rounds: 1,
            ..Options::full()
        }
    }

    /// The distinct workloads the run measures, the comparison's first.
    ///
    /// # Errors
    /// [`BenchError::Options`] naming a shape that does not make a rule set.
    pub fn workloads(&self) -> Result<Vec<Workload>, BenchError> {
        let mut out = vec![Workload {
            rules: self.base_rules,
            masks: 1,
            flows: self.flows,
        }];
        let scaled = self
            .rules
            .iter()
            .map(|&rules| (rules, 1))
            .chain(self.masks.iter().map(|&m| (self.mask_rules, m)));
        for (rules, masks) in scaled {
            let w = Workload {
                rules,
                masks,
                flows: self.flows,
            };
            if !out.contains(&w) {
                out.push(w);
            }
        }
        for w in &out {
            w.check().map_err(BenchError::Options)?;
        }
        if self.rounds == 0 {
            return Err(BenchError::Options("--rounds must be at least 1".into()));
        }
        if self.window < Duration::from_millis(50) {
            return Err(BenchError::Options(
                "--seconds must be at least 0.05".into(),
            ));
        }
        Ok(out)
    }
}

/// Runs the bench: see [`measure::run`].
///
/// # Errors
/// [`BenchError`] naming what failed; the topology is removed either way.
pub fn run(options: &Options) -> Result<Report, BenchError> {
    measure::run(options)
}
