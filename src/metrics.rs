//! Counters each shard publishes and any shard can read for `GET /metrics`.
//!
//! Every shard writes only its own slot (relaxed stores on its own cache
//! line: no contention, no lock); a scrape sums the slots. Gauges are
//! published once per loop turn, not per event.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// The `code` labels of `surge_closes_total`. Application codes are
/// grouped by range so that peers cannot mint label values at will; 1006
/// counts transports that ended without any close frame (a reset, or a FIN
/// with no close), as RFC 6455 reports them locally.
pub const CLOSE_LABELS: [&str; CLOSE_SLOTS] = [
    "1000",
    "1001",
    "1002",
    "1003",
    "1005",
    "1006",
    "1007",
    "1008",
    "1009",
    "1010",
    "1011",
    "1012",
    "1013",
    "1014",
    "3000-3999",
    "4000-4999",
    "other",
];

/// How many `code` labels `surge_closes_total` has.
pub const CLOSE_SLOTS: usize = 17;

/// Where a close code is counted in [`CLOSE_LABELS`].
pub fn close_slot(code: u16) -> usize {
    match code {
        1000..=1003 => usize::from(code - 1000),
        1005..=1014 => usize::from(code - 1001),
        3000..=3999 => 14,
        4000..=4999 => 15,
        _ => 16,
    }
}

/// The statuses `surge_api_requests_total` counts by; any other is
/// `other`.
pub const API_STATUSES: [u16; 13] = [
    200, 400, 401, 404, 405, 408, 411, 413, 415, 422, 431, 503, 0,
];

/// Server API requests by the status they were answered with.
#[derive(Debug, Default)]
pub struct ApiStats {
    by_status: [AtomicU64; API_STATUSES.len()],
}

impl ApiStats {
    /// Counts one answer.
    pub fn count(&self, status: u16) {
        let slot = API_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(API_STATUSES.len() - 1);
        self.by_status[slot].fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP surge_api_requests_total Server API requests by the status of their answer.\n\
             # TYPE surge_api_requests_total counter"
        );
        for (status, n) in API_STATUSES.iter().zip(&self.by_status) {
            let label = match status {
                0 => "other".to_owned(),
                s => s.to_string(),
            };
            let _ = writeln!(
                out,
                "surge_api_requests_total{{status=\"{label}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
    }
}

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
    /// Messages sent to peers as replies; `surge_messages_sent_total` adds
    /// the published messages delivered to subscribers.
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
    /// Latest-value snapshots sent to conflated subscribers that caught up
    /// and to new subscribers of the ticker feed.
    pub pubsub_snapshots_total: AtomicU64,
    /// Subscribers closed (1013) for falling behind.
    pub pubsub_disconnected_total: AtomicU64,
    /// Published messages compressed for deflate subscribers, once per
    /// shard and window size.
    pub pubsub_compressed_total: AtomicU64,
    /// Bytes of the latest frames topics keep for conflated subscribers.
    pub pubsub_snapshot_bytes: AtomicU64,
    /// Connections that negotiated permessage-deflate.
    pub deflate_connections: AtomicU64,
    /// Bytes read from sockets, HTTP heads included.
    pub bytes_received_total: AtomicU64,
    /// Bytes written to sockets, HTTP heads included.
    pub bytes_sent_total: AtomicU64,
    /// WebSocket connections ended, indexed by [`close_slot`].
    pub closes_total: [AtomicU64; CLOSE_SLOTS],
    /// Memory held by messages still arriving (assembly and inflate
    /// buffers), which `--message-budget` bounds.
    pub message_bytes_held: AtomicU64,
    /// Connections closed with 1013 because their message would have
    /// taken the shard past `--message-budget`.
    pub message_budget_closes_total: AtomicU64,
    /// Event streams (`GET /hub/events`) open.
    pub sse_streams: AtomicU64,
    /// Events written to event streams.
    pub sse_events_total: AtomicU64,
    /// Event streams ended, by [`SSE_ENDED_LABELS`].
    pub sse_ended_total: [AtomicU64; 4],
    /// Engine.IO sessions this shard owns, by [`EIO_TRANSPORT_LABELS`].
    pub eio_sessions: [AtomicU64; 2],
    /// Engine.IO polling sessions upgraded to a WebSocket.
    pub eio_upgrades_total: AtomicU64,
    /// Engine.IO polls (GETs) held, waiting for packets.
    pub eio_polls_held: AtomicU64,
    /// Engine.IO message packets received from clients.
    pub eio_packets_received_total: AtomicU64,
    /// Engine.IO answers to polls and WebSocket packets sent.
    pub eio_packets_sent_total: AtomicU64,
    /// Engine.IO requests refused, by [`EIO_REFUSED_LABELS`].
    pub eio_refused_total: [AtomicU64; 7],
    /// Engine.IO sessions ended, by [`EIO_CLOSED_LABELS`].
    pub eio_closed_total: [AtomicU64; 8],
    /// Engine.IO requests and answers passed between shards.
    pub eio_handoffs_total: AtomicU64,
    /// Those a full shard inbox refused (answered 503).
    pub eio_handoffs_refused_total: AtomicU64,
    /// Socket.IO sockets (namespaces connected) on this shard's sessions.
    pub sio_sockets: AtomicU64,
    /// Socket.IO `CONNECT`s refused.
    pub sio_connects_refused_total: AtomicU64,
    /// Socket.IO sessions closed for a broken rule, by
    /// `socketio::session::Violation::LABELS`.
    pub sio_violations_total: [AtomicU64; 7],
    /// Socket.IO reconnects asking for recovery: not recovered, recovered.
    pub sio_recoveries_total: [AtomicU64; 2],
    /// Dropped Socket.IO sockets kept for recovery.
    pub sio_kept_sockets: AtomicU64,
    /// Bytes of room broadcasts recorded for recovery.
    pub sio_recovery_bytes: AtomicU64,
    /// Socket.IO room broadcasts compressed for permessage-deflate.
    pub sio_compressed_total: AtomicU64,
}

/// The `transport` labels of `surge_engineio_sessions`.
pub const EIO_TRANSPORT_LABELS: [&str; 2] = ["polling", "websocket"];

/// The `reason` labels of `surge_engineio_refused_total`, in
/// `engineio::Refusal`'s order.
pub const EIO_REFUSED_LABELS: [&str; 7] = [
    "transport_unknown",
    "unknown_sid",
    "bad_handshake_method",
    "bad_request",
    "forbidden",
    "unsupported_protocol_version",
    "payload_too_large",
];

/// The `reason` labels of `surge_engineio_closed_total`, in
/// `engineio::CloseReason`'s order.
pub const EIO_CLOSED_LABELS: [&str; 8] = [
    "client_close",
    "transport_close",
    "transport_error",
    "parse_error",
    "payload_too_large",
    "ping_timeout",
    "buffer_full",
    "server_close",
];

/// How a labelled family reads one shard's value for its `i`th label.
type LabelledField = fn(&ShardStats, usize) -> u64;

/// The `reason` labels of `surge_sse_ended_total`.
pub const SSE_ENDED_LABELS: [&str; 4] = ["client", "drain", "slow_consumer", "server"];

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

/// A metric family: name, type, help, and how it reads a shard's slot.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardStats) -> u64,
);

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Every shard's slot.
#[derive(Debug)]
pub struct Metrics {
    /// Indexed by shard id.
    pub shards: Box<[ShardStats]>,
    /// `epoll` or `uring`.
    pub backend: &'static str,
    /// Shutdown has begun: `/healthz` answers 503 and upgrades are refused.
    draining: AtomicBool,
    /// Shards with connections still to close; the drain ends at zero.
    shards_busy: AtomicUsize,
    /// The server API's answers, when it runs.
    pub api: std::sync::Arc<ApiStats>,
}

impl Metrics {
    /// Slots for `shards` shards.
    pub fn new(shards: usize, backend: &'static str) -> Self {
        Self {
            shards: (0..shards).map(|_| ShardStats::default()).collect(),
            backend,
            draining: AtomicBool::new(false),
            shards_busy: AtomicUsize::new(shards),
            api: std::sync::Arc::default(),
        }
    }

    /// Marks the process as shutting down; every shard sees it.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// A shard has closed all its connections; call once per shard.
    pub(crate) fn shard_drained(&self) {
        self.shards_busy.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether every shard has closed all its connections.
    pub(crate) fn all_drained(&self) -> bool {
        self.shards_busy.load(Ordering::Acquire) == 0
    }

    /// The Prometheus text exposition, admission decisions included.
    pub fn render(
        &self,
        admission: &crate::admission::Admission,
        hub: &crate::pubsub::hub::Hub,
    ) -> String {
        let mut out = String::new();
        let families: [Family; 34] = [
            (
                "surge_connections_open",
                "gauge",
                "Connections held, any phase.",
                |s| get(&s.connections_open),
            ),
            (
                "surge_handshakes_total",
                "counter",
                "Completed WebSocket upgrades.",
                |s| get(&s.handshakes_total),
            ),
            (
                "surge_messages_received_total",
                "counter",
                "Messages received.",
                |s| get(&s.messages_received_total),
            ),
            (
                "surge_messages_sent_total",
                "counter",
                "Messages sent: replies, and published messages counted per subscriber.",
                |s| {
                    get(&s.messages_sent_total)
                        + get(&s.pubsub_delivered_total)
                        + get(&s.pubsub_snapshots_total)
                },
            ),
            (
                "surge_recv_buffers_lent",
                "gauge",
                "Receive buffers out of the kernel ring.",
                |s| get(&s.recv_buffers_lent),
            ),
            (
                "surge_out_buffers_lent",
                "gauge",
                "Output buffers held by connections.",
                |s| get(&s.out_buffers_lent),
            ),
            (
                "surge_handshakes_in_flight",
                "gauge",
                "Connections still in their opening handshake.",
                |s| get(&s.handshakes_in_flight),
            ),
            (
                "surge_tarpit_parked",
                "gauge",
                "Refused clients parked before their answer.",
                |s| get(&s.tarpit_parked),
            ),
            ("surge_subscriptions", "gauge", "Subscriptions held.", |s| {
                get(&s.subscriptions)
            }),
            (
                "surge_topics",
                "gauge",
                "Topics with a subscriber on the shard.",
                |s| get(&s.topics),
            ),
            (
                "surge_pubsub_delivered_total",
                "counter",
                "Published messages queued to subscribers, counted per subscriber.",
                |s| get(&s.pubsub_delivered_total),
            ),
            (
                "surge_pubsub_conflated_total",
                "counter",
                "Messages skipped by conflated (slow) subscribers.",
                |s| get(&s.pubsub_conflated_total),
            ),
            (
                "surge_pubsub_snapshots_total",
                "counter",
                "Latest-value snapshots sent to conflated subscribers that caught up and to new ticker subscribers.",
                |s| get(&s.pubsub_snapshots_total),
            ),
            (
                "surge_pubsub_disconnected_total",
                "counter",
                "Subscribers closed with 1013 for falling behind.",
                |s| get(&s.pubsub_disconnected_total),
            ),
            (
                "surge_pubsub_compressed_total",
                "counter",
                "Published messages compressed once for every deflate subscriber of a shard.",
                |s| get(&s.pubsub_compressed_total),
            ),
            (
                "surge_pubsub_snapshot_bytes",
                "gauge",
                "Bytes of the latest frames kept for snapshots (conflated subscribers, the ticker feed).",
                |s| get(&s.pubsub_snapshot_bytes),
            ),
            (
                "surge_deflate_connections",
                "gauge",
                "Connections that negotiated permessage-deflate.",
                |s| get(&s.deflate_connections),
            ),
            (
                "surge_bytes_received_total",
                "counter",
                "Bytes read from sockets, HTTP heads included.",
                |s| get(&s.bytes_received_total),
            ),
            (
                "surge_bytes_sent_total",
                "counter",
                "Bytes written to sockets, HTTP heads included.",
                |s| get(&s.bytes_sent_total),
            ),
            (
                "surge_message_bytes_held",
                "gauge",
                "Memory held by messages still arriving, which --message-budget bounds per shard.",
                |s| get(&s.message_bytes_held),
            ),
            (
                "surge_message_budget_closes_total",
                "counter",
                "Connections closed with 1013 because their message did not fit in the shard's message budget.",
                |s| get(&s.message_budget_closes_total),
            ),
            (
                "surge_sse_streams",
                "gauge",
                "Server-sent event streams (GET /hub/events) open.",
                |s| get(&s.sse_streams),
            ),
            (
                "surge_sse_events_total",
                "counter",
                "Events written to server-sent event streams.",
                |s| get(&s.sse_events_total),
            ),
            (
                "surge_engineio_upgrades_total",
                "counter",
                "Engine.IO polling sessions upgraded to a WebSocket.",
                |s| get(&s.eio_upgrades_total),
            ),
            (
                "surge_engineio_polls_held",
                "gauge",
                "Engine.IO polls (GET) held open, waiting for packets.",
                |s| get(&s.eio_polls_held),
            ),
            (
                "surge_engineio_packets_received_total",
                "counter",
                "Engine.IO message packets received from clients.",
                |s| get(&s.eio_packets_received_total),
            ),
            (
                "surge_engineio_packets_sent_total",
                "counter",
                "Engine.IO poll answers and WebSocket packets sent to clients.",
                |s| get(&s.eio_packets_sent_total),
            ),
            (
                "surge_engineio_handoffs_total",
                "counter",
                "Engine.IO requests and answers passed to the shard that owns the session or the connection.",
                |s| get(&s.eio_handoffs_total),
            ),
            (
                "surge_engineio_handoffs_refused_total",
                "counter",
                "Engine.IO handoffs a full shard inbox refused (the request is answered 503).",
                |s| get(&s.eio_handoffs_refused_total),
            ),
            (
                "surge_socketio_sockets",
                "gauge",
                "Socket.IO sockets (namespaces connected on a session).",
                |s| get(&s.sio_sockets),
            ),
            (
                "surge_socketio_connects_refused_total",
                "counter",
                "Socket.IO CONNECTs refused (answered CONNECT_ERROR).",
                |s| get(&s.sio_connects_refused_total),
            ),
            (
                "surge_socketio_kept_sockets",
                "gauge",
                "Dropped Socket.IO sockets kept for connection state recovery.",
                |s| get(&s.sio_kept_sockets),
            ),
            (
                "surge_socketio_recovery_bytes",
                "gauge",
                "Bytes of room broadcasts recorded for connection state recovery.",
                |s| get(&s.sio_recovery_bytes),
            ),
            (
                "surge_socketio_compressed_total",
                "counter",
                "Socket.IO room broadcasts compressed for permessage-deflate WebSockets \
                 (once per shard, broadcast and window).",
                |s| get(&s.sio_compressed_total),
            ),
        ];
        for (name, kind, help, field) in families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (i, shard) in self.shards.iter().enumerate() {
                let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", field(shard));
            }
        }
        let _ = writeln!(
            out,
            "# HELP surge_closes_total WebSocket connections ended, by the close code that \
             ended them (sent or received first); 1006: the transport ended with no close \
             frame.\n# TYPE surge_closes_total counter"
        );
        for (slot, label) in CLOSE_LABELS.iter().enumerate() {
            let total: u64 = self
                .shards
                .iter()
                .map(|s| s.closes_total[slot].load(Ordering::Relaxed))
                .sum();
            // "other" only holds codes no peer may send: listed once seen.
            if total != 0 || *label != "other" {
                let _ = writeln!(out, "surge_closes_total{{code=\"{label}\"}} {total}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP surge_sse_ended_total Server-sent event streams ended, by why: the \
             client went, the drain, a slow consumer over its backpressure bound, another \
             close the server started.\n# TYPE surge_sse_ended_total counter"
        );
        for (slot, label) in SSE_ENDED_LABELS.iter().enumerate() {
            let total: u64 = self
                .shards
                .iter()
                .map(|s| s.sse_ended_total[slot].load(Ordering::Relaxed))
                .sum();
            let _ = writeln!(out, "surge_sse_ended_total{{reason=\"{label}\"}} {total}");
        }
        let labelled: [(&str, &str, &str, &[&str], LabelledField); 3] = [
            (
                "surge_engineio_sessions",
                "gauge",
                "Engine.IO sessions, by the transport they are on now.",
                &EIO_TRANSPORT_LABELS,
                |s, i| get(&s.eio_sessions[i]),
            ),
            (
                "surge_engineio_refused_total",
                "counter",
                "Engine.IO requests refused, by the protocol's error.",
                &EIO_REFUSED_LABELS,
                |s, i| get(&s.eio_refused_total[i]),
            ),
            (
                "surge_engineio_closed_total",
                "counter",
                "Engine.IO sessions ended, by why.",
                &EIO_CLOSED_LABELS,
                |s, i| get(&s.eio_closed_total[i]),
            ),
        ];
        for (name, kind, help, labels, field) in labelled {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let label = if kind == "gauge" {
                "transport"
            } else {
                "reason"
            };
            for (i, value) in labels.iter().enumerate() {
                let total: u64 = self.shards.iter().map(|s| field(s, i)).sum();
                let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {total}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP surge_socketio_violations_total Socket.IO sessions closed for breaking \
             a protocol rule, by the rule.\n# TYPE surge_socketio_violations_total counter"
        );
        for (i, label) in crate::socketio::session::Violation::LABELS
            .iter()
            .enumerate()
        {
            let total: u64 = self
                .shards
                .iter()
                .map(|s| get(&s.sio_violations_total[i]))
                .sum();
            let _ = writeln!(
                out,
                "surge_socketio_violations_total{{reason=\"{label}\"}} {total}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP surge_socketio_recoveries_total Socket.IO reconnects that asked for \
             their socket back, by outcome.\n# TYPE surge_socketio_recoveries_total counter"
        );
        for (i, label) in ["not_recovered", "recovered"].iter().enumerate() {
            let total: u64 = self
                .shards
                .iter()
                .map(|s| get(&s.sio_recoveries_total[i]))
                .sum();
            let _ = writeln!(
                out,
                "surge_socketio_recoveries_total{{outcome=\"{label}\"}} {total}"
            );
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
        hub.streams.render(&mut out);
        hub.render_relay(&mut out);
        self.api.render(&mut out);
        let _ = writeln!(
            out,
            "# HELP surge_draining 1 once shutdown has begun.\n# TYPE surge_draining gauge\n\
             surge_draining {}\n\
             # HELP surge_backend The event-loop driver every shard runs.\n\
             # TYPE surge_backend gauge\nsurge_backend{{backend=\"{}\"}} 1",
            u8::from(self.is_draining()),
            self.backend
        );
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
        let (hub, _rx) =
            crate::pubsub::hub::Hub::new(2, crate::pubsub::hub::DEFAULT_INBOX_BYTES).unwrap();
        let text = m.render(&admission, &hub);
        assert!(text.contains("surge_admission_rejected_total{reason=\"per_ip_cap\"} 0\n"));
        assert!(text.contains("surge_handshakes_total{shard=\"1\"} 3\n"));
        assert!(text.contains("surge_connections_open{shard=\"0\"} 0\n"));
        assert!(text.contains("# TYPE surge_messages_sent_total counter\n"));
        assert!(text.contains("surge_backend{backend=\"epoll\"} 1\n"));
        assert!(text.contains("surge_draining 0\n"));
        assert!(text.contains("surge_closes_total{code=\"1000\"} 0\n"));
        assert!(!text.contains("code=\"other\""));
        m.begin_draining();
        ShardStats::add(&m.shards[0].closes_total[close_slot(4321)], 1);
        ShardStats::add(&m.shards[1].closes_total[close_slot(4000)], 2);
        ShardStats::add(&m.shards[1].closes_total[close_slot(2)], 1);
        let text = m.render(&admission, &hub);
        assert!(text.contains("surge_draining 1\n"));
        assert!(text.contains("surge_closes_total{code=\"4000-4999\"} 3\n"));
        assert!(text.contains("surge_closes_total{code=\"other\"} 1\n"));
    }

    #[test]
    fn close_slots_match_their_labels() {
        for code in [1000, 1001, 1002, 1003, 1005, 1006, 1007, 1011, 1013, 1014] {
            assert_eq!(CLOSE_LABELS[close_slot(code)], code.to_string());
        }
        assert_eq!(CLOSE_LABELS[close_slot(3999)], "3000-3999");
        for code in [0, 1004, 1015, 2000, 5000] {
            assert_eq!(CLOSE_LABELS[close_slot(code)], "other");
        }
    }
}
