//! A shard: one thread, one mio (epoll) loop, its own listeners, connection
//! slab, timer wheel and read buffer. Nothing here is shared with another
//! shard, so nothing on the read/parse/write path takes a lock.

mod conn;
pub(crate) mod spawn;
mod timer;

use std::io::{self, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::config::Config;
use crate::protocol::{CloseCode, State};
use conn::{Conn, ConnLimits, Next};
use timer::{Entry, TimerWheel, TICK_MS};

/// One read buffer per shard, lent to whichever connection is readable.
/// 64 KiB matches the largest chunk a loopback or LAN read usually returns.
const READ_BUF: usize = 64 * 1024;

/// Stop reading from a connection while this much output waits for it: a
/// peer that sends without reading must not grow our memory without bound.
const MAX_PENDING_OUT: usize = 4 << 20;

/// Output buffers larger than this are freed once drained, so a burst does
/// not leave an idle connection holding memory.
const KEEP_OUT_CAPACITY: usize = 16 * 1024;

const SIGNAL: Token = Token(usize::MAX);
const LISTENER_BASE: usize = usize::MAX - 1024;

pub(crate) struct Shard {
    poll: Poll,
    listeners: Vec<TcpListener>,
    signal: UnixStream,
    conns: Slab<Conn>,
    config: Arc<Config>,
    read_buf: Box<[u8]>,
    wheel: TimerWheel,
    due: Vec<Entry>,
    epoch: Instant,
    now_tick: u64,
    next_generation: u32,
    /// Set when accept failed for want of descriptors; retried each tick.
    accept_blocked: bool,
    /// When shutdown began, the tick by which every connection is dropped.
    draining_until: Option<u64>,
}

impl Shard {
    pub(crate) fn new(
        listeners: Vec<std::net::TcpListener>,
        signal: std::os::unix::net::UnixStream,
        config: Arc<Config>,
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
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
            config,
            read_buf: vec![0u8; READ_BUF].into_boxed_slice(),
            wheel: TimerWheel::new(0),
            due: Vec::new(),
            epoch: Instant::now(),
            now_tick: 0,
            next_generation: 0,
            accept_blocked: false,
            draining_until: None,
        })
    }

    /// Runs until shutdown completes.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout =
                (!self.wheel.is_empty() || self.accept_blocked || self.draining_until.is_some())
                    .then(|| Duration::from_millis(TICK_MS));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.now_tick = self.epoch.elapsed().as_millis() as u64 / TICK_MS;
            for event in &events {
                match event.token() {
                    SIGNAL => self.begin_shutdown(),
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
            self.expire_timers();
            if let Some(until) = self.draining_until {
                if self.conns.is_empty() || self.now_tick >= until {
                    return Ok(());
                }
            }
        }
    }

    fn ticks(d: Duration) -> u64 {
        (d.as_millis() as u64).div_ceil(TICK_MS)
    }

    fn accept(&mut self, index: usize) {
        if self.draining_until.is_some() {
            return;
        }
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        Token(key),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        tracing::warn!("register failed: {e}");
                        continue;
                    }
                    self.next_generation = self.next_generation.wrapping_add(1);
                    entry.insert(Conn::new(stream, self.next_generation));
                    let deadline = self.now_tick + Self::ticks(self.config.handshake_timeout);
                    self.set_deadline(key, deadline);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    // EMFILE/ENFILE/ENOBUFS: the queue stays full until a
                    // descriptor frees up, and no new edge will tell us.
                    tracing::warn!("accept failed: {e}; retrying next tick");
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
            let mut upgraded = false;
            let mut next = Next::Continue;
            let mut drained = false;
            while conn.pending_out() < MAX_PENDING_OUT {
                let carried = conn.carry.len();
                self.read_buf[..carried].copy_from_slice(&conn.carry);
                match (&conn.stream).read(&mut self.read_buf[carried..]) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        conn.carry.clear();
                        let end = carried + n;
                        let limits = ConnLimits {
                            max_message: self.config.max_message,
                            subprotocols: &self.config.subprotocols,
                        };
                        let (used, step_next) = conn.process(&mut self.read_buf[..end], &limits);
                        if used < end {
                            conn.carry.extend_from_slice(&self.read_buf[used..end]);
                        }
                        match step_next {
                            Next::Continue => {}
                            Next::Upgraded => upgraded = true,
                            closing => next = closing,
                        }
                        if end < READ_BUF && !peer_finished {
                            // A short read drained the socket; the next
                            // arrival raises a new edge. A FIN that came
                            // with this data raises none, hence the flag.
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
            if upgraded {
                self.on_next(key, Next::Upgraded);
            }
            let paused = !drained && !eof;
            self.on_next(key, next);
            if !self.flush(key) {
                return;
            }
            if eof {
                self.remove(key);
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

    /// Moves the connection's deadline to match what just happened.
    fn on_next(&mut self, key: usize, next: Next) {
        let idle = self.config.idle_timeout;
        let deadline = match next {
            // Activity on an open connection pushes the idle deadline out;
            // while closing, the peer cannot buy time by talking.
            Next::Continue => match self.conns.get(key).map(|c| &c.phase) {
                Some(conn::Phase::Open(ws)) if ws.state() == State::Open && !idle.is_zero() => {
                    self.now_tick + Self::ticks(idle)
                }
                _ => return,
            },
            Next::Upgraded if idle.is_zero() => u64::MAX,
            Next::Upgraded => self.now_tick + Self::ticks(idle),
            Next::AwaitClose | Next::Linger => {
                self.now_tick + Self::ticks(self.config.close_timeout)
            }
        };
        self.set_deadline(key, deadline);
    }

    fn set_deadline(&mut self, key: usize, tick: u64) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.deadline_tick = tick;
        if tick < conn.armed_tick {
            conn.armed_tick = tick;
            self.wheel.arm(key, conn.generation, tick);
        }
    }

    /// Writes queued output; false if the connection was dropped.
    fn flush(&mut self, key: usize) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        while conn.out_pos < conn.out.len() {
            match (&conn.stream).write(&conn.out[conn.out_pos..]) {
                Ok(n) => conn.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.remove(key);
                    return false;
                }
            }
        }
        conn.out.clear();
        conn.out_pos = 0;
        if conn.out.capacity() > KEEP_OUT_CAPACITY {
            conn.out = Vec::new();
        }
        if conn.shutdown_after_flush {
            conn.shutdown_after_flush = false;
            let _ = conn.stream.shutdown(Shutdown::Write);
        }
        true
    }

    fn expire_timers(&mut self) {
        self.wheel.expire(self.now_tick, &mut self.due);
        let mut due = std::mem::take(&mut self.due);
        for entry in due.drain(..) {
            let Some(conn) = self.conns.get_mut(entry.key) else {
                continue;
            };
            if conn.generation != entry.generation || conn.armed_tick != entry.tick {
                continue;
            }
            conn.armed_tick = u64::MAX;
            if conn.deadline_tick > self.now_tick {
                let tick = conn.deadline_tick;
                self.set_deadline(entry.key, tick);
                continue;
            }
            self.on_deadline(entry.key);
        }
        self.due = due;
    }

    fn on_deadline(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.phase {
            conn::Phase::Open(ref ws) if ws.state() == State::Open => {
                let next = conn.close(CloseCode::GOING_AWAY, "idle timeout");
                self.on_next(key, next);
                self.flush(key);
            }
            // Handshake too slow, or the peer never finished closing.
            _ => self.remove(key),
        }
    }

    fn begin_shutdown(&mut self) {
        let mut buf = [0u8; 64];
        while matches!((&self.signal).read(&mut buf), Ok(n) if n > 0) {}
        if self.draining_until.is_some() {
            return;
        }
        tracing::info!("shutting down: closing {} connections", self.conns.len());
        for mut l in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.draining_until = Some(self.now_tick + Self::ticks(self.config.close_timeout) + 1);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let next = self.conns[key].close(CloseCode::GOING_AWAY, "server shutting down");
            self.on_next(key, next);
            self.flush(key);
        }
    }

    fn remove(&mut self, key: usize) {
        if self.conns.contains(key) {
            let mut conn = self.conns.remove(key);
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }
}
