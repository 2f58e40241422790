//! The Redis bridge: hub topic `T` is Redis channel `PREFIX T`; its
//! position lives in hash `PREFIX m:T` (`epoch`, `offset` and the history
//! rule) and its history in list `PREFIX h:T`.
//!
//! Two threads, neither ever blocks a shard:
//! - the relay takes local publishes from a queue bounded in messages and
//!   bytes and sends them, pipelined, many per round trip. A hub route's
//!   publish runs [`PUBLISH_SCRIPT`], which gives it the topic's next
//!   offset, keeps it in the history and PUBLISHes it with its position,
//!   all in one atomic step: every node sees one order per topic. An
//!   embedder's text is PUBLISHed as it is, behind the node's id.
//! - the listener PSUBSCRIBEs to `PREFIX*`, then loads every topic's
//!   position and history from Redis ([`LOAD_SCRIPT`]) into this node's
//!   streams, and from then on hands each positioned message (this node's
//!   own too) to the hub, which delivers it to local subscribers and keeps
//!   it in step with Redis. While it is connected and loaded, this node can
//!   answer a resume from a position any node gave.
//!
//! The epoch of a topic is set once per life of its hash, from a fresh
//! random candidate each publish passes: a Redis restarted without its
//! data (or a topic expired) makes a new epoch, so an old position answers
//! "epoch changed" and is never replayed from the wrong history.
//!
//! When Redis goes away both threads reconnect with jittered exponential
//! backoff, logging each failure. Meanwhile the hub delivers its route's
//! publishes on this node alone, in an epoch of its own, and answers
//! resumes "unavailable"; an embedder's text is counted as lost for the
//! other nodes (local subscribers got it at once).

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::BridgeStats;
use crate::admission::jitter::Jitter;
use crate::buf::budget::Budget;
use crate::protocol::frame::OpCode;
use crate::pubsub::hub::{Delivery, Hub};
use crate::pubsub::relay::{Outgoing, Relay};
use crate::pubsub::streams::{epoch_hex, new_epoch, HistoryRule, Position};

pub use crate::config::bridge::RedisConfig;

/// Local publishes waiting for the relay; beyond it they are handed back.
const RELAY_QUEUE: usize = 64 * 1024;
/// Payload bytes waiting for the relay; beyond it publishes are handed
/// back. The queue fills whenever Redis is slow to answer; the bound only
/// needs to ride out a slow round trip at full publish rate, and 64 MiB
/// holds four of the largest messages (16 MiB).
const RELAY_BYTES: usize = 64 << 20;
/// Most messages one pipelined round trip carries.
const PIPELINE: usize = 1024;
/// How long the relay waits for Redis to take or answer a batch.
const RELAY_TIMEOUT: Duration = Duration::from_secs(5);
/// A link silent for longer is asked whether it is alive before a batch
/// goes out on it.
const IDLE_CHECK: Duration = Duration::from_millis(250);
/// The longest start-up waits for the listener's first load from Redis.
const FIRST_LOAD: Duration = Duration::from_secs(5);
/// How long a topic's position and history stay in Redis after its last
/// publish; a resume from a position older than that gets "epoch changed".
const KEEP_FOR_MS: u64 = 24 * 3600 * 1000;

/// Positions and keeps one hub publish and PUBLISHes it with its position.
/// KEYS: the topic's hash and list; ARGV: a candidate epoch, the history
/// size and age (ms, 0: none), the data, the channel, the keys' expiry,
/// and 1 for a latest-value topic (which keeps at least its last message).
/// The message is `p EPOCH OFFSET SIZE AGE LATEST\nDATA`; a kept entry is
/// `OFFSET MS DATA`, with the time Redis kept it. It returns the
/// position, `{EPOCH, OFFSET}`.
pub const PUBLISH_SCRIPT: &str = r"
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
redis.call('HSET', KEYS[1], 'size', ARGV[2], 'ttl', ARGV[3], 'latest', ARGV[7])
local size = tonumber(ARGV[2])
if ARGV[7] == '1' and size < 1 then
  size = 1
end
if size > 0 then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('RPUSH', KEYS[2], string.format('%d %d ', offset, ms) .. ARGV[4])
  redis.call('LTRIM', KEYS[2], -size, -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
else
  redis.call('DEL', KEYS[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PUBLISH', ARGV[5],
  string.format('p %s %d %s %s %s\n', epoch, offset, ARGV[2], ARGV[3], ARGV[7]) .. ARGV[4])
return {epoch, offset}
";

/// Reads one topic's position, rule and history, and Redis's clock, in
/// one atomic step. KEYS: the topic's hash and list.
pub const LOAD_SCRIPT: &str = r"
local m = redis.call('HMGET', KEYS[1], 'epoch', 'offset', 'size', 'ttl', 'latest')
local t = redis.call('TIME')
return {m[1] or '', m[2] or '0', m[3] or '0', m[4] or '0', m[5] or '0', t[1], t[2],
  redis.call('LRANGE', KEYS[2], 0, -1)}
";

/// Where a topic lives in Redis.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn channel(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }

    fn meta(&self, topic: &str) -> String {
        format!("{}m:{topic}", self.prefix)
    }

    fn history(&self, topic: &str) -> String {
        format!("{}h:{topic}", self.prefix)
    }

    /// The prefix as a glob that matches only itself.
    fn glob(&self) -> String {
        let mut out = String::with_capacity(self.prefix.len() + 4);
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }
}

/// The local end: hand it publishes to relay.
#[derive(Debug)]
pub struct RedisRelay {
    tx: SyncSender<Outgoing>,
    /// Bytes in the relay queue: charged by [`Relay::forward`], given back
    /// once the relay thread is done with a message (sent or handed back),
    /// so a batch in flight to a slow Redis counts too.
    queued: Arc<Budget>,
    stats: Arc<BridgeStats>,
}

impl RedisRelay {
    /// What cannot be queued: a positioned publish goes back to the hub,
    /// an embedder's text is lost for the other nodes.
    fn refuse(&self, message: Outgoing) -> Result<(), Outgoing> {
        if message.rule.is_some() {
            self.stats.alone.fetch_add(1, Ordering::Relaxed);
            return Err(message);
        }
        self.stats.lost.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Relay for RedisRelay {
    fn forward(&self, message: Outgoing) -> Result<(), Outgoing> {
        if message.rule.is_some() && self.stats.relaying.load(Ordering::Relaxed) == 0 {
            // Redis is away: waiting for it would hold the message back
            // from local subscribers for as long as the outage lasts.
            self.stats.alone.fetch_add(1, Ordering::Relaxed);
            return Err(message);
        }
        let cost = message.cost();
        if !self.queued.charge(cost) {
            return self.refuse(message);
        }
        match self.tx.try_send(message) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) => {
                self.queued.give_back(cost);
                self.refuse(m)
            }
        }
    }

    fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.queued.held() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    fn render(&self, out: &mut String) {
        self.stats.render(out);
    }
}

/// The relay thread's end of the queue.
struct Pending {
    rx: Receiver<Outgoing>,
    queued: Arc<Budget>,
}

impl Pending {
    /// Gives back the bytes of messages that are sent or handed back.
    fn done(&self, messages: &[Outgoing]) {
        self.queued
            .give_back(messages.iter().map(Outgoing::cost).sum());
    }
}

/// Starts both threads and waits (at most 5 s) for the listener to have
/// loaded every stream from Redis or failed to; returns the relay handle.
pub fn start(config: &RedisConfig, hub: &Arc<Hub>) -> Result<RedisRelay, String> {
    let stats = Arc::new(BridgeStats::default());
    let client = redis::Client::open(config.url.as_str())
        .map_err(|e| format!("--redis-url {}: {e}", config.url))?;
    let node = format!(
        "{:016x}",
        Jitter::new(std::process::id().into()).below(u64::MAX)
    );
    let keys = Keys {
        prefix: config.prefix.clone(),
    };
    // Behind the store until the listener has loaded it: set before the
    // listener starts, which may get there first.
    hub.streams.set_shared(false);
    let (tx, rx) = mpsc::sync_channel(RELAY_QUEUE);
    let queued = Arc::new(Budget::new(RELAY_BYTES));
    let pending = Pending {
        rx,
        queued: Arc::clone(&queued),
    };
    {
        let (client, keys, node, hub, stats) = (
            client.clone(),
            keys.clone(),
            node.clone(),
            Arc::clone(hub),
            Arc::clone(&stats),
        );
        std::thread::Builder::new()
            .name("surge-bridge-out".into())
            .spawn(move || relay(&client, &keys, &node, &pending, &hub, &stats))
            .map_err(|e| e.to_string())?;
    }
    let (first_tx, first_rx) = mpsc::sync_channel(1);
    {
        let (hub, stats) = (Arc::clone(hub), Arc::clone(&stats));
        std::thread::Builder::new()
            .name("surge-bridge-in".into())
            .spawn(move || listen(&client, &keys, &node, &hub, &stats, first_tx))
            .map_err(|e| e.to_string())?;
    }
    // A node that took connections before it had loaded its streams would
    // answer every resume in them "unavailable": the first attempt is
    // waited for (bounded, for a Redis that hangs), while clients that
    // connect meanwhile wait in the listen backlog.
    if first_rx.recv_timeout(FIRST_LOAD).is_err() {
        tracing::warn!(
            "redis bridge: not loaded within {} s; serving, and resuming once it is",
            FIRST_LOAD.as_secs()
        );
    }
    Ok(RedisRelay { tx, queued, stats })
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

fn ttl_ms(rule: HistoryRule) -> u128 {
    rule.ttl.map_or(0, |t| t.as_millis().max(1))
}

fn relay(
    client: &redis::Client,
    keys: &Keys,
    node: &str,
    queue: &Pending,
    hub: &Hub,
    stats: &BridgeStats,
) {
    let mut backoff = Backoff::new();
    let mut failed_before = false;
    // A batch taken from the queue whose link turned out dead before it
    // was sent: it goes first on the next link.
    let mut carried: Vec<Outgoing> = Vec::new();
    loop {
        let connected = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .and_then(|mut conn| {
                // A Redis that hangs: its batch is delivered here alone
                // rather than held from local subscribers without end.
                conn.set_read_timeout(Some(RELAY_TIMEOUT))?;
                conn.set_write_timeout(Some(RELAY_TIMEOUT))?;
                let sha: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(PUBLISH_SCRIPT)
                    .query(&mut conn)?;
                Ok((conn, sha))
            });
        let (mut conn, sha) = match connected {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("redis bridge (publish): cannot connect: {e}; retrying");
                failed_before = true;
                hand_back(&carried, hub, stats);
                queue.done(&carried);
                carried.clear();
                hand_back_pending(queue, hub, stats);
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
        let mut last_answer = Instant::now();
        loop {
            let batch = if carried.is_empty() {
                let first = match queue.rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        // An idle link: check it is still there.
                        if redis::cmd("PING").query::<String>(&mut conn).is_err() {
                            break;
                        }
                        last_answer = Instant::now();
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
                batch
            } else {
                std::mem::take(&mut carried)
            };
            // A link that said nothing for a while may be dead (a Redis
            // restarted meanwhile): asked first, so the batch is not sent
            // into it and lost, but carried to a fresh one.
            if last_answer.elapsed() > IDLE_CHECK
                && redis::cmd("PING").query::<String>(&mut conn).is_err()
            {
                carried = batch;
                break;
            }
            let mut pipe = redis::pipe();
            for m in &batch {
                let channel = keys.channel(&m.topic);
                if m.order {
                    // `o NODE`: no publish's header can take this form
                    // (`p ...` or a node id alone), so no topic name can
                    // forge an order.
                    let body = format!("o {node}\n{}", m.text);
                    pipe.cmd("PUBLISH").arg(channel).arg(body).ignore();
                } else if let Some(rule) = m.rule {
                    pipe.cmd("EVALSHA")
                        .arg(&sha)
                        .arg(2)
                        .arg(keys.meta(&m.topic))
                        .arg(keys.history(&m.topic))
                        .arg(epoch_hex(new_epoch()))
                        .arg(rule.size)
                        .arg(ttl_ms(rule).to_string())
                        .arg(&m.text)
                        .arg(channel)
                        .arg(KEEP_FOR_MS)
                        .arg(u8::from(rule.latest));
                    // Only a publish someone waits on is answered.
                    if m.reply.is_none() {
                        pipe.ignore();
                    }
                } else {
                    let mut body = Vec::with_capacity(node.len() + 1 + m.text.len());
                    body.extend_from_slice(node.as_bytes());
                    body.push(b'\n');
                    body.extend_from_slice(m.text.as_bytes());
                    pipe.cmd("PUBLISH").arg(channel).arg(body).ignore();
                }
            }
            let n = batch.len() as u64;
            let sent = pipe.query::<Vec<(String, u64)>>(&mut conn);
            // The batch and its encoded copy held their queue bytes until
            // now, so a slow Redis cannot let more pile up behind them.
            drop(pipe);
            let positions = match sent {
                Ok(positions) => positions,
                Err(e) => {
                    // Part of it may have been carried out: sent again, that
                    // part would be published twice.
                    stats.relaying.store(0, Ordering::Relaxed);
                    tracing::warn!(
                        "redis bridge (publish): {e}; {n} message(s) delivered here alone"
                    );
                    hand_back(&batch, hub, stats);
                    queue.done(&batch);
                    break;
                }
            };
            last_answer = Instant::now();
            tell_positions(&batch, positions);
            queue.done(&batch);
            stats.sent.fetch_add(n, Ordering::Relaxed);
        }
        failed_before = true;
        stats.relaying.store(0, Ordering::Relaxed);
        backoff.wait();
    }
}

/// Tells the publishes that wait for their positions what Redis
/// answered, in order (only theirs are answered).
fn tell_positions(batch: &[Outgoing], positions: Vec<(String, u64)>) {
    let waiting = batch.iter().filter_map(|m| m.reply.as_ref());
    for (reply, (epoch, offset)) in waiting.zip(positions) {
        if let Ok(epoch) = u64::from_str_radix(&epoch, 16) {
            let _ = reply.send(Position { epoch, offset });
        }
    }
}

/// What could not reach Redis: a hub route's publish is delivered on this
/// node alone (part of a failed batch may have reached Redis; the node's
/// own epoch keeps the two apart), an embedder's text is lost for the
/// other nodes.
fn hand_back(batch: &[Outgoing], hub: &Hub, stats: &BridgeStats) {
    for m in batch {
        match m.rule {
            Some(rule) => {
                stats.alone.fetch_add(1, Ordering::Relaxed);
                let position = hub.publish_alone(&m.topic, &m.text, rule);
                if let Some(reply) = &m.reply {
                    let _ = reply.send(position);
                }
            }
            None => {
                stats.lost.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// While Redis is unreachable, queued publishes cannot be relayed.
fn hand_back_pending(queue: &Pending, hub: &Hub, stats: &BridgeStats) {
    while let Ok(m) = queue.rx.try_recv() {
        let one = std::slice::from_ref(&m);
        hand_back(one, hub, stats);
        queue.done(one);
    }
}

fn interrupted(e: &redis::RedisError) -> bool {
    std::error::Error::source(e)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::Interrupted)
}

/// Delivers what Redis positions, loading every stream at each connect;
/// `first` hears when the first attempt has loaded or failed.
fn listen(
    client: &redis::Client,
    keys: &Keys,
    node: &str,
    hub: &Hub,
    stats: &BridgeStats,
    first: SyncSender<()>,
) {
    let mut first = Some(first);
    let mut backoff = Backoff::new();
    let mut failed_before = false;
    let pattern = format!("{}*", keys.glob());
    loop {
        let result = (|| -> redis::RedisResult<()> {
            let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
            let mut loader = client.get_connection_with_timeout(Duration::from_secs(2))?;
            loader.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut pubsub = conn.as_pubsub();
            // Subscribed first, loaded second: whatever is published in
            // between is both loaded and waiting in the subscription, and
            // the streams skip what they already hold.
            pubsub.psubscribe(&pattern)?;
            pubsub.set_read_timeout(Some(Duration::from_secs(1)))?;
            load_all(&mut loader, keys, hub, stats)?;
            drop(loader);
            hub.streams.set_shared(true);
            if let Some(first) = first.take() {
                let _ = first.try_send(());
            }
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
                let Some(topic) = channel.strip_prefix(keys.prefix.as_str()) else {
                    continue;
                };
                deliver(topic, msg.get_payload_bytes(), node, hub, stats);
            }
        })();
        // From here until it is loaded again this node may miss messages:
        // no resume can be proven.
        hub.streams.set_shared(false);
        if let Err(e) = result {
            tracing::warn!("redis bridge (subscribe): {e}; reconnecting");
        }
        if let Some(first) = first.take() {
            let _ = first.try_send(());
        }
        stats.listening.store(0, Ordering::Relaxed);
        failed_before = true;
        backoff.wait();
    }
}

/// The longest Socket.IO room broadcast taken from another node, as
/// relayed text: a `max-payload` of attachments in base64, and more.
const MAX_ROOM_RELAY: usize = 16 << 20;

/// Hands one message from Redis to the hub.
fn deliver(topic: &str, body: &[u8], node: &str, hub: &Hub, stats: &BridgeStats) {
    let Some(nl) = body.iter().position(|&b| b == b'\n') else {
        return;
    };
    let (head, rest) = (&body[..nl], &body[nl + 1..]);
    if let Some(from) = head.strip_prefix(b"o ") {
        // This node's own order was carried out here when it was given.
        if from != node.as_bytes() {
            order(rest, hub, stats);
        }
        return;
    }
    if let Some(header) = head.strip_prefix(b"p ") {
        let Some((position, rule)) = parse_header(header) else {
            tracing::debug!("redis bridge: a positioned message without a valid header");
            return;
        };
        let Ok(data) = std::str::from_utf8(rest) else {
            return;
        };
        stats.received.fetch_add(1, Ordering::Relaxed);
        hub.publish_shared(topic, position, rule, data);
        return;
    }
    // An embedder's text: local subscribers got it when it was published.
    if head == node.as_bytes() {
        return;
    }
    stats.received.fetch_add(1, Ordering::Relaxed);
    // A Socket.IO room broadcast: its frames made again, once, here.
    if topic.starts_with(crate::socketio::ROOM_TOPIC_PREFIX) {
        if let Some(frames) = crate::socketio::broadcast::frames_from_relay(rest, MAX_ROOM_RELAY) {
            hub.publish_batch(&[Delivery {
                topic: topic.into(),
                key: 0,
                frame: frames.into(),
            }]);
        }
        return;
    }
    // Into every shard's inbox, within its byte bound like any local
    // publish: a flood from other nodes is refused and counted there, not
    // queued without limit.
    hub.publish_local(&crate::pubsub::hub_topic(topic), OpCode::Text, rest);
}

/// Another node's server API order (a disconnect), for every shard here.
fn order(text: &[u8], hub: &Hub, stats: &BridgeStats) {
    use crate::pubsub::control::{Control, Disconnect};
    let Some(disconnect) = Disconnect::from_relay(text) else {
        tracing::debug!("redis bridge: an order that is not a valid disconnect");
        return;
    };
    stats.received.fetch_add(1, Ordering::Relaxed);
    let took = hub.order(&Control::Disconnect(Arc::new(disconnect), None));
    if took < hub.shards() {
        tracing::warn!(
            "redis bridge: a disconnect from another node reached {took} of {} shards \
             (inboxes full)",
            hub.shards()
        );
    }
}

/// `EPOCH OFFSET SIZE AGE LATEST` of a positioned message.
fn parse_header(header: &[u8]) -> Option<(Position, HistoryRule)> {
    let text = std::str::from_utf8(header).ok()?;
    let mut fields = text.split(' ');
    let epoch = u64::from_str_radix(fields.next()?, 16).ok()?;
    let offset = fields.next()?.parse().ok()?;
    let rule = parse_rule(fields.next()?, fields.next()?, fields.next()?)?;
    Some((Position { epoch, offset }, rule))
}

fn parse_rule(size: &str, ttl_ms: &str, latest: &str) -> Option<HistoryRule> {
    let size = size.parse().ok()?;
    let ttl_ms: u64 = ttl_ms.parse().ok()?;
    let latest = match latest {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    Some(HistoryRule {
        size,
        ttl: (ttl_ms > 0).then(|| Duration::from_millis(ttl_ms)),
        latest,
    })
}

/// What [`LOAD_SCRIPT`] answers.
type Loaded = (String, u64, String, String, String, u64, u64, Vec<Vec<u8>>);

/// Loads every topic's position and history from Redis into the hub.
fn load_all(
    conn: &mut redis::Connection,
    keys: &Keys,
    hub: &Hub,
    stats: &BridgeStats,
) -> redis::RedisResult<()> {
    use redis::Commands;
    hub.streams.unshare_all();
    let meta_prefix = keys.meta("");
    let metas: Vec<String> = conn
        .scan_match::<_, String>(format!("{}m:*", keys.glob()))?
        .collect();
    for meta in &metas {
        let Some(topic) = meta.strip_prefix(meta_prefix.as_str()) else {
            continue;
        };
        // Rare (once per topic per connect): EVAL rather than a SHA to keep.
        let (epoch, offset, size, ttl, latest, secs, micros, kept): Loaded = redis::cmd("EVAL")
            .arg(LOAD_SCRIPT)
            .arg(2)
            .arg(meta)
            .arg(keys.history(topic))
            .query(conn)?;
        // Expired since the scan.
        let Ok(epoch) = u64::from_str_radix(&epoch, 16) else {
            continue;
        };
        let Some(rule) = parse_rule(&size, &ttl, &latest) else {
            continue;
        };
        let now_ms = secs * 1000 + micros / 1000;
        let kept = kept
            .iter()
            .filter_map(|entry| parse_entry(entry, now_ms))
            .collect();
        hub.load_shared(topic, Position { epoch, offset }, rule, kept);
        stats.loaded.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// `OFFSET MS DATA`: the offset, its age now and the data.
fn parse_entry(entry: &[u8], now_ms: u64) -> Option<(u64, Duration, String)> {
    let text = std::str::from_utf8(entry).ok()?;
    let (offset, rest) = text.split_once(' ')?;
    let (ms, data) = rest.split_once(' ')?;
    let ms: u64 = ms.parse().ok()?;
    let age = Duration::from_millis(now_ms.saturating_sub(ms));
    Some((offset.parse().ok()?, age, data.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_entries_and_globs_parse_as_written() {
        let (p, rule) = parse_header(b"00000000000000ab 57 100 2500 0").unwrap();
        assert_eq!((p.epoch, p.offset, rule.size), (0xab, 57, 100));
        assert_eq!(rule.ttl, Some(Duration::from_millis(2500)));
        assert!(parse_header(b"zz 1 0 0 0").is_none());
        assert_eq!(parse_rule("3", "0", "0").unwrap().ttl, None);
        let (_, latest) = parse_header(b"00000000000000ab 57 0 0 1").unwrap();
        assert!(latest.latest && !rule.latest);
        assert!(parse_rule("3", "0", "yes").is_none());
        let (offset, age, data) = parse_entry(b"7 1000 {\"a\": 1}", 1500).unwrap();
        assert_eq!(
            (offset, age, data.as_str()),
            (7, Duration::from_millis(500), "{\"a\": 1}")
        );
        let keys = Keys {
            prefix: "a*b[".into(),
        };
        assert_eq!(keys.glob(), "a\\*b\\[");
        assert_eq!(keys.meta("t"), "a*b[m:t");
    }
}
