//! The control plane's store with 1M rules: committing one generation in
//! which every rule changed, committing the same rules again, reading one
//! back (each the median of 5 rounds), and committing a one-rule patch
//! (median and p99 of 200); for scale, the same rules as JSON. Run with
//! `cargo bench --bench store`.

use dse_control::Store;
use dse_control::store::Change;
use std::time::{Duration, Instant};

mod common;

use common::*;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let set = exact_rules(std::env::var("DSE_N").map_or(1_000_000, |v| v.parse().unwrap()));
    let dir = std::env::temp_dir().join(format!("dse-bench-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creates a temp dir");
    let store = Store::open(dir.join("dse.redb")).expect("opens");
    let (mut enc, mut commit, mut same, mut read) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    let mut set = set;
    for round in 0..5 {
        let t = Instant::now();
        bytes = serde_json::to_vec(&set).expect("encodes").len();
        enc.push(t.elapsed());
        for r in &mut set.rules {
            r.priority = round + 1;
        }
        let t = Instant::now();
        store.commit_rules(&set, None, "bench").expect("commits");
        commit.push(t.elapsed());
        let t = Instant::now();
        store.commit_rules(&set, None, "bench").expect("commits");
        same.push(t.elapsed());
        let t = Instant::now();
        let back = store.current().expect("reads").expect("has rules");
        read.push(t.elapsed());
        assert_eq!(back.rules.rules.len(), set.rules.len());
    }
    let mut patch = Vec::new();
    for i in 0..200u32 {
        let mut rule = set.rules[(i as usize * 4999) % set.rules.len()].clone();
        rule.priority = 100 + i;
        let t = Instant::now();
        store
            .commit(
                Change::Patch {
                    upsert: &[rule],
                    remove: &[],
                },
                None,
                "bench",
            )
            .expect("commits");
        patch.push(t.elapsed());
    }
    patch.sort();
    let p99 = patch[patch.len() * 99 / 100];
    let per_s = |d: Duration| set.rules.len() as f64 / d.as_secs_f64() / 1e6;
    let (e, c, r) = (median(enc), median(commit), median(read));
    let (same, patch) = (median(same), median(patch));
    println!(
        "store/1M_rules: for scale, encoding them as JSON: {} MB in {e:?}",
        bytes >> 20
    );
    println!(
        "store/1M_rules: commit one generation {c:?} ({:.2} M rules/s, encoding included)",
        per_s(c)
    );
    println!("store/1M_rules: commit the same rules again {same:?}");
    println!(
        "store/1M_rules: read it back {r:?} ({:.2} M rules/s)",
        per_s(r)
    );
    println!("store/1M_rules: commit a one-rule patch: median {patch:?}, p99 {p99:?}");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
