//! Members in order of arrival, so the oldest can be let go first when a
//! bounded set is full (pending handshakes, the tarpit).
//!
//! Members leave in any order (a handshake completes, a parked client hangs
//! up); instead of searching the queue, a leaver is only counted out and its
//! entry is skipped when it reaches the front. The queue is compacted when
//! skipped entries outnumber the members, so it stays within a constant
//! factor of the members it holds.

use std::collections::VecDeque;

/// A slot key and the generation of the connection that held it then.
pub type Member = (usize, u32);

/// Arrival-ordered members with lazy removal.
#[derive(Debug, Default)]
pub struct AgeQueue {
    entries: VecDeque<Member>,
    members: usize,
}

impl AgeQueue {
    /// Members currently in the set.
    pub fn len(&self) -> usize {
        self.members
    }

    /// Whether no member is in the set.
    pub fn is_empty(&self) -> bool {
        self.members == 0
    }

    /// Adds the newest member.
    pub fn push(&mut self, member: Member) {
        self.entries.push_back(member);
        self.members += 1;
    }

    /// Drops the entries of members that left once they outnumber the
    /// members; `is_member` says whether an entry still stands for one.
    /// Called regularly, this keeps the queue within a constant factor of
    /// its members at amortized O(1) per push.
    pub fn compact(&mut self, is_member: impl Fn(Member) -> bool) {
        if self.entries.len() > 2 * self.members + 64 {
            self.entries.retain(|&m| is_member(m));
        }
    }

    /// Counts a member out; its entry is skipped later.
    pub fn leave(&mut self) {
        debug_assert!(self.members > 0);
        self.members = self.members.saturating_sub(1);
    }

    /// Removes and returns the oldest entry that is still a member; the
    /// caller must then take it out of the set (and call [`Self::leave`]).
    pub fn oldest(&mut self, is_member: impl Fn(Member) -> bool) -> Option<Member> {
        while let Some(m) = self.entries.pop_front() {
            if is_member(m) {
                return Some(m);
            }
        }
        None
    }

    /// Empties the queue: every entry, oldest first, members or not (the
    /// caller tells them apart), and no member is counted any more.
    pub fn drain(&mut self) -> impl Iterator<Item = Member> + '_ {
        self.members = 0;
        self.entries.drain(..)
    }

    /// Entries held, members or not (for tests of the bound).
    pub fn entries(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashSet;

    #[test]
    fn the_oldest_member_comes_first_and_leavers_are_skipped() {
        let live = RefCell::new(HashSet::new());
        let mut q = AgeQueue::default();
        for k in 0..5 {
            live.borrow_mut().insert((k, 0));
            q.push((k, 0));
        }
        live.borrow_mut().remove(&(0, 0));
        q.leave();
        live.borrow_mut().remove(&(2, 0));
        q.leave();
        assert_eq!(q.len(), 3);
        assert_eq!(q.oldest(|m| live.borrow().contains(&m)), Some((1, 0)));
        live.borrow_mut().remove(&(1, 0));
        q.leave();
        assert_eq!(q.oldest(|m| live.borrow().contains(&m)), Some((3, 0)));
    }

    #[test]
    fn churn_does_not_grow_the_queue() {
        let live = RefCell::new(HashSet::new());
        let mut q = AgeQueue::default();
        // One member that never leaves at the front, then a stream of
        // members that leave right away: the entries stay bounded.
        live.borrow_mut().insert((0, 0));
        q.push((0, 0));
        for k in 1..100_000 {
            live.borrow_mut().insert((k, 1));
            q.push((k, 1));
            live.borrow_mut().remove(&(k, 1));
            q.leave();
            q.compact(|m| live.borrow().contains(&m));
        }
        assert_eq!(q.len(), 1);
        assert!(q.entries() <= 2 * q.len() + 65, "{}", q.entries());
        assert_eq!(q.oldest(|m| live.borrow().contains(&m)), Some((0, 0)));
    }
}
