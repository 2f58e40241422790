//! The io_uring driver: multishot accept, multishot recv from a provided
//! buffer ring, sends batched once per loop turn, and every SQE of a turn
//! submitted with the wait in one `io_uring_enter`. A TLS connection
//! decrypts each receive into the scratch buffer and encrypts its whole
//! output into one send; a plain one pays a branch on that `Option`.
//!
//! Architecture invariant: an operation owns its connection slot until its
//! completion arrives. A slot is freed (and its descriptor closed) only when
//! no operation on it is in flight, so a late completion can never touch a
//! newcomer in the same slot; the generation in `user_data` checks that.
#![allow(unsafe_code)]

pub(crate) mod buf_ring;
mod user_data;

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;

use crate::buf::pool::BufPool;
use crate::metrics::ShardStats;
use crate::protocol::CloseCode;
use crate::pubsub::hub::InboxReceiver;
use crate::shard::conn::{ConnLimits, Counters, Next, Route, Session};
use crate::shard::fanout::{Outlet, PubSub};
use crate::shard::handler::Ctx;
use crate::shard::spill::{Flight, Segment};
use crate::shard::throttle::Throttled;
use crate::shard::Shared;
use crate::shard::{drain_over, Clock, Deadlines, Expired, Slot};
use crate::tls::TlsStream;
use buf_ring::BufRing;
use user_data::{Op, UserData};

/// Submission queue size; completions get four times as many slots since a
/// multishot operation posts many per submission.
const RING_ENTRIES: u32 = 4096;

/// Receive buffers per shard. With incremental consumption, 32 x 64 KiB
/// (2 MiB) holds a loop turn of 1,000 connections sending 1 KiB each;
/// without it every receive takes a whole buffer, so the classic layout
/// needs many more (1024 x 16 KiB). Running dry (ENOBUFS) only pauses
/// receives until the turn recycles buffers. The kernel touches every
/// buffer as it cycles through the ring, so this is resident memory.
const RECV_BUFFERS_INC: (u16, usize) = (16, 32 * 1024);
const RECV_BUFFERS_CLASSIC: (u16, usize) = (1024, 16 * 1024);

use super::epoll::MAX_PENDING_OUT;

/// Most iovecs one SENDMSG names (the kernel's UIO_MAXIOV).
const IOV_MAX: usize = 1024;

#[derive(Debug)]
struct Conn {
    fd: OwnedFd,
    session: Session,
    /// Bytes owned by the send in flight; untouched until it completes.
    sending: Vec<u8>,
    sent: usize,
    recv_armed: bool,
    send_armed: bool,
    /// A zero-copy send's buffer is released only by its notification.
    zc_notif_pending: bool,
    /// Reading stopped because too much output is queued.
    recv_paused: bool,
    /// Removal requested; the slot is freed when nothing is in flight.
    dead: bool,
    /// Already in `dirty` this turn.
    dirty: bool,
    /// The peer shut its side; close once our output is flushed.
    eof: bool,
    /// The send in flight is the session's vectored `Flight`, not `sending`.
    vectored: bool,
    /// The record layer on TLS listeners; `sending` then holds records.
    tls: Option<Box<TlsStream>>,
}

// An idle connection's whole user-space cost is a design number: this slot,
// a timer-wheel entry and slab slack must stay within 256 bytes, so growing
// the slot is a decision, not an accident. The TLS pointer took it from 176
// to 184, still within that budget.
const _: () = assert!(std::mem::size_of::<Conn>() <= 184);

impl Slot for Conn {
    fn session(&self) -> &Session {
        &self.session
    }
    fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }
    fn socket(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }
}

impl Conn {
    fn in_flight(&self) -> bool {
        self.recv_armed || self.send_armed || self.zc_notif_pending
    }

    fn pending_out(&self) -> usize {
        let flight = self
            .session
            .spill
            .as_deref()
            .and_then(|s| s.flight.as_deref())
            .map_or(0, Flight::remaining);
        self.session.queued() + self.session.out.len() + (self.sending.len() - self.sent) + flight
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

pub(crate) struct UringLoop {
    ring: IoUring,
    bufs: BufRing,
    listeners: Vec<std::net::TcpListener>,
    signal: std::os::unix::net::UnixStream,
    signal_buf: Box<[u8; 64]>,
    conns: Slab<Conn>,
    pubsub: PubSub,
    inbox_buf: Box<u64>,
    shared: Shared,
    shard_id: usize,
    counters: Counters,
    pool: BufPool,
    clock: Clock,
    deadlines: Deadlines,
    next_generation: u32,
    /// Connections with output to send or a state change to act on.
    dirty: Vec<usize>,
    /// Connections whose receive must be re-armed once buffers are back.
    rearm: Vec<usize>,
    /// Joins a carried partial frame with the next buffer.
    scratch: Vec<u8>,
    completions: Vec<(u64, i32, u32)>,
    accepts_armed: usize,
    /// Listeners whose accept failed for want of descriptors or memory,
    /// re-armed at `accept_retry_tick`: re-arming at once would only fail
    /// again, spinning the core.
    accept_retry: Vec<usize>,
    accept_retry_tick: u64,
    /// The accept warning, written at most once a second.
    accept_log: Throttled,
    draining_until: Option<u64>,
    /// This shard has told the others it has no connections left.
    drain_reported: bool,
}

impl UringLoop {
    /// Builds the ring; call on the thread that will run it (the ring is
    /// single-issuer with deferred task work).
    pub(crate) fn new(
        listeners: Vec<std::net::TcpListener>,
        signal: std::os::unix::net::UnixStream,
        shared: Shared,
        shard_id: usize,
        inbox: InboxReceiver,
    ) -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_cqsize(RING_ENTRIES * 4)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            .build(RING_ENTRIES)?;
        let bufs = match BufRing::new(&ring, RECV_BUFFERS_INC.0, RECV_BUFFERS_INC.1, 0, true) {
            Ok(bufs) => bufs,
            Err(e) => {
                tracing::info!("incremental buffer rings unavailable ({e}); using whole buffers");
                BufRing::new(
                    &ring,
                    RECV_BUFFERS_CLASSIC.0,
                    RECV_BUFFERS_CLASSIC.1,
                    0,
                    false,
                )?
            }
        };
        let mut this = Self {
            ring,
            bufs,
            listeners,
            signal,
            signal_buf: Box::new([0u8; 64]),
            conns: Slab::new(),
            pubsub: PubSub::new(inbox, &shared.config.routes),
            inbox_buf: Box::new(0),
            deadlines: Deadlines::new(&shared.config, &shared.apps, shard_id),
            shared,
            shard_id,
            counters: Counters::default(),
            pool: BufPool::default(),
            clock: Clock::new(),
            next_generation: 0,
            dirty: Vec::new(),
            rearm: Vec::new(),
            scratch: Vec::new(),
            completions: Vec::with_capacity(RING_ENTRIES as usize * 4),
            accepts_armed: 0,
            accept_retry: Vec::new(),
            accept_retry_tick: 0,
            accept_log: Throttled::default(),
            draining_until: None,
            drain_reported: false,
        };
        for i in 0..this.listeners.len() {
            this.arm_accept(i);
        }
        this.arm_signal();
        this.arm_inbox();
        Ok(this)
    }

    /// Runs until shutdown completes.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let result = self.run_loop();
        self.bufs.unregister(&self.ring);
        result
    }

    fn run_loop(&mut self) -> io::Result<()> {
        loop {
            let ticking = !self.deadlines.is_empty()
                || !self.accept_retry.is_empty()
                || self.draining_until.is_some();
            let wait = if ticking {
                let ts = types::Timespec::from(Clock::tick_interval());
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            } else {
                self.ring.submit_and_wait(1)
            };
            match wait {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                    ) => {}
                Err(e) => return Err(e),
            }
            self.clock.update();
            self.retry_accepts();
            let mut completions = std::mem::take(&mut self.completions);
            completions.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(data, result, flags) in &completions {
                self.complete(UserData(data), result, flags);
            }
            completions.clear();
            self.completions = completions;
            self.fan_out();
            self.expire_deadlines();
            self.flush_dirty();
            for key in std::mem::take(&mut self.rearm) {
                self.arm_recv(key);
            }
            let stats = &self.shared.metrics.shards[self.shard_id];
            self.counters.publish(stats, self.conns.len());
            ShardStats::set(&stats.recv_buffers_lent, self.bufs.lent() as u64);
            ShardStats::set(&stats.out_buffers_lent, self.pool.lent() as u64);
            let (handshaking, parked) = self.deadlines.gate.occupancy();
            ShardStats::set(&stats.handshakes_in_flight, handshaking as u64);
            ShardStats::set(&stats.tarpit_parked, parked as u64);
            self.pubsub.publish_stats(stats);
            if let Some(until) = self.draining_until {
                let (metrics, empty) = (&self.shared.metrics, self.conns.is_empty());
                let now = self.clock.now_tick;
                if drain_over(metrics, empty, &mut self.drain_reported, now, until) {
                    self.release_apps();
                    // The armed multishot accepts keep the listening sockets
                    // alive until the ring's asynchronous teardown ends;
                    // shutting them down stops listening now.
                    for listener in &self.listeners {
                        let _ = socket2::SockRef::from(listener).shutdown(std::net::Shutdown::Both);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Shutdown ends with peers that never finished closing: their slots
    /// go with the ring, but their handlers still hear `close`.
    fn release_apps(&mut self) {
        let routes = &self.shared.apps;
        for (key, conn) in &mut self.conns {
            if matches!(conn.session.route, Route::App(_)) {
                let held = conn.session.held(conn.pending_out());
                let ctx = Ctx::new(&mut self.pubsub, &mut self.counters, key, held);
                conn.session.app_release(routes, ctx);
            }
        }
    }

    /// Queues an SQE, submitting early if the queue is full.
    ///
    /// # Safety
    /// Every buffer and descriptor the entry names must stay valid until its
    /// completion (and, for SEND_ZC, its notification) arrives.
    unsafe fn push(&mut self, entry: &squeue::Entry) {
        loop {
            // SAFETY: forwarded from this function's contract.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return;
            }
            if let Err(e) = self.ring.submit() {
                tracing::warn!("io_uring submit failed: {e}");
            }
        }
    }

    fn arm_accept(&mut self, index: usize) {
        let fd = self.listeners[index].as_raw_fd();
        let entry = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(UserData::new(Op::Accept, index, 0).0);
        // SAFETY: the listener lives in `self.listeners` until the loop ends.
        unsafe { self.push(&entry) };
        self.accepts_armed += 1;
    }

    fn arm_signal(&mut self) {
        let fd = self.signal.as_raw_fd();
        let entry = opcode::Recv::new(types::Fd(fd), self.signal_buf.as_mut_ptr(), 64)
            .build()
            .user_data(UserData::new(Op::Signal, 0, 0).0);
        // SAFETY: the socket and the boxed buffer live as long as the loop.
        unsafe { self.push(&entry) };
    }

    fn arm_inbox(&mut self) {
        let fd = self.pubsub.wake_fd();
        let buf: *mut u64 = &mut *self.inbox_buf;
        let entry = opcode::Read::new(types::Fd(fd), buf.cast(), 8)
            .build()
            .user_data(UserData::new(Op::Inbox, 0, 0).0);
        // SAFETY: the eventfd and the boxed counter live as long as the loop.
        unsafe { self.push(&entry) };
    }

    fn arm_recv(&mut self, key: usize) {
        let group = self.bufs.group();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.recv_armed || conn.dead || conn.recv_paused {
            return;
        }
        conn.recv_armed = true;
        let entry = opcode::RecvMulti::new(types::Fd(conn.fd.as_raw_fd()), group)
            .build()
            .user_data(UserData::new(Op::Recv, key, conn.session.generation).0);
        // SAFETY: the descriptor is closed only when the slot is freed, and
        // the slot is freed only after this receive's last completion.
        unsafe { self.push(&entry) };
    }

    fn complete(&mut self, data: UserData, result: i32, flags: u32) {
        match data.op() {
            Op::Accept => self.on_accept(data.key(), result, flags),
            Op::Recv => self.on_recv(data, result, flags),
            Op::Send => self.on_send(data, result, flags),
            Op::Signal => self.begin_shutdown(),
            Op::Inbox => {
                self.pubsub.woken = true;
                if self.draining_until.is_none() {
                    self.arm_inbox();
                }
            }
            Op::Cancel | Op::Close => {}
        }
    }

    /// Re-arms the accepts that backed off, once their tick has come.
    fn retry_accepts(&mut self) {
        if !self.accept_retry.is_empty() && self.clock.now_tick >= self.accept_retry_tick {
            for index in std::mem::take(&mut self.accept_retry) {
                self.arm_accept(index);
            }
        }
    }

    fn on_accept(&mut self, index: usize, result: i32, flags: u32) {
        let ended = !cqueue::more(flags);
        if ended {
            self.accepts_armed -= 1;
        }
        if result < 0 {
            self.accept_failed(index, -result, ended);
            return;
        }
        if ended {
            self.arm_accept(index);
        }
        // SAFETY: a successful accept returns a new descriptor we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(result as RawFd) };
        let Ok(tls) = self.shared.start_tls() else {
            return;
        };
        self.next_generation = self.next_generation.wrapping_add(1) & user_data::GENERATION_MASK;
        let key = self.conns.insert(Conn {
            fd,
            session: Session::new(self.next_generation, self.shared.expects_proxy(index), None),
            sending: Vec::new(),
            sent: 0,
            recv_armed: false,
            send_armed: false,
            zc_notif_pending: false,
            recv_paused: false,
            dead: false,
            dirty: false,
            eof: false,
            vectored: false,
            tls,
        });
        let now = self.clock.now_tick;
        self.deadlines
            .accepted(key, &mut self.conns[key].session, now, &self.shared.config);
        self.arm_recv(key);
    }

    /// An accept failed with `errno`. Out of descriptors or memory, the
    /// connection stays queued and every retry fails until something is
    /// freed: back off to the next tick, as the epoll driver does.
    fn accept_failed(&mut self, index: usize, errno: i32, ended: bool) {
        let exhausted = matches!(
            errno,
            libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS
        );
        if errno != libc::ECANCELED {
            let e = io::Error::from_raw_os_error(errno);
            let now = self.clock.now_tick;
            let then = if exhausted {
                "retrying next tick"
            } else {
                "re-armed"
            };
            self.accept_log
                .warn(now, format_args!("accept failed: {e}; {then}"));
        }
        if !ended {
            return;
        }
        if exhausted {
            self.accept_retry.push(index);
            self.accept_retry_tick = self.clock.now_tick + 1;
        } else {
            self.arm_accept(index);
        }
    }

    fn on_recv(&mut self, data: UserData, result: i32, flags: u32) {
        let key = data.key();
        let bid = cqueue::buffer_select(flags);
        let buf_more = cqueue::buffer_more(flags);
        let filled = usize::try_from(result).unwrap_or(0);
        let Some(conn) = self
            .conns
            .get_mut(key)
            .filter(|c| c.session.generation == data.generation())
        else {
            if let Some(bid) = bid {
                self.bufs.take(bid, filled);
                self.bufs.release(bid, filled, buf_more);
            }
            return;
        };
        let more = cqueue::more(flags);
        if !more {
            conn.recv_armed = false;
        }
        if result > 0 {
            self.counters.bytes_received += result as u64;
            let Some(bid) = bid else {
                return;
            };
            let len = result as usize;
            if !conn.dead {
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
                    socket: conn.fd.as_fd(),
                    key,
                    pubsub: &mut self.pubsub,
                    routes: &config.routes,
                    apps: &self.shared.apps,
                    held,
                };
                let input = self.bufs.take(bid, len);
                let mut finished = false;
                let next = if let Some(tls) = conn.tls.as_deref_mut() {
                    self.scratch.clear();
                    self.scratch.extend_from_slice(conn.session.carried());
                    let carried = self.scratch.len();
                    match tls.decrypt(input, &mut self.scratch) {
                        Ok(closed) => {
                            // close_notify: the peer is done, as with a FIN.
                            finished = closed && !conn.eof;
                            conn.eof |= closed;
                            if self.scratch.len() > carried {
                                conn.session.feed(&mut self.scratch, &mut limits)
                            } else {
                                crate::shard::conn::Next::Continue
                            }
                        }
                        // The alert goes out with the next flush, then the
                        // connection ends.
                        Err(_) => {
                            conn.eof = true;
                            conn.session.peer_finished()
                        }
                    }
                } else if conn.session.carried().is_empty() {
                    conn.session.feed(input, &mut limits)
                } else {
                    self.scratch.clear();
                    self.scratch.extend_from_slice(conn.session.carried());
                    self.scratch.extend_from_slice(input);
                    conn.session.feed(&mut self.scratch, &mut limits)
                };
                self.bufs.release(bid, len, buf_more);
                let now = self.clock.now_tick;
                self.deadlines
                    .after(key, &mut conn.session, next, now, config);
                if finished {
                    let counters = &mut self.counters;
                    self.deadlines
                        .peer_finished(key, &mut conn.session, counters, now, config);
                }
                if conn.pending_out() >= MAX_PENDING_OUT {
                    self.pause_recv(key);
                }
                self.mark_dirty(key);
            } else {
                self.bufs.take(bid, len);
                self.bufs.release(bid, len, buf_more);
            }
            if !more {
                self.rearm.push(key);
            }
            // A dead connection's last receive may carry data: nothing else
            // is left to free it.
            self.maybe_free(key);
            return;
        }
        match result {
            r if r == -libc::ENOBUFS => self.rearm.push(key),
            // The cancel that `pause_recv` issued. Output may have drained
            // (and un-paused reading) before this completion arrived, while
            // the cancelled receive still counted as armed: re-arm now.
            r if r == -libc::ECANCELED && !conn.dead => {
                if !conn.recv_paused {
                    self.rearm.push(key);
                }
            }
            0 if !conn.dead => {
                // The peer is done sending: flush what we owe, then close,
                // within the close timeout even if it stops reading too.
                if !conn.eof {
                    conn.eof = true;
                    let now = self.clock.now_tick;
                    let (session, counters) = (&mut conn.session, &mut self.counters);
                    self.deadlines
                        .peer_finished(key, session, counters, now, &self.shared.config);
                }
                self.mark_dirty(key);
            }
            _ if conn.dead => {}
            _ => self.remove(key),
        }
        self.maybe_free(key);
    }

    fn pause_recv(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if conn.recv_paused {
            return;
        }
        conn.recv_paused = true;
        if conn.recv_armed {
            let target = UserData::new(Op::Recv, key, conn.session.generation).0;
            self.cancel(target);
        }
    }

    fn cancel(&mut self, target: u64) {
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(UserData::new(Op::Cancel, 0, 0).0);
        // SAFETY: a cancel names no buffer or descriptor.
        unsafe { self.push(&entry) };
    }

    fn on_send(&mut self, data: UserData, result: i32, flags: u32) {
        let key = data.key();
        let Some(conn) = self
            .conns
            .get_mut(key)
            .filter(|c| c.session.generation == data.generation())
        else {
            return;
        };
        if cqueue::notif(flags) {
            // Anything else is a bookkeeping slip: the buffer it releases
            // may already have been reused.
            debug_assert!(conn.zc_notif_pending, "a notification nothing awaits");
            conn.zc_notif_pending = false;
            if !conn.send_armed {
                self.finish_send(key);
            }
            self.maybe_free(key);
            return;
        }
        conn.send_armed = false;
        if cqueue::more(flags) {
            // A zero-copy send, failed or not: its notification completion
            // follows, and until then the kernel may read `sending`.
            conn.zc_notif_pending = true;
        }
        if result < 0 {
            conn.dead = true;
            self.remove(key);
            return;
        }
        self.counters.bytes_sent += result as u64;
        if conn.vectored {
            conn.vectored = false;
            self.finish_vectored(key, result as usize);
            self.maybe_free(key);
            return;
        }
        conn.sent += result as usize;
        if !conn.zc_notif_pending {
            self.finish_send(key);
        }
        self.maybe_free(key);
    }

    /// After a send (and its notification): send the rest, or recycle.
    fn finish_send(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        if conn.sent < conn.sending.len() && !conn.dead {
            self.submit_send(key);
            return;
        }
        conn.sent = 0;
        self.pool.give(std::mem::take(&mut conn.sending));
        if conn.recv_paused && conn.pending_out() < MAX_PENDING_OUT {
            conn.recv_paused = false;
            self.rearm.push(key);
        }
        self.app_drain(key);
        self.mark_dirty(key);
    }

    /// After a vectored send: send the rest, or recycle its owned segments.
    fn finish_vectored(&mut self, key: usize, n: usize) {
        let conn = &mut self.conns[key];
        let Some(spill) = conn.session.spill.as_deref_mut() else {
            return;
        };
        let Some(flight) = spill.flight.as_deref_mut() else {
            return;
        };
        flight.sent += n;
        if flight.remaining() > 0 && !conn.dead {
            self.submit_vectored(key);
            return;
        }
        if let Some(flight) = spill.flight.take() {
            for seg in flight.segs {
                if let Segment::Owned(v) = seg {
                    self.pool.give(v);
                }
            }
        }
        conn.session.tidy();
        if conn.recv_paused && conn.pending_out() < MAX_PENDING_OUT {
            conn.recv_paused = false;
            self.rearm.push(key);
        }
        self.app_drain(key);
        self.mark_dirty(key);
    }

    /// Runs an App connection's drain handler if a send met its bound and
    /// the output has fallen under it.
    fn app_drain(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !matches!(conn.session.route, Route::App(_)) || conn.dead {
            return;
        }
        let backlog = conn.pending_out();
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
    }

    /// Sends the session's flight with one SENDMSG.
    fn submit_vectored(&mut self, key: usize) {
        let conn = &mut self.conns[key];
        let fd = types::Fd(conn.fd.as_raw_fd());
        let user_data = UserData::new(Op::Send, key, conn.session.generation).0;
        let Some(flight) = conn
            .session
            .spill
            .as_deref_mut()
            .and_then(|s| s.flight.as_deref_mut())
        else {
            return;
        };
        let msg = flight.prepare(IOV_MAX);
        let entry = opcode::SendMsg::new(fd, msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(user_data);
        conn.send_armed = true;
        conn.vectored = true;
        // SAFETY: the flight (its segments, iovecs and header) is boxed in
        // the session and untouched while `send_armed`; the slot outlives it.
        unsafe { self.push(&entry) };
    }

    fn submit_send(&mut self, key: usize) {
        let zerocopy = self.shared.config.zerocopy_threshold;
        let conn = &mut self.conns[key];
        let fd = types::Fd(conn.fd.as_raw_fd());
        let rest = &conn.sending[conn.sent..];
        let user_data = UserData::new(Op::Send, key, conn.session.generation).0;
        let entry = if zerocopy != 0 && rest.len() >= zerocopy {
            opcode::SendZc::new(fd, rest.as_ptr(), rest.len() as u32).build()
        } else {
            opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        }
        .user_data(user_data);
        conn.send_armed = true;
        // SAFETY: `sending` is not touched while `send_armed` or
        // `zc_notif_pending` is set, and the slot outlives both.
        unsafe { self.push(&entry) };
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Starts one send per connection with output, once per loop turn.
    fn flush_dirty(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.dirty = false;
            if conn.send_armed || conn.zc_notif_pending {
                continue;
            }
            if conn.tls.is_some() && !conn.dead {
                match self.encrypt(key) {
                    Ok(true) => {
                        self.submit_send(key);
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::debug!("closing: {e}");
                        self.remove(key);
                        continue;
                    }
                }
            }
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.session.has_queue() && !conn.dead {
                let session = &mut conn.session;
                let spill = session.spill.get_or_insert_with(Box::default);
                spill.seal(&mut session.out);
                let segs: Vec<Segment> = spill.queue.drain(..).collect();
                spill.queued = 0;
                spill.flight = Some(Box::new(Flight::new(segs)));
                self.submit_vectored(key);
                continue;
            }
            if !conn.session.out.is_empty() && !conn.dead {
                std::mem::swap(&mut conn.sending, &mut conn.session.out);
                conn.sent = 0;
                self.submit_send(key);
                continue;
            }
            if conn.session.shutdown_after_flush {
                conn.session.shutdown_after_flush = false;
                // SAFETY: plain syscall on a descriptor we own.
                unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_WR) };
            }
            if conn.eof {
                self.remove(key);
            }
            self.maybe_free(key);
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Moves a TLS connection's output (queued segments, `out`, then
    /// close_notify when its write side is to be shut) into `sending` as
    /// records. True when there is something to send.
    fn encrypt(&mut self, key: usize) -> io::Result<bool> {
        let conn = &mut self.conns[key];
        let Some(tls) = conn.tls.as_deref_mut() else {
            return Ok(false);
        };
        if conn.sending.capacity() == 0 {
            conn.sending = self.pool.take();
        }
        let session = &mut conn.session;
        if let Some(spill) = session.spill.as_deref_mut() {
            spill.queued = 0;
            for seg in spill.queue.drain(..) {
                tls.encrypt(seg.bytes(), &mut conn.sending)?;
                if let Segment::Owned(v) = seg {
                    self.pool.give(v);
                }
            }
        }
        tls.encrypt(&session.out, &mut conn.sending)?;
        session.out_drained(&mut self.pool);
        session.tidy();
        if session.shutdown_after_flush {
            tls.close_notify();
            tls.encrypt(&[], &mut conn.sending)?;
        }
        conn.sent = 0;
        if conn.sending.is_empty() {
            self.pool.give(std::mem::take(&mut conn.sending));
            return Ok(false);
        }
        Ok(true)
    }

    /// Hands this turn's published messages to subscribers.
    fn fan_out(&mut self) {
        let threshold = self.shared.config.routes.deflate_threshold;
        let fan_out = self.pubsub.pump(&mut self.conns, threshold);
        for &key in &fan_out.written {
            self.mark_dirty(key);
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
            spill.drop_unsent_shared(0);
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
            self.mark_dirty(key);
        }
    }

    /// Answers a parked (refused) client now.
    fn answer(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key).filter(|c| !c.dead) {
            let now = self.clock.now_tick;
            self.deadlines
                .answer(key, &mut conn.session, now, &self.shared.config);
            self.mark_dirty(key);
        }
    }

    fn begin_shutdown(&mut self) {
        if self.draining_until.is_some() {
            return;
        }
        tracing::info!("shutting down: closing {} connections", self.conns.len());
        // Listeners stay open through the drain so that load balancers
        // see /healthz answer 503; upgrades are refused from now on.
        self.shared.metrics.begin_draining();
        let now = self.clock.now_tick;
        self.draining_until = Some(self.deadlines.begin_drain(now, &self.shared.config));
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            if !self
                .deadlines
                .schedule_drain(key, &mut conn.session, now, &self.shared.config)
            {
                self.close(key, CloseCode::GOING_AWAY, "server shutting down");
            }
        }
    }

    /// Drops a connection: cancels what is in flight, frees when idle.
    fn remove(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.dead = true;
        if conn.recv_armed || conn.send_armed {
            // Ends a pending receive at once, and a send waiting for window
            // space that a peer which stopped reading will never open.
            // SAFETY: plain syscall on a descriptor we own.
            unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
        if conn.zc_notif_pending {
            abort_connection(conn.fd.as_fd());
        }
        if conn.recv_armed {
            let target = UserData::new(Op::Recv, key, conn.session.generation).0;
            self.cancel(target);
        }
        self.maybe_free(key);
    }

    fn maybe_free(&mut self, key: usize) {
        if self
            .conns
            .get(key)
            .is_some_and(|c| c.dead && !c.in_flight() && !c.dirty)
        {
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
            // Closed by the ring with the next submission rather than by a
            // syscall now; the number stays taken until then, so no new
            // accept can reuse it early.
            let fd = conn.fd.into_raw_fd();
            let entry = opcode::Close::new(types::Fd(fd))
                .build()
                .user_data(UserData::new(Op::Close, 0, 0).0);
            // SAFETY: the descriptor is ours and no operation uses it any more.
            unsafe { self.push(&entry) };
            self.pool.give(conn.session.out);
            self.pool.give(conn.sending);
        }
    }
}

/// Disconnects a TCP socket at once (connect to AF_UNSPEC: the kernel's
/// tcp_disconnect), resetting the peer and dropping whatever is queued to
/// it. A zero-copy send's notification comes only once the kernel lets go
/// of the bytes it queued, which a peer that stopped reading never
/// acknowledges; shutting the socket down keeps them queued.
fn abort_connection(fd: std::os::fd::BorrowedFd<'_>) {
    let unspec = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    let len = std::mem::size_of::<libc::sockaddr>() as libc::socklen_t;
    // SAFETY: `unspec` is a valid address of `len` bytes for the duration of
    // the call, and the descriptor is ours.
    unsafe { libc::connect(fd.as_raw_fd(), &unspec, len) };
}
