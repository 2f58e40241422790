//! A hashed timer wheel: O(1) to arm, O(1) amortised to expire, no heap of
//! a million entries.
//!
//! Entries are never cancelled. A connection keeps its own deadline and the
//! tick of its earliest armed entry; an entry that fires early (the deadline
//! moved later) is re-armed, and one that was superseded is skipped. So
//! extending an idle deadline on every read costs nothing here.

/// Granularity: deadlines fire up to one tick late.
pub(crate) const TICK_MS: u64 = 10;

/// Slots in the wheel; 4096 ticks cover 40.96 s, longer deadlines lap.
const SLOTS: usize = 4096;

/// One armed deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) key: usize,
    pub(crate) generation: u32,
    pub(crate) tick: u64,
}

#[derive(Debug)]
pub(crate) struct TimerWheel {
    slots: Vec<Vec<Entry>>,
    /// The next tick to expire.
    cursor: u64,
    armed: usize,
}

impl TimerWheel {
    pub(crate) fn new(now_tick: u64) -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            cursor: now_tick,
            armed: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.armed == 0
    }

    /// Arms an entry; a tick in the past fires at the next expiry.
    /// Returns the tick the entry will fire at: a tick already passed is
    /// moved to the next one the wheel visits.
    pub(crate) fn arm(&mut self, key: usize, generation: u32, tick: u64) -> u64 {
        let tick = tick.max(self.cursor);
        self.slots[(tick % SLOTS as u64) as usize].push(Entry {
            key,
            generation,
            tick,
        });
        self.armed += 1;
        tick
    }

    /// Moves every entry due at or before `now_tick` into `due`.
    pub(crate) fn expire(&mut self, now_tick: u64, due: &mut Vec<Entry>) {
        // After a long stall, one lap visits every slot; no need for more.
        let last = now_tick.min(self.cursor + SLOTS as u64 - 1);
        while self.cursor <= last {
            let slot = &mut self.slots[(self.cursor % SLOTS as u64) as usize];
            let before = due.len();
            let mut i = 0;
            while i < slot.len() {
                if slot[i].tick <= now_tick {
                    due.push(slot.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            self.armed -= due.len() - before;
            self.cursor += 1;
        }
        self.cursor = self.cursor.max(now_tick + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(due: &[Entry]) -> Vec<usize> {
        let mut k: Vec<usize> = due.iter().map(|e| e.key).collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn fires_at_the_tick_and_not_before() {
        let mut w = TimerWheel::new(100);
        w.arm(1, 0, 105);
        w.arm(2, 0, 100);
        w.arm(3, 0, 100 + SLOTS as u64 + 5); // laps once
        let mut due = Vec::new();
        w.expire(104, &mut due);
        assert_eq!(keys(&due), [2]);
        due.clear();
        w.expire(105, &mut due);
        assert_eq!(keys(&due), [1]);
        due.clear();
        w.expire(100 + SLOTS as u64 + 4, &mut due);
        assert!(due.is_empty());
        w.expire(100 + SLOTS as u64 + 5, &mut due);
        assert_eq!(keys(&due), [3]);
        assert!(w.is_empty());
    }

    #[test]
    fn an_entry_armed_in_the_past_fires_next_turn() {
        let mut w = TimerWheel::new(0);
        let mut due = Vec::new();
        w.expire(50, &mut due);
        assert_eq!(w.arm(1, 0, 50), 51);
        assert_eq!(w.arm(2, 0, 10), 51);
        w.expire(51, &mut due);
        assert_eq!(keys(&due), [1, 2]);
    }

    #[test]
    fn a_long_stall_fires_everything_overdue() {
        let mut w = TimerWheel::new(0);
        for k in 0..100 {
            w.arm(k, 0, (k as u64) * 97);
        }
        let mut due = Vec::new();
        w.expire(1_000_000, &mut due);
        assert_eq!(due.len(), 100);
        assert!(w.is_empty());
    }
}
