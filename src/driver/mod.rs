//! Event-loop drivers: the only code that performs socket I/O. Each moves the
//! bytes of one [`Shard`](crate::shard::Shard) behind its `Driver` seam; a shard runs one,
//! chosen by [`probe::resolve_backend`] and started by [`run`].

pub(crate) mod epoll;
pub(crate) mod probe;
pub(crate) mod uring;

use std::io;
use std::sync::mpsc;

use crate::config::Backend;
use crate::shard::{Driver, ShardParts};
use epoll::EpollLoop;
use uring::UringLoop;

/// Builds `backend`'s loop on the calling thread (an io_uring ring is
/// single-issuer, so this is the shard's own thread), tells `ready`
/// whether it could, then runs it until the shard stops.
pub(crate) fn run(
    backend: Backend,
    parts: ShardParts,
    ready: &mpsc::Sender<io::Result<()>>,
) -> io::Result<()> {
    if backend == Backend::Uring {
        start::<UringLoop>(parts, ready)
    } else {
        start::<EpollLoop>(parts, ready)
    }
}

/// Builds a shard on driver `D`, reports whether it could, and runs it.
fn start<D: Driver>(parts: ShardParts, ready: &mpsc::Sender<io::Result<()>>) -> io::Result<()> {
    let built = D::build(parts);
    let report = built
        .as_ref()
        .map(|_| ())
        .map_err(|e| io::Error::new(e.kind(), e.to_string()));
    let _ = ready.send(report);
    let (shard, driver) = built?;
    shard.run(driver)
}
