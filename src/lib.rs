//! surge: a sharded, per-core WebSocket server runtime.
//!
//! ```text
//!             ┌──────────────────── one shard per core, pinned, nothing shared ────────────────────┐
//! socket ───► │ driver (epoll | io_uring) ──► Shard ──► Session ──► protocol::ServerConn ──► app   │
//! bytes  ◄─── │   writes `out` (pooled)   ◄── frames encoded into `out`  ◄───────────────────┘     │
//!             └────────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Code map:
//! - [`protocol`]: the sans-IO RFC 6455 core: handshake (httparse), accept
//!   key, frame headers, the streaming decoder, SIMD unmasking, streaming
//!   UTF-8, close codes. **Invariant:** it never touches a socket, a clock
//!   or a thread, so it is tested and fuzzed on byte slices alone.
//! - `driver`: the only code that does socket I/O, and only that. `epoll.rs`
//!   (mio, edge-triggered, one shared read buffer per shard) and `uring/`
//!   (multishot accept and recv from an incremental provided-buffer ring,
//!   sends batched once per loop turn, SEND_ZC for large frames).
//!   **Invariant:** a slot is freed only by its driver, once no operation
//!   on it is in flight.
//! - `shard`: a shard's behaviour, written once for both drivers: the
//!   `Shard` generic over its driver (the seam in `shard/io.rs`), a
//!   connection's life, `Session` (the I/O-free half of a connection), the
//!   hashed timer wheel and deadline rules, and the handlers as a session
//!   calls them.
//! - `server`: start-up (SO_REUSEPORT listeners, a pinned thread running a
//!   driver per shard, signals), above the drivers.
//!   **Invariant:** a connection never migrates between shards, and nothing
//!   on the read/parse/write path takes a lock.
//! - `buf`: the per-shard output buffer pool. **Invariant:** an idle
//!   connection holds no read or write buffer.
//! - [`metrics`]: per-shard counters kept in plain integers on the hot path,
//!   published once per loop turn, summed at `GET /metrics`.
//! - [`load`]: `surge load`, the load generator, built on the same core.
//! - [`config`], [`cli`]: runtime settings (one per flag) and subcommands.
//! - [`admission`]: who may connect and how fast: real client addresses
//!   (PROXY protocol v1/v2, trusted `X-Forwarded-For`), per-client and
//!   global caps and rates shared by every shard, the upgrade policy, and
//!   the counters behind `surge_admission_*`.
//! - [`pubsub`]: topics and fan-out. A message is framed once by its
//!   publisher and shared by reference with every shard and every
//!   subscriber; per turn, a shard joins a topic's messages into one batch
//!   and each subscriber gets one write. Slow subscribers are disconnected
//!   (1013) or conflated (latest value per key) by route policy. Also the
//!   hub route's JSON protocol, the same topics as server-sent events
//!   (`GET /hub/events`) and the ticker feed.
//! - [`tls`]: wss/https through rustls (feature `tls`): PEM loading, the
//!   certificate swapped on SIGHUP and read once per accept, and the record
//!   layer both drivers put between socket bytes and a `Session`.
//! - [`app`]: the embedding API: routes served by a `Handler` (upgrade,
//!   open, message, drain, close) with per-route limits, Socket.IO routes
//!   served by a `SocketIoHandler` per namespace, `App` to start them,
//!   `Publisher` and `Emitter` to publish from any thread. **Invariant:** handler
//!   state lives behind the connection's spill pointer, so built-in routes
//!   pay nothing for it.
//! - [`engineio`]: the sans-IO Engine.IO v4 core: request parsing and its
//!   refusals, session ids that name their shard and slot, packets,
//!   long-polling payloads, and each session's state machine (polls,
//!   posts, heartbeat, upgrade to WebSocket, close). **Invariant:** like
//!   `protocol`, no socket, clock or thread: time comes in as `now`.
//! - [`socketio`]: the sans-IO Socket.IO v5 core on top of it: packets
//!   (namespace, ack id, JSON data kept as text) read as the reference
//!   parser reads them, and binary packets put back together from their
//!   attachments within bounds. **Invariant:** no socket, clock or thread.
//! - [`auth`]: the sans-IO core of signed connection tokens (JWT): keys
//!   from an HS256 secret, a PEM public key or a JWKS, each pinning the one
//!   algorithm it verifies; a token's claims (`sub`, `exp`/`nbf` against a
//!   given `now`, the `subscribe` and `publish` topic patterns) and why a
//!   token is refused; where an upgrade request carries its token. Not yet
//!   called by the server. **Invariant:** no socket, clock or thread.
//! - [`bridge`]: the Redis bridge that relays hub publishes between nodes.
//! - `status`: the live status page served at `GET /` beside a ticker feed.
//! - `sys`: the few libc calls std and mio lack (affinity, rlimit, sockets).
//! - `fuzzing`: fuzz target bodies shared by `fuzz/` and the corpus replay.

pub mod admission;
mod api;
pub mod app;
pub mod auth;
pub mod bridge;
mod buf;
pub mod cli;
pub mod config;
mod driver;
pub mod engineio;
#[doc(hidden)]
pub mod fuzzing;
pub mod load;
pub mod metrics;
pub mod protocol;
pub mod pubsub;
mod server;
mod shard;
pub mod socketio;
mod status;
mod sys;
pub mod tls;

pub use server::Server;
