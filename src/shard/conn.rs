//! The I/O-free half of a connection: protocol state, the bytes waiting on
//! either side of it, and its deadline. A driver owns the socket, reads
//! into a buffer, calls [`Session::process`] and writes what lands in `out`;
//! both drivers share this code, so they speak exactly the same protocol.

use crate::buf::pool::BufPool;
use crate::metrics::{Metrics, ShardStats};
use crate::protocol::handshake::{self, HandshakeError};
use crate::protocol::{CloseCode, Event, ProtocolError, ServerConn, State};

/// What a connection consults and counts into while processing input.
#[derive(Debug)]
pub(crate) struct ConnLimits<'a> {
    pub(crate) max_message: usize,
    pub(crate) subprotocols: &'a [String],
    /// Every shard's published numbers, for `GET /metrics`.
    pub(crate) metrics: &'a Metrics,
    /// This shard's plain counters, published once per loop turn.
    pub(crate) counters: &'a mut Counters,
    /// Where `out` buffers come from and go back to.
    pub(crate) pool: &'a mut BufPool,
}

/// Per-shard event counts kept in plain integers on the hot path.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) handshakes: u64,
    pub(crate) messages_received: u64,
    pub(crate) messages_sent: u64,
}

impl Counters {
    /// Copies the totals into this shard's published slot.
    pub(crate) fn publish(&self, stats: &ShardStats, connections: usize) {
        ShardStats::set(&stats.handshakes_total, self.handshakes);
        ShardStats::set(&stats.messages_received_total, self.messages_received);
        ShardStats::set(&stats.messages_sent_total, self.messages_sent);
        ShardStats::set(&stats.connections_open, connections as u64);
    }
}

/// Where a connection is in its life.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Waiting for a complete HTTP request head.
    Handshake,
    /// Upgraded: WebSocket frames flow.
    Open(ServerConn),
    /// Our last bytes are queued or sent and our write side will be shut:
    /// input is read only to see the peer's FIN.
    Lingering,
}

/// What the loop must do after `process`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Keep reading.
    Continue,
    /// The handshake completed: the idle deadline replaces the handshake one.
    Upgraded,
    /// A close frame went out first; the peer's answer is awaited.
    AwaitClose,
    /// Flush `out`, shut the write side, then wait for the peer's FIN.
    Linger,
}

#[derive(Debug)]
pub(crate) struct Session {
    /// Distinguishes this connection from earlier ones in the same slab
    /// slot, so a stale timer entry or completion never hits a newcomer.
    pub(crate) generation: u32,
    pub(crate) phase: Phase,
    /// Input bytes not consumed yet: a partial request head, frame header or
    /// control frame. Boxed so the common case, nothing carried, costs one
    /// pointer per connection instead of a vector's three words.
    #[allow(clippy::box_collection)] // one word when empty, the common case
    carry: Option<Box<Vec<u8>>>,
    pub(crate) out: Vec<u8>,
    /// Bytes of `out` already written.
    pub(crate) out_pos: usize,
    /// Shut our write side once `out` drains.
    pub(crate) shutdown_after_flush: bool,
    /// The tick at which this connection's current deadline passes.
    pub(crate) deadline_tick: u64,
    /// The tick of the earliest timer entry armed for it, or `u64::MAX`.
    pub(crate) armed_tick: u64,
}

impl Session {
    pub(crate) fn new(generation: u32) -> Self {
        Self {
            generation,
            phase: Phase::Handshake,
            carry: None,
            out: Vec::new(),
            out_pos: 0,
            shutdown_after_flush: false,
            deadline_tick: u64::MAX,
            armed_tick: u64::MAX,
        }
    }

    /// Input bytes kept from earlier reads; they come before the next read.
    pub(crate) fn carried(&self) -> &[u8] {
        self.carry.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Bytes queued for the peer and not yet written.
    pub(crate) fn pending_out(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Processes `input` (the carried bytes followed by what was just read)
    /// and keeps what it could not consume yet in `carry`.
    pub(crate) fn feed(&mut self, input: &mut [u8], limits: &mut ConnLimits<'_>) -> Next {
        self.carry = None;
        let borrowed = self.out.capacity() == 0;
        if borrowed {
            self.out = limits.pool.take();
        }
        let (used, next) = self.process(input, limits);
        if borrowed && self.out.is_empty() {
            limits.pool.give(std::mem::take(&mut self.out));
        }
        if used < input.len() && !matches!(self.phase, Phase::Lingering) {
            self.carry = Some(Box::new(input[used..].to_vec()));
        }
        next
    }

    /// Marks `out` as fully written and gives it back to the pool, so an
    /// idle connection holds no output buffer.
    pub(crate) fn out_drained(&mut self, pool: &mut BufPool) {
        self.out_pos = 0;
        pool.give(std::mem::take(&mut self.out));
    }

    /// Consumes what it can of `input`, queueing replies in `out`; returns
    /// the bytes consumed and what the loop should do next.
    fn process(&mut self, input: &mut [u8], limits: &mut ConnLimits<'_>) -> (usize, Next) {
        match self.phase {
            Phase::Handshake => self.process_handshake(input, limits),
            Phase::Open(_) => self.process_frames(input, limits.counters),
            Phase::Lingering => (input.len(), Next::Continue),
        }
    }

    fn process_handshake(
        &mut self,
        input: &mut [u8],
        limits: &mut ConnLimits<'_>,
    ) -> (usize, Next) {
        let mut headers = handshake::header_buf();
        let outcome = match handshake::parse_request(input, &mut headers) {
            Ok(None) => return (0, Next::Continue),
            Ok(Some(req)) => answer_request(&req, limits, &mut self.out),
            Err(e) => Err(Some(e)),
        };
        match outcome {
            Ok(head_len) => {
                self.phase = Phase::Open(ServerConn::new(limits.max_message));
                limits.counters.handshakes += 1;
                let (used, next) = self.process_frames(&mut input[head_len..], limits.counters);
                let next = if next == Next::Continue {
                    Next::Upgraded
                } else {
                    next
                };
                (head_len + used, next)
            }
            Err(None) => (input.len(), self.linger()),
            Err(Some(e)) => {
                tracing::debug!(status = e.status(), "handshake refused: {e}");
                e.encode_response(&mut self.out);
                (input.len(), self.linger())
            }
        }
    }

    fn process_frames(&mut self, input: &mut [u8], counters: &mut Counters) -> (usize, Next) {
        let Phase::Open(ws) = &mut self.phase else {
            return (input.len(), Next::Continue);
        };
        let was = ws.state();
        let mut pos = 0;
        loop {
            match ws.receive(&mut input[pos..], &mut self.out) {
                Ok(step) => {
                    pos += step.consumed;
                    match step.event {
                        Some(Event::Message { opcode, payload }) => {
                            counters.messages_received += 1;
                            if ws.send(&mut self.out, opcode, &payload) {
                                counters.messages_sent += 1;
                            }
                        }
                        Some(_) => {}
                        None if step.consumed == 0 => break,
                        None => {}
                    }
                }
                Err(e) => {
                    log_violation(e);
                    break;
                }
            }
        }
        match ws.state() {
            State::Closed => (input.len(), self.linger()),
            State::CloseSent if was == State::Open => (pos, Next::AwaitClose),
            _ => (pos, Next::Continue),
        }
    }

    /// Starts a server-side close (idle timeout, shutdown) if the connection
    /// is open; anything earlier in its life just lingers out.
    pub(crate) fn close(&mut self, code: CloseCode, reason: &str) -> Next {
        match &mut self.phase {
            Phase::Open(ws) if ws.state() == State::Open => {
                ws.close(&mut self.out, code, reason);
                Next::AwaitClose
            }
            Phase::Open(ws) if ws.state() == State::CloseSent => Next::AwaitClose,
            _ => self.linger(),
        }
    }

    /// The peer sent its FIN: whatever is owed is flushed, then the
    /// transport closes; nothing more is read.
    pub(crate) fn peer_finished(&mut self) -> Next {
        self.linger()
    }

    fn linger(&mut self) -> Next {
        self.phase = Phase::Lingering;
        self.carry = None;
        self.shutdown_after_flush = true;
        Next::Linger
    }
}

/// Answers a complete request head: `Ok(head_len)` when it upgraded,
/// `Err(None)` when a plain response was written, `Err(Some(e))` to refuse.
fn answer_request(
    req: &handshake::Request<'_, '_>,
    limits: &ConnLimits<'_>,
    out: &mut Vec<u8>,
) -> Result<usize, Option<HandshakeError>> {
    if !req.wants_websocket() {
        return Err(Some(match (req.method, req.path()) {
            ("GET", "/healthz") => {
                handshake::encode_plain_response(out, 200, "", "ok\n");
                return Err(None);
            }
            ("GET", "/metrics") => {
                let body = limits.metrics.render();
                handshake::encode_plain_response(out, 200, "", &body);
                return Err(None);
            }
            ("GET", _) => HandshakeError::UpgradeRequired,
            _ => HandshakeError::MethodNotAllowed,
        }));
    }
    let upgrade = req.validate_upgrade().map_err(Some)?;
    let subprotocol = upgrade.choose_subprotocol(limits.subprotocols);
    upgrade.encode_accept(out, subprotocol);
    Ok(req.head_len)
}

fn log_violation(e: ProtocolError) {
    tracing::debug!(code = e.close_code().0, "closing: {e}");
}
