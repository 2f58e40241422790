//! Pending handshakes that a flood cannot use to push other clients out.
//! When a shard holds more than its bound, the member let go is the oldest
//! one of the client that holds the most (ties: the one whose oldest is
//! oldest), so one address opening thousands of half-open connections
//! loses its own and leaves everyone else's alone.
//!
//! Below the bound nothing is grouped: members wait in arrival order with
//! their client unknown, which costs a push and a count. Only when the bound
//! is passed and a member must be chosen are the newcomers sorted by client
//! (once each: the caller may then have to ask a socket who its peer is).
//! Sorted members sit in one line per client, ranked by (members, age of
//! the line's oldest), so a choice costs O(log clients) and a member that
//! leaves costs O(log clients) too. Lines skip their leavers lazily, like
//! the arrival queue, and are compacted when leavers outnumber members, so
//! memory stays within a constant factor of the members.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};

use super::age_queue::{AgeQueue, Member};
use super::client::ClientKey;

/// Where a sorted member is.
#[derive(Debug, Clone, Copy)]
struct Place {
    generation: u32,
    client: ClientKey,
    /// Its rank in arrival order among sorted members.
    seq: u64,
    /// Chosen to go: counted until it leaves, but no longer in a line.
    picked: bool,
}

/// One client's sorted members, oldest first, leavers skipped lazily.
#[derive(Debug, Default)]
struct Line {
    entries: VecDeque<(u64, Member)>,
    members: usize,
}

/// A line's place in the ranking: most members last, then oldest last.
type Rank = (usize, Reverse<u64>, ClientKey);

/// Pending members, grouped by client once the bound is passed.
#[derive(Debug, Default)]
pub struct FairQueue {
    /// Members whose client is not asked yet, in arrival order; all of them
    /// arrived after every sorted member.
    arrivals: AgeQueue,
    /// Sorted members by slot key.
    sorted: HashMap<usize, Place>,
    lines: HashMap<ClientKey, Line>,
    ranking: BTreeSet<Rank>,
    next_seq: u64,
    /// Sorted members picked to go that have not left yet.
    picked: usize,
}

impl FairQueue {
    /// Members counted, picked ones included until they leave.
    pub fn len(&self) -> usize {
        self.arrivals.len() + self.sorted.len()
    }

    /// Whether no member is counted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Members not yet picked to go.
    pub fn waiting(&self) -> usize {
        self.len() - self.picked
    }

    /// Adds the newest member; its client is asked only if a choice must
    /// be made while it is still here.
    pub fn push(&mut self, member: Member) {
        self.arrivals.push(member);
    }

    /// Counts a member out, wherever it is.
    pub fn leave(&mut self, (key, generation): Member) {
        // The common case, it came and went below the bound, skips hashing.
        let sorted = if self.sorted.is_empty() {
            None
        } else {
            self.sorted.get(&key).copied()
        };
        match sorted {
            Some(place) if place.generation == generation => {
                self.sorted.remove(&key);
                if place.picked {
                    self.picked -= 1;
                } else {
                    self.shorten(place.client, |_| {});
                }
            }
            _ => self.arrivals.leave(),
        }
    }

    /// Drops the arrival entries of members that left, as
    /// [`AgeQueue::compact`] does.
    pub fn compact(&mut self, is_member: impl Fn(Member) -> bool) {
        self.arrivals.compact(is_member);
    }

    /// Puts every arrival in its client's line, oldest first. `client_of`
    /// names a member's client, or `None` for an entry that no longer
    /// stands for a member.
    pub fn sort(&mut self, mut client_of: impl FnMut(Member) -> Option<ClientKey>) {
        let arrivals: Vec<Member> = self.arrivals.drain().collect();
        for member in arrivals {
            let Some(client) = client_of(member) else {
                continue;
            };
            let seq = self.next_seq;
            self.next_seq += 1;
            let place = Place {
                generation: member.1,
                client,
                seq,
                picked: false,
            };
            self.sorted.insert(member.0, place);
            let line = self.lines.entry(client).or_default();
            if let Some(rank) = rank(line, client) {
                self.ranking.remove(&rank);
            }
            line.entries.push_back((seq, member));
            line.members += 1;
            self.ranking.insert(rank(line, client).expect("a member"));
        }
    }

    /// Picks the member to let go: the oldest sorted member of the client
    /// with the most. It stays counted until it [`Self::leave`]s. Call
    /// [`Self::sort`] first, or arrivals are not considered.
    pub fn pick(&mut self) -> Option<usize> {
        let &(_, _, client) = self.ranking.last()?;
        let mut chosen = None;
        self.shorten(client, |line| {
            // The front of a ranked line is always a member.
            chosen = line.entries.pop_front().map(|(_, (key, _))| key);
        });
        let key = chosen?;
        if let Some(place) = self.sorted.get_mut(&key) {
            place.picked = true;
            self.picked += 1;
        }
        Some(key)
    }

    /// Takes one member out of `client`'s line (`take` pops it when it is
    /// the front; a leaver elsewhere is skipped later) and re-ranks the line.
    fn shorten(&mut self, client: ClientKey, take: impl FnOnce(&mut Line)) {
        let Some(line) = self.lines.get_mut(&client) else {
            return;
        };
        if let Some(rank) = rank(line, client) {
            self.ranking.remove(&rank);
        }
        take(line);
        line.members = line.members.saturating_sub(1);
        if line.members == 0 {
            self.lines.remove(&client);
            return;
        }
        let sorted = &self.sorted;
        let stands = |&(seq, (key, _)): &(u64, Member)| {
            sorted.get(&key).is_some_and(|p| p.seq == seq && !p.picked)
        };
        while line.entries.front().is_some_and(|e| !stands(e)) {
            line.entries.pop_front();
        }
        if line.entries.len() > 2 * line.members + 8 {
            line.entries.retain(stands);
        }
        if let Some(rank) = rank(line, client) {
            self.ranking.insert(rank);
        }
    }

    /// Entries held in lines and arrivals, members or not (for tests of
    /// the bound).
    pub fn entries(&self) -> usize {
        self.arrivals.entries() + self.lines.values().map(|l| l.entries.len()).sum::<usize>()
    }
}

fn rank(line: &Line, client: ClientKey) -> Option<Rank> {
    let &(oldest, _) = line.entries.front()?;
    Some((line.members, Reverse(oldest), client))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(n: u32) -> ClientKey {
        ClientKey::V4(n)
    }

    /// A queue with members `0..clients.len()`, member `k` from
    /// `clients[k]`, sorted.
    fn sorted(clients: &[u32]) -> FairQueue {
        let mut q = FairQueue::default();
        for k in 0..clients.len() {
            q.push((k, 0));
        }
        q.sort(|(k, _)| Some(client(clients[k])));
        q
    }

    #[test]
    fn the_client_with_the_most_loses_its_oldest() {
        // Two early members from client 3, then six from client 2.
        let mut q = sorted(&[3, 3, 2, 2, 2, 2, 2, 2]);
        let picks: Vec<usize> = (0..4).filter_map(|_| q.pick()).collect();
        assert_eq!(picks, [2, 3, 4, 5]);
        assert_eq!((q.len(), q.waiting()), (8, 4));
        // Client 2 is down to two, as many as client 3 holds: the tie goes
        // to the client whose oldest is oldest.
        assert_eq!(q.pick(), Some(0));
        for k in [2, 3, 4, 5, 0] {
            q.leave((k, 0));
        }
        assert_eq!((q.len(), q.waiting()), (3, 3));
        assert_eq!(q.pick(), Some(6));
    }

    #[test]
    fn distinct_clients_go_oldest_first() {
        let mut q = sorted(&[5, 6, 7, 8]);
        assert_eq!(q.pick(), Some(0));
        assert_eq!(q.pick(), Some(1));
    }

    #[test]
    fn leavers_are_skipped_and_stale_arrivals_dropped() {
        let mut q = FairQueue::default();
        for k in 0..6 {
            q.push((k, 0));
        }
        // Member 1 leaves before sorting; 4 is no member by then either.
        q.leave((1, 0));
        q.sort(|(k, _)| (k != 1 && k != 4).then_some(client(9)));
        assert_eq!(q.len(), 4);
        // The oldest leaves from its line: the next one is picked.
        q.leave((0, 0));
        assert_eq!(q.pick(), Some(2));
        q.leave((5, 0));
        assert_eq!(q.pick(), Some(3));
        assert_eq!(q.pick(), None);
    }

    #[test]
    fn a_slot_reused_after_leaving_is_a_new_member() {
        let mut q = sorted(&[1, 1]);
        q.leave((0, 0));
        q.push((0, 1));
        assert_eq!(q.len(), 2);
        q.sort(|_| Some(client(2)));
        assert_eq!(q.pick(), Some(1));
        q.leave((1, 0));
        assert_eq!(q.pick(), Some(0));
        q.leave((0, 1));
        assert!(q.is_empty());
    }

    #[test]
    fn churn_does_not_grow_the_lines() {
        let mut q = FairQueue::default();
        // One member that never leaves at the front of a line, then a
        // stream of members of the same client that leave right away.
        q.push((0, 0));
        q.sort(|_| Some(client(1)));
        for k in 1..100_000 {
            q.push((k, 0));
            q.sort(|_| Some(client(1)));
            q.leave((k, 0));
        }
        assert_eq!(q.len(), 1);
        assert!(q.entries() <= 2 + 9, "{}", q.entries());
        assert_eq!(q.pick(), Some(0));
    }
}
