//! A warning that can repeat every loop turn (accept failing at the
//! descriptor limit) is written at most once a second per shard, each line
//! saying how many it stood for, so a stuck condition cannot flood the log.

use std::time::Duration;

use super::Clock;

/// Shortest gap between two lines of one throttled warning.
const GAP: Duration = Duration::from_secs(1);

/// One throttled warning's state: when it may next be written and how many
/// were held back since it last was.
#[derive(Debug, Default)]
pub(crate) struct Throttled {
    next_tick: u64,
    suppressed: u64,
}

impl Throttled {
    /// Whether the warning may be written at `now` (a shard clock tick):
    /// `Some(n)` with the `n` occurrences held back since the last line, or
    /// `None` when this one is held back too.
    pub(crate) fn admit(&mut self, now: u64) -> Option<u64> {
        if now < self.next_tick {
            self.suppressed += 1;
            return None;
        }
        self.next_tick = now + Clock::ticks(GAP);
        Some(std::mem::take(&mut self.suppressed))
    }

    /// Writes `what` as a warning unless one was written within the last
    /// second.
    pub(crate) fn warn(&mut self, now: u64, what: std::fmt::Arguments<'_>) {
        match self.admit(now) {
            Some(0) => tracing::warn!("{what}"),
            Some(n) => tracing::warn!("{what} ({n} more like it suppressed)"),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_counting_the_rest() {
        let mut t = Throttled::default();
        let second = Clock::ticks(GAP);
        assert_eq!(t.admit(0), Some(0));
        for now in 1..second {
            assert_eq!(t.admit(now), None);
        }
        assert_eq!(t.admit(second), Some(second - 1));
        assert_eq!(t.admit(second + 1), None);
        // A quiet spell: the next one is written at once.
        assert_eq!(t.admit(10 * second), Some(1));
    }
}
