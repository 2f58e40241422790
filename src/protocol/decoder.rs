//! Incremental frame decoder and message assembler.
//!
//! The caller hands in whatever bytes it has read. A message that arrives
//! whole in one frame is unmasked in place and handed back as a slice of the
//! caller's buffer: no copy. Payload of a frame that is split across reads,
//! or of a fragmented message, is unmasked and validated as it arrives and
//! appended to the assembly buffer, so what the caller must keep between
//! reads is never more than a partial header or a partial control frame.

use std::ops::Deref;

use super::close::ClosePayload;
use super::deflate::{grow_within, InflateError, PerMessageDeflate};
use super::error::ProtocolError;
use super::frame::{FrameHeader, HeaderError, OpCode, MAX_CONTROL_PAYLOAD};
use super::mask::unmask;
use super::utf8::Utf8Validator;

/// Payload of a complete message.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload<'b> {
    /// The message came in one frame and lies unmasked in the input buffer.
    Borrowed(&'b [u8]),
    /// The message was assembled from several frames or reads.
    Assembled(Vec<u8>),
}

impl Deref for Payload<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Self::Borrowed(b) => b,
            Self::Assembled(v) => v,
        }
    }
}

/// Something the peer said.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'b> {
    /// A complete text or binary message; text is valid UTF-8.
    Message {
        /// [`OpCode::Text`] or [`OpCode::Binary`].
        opcode: OpCode,
        /// The unmasked payload.
        payload: Payload<'b>,
    },
    /// A ping and its payload.
    Ping(&'b [u8]),
    /// A pong and its payload.
    Pong(&'b [u8]),
    /// A valid close frame.
    Close(ClosePayload<'b>),
}

/// The outcome of one [`Decoder::decode`] call.
#[derive(Debug, PartialEq, Eq)]
pub struct Step<'b> {
    /// Input bytes used up; the rest must be offered again with more data.
    pub consumed: usize,
    /// The event completed by those bytes, if any.
    pub event: Option<Event<'b>>,
}

impl Step<'_> {
    const WAIT: Self = Self {
        consumed: 0,
        event: None,
    };
}

/// The RSV1 bit as `FrameHeader::rsv` holds it: "compressed" under
/// permessage-deflate.
const RSV1: u8 = 0b100;

/// A data frame whose payload is still arriving.
#[derive(Debug, Clone, Copy)]
struct PartialFrame {
    remaining: u64,
    key: [u8; 4],
    /// Offset of the next payload byte within the mask key.
    phase: u8,
    fin: bool,
}

/// Decodes client frames and assembles messages.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    frame: Option<PartialFrame>,
    /// Opcode of the message being assembled, if one is in progress.
    message: Option<OpCode>,
    /// The message in progress is compressed (RSV1 on its first frame).
    compressed: bool,
    assembled: Vec<u8>,
    utf8: Utf8Validator,
    /// Data payloads are validated and dropped, never assembled.
    discard: bool,
}

impl Decoder {
    /// A decoder that refuses messages over `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            frame: None,
            message: None,
            compressed: false,
            assembled: Vec::new(),
            utf8: Utf8Validator::new(),
            discard: false,
        }
    }

    /// From now on data payloads are checked (framing, UTF-8, compression)
    /// and dropped instead of assembled, for peers whose messages are
    /// ignored: a message then holds no memory, whatever its size, and is
    /// reported with an empty payload.
    pub fn discard_data(&mut self) {
        self.discard = true;
        self.release();
    }

    /// Memory held for the message in progress: the assembly buffer's
    /// capacity, which is what the allowance bounds.
    pub fn held(&self) -> usize {
        self.assembled.capacity()
    }

    /// Frees the assembly buffer; for a connection that will read no more
    /// messages, or only to discard them.
    pub fn release(&mut self) {
        self.assembled = Vec::new();
    }

    /// The most the message in progress may hold.
    fn cap(&self, allowance: usize) -> usize {
        self.max_message.min(allowance)
    }

    /// The error for a message that needs more than [`Self::cap`]: which
    /// of the two limits is the lower one.
    fn over_cap(&self, allowance: usize) -> ProtocolError {
        if allowance < self.max_message {
            ProtocolError::BudgetExhausted
        } else {
            ProtocolError::MessageTooBig {
                limit: self.max_message,
            }
        }
    }

    /// Whether a message is partly received; its bytes are held here.
    pub fn is_mid_message(&self) -> bool {
        self.message.is_some()
    }

    /// Bytes held for a message in progress.
    pub fn buffered(&self) -> usize {
        self.assembled.len()
    }

    /// Consumes input up to the next event. Call again with the unconsumed
    /// rest until a step consumes nothing and yields no event: then more
    /// input is needed.
    ///
    /// `deflate` is the connection's permessage-deflate state when the
    /// extension was negotiated: only then may a message's first frame set
    /// RSV1, and such a message is inflated as it arrives.
    pub fn decode<'b>(
        &mut self,
        input: &'b mut [u8],
        deflate: Option<&mut PerMessageDeflate>,
    ) -> Result<Step<'b>, ProtocolError> {
        self.decode_within(input, deflate, usize::MAX)
    }

    /// [`Self::decode`], with the memory the message in progress may hold
    /// capped at `allowance` bytes as well as the message limit: what a
    /// budget shared with other connections has left for this one. A
    /// message that needs more fails with
    /// [`ProtocolError::BudgetExhausted`] as it grows, before the memory
    /// is taken, however far a compressed piece would inflate.
    pub fn decode_within<'b>(
        &mut self,
        input: &'b mut [u8],
        deflate: Option<&mut PerMessageDeflate>,
        allowance: usize,
    ) -> Result<Step<'b>, ProtocolError> {
        if self.frame.is_some() {
            return self.continue_frame(input, 0, deflate, allowance);
        }
        let (header, head_len) = match FrameHeader::decode(input) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(Step::WAIT),
            Err(HeaderError::ReservedOpcode(op)) => return Err(ProtocolError::ReservedOpcode(op)),
            Err(HeaderError::LengthOverflow) => return Err(ProtocolError::LengthOverflow),
        };
        let rsv1 = header.rsv == RSV1;
        let rsv1_allowed =
            deflate.is_some() && matches!(header.opcode, OpCode::Text | OpCode::Binary);
        if header.rsv != 0 && !(rsv1 && rsv1_allowed) {
            return Err(ProtocolError::ReservedBits);
        }
        let key = header.mask.ok_or(ProtocolError::UnmaskedFrame)?;
        if header.opcode.is_control() {
            return Self::decode_control(input, header, head_len, key);
        }
        match (header.opcode, self.message) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            _ => {}
        }
        let room = self.max_message - self.assembled.len();
        if header.payload_len > room as u64 && !self.discard {
            return Err(ProtocolError::MessageTooBig {
                limit: self.max_message,
            });
        }
        let len = header.payload_len as usize;
        let whole =
            header.fin && header.opcode != OpCode::Continuation && input.len() - head_len >= len;
        if whole && rsv1 && self.discard {
            let payload = &mut input[head_len..head_len + len];
            unmask(payload, key, 0);
            let pmd = deflate.expect("RSV1 only with deflate");
            self.message = Some(header.opcode);
            self.inflate_discarding(pmd, payload, true)?;
            self.message = None;
            return Ok(Step {
                consumed: head_len + len,
                event: Some(Event::Message {
                    opcode: header.opcode,
                    payload: Payload::Assembled(Vec::new()),
                }),
            });
        }
        if whole && rsv1 {
            let payload = &mut input[head_len..head_len + len];
            unmask(payload, key, 0);
            let pmd = deflate.expect("RSV1 only with deflate");
            let mut out = std::mem::take(&mut self.assembled);
            let limit = self.cap(allowance);
            let inflated = pmd
                .inflate(payload, &mut out, limit)
                .and_then(|()| pmd.finish_inflate(&mut out, limit));
            // The fault that comes first in the message is the one named,
            // however the reads split it: text already inflated is checked
            // before a limit passed or corruption met after it.
            let text = header.opcode == OpCode::Text;
            if inflated.is_err() && text && Utf8Validator::new().feed(&out).is_err() {
                return Err(ProtocolError::InvalidUtf8);
            }
            if let Err(e) = inflated {
                // Give the memory back now, not when the connection goes.
                drop(out);
                return Err(self.inflate_error(e, allowance));
            }
            if header.opcode == OpCode::Text && simdutf8::basic::from_utf8(&out).is_err() {
                return Err(ProtocolError::InvalidUtf8);
            }
            return Ok(Step {
                consumed: head_len + len,
                event: Some(Event::Message {
                    opcode: header.opcode,
                    payload: Payload::Assembled(out),
                }),
            });
        }
        if whole {
            let payload = &mut input[head_len..head_len + len];
            unmask(payload, key, 0);
            if header.opcode == OpCode::Text && simdutf8::basic::from_utf8(payload).is_err() {
                return Err(ProtocolError::InvalidUtf8);
            }
            // Discarded like a message in pieces, whatever the read held.
            let payload: &[u8] = if self.discard { &[] } else { payload };
            return Ok(Step {
                consumed: head_len + len,
                event: Some(Event::Message {
                    opcode: header.opcode,
                    payload: Payload::Borrowed(payload),
                }),
            });
        }
        if header.opcode != OpCode::Continuation {
            self.message = Some(header.opcode);
            self.compressed = rsv1;
        }
        self.frame = Some(PartialFrame {
            remaining: header.payload_len,
            key,
            phase: 0,
            fin: header.fin,
        });
        self.continue_frame(&mut input[head_len..], head_len, deflate, allowance)
    }

    fn inflate_error(&self, e: InflateError, allowance: usize) -> ProtocolError {
        match e {
            InflateError::TooBig => self.over_cap(allowance),
            InflateError::Corrupt => ProtocolError::BadCompression,
        }
    }

    /// Inflates a piece of the compressed message in progress, checking
    /// its UTF-8 as it goes and keeping nothing; `last` ends the message.
    fn inflate_discarding(
        &mut self,
        pmd: &mut PerMessageDeflate,
        chunk: &[u8],
        last: bool,
    ) -> Result<(), ProtocolError> {
        let text = self.message == Some(OpCode::Text);
        let mut valid = true;
        let utf8 = &mut self.utf8;
        let mut check = |piece: &[u8]| {
            if text && valid {
                valid = utf8.feed(piece).is_ok();
            }
        };
        let mut scratch = Vec::new();
        let mut inflated = pmd.inflate_discarding(chunk, &mut scratch, &mut check);
        if last {
            inflated =
                inflated.and_then(|()| pmd.finish_inflate_discarding(&mut scratch, &mut check));
        }
        // Nothing is kept: only the message limit can be passed, and it is not.
        inflated.map_err(|e| self.inflate_error(e, usize::MAX))?;
        if !valid {
            return Err(ProtocolError::InvalidUtf8);
        }
        if last && text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Ok(())
    }

    fn decode_control<'b>(
        input: &'b mut [u8],
        header: FrameHeader,
        head_len: usize,
        key: [u8; 4],
    ) -> Result<Step<'b>, ProtocolError> {
        if !header.fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }
        if header.payload_len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(ProtocolError::ControlFrameTooLong);
        }
        let end = head_len + header.payload_len as usize;
        if input.len() < end {
            // At most 139 bytes: cheaper to wait for all of it than to stream.
            return Ok(Step::WAIT);
        }
        let payload = &mut input[head_len..end];
        unmask(payload, key, 0);
        let payload: &'b [u8] = payload;
        let event = match header.opcode {
            OpCode::Ping => Event::Ping(payload),
            OpCode::Pong => Event::Pong(payload),
            _ => Event::Close(ClosePayload::parse(payload)?),
        };
        Ok(Step {
            consumed: end,
            event: Some(event),
        })
    }

    /// Takes payload bytes of the frame in progress from `input`;
    /// `already` counts header bytes consumed by the caller in this step.
    fn continue_frame<'b>(
        &mut self,
        input: &'b mut [u8],
        already: usize,
        mut deflate: Option<&mut PerMessageDeflate>,
        allowance: usize,
    ) -> Result<Step<'b>, ProtocolError> {
        let frame = self.frame.as_mut().expect("a frame in progress");
        let take = usize::try_from(frame.remaining).map_or(input.len(), |r| r.min(input.len()));
        let chunk = &mut input[..take];
        unmask(chunk, frame.key, usize::from(frame.phase));
        frame.phase = ((usize::from(frame.phase) + take) & 3) as u8;
        frame.remaining -= take as u64;
        let (done, fin) = (frame.remaining == 0, frame.fin);
        let text = self.message == Some(OpCode::Text);
        if self.compressed && self.discard {
            let pmd = deflate
                .as_deref_mut()
                .expect("compressed only with deflate");
            self.inflate_discarding(pmd, chunk, false)?;
        } else if self.compressed {
            let pmd = deflate
                .as_deref_mut()
                .expect("compressed only with deflate");
            let start = self.assembled.len();
            let limit = self.cap(allowance);
            let mut out = std::mem::take(&mut self.assembled);
            let inflated = pmd.inflate(chunk, &mut out, limit);
            self.assembled = out;
            // Text inflated before a failure is checked first, as above.
            if text {
                self.utf8
                    .feed(&self.assembled[start..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            inflated.map_err(|e| self.inflate_error(e, allowance))?;
        } else {
            if text {
                self.utf8
                    .feed(chunk)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            if !self.discard {
                let cap = self.cap(allowance);
                if !grow_within(&mut self.assembled, chunk.len(), cap) {
                    return Err(self.over_cap(allowance));
                }
                self.assembled.extend_from_slice(chunk);
            }
        }
        let consumed = already + take;
        if !done {
            return Ok(Step {
                consumed,
                event: None,
            });
        }
        self.frame = None;
        if !fin {
            return Ok(Step {
                consumed,
                event: None,
            });
        }
        let compressed = std::mem::take(&mut self.compressed);
        if compressed && self.discard {
            let pmd = deflate.expect("compressed only with deflate");
            self.inflate_discarding(pmd, &[], true)?;
            let opcode = self.message.take().expect("a message in progress");
            return Ok(Step {
                consumed,
                event: Some(Event::Message {
                    opcode,
                    payload: Payload::Assembled(Vec::new()),
                }),
            });
        }
        let opcode = self.message.take().expect("a message in progress");
        if compressed {
            let pmd = deflate.expect("compressed only with deflate");
            let start = self.assembled.len();
            let limit = self.cap(allowance);
            let mut out = std::mem::take(&mut self.assembled);
            let inflated = pmd.finish_inflate(&mut out, limit);
            self.assembled = out;
            if opcode == OpCode::Text {
                self.utf8
                    .feed(&self.assembled[start..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            inflated.map_err(|e| self.inflate_error(e, allowance))?;
        }
        if opcode == OpCode::Text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        Ok(Step {
            consumed,
            event: Some(Event::Message {
                opcode,
                payload: Payload::Assembled(std::mem::take(&mut self.assembled)),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::deflate::{negotiate, DeflatePolicy};
    use crate::protocol::frame::encode_masked_frame;

    const KEY: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];

    fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_masked_frame(&mut out, fin, opcode, payload, KEY);
        out
    }

    /// A compressed frame: RSV1 on a data frame's first byte.
    fn compressed(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = frame(fin, opcode, payload);
        if opcode != OpCode::Continuation {
            out[0] |= 0x40;
        }
        out
    }

    fn deflate() -> PerMessageDeflate {
        let params = negotiate(
            [&b"permessage-deflate"[..]],
            DeflatePolicy::NoContextTakeover,
        );
        PerMessageDeflate::new(params.unwrap(), 0)
    }

    fn deflated(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        deflate().compress(message, &mut out);
        out
    }

    /// Feeds `wire` in `read`-byte pieces with `allowance`; the outcome,
    /// the messages seen and the most memory `held` ever reported.
    fn feed(
        decoder: &mut Decoder,
        mut pmd: Option<&mut PerMessageDeflate>,
        wire: &[u8],
        read: usize,
        allowance: usize,
    ) -> (Result<(), ProtocolError>, Vec<Vec<u8>>, usize) {
        let (mut seen, mut most) = (Vec::new(), 0);
        let mut carry = Vec::new();
        for piece in wire.chunks(read) {
            carry.extend_from_slice(piece);
            let mut pos = 0;
            loop {
                let step =
                    match decoder.decode_within(&mut carry[pos..], pmd.as_deref_mut(), allowance) {
                        Ok(step) => step,
                        Err(e) => return (Err(e), seen, most.max(decoder.held())),
                    };
                most = most.max(decoder.held());
                pos += step.consumed;
                match step.event {
                    Some(Event::Message { payload, .. }) => seen.push(payload.to_vec()),
                    Some(_) => {}
                    None if step.consumed == 0 => break,
                    None => {}
                }
            }
            carry.drain(..pos);
        }
        (Ok(()), seen, most)
    }

    fn fragmented(pieces: usize, size: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        for i in 0..pieces {
            let op = if i == 0 {
                OpCode::Binary
            } else {
                OpCode::Continuation
            };
            wire.extend(frame(i + 1 == pieces, op, &vec![7; size]));
        }
        wire
    }

    #[test]
    fn the_allowance_bounds_what_a_fragmented_message_holds() {
        let wire = fragmented(10, 1000);
        let mut decoder = Decoder::new(1 << 20);
        let (result, seen, most) = feed(&mut decoder, None, &wire, 300, 4096);
        assert_eq!(result, Err(ProtocolError::BudgetExhausted));
        assert!(seen.is_empty());
        assert!(
            most <= 4096,
            "held {most} bytes under a 4096-byte allowance"
        );
        assert_eq!(ProtocolError::BudgetExhausted.close_code().0, 1013);

        let mut decoder = Decoder::new(1 << 20);
        let (result, seen, most) = feed(&mut decoder, None, &wire, 300, 10_000);
        assert_eq!(result, Ok(()));
        assert_eq!(seen, [vec![7; 10_000]]);
        assert!(most <= 10_000, "capacity {most} grew past the allowance");
        assert_eq!(decoder.held(), 0, "a completed message leaves nothing held");
    }

    #[test]
    fn the_lower_of_the_two_limits_names_the_error() {
        let wire = fragmented(10, 1000);
        let mut decoder = Decoder::new(5000);
        let (result, _, _) = feed(&mut decoder, None, &wire, 300, 8000);
        assert_eq!(result, Err(ProtocolError::MessageTooBig { limit: 5000 }));
        let mut decoder = Decoder::new(8000);
        let (result, _, _) = feed(&mut decoder, None, &wire, 300, 5000);
        assert_eq!(result, Err(ProtocolError::BudgetExhausted));
    }

    #[test]
    fn a_compression_bomb_stops_at_the_allowance_while_inflating() {
        // 8 MiB of zeros deflate to about 8 KiB: one read inflates 1000-fold.
        let bomb = deflated(&vec![0; 8 << 20]);
        assert!(bomb.len() < 16 << 10);
        for wire in [
            compressed(true, OpCode::Binary, &bomb),
            [
                compressed(false, OpCode::Binary, &bomb[..bomb.len() / 2]),
                compressed(true, OpCode::Continuation, &bomb[bomb.len() / 2..]),
            ]
            .concat(),
        ] {
            let mut pmd = deflate();
            let mut decoder = Decoder::new(16 << 20);
            let (result, _, most) =
                feed(&mut decoder, Some(&mut pmd), &wire, wire.len(), 256 << 10);
            assert_eq!(result, Err(ProtocolError::BudgetExhausted));
            assert!(most <= (256 << 10) + 1, "held {most} bytes");
        }
    }

    #[test]
    fn text_invalid_before_the_limit_is_named_so_however_it_is_read() {
        // Invalid UTF-8 early, then far more than the message limit.
        let text = deflated(&[&b"ok \xff"[..], &[b'a'; 8192]].concat());
        let wire = compressed(true, OpCode::Text, &text);
        for read in [wire.len(), 3] {
            let mut pmd = deflate();
            let mut decoder = Decoder::new(1024);
            let (result, _, _) = feed(&mut decoder, Some(&mut pmd), &wire, read, usize::MAX);
            assert_eq!(result, Err(ProtocolError::InvalidUtf8), "reads of {read}");
        }
    }

    #[test]
    fn discarding_holds_nothing_and_still_checks_the_message() {
        let mut decoder = Decoder::new(1024);
        decoder.discard_data();
        // Over the message limit, in pieces: nothing is kept, so nothing fails.
        let wire = fragmented(64, 16 << 10);
        let (result, seen, most) = feed(&mut decoder, None, &wire, 5000, 0);
        assert_eq!(result, Ok(()));
        assert_eq!(seen, [Vec::<u8>::new()]);
        assert_eq!(most, 0);

        // Whole in one read, it is reported as in pieces: without its data.
        let wire = frame(true, OpCode::Binary, b"ignored");
        let (result, seen, most) = feed(&mut decoder, None, &wire, wire.len(), 0);
        assert_eq!((result, seen, most), (Ok(()), vec![Vec::new()], 0));

        let mut bad = frame(false, OpCode::Text, b"ok so far ");
        bad.extend(frame(true, OpCode::Continuation, b"\xff"));
        let (result, _, _) = feed(&mut decoder, None, &bad, 7, 0);
        assert_eq!(result, Err(ProtocolError::InvalidUtf8));

        let mut pmd = deflate();
        let mut decoder = Decoder::new(1024);
        decoder.discard_data();
        let text = deflated(&b"price ".repeat(1 << 16));
        let wire = compressed(true, OpCode::Text, &text);
        let (result, seen, most) = feed(&mut decoder, Some(&mut pmd), &wire, 100, 0);
        assert_eq!((result, seen.len(), most), (Ok(()), 1, 0));
        let bad = deflated(&[b"price ".repeat(1 << 14), vec![0xC0, 0x20]].concat());
        let wire = compressed(true, OpCode::Text, &bad);
        let (result, _, _) = feed(&mut decoder, Some(&mut pmd), &wire, wire.len(), 0);
        assert_eq!(result, Err(ProtocolError::InvalidUtf8));
    }
}
