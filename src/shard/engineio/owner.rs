//! The sessions a shard owns: each one's state machine
//! ([`engineio::Session`]), the connections it is answering through
//! (wherever they are), its admission ticket and its timer. Requests come
//! in as [`ToOwner`], from this shard's connections or another's, and
//! what the sessions transmit goes out as [`ToConn`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use slab::Slab;

use super::app::{self, Behaviour, Effects, RoomChange, SocketIo};
use super::counts::count;
use super::http;
use crate::admission::rate::Rate;
use crate::admission::registry::{Registry, Ticket};
use crate::engineio::handoff::{
    Answer, Ask, ConnRef, Handoff, Recover, Recovered, RecoveredSocket, ToConn, ToOwner,
};
use crate::engineio::CloseReason;
use crate::engineio::{Config, Data, Frame, Refusal, Session, Sid, Transmit, Transport};
use crate::protocol::frame::{encode_frame, OpCode};
use crate::pubsub::hub::{Delivery, Hub};
use crate::socketio::recovery::Recent;
use crate::socketio::target::{room_topic, Target};

/// One session and the connections it answers through.
#[derive(Debug)]
struct Owned {
    session: Session,
    /// Counted against the admission caps while the session lives.
    ticket: Option<Ticket>,
    /// The held `GET`.
    get: Option<ConnRef>,
    /// The `POST` whose body is still arriving.
    post: Option<ConnRef>,
    /// The session's WebSocket (after an upgrade, or from the start).
    ws: Option<ConnRef>,
    /// A WebSocket probing an upgrade.
    probe: Option<ConnRef>,
    /// The deadline queued in the timer heap (`u64::MAX`: none).
    armed: u64,
    /// The Socket.IO layer, on a Socket.IO route (else messages echo).
    sio: Option<Box<SocketIo>>,
}

impl Owned {
    fn next_deadline(&self) -> Option<u64> {
        let eio = self.session.next_deadline()?;
        Some(match self.sio.as_deref() {
            Some(sio) => sio
                .conn
                .next_deadline()
                .map_or(eio, |d| eio.min(d))
                .min(sio.token_until()),
            None => eio,
        })
    }
}

/// A shard's Engine.IO sessions.
#[derive(Debug)]
pub(crate) struct Owner {
    sessions: Slab<Owned>,
    next_generation: u32,
    /// (when, slot, generation): the earliest deadline of each session,
    /// and stale entries, which are skipped.
    timers: BinaryHeap<Reverse<(u64, u32, u32)>>,
    /// Each Socket.IO room's members here: (slot, generation).
    members: HashMap<Arc<str>, Vec<(u32, u32)>>,
    /// Room changes the last message asked for.
    changes: Vec<RoomChange>,
    /// Sessions whose WebSocket messages were taken but not yet flushed.
    dirty: Vec<(usize, u32)>,
    /// `CONNECT`s asking to recover a socket, from the last message.
    recoveries: Vec<(String, String, String, String)>,
    /// Dropped Socket.IO sockets kept for recovery, by pid.
    kept: HashMap<Box<str>, Kept>,
    /// The room broadcasts this shard received, for recovered sockets.
    recent: Recent,
    /// The shard's clock (ms) as of the last call.
    now: u64,
    /// When expired kept sockets are next swept.
    next_prune: u64,
    /// Handoffs this owner's sessions asked for.
    asked: Vec<Handoff>,
    shard: u16,
    /// `--publish-rate` for each `socketio` session.
    publish_rate: Rate,
    /// The server's signed-token rule, for tokens in a CONNECT's `auth`.
    tokens: Option<crate::auth::Tokens>,
}

impl Owner {
    pub(crate) fn new(shard: u16, publish_rate: Rate, tokens: Option<crate::auth::Tokens>) -> Self {
        Self {
            sessions: Slab::new(),
            next_generation: 0,
            timers: BinaryHeap::new(),
            members: HashMap::new(),
            changes: Vec::new(),
            dirty: Vec::new(),
            recoveries: Vec::new(),
            kept: HashMap::new(),
            recent: Recent::default(),
            now: 0,
            next_prune: 0,
            asked: Vec::new(),
            shard,
            publish_rate,
            tokens,
        }
    }

    /// Sessions alive on this shard.
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Opens a session on `transport` at `now` (ms), admitted with
    /// `ticket`, the request's connection `via` being its handshake poll
    /// (polling: answered at once) or its WebSocket. `None` if the system
    /// has no randomness to give.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open(
        &mut self,
        config: Config,
        behaviour: Behaviour,
        (handshake, grant): (Option<super::Handshake>, Option<crate::auth::Grant>),
        transport: Transport,
        ticket: Ticket,
        via: ConnRef,
        now: u64,
        out: &mut Out<'_>,
    ) -> Result<Sid, Ticket> {
        self.now = now;
        if let Some(ms) = behaviour
            .socketio()
            .map(|s| s.recovery_ms)
            .filter(|&ms| ms > 0)
        {
            self.recent.keep(u64::from(ms), RECENT_BYTES);
        }
        self.next_generation = self.next_generation.wrapping_add(1);
        let slot = self.sessions.vacant_key();
        let Ok(sid) = Sid::generate(self.shard, slot as u32, self.next_generation) else {
            return Err(ticket);
        };
        let mut owned = Owned {
            session: Session::new(sid, config, transport, now),
            ticket: Some(ticket),
            get: None,
            post: None,
            ws: None,
            probe: None,
            armed: u64::MAX,
            sio: SocketIo::new(&behaviour, now, handshake, grant).map(Box::new),
        };
        match transport {
            Transport::Polling => {
                // The handshake is the first poll: the open packet answers it.
                let _ = owned.session.poll();
                owned.get = Some(via);
                count(|c| c.polls += 1);
            }
            Transport::WebSocket => owned.ws = Some(via),
        }
        count(|c| c.opened(transport));
        let key = self.sessions.insert(owned);
        self.flush(key, out);
        Ok(sid)
    }

    /// Acts on one request for a session of this shard.
    pub(crate) fn handle(&mut self, m: ToOwner, now: u64, out: &mut Out<'_>) {
        self.now = now;
        let outbox = &mut *out.outbox;
        let ToOwner { sid, from, ask } = m;
        let key = sid.slot() as usize;
        let live = self
            .sessions
            .get(key)
            .is_some_and(|o| o.session.sid() == sid);
        if !live {
            unknown(sid, from, &ask, outbox);
            return;
        }
        let owned = &mut self.sessions[key];
        let session = &mut owned.session;
        match ask {
            Ask::Poll => match session.poll() {
                Ok(()) => {
                    owned.get = Some(from);
                    count(|c| c.polls += 1);
                }
                Err(r) => refuse(sid, from, r, outbox),
            },
            Ask::BeginPost => match session.begin_post() {
                Ok(()) => owned.post = Some(from),
                Err(r) => {
                    refuse(sid, from, r, outbox);
                    if session.closed().is_some() {
                        // The one in flight ends unanswered, as the reference's.
                        if let Some(first) = owned.post.take() {
                            reply(sid, first, Answer::Drop, outbox);
                        }
                    }
                }
            },
            Ask::Post { body, begun } => {
                if begun {
                    owned.post = None;
                } else if let Err(r) = session.begin_post() {
                    refuse(sid, from, r, outbox);
                    self.flush(key, out);
                    return;
                }
                match session.post(&body, now) {
                    Ok(messages) => {
                        let mut received = 0;
                        for data in messages {
                            received += 1;
                            self.receive(key, data, now, out.hub);
                        }
                        count(|c| c.packets_in += received);
                        let ok = Answer::Http {
                            status: 200,
                            content_type: "text/html",
                            body: b"ok".to_vec(),
                            close: false,
                        };
                        reply(sid, from, ok, out.outbox);
                    }
                    Err(r) => refuse(sid, from, r, out.outbox),
                }
            }
            Ask::PostRefused { too_large } => {
                if owned.post == Some(from) {
                    owned.post = None;
                }
                let r = session.post_refused(too_large);
                refuse(sid, from, r, outbox);
            }
            Ask::Upgrade => match session.begin_upgrade(now) {
                Ok(()) => {
                    owned.probe = Some(from);
                    reply(sid, from, Answer::Accept, outbox);
                }
                Err(r) => refuse_upgrade(sid, from, r, outbox),
            },
            Ask::Frame { text, data } => {
                if owned.ws != Some(from) && owned.probe != Some(from) {
                    return;
                }
                let frame = match (text, std::str::from_utf8(&data)) {
                    (true, Ok(text)) => Frame::Text(text),
                    // The WebSocket layer checked text is UTF-8.
                    (true, Err(_)) => return,
                    (false, _) => Frame::Binary(&data),
                };
                let was_polling = session.transport() == Transport::Polling;
                if let Some(message) = session.on_frame(frame, now) {
                    count(|c| c.packets_in += 1);
                    self.receive(key, message, now, out.hub);
                }
                let owned = &mut self.sessions[key];
                if was_polling && owned.session.transport() == Transport::WebSocket {
                    owned.ws = owned.probe.take();
                    count(|c| c.upgraded());
                }
                // Flushed once for all the frames of this batch: what a
                // later frame's violation ends is then never sent, as
                // with the reference, and the answers go as one write.
                self.dirty.push((key, sid.generation()));
                return;
            }
            Ask::Ended => {
                if owned.get == Some(from) {
                    owned.get = None;
                    count(|c| c.polls_done += 1);
                    session.poll_dropped();
                }
                if owned.post == Some(from) {
                    owned.post = None;
                    session.post_dropped();
                }
                if owned.ws == Some(from) {
                    owned.ws = None;
                    session.websocket_closed();
                }
                if owned.probe == Some(from) {
                    owned.probe = None;
                    session.websocket_closed();
                }
            }
        }
        self.flush(key, out);
    }

    /// One message from session `key`'s client: echoed, or taken by the
    /// Socket.IO layer.
    fn receive(&mut self, key: usize, message: Data<'_>, now: u64, hub: &Hub) {
        let owned = &mut self.sessions[key];
        let Some(sio) = owned.sio.as_deref_mut() else {
            // An echo: what it could not queue ended the session.
            let _ = owned.session.send(message);
            return;
        };
        let mut fx = Effects {
            hub,
            rooms: &mut self.changes,
            recoveries: &mut self.recoveries,
            shard: self.shard,
            next_seq: self.recent.next_seq(),
            publish_rate: self.publish_rate,
            tokens: self.tokens.as_ref(),
        };
        app::receive(&mut owned.session, sio, message, now, &mut fx);
        let sid = owned.session.sid();
        self.rooms_changed(key, sid.generation());
        for (namespace, pid, offset, auth) in self.recoveries.drain(..) {
            let shard = crate::socketio::recovery::pid_shard(&pid).unwrap_or(self.shard);
            let ask = Recover {
                shard,
                pid,
                offset,
                namespace,
                session: sid,
                auth,
            };
            self.asked.push(Handoff::Recover(Box::new(ask)));
        }
    }

    fn rooms_changed(&mut self, key: usize, generation: u32) {
        let member = (key as u32, generation);
        for change in self.changes.drain(..) {
            match change {
                RoomChange::Joined(topic) => self.members.entry(topic).or_default().push(member),
                RoomChange::Left(topic) => forget_member(&mut self.members, &topic, member),
            }
        }
    }

    /// Another session (maybe of another shard) asks for the dropped
    /// socket `ask.pid` names: it is given back with the broadcasts to its
    /// rooms after the client's offset, if all of them are still held.
    pub(crate) fn recover(&mut self, ask: Recover, out: &mut Out<'_>) {
        let now = self.now;
        let socket = self
            .kept
            .remove(ask.pid.as_str())
            .filter(|k| k.until >= now && *k.namespace == *ask.namespace)
            .and_then(|kept| {
                let from = match &kept.last_direct {
                    Some((offset, seq)) if **offset == *ask.offset => *seq,
                    _ => self.recent.seq_of(&ask.offset)? + 1,
                };
                self.recent.holds_from(from).then(|| RecoveredSocket {
                    missed: self.recent.between(from, self.recent.next_seq(), |topic| {
                        Target::of_topic(topic).is_some_and(|t| {
                            t.reaches_member(&kept.namespace, &kept.sid, &kept.rooms)
                        })
                    }),
                    sid: kept.sid.into(),
                    rooms: kept.rooms,
                })
            });
        out.outbox
            .push(Handoff::Recovered(Box::new(Recovered { ask, socket })));
    }

    /// The answer to a recovery this shard's session asked for: the
    /// socket connects, recovered or new.
    pub(crate) fn recovered(&mut self, answer: Recovered, out: &mut Out<'_>) {
        let Recovered { ask, socket } = answer;
        let key = ask.session.slot() as usize;
        let Some(owned) = self
            .sessions
            .get_mut(key)
            .filter(|o| o.session.sid() == ask.session)
        else {
            return;
        };
        let Some(sio) = owned.sio.as_deref_mut() else {
            return;
        };
        count(|c| c.recoveries[usize::from(socket.is_some())] += 1);
        let mut fx = Effects {
            hub: out.hub,
            rooms: &mut self.changes,
            recoveries: &mut self.recoveries,
            shard: self.shard,
            next_seq: self.recent.next_seq(),
            publish_rate: self.publish_rate,
            tokens: self.tokens.as_ref(),
        };
        let recovered = socket.map(|s| (ask.pid, s));
        app::connected(
            &mut owned.session,
            sio,
            &ask.namespace,
            &ask.auth,
            recovered,
            &mut fx,
        );
        self.recoveries.clear();
        self.rooms_changed(key, ask.session.generation());
        self.flush(key, out);
    }

    /// Recovery requests made since the last call, for their shards.
    pub(crate) fn take_asked(&mut self, outbox: &mut Vec<Handoff>) {
        outbox.append(&mut self.asked);
    }

    /// A room broadcast reached this shard: every member here gets it, a
    /// member on a WebSocket as the very frames published.
    pub(crate) fn deliver(&mut self, delivery: &Delivery, out: &mut Out<'_>) {
        self.recent
            .record(&delivery.topic, &delivery.frame, self.now);
        let members = match self.members.get(&delivery.topic) {
            Some(members) => members.clone(),
            // A room with no member here, or a written target.
            None if !Target::is_written(&delivery.topic) => return,
            None => match Target::of_topic(&delivery.topic) {
                Some(target) => self.reached(&target),
                None => return,
            },
        };
        for (slot, generation) in members {
            let key = slot as usize;
            let Some(owned) = self
                .sessions
                .get_mut(key)
                .filter(|o| o.session.sid().generation() == generation)
            else {
                continue;
            };
            let sid = owned.session.sid();
            match owned.ws {
                Some(ws)
                    if owned.session.transport() == Transport::WebSocket
                        && owned.session.queued_bytes() == 0 =>
                {
                    count(|c| c.packets_out += 1);
                    let answer = Answer::Shared(delivery.frame.clone());
                    reply(sid, ws, answer, out.outbox);
                }
                _ => {
                    let session = &mut owned.session;
                    crate::socketio::broadcast::messages_in(&delivery.frame, |m| {
                        let _ = session.send(m);
                    });
                    self.flush(key, out);
                }
            }
        }
    }

    /// The sessions here a broadcast to more than one room, with rooms
    /// excepted or to a whole namespace reaches: each once.
    fn reached(&self, target: &Target<'_>) -> Vec<(u32, u32)> {
        let ns = &*target.namespace;
        let mut found: Vec<(u32, u32)> = if target.to.is_empty() {
            self.sessions
                .iter()
                .map(|(key, o)| (key as u32, o.session.sid().generation()))
                .collect()
        } else {
            let mut found: Vec<(u32, u32)> = target
                .to
                .iter()
                .filter_map(|room| self.members.get(room_topic(ns, room).as_str()))
                .flatten()
                .copied()
                .collect();
            found.sort_unstable();
            found.dedup();
            found
        };
        found.retain(|&(slot, generation)| {
            self.sessions
                .get(slot as usize)
                .filter(|o| o.session.sid().generation() == generation)
                .and_then(|o| o.sio.as_deref())
                .and_then(|sio| {
                    let socket = sio.conn.socket(ns)?;
                    Some(target.reaches_member(ns, socket.sid(), &sio.rooms))
                })
                .unwrap_or(false)
        });
        found
    }

    /// Keeps the sockets of a session that dropped, for recovery.
    fn keep(&mut self, sio: &SocketIo) {
        let until = self.now + u64::from(sio.recovery_ms());
        for p in &sio.pids {
            if self.kept.len() >= MAX_KEPT {
                break;
            }
            let Some(socket) = sio.conn.socket(&p.namespace) else {
                continue;
            };
            let kept = Kept {
                sid: socket.sid().into(),
                namespace: p.namespace.clone(),
                rooms: sio.rooms_on(&p.namespace),
                last_direct: p.last_direct.clone(),
                until,
            };
            self.kept.insert(p.pid.clone(), kept);
        }
    }

    /// Flushes the sessions that took WebSocket messages in this batch.
    pub(crate) fn flush_dirty(&mut self, out: &mut Out<'_>) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &(key, generation) in &dirty {
            if self
                .sessions
                .get(key)
                .is_some_and(|o| o.session.sid().generation() == generation)
            {
                self.flush(key, out);
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }

    /// The time is `now`: every session whose deadline passed acts on it.
    pub(crate) fn expire(&mut self, now: u64, out: &mut Out<'_>) {
        self.now = now;
        if !self.kept.is_empty() && now >= self.next_prune {
            self.kept.retain(|_, k| k.until >= now);
            self.next_prune = now + 1000;
        }
        self.recent.prune(now);
        let (kept, bytes) = (self.kept.len() as u64, self.recent.bytes() as u64);
        count(|c| {
            c.kept = kept;
            c.recent_bytes = bytes;
        });
        while let Some(&Reverse((due, slot, generation))) = self.timers.peek() {
            if due > now {
                break;
            }
            self.timers.pop();
            let key = slot as usize;
            let Some(owned) = self
                .sessions
                .get_mut(key)
                .filter(|o| o.session.sid().generation() == generation && o.armed == due)
            else {
                continue;
            };
            owned.armed = u64::MAX;
            if owned.session.next_deadline().is_some_and(|d| d <= now) {
                owned.session.on_timer(now);
            }
            if let Some(sio) = owned.sio.as_deref_mut() {
                if let Some(v) = sio.conn.on_timer(now) {
                    app::violated(&mut owned.session, v);
                }
                // Its token expired: a client gets a new one and connects
                // again (Socket.IO clients do not reconnect by themselves
                // after a server's close).
                if sio.token_until() <= now {
                    owned.session.close_by_server();
                }
            }
            self.flush(key, out);
        }
    }

    /// An answer for session `sid` could not reach its connection (that
    /// shard's inbox was full): the session ends rather than go on with
    /// a gap in what its client received.
    pub(crate) fn abandon(&mut self, sid: Sid, out: &mut Out<'_>) {
        let key = sid.slot() as usize;
        if self
            .sessions
            .get(key)
            .is_some_and(|o| o.session.sid() == sid)
        {
            self.sessions[key].session.undeliverable();
            self.flush(key, out);
        }
    }

    /// The server is shutting down: every session ends, its held poll
    /// answered `1` and its WebSocket sent the close packet.
    /// Ends the sessions whose handshake's token is `user`'s (the server
    /// API's disconnect), as the server ends any; how many.
    pub(crate) fn close_user(&mut self, user: &str, out: &mut Out<'_>) -> usize {
        let keys: Vec<usize> = self
            .sessions
            .iter()
            .filter(|(_, o)| o.session.closed().is_none())
            .filter(|(_, o)| o.sio.as_deref().and_then(SocketIo::user) == Some(user))
            .map(|(k, _)| k)
            .collect();
        for &key in &keys {
            self.sessions[key].session.close_by_server();
            self.flush(key, out);
        }
        keys.len()
    }

    pub(crate) fn close_all(&mut self, out: &mut Out<'_>) {
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.sessions[key].session.close_by_server();
            self.flush(key, out);
        }
    }

    /// Sends what session `key` transmits to its connections, ends it if
    /// it closed, and arms its next deadline.
    fn flush(&mut self, key: usize, out: &mut Out<'_>) {
        let outbox = &mut *out.outbox;
        let owned = &mut self.sessions[key];
        let sid = owned.session.sid();
        let mut frames: Vec<u8> = Vec::new();
        let mut frames_to: Option<ConnRef> = None;
        let mut payload = Vec::new();
        while let Some(transmit) = owned.session.transmit() {
            match transmit {
                Transmit::Poll(body) => {
                    if let Some(to) = owned.get.take() {
                        count(|c| {
                            c.packets_out += 1;
                            c.polls_done += 1;
                        });
                        let answer = Answer::Http {
                            status: 200,
                            content_type: crate::engineio::payload::CONTENT_TYPE,
                            body,
                            close: false,
                        };
                        reply(sid, to, answer, outbox);
                    }
                }
                Transmit::Frame(packet) => {
                    let to = match owned.session.transport() {
                        Transport::Polling => owned.probe,
                        Transport::WebSocket => owned.ws,
                    };
                    let Some(to) = to else { continue };
                    if frames_to != Some(to) {
                        flush_frames(sid, &mut frames_to, &mut frames, outbox);
                        frames_to = Some(to);
                    }
                    payload.clear();
                    let opcode = match packet.encode_frame(&mut payload) {
                        crate::engineio::FrameKind::Text => OpCode::Text,
                        crate::engineio::FrameKind::Binary => OpCode::Binary,
                    };
                    encode_frame(&mut frames, true, opcode, &payload);
                    count(|c| c.packets_out += 1);
                }
                Transmit::EndProbe => {
                    flush_frames(sid, &mut frames_to, &mut frames, outbox);
                    if let Some(to) = owned.probe.take() {
                        reply(sid, to, Answer::CloseWebSocket, outbox);
                    }
                }
            }
        }
        flush_frames(sid, &mut frames_to, &mut frames, outbox);
        if let Some(reason) = owned.session.closed() {
            for to in [owned.ws.take(), owned.probe.take()].into_iter().flatten() {
                reply(sid, to, Answer::CloseWebSocket, outbox);
            }
            if let Some(to) = owned.post.take() {
                reply(sid, to, Answer::Drop, outbox);
            }
            let transport = owned.session.transport();
            let mut owned = self.sessions.remove(key);
            if let Some(ticket) = owned.ticket {
                out.registry.release(ticket);
            }
            if let Some(mut sio) = owned.sio {
                let (mut rooms, mut recoveries) = (Vec::new(), Vec::new());
                let mut fx = Effects {
                    hub: out.hub,
                    rooms: &mut rooms,
                    recoveries: &mut recoveries,
                    shard: self.shard,
                    next_seq: self.recent.next_seq(),
                    publish_rate: self.publish_rate,
                    tokens: self.tokens.as_ref(),
                };
                app::ended(&mut owned.session, &mut sio, reason, &mut fx);
                let gone = sio.conn.sockets().len() as u64;
                count(|c| c.sockets_gone += gone);
                let member = (key as u32, sid.generation());
                for topic in &sio.rooms {
                    forget_member(&mut self.members, topic, member);
                }
                // The server's own ends are not recoverable (the
                // reference's server-side disconnects are not either).
                if sio.recovery_ms() > 0 && reason != CloseReason::ServerClose {
                    self.keep(&sio);
                }
            }
            count(|c| c.closed(transport, reason));
            return;
        }
        if let Some(due) = owned.next_deadline() {
            if due < owned.armed {
                owned.armed = due;
                let generation = owned.session.sid().generation();
                self.timers.push(Reverse((due, key as u32, generation)));
            }
        }
    }
}

/// The most bytes of room broadcasts a shard records for recovery.
const RECENT_BYTES: usize = 16 << 20;

/// The most dropped sockets a shard keeps for recovery at once.
const MAX_KEPT: usize = 100_000;

/// A dropped socket kept for recovery.
#[derive(Debug)]
struct Kept {
    sid: Box<str>,
    namespace: Box<str>,
    rooms: Vec<Arc<str>>,
    last_direct: Option<(Box<str>, u64)>,
    /// Kept until then (ms).
    until: u64,
}

/// Where the owner's work goes: the answers for connections, and the
/// admission registry that takes back an ended session's ticket.
pub(crate) struct Out<'a> {
    pub(crate) outbox: &'a mut Vec<Handoff>,
    pub(crate) registry: &'a Registry,
    /// Where room broadcasts are published.
    pub(crate) hub: &'a Hub,
}

fn forget_member(
    members: &mut HashMap<Arc<str>, Vec<(u32, u32)>>,
    topic: &str,
    member: (u32, u32),
) {
    if let Some(list) = members.get_mut(topic) {
        list.retain(|m| *m != member);
        if list.is_empty() {
            members.remove(topic);
        }
    }
}

fn flush_frames(
    sid: Sid,
    to: &mut Option<ConnRef>,
    frames: &mut Vec<u8>,
    outbox: &mut Vec<Handoff>,
) {
    if let Some(to) = to.take() {
        if !frames.is_empty() {
            reply(sid, to, Answer::Frames(std::mem::take(frames)), outbox);
        }
    }
}

fn reply(sid: Sid, to: ConnRef, answer: Answer, outbox: &mut Vec<Handoff>) {
    outbox.push(Handoff::ToConn(ToConn { to, sid, answer }));
}

/// Answers a refused polling request (a 413 ends its connection).
fn refuse(sid: Sid, to: ConnRef, refusal: Refusal, outbox: &mut Vec<Handoff>) {
    count(|c| c.refused(refusal));
    let (status, content_type, body) = http::refusal(refusal);
    let answer = Answer::Http {
        status,
        content_type,
        body: body.to_vec(),
        close: refusal == Refusal::PayloadTooLarge,
    };
    reply(sid, to, answer, outbox);
}

/// Answers a refused upgrade, as the reference refuses one.
fn refuse_upgrade(sid: Sid, to: ConnRef, refusal: Refusal, outbox: &mut Vec<Handoff>) {
    count(|c| c.refused(refusal));
    let mut response = Vec::new();
    http::refused_upgrade(&mut response, refusal);
    reply(sid, to, Answer::Refused(response), outbox);
}

/// A request named a session that does not live here (any more).
fn unknown(sid: Sid, from: ConnRef, ask: &Ask, outbox: &mut Vec<Handoff>) {
    match ask {
        Ask::Poll | Ask::BeginPost | Ask::Post { .. } | Ask::PostRefused { .. } => {
            refuse(sid, from, Refusal::UnknownSid, outbox);
        }
        Ask::Upgrade => refuse_upgrade(sid, from, Refusal::UnknownSid, outbox),
        // The session ended while they were on their way.
        Ask::Frame { .. } => reply(sid, from, Answer::CloseWebSocket, outbox),
        Ask::Ended => {}
    }
}
#[cfg(test)]
mod tests {
    /// An idle session's memory is these structs (and its connection's):
    /// a field added here is paid for by every connected client, so its
    /// size is watched.
    #[test]
    fn an_idle_session_stays_small() {
        use std::mem::size_of;
        assert!(
            size_of::<super::Owned>() <= 200,
            "{}",
            size_of::<super::Owned>()
        );
        // 184, then 192 with the pointer to a session's token and publish
        // bucket (`Extras`, boxed since most sessions have neither).
        assert!(
            size_of::<super::SocketIo>() <= 192,
            "{}",
            size_of::<super::SocketIo>()
        );
        assert!(size_of::<crate::socketio::session::Socket>() <= 80);
        assert!(size_of::<crate::socketio::Decoder>() <= 24);
    }
}
