//! The latency counts: a [`LatencyHistogram`] per receiver, merged at the
//! end. Log-linear buckets keep a run's memory independent of how many
//! messages it times, at the cost of reading a percentile back at most
//! 1.6 % high.

/// Bits of the sub-bucket index: 2^6 = 64 buckets per power of two.
const SUB_BITS: u32 = 6;
/// Buckets per power of two.
const SUB: u64 = 1 << SUB_BITS;
/// Largest latency told apart, µs (about 76 hours); longer counts as this.
const MAX_LATENCY_US: u64 = (1 << 38) - 1;

/// Latencies in whole microseconds, counted in log-linear buckets: exact
/// below 128 µs, then 64 buckets per power of two, so a value read back is
/// at most 1/64 (1.6 %) above the true one. Memory grows with the largest
/// latency seen (about 7 KiB at 100 ms), never with the number of samples.
#[derive(Debug, Clone, Default)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
    max_us: u64,
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one latency of `us` microseconds.
    pub fn record(&mut self, us: u64) {
        let us = us.min(MAX_LATENCY_US);
        let i = bucket(us);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Add `other`'s counts to these.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// Latencies counted.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest latency counted, exact, µs; 0 when empty.
    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// Nearest-rank percentile `p` (0–100), as [`crate::bench::percentile`]
    /// takes it: the top of the bucket holding the ⌈p·n/100⌉-th smallest
    /// latency (never above the maximum); 0 when empty.
    pub fn percentile_us(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((p / 100.0 * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_top(i).min(self.max_us);
            }
        }
        self.max_us
    }
}

/// The bucket of `us` (at most [`MAX_LATENCY_US`]).
fn bucket(us: u64) -> usize {
    if us < 2 * SUB {
        return us as usize;
    }
    let shift = 63 - us.leading_zeros() - SUB_BITS;
    (u64::from(shift) * SUB + (us >> shift)) as usize
}

/// The largest value that falls into bucket `i`.
fn bucket_top(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let top = i % SUB + SUB;
    ((top + 1) << shift) - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::percentile;

    #[test]
    fn histogram_matches_nearest_rank_exactly_below_128_us() {
        let samples: Vec<u64> = (0..1000).map(|i| (i * 37 + 11) % 128).collect();
        let mut h = LatencyHistogram::new();
        for &s in &samples {
            h.record(s);
        }
        let mut sorted: Vec<f64> = samples.iter().map(|&s| s as f64).collect();
        sorted.sort_by(f64::total_cmp);
        for p in [0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 100.0] {
            assert_eq!(h.percentile_us(p) as f64, percentile(&sorted, p), "p{p}");
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.max_us(), 127);
    }

    #[test]
    fn histogram_is_within_one_sixty_fourth_above() {
        let mut h = LatencyHistogram::new();
        let samples: Vec<u64> = (1..=10_000u64).map(|i| i * i * 7 + 3).collect();
        for &s in &samples {
            h.record(s);
        }
        let sorted: Vec<f64> = samples.iter().map(|&s| s as f64).collect();
        for p in [1.0, 25.0, 50.0, 75.0, 99.0, 99.99] {
            let exact = percentile(&sorted, p);
            let got = h.percentile_us(p) as f64;
            assert!(
                got >= exact && got <= exact * (1.0 + 1.0 / 64.0),
                "p{p}: {got} vs {exact}"
            );
        }
        assert_eq!(h.percentile_us(100.0), *samples.last().unwrap());
        // Every value lands in a bucket whose top is at or above it.
        for v in (0..200_000u64).step_by(7).chain([MAX_LATENCY_US]) {
            let top = bucket_top(bucket(v));
            assert!(
                top >= v && (top - v) as f64 <= v as f64 / 64.0,
                "{v} -> {top}"
            );
        }
        // Beyond the range: counted at the range's end, no panic.
        h.record(u64::MAX);
        assert_eq!(h.max_us(), MAX_LATENCY_US);
        assert!(h.percentile_us(f64::NAN) > 0);
    }

    #[test]
    fn histograms_merge_and_empty_ones_read_zero() {
        let empty = LatencyHistogram::new();
        assert_eq!((empty.percentile_us(50.0), empty.max_us()), (0, 0));
        let (mut a, mut b) = (LatencyHistogram::new(), LatencyHistogram::new());
        for v in [10, 20, 30] {
            a.record(v);
        }
        for v in [5_000, 40] {
            b.record(v);
        }
        a.merge(&b);
        a.merge(&empty);
        assert_eq!(a.count(), 5);
        assert_eq!(a.percentile_us(50.0), 30);
        assert_eq!(a.percentile_us(80.0), 40);
        assert_eq!(a.max_us(), 5_000);
        assert_eq!(a.percentile_us(100.0), 5_000);
    }
}
