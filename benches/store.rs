//! The control plane's store with 1M rules: committing one generation
//! (MessagePack-encoded, in one redb transaction) and reading it back, each
//! the median of 5 rounds; for scale, the same rules as JSON. Run with
//! `cargo bench --bench store`.

use dse_control::Store;
use std::time::{Duration, Instant};

mod common;

use common::*;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let set = exact_rules(1_000_000);
    let dir = std::env::temp_dir().join(format!("dse-bench-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creates a temp dir");
    let store = Store::open(dir.join("dse.redb")).expect("opens");
    let (mut enc, mut commit, mut read) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        bytes = serde_json::to_vec(&set).expect("encodes").len();
        enc.push(t.elapsed());
        let t = Instant::now();
        store.commit_rules(&set, None, "bench").expect("commits");
        commit.push(t.elapsed());
        let t = Instant::now();
        let back = store.current().expect("reads").expect("has rules");
        read.push(t.elapsed());
        assert_eq!(back.rules.rules.len(), set.rules.len());
    }
    let per_s = |d: Duration| set.rules.len() as f64 / d.as_secs_f64() / 1e6;
    let (e, c, r) = (median(enc), median(commit), median(read));
    println!(
        "store/1M_rules: for scale, encoding them as JSON: {} MB in {e:?}",
        bytes >> 20
    );
    println!(
        "store/1M_rules: commit one generation {c:?} ({:.2} M rules/s, encoding included)",
        per_s(c)
    );
    println!(
        "store/1M_rules: read it back {r:?} ({:.2} M rules/s)",
        per_s(r)
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
