//! The process-wide count of connections per client and in total, shared by
//! every shard so that a client landing on N shards still gets one cap.
//!
//! It is consulted once when a connection upgrades and once when it ends,
//! never on the read/parse/write path. The per-client table is split into
//! stripes, each behind its own mutex, so two shards admitting different
//! clients almost never meet on a lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use slab::Slab;

use super::client::ClientKey;
use super::rate::{Rate, SharedBucket};
use super::stats::{AdmissionStats, Reason};
use super::users::{UserCount, Users};

const STRIPE_BITS: u32 = 6;
const STRIPES: usize = 1 << STRIPE_BITS;
const SLOT_BITS: u32 = 32 - STRIPE_BITS;
/// The ticket of a connection counted only in the total (no per-client
/// cap or rate is configured); no stripe slot can encode to it.
const UNTRACKED: NonZeroU32 = NonZeroU32::MAX;

/// The caps and rates the registry enforces; 0 turns one off.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections one client key may hold.
    pub per_client: u32,
    /// Connections the whole process may hold.
    pub total: usize,
    /// Upgrades per second one client key may make.
    pub client_rate: Rate,
    /// Upgrades per second for the whole process.
    pub total_rate: Rate,
    /// Connections one user (a signed token's `sub`) may hold.
    pub per_user: u32,
    /// Client keys tracked at once; beyond it, new clients are refused
    /// (503) until entries expire, so a spray of source addresses cannot
    /// grow the table without bound.
    pub max_clients: usize,
}

/// Proof that a connection was counted; give it back exactly once.
#[derive(Debug, PartialEq, Eq)]
pub struct Ticket(NonZeroU32);

/// Why an upgrade was refused, and when the client may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// What was over its limit.
    pub reason: Reason,
    /// For a rate: nanoseconds until an attempt would pass.
    pub wait_ns: u64,
}

#[derive(Debug)]
struct Entry {
    key: ClientKey,
    open: u32,
    /// The client's pacing state (see `rate`).
    tat: u64,
}

#[derive(Debug, Default)]
struct Stripe {
    index: HashMap<ClientKey, u32>,
    entries: Slab<Entry>,
    /// Entries after the last sweep; the next sweep runs at twice as many.
    swept_at: usize,
}

/// Counts per client and in total, plus every admission decision.
#[derive(Debug)]
pub struct Registry {
    limits: Limits,
    stripes: Box<[Mutex<Stripe>]>,
    hasher: RandomState,
    open: AtomicUsize,
    clients: AtomicUsize,
    total_rate: SharedBucket,
    last_full_sweep: AtomicU64,
    epoch: Instant,
    /// Connections per user.
    pub users: std::sync::Arc<Users>,
    /// Every decision, for `/metrics`.
    pub stats: AdmissionStats,
}

impl Registry {
    /// Whether anything is counted per client, so that admitting needs the
    /// client's address.
    pub fn tracks_clients(&self) -> bool {
        self.limits.per_client != 0 || self.limits.client_rate.is_limited()
    }

    /// An empty registry enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            open: AtomicUsize::new(0),
            clients: AtomicUsize::new(0),
            total_rate: SharedBucket::new(limits.total_rate),
            last_full_sweep: AtomicU64::new(0),
            epoch: Instant::now(),
            users: std::sync::Arc::new(Users::new(limits.per_user)),
            stats: AdmissionStats::default(),
        }
    }

    /// Nanoseconds on the registry's clock.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// Counted connections, all clients.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Client keys tracked (holding connections or still paced).
    pub fn clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Counts one more connection for `key`, or says why not. Attempts are
    /// paced whether or not they are then admitted, so a client retrying
    /// into a full cap also spends its rate.
    pub fn admit(&self, key: ClientKey, now_ns: u64) -> Result<Ticket, Refused> {
        let limits = self.limits;
        if limits.per_client == 0 && !limits.client_rate.is_limited() {
            // Nothing is counted per client: skip the table entirely.
            self.decide_total(now_ns)?;
            self.stats.admitted.fetch_add(1, Ordering::Relaxed);
            return Ok(Ticket(UNTRACKED));
        }
        let s = (self.hasher.hash_one(key) as usize) & (STRIPES - 1);
        if self.clients() >= limits.max_clients {
            self.sweep_all(now_ns);
        }
        let mut stripe = self.stripes[s].lock().unwrap_or_else(|e| e.into_inner());
        let slot = match stripe.index.get(&key) {
            Some(&slot) => slot as usize,
            None => {
                if self.clients() >= limits.max_clients {
                    return Err(self.refuse(Reason::ClientTable, 0));
                }
                if stripe.entries.vacant_key() >= (1 << SLOT_BITS) - 1 {
                    return Err(self.refuse(Reason::ClientTable, 0));
                }
                let slot = stripe.entries.insert(Entry {
                    key,
                    open: 0,
                    tat: 0,
                });
                stripe.index.insert(key, slot as u32);
                self.clients.fetch_add(1, Ordering::Relaxed);
                if stripe.entries.len() > 2 * stripe.swept_at + 64 {
                    self.sweep(&mut stripe, now_ns);
                }
                slot
            }
        };
        let decision = self.decide(&mut stripe.entries[slot], now_ns);
        if decision.is_err() {
            Self::forget_if_idle(&mut stripe, slot, now_ns, &self.clients);
        }
        decision?;
        self.stats.admitted.fetch_add(1, Ordering::Relaxed);
        let encoded = ((s as u32) << SLOT_BITS | slot as u32) + 1;
        Ok(Ticket(
            NonZeroU32::new(encoded).expect("never zero after +1"),
        ))
    }

    /// Counts a connection just admitted for `user` too (`None`: users
    /// are not counted), or says why not; the caller then gives the
    /// connection's ticket back.
    pub fn admit_user(&self, user: &str) -> Result<Option<UserCount>, Refused> {
        self.users.admit(user).map_err(|()| {
            self.stats.admitted.fetch_sub(1, Ordering::Relaxed);
            self.refuse(Reason::UserCap, 0)
        })
    }

    fn decide(&self, entry: &mut Entry, now_ns: u64) -> Result<(), Refused> {
        let limits = self.limits;
        match limits.client_rate.take(entry.tat, now_ns) {
            Ok(tat) => entry.tat = tat,
            Err(wait) => return Err(self.refuse(Reason::ClientRate, wait)),
        }
        if limits.per_client != 0 && entry.open >= limits.per_client {
            return Err(self.refuse(Reason::ClientCap, 0));
        }
        self.decide_total(now_ns)?;
        entry.open += 1;
        Ok(())
    }

    /// The process-wide rate and cap; counts the connection when it passes.
    fn decide_total(&self, now_ns: u64) -> Result<(), Refused> {
        if let Err(wait) = self.total_rate.take(now_ns) {
            return Err(self.refuse(Reason::TotalRate, wait));
        }
        let before = self.open.fetch_add(1, Ordering::Relaxed);
        let total = self.limits.total;
        if total != 0 && before >= total {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(self.refuse(Reason::TotalCap, 0));
        }
        Ok(())
    }

    fn refuse(&self, reason: Reason, wait_ns: u64) -> Refused {
        self.stats.rejected(reason);
        Refused { reason, wait_ns }
    }

    /// Gives a connection's count back.
    pub fn release(&self, ticket: Ticket) {
        if ticket.0 == UNTRACKED {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let encoded = ticket.0.get() - 1;
        let s = (encoded >> SLOT_BITS) as usize;
        let slot = (encoded & ((1 << SLOT_BITS) - 1)) as usize;
        let now_ns = self.now_ns();
        let mut stripe = self.stripes[s].lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = stripe.entries.get_mut(slot) else {
            debug_assert!(false, "ticket for a missing entry");
            return;
        };
        debug_assert!(entry.open > 0, "ticket released twice");
        entry.open = entry.open.saturating_sub(1);
        self.open.fetch_sub(1, Ordering::Relaxed);
        Self::forget_if_idle(&mut stripe, slot, now_ns, &self.clients);
    }

    /// Drops an entry that holds no connection and whose pacing has caught
    /// up with the clock: it is indistinguishable from a fresh one.
    fn forget_if_idle(stripe: &mut Stripe, slot: usize, now_ns: u64, clients: &AtomicUsize) {
        let entry = &stripe.entries[slot];
        if entry.open == 0 && entry.tat <= now_ns {
            let key = entry.key;
            stripe.entries.remove(slot);
            stripe.index.remove(&key);
            clients.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Sweeps every stripe, at most once a second: a full table of active
    /// clients must not make each newcomer pay for a walk of it.
    fn sweep_all(&self, now_ns: u64) {
        let last = self.last_full_sweep.load(Ordering::Relaxed);
        if now_ns < last.saturating_add(1_000_000_000)
            || self
                .last_full_sweep
                .compare_exchange(last, now_ns, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        for stripe in &*self.stripes {
            let mut stripe = stripe.lock().unwrap_or_else(|e| e.into_inner());
            self.sweep(&mut stripe, now_ns);
        }
    }

    /// Forgets every idle, caught-up entry of one stripe.
    fn sweep(&self, stripe: &mut Stripe, now_ns: u64) {
        let idle: Vec<usize> = stripe
            .entries
            .iter()
            .filter(|(_, e)| e.open == 0 && e.tat <= now_ns)
            .map(|(slot, _)| slot)
            .collect();
        for slot in idle {
            Self::forget_if_idle(stripe, slot, now_ns, &self.clients);
        }
        stripe.swept_at = stripe.entries.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn limits() -> Limits {
        Limits {
            per_client: 3,
            total: 0,
            client_rate: Rate::UNLIMITED,
            total_rate: Rate::UNLIMITED,
            max_clients: 1000,
            per_user: 0,
        }
    }

    fn v4(n: u32) -> ClientKey {
        ClientKey::V4(n)
    }

    #[test]
    fn a_client_gets_exactly_its_cap_and_others_are_unaffected() {
        let r = Registry::new(limits());
        let mine: Vec<Ticket> = (0..3).map(|_| r.admit(v4(1), SEC).unwrap()).collect();
        let refused = r.admit(v4(1), SEC).unwrap_err();
        assert_eq!(refused.reason, Reason::ClientCap);
        let theirs = r.admit(v4(2), SEC).unwrap();
        assert_eq!(r.open(), 4);
        for t in mine {
            r.release(t);
        }
        r.release(theirs);
        assert_eq!((r.open(), r.clients()), (0, 0));
        assert!(r.admit(v4(1), SEC).is_ok());
    }

    #[test]
    fn the_total_cap_holds_and_refunds() {
        let r = Registry::new(Limits {
            total: 2,
            ..limits()
        });
        let a = r.admit(v4(1), SEC).unwrap();
        let _b = r.admit(v4(2), SEC).unwrap();
        assert_eq!(r.admit(v4(3), SEC).unwrap_err().reason, Reason::TotalCap);
        assert_eq!(r.open(), 2);
        r.release(a);
        assert!(r.admit(v4(3), SEC).is_ok());
    }

    #[test]
    fn a_paced_client_is_remembered_after_it_disconnects() {
        let r = Registry::new(Limits {
            client_rate: Rate::new(1, 2),
            ..limits()
        });
        // Connect and disconnect in a loop: the pace must survive each end.
        r.release(r.admit(v4(1), SEC).unwrap());
        r.release(r.admit(v4(1), SEC).unwrap());
        let refused = r.admit(v4(1), SEC).unwrap_err();
        assert_eq!(refused.reason, Reason::ClientRate);
        assert_eq!(refused.wait_ns, SEC);
        assert!(r.admit(v4(1), 2 * SEC).is_ok());
        assert_eq!(r.stats.snapshot().admitted, 3);
    }

    #[test]
    fn the_client_table_is_bounded_and_recovers() {
        let r = Registry::new(Limits {
            client_rate: Rate::new(1, 1),
            max_clients: 100,
            per_user: 0,
            ..limits()
        });
        for n in 0..100 {
            r.release(r.admit(v4(n), SEC).unwrap());
        }
        assert_eq!(r.clients(), 100);
        assert_eq!(
            r.admit(v4(1000), SEC).unwrap_err().reason,
            Reason::ClientTable
        );
        // Once their pacing has caught up, idle entries make room.
        assert!(r.admit(v4(1000), 3 * SEC).is_ok());
        assert_eq!(r.clients(), 1);
    }

    #[test]
    fn without_per_client_limits_only_the_total_is_kept() {
        let r = Registry::new(Limits {
            per_client: 0,
            total: 2,
            ..limits()
        });
        let a = r.admit(v4(1), SEC).unwrap();
        let b = r.admit(v4(1), SEC).unwrap();
        assert_eq!(r.admit(v4(1), SEC).unwrap_err().reason, Reason::TotalCap);
        assert_eq!((r.open(), r.clients()), (2, 0));
        r.release(a);
        r.release(b);
        assert_eq!(r.open(), 0);
    }

    #[test]
    fn shards_share_one_cap() {
        let r = Registry::new(Limits {
            per_client: 50,
            ..limits()
        });
        let won = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        if r.admit(v4(7), SEC).is_ok() {
                            won.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(won.into_inner(), 50);
        assert_eq!(r.open(), 50);
    }
}
