//! A shard's subscription table and its per-turn fan-out.
//!
//! Messages that reach a topic during one loop turn are appended to that
//! topic's batch; at the end of the turn the batch becomes one shared
//! buffer and every subscriber on the shard gets a reference to it. So a
//! subscriber gets everything a turn brought in one write, and the bytes
//! exist once per shard however many subscribers there are.
//!
//! A subscriber is judged by its own backlog: one that already has its
//! bound queued takes no more, whatever the size of the new batch, so a
//! large message reaches every subscriber that keeps up (the hub bounds a
//! single publish with `--max-publish`).
//!
//! A topic with a subscriber under the `conflate` policy also keeps the
//! newest frame per key (e.g. per symbol). Such a subscriber that falls
//! behind skips batches and, once it has room again, gets that snapshot:
//! the latest value of every key instead of the backlog. Topics without
//! one keep nothing, and a snapshot holds at most the largest bound of its
//! topic's conflating subscribers (plus the newest frame, whatever its
//! size): the oldest keys go first.
//!
//! A feed topic (the ticker's, [`Topics::keep_latest`]) keeps that snapshot
//! always, subscribers or not, and a new subscriber gets it first
//! ([`Topics::latest`]): subscriptions are made between pumps, when every
//! message taken from the inbox is both in the snapshot and handed out,
//! so the first live message is the first one after the snapshot.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use slab::Slab;

use super::hub::{Delivery, SharedFrame};
pub(crate) use crate::config::pubsub::{Backpressure, Limit};
use crate::protocol::deflate::{Params, PerMessageDeflate};
use crate::protocol::frame::{encode_compressed_frame, next_server_frame};

/// Keys a topic remembers for snapshots; beyond it, new keys replace the
/// oldest, so a topic cannot grow without bound.
pub(crate) const MAX_KEYS_PER_TOPIC: usize = 4096;

#[derive(Debug)]
struct Member {
    key: usize,
    generation: u32,
    limit: Limit,
    /// Skipped at least one batch: owes a snapshot.
    behind: bool,
    /// Not yet live: the hub subscription that waits for its marker
    /// (`hub::Marker::seq`); 0 once it is.
    waiting: u64,
}

#[derive(Debug)]
struct Topic {
    name: Arc<str>,
    members: Slab<Member>,
    /// Frames that arrived this turn, and how many; a turn's only frame
    /// is shared as it is (`first`) rather than copied.
    batch: Vec<u8>,
    first: Option<SharedFrame>,
    batch_count: u32,
    /// The same messages one by one, for subscribers that get them
    /// compressed (kept only while the topic has such subscribers).
    messages: Vec<SharedFrame>,
    compressing: usize,
    /// Members under `conflate`: the topic keeps snapshots while any.
    conflating: usize,
    /// The largest bound of a conflating member since the topic last had
    /// none: what its snapshot may hold.
    snapshot_bound: usize,
    /// Newest frame per key, oldest key first, and their bytes.
    latest: VecDeque<(u32, SharedFrame)>,
    latest_bytes: usize,
    /// A feed keeps `latest` without subscribers and is never dropped.
    feed: Option<Box<Feed>>,
}

/// A feed's snapshot as new subscribers get it, plain and compressed per
/// window size (bits - 9), until `latest` changes: subscribers that join
/// meanwhile share it.
#[derive(Debug, Default)]
struct Feed {
    plain: Option<SharedFrame>,
    packed: [Option<SharedFrame>; 7],
}

impl Topic {
    /// Counts a new member in.
    fn join(&mut self, limit: &Limit) {
        self.compressing += usize::from(limit.compress.is_some());
        if limit.policy == Backpressure::Conflate {
            self.conflating += 1;
            self.snapshot_bound = self.snapshot_bound.max(limit.bound);
        }
    }

    /// Counts a member out; the snapshot bytes it frees.
    fn leave(&mut self, limit: &Limit) -> usize {
        self.compressing -= usize::from(limit.compress.is_some());
        if limit.policy != Backpressure::Conflate {
            return 0;
        }
        self.conflating -= 1;
        if self.conflating > 0 || self.feed.is_some() {
            return 0;
        }
        self.snapshot_bound = 0;
        self.latest.clear();
        std::mem::take(&mut self.latest_bytes)
    }

    /// Whether it keeps the newest frame per key now.
    fn remembers(&self) -> bool {
        self.conflating > 0 || self.feed.is_some()
    }

    /// Adds a frame to this turn's batch (`batch_count` already counts it).
    fn add_to_batch(&mut self, frame: &SharedFrame) {
        if self.batch_count == 1 {
            self.first = Some(Arc::clone(frame));
            return;
        }
        if let Some(first) = self.first.take() {
            self.batch.extend_from_slice(&first);
        }
        self.batch.extend_from_slice(frame);
    }

    /// The turn's frames as one shared buffer.
    fn take_batch(&mut self) -> SharedFrame {
        match self.first.take() {
            Some(only) => only,
            None => std::mem::take(&mut self.batch).into(),
        }
    }

    /// Makes `frame` the newest of `key`, within the key and byte bounds;
    /// the change in bytes held.
    fn remember(&mut self, key: u32, frame: &SharedFrame) -> isize {
        let before = self.latest_bytes;
        if let Some(feed) = self.feed.as_deref_mut() {
            *feed = Feed::default();
        }
        // The ticker's keys are its symbols' indexes, first seen in that
        // order: a feed with every key finds each at once, not by a walk.
        let at = match self.latest.get(key as usize) {
            Some((k, _)) if *k == key => Some(key as usize),
            _ => self.latest.iter().position(|(k, _)| *k == key),
        };
        match at.and_then(|i| self.latest.get_mut(i)) {
            Some(slot) => {
                self.latest_bytes -= slot.1.len();
                slot.1 = Arc::clone(frame);
            }
            None => {
                if self.latest.len() == MAX_KEYS_PER_TOPIC {
                    self.forget_oldest();
                }
                self.latest.push_back((key, Arc::clone(frame)));
            }
        }
        self.latest_bytes += frame.len();
        while self.latest_bytes > self.snapshot_bound && self.latest.len() > 1 {
            // The oldest key but the one just stored: the newest frame
            // stays, whatever its size.
            let oldest = usize::from(self.latest.front().is_some_and(|(k, _)| *k == key));
            if let Some((_, frame)) = self.latest.remove(oldest) {
                self.latest_bytes -= frame.len();
            }
        }
        self.latest_bytes as isize - before as isize
    }

    fn forget_oldest(&mut self) {
        if let Some((_, frame)) = self.latest.pop_front() {
            self.latest_bytes -= frame.len();
        }
    }
}

/// The newest value of every key, joined (the one frame itself when there
/// is one key, as on hub topics).
fn joined_latest(latest: &VecDeque<(u32, SharedFrame)>, bytes: usize) -> SharedFrame {
    if let (1, Some((_, only))) = (latest.len(), latest.front()) {
        return Arc::clone(only);
    }
    let mut joined = Vec::with_capacity(bytes);
    for (_, f) in latest {
        joined.extend_from_slice(f);
    }
    joined.into()
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubscribeError {
    /// The connection holds the most topics it may.
    TooManyTopics,
    /// Already subscribed.
    Duplicate,
}

/// What a subscriber's connection offers the table.
pub(crate) trait Subscriber {
    /// The connection's generation (to skip a reused slot).
    fn generation(&self) -> u32;
    /// Whether it still takes data frames.
    fn open(&self) -> bool;
    /// Bytes queued for it and not yet written.
    fn backlog(&self) -> usize;
    /// Queues a shared buffer for it.
    fn push(&mut self, frame: SharedFrame);
}

/// What the loop must do after a fan-out.
#[derive(Debug, Default)]
pub(crate) struct FanOut {
    /// Connections with new output.
    pub(crate) written: Vec<usize>,
    /// Slow consumers under `disconnect` to close with 1013.
    pub(crate) overloaded: Vec<usize>,
}

/// Fan-out counters, published by the shard.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TopicStats {
    /// Messages delivered to subscribers (counted per subscriber).
    pub(crate) delivered: u64,
    /// Messages a conflated subscriber skipped.
    pub(crate) conflated: u64,
    /// Snapshots sent to conflated subscribers that caught up and to new
    /// subscribers of a feed.
    pub(crate) snapshots: u64,
    /// Subscribers closed for falling behind.
    pub(crate) disconnected: u64,
    /// Messages compressed for deflate subscribers (once per shard and
    /// window size, whatever the number of subscribers).
    pub(crate) compressed: u64,
}

/// The turn's messages (each one or more whole server frames) as
/// permessage-deflate frames without context takeover: the same bytes
/// serve every subscriber with this window.
pub(crate) fn compress_batch(messages: &[SharedFrame], bits: u8, threshold: usize) -> SharedFrame {
    let mut pmd = PerMessageDeflate::new(Params::without_context_takeover(bits), threshold);
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    for frames in messages {
        let mut rest: &[u8] = frames;
        while let Some((opcode, payload, len)) = next_server_frame(rest) {
            if pmd.wants(payload.len()) {
                scratch.clear();
                pmd.compress(payload, &mut scratch);
                encode_compressed_frame(&mut out, opcode, &scratch);
            } else {
                out.extend_from_slice(&rest[..len]);
            }
            rest = &rest[len..];
        }
        out.extend_from_slice(rest);
    }
    out.into()
}

/// A shard's topics.
#[derive(Debug, Default)]
pub(crate) struct Topics {
    by_name: HashMap<Arc<str>, u32>,
    topics: Slab<Topic>,
    /// Topics with a batch this turn.
    dirty: Vec<u32>,
    subscriptions: usize,
    /// Bytes of the frames topics keep for snapshots.
    snapshot_bytes: usize,
    /// Topics with at least one subscriber (feeds are kept without).
    occupied: usize,
    pub(crate) stats: TopicStats,
    /// Compress every deflate subscriber's delivery on its own instead of
    /// once per window size: the cost a server without shared compression
    /// pays, kept as a benchmark baseline.
    pub(crate) compress_per_connection: bool,
}

impl Topics {
    /// Subscriptions held on this shard.
    pub(crate) fn len(&self) -> usize {
        self.subscriptions
    }

    /// Topics with at least one subscriber on this shard.
    pub(crate) fn topic_count(&self) -> usize {
        self.occupied
    }

    /// Every topic with subscribers here, with how many.
    pub(crate) fn counts(&self) -> impl Iterator<Item = (&str, usize)> {
        self.topics
            .iter()
            .filter(|(_, t)| !t.members.is_empty())
            .map(|(_, t)| (&*t.name, t.members.len()))
    }

    /// Makes `name` a feed: it keeps the newest frame of every key from
    /// now on, within `bound` bytes (plus the newest frame), whether or
    /// not anyone subscribes, for [`Topics::latest`].
    pub(crate) fn keep_latest(&mut self, name: &str, bound: usize) {
        let id = self.topic_id(name);
        let topic = &mut self.topics[id as usize];
        topic.feed.get_or_insert_with(Box::default);
        topic.snapshot_bound = topic.snapshot_bound.max(bound);
    }

    /// What a new subscriber of feed `name` gets first: the newest frame of
    /// every key, joined, and compressed as its batches are when it
    /// negotiated deflate (`compress`); `None` for other topics or before
    /// any message. Called between pumps (a subscription is made while the
    /// driver's events are handled), when no taken message waits in a
    /// batch: each is in the snapshot and was handed out, none is both.
    pub(crate) fn latest(
        &mut self,
        name: &str,
        compress: Option<u8>,
        threshold: usize,
    ) -> Option<SharedFrame> {
        let &id = self.by_name.get(name)?;
        let topic = &mut self.topics[id as usize];
        debug_assert_eq!(topic.batch_count, 0, "a subscription between pumps");
        let feed = topic.feed.as_deref_mut()?;
        if topic.latest.is_empty() {
            return None;
        }
        let count = topic.latest.len() as u64;
        self.stats.snapshots += 1;
        self.stats.delivered += count;
        let latest = &topic.latest;
        let frames = || {
            latest
                .iter()
                .map(|(_, f)| Arc::clone(f))
                .collect::<Vec<_>>()
        };
        let snapshot = match compress {
            None => Arc::clone(
                feed.plain
                    .get_or_insert_with(|| joined_latest(latest, topic.latest_bytes)),
            ),
            Some(bits) if self.compress_per_connection => {
                self.stats.compressed += count;
                compress_batch(&frames(), bits, threshold)
            }
            Some(bits) => {
                let slot = usize::from(bits.clamp(9, 15) - 9);
                Arc::clone(feed.packed[slot].get_or_insert_with(|| {
                    self.stats.compressed += count;
                    compress_batch(&frames(), bits, threshold)
                }))
            }
        };
        Some(snapshot)
    }

    /// The id of topic `name`, made if it has none.
    fn topic_id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let name: Arc<str> = name.into();
        let id = self.topics.insert(Topic {
            name: Arc::clone(&name),
            members: Slab::new(),
            batch: Vec::new(),
            first: None,
            batch_count: 0,
            messages: Vec::new(),
            compressing: 0,
            conflating: 0,
            snapshot_bound: 0,
            latest: VecDeque::new(),
            latest_bytes: 0,
            feed: None,
        }) as u32;
        self.by_name.insert(name, id);
        id
    }

    /// Bytes of the frames kept for snapshots on this shard.
    pub(crate) fn snapshot_bytes(&self) -> usize {
        self.snapshot_bytes
    }

    /// Subscribes connection `key` to `name`; `subs` is the connection's
    /// own list, which must have room (`max`). A `waiting` subscription
    /// (not 0) counts at once but takes nothing until its marker comes
    /// ([`Topics::activate`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn subscribe(
        &mut self,
        key: usize,
        generation: u32,
        name: &str,
        limit: Limit,
        subs: &mut Vec<(u32, u32)>,
        max: usize,
        waiting: u64,
    ) -> Result<(), SubscribeError> {
        let id = self.topic_id(name);
        if subs.iter().any(|&(t, _)| t == id) {
            return Err(SubscribeError::Duplicate);
        }
        if subs.len() >= max {
            self.drop_if_unused(id);
            return Err(SubscribeError::TooManyTopics);
        }
        let topic = &mut self.topics[id as usize];
        topic.join(&limit);
        let slot = topic.members.insert(Member {
            key,
            generation,
            limit,
            behind: false,
            waiting,
        }) as u32;
        self.occupied += usize::from(topic.members.len() == 1);
        subs.push((id, slot));
        self.subscriptions += 1;
        Ok(())
    }

    /// Ends one subscription; false if there was none.
    pub(crate) fn unsubscribe(&mut self, name: &str, subs: &mut Vec<(u32, u32)>) -> bool {
        let Some(&id) = self.by_name.get(name) else {
            return false;
        };
        let Some(i) = subs.iter().position(|&(t, _)| t == id) else {
            return false;
        };
        let (_, slot) = subs.swap_remove(i);
        let topic = &mut self.topics[id as usize];
        let m = topic.members.remove(slot as usize);
        self.snapshot_bytes -= topic.leave(&m.limit);
        self.occupied -= usize::from(topic.members.is_empty());
        self.subscriptions -= 1;
        self.drop_if_unused(id);
        true
    }

    /// Ends every subscription of a connection that is going away; `left`
    /// hears each topic's name.
    pub(crate) fn forget(&mut self, subs: &[(u32, u32)], mut left: impl FnMut(&str)) {
        for &(id, slot) in subs {
            if let Some(topic) = self.topics.get_mut(id as usize) {
                if let Some(m) = topic.members.try_remove(slot as usize) {
                    self.snapshot_bytes -= topic.leave(&m.limit);
                    self.occupied -= usize::from(topic.members.is_empty());
                    self.subscriptions -= 1;
                    left(&topic.name);
                }
                self.drop_if_unused(id);
            }
        }
    }

    /// A marker came out of the inbox: the batch so far goes to the
    /// topic's live members, then waiting subscription `seq` gets `replay`
    /// (in one buffer) and is live from here on.
    pub(crate) fn activate<C: Subscriber>(
        &mut self,
        conns: &mut Slab<C>,
        name: &str,
        seq: u64,
        replay: &[SharedFrame],
        threshold: usize,
        out: &mut FanOut,
    ) {
        let Some(&id) = self.by_name.get(name) else {
            return;
        };
        if self.topics[id as usize].batch_count > 0 {
            self.dirty.retain(|&t| t != id);
            self.fan_out_topic(id, conns, threshold, out);
        }
        let topic = &mut self.topics[id as usize];
        let Some((_, m)) = topic.members.iter_mut().find(|(_, m)| m.waiting == seq) else {
            return;
        };
        m.waiting = 0;
        if replay.is_empty() {
            return;
        }
        let Some(conn) = conns
            .get_mut(m.key)
            .filter(|c| c.generation() == m.generation && c.open())
        else {
            return;
        };
        // Uncompressed even for a deflate subscriber (RSV1 clear is
        // always allowed): the replay is this subscriber's alone.
        let joined: SharedFrame = match replay {
            [only] => Arc::clone(only),
            _ => replay.concat().into(),
        };
        conn.push(joined);
        self.stats.delivered += replay.len() as u64;
        out.written.push(m.key);
    }

    fn drop_if_unused(&mut self, id: u32) {
        let topic = &self.topics[id as usize];
        if topic.members.is_empty() && topic.feed.is_none() {
            let topic = self.topics.remove(id as usize);
            self.by_name.remove(&topic.name);
            self.dirty.retain(|&t| t != id);
        }
    }

    /// Adds a published message to its topic's batch for this turn.
    pub(crate) fn accept(&mut self, d: &Delivery) {
        let Some(&id) = self.by_name.get(&*d.topic) else {
            return;
        };
        let topic = &mut self.topics[id as usize];
        if topic.remembers() {
            let change = topic.remember(d.key, &d.frame);
            self.snapshot_bytes = self.snapshot_bytes.saturating_add_signed(change);
        }
        if topic.members.is_empty() {
            // A feed nobody on this shard subscribes to: only its snapshot.
            return;
        }
        if topic.batch_count == 0 {
            self.dirty.push(id);
        }
        topic.batch_count += 1;
        if topic.compressing > 0 {
            topic.messages.push(Arc::clone(&d.frame));
        }
        topic.add_to_batch(&d.frame);
    }

    /// Hands this turn's batches to every subscriber, applying each one's
    /// backpressure limit.
    /// Subscribers that negotiated deflate get the batch compressed, built
    /// once per window size (messages under `threshold` bytes stay plain).
    pub(crate) fn fan_out<C: Subscriber>(
        &mut self,
        conns: &mut Slab<C>,
        threshold: usize,
        out: &mut FanOut,
    ) {
        for id in std::mem::take(&mut self.dirty) {
            self.fan_out_topic(id, conns, threshold, out);
        }
    }

    /// Hands topic `id`'s batch to its live subscribers.
    fn fan_out_topic<C: Subscriber>(
        &mut self,
        id: u32,
        conns: &mut Slab<C>,
        threshold: usize,
        out: &mut FanOut,
    ) {
        {
            let Some(topic) = self.topics.get_mut(id as usize) else {
                return;
            };
            let count = std::mem::take(&mut topic.batch_count);
            let batch = topic.take_batch();
            let messages = std::mem::take(&mut topic.messages);
            // Indexed by window bits - 9.
            let mut packed: [Option<SharedFrame>; 7] = Default::default();
            let mut snapshot = None;
            for (_, m) in topic.members.iter_mut().filter(|(_, m)| m.waiting == 0) {
                let Some(conn) = conns
                    .get_mut(m.key)
                    .filter(|c| c.generation() == m.generation)
                else {
                    continue;
                };
                if !conn.open() {
                    continue;
                }
                let backlog = conn.backlog();
                let bound = m.limit.bound;
                if m.behind {
                    // Catch up with the latest value per key, once the
                    // backlog has drained to half the bound.
                    if backlog <= bound / 2 {
                        let s = snapshot.get_or_insert_with(|| {
                            joined_latest(&topic.latest, topic.latest_bytes)
                        });
                        conn.push(Arc::clone(s));
                        m.behind = false;
                        self.stats.snapshots += 1;
                        out.written.push(m.key);
                    } else {
                        self.stats.conflated += u64::from(count);
                    }
                    continue;
                }
                // Its own backlog decides, not the batch's size: a large
                // message still reaches a subscriber that keeps up.
                if backlog >= bound {
                    match m.limit.policy {
                        Backpressure::Conflate => {
                            m.behind = true;
                            self.stats.conflated += u64::from(count);
                        }
                        Backpressure::Disconnect => {
                            self.stats.disconnected += 1;
                            out.overloaded.push(m.key);
                        }
                    }
                    continue;
                }
                let frames = match m.limit.compress {
                    Some(bits) if !messages.is_empty() && self.compress_per_connection => {
                        self.stats.compressed += messages.len() as u64;
                        compress_batch(&messages, bits, threshold)
                    }
                    Some(bits) if !messages.is_empty() => {
                        let slot = usize::from(bits.clamp(9, 15) - 9);
                        Arc::clone(packed[slot].get_or_insert_with(|| {
                            self.stats.compressed += messages.len() as u64;
                            compress_batch(&messages, bits, threshold)
                        }))
                    }
                    _ => Arc::clone(&batch),
                };
                conn.push(frames);
                self.stats.delivered += u64::from(count);
                out.written.push(m.key);
            }
        }
    }

    /// The newest value per key of a topic, joined.
    #[cfg(test)]
    fn snapshot(&self, name: &str) -> Option<Vec<u8>> {
        let id = *self.by_name.get(name)?;
        let topic = &self.topics[id as usize];
        Some(joined_latest(&topic.latest, topic.latest_bytes).to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DROP: Limit = Limit {
        policy: Backpressure::Disconnect,
        bound: 100,
        compress: None,
    };
    const CONFLATE: Limit = Limit {
        policy: Backpressure::Conflate,
        bound: 100,
        compress: None,
    };

    #[derive(Default)]
    struct Fake {
        generation: u32,
        got: Vec<u8>,
        backlog: usize,
        closed: bool,
    }

    impl Subscriber for Fake {
        fn generation(&self) -> u32 {
            self.generation
        }
        fn open(&self) -> bool {
            !self.closed
        }
        fn backlog(&self) -> usize {
            self.backlog
        }
        fn push(&mut self, frame: SharedFrame) {
            self.got.extend_from_slice(&frame);
        }
    }

    fn delivery(topic: &str, key: u32, bytes: &[u8]) -> Delivery {
        Delivery {
            topic: topic.into(),
            key,
            frame: bytes.to_vec().into(),
        }
    }

    #[test]
    fn a_turn_becomes_one_batch_per_subscriber_in_order() {
        let mut topics = Topics::default();
        let mut conns: Slab<Fake> = Slab::new();
        let a = conns.insert(Fake::default());
        let b = conns.insert(Fake::default());
        let (mut sa, mut sb) = (Vec::new(), Vec::new());
        topics.subscribe(a, 0, "t", DROP, &mut sa, 8, 0).unwrap();
        topics.subscribe(b, 0, "t", DROP, &mut sb, 8, 0).unwrap();
        topics.subscribe(b, 0, "u", DROP, &mut sb, 8, 0).unwrap();
        assert_eq!(
            topics.subscribe(b, 0, "u", DROP, &mut sb, 8, 0),
            Err(SubscribeError::Duplicate)
        );
        for d in [
            delivery("t", 0, b"1"),
            delivery("u", 0, b"x"),
            delivery("t", 0, b"2"),
        ] {
            topics.accept(&d);
        }
        topics.accept(&delivery("nobody", 0, b"?"));
        let mut out = FanOut::default();
        topics.fan_out(&mut conns, 0, &mut out);
        assert_eq!(conns[a].got, b"12");
        assert_eq!(conns[b].got, b"12x");
        assert_eq!(topics.stats.delivered, 5);
        assert_eq!(out.written.len(), 3);
        // Unsubscribing and forgetting clean the table up.
        assert!(topics.unsubscribe("t", &mut sb));
        assert!(!topics.unsubscribe("t", &mut sb));
        topics.forget(&sa, |_| {});
        topics.forget(&sb, |_| {});
        assert_eq!((topics.len(), topics.topic_count()), (0, 0));
    }

    #[test]
    fn topics_per_connection_are_capped() {
        let mut topics = Topics::default();
        let mut subs = Vec::new();
        for name in ["a", "b"] {
            topics.subscribe(0, 0, name, DROP, &mut subs, 2, 0).unwrap();
        }
        assert_eq!(
            topics.subscribe(0, 0, "c", DROP, &mut subs, 2, 0),
            Err(SubscribeError::TooManyTopics)
        );
        assert_eq!(
            topics.topic_count(),
            2,
            "the refused topic leaves nothing behind"
        );
    }

    #[test]
    fn slow_subscribers_are_conflated_or_disconnected() {
        let mut topics = Topics::default();
        let mut conns: Slab<Fake> = Slab::new();
        let slow = conns.insert(Fake::default());
        let rude = conns.insert(Fake::default());
        let (mut s1, mut s2) = (Vec::new(), Vec::new());
        topics
            .subscribe(slow, 0, "px", CONFLATE, &mut s1, 8, 0)
            .unwrap();
        topics
            .subscribe(rude, 0, "px", DROP, &mut s2, 8, 0)
            .unwrap();
        conns[slow].backlog = 100;
        conns[rude].backlog = 100;
        let mut out = FanOut::default();
        for (key, byte) in [(1, b"a"), (2, b"b"), (1, b"c")] {
            topics.accept(&delivery("px", key, byte));
        }
        topics.fan_out(&mut conns, 0, &mut out);
        assert!(conns[slow].got.is_empty());
        assert_eq!(out.overloaded, [rude]);
        assert_eq!(topics.stats.conflated, 3);
        // Still behind: nothing. Caught up: the latest per key, once.
        topics.accept(&delivery("px", 2, b"d"));
        topics.fan_out(&mut conns, 0, &mut out);
        assert!(conns[slow].got.is_empty());
        conns[slow].backlog = 0;
        topics.accept(&delivery("px", 1, b"e"));
        topics.fan_out(&mut conns, 0, &mut out);
        assert_eq!(conns[slow].got, b"ed");
        topics.accept(&delivery("px", 1, b"f"));
        topics.fan_out(&mut conns, 0, &mut out);
        assert_eq!(conns[slow].got, b"edf");
        assert_eq!(topics.snapshot("px").unwrap(), b"fd");
    }

    #[test]
    fn a_batch_larger_than_the_bound_reaches_a_subscriber_that_keeps_up() {
        let mut topics = Topics::default();
        let mut conns: Slab<Fake> = Slab::new();
        let fast = conns.insert(Fake::default());
        let behind = conns.insert(Fake::default());
        let (mut s1, mut s2) = (Vec::new(), Vec::new());
        topics.subscribe(fast, 0, "t", DROP, &mut s1, 8, 0).unwrap();
        topics
            .subscribe(behind, 0, "t", DROP, &mut s2, 8, 0)
            .unwrap();
        conns[fast].backlog = DROP.bound - 1;
        conns[behind].backlog = DROP.bound;
        let big = vec![7u8; 3 * DROP.bound];
        topics.accept(&delivery("t", 0, &big));
        let mut out = FanOut::default();
        topics.fan_out(&mut conns, 0, &mut out);
        assert_eq!(conns[fast].got, big);
        assert_eq!(out.overloaded, [behind]);
    }

    #[test]
    fn only_conflating_subscribers_make_a_topic_keep_its_latest_frames() {
        let mut topics = Topics::default();
        let mut conns: Slab<Fake> = Slab::new();
        let a = conns.insert(Fake::default());
        let (mut sa, mut sc) = (Vec::new(), Vec::new());
        topics.subscribe(a, 0, "t", DROP, &mut sa, 8, 0).unwrap();
        topics.accept(&delivery("t", 1, b"12345"));
        assert_eq!(topics.snapshot_bytes(), 0);
        assert_eq!(topics.snapshot("t").unwrap(), b"");
        let c = conns.insert(Fake::default());
        topics
            .subscribe(c, 0, "t", CONFLATE, &mut sc, 8, 0)
            .unwrap();
        topics.accept(&delivery("t", 1, b"abc"));
        topics.accept(&delivery("t", 2, b"de"));
        topics.accept(&delivery("t", 1, b"f"));
        assert_eq!(topics.snapshot("t").unwrap(), b"fde");
        assert_eq!(topics.snapshot_bytes(), 3);
        // The conflating subscriber goes: so do the frames.
        topics.forget(&sc, |_| {});
        assert_eq!(topics.snapshot_bytes(), 0);
        assert_eq!(topics.snapshot("t").unwrap(), b"");
        let mut out = FanOut::default();
        topics.fan_out(&mut conns, 0, &mut out);
        assert_eq!(conns[a].got, b"12345abcdef");
    }

    #[test]
    fn a_snapshot_holds_at_most_the_bound_and_the_newest_frame() {
        let mut topics = Topics::default();
        let mut subs = Vec::new();
        topics
            .subscribe(0, 0, "px", CONFLATE, &mut subs, 8, 0)
            .unwrap();
        for key in 0..30u8 {
            topics.accept(&delivery("px", u32::from(key), &[b'a' + key % 26; 10]));
        }
        // The oldest keys went first: the newest ten remain.
        assert_eq!(topics.snapshot_bytes(), CONFLATE.bound);
        let kept = topics.snapshot("px").unwrap();
        assert_eq!(&kept[..10], [b'a' + 20; 10]);
        assert_eq!(&kept[90..], [b'a' + 29 % 26; 10]);
        // A frame over the bound alone is still the latest value of its key.
        topics.accept(&delivery("px", 25, &[b'!'; 150]));
        assert_eq!(topics.snapshot("px").unwrap(), [b'!'; 150]);
        assert_eq!(topics.snapshot_bytes(), 150);
        assert!(topics.unsubscribe("px", &mut subs));
        assert_eq!(topics.snapshot_bytes(), 0);
    }

    #[test]
    fn a_feed_keeps_its_latest_frames_without_subscribers_and_hands_them_out_first() {
        let mut topics = Topics::default();
        let mut conns: Slab<Fake> = Slab::new();
        topics.keep_latest("px", 100);
        assert_eq!(topics.latest("px", None, 0), None, "nothing published yet");
        for (key, byte) in [(0, b"a"), (1, b"b"), (0, b"c")] {
            topics.accept(&delivery("px", key, byte));
        }
        // Nobody subscribes, so nothing is batched, and the topic stays.
        let mut out = FanOut::default();
        topics.fan_out(&mut conns, 0, &mut out);
        assert_eq!((topics.topic_count(), topics.snapshot_bytes()), (0, 2));
        let a = conns.insert(Fake::default());
        let mut subs = Vec::new();
        topics.subscribe(a, 0, "px", DROP, &mut subs, 8, 0).unwrap();
        let first = topics.latest("px", None, 0).unwrap();
        assert_eq!(&*first, b"cb");
        // Joined once until it changes.
        assert!(Arc::ptr_eq(&first, &topics.latest("px", None, 0).unwrap()));
        conns[a].push(first);
        topics.accept(&delivery("px", 1, b"d"));
        topics.fan_out(&mut conns, 0, &mut out);
        assert_eq!(conns[a].got, b"cbd", "the snapshot, then live, once");
        assert_eq!(topics.topic_count(), 1);
        assert!(topics.unsubscribe("px", &mut subs));
        assert_eq!((topics.topic_count(), topics.snapshot_bytes()), (0, 2));
        assert_eq!(&*topics.latest("px", None, 0).unwrap(), b"cd");
        assert_eq!(topics.latest("other", None, 0), None);
        assert_eq!(topics.stats.snapshots, 3);
        assert_eq!(topics.stats.delivered, 2 + 2 + 1 + 2, "snapshots, live");
        // Compressed once per window size for deflate subscribers.
        let tick = crate::pubsub::hub::Hub::frame(crate::protocol::frame::OpCode::Text, b"tick");
        topics.accept(&Delivery {
            topic: "px".into(),
            key: 0,
            frame: tick,
        });
        let packed = topics.latest("px", Some(15), 0).unwrap();
        assert!(Arc::ptr_eq(
            &packed,
            &topics.latest("px", Some(15), 0).unwrap()
        ));
        assert_eq!(packed[0], 0xC1, "a compressed text frame");
        assert_eq!(topics.stats.compressed, 2);
    }
}
