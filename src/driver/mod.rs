//! Event-loop drivers: the only code that performs socket I/O. Each is a
//! concrete loop over the same `shard::conn::Session`; a shard runs one,
//! chosen by [`probe::resolve_backend`] and started by [`run`].

pub(crate) mod epoll;
pub(crate) mod probe;
pub(crate) mod uring;

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;

use crate::config::Backend;
use crate::pubsub::hub::InboxReceiver;
use crate::shard::Shared;
use epoll::EpollLoop;
use uring::UringLoop;

/// Builds `backend`'s loop on the calling thread (an io_uring ring is
/// single-issuer, so this is the shard's own thread), tells `ready`
/// whether it could, then runs it until the shard stops.
pub(crate) fn run(
    backend: Backend,
    listeners: Vec<std::net::TcpListener>,
    signal: UnixStream,
    shared: Shared,
    id: usize,
    inbox: InboxReceiver,
    ready: &mpsc::Sender<io::Result<()>>,
) -> io::Result<()> {
    if backend == Backend::Uring {
        started(UringLoop::new(listeners, signal, shared, id, inbox), ready)?.run()
    } else {
        started(EpollLoop::new(listeners, signal, shared, id, inbox), ready)?.run()
    }
}

/// Tells `Server::start` whether a loop could be built, then hands it back.
fn started<L>(built: io::Result<L>, ready: &mpsc::Sender<io::Result<()>>) -> io::Result<L> {
    let report = built
        .as_ref()
        .map(|_| ())
        .map_err(|e| io::Error::new(e.kind(), e.to_string()));
    let _ = ready.send(report);
    built
}
