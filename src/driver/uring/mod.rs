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

mod accept;
pub(crate) mod buf_ring;
mod recv;
mod send;
mod user_data;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};

use crate::metrics::ShardStats;
use crate::shard::session::Session;
use crate::shard::spill::Flight;
use crate::shard::throttle::Throttled;
use crate::shard::{Conn, Driver, Shard, ShardParts, Transport};
use crate::tls::TlsStream;
use buf_ring::BufRing;
use user_data::{Completion, Op, UserData};

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

/// Most iovecs one SENDMSG names (the kernel's UIO_MAXIOV).
const IOV_MAX: usize = 1024;

/// What io_uring keeps per connection: its descriptor and the state of
/// the operations in flight on it.
#[derive(Debug)]
pub(crate) struct Ring {
    fd: OwnedFd,
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
    /// The send in flight is the session's vectored `Flight`, not `sending`.
    vectored: bool,
    /// The record layer on TLS listeners; `sending` then holds records.
    tls: Option<Box<TlsStream>>,
}

// An idle connection's whole user-space cost is a design number: this slot,
// a timer-wheel entry and slab slack must stay within 256 bytes, so growing
// the slot is a decision, not an accident. The TLS pointer took it from 176
// to 184, still within that budget.
const _: () = assert!(std::mem::size_of::<Conn<Ring>>() <= 184);

impl Ring {
    fn in_flight(&self) -> bool {
        self.recv_armed || self.send_armed || self.zc_notif_pending
    }
}

impl Transport for Ring {
    const GENERATION_MASK: u32 = user_data::GENERATION_MASK;

    fn backlog(&self, session: &Session) -> usize {
        let flight = session
            .spill
            .as_deref()
            .and_then(|s| s.flight.as_deref())
            .map_or(0, Flight::remaining);
        session.queued() + session.out.len() + (self.sending.len() - self.sent) + flight
    }
    /// A send takes whole segments off the queue into its flight.
    fn head_written(&self) -> usize {
        0
    }
    fn socket(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    fn dying(&self) -> bool {
        self.dead
    }
}

pub(crate) struct UringLoop {
    ring: IoUring,
    bufs: BufRing,
    listeners: Vec<std::net::TcpListener>,
    signal: std::os::unix::net::UnixStream,
    signal_buf: Box<[u8; 64]>,
    /// The shard's inbox eventfd and the counter its reads land in.
    inbox_fd: RawFd,
    inbox_buf: Box<u64>,
    /// Connections with output to send or a state change to act on.
    dirty: Vec<usize>,
    /// Connections whose receive must be re-armed once buffers are back.
    rearm: Vec<usize>,
    /// Joins a carried partial frame with the next buffer.
    scratch: Vec<u8>,
    completions: Vec<Completion>,
    accepts_armed: usize,
    /// Listeners whose accept failed for want of descriptors or memory,
    /// re-armed at `accept_retry_tick`: re-arming at once would only fail
    /// again, spinning the core.
    accept_retry: Vec<usize>,
    accept_retry_tick: u64,
    /// The accept warning, written at most once a second.
    accept_log: Throttled,
}

impl Driver for UringLoop {
    type Io = Ring;

    /// Call on the thread that will run the ring: it is single-issuer with
    /// deferred task work.
    fn build(parts: ShardParts) -> io::Result<(Shard<Ring>, Self)> {
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
            listeners: parts.listeners,
            signal: parts.signal,
            signal_buf: Box::new([0u8; 64]),
            inbox_fd: parts.inbox.wake_fd(),
            inbox_buf: Box::new(0),
            dirty: Vec::new(),
            rearm: Vec::new(),
            scratch: Vec::new(),
            completions: Vec::with_capacity(RING_ENTRIES as usize * 4),
            accepts_armed: 0,
            accept_retry: Vec::new(),
            accept_retry_tick: 0,
            accept_log: Throttled::default(),
        };
        for i in 0..this.listeners.len() {
            this.arm_accept(i);
        }
        this.arm_signal();
        this.arm_inbox();
        Ok((Shard::new(parts.shared, parts.shard_id, parts.inbox), this))
    }

    /// Submits the turn's SQEs and waits, in one `io_uring_enter`.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let wait = match timeout {
            Some(timeout) => {
                let ts = types::Timespec::from(timeout);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        match wait {
            Err(e)
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Err(e)
            }
            _ => Ok(()),
        }
    }

    fn dispatch(&mut self, shard: &mut Shard<Ring>) {
        self.retry_accepts(shard.now());
        let mut completions = std::mem::take(&mut self.completions);
        completions.extend(self.ring.completion().map(|c| Completion {
            data: UserData(c.user_data()),
            result: c.result(),
            flags: c.flags(),
        }));
        for &completion in &completions {
            self.complete(shard, completion);
        }
        completions.clear();
        self.completions = completions;
    }

    fn send(&mut self, shard: &mut Shard<Ring>, key: usize) {
        self.mark_dirty(shard, key);
    }

    /// Drops a connection: cancels what is in flight, frees when idle.
    fn drop_conn(&mut self, shard: &mut Shard<Ring>, key: usize) {
        let Some(conn) = shard.conns.get_mut(key) else {
            return;
        };
        let io = &mut conn.io;
        io.dead = true;
        if io.recv_armed || io.send_armed {
            // Ends a pending receive at once, and a send waiting for window
            // space that a peer which stopped reading will never open.
            // SAFETY: plain syscall on a descriptor we own.
            unsafe { libc::shutdown(io.fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
        if io.zc_notif_pending {
            abort_connection(io.fd.as_fd());
        }
        if io.recv_armed {
            let target = UserData::new(Op::Recv, key, conn.session.generation).0;
            self.cancel(target);
        }
        self.maybe_free(shard, key);
    }

    fn end_turn(&mut self, shard: &mut Shard<Ring>) {
        self.flush_dirty(shard);
        for key in std::mem::take(&mut self.rearm) {
            self.arm_recv(shard, key);
        }
    }

    fn ticking(&self) -> bool {
        !self.accept_retry.is_empty()
    }

    fn publish_stats(&self, stats: &ShardStats) {
        ShardStats::set(&stats.recv_buffers_lent, self.bufs.lent() as u64);
    }

    fn finish(&mut self) {
        // The armed multishot accepts keep the listening sockets alive
        // until the ring's asynchronous teardown ends; shutting them down
        // stops listening now.
        for listener in &self.listeners {
            let _ = socket2::SockRef::from(listener).shutdown(std::net::Shutdown::Both);
        }
        self.bufs.unregister(&self.ring);
    }
}

impl UringLoop {
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

    fn arm_signal(&mut self) {
        let fd = self.signal.as_raw_fd();
        let entry = opcode::Recv::new(types::Fd(fd), self.signal_buf.as_mut_ptr(), 64)
            .build()
            .user_data(UserData::new(Op::Signal, 0, 0).0);
        // SAFETY: the socket and the boxed buffer live as long as the loop.
        unsafe { self.push(&entry) };
    }

    fn arm_inbox(&mut self) {
        let buf: *mut u64 = &mut *self.inbox_buf;
        let entry = opcode::Read::new(types::Fd(self.inbox_fd), buf.cast(), 8)
            .build()
            .user_data(UserData::new(Op::Inbox, 0, 0).0);
        // SAFETY: the eventfd (owned by the shard's inbox) and the boxed
        // counter live as long as the loop.
        unsafe { self.push(&entry) };
    }

    fn complete(&mut self, shard: &mut Shard<Ring>, completion: Completion) {
        match completion.data.op() {
            Op::Accept => self.on_accept(shard, completion),
            Op::Recv => self.on_recv(shard, completion),
            Op::Send => self.on_send(shard, completion),
            Op::Signal => shard.begin_shutdown(self),
            Op::Inbox => {
                shard.inbox_woken();
                if !shard.draining() {
                    self.arm_inbox();
                }
            }
            Op::Cancel | Op::Close => {}
        }
    }

    fn cancel(&mut self, target: u64) {
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(UserData::new(Op::Cancel, 0, 0).0);
        // SAFETY: a cancel names no buffer or descriptor.
        unsafe { self.push(&entry) };
    }

    fn maybe_free(&mut self, shard: &mut Shard<Ring>, key: usize) {
        let idle = |c: &Conn<Ring>| c.io.dead && !c.io.in_flight() && !c.io.dirty;
        if !shard.conns.get(key).is_some_and(idle) {
            return;
        }
        let io = shard.release(key);
        // Closed by the ring with the next submission rather than by a
        // syscall now; the number stays taken until then, so no new
        // accept can reuse it early.
        let fd = io.fd.into_raw_fd();
        let entry = opcode::Close::new(types::Fd(fd))
            .build()
            .user_data(UserData::new(Op::Close, 0, 0).0);
        // SAFETY: the descriptor is ours and no operation uses it any more.
        unsafe { self.push(&entry) };
        shard.pool.give(io.sending);
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
