//! The HTTP long-polling body: packets joined by the record separator
//! `\x1e`, each a type digit and its text, or `b` and base64 for binary
//! data.
//!
//! In v4 a body is always text: the reference server answers every poll
//! with `Content-Type: text/plain; charset=UTF-8` ([`CONTENT_TYPE`]),
//! binary data included, since binary is base64 (its parser's
//! `encodePayload` always joins strings; `application/octet-stream` is
//! only ever written by the v3 path).

use std::borrow::Cow;
use std::fmt;

use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

use super::packet::{Data, Packet, PacketError, PacketType};

/// Separates the packets of a payload (ASCII RS).
pub const SEPARATOR: u8 = 0x1e;

/// The `Content-Type` of every poll answer.
pub const CONTENT_TYPE: &str = "text/plain; charset=UTF-8";

/// Marks a binary packet, whose data follows as base64.
const BINARY: u8 = b'b';

/// Standard base64 written with padding, as browsers' `btoa` and Node's
/// `Buffer` write it; read with or without it.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a body is not a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadError {
    /// The body is longer than the session's `maxPayload` (HTTP 413,
    /// where any other fault is a 400).
    TooLarge {
        /// The body's length, or as much of it as was read.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The body is not UTF-8.
    NotUtf8,
    /// Packet number `index` (from 0) is not a packet.
    Packet {
        /// Its position in the payload.
        index: usize,
        /// What is wrong with it.
        error: PacketError,
    },
    /// Packet number `index` is binary, but not valid base64.
    BadBase64 {
        /// Its position in the payload.
        index: usize,
    },
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, max } => write!(f, "payload of {len} bytes is over {max}"),
            Self::NotUtf8 => f.write_str("payload is not UTF-8"),
            Self::Packet { index, error } => write!(f, "packet {index}: {error}"),
            Self::BadBase64 { index } => write!(f, "packet {index}: invalid base64"),
        }
    }
}

impl std::error::Error for PayloadError {}

/// A body checked to be a payload: every packet in it decodes.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a> {
    text: &'a str,
}

impl<'a> Payload<'a> {
    /// Checks `body` as a payload of at most `max_payload` bytes. A
    /// longer body is refused by its length alone, so the caller need not
    /// read more than `max_payload + 1` bytes of it. Checking holds no
    /// more memory than the longest binary packet's decoded bytes.
    pub fn parse(body: &'a [u8], max_payload: usize) -> Result<Self, PayloadError> {
        if body.len() > max_payload {
            return Err(PayloadError::TooLarge {
                len: body.len(),
                max: max_payload,
            });
        }
        let text = simdutf8::basic::from_utf8(body).map_err(|_| PayloadError::NotUtf8)?;
        let mut scratch = Vec::new();
        for (index, segment) in segments(text).enumerate() {
            match segment.as_bytes().first() {
                Some(&BINARY) => {
                    scratch.clear();
                    BASE64
                        .decode_vec(&segment[1..], &mut scratch)
                        .map_err(|_| PayloadError::BadBase64 { index })?;
                }
                _ => {
                    Packet::decode_text(segment)
                        .map_err(|error| PayloadError::Packet { index, error })?;
                }
            }
        }
        Ok(Self { text })
    }

    /// The packets, in order. Text borrows from the body; binary data is
    /// decoded into a buffer of its own exact size.
    pub fn packets(&self) -> Packets<'a> {
        Packets {
            segments: segments(self.text),
        }
    }

    /// The packets' types alone, in order, without decoding any data.
    pub fn kinds(&self) -> impl Iterator<Item = PacketType> + 'a {
        segments(self.text).map(|s| match s.as_bytes().first() {
            Some(&BINARY) => PacketType::Message,
            // Checked by `parse`: always a digit.
            Some(&digit) => PacketType::from_digit(digit).unwrap_or(PacketType::Noop),
            None => PacketType::Noop,
        })
    }
}

fn segments(text: &str) -> std::str::Split<'_, char> {
    text.split(char::from(SEPARATOR))
}

/// The packets of a [`Payload`].
#[derive(Debug, Clone)]
pub struct Packets<'a> {
    segments: std::str::Split<'a, char>,
}

impl<'a> Iterator for Packets<'a> {
    type Item = Packet<'a>;

    fn next(&mut self) -> Option<Packet<'a>> {
        let segment = self.segments.next()?;
        Some(match segment.as_bytes().first() {
            Some(&BINARY) => {
                // Checked by `parse`: this cannot fail.
                let bytes = BASE64.decode(&segment[1..]).unwrap_or_default();
                Packet::message(Data::Binary(Cow::Owned(bytes)))
            }
            _ => Packet::decode_text(segment).unwrap_or(Packet::bare(PacketType::Noop)),
        })
    }
}

/// Appends `packets` to `out` as one payload and says whether any of them
/// is binary (only for counting: the body is text either way).
pub fn encode<'p, 'd: 'p>(
    packets: impl IntoIterator<Item = &'p Packet<'d>>,
    out: &mut Vec<u8>,
) -> bool {
    let mut binary = false;
    for (i, packet) in packets.into_iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        match packet.data() {
            Data::Binary(bytes) => {
                binary = true;
                out.push(BINARY);
                let start = out.len();
                out.resize(
                    start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
                    0,
                );
                // Sized just above, so it always fits.
                let _ = BASE64.encode_slice(bytes, &mut out[start..]);
            }
            Data::Text(text) => {
                out.push(packet.kind().digit());
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
    binary
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(body: &[u8]) -> Result<Vec<Packet<'_>>, PayloadError> {
        Payload::parse(body, 1 << 20).map(|p| p.packets().collect())
    }

    fn encoded(packets: &[Packet<'_>]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let binary = encode(packets, &mut out);
        (out, binary)
    }

    fn bin(bytes: &[u8]) -> Packet<'static> {
        Packet::message(Data::Binary(Cow::Owned(bytes.to_vec())))
    }

    #[test]
    fn the_specs_examples() {
        let packets = decode(b"4hello\x1e2\x1e4world").unwrap();
        assert_eq!(
            packets,
            [
                Packet::text(PacketType::Message, "hello"),
                Packet::bare(PacketType::Ping),
                Packet::text(PacketType::Message, "world"),
            ]
        );
        let packets = decode(b"4hello\x1ebAQIDBA==").unwrap();
        assert_eq!(packets[1], bin(&[1, 2, 3, 4]));
        assert_eq!(encoded(&packets), (b"4hello\x1ebAQIDBA==".to_vec(), true));
        assert_eq!(encoded(&packets[..1]), (b"4hello".to_vec(), false));
        assert_eq!(encoded(&[]), (Vec::new(), false));
    }

    #[test]
    fn base64_is_read_with_or_without_padding() {
        assert_eq!(decode(b"bAQIDBA").unwrap(), [bin(&[1, 2, 3, 4])]);
        assert_eq!(decode(b"b").unwrap(), [bin(&[])]);
        assert_eq!(decode(b"bAQIDBA=").unwrap(), [bin(&[1, 2, 3, 4])]);
        assert_eq!(
            decode(b"bAQ=IDBA\x1e4"),
            Err(PayloadError::BadBase64 { index: 0 })
        );
        assert_eq!(
            decode(b"bAQIDBA==="),
            Err(PayloadError::BadBase64 { index: 0 })
        );
        assert_eq!(
            decode(b"4\x1eb-_8="),
            Err(PayloadError::BadBase64 { index: 1 })
        );
    }

    #[test]
    fn bad_bodies_are_refused_precisely() {
        let packet = |index, error| Err(PayloadError::Packet { index, error });
        assert_eq!(decode(b""), packet(0, PacketError::Empty));
        assert_eq!(decode(b"abc"), packet(0, PacketError::UnknownType(b'a')));
        assert_eq!(decode(b"4a\x1e"), packet(1, PacketError::Empty));
        assert_eq!(decode(b"4a\x1e\x1e4b"), packet(1, PacketError::Empty));
        assert_eq!(decode(b"4\xff"), Err(PayloadError::NotUtf8));
        assert_eq!(
            Payload::parse(b"4hello", 5).map(|_| ()),
            Err(PayloadError::TooLarge { len: 6, max: 5 })
        );
        assert!(Payload::parse(b"4hello", 6).is_ok());
    }

    #[test]
    fn kinds_agree_with_packets() {
        let body = b"0{}\x1e1\x1e2\x1e3\x1e4\x1e5\x1e6\x1ebAA==";
        let payload = Payload::parse(body, 100).unwrap();
        let kinds: Vec<_> = payload.kinds().collect();
        let from_packets: Vec<_> = payload.packets().map(|p| p.kind()).collect();
        assert_eq!(kinds, from_packets);
        assert_eq!(kinds.len(), 8);
    }

    fn packet() -> impl Strategy<Value = Packet<'static>> {
        prop_oneof![
            (0u8..7, "[^\u{1e}]{0,40}")
                .prop_map(|(t, s)| { Packet::text(PacketType::from_digit(b'0' + t).unwrap(), s) }),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| bin(&b)),
        ]
    }

    proptest! {
        #[test]
        fn encode_then_decode_gives_the_same_packets(
            packets in proptest::collection::vec(packet(), 1..12)
        ) {
            let (body, binary) = encoded(&packets);
            prop_assert_eq!(binary, packets.iter().any(|p| matches!(p.data(), Data::Binary(_))));
            prop_assert_eq!(decode(&body).unwrap(), packets);
        }

        #[test]
        fn arbitrary_bodies_never_panic_nor_hold_past_the_bound(
            body in proptest::collection::vec(
                prop_oneof![Just(b'b'), Just(b'4'), Just(0x1e), Just(b'='), any::<u8>()],
                0..256,
            ),
            max in 0usize..300,
        ) {
            match Payload::parse(&body, max) {
                Ok(payload) => {
                    prop_assert!(body.len() <= max);
                    let mut count = 0;
                    for p in payload.packets() {
                        count += 1;
                        if let Data::Binary(Cow::Owned(bytes)) = p.data() {
                            prop_assert!(bytes.capacity() <= body.len());
                        }
                    }
                    prop_assert_eq!(count, body.iter().filter(|&&b| b == SEPARATOR).count() + 1);
                    // What was read is written back byte for byte, unless
                    // binary padding was left out.
                    let packets: Vec<_> = payload.packets().collect();
                    let (again, _) = encoded(&packets);
                    if !body.contains(&b'b') {
                        prop_assert_eq!(again, body);
                    }
                }
                Err(PayloadError::TooLarge { len, max: m }) => {
                    prop_assert_eq!((len, m), (body.len(), max));
                    prop_assert!(len > max);
                }
                Err(_) => {}
            }
        }
    }
}
