//! The process-wide entry point for publishing: any thread frames a message
//! once and hands the same reference-counted frame to every shard's inbox.
//! A shard is woken once per batch (an eventfd it polls with its sockets),
//! however many messages the batch holds.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, OnceLock};

use crate::buf::budget::Budget;

use crate::engineio::handoff::Handoff;
use crate::protocol::frame::{encode_frame, OpCode};

use super::control::{Control, Disconnect};
use super::relay::{Outgoing, Relay};
use super::streams::DEFAULT_HISTORY_BYTES;
use super::streams::{HistoryRule, Joined, Position, ReplayLimit, Streams};

pub use crate::config::pubsub::DEFAULT_INBOX_BYTES;

/// What a queued message costs beyond its frame and topic bytes: its slot
/// in the queue and the reference-count headers of the frame and topic. It
/// makes a flood of tiny messages count too.
const DELIVERY_OVERHEAD: usize = 64;

/// A frame encoded once, shared by every recipient on every shard.
pub type SharedFrame = Arc<[u8]>;

/// One message on its way to a topic.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The topic it is published to.
    pub topic: Arc<str>,
    /// Within the topic, what it supersedes when a slow subscriber is
    /// conflated (e.g. the symbol of a tick); 0 when there is one key.
    pub key: u32,
    /// The whole server frame, header included.
    pub frame: SharedFrame,
}

impl Delivery {
    /// What it costs an inbox that holds it, in bytes.
    fn cost(&self) -> usize {
        self.frame.len() + self.topic.len() + DELIVERY_OVERHEAD
    }
}

/// Where a hub subscription starts in its shard's inbox: everything ahead
/// of it is at or before the position its `subscribed` answer reported,
/// everything behind it after.
#[derive(Debug)]
pub struct Marker {
    /// The subscribed topic.
    pub topic: Arc<str>,
    /// Which subscription on the shard (`Topics::subscribe`'s `waiting`).
    pub seq: u64,
    /// What a resuming subscription missed, oldest first.
    pub replay: Vec<SharedFrame>,
}

/// What a shard's inbox holds.
#[derive(Debug)]
pub enum Inbound {
    /// A published message.
    Message(Delivery),
    /// A subscription of this shard starts here.
    Marker(Marker),
    /// An Engine.IO request or answer between the shard a connection is
    /// on and the shard that owns its session.
    EngineIo(Handoff),
    /// An order of the server API: a disconnect or a question.
    Control(Control),
}

impl Inbound {
    /// What it costs an inbox that holds it (a marker is never refused:
    /// it costs nothing).
    fn cost(&self) -> usize {
        match self {
            Self::Message(d) => d.cost(),
            Self::Marker(_) => 0,
            Self::EngineIo(h) => h.len() + DELIVERY_OVERHEAD,
            Self::Control(c) => c.len() + DELIVERY_OVERHEAD,
        }
    }
}

#[derive(Debug)]
struct ShardInbox {
    tx: Sender<Inbound>,
    /// A wake-up is pending; later publishes need not write the eventfd.
    armed: AtomicBool,
    /// What the queued messages cost ([`Delivery::cost`]): charged before
    /// a send, given back as the shard takes them.
    bytes: Budget,
    wake: OwnedFd,
}

/// Publishing counters.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Messages published (each counted once, whatever its fan-out).
    pub published: AtomicU64,
    /// Messages a full shard inbox refused (once per shard that refused).
    pub inbox_dropped: AtomicU64,
}

/// Every shard's inbox.
#[derive(Debug)]
pub struct Hub {
    shards: Box<[ShardInbox]>,
    /// Publishing counters.
    pub stats: HubStats,
    /// Relays hub publishes to other nodes, when a bridge is configured.
    relay: OnceLock<Box<dyn Relay>>,
    /// Every hub topic's position and history.
    pub streams: Streams,
}

/// A shard's end of its inbox.
#[derive(Debug)]
pub struct InboxReceiver {
    rx: Receiver<Inbound>,
    hub: Arc<Hub>,
    index: usize,
}

impl Hub {
    /// A hub for `shards` shards, each inbox holding at most `inbox_bytes`
    /// (see [`DEFAULT_INBOX_BYTES`]), and the receiving end for each; topic
    /// histories hold the default budget.
    pub fn new(
        shards: usize,
        inbox_bytes: usize,
    ) -> std::io::Result<(Arc<Self>, Vec<Receiver<Inbound>>)> {
        Self::with_streams(shards, inbox_bytes, Streams::new(DEFAULT_HISTORY_BYTES))
    }

    /// The same, with these streams.
    pub fn with_streams(
        shards: usize,
        inbox_bytes: usize,
        streams: Streams,
    ) -> std::io::Result<(Arc<Self>, Vec<Receiver<Inbound>>)> {
        let mut inboxes = Vec::with_capacity(shards);
        let mut receivers = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = mpsc::channel();
            // SAFETY: eventfd takes no pointers; the result is checked.
            let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            inboxes.push(ShardInbox {
                tx,
                armed: AtomicBool::new(false),
                bytes: Budget::new(inbox_bytes),
                // SAFETY: a fresh descriptor that nothing else owns.
                wake: unsafe { OwnedFd::from_raw_fd(fd) },
            });
            receivers.push(rx);
        }
        Ok((
            Arc::new(Self {
                shards: inboxes.into_boxed_slice(),
                stats: HubStats::default(),
                relay: OnceLock::new(),
                streams,
            }),
            receivers,
        ))
    }

    /// Binds shard `index`'s receiving end to this hub.
    pub fn receiver(self: &Arc<Self>, index: usize, rx: Receiver<Inbound>) -> InboxReceiver {
        InboxReceiver {
            rx,
            hub: Arc::clone(self),
            index,
        }
    }

    /// Encodes a final frame of `opcode` carrying `payload`, once.
    pub fn frame(opcode: OpCode, payload: &[u8]) -> SharedFrame {
        let mut out = Vec::with_capacity(payload.len() + 10);
        encode_frame(&mut out, true, opcode, payload);
        out.into()
    }

    /// Routes hub publishes to other nodes from now on; their positions
    /// and history live in the shared store the relay writes to (whose
    /// listener says when the streams are in step with it).
    pub fn set_relay(&self, relay: Box<dyn Relay>) {
        let _ = self.relay.set(relay);
    }

    /// Whether a bridge relays publishes to other nodes.
    pub fn bridged(&self) -> bool {
        self.relay.get().is_some()
    }

    /// Writes the bridge's metrics, if there is one.
    pub fn render_relay(&self, out: &mut String) {
        if let Some(relay) = self.relay.get() {
            relay.render(out);
        }
    }

    /// Waits at most `within` for the bridge to send what it was handed
    /// (a drain calls it last, so no publish is lost by a restart).
    pub fn flush_relay(&self, within: std::time::Duration) -> bool {
        self.relay.get().is_none_or(|r| r.flush(within))
    }

    /// Publishes `payload` (an embedder's text, delivered as it is) to hub
    /// topic `name` on this node and, through the bridge if there is one,
    /// on every other node.
    pub fn publish_to_hub(&self, name: &str, payload: &str) {
        self.publish_local(&super::hub_topic(name), OpCode::Text, payload.as_bytes());
        if let Some(relay) = self.relay.get() {
            // Counted as lost by the relay when it cannot go.
            let _ = relay.forward(Outgoing {
                topic: name.to_owned(),
                rule: None,
                text: payload.to_owned(),
                order: false,
                reply: None,
            });
        }
    }

    /// Hands `text` for `topic` to the bridge alone, for the other nodes
    /// (this node's shards get the message through
    /// [`publish_batch`](Self::publish_batch)).
    pub fn relay_text(&self, topic: &str, text: String) {
        if let Some(relay) = self.relay.get() {
            // Counted as lost by the relay when it cannot go.
            let _ = relay.forward(Outgoing {
                topic: topic.to_owned(),
                rule: None,
                text,
                order: false,
                reply: None,
            });
        }
    }

    /// Publishes a hub route's message: `data` (JSON text) to hub topic
    /// `name`, framed with the position its stream gives it and kept under
    /// `rule`. With a bridge the shared store positions it and every node
    /// (this one too) delivers it as it comes back from there, so all of
    /// them see one order; without one, or when the bridge cannot take it,
    /// this node positions it itself (in offset order, see `streams`).
    pub fn publish_positioned(&self, name: &str, data: &str, rule: HistoryRule) {
        self.publish_positioned_told(name, data, rule, None);
    }

    /// Publishes like [`Hub::publish_positioned`]; returns the position
    /// when this node gave it. When the shared store gives it instead,
    /// `reply` (if any) is told it once known (`None` is returned then).
    pub fn publish_positioned_told(
        &self,
        name: &str,
        data: &str,
        rule: HistoryRule,
        reply: Option<std::sync::mpsc::Sender<Position>>,
    ) -> Option<Position> {
        let Some(relay) = self.relay.get() else {
            let topic = super::hub_topic(name);
            return Some(self.streams.publish(
                &topic,
                rule,
                Self::keep_size(name, data),
                |_, position| Self::positioned(name, position, data),
                |topic, frame| self.deliver(topic, frame),
            ));
        };
        let publish = Outgoing {
            topic: name.to_owned(),
            rule: Some(rule),
            text: data.to_owned(),
            order: false,
            reply,
        };
        match relay.forward(publish) {
            Ok(()) => None,
            Err(back) => Some(self.publish_alone(&back.topic, &back.text, rule)),
        }
    }

    /// Delivers a hub route's message on this node only, in an epoch of
    /// its own: what the bridge could not send.
    pub fn publish_alone(&self, name: &str, data: &str, rule: HistoryRule) -> Position {
        self.streams.publish_alone(
            &super::hub_topic(name),
            rule,
            Self::keep_size(name, data),
            |_, position| Self::positioned(name, position, data),
            |topic, frame| self.deliver(topic, frame),
        )
    }

    /// Delivers a hub route's message the shared store positioned (see
    /// `Streams::apply`); whether it was new here.
    pub fn publish_shared(
        &self,
        name: &str,
        position: Position,
        rule: HistoryRule,
        data: &str,
    ) -> bool {
        self.streams
            .apply(
                &super::hub_topic(name),
                position,
                rule,
                Self::keep_size(name, data),
                |_, position| Self::positioned(name, position, data),
                |topic, frame| self.deliver(topic, frame),
            )
            .is_some()
    }

    /// Sets hub topic `name`'s stream to what the shared store holds: its
    /// position and its kept messages (`(offset, age, data)`, oldest first).
    pub fn load_shared(
        &self,
        name: &str,
        position: Position,
        rule: HistoryRule,
        kept: Vec<(u64, std::time::Duration, String)>,
    ) {
        let frames = kept
            .into_iter()
            .map(|(offset, age, data)| {
                let at = Position { offset, ..position };
                (offset, age, Self::positioned(name, at, &data))
            })
            .collect();
        self.streams
            .load(&super::hub_topic(name), position, rule, frames);
    }

    /// About what a positioned message costs to keep.
    fn keep_size(name: &str, data: &str) -> usize {
        data.len() + name.len() + 64
    }

    /// A hub route's message framed with its position.
    fn positioned(name: &str, position: Position, data: &str) -> SharedFrame {
        let text = super::protocol::message_at(name, position, data);
        Self::frame(OpCode::Text, text.as_bytes())
    }

    fn deliver(&self, topic: &Arc<str>, frame: SharedFrame) {
        self.publish_batch(&[Delivery {
            topic: Arc::clone(topic),
            key: 0,
            frame,
        }]);
    }

    /// Starts subscription `seq` of shard `shard` to hub topic `topic`
    /// where its stream is now, resuming from `since` if it can (with at
    /// most `limit` of replay): the marker goes into the shard's own
    /// inbox under the topic's lock, so it sits exactly between the
    /// messages at or before the position and the later ones.
    pub fn join(
        &self,
        shard: usize,
        topic: &str,
        seq: u64,
        since: Option<Position>,
        limit: ReplayLimit,
    ) -> Joined {
        self.streams.join(topic, since, limit, |topic, replay| {
            // Not charged to the inbox's bound: a marker is never refused
            // (its subscription would wait forever), and it holds only
            // references to frames the history keeps anyway. The shard
            // takes it in the turn it was made (the caller says so).
            let _ = self.shards[shard].tx.send(Inbound::Marker(Marker {
                topic: Arc::clone(topic),
                seq,
                replay,
            }));
        })
    }

    /// Ends a hub subscription that [`Hub::join`] started.
    pub fn leave(&self, topic: &str) {
        self.streams.leave(topic);
    }

    /// Publishes one message to `topic` on this node's shards.
    pub fn publish_local(&self, topic: &str, opcode: OpCode, payload: &[u8]) {
        self.publish_batch(&[Delivery {
            topic: topic.into(),
            key: 0,
            frame: Self::frame(opcode, payload),
        }]);
    }

    /// Publishes several messages, in order, with one wake-up per shard. A
    /// shard whose inbox cannot take the whole batch within its byte bound
    /// gets none of it, and the batch counts as dropped there.
    pub fn publish_batch(&self, batch: &[Delivery]) {
        if batch.is_empty() {
            return;
        }
        self.stats
            .published
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let cost: usize = batch.iter().map(Delivery::cost).sum();
        for inbox in &*self.shards {
            if !inbox.bytes.charge(cost) {
                self.stats
                    .inbox_dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                continue;
            }
            for d in batch {
                // The receiver lives as long as its shard; a send after
                // shutdown has nobody to tell.
                let _ = inbox.tx.send(Inbound::Message(d.clone()));
            }
            Self::sent(inbox);
        }
    }

    /// Hands an Engine.IO request or answer to the shard it is for, within
    /// that inbox's byte bound; given back when the inbox is full (or the
    /// shard does not exist).
    pub fn hand_off(&self, handoff: Handoff) -> Result<(), Handoff> {
        let Some(inbox) = self.shards.get(usize::from(handoff.shard())) else {
            return Err(handoff);
        };
        Self::send_within_bound(inbox, Inbound::EngineIo(handoff)).map_err(|item| {
            let Inbound::EngineIo(handoff) = item else {
                unreachable!("built above")
            };
            handoff
        })
    }

    /// Shards whose inbox has no room now for a delivery costing about
    /// `bytes` (its frame and topic): a publisher that can wait asks this
    /// first rather than have the message dropped there.
    pub fn full_inboxes(&self, bytes: usize) -> usize {
        let cost = bytes + DELIVERY_OVERHEAD;
        self.shards
            .iter()
            .filter(|i| i.bytes.held().saturating_add(cost) > i.bytes.limit())
            .count()
    }

    /// Shards this hub feeds.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Hands `control` to every shard, each within its inbox's byte
    /// bound; how many took it (the others send no reply).
    pub fn order(&self, control: &Control) -> usize {
        self.shards
            .iter()
            .filter(|inbox| {
                Self::send_within_bound(inbox, Inbound::Control(control.clone())).is_ok()
            })
            .count()
    }

    /// Sends `item` to `inbox` if its byte bound has room for it (else
    /// gives it back), and wakes its shard.
    fn send_within_bound(inbox: &ShardInbox, item: Inbound) -> Result<(), Inbound> {
        if !inbox.bytes.charge(item.cost()) {
            return Err(item);
        }
        // The receiver lives as long as its shard.
        let _ = inbox.tx.send(item);
        Self::sent(inbox);
        Ok(())
    }

    /// After sends to `inbox`: wakes its shard unless a wake-up is already
    /// pending.
    fn sent(inbox: &ShardInbox) {
        // Orders the sends before the load of `armed` below; it pairs with
        // the fence in `InboxReceiver::rearm` (see there).
        fence(Ordering::SeqCst);
        if !inbox.armed.swap(true, Ordering::AcqRel) {
            Self::wake(inbox);
        }
    }

    /// Hands a disconnect to the bridge for the other nodes; false when
    /// there is no bridge or it cannot take it now.
    pub fn relay_disconnect(&self, disconnect: &Disconnect) -> bool {
        self.relay.get().is_some_and(|relay| {
            relay
                .forward(Outgoing {
                    topic: String::new(),
                    rule: None,
                    text: disconnect.relay_text(),
                    order: true,
                    reply: None,
                })
                .is_ok()
        })
    }

    fn wake(inbox: &ShardInbox) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        unsafe {
            libc::write(
                inbox.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

impl InboxReceiver {
    /// The descriptor that becomes readable when messages arrive.
    pub fn wake_fd(&self) -> RawFd {
        self.hub.shards[self.index].wake.as_raw_fd()
    }

    /// Clears the wake-up (before draining, so a publish racing with the
    /// drain wakes the shard again rather than being missed).
    ///
    /// Why no wake-up is lost: a publisher sends to the queue, then (fence)
    /// swaps `armed` to true and writes the eventfd only if it was false;
    /// the shard stores `armed = false`, then (fence) drains the queue. Each
    /// side is a store followed by a load of the other side's location,
    /// which Release/Acquire alone lets the CPU reorder (x86's store buffer
    /// does): the shard could find the queue empty while the publisher still
    /// sees `armed == true`, and the message would wait for the next
    /// publish. With a SeqCst fence between the store and the load on both
    /// sides the fences are totally ordered: if the shard's comes first,
    /// the publisher's swap reads the shard's `false` (or a later value) and
    /// writes the eventfd; if the publisher's comes first, the shard's drain
    /// sees the message. Either way it is taken or a wake-up is pending.
    /// (std's channel happens to fence inside `try_recv` today; this does
    /// not lean on how it is built.)
    pub fn rearm(&self) {
        let inbox = &self.hub.shards[self.index];
        let mut counter = 0u64;
        // SAFETY: reads 8 bytes into a live u64 from our nonblocking eventfd.
        unsafe {
            libc::read(
                inbox.wake.as_raw_fd(),
                (&mut counter as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        inbox.armed.store(false, Ordering::Release);
        fence(Ordering::SeqCst);
    }

    /// Whether messages wait (or a publisher is queueing some).
    pub fn pending(&self) -> bool {
        self.hub.shards[self.index].bytes.held() > 0
    }

    /// Takes everything waiting, in the order it was queued.
    pub fn drain(&self, mut each: impl FnMut(Inbound)) {
        let inbox = &self.hub.shards[self.index];
        while let Ok(item) = self.rx.try_recv() {
            // Given back as each is taken, so publishers see room at once.
            inbox.bytes.give_back(item.cost());
            each(item);
        }
    }

    /// Which shard's inbox this is.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The hub this inbox belongs to.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_gets_every_message_in_order_with_one_wake_up() {
        let (hub, rxs) = Hub::new(2, DEFAULT_INBOX_BYTES).unwrap();
        let inboxes: Vec<InboxReceiver> = rxs
            .into_iter()
            .enumerate()
            .map(|(i, rx)| hub.receiver(i, rx))
            .collect();
        for i in 0..3u8 {
            hub.publish_local("t", OpCode::Text, &[b'a' + i]);
        }
        for inbox in &inboxes {
            let mut counter = 0u64;
            // One eventfd write for three publishes: the counter says 1.
            // SAFETY: reads 8 bytes into a live u64.
            let n = unsafe { libc::read(inbox.wake_fd(), (&mut counter as *mut u64).cast(), 8) };
            assert_eq!((n, counter), (8, 1));
            inbox.rearm();
            let mut got = Vec::new();
            inbox.drain(|d| got.push(message(d).frame[2]));
            assert_eq!(got, b"abc");
        }
        // The same frame bytes are shared, not copied per shard.
        hub.publish_local("t", OpCode::Text, b"x");
        let mut frames = Vec::new();
        for inbox in &inboxes {
            inbox.drain(|d| frames.push(message(d).frame));
        }
        assert!(Arc::ptr_eq(&frames[0], &frames[1]));
    }

    fn message(item: Inbound) -> Delivery {
        match item {
            Inbound::Message(d) => d,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn receivers(hub: &Arc<Hub>, rxs: Vec<Receiver<Inbound>>) -> Vec<InboxReceiver> {
        rxs.into_iter()
            .enumerate()
            .map(|(i, rx)| hub.receiver(i, rx))
            .collect()
    }

    #[test]
    fn a_full_inbox_refuses_and_counts_until_drained() {
        let frame = Hub::frame(OpCode::Binary, &[0; 1000]);
        let one = Delivery {
            topic: "t".into(),
            key: 0,
            frame,
        };
        // Room for three messages on either shard.
        let (hub, rxs) = Hub::new(2, 3 * one.cost() + 10).unwrap();
        let inboxes = receivers(&hub, rxs);
        for _ in 0..5 {
            hub.publish_batch(std::slice::from_ref(&one));
        }
        // Two refused by each of the two shards.
        assert_eq!(hub.stats.inbox_dropped.load(Ordering::Relaxed), 4);
        // A batch that does not fit whole is refused whole.
        let (small, _rx) = Hub::new(1, 2 * one.cost()).unwrap();
        small.publish_batch(&[one.clone(), one.clone(), one.clone()]);
        assert_eq!(small.stats.inbox_dropped.load(Ordering::Relaxed), 3);
        let mut got = 0;
        inboxes[0].drain(|_| got += 1);
        assert_eq!(got, 3);
        assert_eq!(hub.shards[0].bytes.held(), 0);
        // The drained shard takes messages again; the other is still full.
        hub.publish_batch(std::slice::from_ref(&one));
        assert_eq!(hub.stats.inbox_dropped.load(Ordering::Relaxed), 5);
        inboxes[0].drain(|_| got += 1);
        assert_eq!(got, 4);
    }

    /// Whether `fd` became readable within `ms` milliseconds.
    fn readable_within(fd: RawFd, ms: i32) -> bool {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: polls one live pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n >= 0 {
                return n == 1;
            }
            assert_eq!(
                std::io::Error::last_os_error().kind(),
                std::io::ErrorKind::Interrupted
            );
        }
    }

    /// Several publishers race one shard that sleeps in poll(2) on its
    /// eventfd between drains, as a shard does, in rounds: each publisher
    /// sends a burst, then waits for the shard to have taken every message
    /// of the round. A lost wake-up leaves messages queued with no eventfd
    /// write to come (the next publish would rescue them, but nobody
    /// publishes until the round is taken): the shard's poll times out
    /// while messages wait, which fails the test.
    #[test]
    fn no_wake_up_is_lost_between_publishers_and_a_draining_shard() {
        const PUBLISHERS: usize = 3;
        const BURST: usize = 8;
        const ROUNDS: usize = 3_000;
        let (hub, rxs) = Hub::new(1, usize::MAX).unwrap();
        let inbox = receivers(&hub, rxs).pop().unwrap();
        let round_taken = Arc::new(std::sync::Barrier::new(PUBLISHERS + 1));
        let started = std::time::Instant::now();
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let (hub, round_taken) = (Arc::clone(&hub), Arc::clone(&round_taken));
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        for _ in 0..BURST {
                            hub.publish_local("t", OpCode::Binary, &[p as u8]);
                        }
                        round_taken.wait();
                    }
                })
            })
            .collect();
        let (mut taken, mut wake_ups) = (0, 0);
        for round in 1..=ROUNDS {
            while taken < round * PUBLISHERS * BURST {
                if !readable_within(inbox.wake_fd(), 5_000) {
                    let mut waiting = 0;
                    inbox.drain(|_| waiting += 1);
                    panic!(
                        "lost wake-up in round {round}: {waiting} message(s) were queued \
                         with none pending ({taken} taken, {wake_ups} wake-ups)"
                    );
                }
                wake_ups += 1;
                inbox.rearm();
                inbox.drain(|_| taken += 1);
            }
            round_taken.wait();
        }
        for p in publishers {
            p.join().unwrap();
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        eprintln!("{taken} messages over {wake_ups} wake-ups");
    }
}
