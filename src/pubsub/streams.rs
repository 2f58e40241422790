//! Every hub topic as a stream: a position `(epoch, offset)` and a bounded
//! history, shared by all shards.
//!
//! A publish takes its topic's stripe lock, takes the next offset, frames
//! the message with it and hands it to every shard's inbox before the lock
//! is let go, so each inbox holds a topic's messages in offset order. A
//! subscribe reads the position under the same lock and puts a marker into
//! its own shard's inbox there: messages at or before the position are
//! ahead of the marker, later ones behind it, so the shard can start the
//! subscription exactly between them (`topics::Topics::activate`).
//!
//! A stream lives while a hub subscriber holds it or its history keeps
//! something; one that goes and comes back gets a new epoch, so a position
//! from before is never taken for one in the new stream. History is bounded
//! per topic by count and age ([`HistoryRule`]) and for the whole process
//! by a byte budget, past which the oldest messages are evicted. A
//! latest-value topic keeps at least its last message (within the same
//! budget), and a subscription that does not resume gets it first.
//!
//! With a shared store (the Redis bridge) the store positions every
//! publish and these streams are this node's copy of its streams: loaded
//! from it at each connect ([`Streams::load`]), then kept in step by every
//! message it positions ([`Streams::apply`], under the same lock and with
//! the same delivery as a local publish). A resume is answered only while
//! the copy is known to be in step; what cannot reach the store is
//! published in an epoch of this node's own ([`Streams::publish_alone`]).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use super::hub::SharedFrame;
use crate::buf::budget::Budget;
pub use crate::config::pubsub::{HistoryRule, DEFAULT_HISTORY_BYTES, DEFAULT_MAX_RECOVERY};

/// Locks topics are spread over: publishers to different topics rarely
/// wait for each other.
const STRIPES: usize = 64;

/// What a kept message costs the budget beyond its frame: its entry and
/// the frame's reference-count header, so a flood of tiny messages counts.
const ENTRY_OVERHEAD: usize = 48;

/// Where a stream is: the history it belongs to and the last offset
/// published in it (0: none yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Names the stream's history; a new one whenever it is lost.
    pub epoch: u64,
    /// Offsets grow by one per publish, from 1.
    pub offset: u64,
}

/// Why a subscription that asked to resume could not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRecovered {
    /// The stream is not the one the position came from.
    EpochChanged,
    /// The messages after the position are no longer kept.
    TooOld,
    /// More messages (or bytes) than one recovery may replay.
    TooMany,
    /// The topic keeps no history.
    NoHistory,
    /// Positions live in a shared store (Redis) this node cannot reach, or
    /// has not caught up with yet: nothing can be proven.
    Unavailable,
}

impl NotRecovered {
    /// What the `subscribed` answer says.
    pub fn reason(self) -> &'static str {
        match self {
            Self::EpochChanged => "epoch changed",
            Self::TooOld => "too old",
            Self::TooMany => "too many",
            Self::NoHistory => "no history",
            Self::Unavailable => "unavailable",
        }
    }

    fn slot(self) -> usize {
        self as usize + 1
    }
}

/// The `result` labels of `surge_recoveries_total`, by slot.
pub const RECOVERY_RESULTS: [&str; 6] = [
    "recovered",
    "epoch",
    "too_old",
    "too_many",
    "no_history",
    "unavailable",
];

/// Counters of the streams, for `/metrics`.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// Kept messages dropped by the byte budget.
    pub evicted: AtomicU64,
    /// Subscriptions that asked to resume, by [`RECOVERY_RESULTS`].
    pub recoveries: [AtomicU64; 6],
    /// Messages replayed to resuming subscriptions.
    pub replayed: AtomicU64,
    /// Latest values given to new subscriptions of latest-value topics.
    pub latest: AtomicU64,
}

/// The most one recovery may replay: over either, `recovered: false`
/// ("too many").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayLimit {
    /// Messages (`max-recovery`).
    pub messages: usize,
    /// Bytes (the subscriber's backpressure bound).
    pub bytes: usize,
}

/// What a subscription learned from its stream.
#[derive(Debug)]
pub struct Joined {
    /// The position it starts after.
    pub position: Position,
    /// Whether it resumed, when it asked to.
    pub recovered: Option<Result<(), NotRecovered>>,
}

#[derive(Debug)]
struct Entry {
    offset: u64,
    at: Instant,
    frame: SharedFrame,
}

impl Entry {
    fn cost(&self) -> usize {
        self.frame.len() + ENTRY_OVERHEAD
    }
}

#[derive(Debug)]
struct Stream {
    epoch: u64,
    offset: u64,
    /// What it keeps: the rule of the route it was last published through.
    rule: HistoryRule,
    /// The newest messages, oldest first, with no gap up to `offset`.
    history: VecDeque<Entry>,
    /// Hub subscriptions on every shard that hold it.
    subscribers: usize,
    /// Its position comes from the shared store (Redis), not this node.
    shared: bool,
}

impl Stream {
    fn new() -> Self {
        Self {
            epoch: new_epoch(),
            offset: 0,
            rule: HistoryRule::default(),
            history: VecDeque::new(),
            subscribers: 0,
            shared: false,
        }
    }

    /// Starts the stream over at `position` (epoch and last offset) with
    /// an empty history; the bytes freed.
    fn restart_at(&mut self, position: Position, shared: bool) -> usize {
        let freed = self.history.drain(..).map(|e| e.cost()).sum();
        self.epoch = position.epoch;
        self.offset = position.offset;
        self.shared = shared;
        freed
    }

    fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            offset: self.offset,
        }
    }

    /// Drops what the count and age bounds no longer allow; the bytes freed.
    /// A latest-value topic's last message is its value: no age drops it.
    fn trim(&mut self, now: Instant) -> usize {
        let mut freed = 0;
        while let Some(front) = self.history.front() {
            let too_many = self.history.len() > self.rule.most();
            let value = self.rule.latest && self.history.len() == 1;
            let too_old = !value
                && self
                    .rule
                    .ttl
                    .is_some_and(|ttl| now.saturating_duration_since(front.at) > ttl);
            if !too_many && !too_old {
                break;
            }
            freed += front.cost();
            self.history.pop_front();
        }
        freed
    }

    /// Nothing would be lost by forgetting it.
    fn unused(&self) -> bool {
        self.subscribers == 0 && self.history.is_empty()
    }

    /// Whether a subscription at `since` can resume, and with what.
    fn recover(
        &self,
        since: Position,
        limit: ReplayLimit,
    ) -> Result<Vec<SharedFrame>, NotRecovered> {
        if since.epoch == self.epoch && since.offset > self.offset && self.shared {
            // Another node gave that position and this one has not heard
            // of it yet: it cannot tell what comes after.
            return Err(NotRecovered::Unavailable);
        }
        if since.epoch != self.epoch || since.offset > self.offset {
            return Err(NotRecovered::EpochChanged);
        }
        let missed = self.offset - since.offset;
        if missed == 0 {
            return Ok(Vec::new());
        }
        if !self.rule.keeps() {
            return Err(NotRecovered::NoHistory);
        }
        let oldest = self.offset + 1 - self.history.len() as u64;
        if since.offset + 1 < oldest {
            return Err(NotRecovered::TooOld);
        }
        if missed > limit.messages as u64 {
            return Err(NotRecovered::TooMany);
        }
        let skip = (since.offset + 1 - oldest) as usize;
        let mut bytes = 0usize;
        let mut replay = Vec::with_capacity(missed as usize);
        for e in self.history.iter().skip(skip) {
            bytes += e.frame.len();
            if bytes > limit.bytes {
                return Err(NotRecovered::TooMany);
            }
            replay.push(Arc::clone(&e.frame));
        }
        Ok(replay)
    }

    /// A latest-value topic's last message, if it still keeps it.
    fn latest(&self) -> Option<SharedFrame> {
        let last = self.history.back()?;
        (self.rule.latest && last.offset == self.offset).then(|| Arc::clone(&last.frame))
    }
}

/// A random epoch: std's randomly keyed hasher over a process-wide
/// counter and the time, so two streams (or two runs) never share one in
/// practice.
pub fn new_epoch() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    RandomState::new().hash_one((n, t))
}

/// An epoch as the wire spells it: 16 lowercase hex digits.
pub fn epoch_hex(epoch: u64) -> String {
    format!("{epoch:016x}")
}

type Stripe = HashMap<Arc<str>, Stream>;

/// The stream of `topic` in its stripe (made if there is none) and its
/// shared name.
fn stream_in<'a>(stripe: &'a mut Stripe, topic: &str) -> (Arc<str>, &'a mut Stream) {
    let name = match stripe.get_key_value(topic) {
        Some((name, _)) => Arc::clone(name),
        None => {
            let name: Arc<str> = topic.into();
            stripe.insert(Arc::clone(&name), Stream::new());
            name
        }
    };
    let stream = stripe.get_mut(&name).expect("inserted above");
    (name, stream)
}

/// Every hub topic's stream.
#[derive(Debug)]
pub struct Streams {
    stripes: Box<[Mutex<Stripe>]>,
    hasher: RandomState,
    /// Bytes every history holds, against `--history-bytes`.
    budget: Budget,
    /// Where the next eviction for room starts, so no stripe always pays.
    cursor: AtomicUsize,
    /// Where positions come from: [`LOCAL`], or a shared store this node
    /// is in step with ([`SHARED_IN_STEP`]) or not ([`SHARED_BEHIND`]).
    store: AtomicU8,
    /// Counters for `/metrics`.
    pub stats: StreamStats,
}

/// Positions are this node's own.
const LOCAL: u8 = 0;
/// Positions live in a shared store, and every message it positioned since
/// this node last loaded its streams from it has reached this node.
const SHARED_IN_STEP: u8 = 1;
/// Positions live in a shared store this node is not in step with (cannot
/// reach it, or has not loaded its streams yet): no resume can be proven.
const SHARED_BEHIND: u8 = 2;

impl Streams {
    /// Streams whose histories hold at most `history_bytes` together.
    pub fn new(history_bytes: usize) -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            budget: Budget::new(history_bytes),
            cursor: AtomicUsize::new(0),
            store: AtomicU8::new(LOCAL),
            stats: StreamStats::default(),
        }
    }

    /// Positions live in a shared store from now on; `in_step` says whether
    /// every message it positioned since this node last loaded its streams
    /// from it has reached this node.
    pub fn set_shared(&self, in_step: bool) {
        let state = if in_step {
            SHARED_IN_STEP
        } else {
            SHARED_BEHIND
        };
        self.store.store(state, Ordering::SeqCst);
    }

    /// Whether a resume can be answered here now.
    fn can_recover(&self) -> bool {
        self.store.load(Ordering::SeqCst) != SHARED_BEHIND
    }

    /// Bytes kept in every history now.
    pub fn history_bytes(&self) -> usize {
        self.budget.held()
    }

    fn stripe(&self, topic: &str) -> MutexGuard<'_, Stripe> {
        let i = self.hasher.hash_one(topic) as usize % STRIPES;
        lock(&self.stripes[i])
    }

    /// Publishes one message to `topic`: under the topic's lock, takes the
    /// next offset, frames the message with its position (`frame`), keeps
    /// it if `rule` says so, and hands it on (`deliver`) before the lock is
    /// let go; `size` is about what the frame will cost to keep. Returns
    /// the position it took.
    pub fn publish(
        &self,
        topic: &str,
        rule: HistoryRule,
        size: usize,
        frame: impl FnOnce(&Arc<str>, Position) -> SharedFrame,
        deliver: impl FnOnce(&Arc<str>, SharedFrame),
    ) -> Position {
        self.put(
            topic,
            rule,
            size,
            |stream, budget| {
                // Only a node that could not reach the shared store
                // publishes a shared stream itself: see `publish_alone`.
                if stream.shared {
                    let fresh = Position {
                        epoch: new_epoch(),
                        offset: 0,
                    };
                    budget.give_back(stream.restart_at(fresh, false));
                }
                stream.offset += 1;
                Some(stream.position())
            },
            frame,
            deliver,
        )
        .expect("a local publish always takes the next offset")
    }

    /// Publishes like [`Streams::publish`] while the shared store cannot
    /// be reached: a stream whose position came from there starts over in
    /// an epoch of this node's own, so no position handed out now can be
    /// taken for one of the store's.
    pub fn publish_alone(
        &self,
        topic: &str,
        rule: HistoryRule,
        size: usize,
        frame: impl FnOnce(&Arc<str>, Position) -> SharedFrame,
        deliver: impl FnOnce(&Arc<str>, SharedFrame),
    ) -> Position {
        self.publish(topic, rule, size, frame, deliver)
    }

    /// Takes a message the shared store positioned at `position`: the next
    /// one of the stream is kept and delivered like a local publish; one
    /// already taken is skipped (`None`); any other means messages were
    /// missed here, and the stream starts over from it (subscribers see
    /// the jump in its position).
    pub fn apply(
        &self,
        topic: &str,
        position: Position,
        rule: HistoryRule,
        size: usize,
        frame: impl FnOnce(&Arc<str>, Position) -> SharedFrame,
        deliver: impl FnOnce(&Arc<str>, SharedFrame),
    ) -> Option<Position> {
        self.put(
            topic,
            rule,
            size,
            |stream, budget| {
                let same = stream.shared && stream.epoch == position.epoch;
                if same && position.offset <= stream.offset {
                    return None;
                }
                if !same || position.offset != stream.offset + 1 {
                    let before = Position {
                        offset: position.offset.saturating_sub(1),
                        ..position
                    };
                    budget.give_back(stream.restart_at(before, true));
                }
                stream.offset = position.offset;
                Some(position)
            },
            frame,
            deliver,
        )
    }

    /// Sets `topic`'s stream to what the shared store holds: its position
    /// and its kept messages (`(offset, age, frame)`, oldest first). Only
    /// a run without gap that ends at the position is kept.
    pub fn load(
        &self,
        topic: &str,
        position: Position,
        rule: HistoryRule,
        kept: Vec<(u64, std::time::Duration, SharedFrame)>,
    ) {
        let now = Instant::now();
        let mut stripe = self.stripe(topic);
        let (name, stream) = stream_in(&mut stripe, topic);
        stream.rule = rule;
        let mut expect = position.offset;
        let run = kept
            .iter()
            .rev()
            .take_while(|(offset, _, _)| {
                let next = *offset == expect;
                expect = expect.wrapping_sub(1);
                next
            })
            .count();
        let first = position.offset + 1 - run as u64;
        let start = Position {
            offset: first - 1,
            ..position
        };
        self.budget.give_back(stream.restart_at(start, true));
        let older = kept.len() - run;
        for (offset, age, frame) in kept.into_iter().skip(older) {
            stream.offset = offset;
            let at = now.checked_sub(age).unwrap_or(now);
            self.keep(stream, Entry { offset, at, frame }, now);
        }
        stream.offset = position.offset;
        if stream.unused() {
            stripe.remove(&name);
        }
    }

    /// Every stream whose position came from the shared store starts over
    /// in an epoch of this node's own, its history dropped: called before
    /// the store's streams are loaded again, so a topic the store lost (a
    /// restart without its data) is never replayed from what this node
    /// still had of it.
    pub fn unshare_all(&self) {
        for stripe in &*self.stripes {
            let mut stripe = lock(stripe);
            stripe.retain(|_, stream| {
                if stream.shared {
                    let fresh = Position {
                        epoch: new_epoch(),
                        offset: 0,
                    };
                    self.budget.give_back(stream.restart_at(fresh, false));
                }
                !stream.unused()
            });
        }
    }

    /// Shared by every way a message enters a stream: `next` decides its
    /// position (`None`: skip it), then it is framed, kept and delivered
    /// under the topic's lock.
    fn put(
        &self,
        topic: &str,
        rule: HistoryRule,
        size: usize,
        next: impl FnOnce(&mut Stream, &Budget) -> Option<Position>,
        frame: impl FnOnce(&Arc<str>, Position) -> SharedFrame,
        deliver: impl FnOnce(&Arc<str>, SharedFrame),
    ) -> Option<Position> {
        let now = Instant::now();
        let room = self.budget.limit().saturating_sub(size + ENTRY_OVERHEAD);
        if rule.keeps() && self.budget.held() > room {
            // Room is made before our own lock is taken: eviction walks
            // other stripes, one lock at a time.
            self.make_room(now, room);
        }
        let mut stripe = self.stripe(topic);
        let (name, stream) = stream_in(&mut stripe, topic);
        let position = next(stream, &self.budget)?;
        stream.rule = rule;
        let encoded = frame(&name, position);
        if rule.keeps() {
            let entry = Entry {
                offset: position.offset,
                at: now,
                frame: Arc::clone(&encoded),
            };
            self.keep(stream, entry, now);
        } else {
            self.budget.give_back(stream.trim(now));
        }
        deliver(&name, encoded);
        if stream.unused() {
            stripe.remove(&name);
        }
        Some(position)
    }

    /// Appends `entry` to `stream`'s history within its rule and the byte
    /// budget: the stream's own oldest messages go first; if they are not
    /// enough, the history is emptied rather than left with a gap.
    fn keep(&self, stream: &mut Stream, entry: Entry, now: Instant) {
        let cost = entry.cost();
        debug_assert!(stream
            .history
            .back()
            .is_none_or(|b| b.offset + 1 == entry.offset));
        stream.history.push_back(entry);
        self.budget.give_back(stream.trim(now));
        let kept = stream
            .history
            .back()
            .is_some_and(|b| b.offset == stream.offset);
        if !kept {
            return;
        }
        while !self.budget.charge(cost) {
            // The new entry is charged last: drop from the front, but
            // never the new entry itself (it is paid for below, or goes).
            if stream.history.len() <= 1 {
                stream.history.clear();
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let old = stream.history.pop_front().expect("more than one");
            self.budget.give_back(old.cost());
            self.stats.evicted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Evicts the oldest kept messages, stripe after stripe, until the
    /// budget holds at most `room` bytes or nothing more can go.
    fn make_room(&self, now: Instant, room: usize) {
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        for i in 0..STRIPES {
            if self.budget.held() <= room {
                return;
            }
            let mut stripe = lock(&self.stripes[(start + i) % STRIPES]);
            self.evict_in(&mut stripe, now, room);
        }
    }

    /// Within one stripe, drops the oldest messages first (by the age of
    /// each stream's oldest) until the budget holds at most `room` bytes.
    /// (It looks at every stream of the stripe per message evicted: only
    /// publishes that find the budget full pay it.)
    fn evict_in(&self, stripe: &mut Stripe, now: Instant, room: usize) {
        while self.budget.held() > room {
            let oldest = stripe
                .iter()
                .filter_map(|(name, s)| s.history.front().map(|e| (e.at, name)))
                .min_by_key(|(at, _)| *at)
                .map(|(_, name)| Arc::clone(name));
            let Some(name) = oldest else { return };
            let stream = stripe.get_mut(&name).expect("found above");
            self.budget.give_back(stream.trim(now));
            if let Some(old) = stream.history.pop_front() {
                self.budget.give_back(old.cost());
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
            }
            if stream.unused() {
                stripe.remove(&name);
            }
        }
    }

    /// Starts a hub subscription to `topic`: under the topic's lock, reads
    /// its position, decides whether the subscription resumes from `since`
    /// (replaying at most `limit`), and calls `mark` with the position and
    /// the replay so that the caller's shard marks the point in its inbox
    /// where the subscription starts. Without `since`, a latest-value
    /// topic's replay is its last message, and the position reported the
    /// one just before it: like any, the subscription starts exactly after
    /// the position it is told, and a client that drops offsets it has
    /// seen keeps the value.
    pub fn join(
        &self,
        topic: &str,
        since: Option<Position>,
        limit: ReplayLimit,
        mark: impl FnOnce(&Arc<str>, Vec<SharedFrame>),
    ) -> Joined {
        let now = Instant::now();
        let mut stripe = self.stripe(topic);
        let (name, stream) = stream_in(&mut stripe, topic);
        self.budget.give_back(stream.trim(now));
        stream.subscribers += 1;
        let recovered = since.map(|since| {
            if self.can_recover() {
                stream.recover(since, limit)
            } else {
                Err(NotRecovered::Unavailable)
            }
        });
        let mut position = stream.position();
        let (replay, recovered) = match recovered {
            None => {
                let latest: Vec<SharedFrame> = stream.latest().into_iter().collect();
                position.offset -= latest.len() as u64;
                self.stats
                    .latest
                    .fetch_add(latest.len() as u64, Ordering::Relaxed);
                (latest, None)
            }
            Some(Ok(replay)) => {
                self.stats.recoveries[0].fetch_add(1, Ordering::Relaxed);
                self.stats
                    .replayed
                    .fetch_add(replay.len() as u64, Ordering::Relaxed);
                (replay, Some(Ok(())))
            }
            Some(Err(why)) => {
                self.stats.recoveries[why.slot()].fetch_add(1, Ordering::Relaxed);
                (Vec::new(), Some(Err(why)))
            }
        };
        mark(&name, replay);
        Joined {
            position,
            recovered,
        }
    }

    /// Ends a hub subscription to `topic` that [`Streams::join`] started.
    pub fn leave(&self, topic: &str) {
        let mut stripe = self.stripe(topic);
        if let Some(stream) = stripe.get_mut(topic) {
            stream.subscribers = stream.subscribers.saturating_sub(1);
            if stream.unused() {
                stripe.remove(topic);
            }
        }
    }

    /// Writes the streams' metrics in Prometheus text.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let s = &self.stats;
        let _ = writeln!(
            out,
            "# HELP surge_history_bytes Bytes the topics' histories hold.\n\
             # TYPE surge_history_bytes gauge\n\
             surge_history_bytes {}\n\
             # HELP surge_history_evicted_total Kept messages evicted by --history-bytes.\n\
             # TYPE surge_history_evicted_total counter\n\
             surge_history_evicted_total {}\n\
             # HELP surge_replayed_messages_total Messages replayed to resuming subscriptions.\n\
             # TYPE surge_replayed_messages_total counter\n\
             surge_replayed_messages_total {}\n\
             # HELP surge_latest_sent_total Latest values sent to new subscribers of latest-value topics.\n\
             # TYPE surge_latest_sent_total counter\n\
             surge_latest_sent_total {}\n\
             # HELP surge_recoveries_total Subscriptions that asked to resume, by result.\n\
             # TYPE surge_recoveries_total counter",
            self.budget.held(),
            s.evicted.load(Ordering::Relaxed),
            s.replayed.load(Ordering::Relaxed),
            s.latest.load(Ordering::Relaxed),
        );
        for (label, n) in RECOVERY_RESULTS.iter().zip(&s.recoveries) {
            let n = n.load(Ordering::Relaxed);
            let _ = writeln!(out, "surge_recoveries_total{{result=\"{label}\"}} {n}");
        }
        let store = self.store.load(Ordering::SeqCst);
        if store != LOCAL {
            let _ = writeln!(
                out,
                "# HELP surge_shared_history_available 1 while positions and history in Redis \
                 can serve resumes here.\n\
                 # TYPE surge_shared_history_available gauge\n\
                 surge_shared_history_available {}",
                u8::from(store == SHARED_IN_STEP)
            );
        }
    }

    /// Streams alive now (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.stripes.iter().map(|s| lock(s).len()).sum()
    }
}

/// A stripe's lock; a panic while one was held leaves a stream that is
/// still consistent (every change is a single step), so it is taken anyway.
fn lock(m: &Mutex<Stripe>) -> MutexGuard<'_, Stripe> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn publish(streams: &Streams, topic: &str, rule: HistoryRule, body: &[u8]) -> Position {
        streams.publish(
            topic,
            rule,
            body.len(),
            |_, _| body.to_vec().into(),
            |_, _| {},
        )
    }

    const KEEP: HistoryRule = HistoryRule {
        size: 3,
        ttl: None,
        latest: false,
    };

    /// At most `messages` replayed, whatever their bytes.
    const fn upto(messages: usize) -> ReplayLimit {
        ReplayLimit {
            messages,
            bytes: usize::MAX,
        }
    }

    #[test]
    fn offsets_grow_per_topic_and_a_forgotten_stream_gets_a_new_epoch() {
        let streams = Streams::new(1 << 20);
        let a1 = publish(&streams, "a", KEEP, b"1");
        let a2 = publish(&streams, "a", KEEP, b"2");
        let b1 = publish(&streams, "b", KEEP, b"x");
        assert_eq!((a1.offset, a2.offset, b1.offset), (1, 2, 1));
        assert_eq!(a1.epoch, a2.epoch);
        assert_ne!(a1.epoch, b1.epoch);
        assert_eq!(epoch_hex(0xab).len(), 16);
        // Without history or subscribers nothing is kept.
        let n1 = publish(&streams, "n", HistoryRule::default(), b"1");
        let n2 = publish(&streams, "n", HistoryRule::default(), b"2");
        assert_eq!((n1.offset, n2.offset), (1, 1));
        assert_ne!(n1.epoch, n2.epoch);
        assert_eq!(streams.len(), 2);
    }

    #[test]
    fn a_subscriber_resumes_or_is_told_why_not() {
        let streams = Streams::new(1 << 20);
        let join = |since| {
            streams
                .join("t", since, upto(2), |_, replay| {
                    assert!(replay.iter().all(|f| f.len() == 1));
                })
                .recovered
        };
        let p0 = streams.join("t", None, upto(2), |_, _| {}).position;
        for b in [b"1", b"2", b"3", b"4"] {
            publish(&streams, "t", KEEP, b);
        }
        let at = |offset| Some(Position { offset, ..p0 });
        assert_eq!(join(at(2)), Some(Ok(())));
        assert_eq!(join(at(4)), Some(Ok(())));
        assert_eq!(join(at(1)), Some(Err(NotRecovered::TooMany)));
        assert_eq!(join(at(0)), Some(Err(NotRecovered::TooOld)));
        assert_eq!(join(at(5)), Some(Err(NotRecovered::EpochChanged)));
        let other = Position {
            epoch: p0.epoch ^ 1,
            offset: 2,
        };
        assert_eq!(join(Some(other)), Some(Err(NotRecovered::EpochChanged)));
        let streams2 = Streams::new(1 << 20);
        streams2.join("t", None, upto(1), |_, _| {});
        let p = publish(&streams2, "t", KEEP, b"1");
        publish(&streams2, "t", KEEP, b"2");
        let since = Position { offset: 0, ..p };
        let r = streams2.join("t", Some(since), upto(1), |_, _| {});
        assert_eq!(r.recovered, Some(Err(NotRecovered::TooMany)));
        let since = Position { offset: 1, ..p };
        let r = streams2.join(
            "t",
            Some(since),
            ReplayLimit {
                bytes: 0,
                ..upto(1)
            },
            |_, _| {},
        );
        assert_eq!(
            r.recovered,
            Some(Err(NotRecovered::TooMany)),
            "over the bytes"
        );
        let r = streams2.join("t", Some(since), upto(1), |_, replay| {
            assert_eq!(&*replay[0], b"2");
        });
        assert_eq!(r.recovered, Some(Ok(())));
        assert_eq!(
            streams.stats.recoveries[NotRecovered::TooOld.slot()].load(Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn kept_messages_older_than_the_ttl_are_too_old_to_replay() {
        let streams = Streams::new(1 << 20);
        let rule = HistoryRule {
            size: 100,
            ttl: Some(std::time::Duration::from_millis(20)),
            latest: false,
        };
        let p = publish(&streams, "t", rule, b"1");
        let since = Position { offset: 0, ..p };
        let fresh = streams.join("t", Some(since), upto(100), |_, r| assert_eq!(r.len(), 1));
        assert_eq!(fresh.recovered, Some(Ok(())));
        std::thread::sleep(std::time::Duration::from_millis(40));
        let stale = streams.join("t", Some(since), upto(100), |_, _| {});
        assert_eq!(stale.recovered, Some(Err(NotRecovered::TooOld)));
        assert_eq!(streams.history_bytes(), 0, "trimmed as it was found");
        // Nothing missed is still exact.
        let current = streams.join("t", Some(p), upto(100), |_, _| {});
        assert_eq!(current.recovered, Some(Ok(())));
    }

    #[test]
    fn the_byte_budget_evicts_the_oldest_and_leaves_no_gap() {
        let cost = 100 + ENTRY_OVERHEAD;
        let streams = Streams::new(5 * cost);
        let big = HistoryRule {
            size: 1000,
            ttl: None,
            latest: false,
        };
        // A subscriber holds "a": its stream stays when its history goes.
        streams.join("a", None, upto(100), |_, _| {});
        for _ in 0..20 {
            publish(&streams, "a", big, &[0; 100]);
        }
        assert!(streams.history_bytes() <= 5 * cost);
        assert!(streams.stats.evicted.load(Ordering::Relaxed) >= 15);
        for _ in 0..20 {
            publish(&streams, "b", big, &[0; 100]);
        }
        assert!(streams.history_bytes() <= 5 * cost);
        // What "a" still keeps is a run that ends at its last offset.
        let a = streams.stripe("a");
        let s = a.get("a").unwrap();
        assert_eq!(s.offset, 20);
        for (i, e) in s.history.iter().enumerate() {
            assert_eq!(e.offset, s.offset + 1 - (s.history.len() - i) as u64);
        }
    }

    #[test]
    fn a_latest_value_topic_gives_its_last_message_to_a_new_subscriber_only() {
        let streams = Streams::new(1 << 20);
        let latest = HistoryRule {
            size: 0,
            ttl: Some(std::time::Duration::from_millis(10)),
            latest: true,
        };
        let nothing = streams.join("t", None, upto(100), |_, r| assert!(r.is_empty()));
        streams.leave("t");
        assert_eq!(nothing.position.offset, 0);
        for b in [b"1", b"2", b"3"] {
            publish(&streams, "t", latest, b);
        }
        // Older than the TTL, with nobody subscribed: still the value.
        std::thread::sleep(std::time::Duration::from_millis(30));
        let mut got = Vec::new();
        let j = streams.join("t", None, upto(100), |_, r| got = r);
        assert_eq!(j.position.offset, 2, "the position just before the value");
        assert_eq!(got.iter().map(|f| f.to_vec()).collect::<Vec<_>>(), [b"3"]);
        assert_eq!(streams.stats.latest.load(Ordering::Relaxed), 1);
        // Resuming is recovery as ever: what was missed, not the value.
        let since = Position {
            offset: 3,
            ..j.position
        };
        let r = streams.join("t", Some(since), upto(100), |_, r| assert!(r.is_empty()));
        assert_eq!(r.recovered, Some(Ok(())));
        let r = streams.join("t", Some(j.position), upto(100), |_, r| {
            assert_eq!(r.len(), 1)
        });
        assert_eq!((r.recovered, r.position.offset), (Some(Ok(())), 3));
        let since = Position {
            offset: 1,
            ..j.position
        };
        let r = streams.join("t", Some(since), upto(100), |_, _| {});
        assert_eq!(r.recovered, Some(Err(NotRecovered::TooOld)));
        // Not a latest-value topic any more: a plain history gives nothing.
        publish(&streams, "t", KEEP, b"4");
        streams.join("t", None, upto(100), |_, r| assert!(r.is_empty()));
        // The byte budget evicts a value as it does history.
        let tight = Streams::new(100 + ENTRY_OVERHEAD);
        publish(&tight, "a", latest, &[0; 100]);
        publish(&tight, "b", latest, &[0; 100]);
        assert!(tight.history_bytes() <= 100 + ENTRY_OVERHEAD);
        assert_eq!(tight.stats.evicted.load(Ordering::Relaxed), 1);
        tight.join("a", None, upto(100), |_, r| assert!(r.is_empty()));
        tight.join("b", None, upto(100), |_, r| assert_eq!(r.len(), 1));
    }

    fn apply(streams: &Streams, epoch: u64, offset: u64, body: &[u8]) -> Option<Position> {
        let at = Position { epoch, offset };
        streams.apply(
            "t",
            at,
            KEEP,
            body.len(),
            |_, _| body.to_vec().into(),
            |_, _| {},
        )
    }

    #[test]
    fn a_shared_stream_takes_positions_in_order_and_starts_over_on_a_gap() {
        let streams = Streams::new(1 << 20);
        streams.set_shared(true);
        let p0 = streams.join("t", None, upto(100), |_, _| {}).position;
        assert!(
            apply(&streams, 7, 4, b"4").is_some(),
            "a new epoch is taken"
        );
        assert!(apply(&streams, 7, 5, b"5").is_some());
        assert!(apply(&streams, 7, 5, b"5").is_none(), "already taken");
        let since = Position {
            epoch: 7,
            offset: 4,
        };
        let r = streams.join("t", Some(since), upto(100), |_, replay| {
            assert_eq!(replay.len(), 1);
        });
        assert_eq!((r.recovered, r.position.offset), (Some(Ok(())), 5));
        // A gap: what came before it cannot be replayed from here.
        assert!(apply(&streams, 7, 9, b"9").is_some());
        let r = streams.join("t", Some(since), upto(100), |_, _| {});
        assert_eq!(r.recovered, Some(Err(NotRecovered::TooOld)));
        let r = streams.join("t", Some(p0), upto(100), |_, _| {});
        assert_eq!(r.recovered, Some(Err(NotRecovered::EpochChanged)));
        // Out of step with the store: nothing is proven.
        streams.set_shared(false);
        let since = Position {
            epoch: 7,
            offset: 9,
        };
        let r = streams.join("t", Some(since), upto(100), |_, _| {});
        assert_eq!(r.recovered, Some(Err(NotRecovered::Unavailable)));
        // Published here alone: a new epoch of this node's own.
        let alone = streams.publish_alone("t", KEEP, 1, |_, _| b"x".to_vec().into(), |_, _| {});
        assert_ne!(alone.epoch, 7);
        assert_eq!(alone.offset, 1);
    }

    #[test]
    fn a_loaded_stream_keeps_only_the_run_that_ends_at_its_position() {
        let streams = Streams::new(1 << 20);
        streams.set_shared(true);
        let frame = |b: &[u8]| -> SharedFrame { b.to_vec().into() };
        let kept = vec![
            (2, Duration::ZERO, frame(b"2")),
            (4, Duration::ZERO, frame(b"4")),
            (5, Duration::ZERO, frame(b"5")),
        ];
        let at = Position {
            epoch: 3,
            offset: 5,
        };
        streams.load("t", at, KEEP, kept);
        let since = |offset| Some(Position { epoch: 3, offset });
        let r = streams.join("t", since(3), upto(100), |_, replay| {
            let got: Vec<&[u8]> = replay.iter().map(|f| &f[..]).collect();
            assert_eq!(got, [b"4", b"5"]);
        });
        assert_eq!((r.recovered, r.position), (Some(Ok(())), at));
        let r = streams.join("t", since(1), upto(100), |_, _| {});
        assert_eq!(r.recovered, Some(Err(NotRecovered::TooOld)));
        // Live messages continue the loaded stream.
        assert!(apply(&streams, 3, 5, b"5").is_none());
        assert!(apply(&streams, 3, 6, b"6").is_some());
        assert_eq!(streams.history_bytes(), 3 * (1 + ENTRY_OVERHEAD));
    }
}
