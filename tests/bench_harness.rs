//! The bench harness's own correctness: its figures are the counters it
//! read, and what it prints and writes are those figures. Needs root,
//! bpffs and nft.

use dse::bench::generator::{Generator, GeneratorKind, Mix, Sink};
use dse::bench::lossless::{STEPS, TRIALS, passes};
use dse::bench::measure::{Cpus, warm_up, window};
use dse::bench::report::Report;
use dse::bench::subject::{Places, Running, Subject, set_up};
use dse::bench::topology::{Topology, namespace_exists};
use dse::bench::{Options, Workload};
use dse_datapath::datapath::Datapath;
use std::time::Duration;

/// The tests take turns: each offers traffic from CPU 0 and measures
/// windows on CPU 1, and two at once would share both.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn tag(name: &str) -> String {
    format!("{name}{}", std::process::id() % 100_000)
}

/// A topology named after `name`, the places of its subject's files, and
/// a small workload (300 exact rules in one mask, 64 flows).
fn lab(name: &str) -> (Topology, Places, Workload) {
    let topo = Topology::build(&tag(name)).unwrap();
    let places = Places {
        pins: format!("/sys/fs/bpf/dse-test-{name}-{}", std::process::id()).into(),
        work: std::env::temp_dir().join(format!("dse-test-{name}-{}", std::process::id())),
        cpu: Cpus::pick().dut,
    };
    let w = Workload {
        rules: 300,
        masks: 1,
        flows: 64,
    };
    (topo, places, w)
}

#[test]
fn a_window_reports_exactly_what_the_counters_counted() {
    let _turn = turn();
    let (topo, places, w) = lab("fc");
    let sink = Sink::attach(&topo).unwrap();
    let mut generator = Generator::load(GeneratorKind::Auto, &topo, w.flows).unwrap();
    let (running, _) = set_up(Subject::Xdp, &topo, &w.rule_set(), &places).unwrap();
    let Running::Xdp(xdp) = &running else {
        unreachable!()
    };
    for mix in [Mix::Small, Mix::Imix] {
        warm_up(&mut generator, &topo, mix, w.flows).unwrap();
        let (sink0, bytes0) = sink.counts().unwrap();
        let rules0 = xdp.datapath().fingerprint().packets;
        let win = window(
            &mut generator,
            &sink,
            &topo,
            &running,
            mix,
            w.flows,
            Duration::from_millis(200),
            Cpus::pick(),
        )
        .unwrap();
        let (sink1, bytes1) = sink.counts().unwrap();
        let rules1 = xdp.datapath().fingerprint().packets;
        assert!(
            win.delivered > 1000,
            "{mix:?}: too little came through: {win:?}"
        );
        assert_eq!(win.delivered, sink1 - sink0, "{mix:?}: the sink's count");
        assert_eq!(
            win.delivered_bytes,
            bytes1 - bytes0,
            "{mix:?}: the sink's bytes"
        );
        assert_eq!(
            win.counted,
            Some(rules1 - rules0),
            "{mix:?}: the rule counters"
        );
        // What arrived was forwarded by a rule, and what a rule forwarded
        // was offered.
        assert!(
            win.delivered <= rules1 - rules0 && rules1 - rules0 <= win.offered,
            "{win:?}"
        );
        let mean = win.delivered_bytes as f64 / win.delivered as f64;
        match mix {
            Mix::Small => assert_eq!(mean, 60.0, "64-byte frames are 60 without the FCS"),
            // 7:4:1 of 60, 590 and 1514 bytes: 360.5 on average.
            Mix::Imix => assert!((mean - 360.5).abs() < 30.0, "IMIX mean {mean}"),
        }
    }
    drop(running);
    let _ = std::fs::remove_dir_all(&places.work);
}

#[test]
fn the_report_prints_the_figures_of_its_windows() {
    let _turn = turn();
    let mut o = Options::quick();
    o.tag = tag("rp");
    o.subjects = vec![Subject::Xdp, Subject::Nft];
    o.mixes = vec![Mix::Small];
    o.rules = vec![];
    o.masks = vec![];
    o.api_install = vec![];
    o.window = Duration::from_millis(200);
    o.out = std::env::temp_dir().join(format!("dse-test-rp-{}", std::process::id()));
    let report: Report = dse::bench::run(&o).unwrap();
    for part in ["gen", "dut", "sink"] {
        let ns = format!("dseb-{}-{part}", o.tag);
        assert!(!namespace_exists(&ns), "{ns} is left behind");
    }
    let tables = report.tables();
    let xdp = report
        .forwarding
        .iter()
        .find(|f| f.subject == Subject::Xdp)
        .expect("xdp measured");
    let win = xdp.windows[0];
    assert_eq!(xdp.windows.len(), 1);
    // The printed rate is the sink's count over the offered time.
    let mpps = win.delivered as f64 / win.seconds / 1e6;
    assert!(
        tables.contains(&format!("{mpps:.3}")),
        "{mpps:.3} not in\n{tables}"
    );
    // The lossless rate is the best passing probe's offered rate.
    assert_eq!(report.lossless.len(), 2, "both subjects searched");
    for l in &report.lossless {
        let f = &l.found;
        assert_eq!(f.pps, dse::bench::lossless::best(&f.probes));
        // One unpaced probe, then each step's rate in up to TRIALS
        // windows, the last of them the only one that may pass.
        let mut rates: Vec<Option<f64>> = f.probes.iter().map(|(r, _)| *r).collect();
        rates.dedup();
        assert!(rates.len() == 1 + STEPS || f.capped, "{f:?}");
        for rate in &rates[1..] {
            let trials: Vec<_> = f.probes.iter().filter(|(r, _)| r == rate).collect();
            assert!((1..=TRIALS).contains(&trials.len()), "{f:?}");
            let (last, failed) = trials.split_last().unwrap();
            assert!(failed.iter().all(|(_, w)| !passes(w)), "{f:?}");
            assert!(passes(&last.1) || trials.len() == TRIALS, "{f:?}");
        }
        assert!(
            f.pps > 0.0,
            "{}: some rate passes: {f:?}",
            l.subject.label()
        );
        assert!(tables.contains(&format!("{:.3}", f.pps / 1e6)), "{tables}");
    }
    let files = report.write(&o.out).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    let row = json["forwarding"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["subject"] == "xdp")
        .unwrap();
    assert_eq!(row["windows"][0]["delivered"], win.delivered);
    assert_eq!(row["windows"][0]["offered"], win.offered);
    for f in &files[1..] {
        let svg = std::fs::read_to_string(f).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("</svg>"),
            "{}",
            f.display()
        );
    }
    let _ = std::fs::remove_dir_all(&o.out);
}

/// Each socket sender offers what a paced window asks for, frame by frame,
/// and the XDP datapath forwards all of it at that modest rate. A sender
/// whose CPU was taken from it forgoes what it fell behind by, as the
/// lossless search's windows do; like the search, a rate gets
/// [`TRIALS`] windows, and one of them must offer it.
#[test]
fn a_paced_offer_offers_the_rate_asked_for() {
    let _turn = turn();
    let (topo, places, w) = lab("pc");
    let sink = Sink::attach(&topo).unwrap();
    let (running, _) = set_up(Subject::Xdp, &topo, &w.rule_set(), &places).unwrap();
    let (pps, span) = (20_000.0, Duration::from_millis(500));
    for kind in [GeneratorKind::AfXdp, GeneratorKind::AfPacket] {
        let mut generator = Generator::load(kind, &topo, w.flows).unwrap();
        let (mut windows, mut offered_it) = (Vec::new(), false);
        for _ in 0..TRIALS {
            let (d0, _) = sink.counts().unwrap();
            let offered = generator
                .offer_paced(&topo, Mix::Small, w.flows, span, Some(pps))
                .unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let (d1, _) = sink.counts().unwrap();
            assert_eq!(d1 - d0, offered.packets, "{kind:?}: all of it delivered");
            let asked = pps * offered.elapsed.as_secs_f64();
            let got = offered.packets as f64;
            // Never more than one frame early; never more than a tenth
            // short in a window the CPU was left to.
            assert!(got <= asked + 1.0, "{kind:?}: offered {got} of {asked:.0}");
            windows.push(format!("{got} of {asked:.0}"));
            offered_it = got >= asked * 0.9;
            if offered_it {
                break;
            }
        }
        assert!(offered_it, "{kind:?}: every window fell short: {windows:?}");
    }
    drop(running);
    let _ = std::fs::remove_dir_all(&places.work);
}
