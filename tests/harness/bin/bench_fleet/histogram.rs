//! A fixed-size latency histogram: log-linear buckets of ~3 % width over
//! microseconds, so millions of samples cost the same 16 KiB.

use std::time::Duration;

/// Sub-buckets per power of two.
const SUB: u64 = 32;
/// Enough buckets for any `u64` of microseconds.
const BUCKETS: usize = (SUB as usize) * 64;

#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    n: u64,
    sum_us: u128,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            n: 0,
            sum_us: 0,
            max_us: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let msb = 63 - u64::from(v.leading_zeros());
    let shift = msb - 5;
    ((shift + 1) * SUB + ((v >> shift) - SUB)) as usize
}

/// The highest value that falls in bucket `i`.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let sub = i % SUB + SUB;
    ((sub + 1) << shift) - 1
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[index(us).min(BUCKETS - 1)] += 1;
        self.n += 1;
        self.sum_us += u128::from(us);
        self.max_us = self.max_us.max(us);
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    /// The `q` quantile in milliseconds (a bucket's upper edge: never
    /// flattering), or `None` without samples.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.n == 0 {
            return None;
        }
        let rank = ((q * self.n as f64).ceil() as u64).clamp(1, self.n);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper(i).min(self.max_us) as f64 / 1000.0);
            }
        }
        Some(self.max_us as f64 / 1000.0)
    }

    pub fn mean_ms(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum_us as f64 / self.n as f64 / 1000.0)
    }

    pub fn max_ms(&self) -> Option<f64> {
        (self.n > 0).then(|| self.max_us as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        for v in [0u64, 1, 63, 64, 65, 127, 128, 1000, 123_456, 10_000_000] {
            let i = index(v);
            assert!(upper(i) >= v, "{v} above its bucket's edge");
            assert!(
                i == 0 || upper(i - 1) < v,
                "{v} not in the first fitting bucket"
            );
            assert!(upper(i) - v <= v / 16 + 1, "bucket of {v} too wide");
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((50.0..=52.0).contains(&p50), "{p50}");
        assert!((99.0..=100.0).contains(&p99), "{p99}");
    }
}
