//! The in-memory demo (what `dse demo` runs without root): generated
//! traffic through the emulated datapath on in-memory ports, with per-rule
//! counters and the packet rate.

use super::traffic;
use anyhow::{Context, Result, bail};
use dse_datapath::Frame;
use dse_datapath::datapath::Datapath;
use dse_datapath::emu::{EmuConfig, EmuDatapath};
use std::path::Path;
use std::time::{Duration, Instant};

/// Frames queued per demo round (the input queues hold this many).
const ROUND: u64 = 1 << 16;

/// Runs the demo on the rules in `rules`.
///
/// # Errors
/// A rule file that does not load, or a datapath that stalls.
pub fn run(rules: &Path, packets: u64, workers: usize) -> Result<()> {
    if packets == 0 {
        bail!("--packets must be at least 1");
    }
    let text =
        std::fs::read_to_string(rules).with_context(|| format!("reading {}", rules.display()))?;
    let set = dse_datapath::RuleSet::from_text(&text)
        .with_context(|| format!("{} refused", rules.display()))?;
    let names: Vec<(u16, String)> = set
        .ports
        .iter()
        .map(|p| (p.index, p.name.clone()))
        .collect();
    let dp = EmuDatapath::start(
        set,
        EmuConfig {
            workers,
            queue_depth: ROUND as usize,
            ..EmuConfig::default()
        },
    )?;
    let mix = traffic::demo_mix(256);
    let frames: Vec<(u16, &[u8])> = mix
        .iter()
        .flat_map(|k| k.frames.iter().map(move |f| (k.in_port, f.as_slice())))
        .collect();
    crate::outln!(
        "dse demo: {} rules on the emulated datapath ({workers} workers), {packets} packets over {} flows",
        dp.rules().rules.len(),
        frames.len()
    );
    for k in &mix {
        crate::outln!(
            "  traffic: {:<28} on port {}",
            k.name,
            names
                .iter()
                .find(|(i, _)| *i == k.in_port)
                .map_or("?", |(_, n)| n)
        );
    }

    let mut delivered = [0u64; 4];
    let drain = |dp: &EmuDatapath, delivered: &mut [u64; 4]| {
        for (slot, (i, _)) in names.iter().enumerate().take(3) {
            while dp.recv(*i).is_some() {
                delivered[slot] += 1;
            }
        }
        while dp.recv_host().is_some() {
            delivered[3] += 1;
        }
    };
    // The generator shares this machine's two cores with the workers, so it
    // does not pace them: each round is queued while the workers are held,
    // then timed from their release to the last verdict. Flows interleave,
    // so every worker sees every kind of traffic.
    let mut busy = Duration::ZERO;
    let mut sent = 0u64;
    let mut n = 0usize;
    while sent < packets {
        let round = (packets - sent).min(ROUND);
        dp.hold();
        for _ in 0..round {
            let (port, bytes) = frames[(n * 7919) % frames.len()];
            n += 1;
            dp.inject(port, Frame::new(bytes))?;
        }
        let start = Instant::now();
        dp.release();
        let deadline = start + Duration::from_secs(30);
        while dp.processed() < sent + round {
            if Instant::now() > deadline {
                bail!(
                    "the datapath processed only {} of {} packets in 30 s",
                    dp.processed(),
                    sent + round
                );
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        busy += start.elapsed();
        sent += round;
        drain(&dp, &mut delivered);
    }
    let elapsed = busy;
    crate::outln!("\nper-rule counters:");
    crate::outln!("  {:>6} {:>12} {:>14}  actions", "rule", "packets", "bytes");
    let current = dp.rules();
    for (id, c) in dp.rule_counters() {
        let rule = current
            .rules
            .iter()
            .find(|r| r.id == id)
            .expect("counter ids are rules in force");
        let actions: Vec<String> = rule
            .actions
            .iter()
            .map(|a| serde_json::to_string(a).unwrap_or_default())
            .collect();
        crate::outln!(
            "  {:>6} {:>12} {:>14}  {}",
            id,
            c.packets,
            c.bytes,
            actions.join(" ")
        );
    }
    let s = dp.stats();
    crate::outln!(
        "\ndatapath: rx {} | output {} | pass {} | tx {} | dropped {} {:?}",
        s.rx_packets,
        s.output,
        s.pass,
        s.tx,
        s.dropped(),
        s.drops
    );
    crate::outln!(
        "flow cache: {} hits, {} misses",
        s.cache_hits,
        s.cache_misses
    );
    for (slot, (_, name)) in names.iter().enumerate().take(3) {
        crate::outln!("delivered to {name}: {}", delivered[slot]);
    }
    crate::outln!("delivered to host: {}", delivered[3]);
    crate::outln!("lost to full output queues: {}", dp.output_overflows());
    let mpps = packets as f64 / elapsed.as_secs_f64() / 1e6;
    crate::outln!(
        "\nrate: {packets} packets processed in {:.3} s = {mpps:.2} Mpps on {workers} workers (queued in rounds of {ROUND}, timed from release to the last verdict)",
        elapsed.as_secs_f64()
    );
    Ok(())
}
