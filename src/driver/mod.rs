//! Event-loop drivers: the only code that performs socket I/O. Each is a
//! concrete loop over the same `shard::conn::Session`; a shard runs one.

pub(crate) mod epoll;
pub(crate) mod probe;
pub(crate) mod uring;
