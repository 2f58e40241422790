//! Sending: one send per connection with output, once per loop turn: its
//! `out` whole (SEND_ZC above the threshold), its queue of shared frames as
//! one SENDMSG, or TLS records; then recycling what a finished send held.

use std::io;
use std::os::fd::AsRawFd;

use io_uring::{cqueue, opcode, types};

use super::user_data::{Completion, Op, UserData};
use super::{Ring, UringLoop, IOV_MAX};
use crate::shard::spill::{Flight, Segment};
use crate::shard::{Driver, Shard, MAX_PENDING_OUT};

impl UringLoop {
    pub(super) fn on_send(&mut self, shard: &mut Shard<Ring>, completion: Completion) {
        let (data, result, flags) = (completion.data, completion.result, completion.flags);
        let key = data.key();
        let Some(conn) = shard
            .conns
            .get_mut(key)
            .filter(|c| c.session.generation == data.generation())
        else {
            return;
        };
        let io = &mut conn.io;
        if cqueue::notif(flags) {
            // Anything else is a bookkeeping slip: the buffer it releases
            // may already have been reused.
            debug_assert!(io.zc_notif_pending, "a notification nothing awaits");
            io.zc_notif_pending = false;
            if !io.send_armed {
                self.finish_send(shard, key);
            }
            self.maybe_free(shard, key);
            return;
        }
        io.send_armed = false;
        if cqueue::more(flags) {
            // A zero-copy send, failed or not: its notification completion
            // follows, and until then the kernel may read `sending`.
            io.zc_notif_pending = true;
        }
        if result < 0 {
            io.dead = true;
            self.drop_conn(shard, key);
            return;
        }
        shard.counters.bytes_sent += result as u64;
        let io = &mut shard.conns[key].io;
        if io.vectored {
            io.vectored = false;
            self.finish_vectored(shard, key, result as usize);
            self.maybe_free(shard, key);
            return;
        }
        io.sent += result as usize;
        if !io.zc_notif_pending {
            self.finish_send(shard, key);
        }
        self.maybe_free(shard, key);
    }

    /// After a send (and its notification): send the rest, or recycle.
    fn finish_send(&mut self, shard: &mut Shard<Ring>, key: usize) {
        let io = &mut shard.conns[key].io;
        if io.sent < io.sending.len() && !io.dead {
            self.submit_send(shard, key);
            return;
        }
        io.sent = 0;
        shard.pool.give(std::mem::take(&mut io.sending));
        self.sent_all(shard, key);
    }

    /// After a vectored send: send the rest, or recycle its owned segments.
    fn finish_vectored(&mut self, shard: &mut Shard<Ring>, key: usize, n: usize) {
        let conn = &mut shard.conns[key];
        let Some(spill) = conn.session.spill.as_deref_mut() else {
            return;
        };
        let Some(flight) = spill.flight.as_deref_mut() else {
            return;
        };
        flight.sent += n;
        if flight.remaining() > 0 && !conn.io.dead {
            self.submit_vectored(shard, key);
            return;
        }
        if let Some(flight) = spill.flight.take() {
            for seg in flight.segs {
                if let Segment::Owned(v) = seg {
                    shard.pool.give(v);
                }
            }
        }
        conn.session.tidy();
        self.sent_all(shard, key);
    }

    /// A send finished whole: reading resumes if it paused for the backlog,
    /// a handler may hear `drain`, and whatever came meanwhile goes next.
    fn sent_all(&mut self, shard: &mut Shard<Ring>, key: usize) {
        let conn = &mut shard.conns[key];
        if conn.io.recv_paused && conn.backlog() < MAX_PENDING_OUT {
            conn.io.recv_paused = false;
            self.rearm.push(key);
        }
        shard.app_drain(key);
        self.mark_dirty(shard, key);
    }

    /// Sends the session's flight with one SENDMSG.
    fn submit_vectored(&mut self, shard: &mut Shard<Ring>, key: usize) {
        let conn = &mut shard.conns[key];
        let fd = types::Fd(conn.io.fd.as_raw_fd());
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
        conn.io.send_armed = true;
        conn.io.vectored = true;
        // SAFETY: the flight (its segments, iovecs and header) is boxed in
        // the session and untouched while `send_armed`; the slot outlives it.
        unsafe { self.push(&entry) };
    }

    fn submit_send(&mut self, shard: &mut Shard<Ring>, key: usize) {
        let zerocopy = shard.shared.config.zerocopy_threshold;
        let conn = &mut shard.conns[key];
        let io = &mut conn.io;
        let fd = types::Fd(io.fd.as_raw_fd());
        let rest = &io.sending[io.sent..];
        let user_data = UserData::new(Op::Send, key, conn.session.generation).0;
        let entry = if zerocopy != 0 && rest.len() >= zerocopy {
            opcode::SendZc::new(fd, rest.as_ptr(), rest.len() as u32).build()
        } else {
            opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        }
        .user_data(user_data);
        io.send_armed = true;
        // SAFETY: `sending` is not touched while `send_armed` or
        // `zc_notif_pending` is set, and the slot outlives both.
        unsafe { self.push(&entry) };
    }

    pub(super) fn mark_dirty(&mut self, shard: &mut Shard<Ring>, key: usize) {
        if let Some(conn) = shard.conns.get_mut(key) {
            if !conn.io.dirty {
                conn.io.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Starts one send per connection with output, once per loop turn.
    pub(super) fn flush_dirty(&mut self, shard: &mut Shard<Ring>) {
        let dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            let Some(conn) = shard.conns.get_mut(key) else {
                continue;
            };
            conn.io.dirty = false;
            if conn.io.send_armed || conn.io.zc_notif_pending {
                continue;
            }
            if conn.io.tls.is_some() && !conn.io.dead {
                match encrypt(shard, key) {
                    Ok(true) => {
                        self.submit_send(shard, key);
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::debug!("closing: {e}");
                        self.drop_conn(shard, key);
                        continue;
                    }
                }
            }
            let Some(conn) = shard.conns.get_mut(key) else {
                continue;
            };
            let (session, io) = (&mut conn.session, &mut conn.io);
            if session.has_queue() && !io.dead {
                let spill = session.spill.get_or_insert_with(Box::default);
                spill.seal(&mut session.out);
                let segs: Vec<Segment> = spill.queue.drain(..).collect();
                spill.queued = 0;
                spill.flight = Some(Box::new(Flight::new(segs)));
                self.submit_vectored(shard, key);
                continue;
            }
            if !session.out.is_empty() && !io.dead {
                std::mem::swap(&mut io.sending, &mut session.out);
                io.sent = 0;
                self.submit_send(shard, key);
                continue;
            }
            if session.take_shutdown() {
                // SAFETY: plain syscall on a descriptor we own.
                unsafe { libc::shutdown(io.fd.as_raw_fd(), libc::SHUT_WR) };
            }
            shard.written(self, key);
            self.maybe_free(shard, key);
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }
}

/// Moves a TLS connection's output (queued segments, `out`, then
/// close_notify when its write side is to be shut) into `sending` as
/// records. True when there is something to send.
fn encrypt(shard: &mut Shard<Ring>, key: usize) -> io::Result<bool> {
    let conn = &mut shard.conns[key];
    let pool = &mut shard.pool;
    let (session, io) = (&mut conn.session, &mut conn.io);
    let Some(tls) = io.tls.as_deref_mut() else {
        return Ok(false);
    };
    if io.sending.capacity() == 0 {
        io.sending = pool.take();
    }
    if let Some(spill) = session.spill.as_deref_mut() {
        spill.queued = 0;
        for seg in spill.queue.drain(..) {
            tls.encrypt(seg.bytes(), &mut io.sending)?;
            if let Segment::Owned(v) = seg {
                pool.give(v);
            }
        }
    }
    tls.encrypt(&session.out, &mut io.sending)?;
    session.out_drained(pool);
    session.tidy();
    if session.shutdown_after_flush {
        tls.close_notify();
        tls.encrypt(&[], &mut io.sending)?;
    }
    io.sent = 0;
    if io.sending.is_empty() {
        pool.give(std::mem::take(&mut io.sending));
        return Ok(false);
    }
    Ok(true)
}
