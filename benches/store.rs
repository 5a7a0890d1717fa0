//! The control plane's store with 1M rules: committing one generation in
//! which every rule changed, committing the same rules again, reading one
//! back (each the median of 5 rounds), and committing a one-rule patch
//! (median and p99 of 200, or `DSE_STORE_PATCHES`); for scale, the same rules as JSON, and, as the
//! floor of a patch, bare redb commits of one chunk-sized value into a
//! table of as many such values. Run with `cargo bench --bench store`
//! (`DSE_STORE_RULES=N` for another number of rules).

use dse_control::Store;
use dse_control::store::Change;
use redb::{Database, TableDefinition};
use std::time::{Duration, Instant};

mod common;

use common::*;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = std::env::var("DSE_STORE_RULES").map_or(1_000_000, |v| v.parse().expect("a number"));
    let set = exact_rules(n);
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
    let patches = std::env::var("DSE_STORE_PATCHES").map_or(200, |v| v.parse().expect("a number"));
    for i in 0..patches {
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
    for (durability, how) in [
        (redb::Durability::Immediate, "durable"),
        (redb::Durability::None, "non-durable"),
    ] {
        let (floor, floor_p99) = bare_redb_commits(&dir, n, durability);
        println!(
            "store/1M_rules: for scale, a bare {how} redb commit of one {CHUNK_BYTES}-byte value (and a 100-byte one) among {} such: median {floor:?}, p99 {floor_p99:?}",
            n / dse_control::store::CHUNK_IDS
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// About what one chunk of the store's rules takes (128 rules of ~160 B).
const CHUNK_BYTES: usize = 20_000;

/// Median and p99 of 200 durable redb commits, each of one chunk-sized
/// value and one small one, into a table holding a chunk for every
/// `CHUNK_IDS` of `n` rules: the least a store patch can cost.
fn bare_redb_commits(
    dir: &std::path::Path,
    n: u32,
    durability: redb::Durability,
) -> (Duration, Duration) {
    const CHUNKS: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("chunks");
    const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
    let path = dir.join("bare.redb");
    let db = Database::create(&path).expect("creates");
    let chunks = n / dse_control::store::CHUNK_IDS;
    let value = vec![7u8; CHUNK_BYTES];
    let tx = db.begin_write().expect("writes");
    {
        let mut t = tx.open_table(CHUNKS).expect("opens");
        for c in 0..chunks {
            t.insert((c, 1), value.as_slice()).expect("inserts");
        }
    }
    tx.commit().expect("commits");
    let mut took = Vec::new();
    for i in 0..200u64 {
        let t = Instant::now();
        let mut tx = db.begin_write().expect("writes");
        tx.set_durability(durability)
            .expect("a single-process database");
        {
            let mut t = tx.open_table(CHUNKS).expect("opens");
            let c = ((i * 4999) % u64::from(chunks.max(1))) as u32;
            t.insert((c, 2 + i), value.as_slice()).expect("inserts");
            let mut log = tx.open_table(LOG).expect("opens");
            log.insert(i, [1u8; 100].as_slice()).expect("inserts");
        }
        tx.commit().expect("commits");
        took.push(t.elapsed());
    }
    drop(db);
    let _ = std::fs::remove_file(&path);
    took.sort();
    (took[took.len() / 2], took[took.len() * 99 / 100])
}
