//! The Redis bridge: hub topic `T` is Redis channel `PREFIX T`.
//!
//! Two threads, neither ever blocks a shard:
//! - the relay takes local publishes from a queue bounded in messages and
//!   bytes and PUBLISHes them, pipelined, many per round trip;
//! - the listener PSUBSCRIBEs to `PREFIX*` and hands what other nodes
//!   published to the hub, which delivers it to local subscribers.
//!
//! Each relayed message starts with the publishing node's id and a newline,
//! so a node skips its own messages when Redis echoes them back (local
//! subscribers got them at once, Redis or not). When Redis goes away both
//! threads reconnect with jittered exponential backoff, logging each
//! failure; local publishes meanwhile are counted as lost, since Redis
//! pub/sub keeps nothing for a subscriber that is not there.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use super::BridgeStats;
use crate::admission::jitter::Jitter;
use crate::buf::budget::Budget;
use crate::protocol::frame::OpCode;
use crate::pubsub::hub::Hub;

pub use crate::config::bridge::RedisConfig;

/// Local publishes waiting for the relay; beyond it they are lost.
const RELAY_QUEUE: usize = 64 * 1024;
/// Payload bytes waiting for the relay; beyond it publishes are lost. The
/// queue fills whenever Redis is away (for up to 5 s of backoff between
/// attempts, and for as long as a connected Redis is slow to answer), and
/// Redis pub/sub would not keep those messages for anyone anyway: the bound
/// only needs to ride out a slow round trip at full publish rate, and 64
/// MiB holds four of the largest messages (16 MiB).
const RELAY_BYTES: usize = 64 << 20;
/// Most messages one pipelined round trip carries.
const PIPELINE: usize = 1024;

/// A local publish on its way to Redis.
#[derive(Debug)]
pub struct Outgoing {
    /// The hub topic, without namespace.
    pub topic: String,
    /// The message as subscribers receive it.
    pub payload: Vec<u8>,
}

impl Outgoing {
    /// What it holds while queued, in bytes.
    fn cost(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}

/// The local end: hand it publishes to relay.
#[derive(Debug)]
pub struct Relay {
    tx: SyncSender<Outgoing>,
    /// Bytes in the relay queue: charged by [`Relay::forward`], given back
    /// once the relay thread is done with a message (sent or dropped), so a
    /// batch in flight to a slow Redis counts too.
    queued: Arc<Budget>,
    stats: Arc<BridgeStats>,
}

impl Relay {
    /// Queues a local publish for the other nodes; never blocks. Past the
    /// queue's message or byte bound it is lost (and counted).
    pub fn forward(&self, message: Outgoing) {
        let cost = message.cost();
        if !self.queued.charge(cost) {
            self.stats.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.tx.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued.give_back(cost);
                self.stats.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The relay thread's end of the queue.
struct Pending {
    rx: Receiver<Outgoing>,
    queued: Arc<Budget>,
}

impl Pending {
    /// Gives back the bytes of messages that are sent or dropped.
    fn done(&self, messages: &[Outgoing]) {
        self.queued
            .give_back(messages.iter().map(Outgoing::cost).sum());
    }
}

/// Starts both threads; returns the relay handle.
pub fn start(config: RedisConfig, hub: Arc<Hub>, stats: Arc<BridgeStats>) -> Result<Relay, String> {
    let client = redis::Client::open(config.url.as_str())
        .map_err(|e| format!("--redis-url {}: {e}", config.url))?;
    let node = format!(
        "{:016x}",
        Jitter::new(std::process::id().into()).below(u64::MAX)
    );
    let (tx, rx) = mpsc::sync_channel(RELAY_QUEUE);
    let queued = Arc::new(Budget::new(RELAY_BYTES));
    let pending = Pending {
        rx,
        queued: Arc::clone(&queued),
    };
    {
        let (client, config, node, stats) = (
            client.clone(),
            config.clone(),
            node.clone(),
            Arc::clone(&stats),
        );
        std::thread::Builder::new()
            .name("surge-bridge-out".into())
            .spawn(move || relay(&client, &config, &node, &pending, &stats))
            .map_err(|e| e.to_string())?;
    }
    {
        let stats = Arc::clone(&stats);
        std::thread::Builder::new()
            .name("surge-bridge-in".into())
            .spawn(move || listen(&client, &config, &node, &hub, &stats))
            .map_err(|e| e.to_string())?;
    }
    Ok(Relay { tx, queued, stats })
}

/// Waits before the next attempt: 100 ms doubling to 5 s, jittered.
struct Backoff {
    next: Duration,
    jitter: Jitter,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: Duration::from_millis(100),
            jitter: Jitter::new(3),
        }
    }

    fn wait(&mut self) {
        std::thread::sleep(self.jitter.around(self.next));
        self.next = (self.next * 2).min(Duration::from_secs(5));
    }

    fn reset(&mut self) {
        self.next = Duration::from_millis(100);
    }
}

fn relay(
    client: &redis::Client,
    config: &RedisConfig,
    node: &str,
    queue: &Pending,
    stats: &BridgeStats,
) {
    let mut backoff = Backoff::new();
    let mut failed_before = false;
    loop {
        let mut conn = match client.get_connection_with_timeout(Duration::from_secs(2)) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("redis bridge (publish): cannot connect: {e}; retrying");
                failed_before = true;
                drop_pending(queue, stats);
                backoff.wait();
                continue;
            }
        };
        if failed_before {
            stats.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!("redis bridge (publish): reconnected");
        }
        stats.relaying.store(1, Ordering::Relaxed);
        backoff.reset();
        loop {
            let first = match queue.rx.recv_timeout(Duration::from_secs(1)) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    // An idle link: check it is still there.
                    if redis::cmd("PING").query::<String>(&mut conn).is_err() {
                        break;
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            while batch.len() < PIPELINE {
                match queue.rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let mut pipe = redis::pipe();
            for m in &batch {
                let mut body = Vec::with_capacity(node.len() + 1 + m.payload.len());
                body.extend_from_slice(node.as_bytes());
                body.push(b'\n');
                body.extend_from_slice(&m.payload);
                pipe.cmd("PUBLISH")
                    .arg(format!("{}{}", config.prefix, m.topic))
                    .arg(body)
                    .ignore();
            }
            let n = batch.len() as u64;
            let sent = pipe.query::<()>(&mut conn);
            // The batch and its encoded copy held their queue bytes until
            // now, so a slow Redis cannot let more pile up behind them.
            drop(pipe);
            queue.done(&batch);
            drop(batch);
            if let Err(e) = sent {
                tracing::warn!("redis bridge (publish): {e}; {n} message(s) lost");
                stats.lost.fetch_add(n, Ordering::Relaxed);
                break;
            }
            stats.sent.fetch_add(n, Ordering::Relaxed);
        }
        failed_before = true;
        stats.relaying.store(0, Ordering::Relaxed);
        backoff.wait();
    }
}

fn interrupted(e: &redis::RedisError) -> bool {
    std::error::Error::source(e)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::Interrupted)
}

/// While Redis is unreachable, queued publishes cannot be relayed.
fn drop_pending(queue: &Pending, stats: &BridgeStats) {
    let mut n = 0;
    while let Ok(m) = queue.rx.try_recv() {
        queue.done(std::slice::from_ref(&m));
        n += 1;
    }
    stats.lost.fetch_add(n, Ordering::Relaxed);
}

fn listen(
    client: &redis::Client,
    config: &RedisConfig,
    node: &str,
    hub: &Hub,
    stats: &BridgeStats,
) {
    let mut backoff = Backoff::new();
    let mut failed_before = false;
    let pattern = format!("{}*", config.prefix);
    loop {
        let result = (|| -> redis::RedisResult<()> {
            let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
            let mut pubsub = conn.as_pubsub();
            pubsub.psubscribe(&pattern)?;
            pubsub.set_read_timeout(Some(Duration::from_secs(1)))?;
            if failed_before {
                stats.reconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!("redis bridge (subscribe): reconnected");
            }
            stats.listening.store(1, Ordering::Relaxed);
            backoff.reset();
            loop {
                let msg = match pubsub.get_message() {
                    Ok(m) => m,
                    // A stopped and resumed process (SIGSTOP, a cgroup
                    // freeze) sees EINTR from a read with a timeout; the
                    // link is fine, so it is no reason to reconnect.
                    Err(e) if e.is_timeout() || interrupted(&e) => continue,
                    Err(e) => return Err(e),
                };
                let channel = msg.get_channel_name();
                let Some(topic) = channel.strip_prefix(config.prefix.as_str()) else {
                    continue;
                };
                let body = msg.get_payload_bytes();
                let Some(nl) = body.iter().position(|&b| b == b'\n') else {
                    continue;
                };
                if &body[..nl] == node.as_bytes() {
                    continue;
                }
                stats.received.fetch_add(1, Ordering::Relaxed);
                // Into every shard's inbox, within its byte bound like any
                // local publish: a flood from other nodes is refused and
                // counted there, not queued without limit.
                hub.publish_local(
                    &crate::pubsub::hub_topic(topic),
                    OpCode::Text,
                    &body[nl + 1..],
                );
            }
        })();
        if let Err(e) = result {
            tracing::warn!("redis bridge (subscribe): {e}; reconnecting");
        }
        stats.listening.store(0, Ordering::Relaxed);
        failed_before = true;
        backoff.wait();
    }
}
