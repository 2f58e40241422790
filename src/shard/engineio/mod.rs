//! Engine.IO on a shard, whatever its driver. A session lives on the shard
//! that opened it ([`owner`]); each of its HTTP requests, and its
//! WebSocket, arrives on whichever shard's listener the kernel chose
//! ([`conn`]). A connection's request goes to the owner as a
//! [`ToOwner`](crate::engineio::handoff::ToOwner) and the owner's answer
//! comes back as a [`ToConn`](crate::engineio::handoff::ToConn): through
//! the hub's inboxes between shards, straight through the outbox on one,
//! so both cases run the same code and no balancer stickiness is needed
//! inside one process.
//!
//! ```text
//! request head ─► Session::engineio_request ─► outbox ─┬─ this shard ──► Owner::handle ─► outbox ─┬─► Shard::apply ─► out
//!                 (answered at once: refusals,          └─ Hub::hand_off ─► owner's inbox ┘          └─► Hub::hand_off ─► conn's inbox
//!                  handshakes, CORS preflights)
//! ```
//!
//! A connection waiting for its answer (a held poll, say) is in
//! [`Phase::EngineIo`](super::session::Phase) and holds no buffer; an
//! idle session is its state machine and a few connection references.

mod app;
mod conn;
mod counts;
pub(crate) mod handler;
mod http;
mod owner;

pub(crate) use app::{Behaviour, ROOM_PREFIX};
pub(crate) use conn::Pending;
pub(crate) use counts::counts;
pub(crate) use handler::{Handshake, Namespaces};

use std::collections::HashMap;

use crate::engineio::handoff::{Answer, Ask, Handoff, Recovered, ToConn};
use crate::engineio::Sid;
use crate::protocol::CloseCode;
use crate::pubsub::hub::SharedFrame;
use crate::pubsub::topics::compress_batch;
use owner::{Out, Owner};
use std::sync::Arc;

use super::session::Phase;
use super::timer::TICK_MS;
use super::{Driver, Shard, Transport, MAX_PENDING_OUT};
use counts::count;

/// A shard's Engine.IO state: the sessions it owns and the handoffs
/// produced in this turn.
#[derive(Debug)]
pub(crate) struct EngineIo {
    owner: Owner,
    /// Requests for owners and answers for connections, this shard's or
    /// another's, not yet acted on.
    pub(crate) outbox: Vec<Handoff>,
    /// The shard's clock in milliseconds, as of this turn.
    pub(crate) now_ms: u64,
    /// WebSockets given frames this turn, to write once it is done.
    written: Vec<(usize, u32)>,
    /// The session each of this shard's Engine.IO WebSockets carries, by
    /// slot: kept here rather than in the connection, so that an idle one
    /// needs no spill box.
    pub(crate) carried: HashMap<usize, Sid>,
    /// This turn's room broadcasts as compressed for WebSockets with
    /// permessage-deflate, by window: each once, whatever the members.
    compressed: Vec<(SharedFrame, u8, SharedFrame)>,
    shard: u16,
}

impl EngineIo {
    pub(crate) fn new(shard: usize, config: &crate::config::Config) -> Self {
        let routes = &config.routes;
        let shard = u16::try_from(shard).unwrap_or(u16::MAX);
        let publish_rate = crate::admission::rate::Rate::with_burst_or_rate(
            routes.publish_rate,
            routes.publish_burst,
        );
        Self {
            owner: Owner::new(shard, publish_rate, config.admission.policy.jwt.clone()),
            outbox: Vec::new(),
            now_ms: 0,
            written: Vec::new(),
            carried: HashMap::new(),
            compressed: Vec::new(),
            shard,
        }
    }

    /// `frames` compressed with window `bits`, once this turn.
    fn compressed(&mut self, frames: SharedFrame, bits: u8, threshold: usize) -> SharedFrame {
        if let Some((_, _, done)) = self
            .compressed
            .iter()
            .find(|(f, b, _)| *b == bits && Arc::ptr_eq(f, &frames))
        {
            return Arc::clone(done);
        }
        count(|c| c.compressed += 1);
        let done = compress_batch(std::slice::from_ref(&frames), bits, threshold);
        self.compressed.push((frames, bits, Arc::clone(&done)));
        done
    }

    /// A connection's slot is being freed: the session it carried or
    /// waited on hears that it ended.
    pub(crate) fn released(&mut self, key: usize, session: &super::session::Session) {
        let carried = self.carried.remove(&key);
        if let Some(sid) = session.engineio_sid().or(carried) {
            let from = self.conn_ref(key, session.generation);
            self.ask(sid, from, Ask::Ended);
        }
    }

    /// Whether the loop must keep ticking: sessions have heartbeats, and
    /// handoffs wait.
    pub(crate) fn busy(&self) -> bool {
        self.owner.len() != 0 || !self.outbox.is_empty()
    }
}

impl<T: Transport> Shard<T> {
    /// Acts on this turn's Engine.IO work: sessions' deadlines, then every
    /// handoff (from this shard's connections, its sessions and other
    /// shards) until none is left.
    pub(super) fn engineio_turn<D: Driver<Io = T>>(&mut self, driver: &mut D) {
        let now = self.clock.now_tick * TICK_MS;
        self.engineio.now_ms = now;
        let registry = &self.shared.admission.registry;
        let eio = &mut self.engineio;
        let rooms = std::mem::take(&mut self.pubsub.rooms);
        let mut out = Out {
            outbox: &mut eio.outbox,
            registry,
            hub: self.pubsub.hub(),
        };
        eio.owner.expire(now, &mut out);
        for delivery in &rooms {
            eio.owner.deliver(delivery, &mut out);
        }
        eio.outbox.append(&mut self.pubsub.handoffs);
        while !self.engineio.outbox.is_empty() {
            let batch = std::mem::take(&mut self.engineio.outbox);
            for handoff in batch {
                if usize::from(handoff.shard()) != self.shard_id {
                    self.hand_over(handoff);
                    continue;
                }
                match handoff {
                    Handoff::ToOwner(m) => {
                        let eio = &mut self.engineio;
                        let mut out = Out {
                            outbox: &mut eio.outbox,
                            registry: &self.shared.admission.registry,
                            hub: self.pubsub.hub(),
                        };
                        eio.owner.handle(m, now, &mut out);
                        eio.owner.take_asked(&mut eio.outbox);
                    }
                    Handoff::ToConn(m) => self.apply(driver, m),
                    Handoff::Recover(m) => {
                        let eio = &mut self.engineio;
                        eio.owner.recover(
                            *m,
                            &mut Out {
                                outbox: &mut eio.outbox,
                                registry: &self.shared.admission.registry,
                                hub: self.pubsub.hub(),
                            },
                        );
                    }
                    Handoff::Recovered(m) => {
                        let eio = &mut self.engineio;
                        eio.owner.recovered(
                            *m,
                            &mut Out {
                                outbox: &mut eio.outbox,
                                registry: &self.shared.admission.registry,
                                hub: self.pubsub.hub(),
                            },
                        );
                    }
                }
            }
            let eio = &mut self.engineio;
            eio.owner.flush_dirty(&mut Out {
                outbox: &mut eio.outbox,
                registry: &self.shared.admission.registry,
                hub: self.pubsub.hub(),
            });
        }
        let mut written = std::mem::take(&mut self.engineio.written);
        written.sort_unstable();
        written.dedup();
        for &(key, generation) in &written {
            if self
                .conns
                .get(key)
                .is_some_and(|c| c.session.generation == generation)
            {
                driver.send(self, key);
            }
        }
        written.clear();
        self.engineio.written = written;
        self.engineio.compressed.clear();
    }

    /// Ends `user`'s Engine.IO sessions owned here (the server API's
    /// disconnect); how many.
    pub(super) fn engineio_disconnect(&mut self, user: &str) -> usize {
        let eio = &mut self.engineio;
        eio.owner.close_user(
            user,
            &mut Out {
                outbox: &mut eio.outbox,
                registry: &self.shared.admission.registry,
                hub: self.pubsub.hub(),
            },
        )
    }

    /// Shutdown: every session this shard owns ends now.
    pub(super) fn engineio_shutdown(&mut self) {
        let eio = &mut self.engineio;
        eio.owner.close_all(&mut Out {
            outbox: &mut eio.outbox,
            registry: &self.shared.admission.registry,
            hub: self.pubsub.hub(),
        });
    }

    /// Passes a handoff to the shard it is for. A full inbox refuses it: a
    /// request is then answered 503 here; a lost answer leaves its
    /// connection to its own deadline.
    fn hand_over(&mut self, handoff: Handoff) {
        count(|c| c.handoffs += 1);
        let Err(handoff) = self.pubsub.hub().hand_off(handoff) else {
            return;
        };
        count(|c| c.handoffs_refused += 1);
        tracing::debug!("an Engine.IO handoff found its shard's inbox full");
        match handoff {
            Handoff::ToOwner(m) => {
                let answer = match m.ask {
                    Ask::Ended => return,
                    // A message that cannot reach its session must not
                    // vanish: the WebSocket ends and the client reconnects.
                    Ask::Frame { .. } => Answer::Overloaded,
                    _ => Answer::Http {
                        status: 503,
                        content_type: "text/plain; charset=utf-8",
                        body: b"server busy; try again\n".to_vec(),
                        close: true,
                    },
                };
                let (to, sid) = (m.from, m.sid);
                self.engineio
                    .outbox
                    .push(Handoff::ToConn(ToConn { to, sid, answer }));
            }
            // The socket cannot be asked for: the client gets a new one.
            Handoff::Recover(ask) => {
                let ask = *ask;
                self.engineio
                    .outbox
                    .push(Handoff::Recovered(Box::new(Recovered {
                        ask,
                        socket: None,
                    })));
            }
            Handoff::Recovered(m) => {
                let eio = &mut self.engineio;
                eio.owner.abandon(
                    m.ask.session,
                    &mut Out {
                        outbox: &mut eio.outbox,
                        registry: &self.shared.admission.registry,
                        hub: self.pubsub.hub(),
                    },
                );
            }
            Handoff::ToConn(m) => {
                let eio = &mut self.engineio;
                eio.owner.abandon(
                    m.sid,
                    &mut Out {
                        outbox: &mut eio.outbox,
                        registry: &self.shared.admission.registry,
                        hub: self.pubsub.hub(),
                    },
                );
            }
        }
    }

    /// Carries out an owner's answer on one of this shard's connections.
    fn apply<D: Driver<Io = T>>(&mut self, driver: &mut D, m: ToConn) {
        let key = m.to.key as usize;
        let Some(conn) = self
            .conns
            .get_mut(key)
            .filter(|c| c.session.generation == m.to.generation && !c.io.dying())
        else {
            return;
        };
        let session = &mut conn.session;
        let config = &self.shared.config;
        let now = self.clock.now_tick;
        let next = match m.answer {
            Answer::Drop => {
                driver.drop_conn(self, key);
                return;
            }
            Answer::CloseWebSocket => {
                self.close(driver, key, CloseCode::NORMAL, "");
                return;
            }
            Answer::Overloaded => {
                self.close(driver, key, CloseCode::TRY_AGAIN_LATER, "server busy");
                return;
            }
            Answer::Frames(_) | Answer::Shared(_) => {
                if !session.is_open() {
                    return;
                }
                let len = match &m.answer {
                    Answer::Frames(f) => f.len(),
                    Answer::Shared(f) => f.len(),
                    _ => 0,
                };
                // A client that does not read cannot make the server hold
                // its packets without bound: it goes as a slow hub
                // subscriber goes, past the route's `max-backpressure`.
                let bound = config.routes.engineio(session.spec).max_backlog;
                if conn.backlog() + len > bound.max(MAX_PENDING_OUT) {
                    self.close_overloaded(driver, key);
                    return;
                }
                let session = &mut self.conns[key].session;
                let window = session
                    .spill
                    .as_deref()
                    .and_then(|s| s.deflate.as_ref())
                    .and_then(|d| d.shared_window());
                let threshold = config.routes.deflate_threshold;
                match (m.answer, window) {
                    (Answer::Frames(frames), None) => session.write(&frames, &mut self.pool),
                    (Answer::Frames(frames), Some(bits)) => {
                        let compressed = compress_batch(&[frames.into()], bits, threshold);
                        session.write(&compressed, &mut self.pool);
                    }
                    (Answer::Shared(frame), None) => session.push_shared(frame),
                    (Answer::Shared(frame), Some(bits)) => {
                        let compressed = self.engineio.compressed(frame, bits, threshold);
                        session.push_shared(compressed);
                    }
                    _ => {}
                }
                // Written once this turn's handoffs are done: the frames of
                // several broadcasts go out in one write, as a hub
                // subscriber's do.
                self.engineio.written.push((key, m.to.generation));
                return;
            }
            answer => {
                if !matches!(session.phase, Phase::EngineIo(_)) {
                    return;
                }
                let draining = self.draining_until.is_some();
                let (pool, counters) = (&mut self.pool, &mut self.counters);
                let carried = (&mut self.engineio.carried, key);
                session.answer_engineio(answer, pool, &config.routes, counters, draining, carried)
            }
        };
        self.deadlines.after(key, session, next, now, config);
        let pipelined = std::mem::take(&mut session.spill_mut().carry);
        session.tidy();
        driver.send(self, key);
        if !pipelined.is_empty() {
            // A request sent before its predecessor was answered.
            let mut input = pipelined;
            self.feed(key, &mut input);
        }
    }
}
