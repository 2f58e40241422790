//! The epoll driver: one mio loop per shard. Edge-triggered readiness;
//! reads go into one shard-wide buffer, so an idle connection holds none.
//! A TLS connection reads and writes through its record layer; a plain one
//! pays a single branch on that `Option` per read or write.

use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;

use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::buf::pool::BufPool;
use crate::metrics::ShardStats;
use crate::protocol::CloseCode;
use crate::pubsub::hub::InboxReceiver;
use crate::shard::conn::{ConnLimits, Counters, Next, Route, Session};
use crate::shard::fanout::{Outlet, PubSub};
use crate::shard::handler::Ctx;
use crate::shard::throttle::Throttled;
use crate::shard::Shared;
use crate::shard::{drain_over, Clock, Deadlines, Expired, Slot};
use crate::tls::TlsStream;

/// One read buffer per shard, lent to whichever connection is readable.
/// 64 KiB matches the largest chunk a loopback or LAN read usually returns.
const READ_BUF: usize = 64 * 1024;

/// Stop reading from a connection while this much output waits for it: a
/// peer that sends without reading must not grow our memory without bound.
pub(crate) const MAX_PENDING_OUT: usize = 4 << 20;

const SIGNAL: Token = Token(usize::MAX);
const INBOX: Token = Token(usize::MAX - 1);
const LISTENER_BASE: usize = usize::MAX - 1024;

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    session: Session,
    /// Bytes of `session.out` already written.
    out_pos: usize,
    /// The peer sent its FIN; drop the connection once `out` is flushed.
    eof: bool,
    /// The record layer on TLS listeners; `out` and the read buffer hold
    /// plaintext either way.
    tls: Option<Box<TlsStream>>,
}

// See the io_uring slot: an idle connection's cost is a design number.
// Checked in release builds only: under debug assertions mio's stream also
// records which selector registered it. The TLS pointer took it from 144 to
// 152: a side table keyed by slot would save those 8 bytes but cost plain
// connections a lookup on every event.
#[cfg(not(debug_assertions))]
const _: () = assert!(std::mem::size_of::<Conn>() <= 152);

impl Conn {
    /// Bytes queued for the peer and not yet written (`out_pos` is the
    /// position in the head: the queue's first segment, or `out`).
    fn pending_out(&self) -> usize {
        self.session.queued() + self.session.out.len() - self.out_pos
    }

    /// Nothing at all is left to write, encrypted records included.
    fn flushed(&self) -> bool {
        self.pending_out() == 0 && !self.tls.as_deref().is_some_and(TlsStream::wants_write)
    }
}

impl Outlet for Conn {
    fn session(&self) -> &Session {
        &self.session
    }
    fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }
    fn backlog(&self) -> usize {
        self.pending_out()
    }
}

impl Slot for Conn {
    fn session(&self) -> &Session {
        &self.session
    }
    fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }
}

pub(crate) struct EpollLoop {
    poll: Poll,
    listeners: Vec<TcpListener>,
    signal: UnixStream,
    conns: Slab<Conn>,
    pubsub: PubSub,
    shared: Shared,
    shard_id: usize,
    counters: Counters,
    pool: BufPool,
    read_buf: Box<[u8]>,
    clock: Clock,
    deadlines: Deadlines,
    next_generation: u32,
    /// Set when accept failed for want of descriptors; retried each tick.
    accept_blocked: bool,
    /// The accept warning, written at most once a second.
    accept_log: Throttled,
    /// When shutdown began, the tick by which every connection is dropped.
    draining_until: Option<u64>,
    /// This shard has told the others it has no connections left.
    drain_reported: bool,
}

impl EpollLoop {
    pub(crate) fn new(
        listeners: Vec<std::net::TcpListener>,
        signal: std::os::unix::net::UnixStream,
        shared: Shared,
        shard_id: usize,
        inbox: InboxReceiver,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut SourceFd(&inbox.wake_fd()), INBOX, Interest::READABLE)?;
        let mut mio_listeners = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            let mut l = TcpListener::from_std(l);
            poll.registry()
                .register(&mut l, Token(LISTENER_BASE + i), Interest::READABLE)?;
            mio_listeners.push(l);
        }
        signal.set_nonblocking(true)?;
        let mut signal = UnixStream::from_std(signal);
        poll.registry()
            .register(&mut signal, SIGNAL, Interest::READABLE)?;
        Ok(Self {
            poll,
            listeners: mio_listeners,
            signal,
            conns: Slab::new(),
            pubsub: PubSub::new(inbox, &shared.config.routes),
            deadlines: Deadlines::new(&shared.config, &shared.apps, shard_id),
            shared,
            shard_id,
            counters: Counters::default(),
            pool: BufPool::default(),
            read_buf: vec![0u8; READ_BUF].into_boxed_slice(),
            clock: Clock::new(),
            next_generation: 0,
            accept_blocked: false,
            accept_log: Throttled::default(),
            draining_until: None,
            drain_reported: false,
        })
    }

    /// Runs until shutdown completes.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = (!self.deadlines.is_empty()
                || self.accept_blocked
                || self.draining_until.is_some())
            .then(Clock::tick_interval);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.clock.update();
            for event in &events {
                match event.token() {
                    SIGNAL => self.begin_shutdown(),
                    INBOX => self.pubsub.woken = true,
                    Token(t) if t >= LISTENER_BASE => self.accept(t - LISTENER_BASE),
                    Token(key) => self.service(key, event.is_read_closed() || event.is_error()),
                }
            }
            if self.accept_blocked {
                self.accept_blocked = false;
                for i in 0..self.listeners.len() {
                    self.accept(i);
                }
            }
            self.fan_out();
            self.expire_deadlines();
            let stats = &self.shared.metrics.shards[self.shard_id];
            self.counters.publish(stats, self.conns.len());
            ShardStats::set(&stats.out_buffers_lent, self.pool.lent() as u64);
            let (handshaking, parked) = self.deadlines.gate.occupancy();
            ShardStats::set(&stats.handshakes_in_flight, handshaking as u64);
            ShardStats::set(&stats.tarpit_parked, parked as u64);
            self.pubsub.publish_stats(stats);
            if let Some(until) = self.draining_until {
                let (metrics, empty) = (&self.shared.metrics, self.conns.is_empty());
                let now = self.clock.now_tick;
                if drain_over(metrics, empty, &mut self.drain_reported, now, until) {
                    // Peers that never finished closing: their handlers
                    // still hear `close`.
                    let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        self.remove(key);
                    }
                    return Ok(());
                }
            }
        }
    }

    fn accept(&mut self, index: usize) {
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    let Ok(tls) = self.shared.start_tls() else {
                        continue;
                    };
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) = self
                        .poll
                        .registry()
                        .register(&mut stream, Token(key), interest)
                    {
                        tracing::warn!("register failed: {e}");
                        continue;
                    }
                    self.next_generation = self.next_generation.wrapping_add(1);
                    let conn = entry.insert(Conn {
                        stream,
                        session: Session::new(
                            self.next_generation,
                            self.shared.expects_proxy(index),
                            Some(peer.ip()),
                        ),
                        out_pos: 0,
                        eof: false,
                        tls,
                    });
                    let now = self.clock.now_tick;
                    self.deadlines
                        .accepted(key, &mut conn.session, now, &self.shared.config);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: the queue stays full until a
                    // descriptor frees up, and no new edge will tell us.
                    let now = self.clock.now_tick;
                    self.accept_log
                        .warn(now, format_args!("accept failed: {e}; retrying next tick"));
                    self.accept_blocked = true;
                    return;
                }
            }
        }
    }

    /// Reads, processes and writes until the socket would block.
    /// `peer_finished`: the event said the peer shut its side, so read to EOF.
    fn service(&mut self, key: usize, peer_finished: bool) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let mut eof = false;
            let mut drained = false;
            while conn.pending_out() < MAX_PENDING_OUT {
                let carried = conn.session.carried().len();
                self.read_buf[..carried].copy_from_slice(conn.session.carried());
                let into = &mut self.read_buf[carried..];
                let read = match conn.tls.as_deref_mut() {
                    None => (&conn.stream).read(into),
                    Some(tls) => tls.read(&mut &conn.stream, into),
                };
                match read {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        self.counters.bytes_received += n as u64;
                        let end = carried + n;
                        // Only handlers look at the backlog; built-in routes skip the sum.
                        let held = match conn.session.route {
                            Route::App(_) => conn.session.held(conn.pending_out()),
                            _ => 0,
                        };
                        let config = &self.shared.config;
                        let mut limits = ConnLimits {
                            max_message: config.max_message,
                            subprotocols: &config.subprotocols,
                            metrics: &self.shared.metrics,
                            counters: &mut self.counters,
                            pool: &mut self.pool,
                            admission: &self.shared.admission,
                            socket: conn.stream.as_fd(),
                            key,
                            pubsub: &mut self.pubsub,
                            routes: &config.routes,
                            apps: &self.shared.apps,
                            held,
                        };
                        let next = conn.session.feed(&mut self.read_buf[..end], &mut limits);
                        self.deadlines.after(
                            key,
                            &mut conn.session,
                            next,
                            self.clock.now_tick,
                            config,
                        );
                        if end < READ_BUF && !peer_finished && conn.tls.is_none() {
                            // A short read drained the socket; the next
                            // arrival raises a new edge. A FIN that came
                            // with this data raises none, hence the flag.
                            // (A short TLS read says nothing of the socket:
                            // TLS reads on until it would block.)
                            drained = true;
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        drained = true;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.remove(key);
                        return;
                    }
                }
            }
            let paused = !drained && !eof;
            if !self.flush(key) {
                return;
            }
            if eof {
                // Output owed to a half-closed peer is still delivered; the
                // close timeout bounds how long that may take.
                let conn = &mut self.conns[key];
                if conn.flushed() {
                    self.remove(key);
                } else if !conn.eof {
                    conn.eof = true;
                    let now = self.clock.now_tick;
                    let (session, counters) = (&mut conn.session, &mut self.counters);
                    self.deadlines
                        .peer_finished(key, session, counters, now, &self.shared.config);
                }
                return;
            }
            // Reading stopped for backpressure; if the output drained,
            // nothing else will wake us, so go round again.
            let resumed = self
                .conns
                .get(key)
                .is_some_and(|c| c.pending_out() < MAX_PENDING_OUT);
            if !(paused && resumed) {
                return;
            }
        }
    }

    /// Writes queued output, and more if an App handler's drain adds some;
    /// false if the connection was dropped.
    fn flush(&mut self, key: usize) -> bool {
        if !self.write_out(key) {
            return false;
        }
        if self.app_drain(key) {
            return self.write_out(key);
        }
        true
    }

    /// Runs an App connection's drain handler if a send met its bound and
    /// the output has fallen under it; true if the handler ran.
    fn app_drain(&mut self, key: usize) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        if !matches!(conn.session.route, Route::App(_)) {
            return false;
        }
        let backlog = conn.pending_out();
        let ctx = Ctx::new(&mut self.pubsub, &mut self.counters, key, 0);
        let config = &self.shared.config;
        let next = conn
            .session
            .app_drain(&self.shared.apps, backlog, &mut self.pool, ctx);
        let now = self.clock.now_tick;
        if next != Next::Continue {
            self.deadlines
                .after(key, &mut conn.session, next, now, config);
        }
        conn.pending_out() != backlog
    }

    /// Writes queued output; false if the connection was dropped.
    fn write_out(&mut self, key: usize) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        loop {
            let session = &mut conn.session;
            let written = match session.spill.as_deref_mut() {
                Some(spill) if !spill.queue.is_empty() => {
                    let mut slices = Vec::with_capacity(spill.queue.len().min(64) + 1);
                    spill.io_slices(conn.out_pos, &session.out, 64, &mut slices);
                    let written = match conn.tls.as_deref_mut() {
                        None => (&conn.stream).write_vectored(&slices),
                        Some(tls) => tls.write(&mut &conn.stream, &slices),
                    };
                    if let Ok(n) = written {
                        let pool = &mut self.pool;
                        conn.out_pos = spill.advance(conn.out_pos, n, |v| pool.give(v));
                    }
                    written
                }
                _ if conn.out_pos < session.out.len() => {
                    let head = &session.out[conn.out_pos..];
                    let written = match conn.tls.as_deref_mut() {
                        None => (&conn.stream).write(head),
                        Some(tls) => tls.write(&mut &conn.stream, &[IoSlice::new(head)]),
                    };
                    if let Ok(n) = written {
                        conn.out_pos += n;
                    }
                    written
                }
                // All plaintext is encrypted; its records may still wait.
                _ => match conn.tls.as_deref_mut() {
                    None => break,
                    Some(tls) => match tls.drain(&mut &conn.stream) {
                        Ok(()) => break,
                        Err(e) => Err(e),
                    },
                },
            };
            match written {
                Ok(n) => self.counters.bytes_sent += n as u64,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.remove(key);
                    return false;
                }
            }
        }
        let session = &mut conn.session;
        conn.out_pos = 0;
        session.out_drained(&mut self.pool);
        session.tidy();
        if session.shutdown_after_flush {
            if let Some(tls) = conn.tls.as_deref_mut() {
                tls.close_notify();
                match tls.drain(&mut &conn.stream) {
                    // The writable edge brings us back to finish.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                    _ => {}
                }
            }
            session.shutdown_after_flush = false;
            let _ = conn.stream.shutdown(Shutdown::Write);
        }
        if conn.eof {
            self.remove(key);
            return false;
        }
        true
    }

    /// Hands this turn's published messages to subscribers and writes them.
    fn fan_out(&mut self) {
        let threshold = self.shared.config.routes.deflate_threshold;
        let fan_out = self.pubsub.pump(&mut self.conns, threshold);
        for &key in &fan_out.written {
            self.flush(key);
        }
        for &key in &fan_out.overloaded {
            self.close_overloaded(key);
        }
    }

    /// Closes a subscriber that fell too far behind: 1013 with a jittered
    /// retry hint, its unsent backlog dropped.
    fn close_overloaded(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(spill) = conn.session.spill.as_deref_mut() {
            spill.drop_unsent_shared(conn.out_pos);
        }
        let stats = &self.shared.admission.registry.stats;
        crate::admission::stats::AdmissionStats::bump(&stats.overload_closes);
        let retry = self.deadlines.gate.jitter.retry_after(5);
        let reason = format!("slow consumer; retry in {retry} s");
        self.close(key, CloseCode::TRY_AGAIN_LATER, &reason);
    }

    fn expire_deadlines(&mut self) {
        let stats = &self.shared.admission.registry.stats;
        let expired = self
            .deadlines
            .expire(self.clock.now_tick, &mut self.conns, stats);
        for (key, what) in expired {
            match what {
                Expired::CloseIdle => self.close(key, CloseCode::GOING_AWAY, "idle timeout"),
                Expired::MessageTimeout => {
                    let (code, reason) = crate::shard::MESSAGE_TIMEOUT;
                    self.close(key, code, reason);
                }
                Expired::Drain => self.close(key, CloseCode::GOING_AWAY, "server shutting down"),
                Expired::Answer => self.answer(key),
                Expired::Drop => self.remove(key),
            }
        }
    }

    fn close(&mut self, key: usize, code: CloseCode, reason: &str) {
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.session.is_open() {
                self.counters.closed(code);
            }
            let now = self.clock.now_tick;
            let config = &self.shared.config;
            self.deadlines
                .close(key, &mut conn.session, code, reason, now, config);
            if matches!(conn.session.route, Route::App(_)) {
                let held = conn.session.held(conn.pending_out());
                let ctx = Ctx::new(&mut self.pubsub, &mut self.counters, key, held);
                conn.session.app_closing(&self.shared.apps, ctx);
            }
            self.flush(key);
        }
    }

    /// Answers a parked (refused) client now.
    fn answer(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            let now = self.clock.now_tick;
            self.deadlines
                .answer(key, &mut conn.session, now, &self.shared.config);
            self.flush(key);
        }
    }

    fn begin_shutdown(&mut self) {
        let mut buf = [0u8; 64];
        while matches!((&self.signal).read(&mut buf), Ok(n) if n > 0) {}
        if self.draining_until.is_some() {
            return;
        }
        tracing::info!("shutting down: closing {} connections", self.conns.len());
        // Listeners stay open through the drain so that load balancers
        // see /healthz answer 503; upgrades are refused from now on.
        self.shared.metrics.begin_draining();
        let now = self.clock.now_tick;
        let config = std::sync::Arc::clone(&self.shared.config);
        self.draining_until = Some(self.deadlines.begin_drain(now, &config));
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            if !self
                .deadlines
                .schedule_drain(key, &mut conn.session, now, &config)
            {
                self.close(key, CloseCode::GOING_AWAY, "server shutting down");
            }
        }
    }

    fn remove(&mut self, key: usize) {
        if self.conns.contains(key) {
            let mut conn = self.conns.remove(key);
            self.deadlines
                .released(key, &mut conn.session, &self.shared.admission);
            if matches!(conn.session.route, Route::App(_)) {
                let held = conn.session.held(conn.pending_out());
                let ctx = Ctx::new(&mut self.pubsub, &mut self.counters, key, held);
                conn.session.app_release(&self.shared.apps, ctx);
            }
            self.pubsub.forget(&mut conn.session);
            self.counters.forget(&conn.session);
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.pool.give(conn.session.out);
        }
    }
}
