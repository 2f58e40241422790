//! Randomness for spreading things out: tarpit delays, `Retry-After` hints
//! and drain closes. Not cryptographic; it only has to keep a crowd of
//! clients from moving in step.

use std::time::{Duration, Instant};

/// A small xorshift generator, one per shard.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded from the clock and `salt` (the shard id), so shards and
    /// restarts differ.
    pub fn new(salt: u64) -> Self {
        let now = Instant::now().elapsed().as_nanos() as u64;
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self::seeded(wall ^ now ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// A fixed sequence, for tests.
    pub fn seeded(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[base / 2, base * 3 / 2)`: the mean stays `base`.
    pub fn around(&mut self, base: Duration) -> Duration {
        let ms = base.as_millis() as u64;
        Duration::from_millis(ms / 2 + self.below(ms.max(1)))
    }

    /// A `Retry-After` value in whole seconds: at least `base_secs` (at
    /// least 1), up to twice that, so refused clients come back spread out.
    pub fn retry_after(&mut self, base_secs: u64) -> u64 {
        let base = base_secs.max(1);
        base + self.below(base + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_stay_in_range_and_spread() {
        let mut j = Jitter::seeded(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let d = j.around(Duration::from_millis(1000)).as_millis() as u64;
            assert!((500..1500).contains(&d), "{d}");
            seen.insert(d / 100);
            let r = j.retry_after(5);
            assert!((5..=10).contains(&r), "{r}");
            assert!(j.below(3) < 3);
        }
        assert_eq!(seen.len(), 10, "every tenth of the range is hit");
        assert_eq!(j.below(0), 0);
        assert!((1..=2).contains(&j.retry_after(0)));
    }

    #[test]
    fn shards_get_different_sequences() {
        let a: Vec<u64> = (0..4).map(|_| Jitter::new(0).below(1 << 40)).collect();
        let mut b = Jitter::new(1);
        assert_ne!(a[0], b.below(1 << 40));
    }
}
