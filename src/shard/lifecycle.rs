//! A connection's life on its shard, written once for every driver: born
//! at accept, fed what is read, closed by either side or by a deadline,
//! answered when parked, drained at shutdown, delivered what is published,
//! and released with its admission ticket and subscriptions.

use std::net::IpAddr;

use super::deadlines::{drain_over, TOKEN_EXPIRED, TOKEN_REQUIRED};
use super::handler::Ctx;
use super::session::{ConnLimits, Next, Phase, Route, Session};
use super::{Conn, Driver, Expired, Shard, Transport, MESSAGE_TIMEOUT};
use crate::admission::stats::AdmissionStats;
use crate::protocol::CloseCode;

impl<T: Transport> Shard<T> {
    /// The key the next accepted connection will get, for a driver that
    /// must name it to the kernel before handing the connection over.
    pub(crate) fn vacant_key(&self) -> usize {
        self.conns.vacant_key()
    }

    /// A connection was accepted on listener `listener` (`peer` if accept
    /// said who): its session starts its handshake, under the handshake
    /// deadline. Returns its key.
    pub(crate) fn accepted(&mut self, io: T, listener: usize, peer: Option<IpAddr>) -> usize {
        self.next_generation = self.next_generation.wrapping_add(1) & T::GENERATION_MASK;
        let expects_proxy = self.shared.expects_proxy(listener);
        let session = Session::new(self.next_generation, expects_proxy, peer);
        let key = self.conns.insert(Conn { session, io });
        let now = self.clock.now_tick;
        let session = &mut self.conns[key].session;
        self.deadlines
            .accepted(key, session, now, &self.shared.config);
        key
    }

    /// Bytes arrived for `key`: `input` is what the session carried from
    /// earlier reads followed by them (empty when a TLS record held no
    /// data, which still counts as activity).
    pub(crate) fn feed(&mut self, key: usize, input: &mut [u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let config = &self.shared.config;
        let next = if input.is_empty() {
            Next::Continue
        } else {
            // Only handlers look at the backlog; built-in routes skip the sum.
            let held = match conn.session.route {
                Route::App(_) => conn.session.held(conn.io.backlog(&conn.session)),
                _ => 0,
            };
            let mut limits = ConnLimits {
                max_message: config.max_message,
                subprotocols: &config.subprotocols,
                metrics: &self.shared.metrics,
                counters: &mut self.counters,
                pool: &mut self.pool,
                admission: &self.shared.admission,
                socket: conn.io.socket(),
                key,
                pubsub: &mut self.pubsub,
                routes: &config.routes,
                apps: &self.shared.apps,
                held,
                jitter: &mut self.deadlines.gate.jitter,
                engineio: &mut self.engineio,
            };
            conn.session.feed(input, &mut limits)
        };
        let now = self.clock.now_tick;
        self.deadlines
            .after(key, &mut conn.session, next, now, config);
    }

    /// The peer shut its side (a FIN, or TLS close_notify): an open
    /// connection's end counts as 1006, what is owed is still delivered,
    /// then the connection is dropped; the close timeout bounds how long
    /// that may take, so a peer that also stops reading cannot hold it.
    pub(crate) fn peer_finished<D: Driver<Io = T>>(&mut self, driver: &mut D, key: usize) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| !c.io.dying()) else {
            return;
        };
        if !conn.session.peer_gone {
            conn.session.peer_gone = true;
            // A request waiting on its session's owner (a held poll) ends
            // with its peer: the session hears of it now, since lingering
            // forgets which session it waited on.
            if matches!(conn.session.phase, Phase::EngineIo(_)) {
                self.engineio.released(key, &conn.session);
            }
            let now = self.clock.now_tick;
            let (session, counters) = (&mut conn.session, &mut self.counters);
            self.deadlines
                .peer_finished(key, session, counters, now, &self.shared.config);
        }
        driver.send(self, key);
    }

    /// The transport failed in a way that still lets us send (a TLS alert
    /// is queued): deliver what is owed, then drop the connection.
    pub(crate) fn end_after_flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.session.peer_gone = true;
        let next = conn.session.peer_finished();
        let now = self.clock.now_tick;
        self.deadlines
            .after(key, &mut conn.session, next, now, &self.shared.config);
    }

    /// Everything owed to `key` is written. A peer that has finished is
    /// dropped now; true if it was.
    pub(crate) fn written<D: Driver<Io = T>>(&mut self, driver: &mut D, key: usize) -> bool {
        let gone = self.conns.get(key).is_some_and(|c| c.session.peer_gone);
        if gone {
            driver.drop_conn(self, key);
        }
        gone
    }

    /// Output to `key` drained: an App connection whose send met its bound
    /// hears `drain` once the backlog is back under it. True if the handler
    /// queued more output.
    pub(crate) fn app_drain(&mut self, key: usize) -> bool {
        let Some(conn) = self.conns.get_mut(key).filter(|c| !c.io.dying()) else {
            return false;
        };
        if !matches!(conn.session.route, Route::App(_)) {
            return false;
        }
        let backlog = conn.backlog();
        let ctx = Ctx::new(&mut self.pubsub, &mut self.counters, key, 0);
        let config = &self.shared.config;
        let next = conn
            .session
            .app_drain(&self.shared.apps, backlog, &mut self.pool, ctx);
        if next != Next::Continue {
            let now = self.clock.now_tick;
            self.deadlines
                .after(key, &mut conn.session, next, now, config);
        }
        conn.backlog() != backlog
    }

    /// Starts a server-side close with `code`: the close frame is queued,
    /// the peer gets the close timeout to answer, and a handler hears
    /// `close` now.
    pub(crate) fn close<D: Driver<Io = T>>(
        &mut self,
        driver: &mut D,
        key: usize,
        code: CloseCode,
        reason: &str,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.session.is_open() {
            self.counters.closed(code);
        }
        let now = self.clock.now_tick;
        let config = &self.shared.config;
        self.deadlines
            .close(key, &mut conn.session, code, reason, now, config);
        if matches!(conn.session.route, Route::App(_)) {
            let held = conn.session.held(conn.backlog());
            let ctx = Ctx::new(&mut self.pubsub, &mut self.counters, key, held);
            conn.session.app_closing(&self.shared.apps, ctx);
        }
        driver.send(self, key);
    }

    /// Answers a parked (refused) client now, with a jittered `Retry-After`.
    fn answer<D: Driver<Io = T>>(&mut self, driver: &mut D, key: usize) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| !c.io.dying()) else {
            return;
        };
        let now = self.clock.now_tick;
        self.deadlines
            .answer(key, &mut conn.session, now, &self.shared.config);
        driver.send(self, key);
    }

    /// An event stream's heartbeat: a comment line, and the next one armed.
    fn heartbeat<D: Driver<Io = T>>(&mut self, driver: &mut D, key: usize) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| !c.io.dying()) else {
            return;
        };
        if conn.session.heartbeat() {
            let due = self.deadlines.heartbeat_due(
                &conn.session,
                self.clock.now_tick,
                &self.shared.config,
            );
            self.deadlines.set(key, &mut conn.session, due);
            driver.send(self, key);
        }
    }

    /// Hands this turn's published messages to subscribers.
    pub(super) fn fan_out<D: Driver<Io = T>>(&mut self, driver: &mut D) {
        let threshold = self.shared.config.routes.deflate_threshold;
        let fan_out = self.pubsub.pump(&mut self.conns, threshold);
        for &key in &fan_out.written {
            driver.send(self, key);
        }
        for &key in &fan_out.overloaded {
            self.close_overloaded(driver, key);
        }
    }

    /// Closes a subscriber that fell too far behind: 1013 with a jittered
    /// retry hint, its unsent backlog dropped.
    pub(super) fn close_overloaded<D: Driver<Io = T>>(&mut self, driver: &mut D, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let written = conn.io.head_written();
        if let Some(spill) = conn.session.spill.as_deref_mut() {
            spill.drop_unsent_shared(written);
        }
        let stats = &self.shared.admission.registry.stats;
        AdmissionStats::bump(&stats.overload_closes);
        let retry = self.deadlines.gate.jitter.retry_after(5);
        let reason = format!("slow consumer; retry in {retry} s");
        self.close(driver, key, CloseCode::TRY_AGAIN_LATER, &reason);
    }

    /// Acts on every deadline that passed and every waiting room over its
    /// bound.
    pub(super) fn expire_deadlines<D: Driver<Io = T>>(&mut self, driver: &mut D) {
        let stats = &self.shared.admission.registry.stats;
        let expired = self
            .deadlines
            .expire(self.clock.now_tick, &mut self.conns, stats);
        for (key, what) in expired {
            match what {
                Expired::CloseIdle => {
                    self.close(driver, key, CloseCode::GOING_AWAY, "idle timeout");
                }
                Expired::MessageTimeout => {
                    let (code, reason) = MESSAGE_TIMEOUT;
                    self.close(driver, key, code, reason);
                }
                Expired::Token => {
                    let (code, reason) = TOKEN_EXPIRED;
                    self.close(driver, key, code, reason);
                }
                Expired::NoToken => {
                    let (code, reason) = TOKEN_REQUIRED;
                    self.close(driver, key, code, reason);
                }
                Expired::Drain => {
                    self.close(driver, key, CloseCode::GOING_AWAY, "server shutting down");
                }
                Expired::Lifetime => {
                    self.close(driver, key, CloseCode::GOING_AWAY, "max lifetime reached");
                }
                Expired::Heartbeat => self.heartbeat(driver, key),
                Expired::Answer => self.answer(driver, key),
                Expired::Drop => driver.drop_conn(self, key),
            }
        }
    }

    /// SIGTERM/SIGINT: refuse upgrades from now on and close every open
    /// connection at a jittered point of the drain window (anything not
    /// open is closed now).
    pub(crate) fn begin_shutdown<D: Driver<Io = T>>(&mut self, driver: &mut D) {
        if self.draining_until.is_some() {
            return;
        }
        tracing::info!("shutting down: closing {} connections", self.conns.len());
        // Listeners stay open through the drain so that load balancers
        // see /healthz answer 503; upgrades are refused from now on.
        self.shared.metrics.begin_draining();
        self.engineio_shutdown();
        let now = self.clock.now_tick;
        let config = std::sync::Arc::clone(&self.shared.config);
        self.draining_until = Some(self.deadlines.begin_drain(now, &config));
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let session = &mut self.conns[key].session;
            if !self.deadlines.schedule_drain(key, session, now, &config) {
                self.close(driver, key, CloseCode::GOING_AWAY, "server shutting down");
            }
        }
    }

    /// Whether the drain is over and the loop may end.
    pub(super) fn drain_over(&mut self) -> bool {
        let Some(until) = self.draining_until else {
            return false;
        };
        let (metrics, empty) = (&self.shared.metrics, self.conns.is_empty());
        drain_over(
            metrics,
            empty,
            &mut self.drain_reported,
            self.clock.now_tick,
            until,
        )
    }

    /// Shutdown ends with peers that never finished closing: their slots
    /// go with the driver, but their handlers still hear `close`.
    pub(super) fn release_handlers(&mut self) {
        let routes = &self.shared.apps;
        for (key, conn) in &mut self.conns {
            if matches!(conn.session.route, Route::App(_)) {
                let held = conn.session.held(conn.io.backlog(&conn.session));
                let ctx = Ctx::new(&mut self.pubsub, &mut self.counters, key, held);
                conn.session.app_release(routes, ctx);
            }
        }
    }

    /// Frees the slot at `key`: the session leaves the shard's sets, gives
    /// back its admission ticket, its subscriptions and its buffer, and a
    /// handler hears `close`. Only the driver calls this, once nothing of
    /// the connection is in flight; it gets its state back to close.
    pub(crate) fn release(&mut self, key: usize) -> T {
        let Conn { mut session, io } = self.conns.remove(key);
        self.deadlines
            .released(key, &mut session, &self.shared.admission);
        self.engineio.released(key, &session);
        if matches!(session.route, Route::App(_)) {
            let held = session.held(io.backlog(&session));
            let ctx = Ctx::new(&mut self.pubsub, &mut self.counters, key, held);
            session.app_release(&self.shared.apps, ctx);
        }
        self.pubsub.forget(&mut session);
        self.counters.forget(&session);
        self.pool.give(session.out);
        io
    }
}
