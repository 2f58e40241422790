//! A shard's subscription table and its per-turn fan-out.
//!
//! Messages that reach a topic during one loop turn are appended to that
//! topic's batch; at the end of the turn the batch becomes one shared
//! buffer and every subscriber on the shard gets a reference to it. So a
//! subscriber gets everything a turn brought in one write, and the bytes
//! exist once per shard however many subscribers there are.
//!
//! Each topic also keeps the newest frame per key (e.g. per symbol). A
//! subscriber under the `conflate` policy that falls behind skips batches
//! and, once it has room again, gets that snapshot: the latest value of
//! every key instead of the backlog.

use std::collections::HashMap;
use std::sync::Arc;

use slab::Slab;

use super::hub::{Delivery, SharedFrame};
use crate::protocol::deflate::{Params, PerMessageDeflate};
use crate::protocol::frame::{decode_server_frame, encode_compressed_frame};

/// What happens to a subscriber whose queued output passes the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backpressure {
    /// Close it with 1013 (try again later).
    Disconnect,
    /// Skip what it cannot take; send the latest value per key when it
    /// has room again.
    Conflate,
}

/// How a subscriber is treated when it falls behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limit {
    /// What happens past the bound.
    pub(crate) policy: Backpressure,
    /// Queued output bytes allowed.
    pub(crate) bound: usize,
    /// The subscriber negotiated permessage-deflate without server context
    /// takeover, with this window: it gets the turn's messages compressed,
    /// once per shard for all such subscribers.
    pub(crate) compress: Option<u8>,
}

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
}

#[derive(Debug)]
struct Topic {
    name: Arc<str>,
    members: Slab<Member>,
    /// Frames that arrived this turn, and how many.
    batch: Vec<u8>,
    batch_count: u32,
    /// The same messages one by one, for subscribers that get them
    /// compressed (kept only while the topic has such subscribers).
    messages: Vec<SharedFrame>,
    compressing: usize,
    /// Newest frame per key.
    latest: Vec<(u32, SharedFrame)>,
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
    /// Snapshots sent to conflated subscribers that caught up.
    pub(crate) snapshots: u64,
    /// Subscribers closed for falling behind.
    pub(crate) disconnected: u64,
    /// Messages compressed for deflate subscribers (once per shard and
    /// window size, whatever the number of subscribers).
    pub(crate) compressed: u64,
}

/// The turn's messages as permessage-deflate frames without context
/// takeover: the same bytes serve every subscriber with this window.
fn compress_batch(messages: &[SharedFrame], bits: u8, threshold: usize) -> SharedFrame {
    let mut pmd = PerMessageDeflate::new(Params::without_context_takeover(bits), threshold);
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    for frame in messages {
        match decode_server_frame(frame) {
            Some((opcode, payload)) if pmd.wants(payload.len()) => {
                scratch.clear();
                pmd.compress(payload, &mut scratch);
                encode_compressed_frame(&mut out, opcode, &scratch);
            }
            _ => out.extend_from_slice(frame),
        }
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
        self.topics.len()
    }

    /// Subscribes connection `key` to `name`; `subs` is the connection's
    /// own list, which must have room (`max`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn subscribe(
        &mut self,
        key: usize,
        generation: u32,
        name: &str,
        limit: Limit,
        subs: &mut Vec<(u32, u32)>,
        max: usize,
    ) -> Result<(), SubscribeError> {
        let id = match self.by_name.get(name) {
            Some(&id) => id,
            None => {
                let name: Arc<str> = name.into();
                let id = self.topics.insert(Topic {
                    name: Arc::clone(&name),
                    members: Slab::new(),
                    batch: Vec::new(),
                    batch_count: 0,
                    messages: Vec::new(),
                    compressing: 0,
                    latest: Vec::new(),
                }) as u32;
                self.by_name.insert(name, id);
                id
            }
        };
        if subs.iter().any(|&(t, _)| t == id) {
            return Err(SubscribeError::Duplicate);
        }
        if subs.len() >= max {
            self.drop_if_unused(id);
            return Err(SubscribeError::TooManyTopics);
        }
        let topic = &mut self.topics[id as usize];
        topic.compressing += usize::from(limit.compress.is_some());
        let slot = topic.members.insert(Member {
            key,
            generation,
            limit,
            behind: false,
        }) as u32;
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
        topic.compressing -= usize::from(m.limit.compress.is_some());
        self.subscriptions -= 1;
        self.drop_if_unused(id);
        true
    }

    /// Ends every subscription of a connection that is going away.
    pub(crate) fn forget(&mut self, subs: &[(u32, u32)]) {
        for &(id, slot) in subs {
            if let Some(topic) = self.topics.get_mut(id as usize) {
                if let Some(m) = topic.members.try_remove(slot as usize) {
                    topic.compressing -= usize::from(m.limit.compress.is_some());
                    self.subscriptions -= 1;
                }
                self.drop_if_unused(id);
            }
        }
    }

    fn drop_if_unused(&mut self, id: u32) {
        if self.topics[id as usize].members.is_empty() {
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
        if topic.batch_count == 0 {
            self.dirty.push(id);
        }
        topic.batch_count += 1;
        if topic.compressing > 0 {
            topic.messages.push(Arc::clone(&d.frame));
        }
        topic.batch.extend_from_slice(&d.frame);
        match topic.latest.iter_mut().find(|(k, _)| *k == d.key) {
            Some(slot) => slot.1 = Arc::clone(&d.frame),
            None => {
                if topic.latest.len() == MAX_KEYS_PER_TOPIC {
                    topic.latest.remove(0);
                }
                topic.latest.push((d.key, Arc::clone(&d.frame)));
            }
        }
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
            let Some(topic) = self.topics.get_mut(id as usize) else {
                continue;
            };
            let count = std::mem::take(&mut topic.batch_count);
            let batch: SharedFrame = std::mem::take(&mut topic.batch).into();
            let messages = std::mem::take(&mut topic.messages);
            // Indexed by window bits - 9.
            let mut packed: [Option<SharedFrame>; 7] = Default::default();
            let mut snapshot = None;
            for (_, m) in topic.members.iter_mut() {
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
                            let mut bytes = Vec::new();
                            for (_, f) in &topic.latest {
                                bytes.extend_from_slice(f);
                            }
                            SharedFrame::from(bytes)
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
                if backlog + batch.len() > bound {
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
        Some(
            self.topics[id as usize]
                .latest
                .iter()
                .flat_map(|(_, f)| f.iter().copied())
                .collect(),
        )
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
        topics.subscribe(a, 0, "t", DROP, &mut sa, 8).unwrap();
        topics.subscribe(b, 0, "t", DROP, &mut sb, 8).unwrap();
        topics.subscribe(b, 0, "u", DROP, &mut sb, 8).unwrap();
        assert_eq!(
            topics.subscribe(b, 0, "u", DROP, &mut sb, 8),
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
        topics.forget(&sa);
        topics.forget(&sb);
        assert_eq!((topics.len(), topics.topic_count()), (0, 0));
    }

    #[test]
    fn topics_per_connection_are_capped() {
        let mut topics = Topics::default();
        let mut subs = Vec::new();
        for name in ["a", "b"] {
            topics.subscribe(0, 0, name, DROP, &mut subs, 2).unwrap();
        }
        assert_eq!(
            topics.subscribe(0, 0, "c", DROP, &mut subs, 2),
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
            .subscribe(slow, 0, "px", CONFLATE, &mut s1, 8)
            .unwrap();
        topics.subscribe(rude, 0, "px", DROP, &mut s2, 8).unwrap();
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
}
