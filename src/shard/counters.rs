//! A shard's event counts: plain integers on the hot path, copied into
//! the shard's published metrics slot once per loop turn.

use super::events::{self, Ended};
use super::session::{message_bytes, Session};
use crate::metrics::{close_slot, ShardStats, CLOSE_SLOTS};
use crate::protocol::CloseCode;

/// Per-shard event counts kept in plain integers on the hot path.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) handshakes: u64,
    pub(crate) messages_received: u64,
    pub(crate) messages_sent: u64,
    /// Connections on this shard that negotiated permessage-deflate.
    pub(crate) deflate_conns: u64,
    pub(crate) bytes_received: u64,
    pub(crate) bytes_sent: u64,
    /// WebSocket connections ended, by `metrics::close_slot`.
    pub(crate) closes: [u64; CLOSE_SLOTS],
    /// Connections closed (1013) because their message did not fit in
    /// what the shard's message budget had left.
    pub(crate) budget_closes: u64,
}

impl Counters {
    /// Copies the totals into this shard's published slot.
    pub(crate) fn publish(&self, stats: &ShardStats, connections: usize) {
        ShardStats::set(&stats.handshakes_total, self.handshakes);
        ShardStats::set(&stats.messages_received_total, self.messages_received);
        ShardStats::set(&stats.messages_sent_total, self.messages_sent);
        ShardStats::set(&stats.connections_open, connections as u64);
        ShardStats::set(&stats.bytes_received_total, self.bytes_received);
        ShardStats::set(&stats.bytes_sent_total, self.bytes_sent);
        for (slot, &n) in stats.closes_total.iter().zip(&self.closes) {
            ShardStats::set(slot, n);
        }
        ShardStats::set(&stats.deflate_connections, self.deflate_conns);
        ShardStats::set(&stats.message_bytes_held, message_bytes() as u64);
        ShardStats::set(&stats.message_budget_closes_total, self.budget_closes);
        let streams = events::counts();
        ShardStats::set(&stats.sse_streams, streams.open);
        ShardStats::set(&stats.sse_events_total, streams.events);
        for (slot, &n) in stats.sse_ended_total.iter().zip(&streams.ended) {
            ShardStats::set(slot, n);
        }
        let eio = super::engineio::counts();
        for (slot, &n) in stats.eio_sessions.iter().zip(&eio.sessions) {
            ShardStats::set(slot, n);
        }
        ShardStats::set(&stats.eio_upgrades_total, eio.upgrades);
        ShardStats::set(&stats.eio_polls_held, eio.polls - eio.polls_done);
        ShardStats::set(&stats.eio_packets_received_total, eio.packets_in);
        ShardStats::set(&stats.eio_packets_sent_total, eio.packets_out);
        for (slot, &n) in stats.eio_refused_total.iter().zip(&eio.refused) {
            ShardStats::set(slot, n);
        }
        for (slot, &n) in stats.eio_closed_total.iter().zip(&eio.closed) {
            ShardStats::set(slot, n);
        }
        ShardStats::set(&stats.eio_handoffs_total, eio.handoffs);
        ShardStats::set(&stats.eio_handoffs_refused_total, eio.handoffs_refused);
        ShardStats::set(&stats.sio_sockets, eio.sockets - eio.sockets_gone);
        ShardStats::set(&stats.sio_connects_refused_total, eio.connects_refused);
        for (slot, &n) in stats.sio_violations_total.iter().zip(&eio.violations) {
            ShardStats::set(slot, n);
        }
        for (slot, &n) in stats.sio_recoveries_total.iter().zip(&eio.recoveries) {
            ShardStats::set(slot, n);
        }
        ShardStats::set(&stats.sio_kept_sockets, eio.kept);
        ShardStats::set(&stats.sio_recovery_bytes, eio.recent_bytes);
        ShardStats::set(&stats.sio_compressed_total, eio.compressed);
    }

    /// Counts the close that ends a WebSocket connection: call once, when
    /// the first close frame is sent or received.
    pub(crate) fn closed(&mut self, code: CloseCode) {
        self.closes[close_slot(code.0)] += 1;
    }

    /// The peer went away without a close frame (a reset, or a FIN): if the
    /// connection was open, its end counts as 1006.
    pub(crate) fn dropped(&mut self, session: &Session) {
        if session.is_open() {
            self.closed(CloseCode::ABNORMAL);
        }
    }

    /// A connection's slot is being freed.
    pub(crate) fn forget(&mut self, session: &Session) {
        self.dropped(session);
        session.stream_ended(Ended::Client);
        session.let_message_go();
        if session
            .spill
            .as_deref()
            .is_some_and(|s| s.deflate.is_some())
        {
            self.deflate_conns -= 1;
        }
    }
}
