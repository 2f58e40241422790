//! Accepting: one multishot accept per listener, backed off to the next
//! tick when descriptors or memory run out.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use io_uring::{cqueue, opcode, types};

use super::user_data::{Completion, Op, UserData};
use super::{Ring, UringLoop};
use crate::shard::Shard;

impl UringLoop {
    pub(super) fn arm_accept(&mut self, index: usize) {
        let fd = self.listeners[index].as_raw_fd();
        let entry = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(UserData::new(Op::Accept, index, 0).0);
        // SAFETY: the listener lives in `self.listeners` until the loop ends.
        unsafe { self.push(&entry) };
        self.accepts_armed += 1;
    }

    /// Re-arms the accepts that backed off, once their tick has come.
    pub(super) fn retry_accepts(&mut self, now: u64) {
        if !self.accept_retry.is_empty() && now >= self.accept_retry_tick {
            for index in std::mem::take(&mut self.accept_retry) {
                self.arm_accept(index);
            }
        }
    }

    pub(super) fn on_accept(&mut self, shard: &mut Shard<Ring>, completion: Completion) {
        let (data, result, flags) = (completion.data, completion.result, completion.flags);
        let index = data.key();
        let ended = !cqueue::more(flags);
        if ended {
            self.accepts_armed -= 1;
        }
        if result < 0 {
            self.accept_failed(shard.now(), index, -result, ended);
            return;
        }
        if ended {
            self.arm_accept(index);
        }
        // SAFETY: a successful accept returns a new descriptor we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(result as RawFd) };
        let Ok(tls) = shard.shared.start_tls() else {
            return;
        };
        let io = Ring {
            fd,
            sending: Vec::new(),
            sent: 0,
            recv_armed: false,
            send_armed: false,
            zc_notif_pending: false,
            recv_paused: false,
            dead: false,
            dirty: false,
            vectored: false,
            tls,
        };
        let key = shard.accepted(io, index, None);
        self.arm_recv(shard, key);
    }

    /// An accept failed with `errno`. Out of descriptors or memory, the
    /// connection stays queued and every retry fails until something is
    /// freed: back off to the next tick, as the epoll driver does.
    fn accept_failed(&mut self, now: u64, index: usize, errno: i32, ended: bool) {
        let exhausted = matches!(
            errno,
            libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS
        );
        if errno != libc::ECANCELED {
            let e = io::Error::from_raw_os_error(errno);
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
            self.accept_retry_tick = now + 1;
        } else {
            self.arm_accept(index);
        }
    }
}
