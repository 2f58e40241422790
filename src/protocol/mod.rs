//! The sans-IO RFC 6455 core: bytes in, events and bytes out.
//!
//! Architecture invariant: nothing below this module touches a socket, a
//! clock or a thread, so all of it is tested and fuzzed on plain byte slices.

pub mod accept_key;
pub mod close;
pub mod connection;
pub mod decoder;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;

#[cfg(test)]
mod tests;

pub use close::{CloseCode, ClosePayload};
pub use connection::{ServerConn, State};
pub use decoder::{Event, Payload, Step};
pub use error::ProtocolError;
pub use frame::OpCode;
