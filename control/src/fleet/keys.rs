//! Where everything lives in etcd, under one prefix (`/dse` unless given).
//! Pure functions: no I/O.
//!
//! ```text
//! <prefix>/rulesets/<name>/current              the current generation, decimal
//! <prefix>/rulesets/<name>/gen/<g>/meta         its size, chunk count and SHA-256
//! <prefix>/rulesets/<name>/gen/<g>/chunk/<i>    its JSON text, in chunks
//! <prefix>/hosts/<host>/...                     what the host's agent writes
//! <prefix>/control/...                          what only controllers write
//! ```
//!
//! Generations and chunk indexes are zero-padded, so that keys sort in
//! their numeric order.

/// The prefix when none is given.
pub const DEFAULT_PREFIX: &str = "/dse";

/// `<prefix>/rulesets/<name>/current`.
pub fn current(prefix: &str, rule_set: &str) -> String {
    format!("{prefix}/rulesets/{rule_set}/current")
}

/// `<prefix>/rulesets/<name>/gen/<g>/`: everything of one generation.
pub fn generation(prefix: &str, rule_set: &str, generation: u64) -> String {
    format!("{prefix}/rulesets/{rule_set}/gen/{generation:020}/")
}

/// `<prefix>/rulesets/<name>/gen/<g>/meta`.
pub fn meta(prefix: &str, rule_set: &str, g: u64) -> String {
    format!("{}meta", generation(prefix, rule_set, g))
}

/// `<prefix>/rulesets/<name>/gen/<g>/chunk/<i>`.
pub fn chunk(prefix: &str, rule_set: &str, g: u64, i: usize) -> String {
    format!("{}chunk/{i:06}", generation(prefix, rule_set, g))
}

/// `<prefix>/rulesets/`: every rule set, which every agent may read.
pub fn rule_sets(prefix: &str) -> String {
    format!("{prefix}/rulesets/")
}

/// `<prefix>/hosts/<host>/`: the keys host `host`'s agent writes.
pub fn host(prefix: &str, host: &str) -> String {
    format!("{prefix}/hosts/{host}/")
}

/// `<prefix>/control/`: the keys only controllers write.
pub fn control(prefix: &str) -> String {
    format!("{prefix}/control/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_and_chunks_sort_in_numeric_order() {
        let mut keys = vec![
            chunk("/dse", "default", 10, 2),
            chunk("/dse", "default", 9, 11),
            chunk("/dse", "default", 9, 2),
            meta("/dse", "default", 9),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                chunk("/dse", "default", 9, 2),
                chunk("/dse", "default", 9, 11),
                meta("/dse", "default", 9),
                chunk("/dse", "default", 10, 2),
            ]
        );
        assert!(chunk("/dse", "default", 9, 0).starts_with(&generation("/dse", "default", 9)));
        assert!(!host("/dse", "h1").starts_with(&host("/dse", "h")));
    }
}
