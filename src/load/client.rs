//! A hub client of the load generator as it outlives its connections: the
//! positions it resumes from, when it lost its connection, and when it
//! dials again. Kept small: a run may hold ten thousand of them.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::hub::Position;

/// Longest wait between failed dials.
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// One subscriber (or publisher) across its reconnects.
#[derive(Debug)]
pub(crate) struct Client {
    /// The last position seen per topic of the plan, in its order.
    pub(crate) positions: Box<[Option<Position>]>,
    /// Since when it has been without a live subscription, when it had
    /// one before; the recovery time runs from here.
    pub(crate) away_since: Option<Instant>,
    /// The subscribe answer came and the connection is still open.
    pub(crate) live: bool,
    /// Dials in a row that did not reach an open connection.
    pub(crate) failures: u32,
    /// The server's word on when to come back (a 1013's "retry in N s", a
    /// refused upgrade's Retry-After), used once.
    pub(crate) hint: Option<Duration>,
    /// A protocol failure ended it for the rest of the run.
    pub(crate) retired: bool,
}

impl Client {
    pub(crate) fn new(topics: usize) -> Self {
        Self {
            positions: vec![None; topics].into_boxed_slice(),
            away_since: None,
            live: false,
            failures: 0,
            hint: None,
            retired: false,
        }
    }

    /// How long to wait before the next dial: after a failed dial a full
    /// jitter backoff (a random wait up to `base` doubled per failure, so
    /// clients refused together do not come back together), after a lost
    /// connection a random wait up to `base`; never less than the server
    /// asked for.
    pub(crate) fn delay(&mut self, base: Duration, random: u64) -> Duration {
        let shift = self.failures.min(16);
        let bound = base.saturating_mul(1 << shift).min(BACKOFF_CAP.max(base));
        let jitter = if bound.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(random % bound.as_nanos().max(1) as u64)
        };
        jitter.max(self.hint.take().unwrap_or_default())
    }
}

/// Clients waiting to dial, soonest first.
#[derive(Debug, Default)]
pub(crate) struct Schedule {
    due: BinaryHeap<Reverse<(Instant, u32)>>,
}

impl Schedule {
    pub(crate) fn at(&mut self, when: Instant, client: usize) {
        self.due.push(Reverse((when, client as u32)));
    }

    /// The next client whose time has come.
    pub(crate) fn next_due(&mut self, now: Instant) -> Option<usize> {
        match self.due.peek() {
            Some(Reverse((when, _))) if *when <= now => {
                self.due.pop().map(|Reverse((_, c))| c as usize)
            }
            _ => None,
        }
    }

    /// How long until the next client is due, if any waits.
    pub(crate) fn until_next(&self, now: Instant) -> Option<Duration> {
        self.due
            .peek()
            .map(|Reverse((when, _))| when.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_back_off_with_failures_and_honour_hints() {
        let mut c = Client::new(1);
        let base = Duration::from_millis(100);
        assert!(c.delay(base, u64::MAX) < base);
        c.failures = 3;
        let d = c.delay(base, (base * 8).as_nanos() as u64 - 1);
        assert!(d > base * 7 && d < base * 8, "{d:?}");
        c.failures = 30;
        assert!(c.delay(base, u64::MAX) < BACKOFF_CAP);
        c.hint = Some(Duration::from_secs(20));
        assert_eq!(c.delay(base, 1), Duration::from_secs(20));
        assert!(c.hint.is_none());
    }

    #[test]
    fn the_schedule_hands_out_due_clients_soonest_first() {
        let now = Instant::now();
        let mut s = Schedule::default();
        s.at(now + Duration::from_secs(5), 1);
        s.at(now, 2);
        assert_eq!(s.next_due(now), Some(2));
        assert_eq!(s.next_due(now), None);
        assert!(s.until_next(now).unwrap() > Duration::from_secs(4));
    }
}
