//! surge: a sharded, per-core WebSocket server runtime.
//!
//! ```text
//!  socket bytes ─► shard (mio loop, slab, timers) ─► Conn ─► protocol::ServerConn ─► app
//!               ◄─ write queue ◄──────────────────── frames encoded into `out` ◄──────┘
//! ```
//!
//! Code map:
//! - [`protocol`]: the sans-IO RFC 6455 core (handshake, frames, unmasking,
//!   UTF-8, close codes). Architecture invariant: it never touches a socket,
//!   a clock or a thread.
//! - `shard`: one pinned thread per core with its own epoll loop, listeners
//!   (SO_REUSEPORT), connection slab and timer wheel; no locks on the hot path.
//! - [`config`]: runtime settings, one per CLI flag.
//! - [`cli`]: the `surge` binary's subcommands.
//! - `sys`: the few libc calls std and mio lack (affinity, rlimit, sockets).

mod buf;
pub mod cli;
pub mod config;
mod driver;
#[doc(hidden)]
pub mod fuzzing;
pub mod load;
pub mod metrics;
pub mod protocol;
mod shard;
mod sys;

pub use shard::spawn::Server;
