//! The fixture table through the emulated backend: frames in through an
//! in-memory port, out of the expected queue, as the expected bytes.

mod common;

use common::fixtures::{Expect, document, table};
use dse_datapath::datapath::Datapath;
use dse_datapath::emu::{EmuConfig, EmuDatapath};
use dse_datapath::{Frame, RuleSet};
use std::time::{Duration, Instant};

fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn emulated_backend_runs_the_table() {
    for fx in table() {
        let set =
            RuleSet::from_yaml(&document(fx.rules)).unwrap_or_else(|e| panic!("{}: {e}", fx.name));
        let dp = EmuDatapath::start(
            set,
            EmuConfig {
                workers: 2,
                ..EmuConfig::default()
            },
        )
        .expect("starts");
        dp.inject(fx.in_port, Frame::new(&fx.input))
            .unwrap_or_else(|e| panic!("{}: {e}", fx.name));
        wait("the packet to be processed", || {
            (dp.stats().processed() == 1).then_some(())
        });
        let got = match &fx.expect {
            Expect::Output(p, _) => {
                Expect::Output(*p, wait(fx.name, || dp.recv(*p)).frame.data().to_vec())
            }
            Expect::Tx(_) => {
                Expect::Tx(wait(fx.name, || dp.recv(fx.in_port)).frame.data().to_vec())
            }
            Expect::Pass(_) => Expect::Pass(wait(fx.name, || dp.recv_host()).frame.data().to_vec()),
            Expect::Drop(r) => {
                let key = serde_json::to_value(r)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string();
                let s = dp.stats();
                if s.drops[&key] == 1 {
                    Expect::Drop(*r)
                } else {
                    panic!("{}: expected a {key} drop, stats {s:?}", fx.name)
                }
            }
        };
        assert_eq!(got, fx.expect, "{}", fx.name);
        let s = dp.stats();
        assert_eq!(
            s.output + s.pass + s.tx + s.dropped(),
            1,
            "{}: exactly one verdict, stats {s:?}",
            fx.name
        );
    }
}
