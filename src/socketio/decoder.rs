//! A session's incoming Socket.IO packets: text packets as they come, and
//! a binary packet held until its attachments (the binary Engine.IO
//! messages right after it) are all in, within bounds.
//!
//! The reference waits for attachments without a bound; here the shard
//! asks [`Decoder::in_progress_since`] and times a half-received packet
//! out.

use std::borrow::Cow;
use std::fmt;

use super::packet::{Packet, PacketError};

/// Bounds on one binary packet's attachments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// At most this many attachments per packet.
    pub max_attachments: usize,
    /// At most this many attachment bytes in all, per packet.
    pub max_attachment_bytes: usize,
}

impl Default for Limits {
    /// 10 attachments, and as many bytes as Engine.IO's default
    /// `maxPayload` (1 MB) lets one message carry.
    fn default() -> Self {
        Self {
            max_attachments: 10,
            max_attachment_bytes: 1_000_000,
        }
    }
}

/// Why a session's input is not a packet stream. Any of them ends the
/// session; the decoder is empty again afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// A text packet breaks a rule.
    Packet(PacketError),
    /// A binary packet announces more attachments than allowed.
    TooManyAttachments {
        /// The count the packet announces.
        count: usize,
        /// [`Limits::max_attachments`].
        max: usize,
    },
    /// A binary packet's attachments pass [`Limits::max_attachment_bytes`].
    AttachmentsTooLarge {
        /// [`Limits::max_attachment_bytes`].
        max: usize,
    },
    /// A binary message came with no binary packet waiting for it.
    UnexpectedBinary,
    /// A text packet came while a binary packet still waits for
    /// attachments (the reference refuses it the same way).
    UnexpectedText,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Packet(e) => e.fmt(f),
            Self::TooManyAttachments { count, max } => {
                write!(f, "{count} attachments announced, at most {max} allowed")
            }
            Self::AttachmentsTooLarge { max } => {
                write!(f, "attachments above {max} bytes")
            }
            Self::UnexpectedBinary => f.write_str("binary data with no packet waiting for it"),
            Self::UnexpectedText => f.write_str("text packet while attachments are awaited"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<PacketError> for DecodeError {
    fn from(e: PacketError) -> Self {
        Self::Packet(e)
    }
}

/// One session's decoder: feed it the session's Engine.IO messages in
/// order; it hands back whole packets.
#[derive(Debug, Default)]
pub struct Decoder {
    limits: Limits,
    /// Boxed: an idle session's decoder is two words and its limits.
    waiting: Option<Box<Waiting>>,
}

#[derive(Debug)]
struct Waiting {
    packet: Packet<'static>,
    count: usize,
    bytes: usize,
    since: u64,
}

impl Decoder {
    /// An empty decoder.
    pub const fn new(limits: Limits) -> Self {
        Self {
            limits,
            waiting: None,
        }
    }

    /// The bounds it applies.
    pub const fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes a text message at `now` (the caller's clock, any unit). A
    /// packet with nothing to wait for comes back as it is, borrowing
    /// `text`; a binary packet with attachments is kept (owned) and `None`
    /// returned until [`binary`](Self::binary) completes it.
    pub fn text<'a>(&mut self, text: &'a str, now: u64) -> Result<Option<Packet<'a>>, DecodeError> {
        if self.waiting.take().is_some() {
            return Err(DecodeError::UnexpectedText);
        }
        let (packet, count) = Packet::decode_text(text)?;
        if count > self.limits.max_attachments {
            return Err(DecodeError::TooManyAttachments {
                count,
                max: self.limits.max_attachments,
            });
        }
        if count == 0 {
            return Ok(Some(packet));
        }
        self.waiting = Some(Box::new(Waiting {
            packet: packet.into_owned(),
            count,
            bytes: 0,
            since: now,
        }));
        Ok(None)
    }

    /// Takes a binary message: the next attachment of the waiting packet.
    /// Returns the packet once it has them all.
    pub fn binary(&mut self, bytes: Cow<'_, [u8]>) -> Result<Option<Packet<'static>>, DecodeError> {
        let mut waiting = self.waiting.take().ok_or(DecodeError::UnexpectedBinary)?;
        waiting.bytes = waiting.bytes.saturating_add(bytes.len());
        if waiting.bytes > self.limits.max_attachment_bytes {
            return Err(DecodeError::AttachmentsTooLarge {
                max: self.limits.max_attachment_bytes,
            });
        }
        waiting
            .packet
            .push_attachment(Cow::Owned(bytes.into_owned()));
        if waiting.packet.attachments().len() == waiting.count {
            return Ok(Some(waiting.packet));
        }
        self.waiting = Some(waiting);
        Ok(None)
    }

    /// When (in the `now` given to [`text`](Self::text)) the binary packet
    /// still waiting for attachments arrived, if one is: the shard times
    /// out a packet that is never completed.
    pub fn in_progress_since(&self) -> Option<u64> {
        self.waiting.as_ref().map(|w| w.since)
    }

    /// Drops a half-received packet.
    pub fn reset(&mut self) {
        self.waiting = None;
    }
}
