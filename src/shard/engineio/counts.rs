//! A shard's Engine.IO counts, published to `/metrics` once per turn.

use std::cell::Cell;

use crate::engineio::{CloseReason, Refusal, Transport};
use crate::metrics::{EIO_CLOSED_LABELS, EIO_REFUSED_LABELS};

/// What a shard's sessions did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    /// Sessions alive, by transport: polling, websocket.
    pub(crate) sessions: [u64; 2],
    /// Polling sessions that moved to a WebSocket.
    pub(crate) upgrades: u64,
    /// Polls held, then answered or dropped: the difference is held now.
    pub(crate) polls: u64,
    pub(crate) polls_done: u64,
    /// Packets from clients that carried messages, and packets to them.
    pub(crate) packets_in: u64,
    pub(crate) packets_out: u64,
    /// Requests refused, by `EIO_REFUSED_LABELS`.
    pub(crate) refused: [u64; EIO_REFUSED_LABELS.len()],
    /// Sessions ended, by `EIO_CLOSED_LABELS`.
    pub(crate) closed: [u64; EIO_CLOSED_LABELS.len()],
    /// Requests and answers passed to another shard, and those its full
    /// inbox refused.
    pub(crate) handoffs: u64,
    pub(crate) handoffs_refused: u64,
    /// Socket.IO reconnects that asked for their socket back: not
    /// recovered, recovered.
    pub(crate) recoveries: [u64; 2],
    /// Socket.IO sockets connected, and those that left since.
    pub(crate) sockets: u64,
    pub(crate) sockets_gone: u64,
    /// Socket.IO `CONNECT`s refused.
    pub(crate) connects_refused: u64,
    /// Socket.IO sessions closed for breaking a rule, by
    /// `Violation::LABELS`.
    pub(crate) violations: [u64; 7],
    /// Dropped sockets kept for recovery, and the bytes of broadcasts
    /// recorded for them (gauges).
    pub(crate) kept: u64,
    pub(crate) recent_bytes: u64,
    /// Room broadcasts compressed for this shard's deflate WebSockets (once
    /// per broadcast and window, whatever the members).
    pub(crate) compressed: u64,
}

impl Counts {
    pub(crate) fn opened(&mut self, transport: Transport) {
        self.sessions[slot(transport)] += 1;
    }

    pub(crate) fn upgraded(&mut self) {
        self.upgrades += 1;
        self.sessions[slot(Transport::Polling)] -= 1;
        self.sessions[slot(Transport::WebSocket)] += 1;
    }

    pub(crate) fn closed(&mut self, transport: Transport, reason: CloseReason) {
        self.sessions[slot(transport)] -= 1;
        self.closed[reason as usize] += 1;
    }

    pub(crate) fn refused(&mut self, refusal: Refusal) {
        self.refused[refusal as usize] += 1;
    }
}

fn slot(transport: Transport) -> usize {
    match transport {
        Transport::Polling => 0,
        Transport::WebSocket => 1,
    }
}

thread_local! {
    /// This shard's counts: a shard is one thread, and sessions change
    /// where no `Counters` is at hand.
    static COUNTS: Cell<Counts> = Cell::new(Counts::default());
}

/// This shard's counts.
pub(crate) fn counts() -> Counts {
    COUNTS.with(Cell::get)
}

pub(crate) fn count(change: impl FnOnce(&mut Counts)) {
    COUNTS.with(|c| {
        let mut counts = c.get();
        change(&mut counts);
        c.set(counts);
    });
}
