//! Counters each shard publishes and any shard can read for `GET /metrics`.
//!
//! Every shard writes only its own slot (relaxed stores on its own cache
//! line: no contention, no lock); a scrape sums the slots. Gauges are
//! published once per loop turn, not per event.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// One shard's published numbers.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct ShardStats {
    /// Connections in the slab, in any phase.
    pub connections_open: AtomicU64,
    /// Completed upgrades.
    pub handshakes_total: AtomicU64,
    /// Messages received from peers.
    pub messages_received_total: AtomicU64,
    /// Messages sent to peers.
    pub messages_sent_total: AtomicU64,
    /// Receive buffers held outside the kernel's ring (io_uring only).
    pub recv_buffers_lent: AtomicU64,
    /// Output buffers held by connections with bytes to send.
    pub out_buffers_lent: AtomicU64,
    /// Connections still in their opening handshake.
    pub handshakes_in_flight: AtomicU64,
    /// Refused clients parked in the tarpit.
    pub tarpit_parked: AtomicU64,
    /// Subscriptions held.
    pub subscriptions: AtomicU64,
    /// Topics with at least one subscriber here.
    pub topics: AtomicU64,
    /// Published messages written toward subscribers, per subscriber.
    pub pubsub_delivered_total: AtomicU64,
    /// Messages conflated subscribers skipped.
    pub pubsub_conflated_total: AtomicU64,
    /// Latest-value snapshots sent to conflated subscribers that caught up.
    pub pubsub_snapshots_total: AtomicU64,
    /// Subscribers closed (1013) for falling behind.
    pub pubsub_disconnected_total: AtomicU64,
    /// Published messages compressed for deflate subscribers, once per
    /// shard and window size.
    pub pubsub_compressed_total: AtomicU64,
    /// Connections that negotiated permessage-deflate.
    pub deflate_connections: AtomicU64,
}

impl ShardStats {
    /// Adds `n` to a counter owned by this shard.
    pub fn add(counter: &AtomicU64, n: u64) {
        // Single writer: a load and a store are enough and cheaper than an RMW.
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    /// Sets a gauge owned by this shard.
    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }
}

/// A metric family: name, type, help, and the field it reads.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardStats) -> &AtomicU64,
);

/// Every shard's slot.
#[derive(Debug)]
pub struct Metrics {
    /// Indexed by shard id.
    pub shards: Box<[ShardStats]>,
    /// `epoll` or `uring`.
    pub backend: &'static str,
}

impl Metrics {
    /// Slots for `shards` shards.
    pub fn new(shards: usize, backend: &'static str) -> Self {
        Self {
            shards: (0..shards).map(|_| ShardStats::default()).collect(),
            backend,
        }
    }

    /// The Prometheus text exposition, admission decisions included.
    pub fn render(
        &self,
        admission: &crate::admission::Admission,
        hub: &crate::pubsub::hub::Hub,
    ) -> String {
        let mut out = String::new();
        let families: [Family; 16] = [
            (
                "surge_connections_open",
                "gauge",
                "Connections held, any phase.",
                |s| &s.connections_open,
            ),
            (
                "surge_handshakes_total",
                "counter",
                "Completed WebSocket upgrades.",
                |s| &s.handshakes_total,
            ),
            (
                "surge_messages_received_total",
                "counter",
                "Messages received.",
                |s| &s.messages_received_total,
            ),
            (
                "surge_messages_sent_total",
                "counter",
                "Messages sent.",
                |s| &s.messages_sent_total,
            ),
            (
                "surge_recv_buffers_lent",
                "gauge",
                "Receive buffers out of the kernel ring.",
                |s| &s.recv_buffers_lent,
            ),
            (
                "surge_out_buffers_lent",
                "gauge",
                "Output buffers held by connections.",
                |s| &s.out_buffers_lent,
            ),
            (
                "surge_handshakes_in_flight",
                "gauge",
                "Connections still in their opening handshake.",
                |s| &s.handshakes_in_flight,
            ),
            (
                "surge_tarpit_parked",
                "gauge",
                "Refused clients parked before their answer.",
                |s| &s.tarpit_parked,
            ),
            ("surge_subscriptions", "gauge", "Subscriptions held.", |s| {
                &s.subscriptions
            }),
            (
                "surge_topics",
                "gauge",
                "Topics with a subscriber on the shard.",
                |s| &s.topics,
            ),
            (
                "surge_pubsub_delivered_total",
                "counter",
                "Published messages queued to subscribers, counted per subscriber.",
                |s| &s.pubsub_delivered_total,
            ),
            (
                "surge_pubsub_conflated_total",
                "counter",
                "Messages skipped by conflated (slow) subscribers.",
                |s| &s.pubsub_conflated_total,
            ),
            (
                "surge_pubsub_snapshots_total",
                "counter",
                "Latest-value snapshots sent to conflated subscribers that caught up.",
                |s| &s.pubsub_snapshots_total,
            ),
            (
                "surge_pubsub_disconnected_total",
                "counter",
                "Subscribers closed with 1013 for falling behind.",
                |s| &s.pubsub_disconnected_total,
            ),
            (
                "surge_pubsub_compressed_total",
                "counter",
                "Published messages compressed once for every deflate subscriber of a shard.",
                |s| &s.pubsub_compressed_total,
            ),
            (
                "surge_deflate_connections",
                "gauge",
                "Connections that negotiated permessage-deflate.",
                |s| &s.deflate_connections,
            ),
        ];
        for (name, kind, help, field) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (i, shard) in self.shards.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}{{shard=\"{i}\"}} {}",
                    field(shard).load(Ordering::Relaxed)
                );
            }
        }
        let registry = &admission.registry;
        registry
            .stats
            .render(&mut out, registry.open(), registry.clients());
        let _ = writeln!(
            out,
            "# HELP surge_pubsub_published_total Messages published, counted once.\n\
             # TYPE surge_pubsub_published_total counter\n\
             surge_pubsub_published_total {}\n\
             # HELP surge_pubsub_inbox_dropped_total Messages a full shard inbox refused.\n\
             # TYPE surge_pubsub_inbox_dropped_total counter\n\
             surge_pubsub_inbox_dropped_total {}",
            hub.stats.published.load(Ordering::Relaxed),
            hub.stats.inbox_dropped.load(Ordering::Relaxed)
        );
        if hub.bridged() {
            hub.bridge.render(&mut out);
        }
        let _ = writeln!(
            out,
            "# HELP surge_info Build and runtime facts.\n# TYPE surge_info gauge\nsurge_info{{backend=\"{}\",unmask=\"{}\"}} 1",
            self.backend,
            crate::protocol::mask::kernel_name()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_shard() {
        let m = Metrics::new(2, "epoll");
        ShardStats::add(&m.shards[1].handshakes_total, 3);
        let admission =
            crate::admission::Admission::new(crate::admission::AdmissionConfig::default());
        let (hub, _rx) = crate::pubsub::hub::Hub::new(2).unwrap();
        let text = m.render(&admission, &hub);
        assert!(text.contains("surge_admission_rejected_total{reason=\"per_ip_cap\"} 0\n"));
        assert!(text.contains("surge_handshakes_total{shard=\"1\"} 3\n"));
        assert!(text.contains("surge_connections_open{shard=\"0\"} 0\n"));
        assert!(text.contains("# TYPE surge_messages_sent_total counter\n"));
    }
}
