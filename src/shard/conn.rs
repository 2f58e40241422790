//! The I/O-free half of a connection: protocol state, the bytes waiting on
//! either side of it, and its deadline. A driver owns the socket, reads
//! into a buffer, calls [`Session::process`] and writes what lands in `out`;
//! both drivers share this code, so they speak exactly the same protocol.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::BorrowedFd;

use crate::admission::policy::UpgradeRequest;
use crate::admission::proxy_protocol::{self, ProxyHeader};
use crate::admission::registry::Ticket;
use crate::admission::stats::Reason;
use crate::admission::Admission;
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
    /// Caps, rates and upgrade policy.
    pub(crate) admission: &'a Admission,
    /// The connection's socket, asked for its peer address only when an
    /// upgrade has to be admitted.
    pub(crate) socket: BorrowedFd<'a>,
}

impl ConnLimits<'_> {
    fn peer_ip(&self) -> IpAddr {
        socket2::SockRef::from(&self.socket)
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip())
    }
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
    /// Waiting for a complete HTTP request head (after a PROXY header on
    /// listeners that expect one).
    Handshake(Handshaking),
    /// Upgraded: WebSocket frames flow.
    Open(ServerConn),
    /// Refused by a cap or rate; parked until the tarpit delay passes, then
    /// answered.
    Tarpit(Refusal),
    /// Our last bytes are queued or sent and our write side will be shut:
    /// input is read only to see the peer's FIN.
    Lingering,
}

/// Handshake state kept between reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handshaking {
    /// A PROXY protocol header must come first.
    expect_proxy: bool,
    /// The peer, when accept reported it (epoll), or the client a PROXY
    /// header named; otherwise the socket is asked when it matters.
    peer: Option<IpAddr>,
}

/// Why a parked client was refused, for its eventual answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal {
    pub(crate) reason: Reason,
    /// Seconds until a rate would let the client in (0 for caps).
    pub(crate) wait_secs: u32,
}

/// Which of the shard's bounded sets a session is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Queued {
    Nowhere,
    Handshake,
    Tarpit,
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
    /// Refused: park until the tarpit delay passes, then answer.
    Tarpit,
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
    /// Bytes for the peer; the driver tracks how much of it is written.
    pub(crate) out: Vec<u8>,
    /// Shut our write side once `out` drains.
    pub(crate) shutdown_after_flush: bool,
    /// The tick at which this connection's current deadline passes.
    pub(crate) deadline_tick: u64,
    /// The tick of the earliest timer entry armed for it, or `u64::MAX`.
    pub(crate) armed_tick: u64,
    /// Counted against the admission caps; given back when the slot frees.
    pub(crate) ticket: Option<Ticket>,
    /// The shard set (pending handshakes, tarpit) it is counted in.
    pub(crate) queued: Queued,
}

impl Session {
    /// A connection just accepted; `expect_proxy` on PROXY listeners;
    /// `peer` if accept reported it.
    pub(crate) fn new(generation: u32, expect_proxy: bool, peer: Option<IpAddr>) -> Self {
        Self {
            generation,
            phase: Phase::Handshake(Handshaking { expect_proxy, peer }),
            carry: None,
            out: Vec::new(),
            shutdown_after_flush: false,
            deadline_tick: u64::MAX,
            armed_tick: u64::MAX,
            ticket: None,
            queued: Queued::Nowhere,
        }
    }

    /// Input bytes kept from earlier reads; they come before the next read.
    pub(crate) fn carried(&self) -> &[u8] {
        self.carry.as_deref().map_or(&[], Vec::as_slice)
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
        if used < input.len() && !matches!(self.phase, Phase::Lingering | Phase::Tarpit(_)) {
            self.carry = Some(Box::new(input[used..].to_vec()));
        }
        next
    }

    /// Marks `out` as fully written and gives it back to the pool, so an
    /// idle connection holds no output buffer.
    pub(crate) fn out_drained(&mut self, pool: &mut BufPool) {
        pool.give(std::mem::take(&mut self.out));
    }

    /// Consumes what it can of `input`, queueing replies in `out`; returns
    /// the bytes consumed and what the loop should do next.
    fn process(&mut self, input: &mut [u8], limits: &mut ConnLimits<'_>) -> (usize, Next) {
        match self.phase {
            Phase::Handshake(hs) => self.process_handshake(hs, input, limits),
            Phase::Open(_) => self.process_frames(input, limits.counters),
            Phase::Tarpit(_) | Phase::Lingering => (input.len(), Next::Continue),
        }
    }

    fn process_handshake(
        &mut self,
        mut hs: Handshaking,
        input: &mut [u8],
        limits: &mut ConnLimits<'_>,
    ) -> (usize, Next) {
        let mut start = 0;
        if hs.expect_proxy {
            match proxy_protocol::parse(input) {
                Ok(None) => return (0, Next::Continue),
                Ok(Some((header, len))) => {
                    hs.expect_proxy = false;
                    if let ProxyHeader::Proxied { source, .. } = header {
                        hs.peer = Some(source.ip());
                    }
                    self.phase = Phase::Handshake(hs);
                    start = len;
                }
                Err(e) => {
                    // Not from our balancer: say nothing, just close.
                    tracing::debug!("closing: {e}");
                    limits
                        .admission
                        .registry
                        .stats
                        .rejected(Reason::ProxyHeader);
                    return (input.len(), self.linger());
                }
            }
        }
        let input = &mut input[start..];
        let mut headers = handshake::header_buf();
        let outcome = match handshake::parse_request(input, &mut headers) {
            Ok(None) => return (start, Next::Continue),
            Ok(Some(req)) => answer_request(&req, hs, limits, &mut self.out),
            Err(e) => Err(Answered::Refused(e)),
        };
        match outcome {
            Ok((head_len, ticket)) => {
                self.ticket = Some(ticket);
                self.phase = Phase::Open(ServerConn::new(limits.max_message));
                limits.counters.handshakes += 1;
                let (used, next) = self.process_frames(&mut input[head_len..], limits.counters);
                let next = if next == Next::Continue {
                    Next::Upgraded
                } else {
                    next
                };
                (start + head_len + used, next)
            }
            Err(Answered::Plain) => (start + input.len(), self.linger()),
            Err(Answered::Refused(e)) => {
                tracing::debug!(status = e.status(), "handshake refused: {e}");
                e.encode_response(&mut self.out);
                (start + input.len(), self.linger())
            }
            Err(Answered::Denied(status, reason)) => {
                tracing::debug!(status, reason = reason.label(), "upgrade denied");
                handshake::encode_plain_response(
                    &mut self.out,
                    status,
                    "",
                    &format!("upgrade refused: {}\n", reason.label()),
                );
                (start + input.len(), self.linger())
            }
            Err(Answered::Parked(refusal)) => {
                self.phase = Phase::Tarpit(refusal);
                self.carry = None;
                (start + input.len(), Next::Tarpit)
            }
        }
    }

    /// Answers a parked client: the refusal with a `Retry-After` of
    /// `retry_after` seconds, then the connection lingers out.
    pub(crate) fn answer_refusal(&mut self, retry_after: u64) -> Next {
        let Phase::Tarpit(refusal) = self.phase else {
            return self.linger();
        };
        let body = match refusal.reason {
            Reason::ClientCap => "too many connections from your address\n",
            Reason::ClientRate => "too many connection attempts from your address\n",
            Reason::TotalRate => "too many connection attempts; try again later\n",
            _ => "server at capacity; try again later\n",
        };
        handshake::encode_plain_response(
            &mut self.out,
            refusal.reason.status(),
            &format!("Retry-After: {retry_after}\r\n"),
            body,
        );
        self.linger()
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

/// How a request head was answered when it did not upgrade.
enum Answered {
    /// A plain HTTP response was written.
    Plain,
    /// A malformed or unacceptable request.
    Refused(HandshakeError),
    /// Policy said no: answer with this status at once.
    Denied(u16, Reason),
    /// A cap or rate said no: park, answer later.
    Parked(Refusal),
}

/// Answers a complete request head: `Ok((head_len, ticket))` when it
/// upgraded (the 101 is in `out`).
fn answer_request(
    req: &handshake::Request<'_, '_>,
    hs: Handshaking,
    limits: &ConnLimits<'_>,
    out: &mut Vec<u8>,
) -> Result<(usize, Ticket), Answered> {
    if !req.wants_websocket() {
        return Err(match (req.method, req.path()) {
            ("GET", "/healthz") => {
                handshake::encode_plain_response(out, 200, "", "ok\n");
                Answered::Plain
            }
            ("GET", "/metrics") => {
                let body = limits.metrics.render(limits.admission);
                handshake::encode_plain_response(out, 200, "", &body);
                Answered::Plain
            }
            ("GET", _) => Answered::Refused(HandshakeError::UpgradeRequired),
            _ => Answered::Refused(HandshakeError::MethodNotAllowed),
        });
    }
    let upgrade = req.validate_upgrade().map_err(Answered::Refused)?;
    let subprotocol = upgrade.choose_subprotocol(limits.subprotocols);
    let admission = limits.admission;
    let peer = hs.peer.unwrap_or_else(|| limits.peer_ip());
    let client = admission.client_ip(peer, req);
    let request = UpgradeRequest::new(req.target, req.headers, client, subprotocol);
    if let Err(denied) = admission.config.policy.check(&request) {
        admission.registry.stats.rejected(denied.reason);
        return Err(Answered::Denied(denied.status, denied.reason));
    }
    let registry = &admission.registry;
    let ticket = registry
        .admit(admission.key(client), registry.now_ns())
        .map_err(|refused| {
            tracing::debug!(%client, reason = refused.reason.label(), "upgrade refused");
            crate::admission::stats::AdmissionStats::bump(&registry.stats.tarpitted);
            Answered::Parked(Refusal {
                reason: refused.reason,
                wait_secs: refused
                    .wait_ns
                    .div_ceil(1_000_000_000)
                    .min(u64::from(u32::MAX)) as u32,
            })
        })?;
    upgrade.encode_accept(out, subprotocol);
    Ok((req.head_len, ticket))
}

fn log_violation(e: ProtocolError) {
    tracing::debug!(code = e.close_code().0, "closing: {e}");
}
