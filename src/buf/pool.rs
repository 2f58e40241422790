//! A per-shard pool of output buffers. A connection borrows one only while
//! it has bytes to send and gives it back as soon as they are written, so
//! an idle connection holds no output memory and a busy one does not pay
//! for an allocation per message.

/// Buffers grown past this by a burst are freed rather than kept, so the
/// pool's memory stays bounded by `MAX_POOLED * KEEP_CAPACITY`.
pub(crate) const KEEP_CAPACITY: usize = 16 * 1024;

/// More free buffers than this are freed: a shard rarely has more
/// connections mid-write at once.
const MAX_POOLED: usize = 1024;

/// First capacity of a fresh buffer: a 101 response or a few small frames.
const FRESH_CAPACITY: usize = 512;

#[derive(Debug, Default)]
pub(crate) struct BufPool {
    free: Vec<Vec<u8>>,
    /// Buffers handed out and not returned: the pool's use, for metrics.
    lent: usize,
}

impl BufPool {
    /// An empty buffer, reused when one is free.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        self.lent += 1;
        self.free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(FRESH_CAPACITY))
    }

    /// Returns a buffer (its contents are discarded). Buffers that were
    /// never allocated are not counted as lent.
    pub(crate) fn give(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 {
            return;
        }
        self.lent = self.lent.saturating_sub(1);
        if buf.capacity() <= KEEP_CAPACITY && self.free.len() < MAX_POOLED {
            buf.clear();
            self.free.push(buf);
        }
    }

    pub(crate) fn lent(&self) -> usize {
        self.lent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_bounds() {
        let mut pool = BufPool::default();
        let mut a = pool.take();
        a.extend_from_slice(b"hello");
        let ptr = a.as_ptr();
        pool.give(a);
        assert_eq!(pool.lent(), 0);
        let b = pool.take();
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr, "the same allocation comes back");
        pool.give(b);
        let big = Vec::with_capacity(KEEP_CAPACITY + 1);
        pool.lent += 1;
        pool.give(big);
        assert_eq!(
            pool.free.len(),
            1,
            "oversized buffers are freed, not pooled"
        );
        pool.give(Vec::new());
        assert_eq!(pool.lent(), 0);
    }
}
