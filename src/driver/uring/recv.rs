//! Receiving: one multishot receive per connection from the provided
//! buffer ring, fed to the shard (through the record layer on TLS), paused
//! while the connection's backlog is over its bound.

use std::os::fd::AsRawFd;

use io_uring::{cqueue, opcode, types};

use super::user_data::{Completion, Op, UserData};
use super::{Ring, UringLoop};
use crate::shard::{Driver, Shard, MAX_PENDING_OUT};

impl UringLoop {
    pub(super) fn arm_recv(&mut self, shard: &mut Shard<Ring>, key: usize) {
        let group = self.bufs.group();
        let Some(conn) = shard.conns.get_mut(key) else {
            return;
        };
        let io = &mut conn.io;
        if io.recv_armed || io.dead || io.recv_paused {
            return;
        }
        io.recv_armed = true;
        let entry = opcode::RecvMulti::new(types::Fd(io.fd.as_raw_fd()), group)
            .build()
            .user_data(UserData::new(Op::Recv, key, conn.session.generation).0);
        // SAFETY: the descriptor is closed only when the slot is freed, and
        // the slot is freed only after this receive's last completion.
        unsafe { self.push(&entry) };
    }

    pub(super) fn on_recv(&mut self, shard: &mut Shard<Ring>, completion: Completion) {
        let (data, result, flags) = (completion.data, completion.result, completion.flags);
        let key = data.key();
        let bid = cqueue::buffer_select(flags);
        let buf_more = cqueue::buffer_more(flags);
        let filled = usize::try_from(result).unwrap_or(0);
        let Some(conn) = shard
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
            conn.io.recv_armed = false;
        }
        if result > 0 {
            shard.counters.bytes_received += result as u64;
            let Some(bid) = bid else {
                return;
            };
            if conn.io.dead {
                self.bufs.take(bid, filled);
                self.bufs.release(bid, filled, buf_more);
            } else {
                let finished = self.deliver(shard, key, bid, filled);
                self.bufs.release(bid, filled, buf_more);
                if finished {
                    shard.peer_finished(self, key);
                }
                if shard.conns[key].backlog() >= MAX_PENDING_OUT {
                    self.pause_recv(shard, key);
                }
                self.mark_dirty(shard, key);
            }
            if !more {
                self.rearm.push(key);
            }
            // A dead connection's last receive may carry data: nothing else
            // is left to free it.
            self.maybe_free(shard, key);
            return;
        }
        let (dead, paused) = (conn.io.dead, conn.io.recv_paused);
        match result {
            r if r == -libc::ENOBUFS => self.rearm.push(key),
            // The cancel that `pause_recv` issued. Output may have drained
            // (and un-paused reading) before this completion arrived, while
            // the cancelled receive still counted as armed: re-arm now.
            r if r == -libc::ECANCELED && !dead => {
                if !paused {
                    self.rearm.push(key);
                }
            }
            // The peer is done sending.
            0 if !dead => shard.peer_finished(self, key),
            _ if dead => {}
            _ => self.drop_conn(shard, key),
        }
        self.maybe_free(shard, key);
    }

    /// Feeds the `len` bytes received into buffer `bid` to the session,
    /// through the record layer on TLS; true if they ended with the peer's
    /// close_notify.
    fn deliver(&mut self, shard: &mut Shard<Ring>, key: usize, bid: u16, len: usize) -> bool {
        let input = self.bufs.take(bid, len);
        let conn = &mut shard.conns[key];
        let scratch = &mut self.scratch;
        if let Some(tls) = conn.io.tls.as_deref_mut() {
            scratch.clear();
            scratch.extend_from_slice(conn.session.carried());
            let carried = scratch.len();
            match tls.decrypt(input, scratch) {
                Ok(closed) => {
                    let plaintext = if scratch.len() > carried {
                        &mut scratch[..]
                    } else {
                        &mut []
                    };
                    shard.feed(key, plaintext);
                    closed
                }
                // The alert goes out with the next flush, then the
                // connection ends.
                Err(_) => {
                    shard.end_after_flush(key);
                    false
                }
            }
        } else if conn.session.carried().is_empty() {
            shard.feed(key, input);
            false
        } else {
            scratch.clear();
            scratch.extend_from_slice(conn.session.carried());
            scratch.extend_from_slice(input);
            shard.feed(key, scratch);
            false
        }
    }

    fn pause_recv(&mut self, shard: &mut Shard<Ring>, key: usize) {
        let conn = &mut shard.conns[key];
        if conn.io.recv_paused {
            return;
        }
        conn.io.recv_paused = true;
        if conn.io.recv_armed {
            let target = UserData::new(Op::Recv, key, conn.session.generation).0;
            self.cancel(target);
        }
    }
}
