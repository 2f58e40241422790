//! The sans-IO Socket.IO v5 core: packets in their text form, and binary
//! packets put back together from the Engine.IO messages that carry them.
//!
//! ```text
//! Engine.IO text message   ─► Decoder::text   ─┐
//! Engine.IO binary message ─► Decoder::binary ─┴► Packet { type, namespace, ack id, JSON data as text, attachments }
//!                      Packet::encode ─► one text message, then each attachment as a binary message
//! ```
//!
//! Architecture invariant: like [`crate::engineio`], nothing here touches
//! a socket, reads a clock or starts a thread; the time a half-received
//! binary packet arrived comes in as `now`. Everything is tested and
//! fuzzed on strings and byte slices.
//!
//! - [`packet`]: one packet, its text form read as the reference parser
//!   reads it, and the precise rule a bad packet breaks.
//! - [`decoder`]: a session's incoming packets, binary attachments
//!   collected within [`Limits`].
//! - [`target`]: who a room broadcast is for (rooms, exceptions, the
//!   sender), written into the hub topic that carries it.
//! - `json`: the one pass over a packet's JSON data that checks it
//!   without building a tree, so the data stays text.

pub mod broadcast;
pub mod decoder;
mod json;
pub mod packet;
pub mod recovery;
pub mod session;
pub mod target;

#[cfg(test)]
mod tests;

/// The prefix of the hub topic of every Socket.IO room: the topic of room
/// `r` on namespace `/ns` is `sio:/ns,r` (a namespace holds no comma).
pub const ROOM_TOPIC_PREFIX: &str = "sio:";

pub use decoder::{DecodeError, Decoder, Limits};
pub use packet::{Event, EventName, Packet, PacketError, PacketType, MAX_ACK_ID};
