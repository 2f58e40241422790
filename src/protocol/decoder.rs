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
use super::deflate::{InflateError, PerMessageDeflate};
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
        if self.frame.is_some() {
            return self.continue_frame(input, 0, deflate);
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
        if header.payload_len > room as u64 {
            return Err(ProtocolError::MessageTooBig {
                limit: self.max_message,
            });
        }
        let len = header.payload_len as usize;
        let whole =
            header.fin && header.opcode != OpCode::Continuation && input.len() - head_len >= len;
        if whole && rsv1 {
            let payload = &mut input[head_len..head_len + len];
            unmask(payload, key, 0);
            let pmd = deflate.expect("RSV1 only with deflate");
            let mut out = std::mem::take(&mut self.assembled);
            let limit = self.max_message;
            pmd.inflate(payload, &mut out, limit)
                .and_then(|()| pmd.finish_inflate(&mut out, limit))
                .map_err(|e| self.inflate_error(e))?;
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
        self.continue_frame(&mut input[head_len..], head_len, deflate)
    }

    fn inflate_error(&self, e: InflateError) -> ProtocolError {
        match e {
            InflateError::TooBig => ProtocolError::MessageTooBig {
                limit: self.max_message,
            },
            InflateError::Corrupt => ProtocolError::BadCompression,
        }
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
    ) -> Result<Step<'b>, ProtocolError> {
        let frame = self.frame.as_mut().expect("a frame in progress");
        let take = usize::try_from(frame.remaining).map_or(input.len(), |r| r.min(input.len()));
        let chunk = &mut input[..take];
        unmask(chunk, frame.key, usize::from(frame.phase));
        frame.phase = ((usize::from(frame.phase) + take) & 3) as u8;
        frame.remaining -= take as u64;
        let (done, fin) = (frame.remaining == 0, frame.fin);
        let text = self.message == Some(OpCode::Text);
        if self.compressed {
            let pmd = deflate
                .as_deref_mut()
                .expect("compressed only with deflate");
            let start = self.assembled.len();
            let limit = self.max_message;
            let mut out = std::mem::take(&mut self.assembled);
            let inflated = pmd.inflate(chunk, &mut out, limit);
            self.assembled = out;
            inflated.map_err(|e| self.inflate_error(e))?;
            if text {
                self.utf8
                    .feed(&self.assembled[start..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        } else {
            if text {
                self.utf8
                    .feed(chunk)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            self.assembled.extend_from_slice(chunk);
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
        let opcode = self.message.take().expect("a message in progress");
        if std::mem::take(&mut self.compressed) {
            let pmd = deflate.expect("compressed only with deflate");
            let start = self.assembled.len();
            let limit = self.max_message;
            let mut out = std::mem::take(&mut self.assembled);
            let inflated = pmd.finish_inflate(&mut out, limit);
            self.assembled = out;
            inflated.map_err(|e| self.inflate_error(e))?;
            if opcode == OpCode::Text {
                self.utf8
                    .feed(&self.assembled[start..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
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
