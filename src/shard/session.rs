//! The I/O-free half of a connection: protocol state, the bytes waiting on
//! either side of it, and its deadline. The shard feeds it what the driver
//! read (`Shard::feed`) and the driver writes what lands in `out`; no
//! driver has code of its own here, so both speak exactly the same protocol.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::BorrowedFd;

use super::counters::Counters;
use super::engineio::{EngineIo, Pending};
use super::events::{self, Ended};
use super::fanout::PubSub;
use super::handler::{self, AppRoutes, Call, Ctx, Message};
use super::spill::Spill;
use crate::admission::jitter::Jitter;
use crate::admission::policy::UpgradeRequest;
use crate::admission::proxy_protocol::{self, ProxyHeader};
use crate::admission::registry::Ticket;
use crate::admission::stats::Reason;
use crate::admission::users::UserCount;
use crate::admission::Admission;
use crate::auth::Grant;
use crate::buf::pool::BufPool;
use crate::config::{RouteKind, Routes, NO_SPEC};
use crate::engineio::handoff::Ask;
use crate::metrics::Metrics;
use crate::protocol::deflate::{self, DeflatePolicy, Params as DeflateParams, PerMessageDeflate};
use crate::protocol::frame::OpCode;
use crate::protocol::handshake::{self, HandshakeError};
use crate::protocol::{CloseCode, Event, ProtocolError, ServerConn, State};
use crate::pubsub::events::{EventCursor, EventsRequest};
use crate::pubsub::hub::SharedFrame;
use crate::pubsub::protocol::{self as pubsub_protocol, Request as HubRequest, Subscribed};
use crate::pubsub::streams::{Joined, Position, ReplayLimit};
use crate::pubsub::topics::{Limit, SubscribeError};
use crate::pubsub::{hub_topic, ticker};

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
    /// The connection's slot, for subscriptions.
    pub(crate) key: usize,
    /// The shard's topics and the hub to publish through.
    pub(crate) pubsub: &'a mut PubSub,
    /// What each path serves.
    pub(crate) routes: &'a Routes,
    /// The paths embedder handlers serve, before `routes`.
    pub(crate) apps: &'a AppRoutes,
    /// Output bytes the driver holds beyond the session's queue and `out`
    /// (`Session::held`), so a handler can see its whole backlog.
    pub(crate) held: isize,
    /// The shard's randomness, to spread event streams' reconnects.
    pub(crate) jitter: &'a mut Jitter,
    /// The shard's Engine.IO sessions and the handoffs of this turn.
    pub(crate) engineio: &'a mut EngineIo,
}

impl ConnLimits<'_> {
    /// What a handler call may touch.
    fn app_ctx(&mut self) -> Ctx<'_> {
        Ctx::new(self.pubsub, self.counters, self.key, self.held)
    }

    fn peer_ip(&self) -> IpAddr {
        super::gate::socket_peer(self.socket).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }
}

thread_local! {
    /// Memory held by this shard's messages still arriving: the sum of its
    /// open connections' `ServerConn::held`. A shard is one thread, so this
    /// is the shard's; it lives here rather than in `Counters` because a
    /// connection can let its message go (`Session::linger`) where no
    /// `Counters` is at hand.
    static MESSAGE_BYTES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Bytes this shard's messages in progress hold.
pub(crate) fn message_bytes() -> usize {
    MESSAGE_BYTES.with(std::cell::Cell::get)
}

/// A connection's messages went from holding `before` to `after` bytes.
pub(super) fn message_bytes_moved(before: usize, after: usize) {
    if before != after {
        MESSAGE_BYTES.with(|held| held.set((held.get() + after).saturating_sub(before)));
    }
}

/// What a connection holding `own` bytes may hold for its message under
/// the shard's `budget` (0: no budget), given what the others hold.
pub(super) fn message_allowance(budget: usize, own: usize) -> usize {
    if budget == 0 {
        return usize::MAX;
    }
    budget.saturating_sub(message_bytes().saturating_sub(own))
}

/// Where a connection is in its life.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Waiting for a complete HTTP request head (after a PROXY header on
    /// listeners that expect one).
    Handshake(Handshaking),
    /// Upgraded: WebSocket frames flow.
    Open(ServerConn),
    /// Streaming server-sent events (`GET /hub/events`): deliveries are
    /// written as events; what the client sends is ignored.
    Events(Box<EventCursor>),
    /// An Engine.IO request waits for its session's owner to answer it
    /// (a held poll, say), or for the rest of its `POST` body.
    EngineIo(Box<Pending>),
    /// Refused by a cap or rate; parked until the tarpit delay passes, then
    /// answered.
    Tarpit(Refusal),
    /// Our last bytes are queued or sent and our write side will be shut:
    /// input is read only to see the peer's FIN.
    Lingering,
}

/// What an upgraded connection does with messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Every message comes back.
    Echo,
    /// JSON requests: subscribe, unsubscribe, publish.
    Hub,
    /// A one-way feed of ticks.
    Ticker,
    /// An embedder's handler: the index of its route in `Shared::apps`.
    App(u16),
    /// Engine.IO: requests for a session, or the WebSocket carrying one.
    EngineIo,
}

/// Handshake state kept between reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handshaking {
    /// A PROXY protocol header must come first.
    expect_proxy: bool,
    /// The peer, when accept reported it (epoll), or the client a PROXY
    /// header named, or what the socket said when a full handshake set
    /// asked it; otherwise the socket is asked when it matters.
    peer: Option<IpAddr>,
}

impl Handshaking {
    /// A kept-alive connection waiting for its next request, from `peer`.
    pub(crate) fn kept_alive(peer: Option<IpAddr>) -> Self {
        Self {
            expect_proxy: false,
            peer,
        }
    }

    /// The client, if known yet.
    pub(crate) fn peer(&self) -> Option<IpAddr> {
        self.peer
    }
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
    /// An Engine.IO request waits for its session's owner: the route's
    /// heartbeat bounds the wait.
    EngineIo,
    /// Answered and kept alive: the next request is due within the
    /// handshake deadline.
    KeepAlive,
}

#[derive(Debug)]
pub(crate) struct Session {
    /// Distinguishes this connection from earlier ones in the same slab
    /// slot, so a stale timer entry or completion never hits a newcomer.
    pub(crate) generation: u32,
    pub(crate) phase: Phase,
    /// Input carried between reads, shared frames waiting, subscriptions:
    /// one pointer while unused, the common case.
    pub(crate) spill: Option<Box<Spill>>,
    /// Bytes for the peer, after anything in `spill`'s queue; the driver
    /// tracks how much of the head is written.
    pub(crate) out: Vec<u8>,
    /// What the connection does with messages.
    pub(crate) route: Route,
    /// Its `[[routes]]` entry, for per-route limits (`NO_SPEC`: none).
    pub(crate) spec: u8,
    /// Shut our write side once `out` drains.
    pub(crate) shutdown_after_flush: bool,
    /// The peer shut its side: drop the connection once `out` drains.
    pub(crate) peer_gone: bool,
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
            spill: None,
            out: Vec::new(),
            route: Route::Echo,
            spec: NO_SPEC,
            shutdown_after_flush: false,
            peer_gone: false,
            deadline_tick: u64::MAX,
            armed_tick: u64::MAX,
            ticket: None,
            queued: Queued::Nowhere,
        }
    }

    /// The peer of a pending handshake, if accept or a PROXY header told.
    pub(crate) fn handshake_peer(&self) -> Option<IpAddr> {
        match self.phase {
            Phase::Handshake(hs) => hs.peer,
            _ => None,
        }
    }

    /// Keeps a pending handshake's peer once the socket was asked, so that
    /// admission need not ask again.
    pub(crate) fn remember_peer(&mut self, ip: IpAddr) {
        if let Phase::Handshake(hs) = &mut self.phase {
            hs.peer.get_or_insert(ip);
        }
    }

    /// Input bytes kept from earlier reads; they come before the next read.
    pub(crate) fn carried(&self) -> &[u8] {
        self.spill.as_deref().map_or(&[], |s| s.carry.as_slice())
    }

    /// The spill area, made on first use.
    pub(crate) fn spill_mut(&mut self) -> &mut Spill {
        self.spill.get_or_insert_with(Box::default)
    }

    /// Keeps what an upgrade's token gave the connection, for as long as
    /// it lives; nothing is allocated without one.
    fn keep_credentials(&mut self, grant: Option<Grant>, user: Option<UserCount>) {
        if grant.is_none() && user.is_none() {
            return;
        }
        let spill = self.spill_mut();
        spill.grant = grant.map(Box::new);
        spill.user = user;
    }

    /// Frees the spill area once nothing is in it.
    pub(crate) fn tidy(&mut self) {
        if self.spill.as_deref().is_some_and(Spill::is_empty) {
            self.spill = None;
        }
    }

    /// Bytes in the output queue ahead of `out`.
    pub(crate) fn queued(&self) -> usize {
        self.spill.as_deref().map_or(0, |s| s.queued)
    }

    /// Whether the output queue ahead of `out` holds anything.
    pub(crate) fn has_queue(&self) -> bool {
        self.spill.as_deref().is_some_and(|s| !s.queue.is_empty())
    }

    /// Whether data frames may still be sent.
    pub(crate) fn is_open(&self) -> bool {
        matches!(&self.phase, Phase::Open(ws) if ws.state() == State::Open)
    }

    /// Queues a shared frame behind everything produced so far.
    pub(crate) fn push_shared(&mut self, frame: SharedFrame) {
        let frame = self.as_events(frame);
        let spill = self.spill.get_or_insert_with(Box::default);
        spill.push_shared(&mut self.out, frame);
    }

    /// Processes `input` (the carried bytes followed by what was just read)
    /// and keeps what it could not consume yet in the carry.
    pub(crate) fn feed(&mut self, input: &mut [u8], limits: &mut ConnLimits<'_>) -> Next {
        if let Some(spill) = self.spill.as_deref_mut() {
            spill.carry.clear();
        }
        let borrowed = self.out.capacity() == 0;
        if borrowed {
            self.out = limits.pool.take();
        }
        let (used, next) = self.process(input, limits);
        if borrowed && self.out.is_empty() {
            limits.pool.give(std::mem::take(&mut self.out));
        }
        if used < input.len() && !matches!(self.phase, Phase::Lingering | Phase::Tarpit(_)) {
            self.spill_mut().carry.extend_from_slice(&input[used..]);
        } else {
            self.tidy();
        }
        next
    }

    /// Everything owed is written: whether the driver must shut its write
    /// side now. A peer that finished is dropped next instead, and the
    /// close sends our FIN, which saves the call.
    pub(crate) fn take_shutdown(&mut self) -> bool {
        std::mem::take(&mut self.shutdown_after_flush) && !self.peer_gone
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
            Phase::Open(_) => self.process_frames(input, limits),
            Phase::EngineIo(_) => self.engineio_input(input, limits),
            Phase::Events(_) | Phase::Tarpit(_) | Phase::Lingering => (input.len(), Next::Continue),
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
            Ok(Some(req)) => match limits.routes.engineio_route(req.path()) {
                Some(spec) => {
                    let (used, next) = self.engineio_request(&req, hs, spec, input, limits);
                    return (start + used, next);
                }
                None => answer_request(&req, hs, limits, &mut self.out),
            },
            Err(e) => Err(Answered::Refused(e)),
        };
        match outcome {
            Ok(Upgraded {
                ticket,
                events: Some(request),
                spec,
                user,
                grant,
                ..
            }) => {
                self.ticket = Some(ticket);
                // Kept for its expiry and its user (the server API's
                // disconnect): a stream asks for nothing else.
                self.keep_credentials(grant, user);
                self.route = Route::Hub;
                self.spec = spec;
                self.start_events(&request, limits);
                (start + input.len(), Next::Upgraded)
            }
            Ok(Upgraded {
                head_len,
                ticket,
                route,
                feed,
                deflate,
                app,
                spec,
                events: None,
                grant,
                user,
            }) => {
                self.ticket = Some(ticket);
                self.keep_credentials(grant.filter(|_| route == Route::Hub), user);
                let app_route = match route {
                    Route::App(i) => Some(limits.apps.get(i)),
                    _ => None,
                };
                let max_message = app_route.map_or_else(
                    || limits.routes.max_message(spec, limits.max_message),
                    |r| r.limits.max_message,
                );
                let max_message = match route {
                    Route::Hub => limits.routes.max_hub_message(spec),
                    _ => max_message,
                };
                let mut ws = ServerConn::new(max_message);
                if route == Route::Ticker {
                    // A feed ignores what clients say: nothing to assemble.
                    ws.discard_data();
                }
                self.phase = Phase::Open(ws);
                self.route = route;
                self.spec = spec;
                if app.is_some() {
                    self.spill_mut().app = app;
                }
                if let Some(params) = deflate {
                    limits.counters.deflate_conns += 1;
                    let threshold = limits.routes.deflate_threshold;
                    self.spill_mut().deflate = Some(PerMessageDeflate::new(params, threshold));
                }
                limits.counters.handshakes += 1;
                if let Some(topic) = feed {
                    let generation = self.generation;
                    let spill = self.spill_mut();
                    let compress = spill.deflate.as_ref().and_then(|d| d.shared_window());
                    let subs = &mut spill.subs;
                    let routes = limits.routes;
                    // A fresh connection holds no topic: this cannot fail.
                    let _ = limits.pubsub.topics.subscribe(
                        limits.key,
                        generation,
                        &topic,
                        Limit {
                            compress,
                            ..routes.ticker_limit(spec)
                        },
                        subs,
                        usize::MAX,
                        0,
                    );
                    // The latest tick of every key first, then live ones.
                    let threshold = routes.deflate_threshold;
                    if let Some(snapshot) = limits.pubsub.topics.latest(&topic, compress, threshold)
                    {
                        self.push_shared(snapshot);
                    }
                    if routes.ticker_send_buffer != 0 {
                        let socket = socket2::SockRef::from(&limits.socket);
                        if let Err(e) = socket.set_send_buffer_size(routes.ticker_send_buffer) {
                            tracing::debug!("cannot size a feed's send buffer: {e}");
                        }
                    }
                }
                if let Some(app_route) = app_route {
                    self.app_open(app_route, limits.app_ctx());
                }
                let closed_on_open = !self.is_open();
                let (used, next) = self.process_frames(&mut input[head_len..], limits);
                let next = match next {
                    Next::Continue if closed_on_open => Next::AwaitClose,
                    Next::Continue => Next::Upgraded,
                    next => next,
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
            Reason::UserCap => "too many connections for this user\n",
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

    fn process_frames(&mut self, input: &mut [u8], limits: &mut ConnLimits<'_>) -> (usize, Next) {
        let Phase::Open(ws) = &mut self.phase else {
            return (input.len(), Next::Continue);
        };
        let was = ws.state();
        let mut pos = 0;
        // How an App connection's WebSocket ended, for its close handler.
        let mut ended: Option<(u16, String)> = None;
        loop {
            let deflate = self.spill.as_deref_mut().and_then(|s| s.deflate.as_mut());
            let held = ws.held();
            let allowance = message_allowance(limits.routes.message_budget, held);
            let received = ws.receive_within(&mut input[pos..], &mut self.out, deflate, allowance);
            message_bytes_moved(held, ws.held());
            match received {
                Ok(step) => {
                    pos += step.consumed;
                    match step.event {
                        Some(Event::Message { opcode, payload }) => {
                            limits.counters.messages_received += 1;
                            let reply = match self.route {
                                Route::Echo => {
                                    let deflate =
                                        self.spill.as_deref_mut().and_then(|s| s.deflate.as_mut());
                                    ws.send(&mut self.out, opcode, &payload, deflate)
                                }
                                Route::Hub => {
                                    let spill = self.spill.get_or_insert_with(Box::default);
                                    let compress =
                                        spill.deflate.as_ref().and_then(|d| d.shared_window());
                                    let answer = hub_request(
                                        opcode,
                                        &payload,
                                        (self.generation, self.spec, compress),
                                        spill,
                                        limits,
                                    );
                                    answer.is_some_and(|text| {
                                        ws.send(
                                            &mut self.out,
                                            OpCode::Text,
                                            text.as_bytes(),
                                            spill.deflate.as_mut(),
                                        )
                                    })
                                }
                                // A feed is one-way; what clients say is ignored.
                                Route::Ticker => false,
                                Route::EngineIo => {
                                    let eio = &mut *limits.engineio;
                                    if let Some(&sid) = eio.carried.get(&limits.key) {
                                        let from = eio.conn_ref(limits.key, self.generation);
                                        let text = opcode == OpCode::Text;
                                        let data = payload.to_vec();
                                        eio.ask(sid, from, Ask::Frame { text, data });
                                    }
                                    false
                                }
                                Route::App(i) => {
                                    let route = limits.apps.get(i);
                                    let msg = match opcode {
                                        OpCode::Text => {
                                            match simdutf8::basic::from_utf8(&payload) {
                                                Ok(text) => Message::Text(text),
                                                // The decoder validated it already.
                                                Err(_) => Message::Binary(&payload),
                                            }
                                        }
                                        _ => Message::Binary(&payload),
                                    };
                                    let spill = self.spill.get_or_insert_with(Box::default);
                                    handler::call(
                                        route,
                                        Some(ws),
                                        &mut self.out,
                                        spill,
                                        self.generation,
                                        limits.app_ctx(),
                                        Call::Message(msg),
                                    );
                                    // Sends counted themselves.
                                    false
                                }
                            };
                            if reply {
                                limits.counters.messages_sent += 1;
                            }
                        }
                        Some(Event::Close(close)) => {
                            // Only the first close frame of either side ends
                            // the connection; ours was counted when it was sent.
                            if was == State::Open {
                                limits
                                    .counters
                                    .closed(close.code.unwrap_or(CloseCode::NO_STATUS));
                            }
                            if matches!(self.route, Route::App(_)) {
                                let code = close.code.map_or(CloseCode::NO_STATUS.0, |c| c.0);
                                ended = Some((code, close.reason.to_owned()));
                            }
                        }
                        Some(_) => {}
                        None if step.consumed == 0 => break,
                        None => {}
                    }
                }
                Err(e) => {
                    if was == State::Open {
                        limits.counters.closed(e.close_code());
                    }
                    if e == ProtocolError::BudgetExhausted {
                        limits.counters.budget_closes += 1;
                    }
                    if matches!(self.route, Route::App(_)) {
                        ended = Some((e.close_code().0, e.to_string()));
                    }
                    log_violation(e);
                    break;
                }
            }
        }
        if let Route::App(i) = self.route {
            if ws.state() != State::Open {
                let spill = self.spill.get_or_insert_with(Box::default);
                handler::ended(
                    limits.apps.get(i),
                    ws,
                    &mut self.out,
                    spill,
                    self.generation,
                    limits.app_ctx(),
                    ended,
                );
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
                if let Route::App(_) = self.route {
                    let spill = self.spill.get_or_insert_with(Box::default);
                    let app = spill.app.get_or_insert_with(Box::default);
                    app.closing = Some((code.0, reason.into()));
                }
                Next::AwaitClose
            }
            Phase::Open(ws) if ws.state() == State::CloseSent => Next::AwaitClose,
            // A stream ends with the connection: the client reconnects
            // after the `retry:` it was given.
            _ => {
                self.stream_closed(code);
                self.linger()
            }
        }
    }

    /// The peer sent its FIN: whatever is owed is flushed, then the
    /// transport closes; nothing more is read.
    pub(crate) fn peer_finished(&mut self) -> Next {
        self.stream_ended(Ended::Client);
        self.linger()
    }

    pub(in crate::shard) fn linger(&mut self) -> Next {
        self.let_message_go();
        self.phase = Phase::Lingering;
        if let Some(spill) = self.spill.as_deref_mut() {
            spill.carry.clear();
        }
        self.shutdown_after_flush = true;
        Next::Linger
    }
}

impl Session {
    /// Gives the shard's message budget back what this connection's
    /// message in progress (or Engine.IO body) holds; call as the
    /// connection leaves its phase.
    pub(crate) fn let_message_go(&self) {
        match &self.phase {
            Phase::Open(ws) => message_bytes_moved(ws.held(), 0),
            Phase::EngineIo(pending) => message_bytes_moved(pending.held(), 0),
            _ => {}
        }
    }

    /// Appends whole frames to the output, from a pooled buffer when the
    /// connection holds none.
    pub(crate) fn write(&mut self, bytes: &[u8], pool: &mut BufPool) {
        if self.out.capacity() == 0 {
            self.out = pool.take();
        }
        self.out.extend_from_slice(bytes);
    }
}

/// How a request head was answered when it did not upgrade.
pub(super) enum Answered {
    /// A plain HTTP response was written.
    Plain,
    /// A malformed or unacceptable request.
    Refused(HandshakeError),
    /// Policy said no: answer with this status at once.
    Denied(u16, Reason),
    /// A cap or rate said no: park, answer later.
    Parked(Refusal),
}

/// A request head that upgraded (or opened an event stream).
pub(super) struct Upgraded {
    pub(super) head_len: usize,
    pub(super) ticket: Ticket,
    pub(super) route: Route,
    /// The feed topic to subscribe to (ticker routes).
    pub(super) feed: Option<String>,
    /// The permessage-deflate agreement.
    pub(super) deflate: Option<DeflateParams>,
    /// Handler state (App routes).
    pub(super) app: Option<Box<handler::AppConn>>,
    /// The `[[routes]]` entry (`NO_SPEC`: none).
    pub(super) spec: u8,
    /// What an event stream asks for (its 200 head is in `out`).
    pub(super) events: Option<EventsRequest>,
    /// What the connection's signed token allows (with `--jwt-*`).
    pub(super) grant: Option<Grant>,
    /// Its count against `--max-conns-per-user`.
    pub(super) user: Option<UserCount>,
}

/// A route, the feed topic to subscribe to (ticker routes) and the
/// `[[routes]]` entry.
type Routed = (Route, Option<String>, u8);

/// Answers a complete request head: `Ok` when it upgraded (the 101 is in
/// `out`).
fn answer_request(
    req: &handshake::Request<'_, '_>,
    hs: Handshaking,
    limits: &ConnLimits<'_>,
    out: &mut Vec<u8>,
) -> Result<Upgraded, Answered> {
    if !req.wants_websocket() {
        if let Some(spec) = events::route_of(req.path(), limits.routes) {
            return events::answer(req, hs, spec, limits, out);
        }
        return Err(match (req.method, req.path()) {
            // A balancer must see the drain to stop sending clients here.
            ("GET", "/healthz") if limits.metrics.is_draining() => {
                handshake::encode_plain_response(out, 503, "", "draining\n");
                Answered::Plain
            }
            ("GET", "/healthz") => {
                handshake::encode_plain_response(out, 200, "", "ok\n");
                Answered::Plain
            }
            // The status page watches the ticker feed, so it lives where one does.
            ("GET", "/") if !limits.routes.ticker_symbols.is_empty() => {
                crate::status::encode_page(out);
                Answered::Plain
            }
            ("GET", "/metrics") => {
                let body = limits.metrics.render(limits.admission, limits.pubsub.hub());
                let format = "text/plain; version=0.0.4; charset=utf-8";
                handshake::encode_response(out, 200, format, "", &body);
                Answered::Plain
            }
            // An event stream asked for where no hub serves one.
            ("GET", _) if events::wanted(req) => Answered::Refused(HandshakeError::NotFound),
            ("GET", _) => Answered::Refused(HandshakeError::UpgradeRequired),
            _ => Answered::Refused(HandshakeError::MethodNotAllowed),
        });
    }
    let upgrade = req.validate_upgrade().map_err(Answered::Refused)?;
    let routed = route_for(req.path(), limits.routes, limits.apps)
        .ok_or(Answered::Refused(HandshakeError::NotFound))?;
    let (route, feed, spec) = routed;
    if limits.metrics.is_draining() {
        handshake::encode_plain_response(out, 503, "Retry-After: 1\r\n", "server shutting down\n");
        return Err(Answered::Plain);
    }
    let mut subprotocol = upgrade.choose_subprotocol(limits.subprotocols);
    let Admitted {
        ticket,
        request,
        grant,
        user,
    } = admit(req, hs, route, subprotocol, limits)?;
    let admission = limits.admission;
    let registry = &admission.registry;
    let mut app = None;
    let chosen;
    if let Route::App(i) = route {
        match handler::upgrade(limits.apps.get(i), &request) {
            Ok((protocol, data)) => {
                chosen = protocol;
                if chosen.is_some() {
                    subprotocol = chosen.as_deref();
                }
                app = Some(Box::new(handler::AppConn {
                    data,
                    ..handler::AppConn::default()
                }));
            }
            Err(status) => {
                registry.release(ticket);
                admission.registry.stats.rejected(Reason::Hook);
                return Err(Answered::Denied(status, Reason::Hook));
            }
        }
    }
    let cap = limits.routes.max_deflate_conns;
    let policy = match (route, limits.routes.deflate(spec)) {
        // A feed is only ever sent as shared frames, which can be
        // compressed only without context takeover.
        (Route::Ticker, DeflatePolicy::On) => DeflatePolicy::NoContextTakeover,
        (_, policy) => policy,
    };
    let deflate = deflate_agreement(req, policy, cap, limits.counters);
    let extensions = deflate.map(|p| p.response());
    upgrade.encode_accept(out, subprotocol, extensions.as_deref());
    Ok(Upgraded {
        head_len: req.head_len,
        ticket,
        route,
        feed,
        deflate,
        app,
        spec,
        events: None,
        grant,
        user,
    })
}

/// Admission, the same for an upgrade and an event stream: the client's
/// address (PROXY header, trusted X-Forwarded-For), the policy (Origin,
/// tokens, subprotocol, hook) and the caps and rates, whose refusal parks
/// the client in the tarpit.
pub(super) fn admit<'r>(
    req: &'r handshake::Request<'_, 'r>,
    hs: Handshaking,
    route: Route,
    subprotocol: Option<&'r str>,
    limits: &ConnLimits<'_>,
) -> Result<Admitted<'r>, Answered> {
    let admission = limits.admission;
    // io_uring's multishot accept reports no address, and asking the socket
    // costs a system call per upgrade: ask only when a decision needs it.
    let peer = match hs.peer {
        Some(peer) => peer,
        None if admission.needs_client_ip() || matches!(route, Route::App(_)) => limits.peer_ip(),
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let client = admission.client_ip(peer, req);
    let mut request = UpgradeRequest::new(req.target, req.headers, client, subprotocol);
    if let Err(denied) = admission.config.policy.check(&request) {
        admission.registry.stats.rejected(denied.reason);
        return Err(Answered::Denied(denied.status, denied.reason));
    }
    let grant = match &admission.config.policy.jwt {
        None => None,
        Some(tokens) => {
            let now = super::deadlines::unix_now();
            let verdict = tokens
                .grant(request.query, request.header("authorization"), now)
                .or_else(|refused| match refused {
                    // A hub WebSocket's token may come as its first message,
                    // an Engine.IO session's in its Socket.IO CONNECT.
                    None if (route == Route::Hub && req.wants_websocket())
                        || route == Route::EngineIo =>
                    {
                        tokens.awaiting(now).ok_or(None)
                    }
                    refused => Err(refused),
                });
            match verdict {
                Ok(grant) => Some(grant),
                Err(refused) => {
                    let reason = Reason::of_token(refused);
                    tracing::debug!(%client, reason = reason.label(), "token refused");
                    admission.registry.stats.rejected(reason);
                    return Err(Answered::Denied(reason.status(), reason));
                }
            }
        }
    };
    let registry = &admission.registry;
    let park = |refused: crate::admission::registry::Refused| {
        tracing::debug!(%client, reason = refused.reason.label(), "upgrade refused");
        crate::admission::stats::AdmissionStats::bump(&registry.stats.tarpitted);
        Answered::Parked(Refusal {
            reason: refused.reason,
            wait_secs: refused
                .wait_ns
                .div_ceil(1_000_000_000)
                .min(u64::from(u32::MAX)) as u32,
        })
    };
    let ticket = registry
        .admit(admission.key(client), registry.now_ns())
        .map_err(park)?;
    request.user = grant
        .as_ref()
        .filter(|g| !g.is_awaiting())
        .map(|g| g.sub.clone());
    let user = match &grant {
        Some(grant) if !grant.is_awaiting() => match registry.admit_user(&grant.sub) {
            Ok(count) => count,
            Err(refused) => {
                registry.release(ticket);
                return Err(park(refused));
            }
        },
        _ => None,
    };
    Ok(Admitted {
        ticket,
        request,
        grant,
        user,
    })
}

/// An upgrade admission let through.
pub(super) struct Admitted<'r> {
    pub(super) ticket: Ticket,
    pub(super) request: UpgradeRequest<'r>,
    /// What its signed token allows (with `--jwt-*`).
    pub(super) grant: Option<Grant>,
    /// Its count against `--max-conns-per-user`: kept as long as the
    /// connection is.
    pub(super) user: Option<UserCount>,
}

/// What an upgrade agrees on for permessage-deflate under `policy`: what
/// the client offered, unless the server already holds `cap` deflate
/// connections (0: no cap).
pub(super) fn deflate_agreement(
    req: &handshake::Request<'_, '_>,
    policy: DeflatePolicy,
    cap: usize,
    counters: &Counters,
) -> Option<DeflateParams> {
    if policy == DeflatePolicy::Off || (cap != 0 && counters.deflate_conns >= cap as u64) {
        return None;
    }
    let offers = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
        .map(|h| h.value);
    deflate::negotiate(offers, policy)
}

/// Subscribes connection `limits.key` to hub topic `name` and starts it
/// where the topic's stream is now, or resumes it after `from` with at
/// most route `spec`'s `max-recovery` messages and its backpressure bound
/// of replay (over either, "too many").
pub(super) fn hub_join(
    name: &str,
    from: Option<Position>,
    (limit, spec): (Limit, u8),
    generation: u32,
    subs: &mut Vec<(u32, u32)>,
    limits: &mut ConnLimits<'_>,
) -> Result<Joined, SubscribeError> {
    let topic = hub_topic(name);
    let seq = limits.pubsub.next_join();
    limits.pubsub.topics.subscribe(
        limits.key,
        generation,
        &topic,
        limit,
        subs,
        limits.routes.max_topics_per_conn,
        seq,
    )?;
    let shard = limits.pubsub.shard();
    let replay = ReplayLimit {
        messages: limits.routes.max_recovery(spec),
        bytes: limit.bound,
    };
    let joined = limits.pubsub.hub().join(shard, &topic, seq, from, replay);
    // The marker is in this shard's own inbox: take it in this turn,
    // wake-up or not.
    limits.pubsub.woken = true;
    Ok(joined)
}

/// Which route serves `path`, for a feed the topic it subscribes to, and
/// the `[[routes]]` entry.
fn route_for(path: &str, routes: &Routes, apps: &AppRoutes) -> Option<Routed> {
    if let Some(i) = apps.find(path) {
        // A config file's app route keeps its entry for what the handler's
        // limits do not cover (deflate).
        let spec = routes
            .table
            .iter()
            .position(|r| r.kind == RouteKind::App && r.path == path)
            .map_or(NO_SPEC, |p| p as u8);
        return Some((Route::App(i), None, spec));
    }
    if !routes.table.is_empty() {
        return routes.table.iter().enumerate().find_map(|(i, spec)| {
            // Fewer than 255 entries: checked when the table is loaded.
            let index = i as u8;
            match spec.kind {
                RouteKind::Echo => (path == spec.path).then_some((Route::Echo, None, index)),
                RouteKind::Hub => (path == spec.path).then_some((Route::Hub, None, index)),
                RouteKind::Ticker => {
                    let feed = if path == spec.path {
                        Some(ticker::ALL.to_owned())
                    } else {
                        let symbol = path.strip_prefix(spec.path.as_str())?.strip_prefix('/')?;
                        routes
                            .ticker_symbols
                            .iter()
                            .any(|s| s == symbol)
                            .then(|| ticker::topic(symbol))
                    };
                    feed.map(|f| (Route::Ticker, Some(f), index))
                }
                // Served through `apps`, found above when registered.
                RouteKind::App => None,
                // Plain HTTP first: found before any upgrade is read.
                RouteKind::EngineIoEcho | RouteKind::SocketIoReference | RouteKind::SocketIo => {
                    None
                }
            }
        });
    }
    if !routes.ticker_symbols.is_empty() {
        if path == "/ticker" {
            return Some((Route::Ticker, Some(ticker::ALL.to_owned()), NO_SPEC));
        }
        if let Some(symbol) = path.strip_prefix("/ticker/") {
            return routes
                .ticker_symbols
                .iter()
                .any(|s| s == symbol)
                .then(|| (Route::Ticker, Some(ticker::topic(symbol)), NO_SPEC));
        }
    }
    if routes.hub && path == "/hub" {
        return Some((Route::Hub, None, NO_SPEC));
    }
    (routes.echo_everywhere || path == "/echo").then_some((Route::Echo, None, NO_SPEC))
}

/// Carries out one hub request; the reply to send, if any.
fn hub_request(
    opcode: OpCode,
    payload: &[u8],
    (generation, spec, compress): (u32, u8, Option<u8>),
    spill: &mut Spill,
    limits: &mut ConnLimits<'_>,
) -> Option<String> {
    let Spill {
        subs,
        grant: held,
        publish_tat,
        user,
        ..
    } = spill;
    let grant = held.as_deref();
    if opcode != OpCode::Text {
        return Some(pubsub_protocol::error(
            "hub requests are JSON text messages",
        ));
    }
    let routes = limits.routes;
    let request = match pubsub_protocol::parse(payload) {
        Ok(r) => r,
        Err(e) => return Some(pubsub_protocol::error(&e)),
    };
    let awaiting = grant.is_some_and(Grant::is_awaiting);
    match request {
        HubRequest::Auth(_) if grant.is_some() && !awaiting => Some(pubsub_protocol::error(
            "this connection has its token; send refresh to replace it",
        )),
        // Awaited, or a server that takes no tokens, which `first_token` says.
        HubRequest::Auth(token) => Some(first_token(&token, (held, user), limits)),
        _ if awaiting => Some(pubsub_protocol::error(
            "send the token first: {\"op\":\"auth\",\"token\":\"...\"}",
        )),
        HubRequest::Subscribe { topics: names, .. }
            if grant.is_some_and(|g| names.iter().any(|t| !g.may_subscribe(t))) =>
        {
            let grant = grant.expect("checked above");
            let refused = names.iter().find(|t| !grant.may_subscribe(t));
            Some(pubsub_protocol::error(&format!(
                "this token may not subscribe to {}",
                refused.map_or("", String::as_str)
            )))
        }
        HubRequest::Publish { topic, .. } if grant.is_some_and(|g| !g.may_publish(&topic)) => Some(
            pubsub_protocol::error(&format!("this token may not publish to {topic}")),
        ),
        HubRequest::Refresh(token) => Some(refresh(&token, held, limits)),
        HubRequest::Subscribe {
            topics: names,
            since,
        } => {
            let limit = Limit {
                compress,
                ..routes.hub_limit(spec)
            };
            let mut answers = Vec::with_capacity(names.len());
            for name in &names {
                let from = since.iter().find(|(t, _)| t == name).map(|(_, p)| *p);
                match hub_join(name, from, (limit, spec), generation, subs, limits) {
                    Err(SubscribeError::TooManyTopics) => {
                        return Some(pubsub_protocol::error(&format!(
                            "at most {} topics per connection",
                            routes.max_topics_per_conn
                        )));
                    }
                    // Goes on as it was: no new position to report.
                    Err(SubscribeError::Duplicate) => answers.push(Subscribed {
                        topic: name,
                        position: None,
                        recovered: None,
                    }),
                    Ok(joined) => answers.push(Subscribed {
                        topic: name,
                        position: Some(joined.position),
                        recovered: joined.recovered,
                    }),
                }
            }
            Some(pubsub_protocol::subscribed(&names, &answers))
        }
        HubRequest::Unsubscribe(names) => {
            for name in &names {
                let topic = hub_topic(name);
                if limits.pubsub.topics.unsubscribe(&topic, subs) {
                    limits.pubsub.hub().leave(&topic);
                }
            }
            Some(pubsub_protocol::ack("unsubscribed", &names))
        }
        HubRequest::Publish { .. } if payload.len() > routes.max_publish => {
            Some(pubsub_protocol::error(&format!(
                "a publish is at most {} bytes; this one is {}",
                routes.max_publish,
                payload.len()
            )))
        }
        HubRequest::Publish { topic, data } => {
            if let Err(wait_ns) = publish_paced(publish_tat, routes, limits) {
                return Some(pubsub_protocol::error(&format!(
                    "publish rate exceeded: at most {} per second; retry in {} ms",
                    routes.publish_rate,
                    wait_ns.div_ceil(1_000_000)
                )));
            }
            let rule = routes.history(spec, &topic);
            limits.pubsub.hub().publish_positioned(&topic, data, rule);
            None
        }
    }
}

/// Takes one publish from a hub connection's `--publish-rate` bucket
/// (`tat`, see `admission::rate`): `Err` with the nanoseconds until one
/// would pass.
fn publish_paced(tat: &mut u64, routes: &Routes, limits: &ConnLimits<'_>) -> Result<(), u64> {
    if routes.publish_rate == 0 {
        return Ok(());
    }
    let rate =
        crate::admission::rate::Rate::with_burst_or_rate(routes.publish_rate, routes.publish_burst);
    *tat = rate.take(*tat, limits.admission.registry.now_ns())?;
    Ok(())
}

/// The token a hub connection sends as its first message (`auth`): once it
/// verifies (and its user is under `--max-conns-per-user`), it is the
/// connection's, as if it had come with the upgrade. A refused one leaves
/// the connection waiting, to be closed with 4001 when its time is up.
fn first_token(
    token: &str,
    (held, user): (&mut Option<Box<Grant>>, &mut Option<UserCount>),
    limits: &ConnLimits<'_>,
) -> String {
    let Some(tokens) = &limits.admission.config.policy.jwt else {
        return pubsub_protocol::error("this server takes no tokens");
    };
    let now = super::deadlines::unix_now();
    let registry = &limits.admission.registry;
    match tokens.grant_of(token, now) {
        Err(refused) => {
            registry.stats.rejected(Reason::of_token(refused));
            let why = crate::auth::why_refused(refused);
            pubsub_protocol::error(&format!("auth refused: {why}"))
        }
        Ok(grant) => match registry.admit_user(&grant.sub) {
            Err(_) => pubsub_protocol::error("auth refused: too many connections for this user"),
            Ok(count) => {
                *user = count;
                let sub = serde_json::Value::from(&*grant.sub);
                let answer = format!(
                    "{{\"op\":\"authed\",\"sub\":{sub}{}}}",
                    exp_field(grant.exp)
                );
                *held = Some(Box::new(grant));
                answer
            }
        },
    }
}

/// A hub connection's `refresh`: a newer token for the same `sub` takes
/// the old one's place (its claims, its expiry); anything else leaves the
/// old one standing.
fn refresh(token: &str, held: &mut Option<Box<Grant>>, limits: &ConnLimits<'_>) -> String {
    let Some(tokens) = &limits.admission.config.policy.jwt else {
        return pubsub_protocol::error("this server takes no tokens");
    };
    let now = super::deadlines::unix_now();
    match tokens.grant_of(token, now) {
        Err(refused) => {
            let why = crate::auth::why_refused(refused);
            pubsub_protocol::error(&format!("refresh refused: {why}"))
        }
        Ok(grant) if held.as_ref().is_some_and(|old| old.sub != grant.sub) => {
            pubsub_protocol::error("refresh refused: the token is for another sub")
        }
        Ok(grant) => {
            let answer = format!("{{\"op\":\"refreshed\"{}}}", exp_field(grant.exp));
            *held = Some(Box::new(grant));
            answer
        }
    }
}

/// A token's `exp` as the last field of an answer (nothing without one).
fn exp_field(exp: Option<u64>) -> String {
    exp.map_or_else(String::new, |exp| format!(",\"exp\":{exp}"))
}

fn log_violation(e: ProtocolError) {
    tracing::debug!(code = e.close_code().0, "closing: {e}");
}
