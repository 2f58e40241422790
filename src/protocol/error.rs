//! What a peer can do wrong after the upgrade, and the close code each
//! violation earns.

use std::fmt;

use super::close::CloseCode;

/// A violation that ends the connection with a close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolError {
    /// RSV bits set without an extension that defines them.
    ReservedBits,
    /// An opcode RFC 6455 reserves.
    ReservedOpcode(u8),
    /// A client frame without a mask (§5.1).
    UnmaskedFrame,
    /// A 64-bit payload length with its top bit set.
    LengthOverflow,
    /// A control frame over 125 bytes.
    ControlFrameTooLong,
    /// A control frame without FIN.
    FragmentedControlFrame,
    /// A continuation frame with no message in progress.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is in progress.
    ExpectedContinuation,
    /// A one-byte close payload.
    TruncatedCloseCode,
    /// A close code that may not be sent.
    InvalidCloseCode(u16),
    /// Text (or a close reason) that is not UTF-8.
    InvalidUtf8,
    /// A compressed message that is not a valid deflate stream.
    BadCompression,
    /// A message larger than the configured limit.
    MessageTooBig {
        /// The limit in bytes.
        limit: usize,
    },
    /// A message the server cannot hold right now: the memory shared by
    /// the messages every connection of a shard is receiving is spoken for.
    BudgetExhausted,
}

impl ProtocolError {
    /// The close code to send for this violation.
    pub fn close_code(self) -> CloseCode {
        match self {
            Self::InvalidUtf8 | Self::BadCompression => CloseCode::INVALID_PAYLOAD,
            Self::MessageTooBig { .. } => CloseCode::TOO_BIG,
            Self::BudgetExhausted => CloseCode::TRY_AGAIN_LATER,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedBits => f.write_str("reserved bits set"),
            Self::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            Self::UnmaskedFrame => f.write_str("unmasked client frame"),
            Self::LengthOverflow => f.write_str("payload length has its top bit set"),
            Self::ControlFrameTooLong => f.write_str("control frame over 125 bytes"),
            Self::FragmentedControlFrame => f.write_str("fragmented control frame"),
            Self::UnexpectedContinuation => f.write_str("continuation without a message"),
            Self::ExpectedContinuation => f.write_str("new message inside a fragmented one"),
            Self::TruncatedCloseCode => f.write_str("one-byte close payload"),
            Self::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            Self::InvalidUtf8 => f.write_str("invalid UTF-8"),
            Self::BadCompression => f.write_str("invalid compressed data"),
            Self::MessageTooBig { limit } => write!(f, "message over {limit} bytes"),
            Self::BudgetExhausted => f.write_str("server busy: message budget spent, retry later"),
        }
    }
}

impl std::error::Error for ProtocolError {}
