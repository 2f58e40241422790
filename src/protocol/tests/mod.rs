//! Byte-exact scenarios for `ServerConn`, fed the way a shard feeds it:
//! whatever one read brought, with unconsumed bytes carried to the next.

use proptest::prelude::*;

use super::close::CloseCode;
use super::connection::{ServerConn, State};
use super::decoder::Event;
use super::error::ProtocolError;
use super::frame::{encode_masked_frame, FrameHeader, OpCode};

/// What the application saw, owned so it outlives the input buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Message(OpCode, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

struct Run {
    seen: Vec<Seen>,
    out: Vec<u8>,
    error: Option<ProtocolError>,
    state: State,
}

/// Feeds `reads` one after another, keeping leftovers like a shard does.
fn drive(max_message: usize, reads: &[&[u8]]) -> Run {
    let mut conn = ServerConn::new(max_message);
    let mut carry = Vec::new();
    let mut run = Run {
        seen: Vec::new(),
        out: Vec::new(),
        error: None,
        state: State::Open,
    };
    'reads: for read in reads {
        carry.extend_from_slice(read);
        let mut buf = std::mem::take(&mut carry);
        let mut pos = 0;
        loop {
            match conn.receive(&mut buf[pos..], &mut run.out, None) {
                Ok(step) => {
                    pos += step.consumed;
                    match step.event {
                        Some(ev) => run.seen.push(match ev {
                            Event::Message { opcode, payload } => {
                                Seen::Message(opcode, payload.to_vec())
                            }
                            Event::Ping(p) => Seen::Ping(p.to_vec()),
                            Event::Pong(p) => Seen::Pong(p.to_vec()),
                            Event::Close(c) => {
                                Seen::Close(c.code.map(|c| c.0), c.reason.to_owned())
                            }
                        }),
                        None if step.consumed == 0 => break,
                        None => {}
                    }
                }
                Err(e) => {
                    run.error = Some(e);
                    break 'reads;
                }
            }
        }
        carry = buf[pos..].to_vec();
    }
    run.state = conn.state();
    run
}

fn frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_masked_frame(&mut out, fin, opcode, payload, [0xA1, 0x07, 0x5C, 0xE3]);
    out
}

fn raw_frame(first: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first, (u8::from(masked) << 7) | payload.len() as u8];
    if masked {
        out.extend_from_slice(&[0, 0, 0, 0]);
    }
    out.extend_from_slice(payload);
    out
}

/// The first server frame in `out`: (opcode bits, payload).
fn server_frame(out: &[u8]) -> (OpCode, Vec<u8>) {
    let (h, n) = FrameHeader::decode(out).unwrap().expect("a whole frame");
    assert!(h.mask.is_none(), "server frames are never masked");
    (h.opcode, out[n..n + h.payload_len as usize].to_vec())
}

fn close_code_sent(out: &[u8]) -> u16 {
    let (op, payload) = server_frame(out);
    assert_eq!(op, OpCode::Close);
    u16::from_be_bytes([payload[0], payload[1]])
}

#[test]
fn whole_messages_are_borrowed_and_echo_ready() {
    let mut wire = frame(true, OpCode::Text, b"Hello");
    wire.extend(frame(true, OpCode::Binary, &[0, 1, 2, 255]));
    let run = drive(1 << 20, &[&wire]);
    assert_eq!(
        run.seen,
        [
            Seen::Message(OpCode::Text, b"Hello".to_vec()),
            Seen::Message(OpCode::Binary, vec![0, 1, 2, 255])
        ]
    );
    assert!(run.out.is_empty());
}

#[test]
fn fragmented_message_with_interleaved_ping() {
    let mut wire = frame(false, OpCode::Text, b"Hel");
    wire.extend(frame(true, OpCode::Ping, b"are you there"));
    wire.extend(frame(false, OpCode::Continuation, b"lo, "));
    wire.extend(frame(true, OpCode::Continuation, "κόσμε".as_bytes()));
    let run = drive(1 << 20, &[&wire]);
    assert_eq!(
        run.seen,
        [
            Seen::Ping(b"are you there".to_vec()),
            Seen::Message(OpCode::Text, "Hello, κόσμε".as_bytes().to_vec())
        ]
    );
    assert_eq!(
        server_frame(&run.out),
        (OpCode::Pong, b"are you there".to_vec())
    );
}

#[test]
fn every_split_point_gives_the_same_events() {
    let mut wire = frame(false, OpCode::Text, "κό".as_bytes());
    wire.extend(frame(true, OpCode::Pong, b"p"));
    wire.extend(frame(true, OpCode::Continuation, "σμε".as_bytes()));
    wire.extend(frame(true, OpCode::Binary, &vec![7u8; 300]));
    wire.extend(frame(true, OpCode::Close, b"\x03\xe8done"));
    let whole = drive(1 << 20, &[&wire]);
    assert_eq!(whole.seen.len(), 4);
    for a in 0..wire.len() {
        let run = drive(1 << 20, &[&wire[..a], &wire[a..]]);
        assert_eq!(run.seen, whole.seen, "split at {a}");
        assert_eq!(run.out, whole.out, "split at {a}");
    }
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(drive(1 << 20, &bytes).seen, whole.seen);
}

#[test]
fn close_is_echoed_and_data_after_it_is_discarded() {
    let mut wire = frame(true, OpCode::Close, b"\x0f\xa0bye");
    wire.extend(frame(true, OpCode::Text, b"late"));
    let run = drive(1 << 20, &[&wire]);
    assert_eq!(run.seen, [Seen::Close(Some(4000), "bye".into())]);
    assert_eq!(close_code_sent(&run.out), 4000);
    assert_eq!(run.state, State::Closed);

    let empty = drive(1 << 20, &[&frame(true, OpCode::Close, b"")]);
    assert_eq!(server_frame(&empty.out), (OpCode::Close, vec![]));
}

#[test]
fn server_initiated_close_waits_for_the_peer_and_drops_its_data() {
    let mut conn = ServerConn::new(1024);
    let mut out = Vec::new();
    conn.close(&mut out, CloseCode::GOING_AWAY, "restart");
    assert_eq!(close_code_sent(&out), 1001);
    assert!(!conn.send(&mut out, OpCode::Text, b"no", None));
    let mut wire = frame(true, OpCode::Text, b"ignored");
    wire.extend(frame(true, OpCode::Close, b"\x03\xe9"));
    let mut out2 = Vec::new();
    let step = conn.receive(&mut wire, &mut out2, None).unwrap();
    assert_eq!(step.event, None);
    let n = step.consumed;
    let step = conn.receive(&mut wire[n..], &mut out2, None).unwrap();
    assert!(matches!(step.event, Some(Event::Close(_))));
    assert_eq!(conn.state(), State::Closed);
    assert!(out2.is_empty(), "no second close is sent");
}

#[test]
fn violations_close_with_the_right_code() {
    let big_control = frame(true, OpCode::Ping, &[0u8; 126]);
    let mut two_starts = frame(false, OpCode::Text, b"a");
    two_starts.extend(frame(true, OpCode::Text, b"b"));
    let cases: Vec<(Vec<u8>, ProtocolError, u16)> = vec![
        (
            raw_frame(0x81 | 0x40, true, b""),
            ProtocolError::ReservedBits,
            1002,
        ),
        (
            raw_frame(0x83, true, b""),
            ProtocolError::ReservedOpcode(3),
            1002,
        ),
        (
            raw_frame(0x8B, true, b""),
            ProtocolError::ReservedOpcode(0xB),
            1002,
        ),
        (
            raw_frame(0x81, false, b"x"),
            ProtocolError::UnmaskedFrame,
            1002,
        ),
        (
            raw_frame(0x09, true, b""),
            ProtocolError::FragmentedControlFrame,
            1002,
        ),
        (big_control, ProtocolError::ControlFrameTooLong, 1002),
        (
            frame(true, OpCode::Continuation, b"x"),
            ProtocolError::UnexpectedContinuation,
            1002,
        ),
        (two_starts, ProtocolError::ExpectedContinuation, 1002),
        (
            frame(true, OpCode::Close, b"\x03"),
            ProtocolError::TruncatedCloseCode,
            1002,
        ),
        (
            frame(true, OpCode::Close, b"\x03\xed"),
            ProtocolError::InvalidCloseCode(1005),
            1002,
        ),
        (
            frame(true, OpCode::Close, b"\x03\xe8\xff"),
            ProtocolError::InvalidUtf8,
            1007,
        ),
        (
            frame(true, OpCode::Text, b"\xff"),
            ProtocolError::InvalidUtf8,
            1007,
        ),
        (
            vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0],
            ProtocolError::LengthOverflow,
            1002,
        ),
    ];
    for (wire, error, code) in cases {
        let run = drive(1 << 20, &[&wire]);
        assert_eq!(run.error, Some(error), "{wire:02x?}");
        assert_eq!(close_code_sent(&run.out), code, "{wire:02x?}");
        assert_eq!(run.state, State::Closed);
    }
}

#[test]
fn oversized_messages_fail_on_the_header_alone() {
    // Only the header of a 1 GiB frame arrives: 1009 at once, nothing allocated.
    let header = [0x82, 0xFF, 0, 0, 0, 0, 0x40, 0, 0, 0, 1, 2, 3, 4];
    let run = drive(1024, &[&header]);
    assert_eq!(
        run.error,
        Some(ProtocolError::MessageTooBig { limit: 1024 })
    );
    assert_eq!(close_code_sent(&run.out), 1009);

    // Fragments that add up past the limit fail at the fragment that crosses it.
    let mut wire = frame(false, OpCode::Binary, &[0; 600]);
    wire.extend(frame(true, OpCode::Continuation, &[0; 600]));
    let run = drive(1024, &[&wire]);
    assert_eq!(
        run.error,
        Some(ProtocolError::MessageTooBig { limit: 1024 })
    );
    assert_eq!(drive(1200, &[&wire]).seen.len(), 1);
}

#[test]
fn invalid_utf8_fails_before_the_frame_ends() {
    // Autobahn 6.4.x: the bad bytes arrive first, the rest of the frame later.
    let wire = frame(
        true,
        OpCode::Text,
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64",
    );
    let run = drive(1 << 20, &[&wire[..6 + 13]]);
    assert_eq!(run.error, Some(ProtocolError::InvalidUtf8));
    assert_eq!(close_code_sent(&run.out), 1007);
}

proptest! {
    #[test]
    fn arbitrary_fragmentation_reassembles(
        payload in proptest::collection::vec(any::<u8>(), 0..2000),
        cuts in proptest::collection::vec(0usize..2000, 0..6),
        read_size in 1usize..300,
    ) {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(payload.len())).collect();
        cuts.sort_unstable();
        let mut bounds = vec![0];
        bounds.extend(cuts);
        bounds.push(payload.len());
        let pieces: Vec<&[u8]> = bounds.windows(2).map(|w| &payload[w[0]..w[1]]).collect();
        let mut wire = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let op = if i == 0 { OpCode::Binary } else { OpCode::Continuation };
            wire.extend(frame(i + 1 == pieces.len(), op, piece));
        }
        let reads: Vec<&[u8]> = wire.chunks(read_size).collect();
        let run = drive(1 << 20, &reads);
        prop_assert_eq!(run.error, None);
        prop_assert_eq!(run.seen, vec![Seen::Message(OpCode::Binary, payload)]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), read_size in 1usize..64) {
        let reads: Vec<&[u8]> = bytes.chunks(read_size).collect();
        let run = drive(256, &reads);
        if run.error.is_some() {
            prop_assert_eq!(run.state, State::Closed);
        }
    }
}
