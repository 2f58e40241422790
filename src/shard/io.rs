//! The seam between a shard and its driver. The shard ([`Shard`]) decides
//! what happens to a connection; a driver (epoll or io_uring) only moves
//! bytes: it owns its sockets, its buffers and its operations in flight,
//! tells the shard what happened (bytes read, output written, a FIN, an
//! error) and does what the shard asks (write this connection's output,
//! drop that connection).
//!
//! The shard is generic over the driver, so every call across the seam is
//! monomorphised and inlined: no dynamic dispatch on the hot path.
//!
//! Invariants both sides keep:
//! - Only the driver frees a slot, through [`Shard::release`], and only
//!   once none of its operations on that connection is in flight; until
//!   then [`Transport::dying`] says so and the shard leaves the slot alone.
//! - A buffer the driver has handed to the kernel (a send's bytes, a
//!   zero-copy send until its notification) stays the driver's until the
//!   operation completes; the shard writes new output only into the
//!   session's `out` and queue, never into what the driver holds.
//! - The shard reads the driver's share of the backlog only through
//!   [`Transport::backlog`], and asks for output to be written through
//!   [`Driver::send`]; the driver decides when the bytes go.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use super::session::Session;
use super::{Shard, ShardParts};
use crate::metrics::ShardStats;

/// Stop reading from a connection while this much output waits for it: a
/// peer that sends without reading must not grow our memory without bound.
pub(crate) const MAX_PENDING_OUT: usize = 4 << 20;

/// A driver's state for one connection, kept in the shard's slot beside
/// the connection's session.
pub(crate) trait Transport {
    /// The generations this driver can tell apart: a driver that packs
    /// them into fewer bits says which.
    const GENERATION_MASK: u32 = u32::MAX;

    /// Output owed to the peer and not yet written: the session's queue
    /// and `out`, plus what the driver holds in flight, less what of the
    /// head it has already written.
    fn backlog(&self, session: &Session) -> usize;

    /// Bytes of the head of the session's output (its first queued
    /// segment, or `out`) already written: what a dropped backlog must
    /// keep so that the peer never sees half a frame.
    fn head_written(&self) -> usize;

    /// The connection's socket, for the session's calls that need one
    /// (its peer address, its TCP settings).
    fn socket(&self) -> BorrowedFd<'_>;

    /// The connection was dropped and the driver waits for its operations
    /// in flight before it frees the slot: the shard no longer acts on it.
    fn dying(&self) -> bool {
        false
    }
}

/// How a shard's bytes move: the event loop's waiting, reading and
/// writing.
pub(crate) trait Driver: Sized {
    /// What the driver keeps per connection.
    type Io: Transport;

    /// Builds the driver for a shard, and the shard it will move bytes for.
    fn build(parts: ShardParts) -> io::Result<(Shard<Self::Io>, Self)>;

    /// Sleeps until something happens, or at most `timeout`.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()>;

    /// Hands the shard everything that happened since the wait: accepts,
    /// bytes read, writes finished, FINs, errors, the shutdown signal and
    /// inbox wake-ups.
    fn dispatch(&mut self, shard: &mut Shard<Self::Io>);

    /// The connection at `key` has output to write, or its write side to
    /// shut once the output is gone: write it now or by the end of the
    /// turn.
    fn send(&mut self, shard: &mut Shard<Self::Io>, key: usize);

    /// The shard is done with the connection at `key`: end its I/O and
    /// free its slot with [`Shard::release`] once nothing is in flight.
    fn drop_conn(&mut self, shard: &mut Shard<Self::Io>, key: usize);

    /// The turn's work is done: start what it queued.
    fn end_turn(&mut self, shard: &mut Shard<Self::Io>);

    /// Whether the loop must wake every tick even with no deadline armed
    /// (an accept waiting to be retried).
    fn ticking(&self) -> bool;

    /// Adds the driver's own gauges to the shard's published slot.
    fn publish_stats(&self, stats: &ShardStats);

    /// The shard has stopped: release what the kernel still holds.
    fn finish(&mut self);
}
