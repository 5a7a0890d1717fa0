//! Token-bucket meters. Time is passed in; nothing here reads a clock.

use crate::compile::MeterRecord;
use serde::{Deserialize, Serialize};

const NANO: u64 = 1_000_000_000;

/// A bucket's state: tokens in billionths, and when it was last refilled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// Tokens times 10^9.
    pub nano_tokens: u64,
    /// Time of the last refill, in the datapath clock's nanoseconds.
    pub last_ns: u64,
}

impl Bucket {
    /// A full bucket for `cfg`.
    pub fn full(cfg: &MeterRecord) -> Bucket {
        Bucket {
            nano_tokens: cfg.burst.saturating_mul(NANO),
            last_ns: 0,
        }
    }

    /// Refills for the time since the last refill, then takes the tokens a
    /// frame of `len` bytes costs if there are enough; returns whether it
    /// conforms. A clock that steps back refills nothing.
    pub fn admit(&mut self, cfg: &MeterRecord, len: usize, now_ns: u64) -> bool {
        let cap = cfg.burst.saturating_mul(NANO);
        if now_ns > self.last_ns {
            let add = (now_ns - self.last_ns).saturating_mul(cfg.rate);
            self.nano_tokens = self.nano_tokens.saturating_add(add);
            self.last_ns = now_ns;
        }
        // Also when no time passed: a meter whose burst shrank in a
        // transaction must not pass more than its new burst.
        self.nano_tokens = self.nano_tokens.min(cap);
        let cost = if cfg.bits != 0 {
            len as u64 * 8 * NANO
        } else {
            NANO
        };
        if self.nano_tokens >= cost {
            self.nano_tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pps_bucket_holds_the_rate() {
        let cfg = MeterRecord {
            rate: 1000,
            burst: 10,
            bits: 0,
            pad: [0; 7],
        };
        let mut b = Bucket::full(&cfg);
        let passed = (0..20).filter(|_| b.admit(&cfg, 64, 0)).count();
        assert_eq!(passed, 10, "a full bucket passes its burst");
        // 1 ms later at 1000 pps: one more token.
        assert!(b.admit(&cfg, 64, 1_000_000));
        assert!(!b.admit(&cfg, 64, 1_000_000));
    }

    #[test]
    fn a_smaller_burst_caps_saved_tokens_at_once() {
        let big = MeterRecord {
            rate: 1,
            burst: 100,
            bits: 0,
            pad: [0; 7],
        };
        let small = MeterRecord { burst: 3, ..big };
        let mut b = Bucket::full(&big);
        let passed = (0..10).filter(|_| b.admit(&small, 64, 0)).count();
        assert_eq!(passed, 3);
    }

    #[test]
    fn bps_bucket_charges_bits() {
        let cfg = MeterRecord {
            rate: 8000,
            burst: 8 * 100,
            bits: 1,
            pad: [0; 7],
        };
        let mut b = Bucket::full(&cfg);
        assert!(b.admit(&cfg, 100, 0));
        assert!(!b.admit(&cfg, 1, 0));
        assert!(
            b.admit(&cfg, 10, 10_000_000),
            "10 ms at 8000 bit/s buys 80 bits"
        );
    }
}
