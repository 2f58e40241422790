//! A shard's side of pub/sub: its inbox from the hub and its topic table,
//! pumped once per loop turn.

use crate::config::DeflateBroadcast;
use std::sync::Arc;

use slab::Slab;

use super::session::{Route, Session};
use super::{Conn, Transport};
use crate::engineio::handoff::Handoff;
use crate::metrics::ShardStats;
use crate::pubsub::control::Control;
use crate::pubsub::hub::{Delivery, Hub, Inbound, InboxReceiver, SharedFrame};
use crate::pubsub::ticker;
use crate::pubsub::topics::{FanOut, Subscriber, Topics};

#[derive(Debug)]
pub(crate) struct PubSub {
    pub(crate) topics: Topics,
    inbox: InboxReceiver,
    /// The inbox signalled since the last pump.
    pub(crate) woken: bool,
    fan_out: FanOut,
    /// The last hub subscription started here: each waits for the marker
    /// with its number.
    last_join: u64,
    /// Engine.IO requests and answers other shards handed over, for the
    /// shard to act on this turn.
    pub(crate) handoffs: Vec<Handoff>,
    /// Socket.IO room broadcasts, for this shard's sessions in the rooms.
    pub(crate) rooms: Vec<Delivery>,
    /// The server API's orders, for the shard to act on this turn.
    pub(crate) controls: Vec<Control>,
}

/// A connection seen as a subscriber.
impl<T: Transport> Subscriber for Conn<T> {
    fn generation(&self) -> u32 {
        self.session.generation
    }
    fn open(&self) -> bool {
        self.session.is_open() || self.session.is_streaming()
    }
    fn backlog(&self) -> usize {
        Self::backlog(self)
    }
    fn push(&mut self, frame: SharedFrame) {
        self.session.push_shared(frame);
    }
}

impl PubSub {
    pub(crate) fn new(inbox: InboxReceiver, routes: &crate::config::Routes) -> Self {
        let mut topics = Topics::default();
        topics.compress_per_connection =
            routes.deflate_broadcast == DeflateBroadcast::PerConnection;
        if !routes.ticker_symbols.is_empty() {
            // Every shard takes every tick: each keeps the latest for its
            // own new subscribers.
            let bound = routes.feed_bound();
            topics.keep_latest(ticker::ALL, bound);
            for symbol in &routes.ticker_symbols {
                topics.keep_latest(&ticker::topic(symbol), bound);
            }
        }
        Self {
            topics,
            inbox,
            woken: true,
            fan_out: FanOut::default(),
            last_join: 0,
            handoffs: Vec::new(),
            rooms: Vec::new(),
            controls: Vec::new(),
        }
    }

    pub(crate) fn hub(&self) -> &Arc<Hub> {
        self.inbox.hub()
    }

    /// A number for a hub subscription about to start (never 0).
    pub(crate) fn next_join(&mut self) -> u64 {
        self.last_join += 1;
        self.last_join
    }

    /// This shard's index, for the hub to find its inbox.
    pub(crate) fn shard(&self) -> usize {
        self.inbox.index()
    }

    /// Marks the inbox for this turn's pump if messages wait in it,
    /// whether or not its wake-up has been seen yet.
    pub(crate) fn note_waiting(&mut self) {
        self.woken |= self.inbox.pending();
    }

    /// Takes what the inbox holds into this turn's batches and fans them
    /// out; returns the connections with new output and the slow consumers
    /// to close.
    pub(crate) fn pump<T: Transport>(
        &mut self,
        conns: &mut Slab<Conn<T>>,
        threshold: usize,
    ) -> FanOut {
        if self.woken {
            self.woken = false;
            self.inbox.rearm();
            let (topics, out) = (&mut self.topics, &mut self.fan_out);
            let (handoffs, rooms) = (&mut self.handoffs, &mut self.rooms);
            let controls = &mut self.controls;
            self.inbox.drain(|item| match item {
                Inbound::Message(d) if d.topic.starts_with(super::engineio::ROOM_PREFIX) => {
                    rooms.push(d);
                }
                Inbound::Message(d) => topics.accept(&d),
                Inbound::Marker(m) => {
                    topics.activate(conns, &m.topic, m.seq, &m.replay, threshold, out);
                }
                Inbound::EngineIo(h) => handoffs.push(h),
                Inbound::Control(c) => controls.push(c),
            });
            self.topics.fan_out(conns, threshold, &mut self.fan_out);
        }
        std::mem::take(&mut self.fan_out)
    }

    /// Copies the fan-out counters into this shard's published slot.
    pub(crate) fn publish_stats(&self, stats: &ShardStats) {
        let t = &self.topics.stats;
        ShardStats::set(&stats.subscriptions, self.topics.len() as u64);
        ShardStats::set(&stats.topics, self.topics.topic_count() as u64);
        ShardStats::set(&stats.pubsub_delivered_total, t.delivered);
        ShardStats::set(&stats.pubsub_conflated_total, t.conflated);
        ShardStats::set(&stats.pubsub_snapshots_total, t.snapshots);
        ShardStats::set(&stats.pubsub_disconnected_total, t.disconnected);
        ShardStats::set(&stats.pubsub_compressed_total, t.compressed);
        ShardStats::set(
            &stats.pubsub_snapshot_bytes,
            self.topics.snapshot_bytes() as u64,
        );
    }

    /// Hub topics (without namespace) with their subscribers here.
    pub(crate) fn hub_topics(&self) -> Vec<(String, usize)> {
        let prefix = crate::pubsub::hub_topic("");
        self.topics
            .counts()
            .filter_map(|(name, n)| Some((name.strip_prefix(prefix.as_str())?.to_owned(), n)))
            .collect()
    }

    /// Ends every subscription of a connection whose slot is being freed.
    pub(crate) fn forget(&mut self, session: &mut Session) {
        let hub_route = session.route == Route::Hub;
        if let Some(spill) = session.spill.as_deref_mut() {
            let hub = self.inbox.hub();
            self.topics.forget(&spill.subs, |name| {
                if hub_route {
                    hub.leave(name);
                }
            });
            spill.subs.clear();
        }
    }
}
