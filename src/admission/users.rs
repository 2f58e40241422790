//! The process-wide count of connections per user (a signed token's `sub`),
//! for `--max-conns-per-user`: a user who opens a tab too many on any
//! shard is refused, however many addresses the tabs come from.
//!
//! Like the per-client table it is consulted once when a connection
//! upgrades and once when it ends, split into stripes behind their own
//! mutexes; an entry lives exactly as long as its user holds a connection,
//! so the table is bounded by the connections themselves.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use slab::Slab;

const STRIPE_BITS: u32 = 6;
const STRIPES: usize = 1 << STRIPE_BITS;
const SLOT_BITS: u32 = 32 - STRIPE_BITS;

/// One connection counted for its user, given back when dropped: whatever
/// way the connection ends, its count cannot leak.
#[derive(Debug)]
pub struct UserCount {
    users: Arc<Users>,
    slot: NonZeroU32,
}

impl Drop for UserCount {
    fn drop(&mut self) {
        self.users.release(self.slot);
    }
}

#[derive(Debug)]
struct Entry {
    user: Box<str>,
    open: u32,
}

#[derive(Debug, Default)]
struct Stripe {
    index: HashMap<Box<str>, u32>,
    entries: Slab<Entry>,
}

/// Connections per user, capped.
#[derive(Debug)]
pub struct Users {
    cap: u32,
    stripes: Box<[Mutex<Stripe>]>,
    hasher: RandomState,
}

impl Users {
    /// A table letting each user hold `cap` connections (0: no cap, and
    /// nothing is counted).
    pub fn new(cap: u32) -> Self {
        Self {
            cap,
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Counts one more connection of `user`: `Ok(None)` when nothing is
    /// counted, `Err(())` when the user already holds its cap.
    #[allow(clippy::result_unit_err)]
    pub fn admit(self: &Arc<Self>, user: &str) -> Result<Option<UserCount>, ()> {
        if self.cap == 0 {
            return Ok(None);
        }
        let s = (self.hasher.hash_one(user) as usize) & (STRIPES - 1);
        let mut stripe = self.stripes[s].lock().unwrap_or_else(|e| e.into_inner());
        let slot = match stripe.index.get(user) {
            Some(&slot) => slot as usize,
            // A stripe full of distinct users (67 million) refuses the next
            // one rather than let its ticket collide.
            None if stripe.entries.vacant_key() >= (1 << SLOT_BITS) - 1 => return Err(()),
            None => {
                let slot = stripe.entries.insert(Entry {
                    user: user.into(),
                    open: 0,
                });
                stripe.index.insert(user.into(), slot as u32);
                slot
            }
        };
        let entry = &mut stripe.entries[slot];
        if entry.open >= self.cap {
            return Err(());
        }
        entry.open += 1;
        let encoded = ((s as u32) << SLOT_BITS | slot as u32) + 1;
        Ok(Some(UserCount {
            users: Arc::clone(self),
            slot: NonZeroU32::new(encoded).expect("never zero after +1"),
        }))
    }

    /// Gives a connection's count back; the user is forgotten with its
    /// last connection.
    fn release(&self, slot: NonZeroU32) {
        let encoded = slot.get() - 1;
        let s = (encoded >> SLOT_BITS) as usize;
        let slot = (encoded & ((1 << SLOT_BITS) - 1)) as usize;
        let mut stripe = self.stripes[s].lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = stripe.entries.get_mut(slot) else {
            debug_assert!(false, "ticket for a missing user");
            return;
        };
        entry.open = entry.open.saturating_sub(1);
        if entry.open == 0 {
            let entry = stripe.entries.remove(slot);
            stripe.index.remove(&entry.user);
        }
    }

    /// Connections `user` holds now (0 when nothing is counted).
    pub fn open(&self, user: &str) -> u32 {
        let s = (self.hasher.hash_one(user) as usize) & (STRIPES - 1);
        let stripe = self.stripes[s].lock().unwrap_or_else(|e| e.into_inner());
        stripe
            .index
            .get(user)
            .map_or(0, |&slot| stripe.entries[slot as usize].open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_gets_exactly_its_cap_and_others_are_unaffected() {
        let users = Arc::new(Users::new(2));
        let a1 = users.admit("alice").unwrap().unwrap();
        let a2 = users.admit("alice").unwrap().unwrap();
        assert!(users.admit("alice").is_err());
        let b = users.admit("bob").unwrap().unwrap();
        assert_eq!(users.open("alice"), 2);
        drop(a1);
        assert_eq!(users.open("alice"), 1);
        let a3 = users.admit("alice").unwrap().unwrap();
        assert_eq!(users.open("bob"), 1);
        drop((a2, a3, b));
        assert_eq!(users.open("alice"), 0);
        assert!(users.stripes.iter().all(|s| {
            let s = s.lock().unwrap();
            s.index.is_empty() && s.entries.is_empty()
        }));
    }

    #[test]
    fn without_a_cap_nothing_is_counted() {
        let users = Arc::new(Users::new(0));
        for _ in 0..10 {
            assert!(users.admit("alice").unwrap().is_none());
        }
        assert_eq!(users.open("alice"), 0);
    }

    #[test]
    fn shards_share_one_cap() {
        let users = Arc::new(Users::new(100));
        let admitted: usize = (0..4)
            .map(|_| {
                let users = Arc::clone(&users);
                std::thread::spawn(move || {
                    (0..50)
                        .filter_map(|_| users.admit("alice").ok().flatten())
                        .map(std::mem::forget)
                        .count()
                })
            })
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(admitted, 100);
        assert_eq!(users.open("alice"), 100);
    }
}
