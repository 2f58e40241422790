//! The epoll driver: one mio loop per shard. Edge-triggered readiness;
//! reads go into one shard-wide buffer, so an idle connection holds none.
//! A TLS connection reads and writes through its record layer; a plain one
//! pays a single branch on that `Option` per read or write.

use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::metrics::ShardStats;
use crate::shard::session::Session;
use crate::shard::throttle::Throttled;
use crate::shard::{Driver, Shard, ShardParts, Transport, MAX_PENDING_OUT};
use crate::tls::TlsStream;

/// One read buffer per shard, lent to whichever connection is readable.
/// 64 KiB matches the largest chunk a loopback or LAN read usually returns.
const READ_BUF: usize = 64 * 1024;

const SIGNAL: Token = Token(usize::MAX);
const INBOX: Token = Token(usize::MAX - 1);
const LISTENER_BASE: usize = usize::MAX - 1024;

/// What epoll keeps per connection.
#[derive(Debug)]
pub(crate) struct Socket {
    stream: TcpStream,
    /// Bytes of the session's output head already written.
    out_pos: usize,
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
const _: () = assert!(std::mem::size_of::<crate::shard::Conn<Socket>>() <= 152);

impl Transport for Socket {
    fn backlog(&self, session: &Session) -> usize {
        session.queued() + session.out.len() - self.out_pos
    }
    fn head_written(&self) -> usize {
        self.out_pos
    }
    fn socket(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

pub(crate) struct EpollLoop {
    poll: Poll,
    events: Events,
    listeners: Vec<TcpListener>,
    signal: UnixStream,
    read_buf: Box<[u8]>,
    /// Set when accept failed for want of descriptors; retried each tick.
    accept_blocked: bool,
    /// The accept warning, written at most once a second.
    accept_log: Throttled,
}

impl Driver for EpollLoop {
    type Io = Socket;

    fn build(parts: ShardParts) -> io::Result<(Shard<Socket>, Self)> {
        let poll = Poll::new()?;
        poll.registry().register(
            &mut SourceFd(&parts.inbox.wake_fd()),
            INBOX,
            Interest::READABLE,
        )?;
        let mut listeners = Vec::with_capacity(parts.listeners.len());
        for (i, l) in parts.listeners.into_iter().enumerate() {
            let mut l = TcpListener::from_std(l);
            poll.registry()
                .register(&mut l, Token(LISTENER_BASE + i), Interest::READABLE)?;
            listeners.push(l);
        }
        parts.signal.set_nonblocking(true)?;
        let mut signal = UnixStream::from_std(parts.signal);
        poll.registry()
            .register(&mut signal, SIGNAL, Interest::READABLE)?;
        let driver = Self {
            poll,
            events: Events::with_capacity(1024),
            listeners,
            signal,
            read_buf: vec![0u8; READ_BUF].into_boxed_slice(),
            accept_blocked: false,
            accept_log: Throttled::default(),
        };
        Ok((
            Shard::new(parts.shared, parts.shard_id, parts.inbox),
            driver,
        ))
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match self.poll.poll(&mut self.events, timeout) {
            Err(e) if e.kind() != ErrorKind::Interrupted => Err(e),
            _ => Ok(()),
        }
    }

    fn dispatch(&mut self, shard: &mut Shard<Socket>) {
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for event in &events {
            match event.token() {
                SIGNAL => {
                    let mut buf = [0u8; 64];
                    while matches!((&self.signal).read(&mut buf), Ok(n) if n > 0) {}
                    shard.begin_shutdown(self);
                }
                INBOX => shard.inbox_woken(),
                Token(t) if t >= LISTENER_BASE => self.accept(shard, t - LISTENER_BASE),
                Token(key) => {
                    let finished = event.is_read_closed() || event.is_error();
                    self.service(shard, key, finished);
                }
            }
        }
        self.events = events;
        if self.accept_blocked {
            self.accept_blocked = false;
            for i in 0..self.listeners.len() {
                self.accept(shard, i);
            }
        }
    }

    fn send(&mut self, shard: &mut Shard<Socket>, key: usize) {
        self.flush(shard, key);
    }

    fn drop_conn(&mut self, shard: &mut Shard<Socket>, key: usize) {
        if shard.conns.contains(key) {
            let mut socket = shard.release(key);
            let _ = self.poll.registry().deregister(&mut socket.stream);
        }
    }

    /// Writes happen as output is produced: nothing waits for the turn's end.
    fn end_turn(&mut self, _: &mut Shard<Socket>) {}

    fn ticking(&self) -> bool {
        self.accept_blocked
    }

    fn publish_stats(&self, _: &ShardStats) {}

    fn finish(&mut self) {}
}

impl EpollLoop {
    fn accept(&mut self, shard: &mut Shard<Socket>, index: usize) {
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, peer)) => {
                    let Ok(tls) = shard.shared.start_tls() else {
                        continue;
                    };
                    let token = Token(shard.vacant_key());
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) = self.poll.registry().register(&mut stream, token, interest) {
                        tracing::warn!("register failed: {e}");
                        continue;
                    }
                    let socket = Socket {
                        stream,
                        out_pos: 0,
                        tls,
                    };
                    shard.accepted(socket, index, Some(peer.ip()));
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
                    self.accept_log.warn(
                        shard.now(),
                        format_args!("accept failed: {e}; retrying next tick"),
                    );
                    self.accept_blocked = true;
                    return;
                }
            }
        }
    }

    /// Reads, processes and writes until the socket would block.
    /// `peer_finished`: the event said the peer shut its side, so read to EOF.
    fn service(&mut self, shard: &mut Shard<Socket>, key: usize, peer_finished: bool) {
        loop {
            let mut eof = false;
            let mut drained = false;
            loop {
                let Some(conn) = shard.conns.get_mut(key) else {
                    return;
                };
                if conn.backlog() >= MAX_PENDING_OUT {
                    break;
                }
                let carried = conn.session.carried().len();
                self.read_buf[..carried].copy_from_slice(conn.session.carried());
                let into = &mut self.read_buf[carried..];
                let read = match conn.io.tls.as_deref_mut() {
                    None => (&conn.io.stream).read(into),
                    Some(tls) => tls.read(&mut &conn.io.stream, into),
                };
                let plain = conn.io.tls.is_none();
                match read {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        shard.counters.bytes_received += n as u64;
                        let end = carried + n;
                        shard.feed(key, &mut self.read_buf[..end]);
                        if end < READ_BUF && !peer_finished && plain {
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
                        self.drop_conn(shard, key);
                        return;
                    }
                }
            }
            if eof {
                // Output owed to a half-closed peer is still delivered.
                shard.peer_finished(self, key);
                return;
            }
            let paused = !drained;
            if !self.flush(shard, key) {
                return;
            }
            // Reading stopped for backpressure; if the output drained,
            // nothing else will wake us, so go round again.
            let resumed = shard
                .conns
                .get(key)
                .is_some_and(|c| c.backlog() < MAX_PENDING_OUT);
            if !(paused && resumed) {
                return;
            }
        }
    }

    /// Writes queued output, and more if an App handler's drain adds some;
    /// false if the connection was dropped.
    fn flush(&mut self, shard: &mut Shard<Socket>, key: usize) -> bool {
        if !self.write_out(shard, key) {
            return false;
        }
        if shard.app_drain(key) {
            return self.write_out(shard, key);
        }
        true
    }

    /// Writes queued output; false if the connection was dropped.
    fn write_out(&mut self, shard: &mut Shard<Socket>, key: usize) -> bool {
        let Some(conn) = shard.conns.get_mut(key) else {
            return false;
        };
        loop {
            let (session, io) = (&mut conn.session, &mut conn.io);
            let written = match session.spill.as_deref_mut() {
                Some(spill) if !spill.queue.is_empty() => {
                    let mut slices = Vec::with_capacity(spill.queue.len().min(64) + 1);
                    spill.io_slices(io.out_pos, &session.out, 64, &mut slices);
                    let written = match io.tls.as_deref_mut() {
                        None => (&io.stream).write_vectored(&slices),
                        Some(tls) => tls.write(&mut &io.stream, &slices),
                    };
                    if let Ok(n) = written {
                        let pool = &mut shard.pool;
                        io.out_pos = spill.advance(io.out_pos, n, |v| pool.give(v));
                    }
                    written
                }
                _ if io.out_pos < session.out.len() => {
                    let head = &session.out[io.out_pos..];
                    let written = match io.tls.as_deref_mut() {
                        None => (&io.stream).write(head),
                        Some(tls) => tls.write(&mut &io.stream, &[IoSlice::new(head)]),
                    };
                    if let Ok(n) = written {
                        io.out_pos += n;
                    }
                    written
                }
                // All plaintext is encrypted; its records may still wait.
                _ => match io.tls.as_deref_mut() {
                    None => break,
                    Some(tls) => match tls.drain(&mut &io.stream) {
                        Ok(()) => break,
                        Err(e) => Err(e),
                    },
                },
            };
            match written {
                Ok(n) => shard.counters.bytes_sent += n as u64,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_conn(shard, key);
                    return false;
                }
            }
        }
        let (session, io) = (&mut conn.session, &mut conn.io);
        io.out_pos = 0;
        session.out_drained(&mut shard.pool);
        session.tidy();
        if session.shutdown_after_flush {
            if let Some(tls) = io.tls.as_deref_mut() {
                tls.close_notify();
                match tls.drain(&mut &io.stream) {
                    // The writable edge brings us back to finish.
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                    _ => {}
                }
            }
            if session.take_shutdown() {
                let _ = io.stream.shutdown(Shutdown::Write);
            }
        }
        !shard.written(self, key)
    }
}
