//! `ServerConn`: the server side of one WebSocket after the upgrade.
//!
//! Feed it bytes with [`ServerConn::receive`]; it answers pings and closes
//! by writing frames into the `out` buffer the caller provides, and reports
//! what the peer said as [`Event`]s. It owns no socket, clock or thread.

use std::num::NonZeroU32;

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
    /// When the message in progress started, on the caller's clock (see
    /// [`ServerConn::message_stamp`]); fits beside `state` in the slot.
    started: Option<NonZeroU32>,
}

impl ServerConn {
    /// A connection that has just been upgraded.
    pub fn new(max_message: usize) -> Self {
        Self {
            decoder: Decoder::new(max_message),
            state: State::Open,
            started: None,
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

    /// Memory held for a message still being received (its capacity).
    pub fn held(&self) -> usize {
        self.decoder.held()
    }

    /// Whether a message is partly received.
    pub fn is_mid_message(&self) -> bool {
        self.decoder.is_mid_message()
    }

    /// When the message in progress started: `now` (a caller's clock
    /// reading, kept modulo 2^32) the first time this is asked during a
    /// message, that same reading every time after, until the message
    /// completes. `None` between messages. Nothing else moves it: control
    /// frames in between do not.
    pub fn message_stamp(&mut self, now: u64) -> Option<u32> {
        if !self.decoder.is_mid_message() {
            self.started = None;
            return None;
        }
        let stamp = self
            .started
            .get_or_insert(NonZeroU32::new(now as u32).unwrap_or(NonZeroU32::MIN));
        Some(stamp.get())
    }

    /// Messages are checked and dropped, never assembled: for routes that
    /// ignore what clients send. See [`Decoder::discard_data`].
    pub fn discard_data(&mut self) {
        self.decoder.discard_data();
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
        self.receive_within(input, out, deflate, usize::MAX)
    }

    /// [`Self::receive`], with the memory the message in progress may hold
    /// capped at `allowance` bytes (see [`Decoder::decode_within`]): over
    /// it the connection closes with 1013.
    pub fn receive_within<'b>(
        &mut self,
        input: &'b mut [u8],
        out: &mut Vec<u8>,
        deflate: Option<&mut PerMessageDeflate>,
        allowance: usize,
    ) -> Result<Step<'b>, ProtocolError> {
        if self.state == State::Closed {
            return Ok(Step {
                consumed: input.len(),
                event: None,
            });
        }
        let mut step = match self.decoder.decode_within(input, deflate, allowance) {
            Ok(step) => step,
            Err(e) => {
                if self.state == State::Open {
                    encode_close(out, Some(e.close_code()), &e.to_string());
                }
                self.state = State::Closed;
                self.decoder.release();
                return Err(e);
            }
        };
        if matches!(step.event, Some(Event::Message { .. })) {
            self.started = None;
        }
        match (&step.event, self.state) {
            (Some(Event::Ping(payload)), State::Open) => {
                encode_frame(out, true, OpCode::Pong, payload)
            }
            (Some(Event::Close(close)), State::Open) => {
                // Echo the peer's code (§5.5.1); an empty close gets an empty one.
                encode_close(out, close.code, "");
                self.state = State::Closed;
                self.decoder.release();
            }
            (Some(Event::Close(_)), State::CloseSent) => {
                self.state = State::Closed;
                self.decoder.release();
            }
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
            // What the peer still sends is read only to find its close.
            self.decoder.discard_data();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::encode_masked_frame;

    fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_masked_frame(&mut out, fin, opcode, payload, [1, 2, 3, 4]);
        out
    }

    fn receive_all(conn: &mut ServerConn, mut wire: Vec<u8>) {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < wire.len() {
            pos += conn
                .receive(&mut wire[pos..], &mut out, None)
                .unwrap()
                .consumed;
        }
    }

    #[test]
    fn a_message_keeps_its_start_stamp_through_pings_until_it_completes() {
        let mut conn = ServerConn::new(1 << 20);
        assert_eq!(conn.message_stamp(5), None);
        receive_all(&mut conn, frame(false, OpCode::Text, b"part"));
        assert_eq!(conn.message_stamp(10), Some(10));
        receive_all(&mut conn, frame(true, OpCode::Ping, b""));
        receive_all(&mut conn, frame(false, OpCode::Continuation, b"more"));
        assert_eq!(
            conn.message_stamp(99),
            Some(10),
            "pings and data do not move it"
        );
        let mut wire = frame(true, OpCode::Continuation, b"end");
        wire.extend(frame(false, OpCode::Binary, b"next"));
        receive_all(&mut conn, wire);
        assert_eq!(
            conn.message_stamp(120),
            Some(120),
            "the next message has its own"
        );
        receive_all(&mut conn, frame(true, OpCode::Continuation, b""));
        assert_eq!(conn.message_stamp(130), None);
    }

    #[test]
    fn closing_frees_the_message_in_progress_and_stops_assembling() {
        let mut conn = ServerConn::new(1 << 20);
        receive_all(&mut conn, frame(false, OpCode::Binary, &[0; 5000]));
        assert!(conn.held() >= 5000);
        conn.close(&mut Vec::new(), CloseCode::GOING_AWAY, "bye");
        assert_eq!(conn.held(), 0);
        receive_all(&mut conn, frame(false, OpCode::Continuation, &[0; 5000]));
        assert_eq!(
            conn.held(),
            0,
            "after our close the peer's data is only read"
        );
    }
}
