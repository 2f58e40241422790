//! Pacing by the generic cell rate algorithm: a token bucket kept as one
//! number, the time at which the bucket would be full again (its
//! "theoretical arrival time"). That makes the per-IP state one `u64` and the
//! global bucket one atomic, updated without a lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// A rate of `per_second` events with bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Nanoseconds one event costs; 0 means unlimited.
    interval_ns: u64,
    /// How far ahead of now the arrival time may run: `burst` events' worth.
    tolerance_ns: u64,
}

impl Rate {
    /// `per_second` events per second (0: unlimited), bursts up to `burst`
    /// (at least 1).
    pub fn new(per_second: u32, burst: u32) -> Self {
        if per_second == 0 {
            return Self::UNLIMITED;
        }
        let interval_ns = 1_000_000_000 / u64::from(per_second);
        Self {
            interval_ns,
            tolerance_ns: interval_ns * u64::from(burst.max(1)),
        }
    }

    /// `per_second` events per second with bursts of `burst`, where a
    /// burst of 0 means the rate itself (as the flags put it).
    pub fn with_burst_or_rate(per_second: u32, burst: u32) -> Self {
        Self::new(per_second, if burst == 0 { per_second } else { burst })
    }

    /// No limit at all.
    pub const UNLIMITED: Self = Self {
        interval_ns: 0,
        tolerance_ns: 0,
    };

    /// Whether this rate limits anything.
    pub fn is_limited(self) -> bool {
        self.interval_ns != 0
    }

    /// Events per second (0: unlimited), as given.
    pub fn per_second(self) -> u64 {
        1_000_000_000u64.checked_div(self.interval_ns).unwrap_or(0)
    }

    /// Takes one event at `now_ns` from a bucket whose state is `tat`:
    /// `Ok(new_tat)`, or `Err(wait_ns)` until the event would fit.
    pub fn take(self, tat: u64, now_ns: u64) -> Result<u64, u64> {
        if !self.is_limited() {
            return Ok(tat);
        }
        let next = tat.max(now_ns) + self.interval_ns;
        let ahead = next - now_ns;
        if ahead <= self.tolerance_ns {
            Ok(next)
        } else {
            Err(ahead - self.tolerance_ns)
        }
    }
}

/// A bucket several threads take from.
#[derive(Debug)]
pub struct SharedBucket {
    rate: Rate,
    tat: AtomicU64,
}

impl SharedBucket {
    /// An empty history: the first `burst` events pass at once.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            tat: AtomicU64::new(0),
        }
    }

    /// Takes one event, or says how many nanoseconds until one would fit.
    pub fn take(&self, now_ns: u64) -> Result<(), u64> {
        if !self.rate.is_limited() {
            return Ok(());
        }
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = self.rate.take(tat, now_ns)?;
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    /// Events passed when one is tried every `step_ns` for `span_ns`.
    fn passed(rate: Rate, step_ns: u64, span_ns: u64) -> u64 {
        let mut tat = 0;
        let mut n = 0;
        let mut now = SEC;
        while now < SEC + span_ns {
            if let Ok(next) = rate.take(tat, now) {
                tat = next;
                n += 1;
            }
            now += step_ns;
        }
        n
    }

    #[test]
    fn a_burst_then_the_rate() {
        let rate = Rate::new(100, 20);
        // Hammered every 100 us for 10 s: the burst, then 100 a second.
        let n = passed(rate, 100_000, 10 * SEC);
        assert!((1000..=1021).contains(&n), "{n}");
        // Tried slower than the rate: everything passes.
        assert_eq!(passed(rate, SEC / 50, 10 * SEC), 500);
    }

    #[test]
    fn the_burst_passes_at_once_and_the_wait_is_exact() {
        let rate = Rate::new(10, 3);
        let mut tat = 0;
        for _ in 0..3 {
            tat = rate.take(tat, SEC).unwrap();
        }
        let wait = rate.take(tat, SEC).unwrap_err();
        assert_eq!(wait, SEC / 10);
        assert!(rate.take(tat, SEC + wait).is_ok());
    }

    #[test]
    fn unlimited_never_refuses() {
        assert_eq!(passed(Rate::new(0, 0), 1, 10_000), 10_000);
        let bucket = SharedBucket::new(Rate::UNLIMITED);
        assert!(bucket.take(0).is_ok());
    }

    #[test]
    fn shared_bucket_holds_across_threads() {
        let bucket = SharedBucket::new(Rate::new(1000, 50));
        let passed = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        // Every thread tries at the same instant.
                        if bucket.take(SEC).is_ok() {
                            passed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(passed.into_inner(), 50);
    }
}
