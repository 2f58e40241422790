//! The parts of a connection that most connections never need, kept behind
//! one pointer so an idle connection pays 8 bytes for all of them: input
//! carried between reads, shared frames waiting to be written, and its
//! pub/sub subscriptions.
//!
//! Output order: everything a connection writes forms one queue. Bytes the
//! protocol core produces (echoes, pongs, closes) accumulate in the
//! session's `out` vector, the queue's tail; when a shared frame arrives,
//! `out` is sealed into the queue first, so bytes reach the peer in the
//! order they were produced. A driver writes from the head and tracks how
//! much of the head is written.

use std::collections::VecDeque;
use std::io::IoSlice;

use super::handler::AppConn;
use crate::protocol::deflate::PerMessageDeflate;
use crate::pubsub::hub::SharedFrame;

/// A run of output bytes.
#[derive(Debug)]
pub(crate) enum Segment {
    /// Bytes only this connection sends.
    Owned(Vec<u8>),
    /// A frame (or a batch of frames) shared with other connections.
    Shared(SharedFrame),
}

impl Segment {
    pub(crate) fn bytes(&self) -> &[u8] {
        match self {
            Self::Owned(v) => v,
            Self::Shared(f) => f,
        }
    }
}

/// What a connection holds beyond its fixed slot.
#[derive(Debug, Default)]
pub(crate) struct Spill {
    /// Input bytes not consumed yet.
    pub(crate) carry: Vec<u8>,
    /// Output waiting ahead of `out`, oldest first.
    pub(crate) queue: VecDeque<Segment>,
    /// Bytes in `queue`.
    pub(crate) queued: usize,
    /// Topics subscribed to: (topic id, member slot) in the shard's table.
    pub(crate) subs: Vec<(u32, u32)>,
    /// A vectored send the kernel has not finished with (io_uring).
    pub(crate) flight: Option<Box<Flight>>,
    /// permessage-deflate, when negotiated.
    pub(crate) deflate: Option<PerMessageDeflate>,
    /// Handler state of an App route's connection.
    pub(crate) app: Option<Box<AppConn>>,
    /// What a hub connection's signed token allows (with `--jwt-*`).
    pub(crate) grant: Option<Box<crate::auth::Grant>>,
    /// Its `--publish-rate` bucket (see `admission::rate`).
    pub(crate) publish_tat: u64,
    /// Its count against `--max-conns-per-user`, given back when dropped.
    pub(crate) user: Option<crate::admission::users::UserCount>,
}

impl Spill {
    pub(crate) fn is_empty(&self) -> bool {
        self.carry.is_empty()
            && self.queue.is_empty()
            && self.subs.is_empty()
            && self.flight.is_none()
            && self.deflate.is_none()
            && self.app.is_none()
            && self.grant.is_none()
            && self.user.is_none()
            // A bucket that was drawn on (only with `--publish-rate`): freed,
            // it would be full again at the next publish.
            && self.publish_tat == 0
    }

    /// Queues a shared frame behind everything produced so far; `out` is
    /// sealed into the queue first.
    pub(crate) fn push_shared(&mut self, out: &mut Vec<u8>, frame: SharedFrame) {
        self.seal(out);
        self.queued += frame.len();
        self.queue.push_back(Segment::Shared(frame));
    }

    /// Moves `out`'s bytes into the queue.
    pub(crate) fn seal(&mut self, out: &mut Vec<u8>) {
        if !out.is_empty() {
            self.queued += out.len();
            self.queue.push_back(Segment::Owned(std::mem::take(out)));
        }
    }

    /// The output as slices from the head, the first `head_pos` bytes of
    /// the head skipped, then `out`; at most `max` slices.
    pub(crate) fn io_slices<'a>(
        &'a self,
        head_pos: usize,
        out: &'a [u8],
        max: usize,
        slices: &mut Vec<IoSlice<'a>>,
    ) {
        let mut skip = head_pos;
        for seg in &self.queue {
            if slices.len() == max {
                return;
            }
            slices.push(IoSlice::new(&seg.bytes()[skip..]));
            skip = 0;
        }
        if !out.is_empty() && slices.len() < max {
            slices.push(IoSlice::new(&out[skip..]));
        }
    }

    /// Accounts `n` written bytes from the head: finished segments leave
    /// the queue (owned ones are handed to `recycle`). Returns the new
    /// position in the head, which is `out` once the queue is empty.
    pub(crate) fn advance(
        &mut self,
        mut head_pos: usize,
        mut n: usize,
        mut recycle: impl FnMut(Vec<u8>),
    ) -> usize {
        while let Some(head) = self.queue.front() {
            let left = head.bytes().len() - head_pos;
            if n < left {
                return head_pos + n;
            }
            n -= left;
            head_pos = 0;
            self.queued -= head.bytes().len();
            if let Some(Segment::Owned(v)) = self.queue.pop_front() {
                recycle(v);
            }
        }
        head_pos + n
    }

    /// Drops queued shared frames nobody started writing (a close must be
    /// the last frame, and a slow consumer's backlog is not worth keeping).
    /// The head stays if it is partly written.
    pub(crate) fn drop_unsent_shared(&mut self, head_pos: usize) {
        let keep_head = usize::from(head_pos > 0);
        let mut i = keep_head;
        while i < self.queue.len() {
            if matches!(self.queue[i], Segment::Shared(_)) {
                let seg = self.queue.remove(i).expect("index in range");
                self.queued -= seg.bytes().len();
            } else {
                i += 1;
            }
        }
    }
}

/// A vectored send in flight (io_uring): the segments it names and the
/// iovec array and message header the kernel reads, all kept still until
/// its completion.
pub(crate) struct Flight {
    pub(crate) segs: Vec<Segment>,
    /// Bytes of `segs` already sent.
    pub(crate) sent: usize,
    pub(crate) iov: Vec<libc::iovec>,
    pub(crate) msg: libc::msghdr,
}

impl std::fmt::Debug for Flight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flight")
            .field("segs", &self.segs.len())
            .field("sent", &self.sent)
            .finish()
    }
}

impl Flight {
    pub(crate) fn new(segs: Vec<Segment>) -> Self {
        Self {
            segs,
            sent: 0,
            iov: Vec::new(),
            msg: empty_msghdr(),
        }
    }

    /// Bytes not sent yet.
    pub(crate) fn remaining(&self) -> usize {
        self.segs.iter().map(|s| s.bytes().len()).sum::<usize>() - self.sent
    }

    /// Points `iov` and `msg` at the unsent bytes (at most `max` slices);
    /// the pointers stay valid while `self` is neither moved nor changed.
    pub(crate) fn prepare(&mut self, max: usize) -> *const libc::msghdr {
        self.iov.clear();
        let mut skip = self.sent;
        for seg in &self.segs {
            let bytes = seg.bytes();
            if skip >= bytes.len() {
                skip -= bytes.len();
                continue;
            }
            let rest = &bytes[skip..];
            skip = 0;
            self.iov.push(libc::iovec {
                iov_base: rest.as_ptr() as *mut libc::c_void,
                iov_len: rest.len(),
            });
            if self.iov.len() == max {
                break;
            }
        }
        self.msg = empty_msghdr();
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = self.iov.len() as _;
        &self.msg
    }
}

/// The empty message header: no address, no control data, no iovecs.
fn empty_msghdr() -> libc::msghdr {
    libc::msghdr {
        msg_name: std::ptr::null_mut(),
        msg_namelen: 0,
        msg_iov: std::ptr::null_mut(),
        msg_iovlen: 0,
        msg_control: std::ptr::null_mut(),
        msg_controllen: 0,
        msg_flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(b: &[u8]) -> SharedFrame {
        b.to_vec().into()
    }

    /// Writes everything `chunk` bytes at a time, as a driver would.
    fn write_all(spill: &mut Spill, out: &mut Vec<u8>, chunk: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        let mut pos = 0;
        loop {
            let mut slices = Vec::new();
            spill.io_slices(pos, out, 64, &mut slices);
            let flat: Vec<u8> = slices.iter().flat_map(|s| s.iter().copied()).collect();
            if flat.is_empty() {
                return wire;
            }
            let n = flat.len().min(chunk);
            wire.extend_from_slice(&flat[..n]);
            pos = spill.advance(pos, n, |_| {});
            if spill.queue.is_empty() && pos == out.len() {
                out.clear();
                return wire;
            }
        }
    }

    #[test]
    fn bytes_leave_in_the_order_they_were_produced() {
        for chunk in [1, 2, 3, 5, 100] {
            let mut spill = Spill::default();
            let mut out = b"ab".to_vec();
            spill.push_shared(&mut out, frame(b"CDE"));
            out.extend_from_slice(b"fg");
            spill.push_shared(&mut out, frame(b"H"));
            out.extend_from_slice(b"ij");
            assert_eq!(spill.queued, 2 + 3 + 2 + 1);
            assert_eq!(
                write_all(&mut spill, &mut out, chunk),
                b"abCDEfgHij",
                "{chunk}"
            );
            assert_eq!(spill.queued, 0);
        }
    }

    #[test]
    fn dropping_unsent_frames_keeps_a_started_head_and_owned_bytes() {
        let mut spill = Spill::default();
        let mut out = Vec::new();
        spill.push_shared(&mut out, frame(b"AAAA"));
        spill.push_shared(&mut out, frame(b"BBBB"));
        out.extend_from_slice(b"close");
        spill.seal(&mut out);
        let pos = spill.advance(0, 2, |_| {});
        spill.drop_unsent_shared(pos);
        assert_eq!(spill.queued, 4 + 5);
        assert_eq!(write_all_from(&mut spill, pos), b"AAclose");
    }

    fn write_all_from(spill: &mut Spill, pos: usize) -> Vec<u8> {
        let mut slices = Vec::new();
        spill.io_slices(pos, &[], 64, &mut slices);
        slices.iter().flat_map(|s| s.iter().copied()).collect()
    }
}
