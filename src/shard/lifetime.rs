//! `--max-lifetime-ms`: which open connections of a shard have lived out
//! their lifetime, each at its own jittered moment of the tenth of the
//! lifetime after it, so that a scale-out sees its long-lived clients move
//! over a few at a time.
//!
//! Nothing is kept in the connection's slot. Connections open in time
//! order, so a queue of `(opened, key, generation)` is sorted by when each
//! lifetime ends; one whose lifetime ended moves to a small heap ordered by
//! its jittered close. An entry whose connection ended early is found
//! stale by its generation when it comes due, and the queue is compacted
//! once it holds twice as many entries as the shard has connections, so
//! reconnecting in a loop cannot grow it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::admission::jitter::Jitter;

/// Lifetimes of a shard's connections, in wheel ticks.
#[derive(Debug)]
pub(crate) struct Lifetimes {
    /// The lifetime (0: connections live forever, nothing is kept).
    ticks: u64,
    /// Connections by the tick they opened: `(opened, key, generation)`.
    open: VecDeque<(u64, u32, u32)>,
    /// Lifetimes that ended, by jittered close: `(close, key, generation)`.
    ending: BinaryHeap<Reverse<(u64, u32, u32)>>,
    jitter: Jitter,
}

impl Lifetimes {
    /// Connections may stay open for `ticks` (0: forever).
    pub(crate) fn new(ticks: u64, shard_id: usize) -> Self {
        Self {
            ticks,
            open: VecDeque::new(),
            ending: BinaryHeap::new(),
            jitter: Jitter::new(0x11fe ^ shard_id as u64),
        }
    }

    /// The connection in slot `key` (`generation`) opened at tick `now`.
    pub(crate) fn opened(&mut self, key: usize, generation: u32, now: u64) {
        if self.ticks != 0 {
            self.open.push_back((now, key as u32, generation));
        }
    }

    /// Drops the entries of connections that ended, once there are twice
    /// as many entries as the `live` connections of the shard; `alive`
    /// says whether slot `key` still holds `generation`.
    pub(crate) fn compact(&mut self, live: usize, alive: impl Fn(usize, u32) -> bool) {
        if self.open.len() >= 2 * live + 64 {
            self.open.retain(|&(_, k, g)| alive(k as usize, g));
        }
    }

    /// The connections whose jittered close has come by `now`, as `(key,
    /// generation)`: the caller checks each is still the connection in
    /// its slot and still open.
    pub(crate) fn due(&mut self, now: u64, out: &mut Vec<(usize, u32)>) {
        if self.ticks == 0 {
            return;
        }
        let spread = self.ticks / 10;
        while let Some(&(opened, key, generation)) = self.open.front() {
            if opened + self.ticks > now {
                break;
            }
            self.open.pop_front();
            let close = opened + self.ticks + self.jitter.below(spread + 1);
            self.ending.push(Reverse((close, key, generation)));
        }
        while let Some(&Reverse((close, key, generation))) = self.ending.peek() {
            if close > now {
                break;
            }
            self.ending.pop();
            out.push((key as usize, generation));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(lifetimes: &mut Lifetimes, now: u64) -> Vec<(usize, u32)> {
        let mut out = Vec::new();
        lifetimes.due(now, &mut out);
        out
    }

    #[test]
    fn each_connection_ends_within_a_tenth_past_its_lifetime() {
        let mut lifetimes = Lifetimes::new(1000, 0);
        for key in 0..200 {
            lifetimes.opened(key, 1, key as u64);
        }
        let mut ended = std::collections::HashMap::new();
        for now in 0..1400 {
            for (key, _) in due(&mut lifetimes, now) {
                assert!(ended.insert(key, now).is_none(), "{key} twice");
            }
        }
        assert_eq!(ended.len(), 200);
        let mut early = 0;
        for (key, at) in ended {
            let lived = at - key as u64;
            assert!((1000..=1100).contains(&lived), "{key} lived {lived}");
            early += usize::from(lived < 1050);
        }
        // Spread, not all at one end of the window.
        assert!(
            (40..160).contains(&early),
            "{early} of 200 in the first half"
        );
    }

    #[test]
    fn without_a_lifetime_nothing_is_kept() {
        let mut lifetimes = Lifetimes::new(0, 0);
        lifetimes.opened(1, 1, 0);
        assert!(lifetimes.open.is_empty());
        assert!(due(&mut lifetimes, u64::MAX / 2).is_empty());
    }

    #[test]
    fn reconnecting_in_a_loop_does_not_grow_the_queue() {
        let mut lifetimes = Lifetimes::new(1_000_000, 0);
        // One slot, reused by a new generation each time: only the
        // latest is alive.
        for generation in 0..100_000u32 {
            lifetimes.opened(0, generation, 0);
            lifetimes.compact(1, |_, g| g == generation);
        }
        assert!(lifetimes.open.len() <= 2 + 64, "{}", lifetimes.open.len());
    }
}
