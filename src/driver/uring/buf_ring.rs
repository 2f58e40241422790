//! A provided-buffer ring (`IORING_REGISTER_PBUF_RING`): the kernel picks a
//! free buffer for each multishot receive, so a connection with nothing to
//! read holds no buffer at all.
//!
//! Ownership protocol: a buffer id is the kernel's from the moment it is
//! published in the ring until a completion names it; then the bytes that
//! completion reports are ours until [`BufRing::release`].
//!
//! With incremental consumption (`IOU_PBUF_RING_INC`, Linux 6.12) a receive
//! takes only the bytes it needs from the head buffer, so one 64 KiB buffer
//! serves thousands of small frames and a small ring carries a large load.
//! The kernel then keeps the buffer (completion flag `BUF_MORE`) and we
//! track where in it the next completion's bytes begin.
#![allow(unsafe_code)]

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

pub(crate) struct BufRing {
    /// Ring of buffer descriptors shared with the kernel (page-aligned mmap).
    ring: NonNull<BufRingEntry>,
    ring_bytes: usize,
    entries: u16,
    /// Our copy of the tail; published to the kernel with a release store.
    tail: u16,
    buffers: Box<[u8]>,
    buf_size: usize,
    group: u16,
    /// Completions whose bytes have not been released yet.
    lent: usize,
    /// Per buffer: where the next incremental completion's bytes begin.
    offsets: Vec<u32>,
    incremental: bool,
}

/// `IOU_PBUF_RING_INC`: let receives consume buffers incrementally.
const PBUF_RING_INC: u16 = 2;

impl BufRing {
    /// Registers `entries` buffers of `buf_size` bytes as buffer group `group`,
    /// consumed incrementally if `incremental`.
    pub(crate) fn new(
        ring: &IoUring,
        entries: u16,
        buf_size: usize,
        group: u16,
        incremental: bool,
    ) -> io::Result<Self> {
        assert!(
            entries.is_power_of_two(),
            "ring size must be a power of two"
        );
        let ring_bytes = usize::from(entries) * std::mem::size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping has no preconditions; the
        // result is checked before use.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ring_ptr =
            NonNull::new(addr.cast::<BufRingEntry>()).expect("mmap never returns null on success");
        let mut this = Self {
            ring: ring_ptr,
            ring_bytes,
            entries,
            tail: 0,
            buffers: vec![0u8; usize::from(entries) * buf_size].into_boxed_slice(),
            buf_size,
            group,
            lent: 0,
            offsets: vec![0; usize::from(entries)],
            incremental,
        };
        // SAFETY: the mapping is page-aligned, `ring_bytes` long and lives
        // until `Drop`, which unregisters it before unmapping.
        unsafe {
            let flags = if incremental { PBUF_RING_INC } else { 0 };
            ring.submitter()
                .register_buf_ring_with_flags(addr as u64, entries, group, flags)?;
        }
        for bid in 0..entries {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    /// The buffer group id to name in receive operations.
    pub(crate) fn group(&self) -> u16 {
        self.group
    }

    /// Buffers currently held by completions.
    pub(crate) fn lent(&self) -> usize {
        self.lent
    }

    /// The `len` bytes a completion delivered in buffer `bid`. The caller
    /// must [`Self::release`] them once done.
    pub(crate) fn take(&mut self, bid: u16, len: usize) -> &mut [u8] {
        self.lent += 1;
        let offset = self.offsets[usize::from(bid)] as usize;
        let start = usize::from(bid) * self.buf_size + offset;
        let end = start + len.min(self.buf_size - offset);
        &mut self.buffers[start..end]
    }

    /// Releases the bytes of a completion. `more` is the completion's
    /// `BUF_MORE` flag: the kernel keeps filling the rest of the buffer;
    /// otherwise the whole buffer goes back into the ring.
    pub(crate) fn release(&mut self, bid: u16, len: usize, more: bool) {
        self.lent -= 1;
        let offset = &mut self.offsets[usize::from(bid)];
        if self.incremental && more {
            *offset += len as u32;
            return;
        }
        *offset = 0;
        self.push(bid);
        self.publish();
    }

    fn push(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.entries - 1));
        // SAFETY: index < entries, inside the mapping; the kernel does not
        // read slots past the published tail, so writing here is not a race.
        let entry = unsafe { &mut *self.ring.as_ptr().add(index) };
        let start = usize::from(bid) * self.buf_size;
        entry.set_addr(self.buffers[start..].as_ptr() as u64);
        entry.set_len(self.buf_size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field overlays the first entry's reserved field,
        // inside the mapping; the kernel reads it with acquire semantics.
        unsafe {
            let tail = BufRingEntry::tail(self.ring.as_ptr()).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    /// Unregisters the ring; call before dropping the `IoUring`.
    pub(crate) fn unregister(&self, ring: &IoUring) {
        let _ = ring.submitter().unregister_buf_ring(self.group);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the mapping was created in `new` with this length; the
        // ring is unregistered (or the io_uring closed) by now.
        unsafe {
            libc::munmap(self.ring.as_ptr().cast(), self.ring_bytes);
        }
    }
}
