//! One Engine.IO packet: its type, its data, and how it travels as one
//! WebSocket message (a text message is the type digit then the UTF-8
//! data; a binary message is a `message` packet whose bytes are the data
//! as they are, with no type byte).

use std::borrow::Cow;
use std::fmt;

/// The seven packet types of Engine.IO v4, numbered as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketType {
    /// `0`: the server's handshake, with the session's parameters as JSON.
    Open,
    /// `1`: the transport (and with it the session) is closing.
    Close,
    /// `2`: the server's heartbeat; `2probe` starts an upgrade.
    Ping,
    /// `3`: the client's answer to a ping; `3probe` answers the probe.
    Pong,
    /// `4`: application data, text or binary.
    Message,
    /// `5`: the client completes an upgrade to WebSocket.
    Upgrade,
    /// `6`: nothing; ends a long-poll that has nothing else to carry.
    Noop,
}

impl PacketType {
    const ALL: [Self; 7] = [
        Self::Open,
        Self::Close,
        Self::Ping,
        Self::Pong,
        Self::Message,
        Self::Upgrade,
        Self::Noop,
    ];

    /// The type's digit on the wire, `b'0'` to `b'6'`.
    pub const fn digit(self) -> u8 {
        b'0' + self as u8
    }

    /// The type a wire digit names, if it names one.
    pub fn from_digit(digit: u8) -> Option<Self> {
        Self::ALL
            .get(usize::from(digit.wrapping_sub(b'0')))
            .copied()
    }
}

/// A packet's data: text, or (only in a `message`) binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data<'a> {
    /// UTF-8 text.
    Text(Cow<'a, str>),
    /// Bytes, sent as a binary WebSocket message or as `b` + base64 in a
    /// long-polling payload.
    Binary(Cow<'a, [u8]>),
}

impl Data<'_> {
    /// The data in bytes (binary data before any base64).
    pub fn len(&self) -> usize {
        match self {
            Self::Text(t) => t.len(),
            Self::Binary(b) => b.len(),
        }
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same data, owned.
    pub fn into_owned(self) -> Data<'static> {
        match self {
            Self::Text(t) => Data::Text(Cow::Owned(t.into_owned())),
            Self::Binary(b) => Data::Binary(Cow::Owned(b.into_owned())),
        }
    }
}

/// A WebSocket message as the shard received it (text already checked to
/// be UTF-8 by the WebSocket layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A text message.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

/// Which kind of WebSocket message a packet travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Opcode 1.
    Text,
    /// Opcode 2.
    Binary,
}

/// Why some text is not a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    /// No type digit: the text is empty.
    Empty,
    /// The first byte is not a type digit `0` to `6`.
    UnknownType(u8),
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty packet"),
            Self::UnknownType(b) => write!(f, "unknown packet type {:?}", char::from(*b)),
        }
    }
}

impl std::error::Error for PacketError {}

/// One packet. Only a `message` carries binary data; any type may carry
/// text (the reference keeps whatever follows the digit, e.g. `2probe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    kind: PacketType,
    data: Data<'a>,
}

impl<'a> Packet<'a> {
    /// A packet of `kind` with no data.
    pub const fn bare(kind: PacketType) -> Self {
        Self {
            kind,
            data: Data::Text(Cow::Borrowed("")),
        }
    }

    /// A packet of `kind` carrying `text`.
    pub fn text(kind: PacketType, text: impl Into<Cow<'a, str>>) -> Self {
        Self {
            kind,
            data: Data::Text(text.into()),
        }
    }

    /// A `message` packet.
    pub const fn message(data: Data<'a>) -> Self {
        Self {
            kind: PacketType::Message,
            data,
        }
    }

    /// The packet's type.
    pub const fn kind(&self) -> PacketType {
        self.kind
    }

    /// The packet's data (empty text for a bare packet).
    pub const fn data(&self) -> &Data<'a> {
        &self.data
    }

    /// The packet's data, taken.
    pub fn into_data(self) -> Data<'a> {
        self.data
    }

    /// Whether this is a packet of `kind` whose text is `text`.
    pub fn is(&self, kind: PacketType, text: &str) -> bool {
        self.kind == kind && matches!(&self.data, Data::Text(t) if t == text)
    }

    /// The same packet, owned.
    pub fn into_owned(self) -> Packet<'static> {
        Packet {
            kind: self.kind,
            data: self.data.into_owned(),
        }
    }

    /// Decodes a text packet: a type digit, then its data.
    pub fn decode_text(text: &'a str) -> Result<Self, PacketError> {
        let &first = text.as_bytes().first().ok_or(PacketError::Empty)?;
        let kind = PacketType::from_digit(first).ok_or(PacketError::UnknownType(first))?;
        // The digit is one ASCII byte, so the rest starts on a char boundary.
        Ok(Self::text(kind, &text[1..]))
    }

    /// Decodes the packet one WebSocket message carries: text as
    /// [`decode_text`](Self::decode_text), binary as a `message` with the
    /// bytes as they are.
    pub fn decode_frame(frame: Frame<'a>) -> Result<Self, PacketError> {
        match frame {
            Frame::Text(text) => Self::decode_text(text),
            Frame::Binary(bytes) => Ok(Self::message(Data::Binary(Cow::Borrowed(bytes)))),
        }
    }

    /// Appends the payload of the WebSocket message that carries this
    /// packet to `out` and says which kind of message it is.
    pub fn encode_frame(&self, out: &mut Vec<u8>) -> FrameKind {
        match &self.data {
            Data::Binary(bytes) => {
                out.extend_from_slice(bytes);
                FrameKind::Binary
            }
            Data::Text(text) => {
                out.push(self.kind.digit());
                out.extend_from_slice(text.as_bytes());
                FrameKind::Text
            }
        }
    }

    /// What the packet costs in a send queue: its data plus the type byte.
    pub(crate) fn queued_len(&self) -> usize {
        self.data.len() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(p: &Packet<'_>) -> (FrameKind, Vec<u8>) {
        let mut out = Vec::new();
        let kind = p.encode_frame(&mut out);
        (kind, out)
    }

    #[test]
    fn every_type_round_trips_as_a_text_frame() {
        for kind in PacketType::ALL {
            assert_eq!(PacketType::from_digit(kind.digit()), Some(kind));
            let p = Packet::text(kind, "probe");
            let (fk, bytes) = frame(&p);
            assert_eq!(fk, FrameKind::Text);
            let text = std::str::from_utf8(&bytes).unwrap();
            assert_eq!(Packet::decode_text(text), Ok(p));
        }
        assert_eq!(frame(&Packet::bare(PacketType::Ping)).1, b"2");
        assert_eq!(
            frame(&Packet::text(PacketType::Message, "héllo")).1,
            "4héllo".as_bytes()
        );
    }

    #[test]
    fn a_binary_frame_is_a_message_without_a_type_byte() {
        let p = Packet::decode_frame(Frame::Binary(&[1, 2, 3, 4])).unwrap();
        assert_eq!(p.kind(), PacketType::Message);
        assert_eq!(p.data(), &Data::Binary(Cow::Borrowed(&[1, 2, 3, 4][..])));
        assert_eq!(frame(&p), (FrameKind::Binary, vec![1, 2, 3, 4]));
        // Even bytes that look like a type digit are data.
        let p = Packet::decode_frame(Frame::Binary(b"4x")).unwrap();
        assert_eq!(frame(&p).1, b"4x");
        assert!(Packet::decode_frame(Frame::Binary(b"")).is_ok());
    }

    #[test]
    fn bad_text_is_refused_precisely() {
        assert_eq!(Packet::decode_text(""), Err(PacketError::Empty));
        assert_eq!(
            Packet::decode_text("abc"),
            Err(PacketError::UnknownType(b'a'))
        );
        assert_eq!(
            Packet::decode_text("7"),
            Err(PacketError::UnknownType(b'7'))
        );
        assert_eq!(
            Packet::decode_text("/"),
            Err(PacketError::UnknownType(b'/'))
        );
        assert_eq!(
            Packet::decode_text("é"),
            Err(PacketError::UnknownType(0xc3))
        );
        assert_eq!(
            PacketError::UnknownType(b'a').to_string(),
            "unknown packet type 'a'"
        );
    }

    #[test]
    fn probe_packets_are_recognised() {
        assert!(Packet::decode_text("2probe")
            .unwrap()
            .is(PacketType::Ping, "probe"));
        assert!(!Packet::decode_text("2probes")
            .unwrap()
            .is(PacketType::Ping, "probe"));
        assert!(!Packet::decode_text("3probe")
            .unwrap()
            .is(PacketType::Ping, "probe"));
    }
}
