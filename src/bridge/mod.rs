//! Bridges between surge nodes. With several nodes behind a load balancer,
//! a message published on one must reach subscribers on all of them, and a
//! client that was on one must be able to resume on another: the Redis
//! bridge positions hub publishes in Redis, keeps their history there and
//! relays them through Redis pub/sub.

pub mod redis;

use std::sync::atomic::{AtomicU64, Ordering};

/// Bridge counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct BridgeStats {
    /// 1 while the subscribing connection is up.
    pub listening: AtomicU64,
    /// 1 while the publishing connection is up.
    pub relaying: AtomicU64,
    /// Connections re-established after a failure.
    pub reconnects: AtomicU64,
    /// Local publishes relayed to Redis.
    pub sent: AtomicU64,
    /// Messages from other nodes delivered here.
    pub received: AtomicU64,
    /// Embedder publishes that could not be relayed (Redis down, or the
    /// relay queue full): other nodes never saw them.
    pub lost: AtomicU64,
    /// Hub-route publishes Redis could not position (down, or the relay
    /// queue full), delivered on this node alone in an epoch of its own.
    pub alone: AtomicU64,
    /// Topics whose position and history were loaded from Redis.
    pub loaded: AtomicU64,
}

impl BridgeStats {
    /// 1 when both directions are connected.
    pub fn connected(&self) -> u64 {
        self.listening.load(Ordering::Relaxed) & self.relaying.load(Ordering::Relaxed)
    }

    /// The Prometheus families.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, kind, help, value) in [
            (
                "surge_bridge_connected",
                "gauge",
                "1 while both Redis connections are up.",
                self.connected(),
            ),
            (
                "surge_bridge_reconnects_total",
                "counter",
                "Redis connections re-established.",
                get(&self.reconnects),
            ),
            (
                "surge_bridge_sent_total",
                "counter",
                "Local publishes relayed to Redis.",
                get(&self.sent),
            ),
            (
                "surge_bridge_received_total",
                "counter",
                "Messages from other nodes delivered here.",
                get(&self.received),
            ),
            (
                "surge_bridge_lost_total",
                "counter",
                "Embedder publishes other nodes never saw.",
                get(&self.lost),
            ),
            (
                "surge_bridge_alone_total",
                "counter",
                "Hub publishes delivered on this node alone, Redis being away.",
                get(&self.alone),
            ),
            (
                "surge_bridge_loaded_topics_total",
                "counter",
                "Topics whose position and history were loaded from Redis.",
                get(&self.loaded),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }
}
