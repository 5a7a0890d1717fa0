//! The bench's results: what was measured, as tables for people, JSON for
//! scripts and SVG plots, every figure computed from the windows' counts.

use super::measure::{Cpus, Window};
use super::{GeneratorKind, Mix, Options, Subject, Workload};
use std::fmt::Write;
use std::time::Duration;

/// Where and how the run was made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    /// CPUs online.
    pub cpus: usize,
    /// `uname -r`.
    pub kernel: String,
    /// The generator that offered the traffic.
    pub generator: GeneratorKind,
    /// The generator's CPU.
    pub generator_cpu: usize,
    /// The DUT's CPU (whose busy time is the CPU cost).
    pub dut_cpu: usize,
    /// How often the DUT's CPU was taken from a thread spinning on it for
    /// a second: while it is, nothing serves the DUT's receive ring.
    pub dut_stalls: crate::lab::Stalls,
}

impl Machine {
    /// This machine.
    pub fn here(generator: GeneratorKind, cpus: Cpus) -> Machine {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Machine {
            cpus: crate::lab::online_cpus(),
            kernel: kernel.trim().to_string(),
            generator,
            generator_cpu: cpus.generator,
            dut_cpu: cpus.dut,
            dut_stalls: crate::lab::stalls(cpus.dut, Duration::from_secs(1)),
        }
    }
}

/// One subject forwarding one workload at one mix.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Forwarding {
    /// The rule set's shape.
    pub workload: Workload,
    /// The frame sizes.
    pub mix: Mix,
    /// What forwarded.
    pub subject: Subject,
    /// Each window's counts.
    pub windows: Vec<Window>,
}

/// The median of `v` (the lower middle of an even count), or 0 if empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

impl Forwarding {
    /// A row with no windows yet.
    pub fn new(workload: Workload, mix: Mix, subject: Subject) -> Forwarding {
        Forwarding {
            workload,
            mix,
            subject,
            windows: Vec::new(),
        }
    }

    /// Median delivered packets per second.
    pub fn delivered_pps(&self) -> f64 {
        median(self.windows.iter().map(Window::delivered_pps).collect())
    }

    /// Median offered packets per second.
    pub fn offered_pps(&self) -> f64 {
        median(self.windows.iter().map(Window::offered_pps).collect())
    }

    /// Median loss (0 to 1).
    pub fn loss(&self) -> f64 {
        median(self.windows.iter().map(Window::loss).collect())
    }

    /// Median DUT CPU nanoseconds per delivered packet.
    pub fn ns_per_packet(&self) -> Option<f64> {
        let v: Vec<f64> = self
            .windows
            .iter()
            .filter_map(Window::ns_per_packet)
            .collect();
        (!v.is_empty()).then(|| median(v))
    }
}

/// One timed rule installation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Install {
    /// How the rules went in.
    pub tool: String,
    /// The rule set's shape.
    pub workload: Workload,
    /// Seconds from the command to the rules in force.
    pub seconds: f64,
    /// Rules per second.
    pub rules_per_second: f64,
}

impl Install {
    /// A record of `workload` installed by `tool` in `took`.
    pub fn new(tool: &str, workload: Workload, took: Duration) -> Install {
        let seconds = took.as_secs_f64();
        Install {
            tool: tool.into(),
            workload,
            seconds,
            rules_per_second: workload.rules as f64 / seconds.max(1e-9),
        }
    }
}

/// One subject's throughput without loss.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LosslessRow {
    /// The rule set's shape.
    pub workload: Workload,
    /// What forwarded.
    pub subject: Subject,
    /// The search's result and probes.
    pub found: super::lossless::Lossless,
}

/// A whole run's results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// The measurement window, seconds.
    pub window_seconds: f64,
    /// Rounds of the comparison.
    pub rounds: usize,
    /// Subjects not measured, and why.
    pub skipped: Vec<(Subject, String)>,
    /// Forwarding figures.
    pub forwarding: Vec<Forwarding>,
    /// Rule installation figures.
    pub installs: Vec<Install>,
    /// Throughput without loss, where searched.
    pub lossless: Vec<LosslessRow>,
}

impl Report {
    /// Collects a run's results.
    pub fn new(
        machine: Machine,
        o: &Options,
        skipped: Vec<(Subject, String)>,
        forwarding: Vec<Forwarding>,
        installs: Vec<Install>,
    ) -> Report {
        Report {
            machine,
            window_seconds: o.window.as_secs_f64(),
            rounds: o.rounds,
            skipped,
            forwarding,
            installs,
            lossless: Vec::new(),
        }
    }

    fn row(&self, w: Workload, mix: Mix, s: Subject) -> Option<&Forwarding> {
        self.forwarding
            .iter()
            .find(|f| f.workload == w && f.mix == mix && f.subject == s)
    }

    /// The ratio of `value` to the nftables figure of the same workload
    /// and mix, as text (`-` without a baseline).
    fn ratio(&self, f: &Forwarding, value: impl Fn(&Forwarding) -> Option<f64>) -> String {
        self.ratio_to(Subject::Nft, f, value)
    }

    /// The ratio of `value` to `base`'s figure of the same workload and
    /// mix, as text (`-` without one).
    fn ratio_to(
        &self,
        base: Subject,
        f: &Forwarding,
        value: impl Fn(&Forwarding) -> Option<f64>,
    ) -> String {
        let base = self
            .row(f.workload, f.mix, base)
            .and_then(&value)
            .filter(|b| *b > 0.0);
        match (value(f), base) {
            (Some(v), Some(b)) => format!("{:.2}x", v / b),
            _ => "-".into(),
        }
    }

    /// The report as text tables: forwarding (with ratios to Linux
    /// nftables), scaling, and installation rates.
    pub fn tables(&self) -> String {
        let mut t = String::new();
        let m = &self.machine;
        writeln!(
            t,
            "machine: {} CPUs, Linux {}; generator {:?} on CPU {}, DUT on CPU {}; windows of {:.2} s, medians of {} round(s)",
            m.cpus, m.kernel, m.generator, m.generator_cpu, m.dut_cpu, self.window_seconds, self.rounds
        )
        .ok();
        let st = &m.dut_stalls;
        writeln!(
            t,
            "DUT CPU: {} stalls over {} us in {:.1} s of spinning on it, the longest {:.2} ms",
            st.count,
            crate::lab::STALL.as_micros(),
            st.seconds,
            st.longest * 1e3,
        )
        .ok();
        for (s, why) in &self.skipped {
            writeln!(t, "skipped: {}: {why}", s.label()).ok();
        }
        let header = |t: &mut String, title: &str| {
            writeln!(
                t,
                "\n{title}\n{:<22} {:>8} {:>6} {:>5} {:>11} {:>11} {:>7} {:>9} {:>9} {:>9} {:>9}",
                "subject",
                "rules",
                "masks",
                "mix",
                "Mpps",
                "offered",
                "loss",
                "ns/pkt",
                "x Mpps",
                "x ns/pkt",
                "of limit"
            )
            .ok();
        };
        let line = |t: &mut String, f: &Forwarding| {
            writeln!(
                t,
                "{:<22} {:>8} {:>6} {:>5} {:>11.3} {:>11.3} {:>6.1}% {:>9} {:>9} {:>9} {:>9}",
                f.subject.label(),
                f.workload.rules,
                f.workload.masks,
                f.mix.label(),
                f.delivered_pps() / 1e6,
                f.offered_pps() / 1e6,
                f.loss() * 100.0,
                f.ns_per_packet().map_or("-".into(), |n| format!("{n:.0}")),
                self.ratio(f, |f| Some(f.delivered_pps())),
                self.ratio(f, Forwarding::ns_per_packet),
                self.ratio_to(Subject::Limit, f, |f| Some(f.delivered_pps())),
            )
            .ok();
        };
        let base = self.forwarding.first().map(|f| f.workload);
        header(
            &mut t,
            "forwarding (x: ratio to Linux nftables on the same rules and traffic; of limit: to the limit, same traffic)",
        );
        for f in self.forwarding.iter().filter(|f| Some(f.workload) == base) {
            if f.mix != Mix::Small || f.windows.len() == self.rounds {
                line(&mut t, f);
            }
        }
        header(&mut t, "scaling (64-byte frames, one window each)");
        for f in self.forwarding.iter().filter(|f| Some(f.workload) != base) {
            line(&mut t, f);
        }
        if !self.lossless.is_empty() {
            writeln!(
                t,
                "\nthroughput at <= {}% loss (64-byte frames, paced offers, binary search)\n{:<22} {:>8} {:>10} {:>8} {:>9} {:>9}",
                super::lossless::TOLERANCE * 100.0,
                "subject",
                "rules",
                "Mpps",
                "windows",
                "x nft",
                "of limit"
            )
            .ok();
            // A capped baseline has no ratio; a capped subject, a floor.
            let uncapped = |s: Subject| {
                self.lossless
                    .iter()
                    .find(|l| l.subject == s && !l.found.capped)
                    .map(|l| l.found.pps)
                    .filter(|p| *p > 0.0)
            };
            let (nft, limit) = (uncapped(Subject::Nft), uncapped(Subject::Limit));
            for l in &self.lossless {
                let ratio = |base: Option<f64>| {
                    base.map_or("-".into(), |n| {
                        format!(
                            "{}{:.2}x",
                            if l.found.capped { ">=" } else { "" },
                            l.found.pps / n
                        )
                    })
                };
                writeln!(
                    t,
                    "{:<22} {:>8} {:>9.3}{} {:>8} {:>9} {:>9}",
                    l.subject.label(),
                    l.workload.rules,
                    l.found.pps / 1e6,
                    if l.found.capped { "+" } else { " " },
                    l.found.probes.len(),
                    ratio(nft),
                    ratio(limit)
                )
                .ok();
            }
            if self.lossless.iter().any(|l| l.found.capped) {
                writeln!(
                    t,
                    "(+: kept up with the paced generator's most; the figure is a floor)"
                )
                .ok();
            }
        }
        writeln!(
            t,
            "\nrule installation (from an empty table to rules in force)\n{:<32} {:>9} {:>6} {:>9} {:>12} {:>9}",
            "tool", "rules", "masks", "seconds", "rules/s", "x nft -f"
        )
        .ok();
        for i in &self.installs {
            let nft = self
                .installs
                .iter()
                .find(|n| n.tool == "nft -f" && n.workload == i.workload)
                .map(|n| n.rules_per_second);
            writeln!(
                t,
                "{:<32} {:>9} {:>6} {:>9.3} {:>12.0} {:>9}",
                i.tool,
                i.workload.rules,
                i.workload.masks,
                i.seconds,
                i.rules_per_second,
                nft.map_or("-".into(), |n| format!("{:.2}x", i.rules_per_second / n))
            )
            .ok();
        }
        t
    }

    /// Writes `bench.json`, `forwarding.svg` and `scaling.svg` under `dir`.
    ///
    /// # Errors
    /// The file that could not be written, and why.
    pub fn write(
        &self,
        dir: &std::path::Path,
    ) -> Result<Vec<std::path::PathBuf>, super::BenchError> {
        let io = |what: String| move |source| super::BenchError::Io { what, source };
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let json = dir.join("bench.json");
        let text = serde_json::to_string_pretty(&self).expect("the report serializes");
        std::fs::write(&json, text).map_err(io(format!("writing {}", json.display())))?;
        let mut written = vec![json];
        for (name, svg) in super::plot::all(self) {
            let path = dir.join(name);
            std::fs::write(&path, svg).map_err(io(format!("writing {}", path.display())))?;
            written.push(path);
        }
        Ok(written)
    }
}
