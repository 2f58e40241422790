//! `ServerConn`: the server side of one WebSocket after the upgrade.
//!
//! Feed it bytes with [`ServerConn::receive`]; it answers pings and closes
//! by writing frames into the `out` buffer the caller provides, and reports
//! what the peer said as [`Event`]s. It owns no socket, clock or thread.

use super::close::{encode_close, CloseCode};
use super::decoder::{Decoder, Event, Step};
use super::deflate::PerMessageDeflate;
use super::error::ProtocolError;
use super::frame::{encode_compressed_frame, encode_frame, OpCode};

thread_local! {
    /// Where a message is compressed before its frame header is known.
    static COMPRESSED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Where the close handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// We sent a close and wait for the peer's; its data is discarded.
    CloseSent,
    /// The close handshake is over (or the peer broke the protocol): the
    /// transport should be closed once `out` is flushed.
    Closed,
}

/// One server-side WebSocket connection, sans I/O.
#[derive(Debug)]
pub struct ServerConn {
    decoder: Decoder,
    state: State,
}

impl ServerConn {
    /// A connection that has just been upgraded.
    pub fn new(max_message: usize) -> Self {
        Self {
            decoder: Decoder::new(max_message),
            state: State::Open,
        }
    }

    /// The close handshake's progress.
    pub fn state(&self) -> State {
        self.state
    }

    /// Bytes held for a message still being received.
    pub fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// Consumes input up to the next event that the application should see,
    /// writing automatic replies (pong, close) to `out`. Call again with the
    /// unconsumed rest until a step consumes nothing and yields no event.
    ///
    /// A protocol violation writes the matching close frame to `out`, moves
    /// to [`State::Closed`] and is returned so the caller can log it.
    /// `deflate` is the connection's permessage-deflate state, if it was
    /// negotiated.
    pub fn receive<'b>(
        &mut self,
        input: &'b mut [u8],
        out: &mut Vec<u8>,
        deflate: Option<&mut PerMessageDeflate>,
    ) -> Result<Step<'b>, ProtocolError> {
        if self.state == State::Closed {
            return Ok(Step {
                consumed: input.len(),
                event: None,
            });
        }
        let mut step = match self.decoder.decode(input, deflate) {
            Ok(step) => step,
            Err(e) => {
                if self.state == State::Open {
                    encode_close(out, Some(e.close_code()), &e.to_string());
                }
                self.state = State::Closed;
                return Err(e);
            }
        };
        match (&step.event, self.state) {
            (Some(Event::Ping(payload)), State::Open) => {
                encode_frame(out, true, OpCode::Pong, payload)
            }
            (Some(Event::Close(close)), State::Open) => {
                // Echo the peer's code (§5.5.1); an empty close gets an empty one.
                encode_close(out, close.code, "");
                self.state = State::Closed;
            }
            (Some(Event::Close(_)), State::CloseSent) => self.state = State::Closed,
            // After our close the peer's data is read only to find its close.
            (Some(_), State::CloseSent) => step.event = None,
            _ => {}
        }
        Ok(step)
    }

    /// Writes a message frame to `out`; false once closing has begun, since
    /// no data may follow a close frame.
    ///
    /// With permessage-deflate, messages at or over its threshold go out
    /// compressed.
    pub fn send(
        &self,
        out: &mut Vec<u8>,
        opcode: OpCode,
        payload: &[u8],
        deflate: Option<&mut PerMessageDeflate>,
    ) -> bool {
        if self.state != State::Open {
            return false;
        }
        match deflate {
            Some(pmd) if pmd.wants(payload.len()) => {
                COMPRESSED.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    scratch.clear();
                    pmd.compress(payload, &mut scratch);
                    encode_compressed_frame(out, opcode, &scratch);
                });
            }
            _ => encode_frame(out, true, opcode, payload),
        }
        true
    }

    /// Starts the close handshake from this side.
    pub fn close(&mut self, out: &mut Vec<u8>, code: CloseCode, reason: &str) {
        if self.state == State::Open {
            encode_close(out, Some(code), reason);
            self.state = State::CloseSent;
        }
    }
}
