//! The sans-IO Engine.IO v4 core: requests, session ids, packets and
//! payloads in and out, and each session's state machine.
//!
//! ```text
//! polling GET/POST (method, query, body) ─► request::parse ─► Request { Open*, Poll, Post, Upgrade }
//! WebSocket messages (Frame)             ─► Session::on_frame / post ─► the application's Data
//! the shard's clock (now, ms)            ─► Session::on_timer          (ping, ping timeout, upgrade timeout)
//!                          Session::transmit ─► Transmit { Poll(body), Frame(packet), EndProbe }
//! ```
//!
//! Architecture invariant: like [`crate::protocol`], nothing here touches
//! a socket, reads a clock or starts a thread; time comes in as `now`
//! milliseconds. Everything is tested and fuzzed on byte slices.
//!
//! - [`packet`]: one packet, and one packet as one WebSocket message.
//! - [`payload`]: the long-polling body (`\x1e`-separated, binary as
//!   `b` + base64), bounded by `maxPayload`.
//! - [`request`]: what an HTTP request asks for (`EIO`, `transport`,
//!   `sid`), or the reference server's refusal ([`refusal`]).
//! - [`sid`]: session ids that name their shard and slot, with a secret.
//! - [`handoff`]: what the shard a request arrived on and the shard that
//!   owns its session tell each other.
//! - [`session`]: a session's life: handshake, polls, posts, heartbeat,
//!   upgrade, close.

pub mod handoff;
pub mod packet;
pub mod payload;
pub mod refusal;
pub mod request;
pub mod session;
pub mod sid;

#[cfg(test)]
mod tests;

pub use packet::{Data, Frame, FrameKind, Packet, PacketError, PacketType};
pub use payload::{Payload, PayloadError};
pub use refusal::Refusal;
pub use request::{Request, Transport};
pub use session::{CloseReason, Config, Messages, Session, Transmit};
pub use sid::Sid;
