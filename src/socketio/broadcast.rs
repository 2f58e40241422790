//! A Socket.IO room broadcast in the two forms it travels in: the
//! WebSocket frames of its Engine.IO messages (what a shard's hub inbox
//! carries, shared by every member on a WebSocket), and an Engine.IO
//! long-polling payload (the text a bridge carries to other nodes).
//!
//! ```text
//! Packet ─► frames ─► hub inbox ─┬─► WebSocket members: the same bytes
//!                                └─► polling members: messages_in ─► Engine.IO session
//! Packet ─► relay_text ─► Redis ─► other node: frames_from_relay ─► its hub inbox
//! ```

use std::borrow::Cow;

use crate::engineio::payload::Payload;
use crate::engineio::{Data, Packet as EioPacket};
use crate::protocol::frame::{encode_frame, OpCode};

use super::session::messages;
use super::Packet;

/// The WebSocket frames (unmasked, one per Engine.IO message) of `packet`.
pub fn frames(packet: &Packet<'_>) -> Vec<u8> {
    let mut frames = Vec::new();
    messages(packet, |m| push_frame(&mut frames, &m));
    frames
}

fn push_frame(frames: &mut Vec<u8>, message: &Data<'_>) {
    match message {
        Data::Text(text) => {
            let mut payload = Vec::with_capacity(text.len() + 1);
            payload.push(b'4');
            payload.extend_from_slice(text.as_bytes());
            encode_frame(frames, true, OpCode::Text, &payload);
        }
        Data::Binary(bytes) => encode_frame(frames, true, OpCode::Binary, bytes),
    }
}

/// The Engine.IO messages in frames [`frames`] made (or
/// [`frames_from_relay`]), in order. Anything else ends the walk.
pub fn messages_in<'a>(frames: &'a [u8], mut each: impl FnMut(Data<'a>)) {
    let mut at = 0;
    while let Some((opcode, payload, next)) = frame_at(frames, at) {
        at = next;
        match opcode {
            OpCode::Text => match payload.split_first() {
                Some((b'4', text)) => match std::str::from_utf8(text) {
                    Ok(text) => each(Data::Text(Cow::Borrowed(text))),
                    Err(_) => return,
                },
                _ => return,
            },
            _ => each(Data::Binary(Cow::Borrowed(payload))),
        }
    }
}

/// The frame at `at`: its opcode, payload and where the next starts.
fn frame_at(frames: &[u8], at: usize) -> Option<(OpCode, &[u8], usize)> {
    let head = frames.get(at..at + 2)?;
    let opcode = match head[0] & 0x0f {
        1 => OpCode::Text,
        2 => OpCode::Binary,
        _ => return None,
    };
    let (len, header) = match head[1] & 0x7f {
        126 => {
            let b = frames.get(at + 2..at + 4)?;
            (usize::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let b: [u8; 8] = frames.get(at + 2..at + 10)?.try_into().ok()?;
            (usize::try_from(u64::from_be_bytes(b)).ok()?, 10)
        }
        n => (usize::from(n), 2),
    };
    let start = at + header;
    let end = start.checked_add(len)?;
    Some((opcode, frames.get(start..end)?, end))
}

/// The frames as an Engine.IO long-polling payload: text for a bridge.
pub fn relay_text(frames: &[u8]) -> String {
    let mut packets = Vec::new();
    messages_in(frames, |m| packets.push(EioPacket::message(m.into_owned())));
    let mut out = Vec::new();
    crate::engineio::payload::encode(&packets, &mut out);
    String::from_utf8(out).expect("a payload is text")
}

/// The frames of a payload [`relay_text`] made on another node; `None`
/// if it is not one (at most `max` bytes).
pub fn frames_from_relay(text: &[u8], max: usize) -> Option<Vec<u8>> {
    let payload = Payload::parse(text, max).ok()?;
    let mut frames = Vec::new();
    for packet in payload.packets() {
        if packet.kind() != crate::engineio::PacketType::Message {
            return None;
        }
        push_frame(&mut frames, packet.data());
    }
    Some(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collected(frames: &[u8]) -> Vec<Data<'static>> {
        let mut out = Vec::new();
        messages_in(frames, |m| out.push(m.into_owned()));
        out
    }

    #[test]
    fn frames_carry_the_text_then_each_attachment_and_read_back() {
        let big = vec![7u8; 70_000];
        let packet = Packet::event(
            "/chat",
            r#"["m",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            None,
            vec![Cow::Borrowed(&b"\x01\x02"[..]), Cow::Borrowed(&big[..])],
        )
        .unwrap();
        let frames = frames(&packet);
        let got = collected(&frames);
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            Data::Text(Cow::Borrowed(
                r#"52-/chat,["m",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#
            ))
        );
        assert_eq!(got[1], Data::Binary(Cow::Borrowed(&b"\x01\x02"[..])));
        assert_eq!(got[2], Data::Binary(Cow::Borrowed(&big[..])));
        // Across a bridge and back, the same frames.
        let text = relay_text(&frames);
        assert_eq!(frames_from_relay(text.as_bytes(), 1 << 20), Some(frames));
    }

    #[test]
    fn what_is_not_a_broadcast_is_refused() {
        assert_eq!(frames_from_relay(b"2", 100), None); // a ping, not a message
        assert_eq!(frames_from_relay(b"4x\x1ebnot base64!", 100), None);
        assert_eq!(frames_from_relay(b"4x", 1), None); // past the bound
                                                       // A truncated frame ends the walk.
        let frames = frames(&Packet::event("/", r#"["a"]"#, None, vec![]).unwrap());
        assert!(collected(&frames[..frames.len() - 1]).is_empty());
    }
}
