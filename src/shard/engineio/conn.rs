//! The connection side of Engine.IO: a request head on an Engine.IO route
//! is answered at once where it can be (refusals, CORS preflights, a new
//! session's handshake) and otherwise handed to the session's owner; the
//! connection then waits in [`Phase::EngineIo`], holding no buffer, for
//! the owner's answer, which [`Session::answer_engineio`] writes.

use std::collections::HashMap;
use std::net::IpAddr;

use super::http::{self, Manner};
use super::EngineIo;
use crate::buf::pool::BufPool;
use crate::config::Routes;
use crate::engineio::handoff::{Answer, Ask, ConnRef, Handoff, ToOwner};
use crate::engineio::{request, Config, Refusal, Request as EioRequest, Sid, Transport};
use crate::protocol::deflate::{DeflatePolicy, Params as DeflateParams, PerMessageDeflate};
use crate::protocol::handshake::{Request, MAX_REQUEST_BYTES};
use crate::protocol::ServerConn;
use crate::shard::counters::Counters;
use crate::shard::session::{
    admit, deflate_agreement, message_allowance, message_bytes_moved, Answered, ConnLimits,
    Handshaking, Next, Phase, Route, Session,
};

/// A connection whose Engine.IO request waits for its session's owner.
#[derive(Debug)]
pub(crate) struct Pending {
    sid: Sid,
    waiting: Waiting,
    manner: Manner,
    /// The client, for the next request on a kept-alive connection.
    peer: Option<IpAddr>,
}

#[derive(Debug)]
enum Waiting {
    /// The owner's answer to a poll or a whole `POST`.
    Answer,
    /// A `POST`'s body, `length` bytes, as much as has arrived. The whole
    /// `length` is reserved in the shard's message budget from the head
    /// on, so that bodies arriving together cannot pass it. Kept here,
    /// not in the carry, which holds at most a request head.
    Body { length: usize, body: Vec<u8> },
    /// Whether the upgrade may go ahead; its 101 is ready, with the
    /// permessage-deflate agreement it states.
    Upgrade(Vec<u8>, Option<DeflateParams>),
}

impl Pending {
    /// Message-budget bytes a body in progress holds.
    pub(crate) fn held(&self) -> usize {
        match &self.waiting {
            Waiting::Body { length, .. } => *length,
            _ => 0,
        }
    }
}

impl EngineIo {
    pub(crate) fn conn_ref(&self, key: usize, generation: u32) -> ConnRef {
        ConnRef {
            shard: self.shard,
            key: key as u32,
            generation,
        }
    }

    pub(crate) fn ask(&mut self, sid: Sid, from: ConnRef, ask: Ask) {
        self.outbox
            .push(Handoff::ToOwner(ToOwner { sid, from, ask }));
    }
}

/// Whether the client lets the connection carry its next request.
fn keeps_alive(req: &Request<'_, '_>) -> bool {
    req.minor_version >= 1
        && !req
            .header_tokens("connection")
            .any(|t| t.eq_ignore_ascii_case(b"close"))
}

/// `Access-Control-Allow-Origin` for this request on route `spec`: the
/// route's `cors-origin` (`*`, or the one origin it names when the
/// request comes from it); none where the route sets none.
fn cors(req: &Request<'_, '_>, routes: &Routes, spec: u8) -> Option<Box<str>> {
    let allowed = routes.spec(spec)?.cors_origin.as_deref()?;
    if allowed == "*" || req.header("origin") == Some(allowed.as_bytes()) {
        Some(allowed.into())
    } else {
        None
    }
}

/// Whether a body follows the head.
fn has_body(req: &Request<'_, '_>) -> bool {
    req.header("transfer-encoding").is_some()
        || req
            .header("content-length")
            .is_some_and(|v| v.trim_ascii() != b"0")
}

/// A `Content-Type` that is not text: binary goes over polling as base64.
fn binary_body(req: &Request<'_, '_>) -> bool {
    req.header("content-type").is_some_and(|t| {
        let media = t.split(|&b| b == b';').next().unwrap_or_default();
        media
            .trim_ascii()
            .eq_ignore_ascii_case(b"application/octet-stream")
    })
}

impl Session {
    /// A complete request head on Engine.IO route `spec`; `wire` is the
    /// input from the head's first byte. Returns the bytes consumed.
    pub(in crate::shard) fn engineio_request(
        &mut self,
        req: &Request<'_, '_>,
        hs: Handshaking,
        spec: u8,
        wire: &[u8],
        limits: &mut ConnLimits<'_>,
    ) -> (usize, Next) {
        let head = req.head_len;
        let routes = limits.routes;
        let manner = Manner {
            keep_alive: keeps_alive(req),
            cors: cors(req, routes, spec),
        };
        self.route = Route::EngineIo;
        self.spec = spec;
        let upgrade = req.wants_websocket();
        if req.method == "OPTIONS" && manner.cors.is_some() && !upgrade {
            let asked = req.header("access-control-request-headers");
            http::encode_preflight(&mut self.out, asked, &manner);
            return (head, self.answered(&manner, hs.peer()));
        }
        let query = req.target.split_once('?').map_or("", |(_, q)| q);
        let request = match request::parse(req.method, query, upgrade) {
            Ok(request) => request,
            Err(refusal) => {
                super::count(|c| c.refused(refusal));
                // A body nobody reads cannot be told from the next
                // request: a refused request that has one ends its
                // connection.
                if has_body(req) {
                    let closing = manner.closing();
                    return (wire.len(), self.refuse(refusal, upgrade, &closing, hs));
                }
                return (head, self.refuse(refusal, upgrade, &manner, hs));
            }
        };
        let limits_here = routes.engineio(spec);
        let max_payload = limits_here.max_payload;
        let from = limits.engineio.conn_ref(limits.key, self.generation);
        let pending = |sid, waiting, manner| {
            Phase::EngineIo(Box::new(Pending {
                sid,
                waiting,
                manner,
                peer: hs.peer(),
            }))
        };
        match request {
            EioRequest::OpenPolling | EioRequest::OpenWebSocket => {
                let transport = match request {
                    EioRequest::OpenPolling => Transport::Polling,
                    _ => Transport::WebSocket,
                };
                let accept = if transport == Transport::WebSocket {
                    match req.validate_upgrade() {
                        Ok(upgrade) => {
                            let deflate = deflate_for(req, routes, spec, limits.counters);
                            Some((http::accept(&upgrade, deflate, &manner), deflate))
                        }
                        Err(e) => {
                            e.encode_response(&mut self.out);
                            return (wire.len(), self.linger());
                        }
                    }
                } else {
                    None
                };
                if limits.metrics.is_draining() {
                    let next = self.close_with(503, b"server shutting down\n", &manner);
                    return (wire.len(), next);
                }
                // Its user is not counted (`--max-conns-per-user` is for
                // WebSockets and event streams): a session's requests come
                // and go over many connections.
                let (ticket, request, grant) = match admit(req, hs, Route::EngineIo, None, limits) {
                    Ok(admitted) => (admitted.ticket, admitted.request, admitted.grant),
                    Err(Answered::Parked(refusal)) => {
                        self.phase = Phase::Tarpit(refusal);
                        return (wire.len(), Next::Tarpit);
                    }
                    Err(_) => {
                        super::count(|c| c.refused(Refusal::Forbidden));
                        return (
                            wire.len(),
                            self.refuse(Refusal::Forbidden, upgrade, &manner, hs),
                        );
                    }
                };
                let config = Config {
                    ping_interval_ms: limits_here.ping_interval_ms,
                    ping_timeout_ms: limits_here.ping_timeout_ms,
                    max_payload,
                    max_queued_bytes: u32::try_from(limits_here.max_backlog).unwrap_or(u32::MAX),
                    ..Config::default()
                };
                let app = routes
                    .spec(spec)
                    .and_then(|s| s.handler.as_deref())
                    .and_then(|name| limits.apps.socketio(name));
                let behaviour = super::Behaviour::of(&limits_here, routes, app);
                // Only a `socketio` route reads a token from the CONNECT:
                // anywhere else, a session without one is refused.
                if grant.as_ref().is_some_and(crate::auth::Grant::is_awaiting)
                    && !matches!(behaviour, super::Behaviour::Hub(_))
                {
                    limits.admission.registry.release(ticket);
                    super::count(|c| c.refused(Refusal::Forbidden));
                    return (
                        wire.len(),
                        self.refuse(Refusal::Forbidden, upgrade, &manner, hs),
                    );
                }
                let handshake = behaviour
                    .keeps_handshake()
                    .then(|| super::Handshake::of(&request));
                let now = limits.engineio.now_ms;
                let eio = &mut *limits.engineio;
                let mut out = super::owner::Out {
                    outbox: &mut eio.outbox,
                    registry: &limits.admission.registry,
                    hub: limits.pubsub.hub(),
                };
                let sid = match eio.owner.open(
                    config,
                    behaviour,
                    (handshake, grant),
                    transport,
                    ticket,
                    from,
                    now,
                    &mut out,
                ) {
                    Ok(sid) => sid,
                    Err(ticket) => {
                        limits.admission.registry.release(ticket);
                        tracing::warn!("no randomness for an Engine.IO session id");
                        return (wire.len(), self.close_with(503, b"", &manner));
                    }
                };
                // The open packet reaches this connection as every answer
                // does, in the shard's Engine.IO turn.
                match accept {
                    Some((accept, deflate)) => {
                        self.out.extend_from_slice(&accept);
                        let threshold = routes.deflate_threshold;
                        self.open_websocket(max_payload, deflate, threshold, limits.counters);
                        limits.engineio.carried.insert(limits.key, sid);
                        (head, Next::Upgraded)
                    }
                    None => {
                        self.phase = pending(sid, Waiting::Answer, manner);
                        (head, Next::EngineIo)
                    }
                }
            }
            EioRequest::Poll(sid) => {
                limits.engineio.ask(sid, from, Ask::Poll);
                self.phase = pending(sid, Waiting::Answer, manner);
                (head, Next::EngineIo)
            }
            EioRequest::Upgrade(sid) => match req.validate_upgrade() {
                Ok(upgrade) => {
                    let deflate = deflate_for(req, routes, spec, limits.counters);
                    let accept = http::accept(&upgrade, deflate, &manner);
                    limits.engineio.ask(sid, from, Ask::Upgrade);
                    self.phase = pending(sid, Waiting::Upgrade(accept, deflate), manner);
                    (head, Next::EngineIo)
                }
                Err(e) => {
                    e.encode_response(&mut self.out);
                    (wire.len(), self.linger())
                }
            },
            EioRequest::Post(sid) => {
                let length = match req.header("content-length") {
                    Some(v) => std::str::from_utf8(v)
                        .ok()
                        .and_then(|v| v.trim().parse::<usize>().ok()),
                    None if req.header("transfer-encoding").is_some() => None,
                    None => Some(0),
                };
                let Some(length) = length else {
                    let next = self.close_with(411, b"a POST needs a Content-Length\n", &manner);
                    return (wire.len(), next);
                };
                if binary_body(req) || length > max_payload as usize {
                    // Refused unread: the connection cannot carry another.
                    let too_large = length > max_payload as usize;
                    limits
                        .engineio
                        .ask(sid, from, Ask::PostRefused { too_large });
                    self.phase = pending(sid, Waiting::Answer, manner.closing());
                    return (wire.len(), Next::EngineIo);
                }
                if length > message_allowance(routes.message_budget, 0) {
                    let next = self.close_with(503, b"server busy; try again\n", &manner);
                    return (wire.len(), next);
                }
                let body = &wire[head..];
                if body.len() >= length {
                    let body = body[..length].to_vec();
                    let ask = Ask::Post { body, begun: false };
                    limits.engineio.ask(sid, from, ask);
                    self.phase = pending(sid, Waiting::Answer, manner);
                    return (head + length, Next::EngineIo);
                }
                limits.engineio.ask(sid, from, Ask::BeginPost);
                message_bytes_moved(0, length);
                let waiting = Waiting::Body {
                    length,
                    body: body.to_vec(),
                };
                self.phase = pending(sid, waiting, manner);
                // The handshake deadline bounds how long the rest may take.
                (wire.len(), Next::Continue)
            }
        }
    }

    /// Input while an Engine.IO request waits: a `POST`'s body, carried
    /// until whole; anything else is the client's next request, kept
    /// until this one is answered.
    pub(in crate::shard) fn engineio_input(
        &mut self,
        input: &[u8],
        limits: &mut ConnLimits<'_>,
    ) -> (usize, Next) {
        let Phase::EngineIo(pending) = &mut self.phase else {
            return (input.len(), Next::Continue);
        };
        match &mut pending.waiting {
            Waiting::Body { length, body } => {
                let take = input.len().min(*length - body.len());
                body.extend_from_slice(&input[..take]);
                if body.len() < *length {
                    return (take, Next::Continue);
                }
                message_bytes_moved(*length, 0);
                let body = std::mem::take(body);
                pending.waiting = Waiting::Answer;
                let from = limits.engineio.conn_ref(limits.key, self.generation);
                let sid = pending.sid;
                limits
                    .engineio
                    .ask(sid, from, Ask::Post { body, begun: true });
                (take, Next::EngineIo)
            }
            // A connection that closes after its answer carries no next
            // request: what it sends (an unread body) is dropped.
            _ if !pending.manner.keep_alive => (input.len(), Next::Continue),
            _ if input.len() > MAX_REQUEST_BYTES => {
                let from = limits.engineio.conn_ref(limits.key, self.generation);
                limits.engineio.ask(pending.sid, from, Ask::Ended);
                (input.len(), self.linger())
            }
            _ => (0, Next::Continue),
        }
    }

    /// Writes the owner's answer to the request this connection waits on.
    pub(in crate::shard) fn answer_engineio(
        &mut self,
        answer: Answer,
        pool: &mut BufPool,
        routes: &Routes,
        counters: &mut Counters,
        draining: bool,
        (carried, key): (&mut HashMap<usize, Sid>, usize),
    ) -> Next {
        let Phase::EngineIo(pending) = std::mem::replace(&mut self.phase, Phase::Lingering) else {
            return Next::Continue;
        };
        let Pending {
            sid,
            waiting,
            mut manner,
            peer,
        } = *pending;
        if let Waiting::Body { length, .. } = &waiting {
            message_bytes_moved(*length, 0);
            // Answered before its body was read (a second POST, say): the
            // rest of the body cannot be told from a next request.
            manner.keep_alive = false;
        }
        self.write(&[], pool);
        match (answer, waiting) {
            (Answer::Accept, Waiting::Upgrade(accept, deflate)) => {
                self.out.extend_from_slice(&accept);
                let max_payload = routes.engineio(self.spec).max_payload;
                let threshold = routes.deflate_threshold;
                self.open_websocket(max_payload, deflate, threshold, counters);
                carried.insert(key, sid);
                Next::Upgraded
            }
            (Answer::Refused(response), _) => {
                self.out.extend_from_slice(&response);
                self.linger()
            }
            (
                Answer::Http {
                    status,
                    content_type,
                    body,
                    close,
                },
                Waiting::Answer | Waiting::Body { .. },
            ) => {
                // A draining server takes no next request.
                manner.keep_alive &= !close && !draining;
                http::encode(&mut self.out, status, content_type, &body, &manner);
                self.answered(&manner, peer)
            }
            // Nothing else answers a waiting request.
            _ => self.linger(),
        }
    }

    /// The connection is now a WebSocket carrying a session (the caller
    /// notes which, in `EngineIo::carried`).
    fn open_websocket(
        &mut self,
        max_payload: u32,
        deflate: Option<DeflateParams>,
        threshold: usize,
        counters: &mut Counters,
    ) {
        self.phase = Phase::Open(ServerConn::new(max_payload as usize));
        if let Some(params) = deflate {
            counters.deflate_conns += 1;
            self.spill_mut().deflate = Some(PerMessageDeflate::new(params, threshold));
        }
        counters.handshakes += 1;
    }

    /// Answers with `status` and a plain-text `body`, then the connection
    /// lingers out.
    fn close_with(&mut self, status: u16, body: &[u8], manner: &Manner) -> Next {
        let content_type = if body.is_empty() {
            ""
        } else {
            "text/plain; charset=utf-8"
        };
        http::encode(&mut self.out, status, content_type, body, &manner.closing());
        self.linger()
    }

    /// An answer is written: a kept-alive connection waits for its next
    /// request, any other lingers out.
    fn answered(&mut self, manner: &Manner, peer: Option<IpAddr>) -> Next {
        if manner.keep_alive {
            self.phase = Phase::Handshake(Handshaking::kept_alive(peer));
            Next::KeepAlive
        } else {
            self.linger()
        }
    }

    /// Answers a refused request: a WebSocket's upgrade is refused as the
    /// reference refuses one; a polling request gets the JSON error.
    fn refuse(
        &mut self,
        refusal: Refusal,
        upgrade: bool,
        manner: &Manner,
        hs: Handshaking,
    ) -> Next {
        if upgrade {
            http::refused_upgrade(&mut self.out, refusal);
            return self.linger();
        }
        let (status, content_type, body) = http::refusal(refusal);
        http::encode(&mut self.out, status, content_type, body, manner);
        self.answered(manner, hs.peer())
    }

    /// The session this connection's request waits on, if any (the one a
    /// WebSocket carries is in `EngineIo::carried`).
    pub(crate) fn engineio_sid(&self) -> Option<Sid> {
        match &self.phase {
            Phase::EngineIo(p) => Some(p.sid),
            _ => None,
        }
    }
}

/// The permessage-deflate agreement for an Engine.IO WebSocket: none
/// unless the route's own `deflate` key asks (the reference declines it
/// by default, and its clients expect that), and never with the server's
/// context taken over, since what the server sends is compressed once for
/// every member of a room; within the server's cap on deflate
/// connections.
fn deflate_for(
    req: &Request<'_, '_>,
    routes: &Routes,
    spec: u8,
    counters: &Counters,
) -> Option<DeflateParams> {
    let policy = match routes.spec(spec).and_then(|s| s.deflate) {
        None | Some(DeflatePolicy::Off) => DeflatePolicy::Off,
        Some(_) => DeflatePolicy::NoContextTakeover,
    };
    deflate_agreement(req, policy, routes.max_deflate_conns, counters)
}
