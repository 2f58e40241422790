//! Fuzz target bodies. The cargo-fuzz targets in `fuzz/` and the corpus
//! replay in `tests/fuzz_replay.rs` both call these, so CI checks every
//! committed seed and regression without libFuzzer. Each function must
//! never panic on any input except to report a broken invariant.

use crate::protocol::accept_key::accept_key;
use crate::protocol::frame::FrameHeader;
use crate::protocol::handshake::{header_buf, parse_request};
use crate::protocol::mask::{unmask, unmask_reference};
use crate::protocol::utf8::Utf8Validator;
use crate::protocol::{Event, ServerConn, State};

/// Splits `data` into read sizes chosen by its first byte, so one input
/// explores both "all in one read" and many boundaries.
fn read_sizes(data: &[u8]) -> (usize, &[u8]) {
    match data.split_first() {
        Some((&b, rest)) => (usize::from(b % 64) + 1, rest),
        None => (1, data),
    }
}

/// The HTTP upgrade parser and validator: never panics; a request that
/// validates yields a 101 with the right accept value and no unoffered
/// subprotocol; a refusal yields a complete HTTP response.
pub fn handshake(data: &[u8]) {
    let supported = ["chat".to_owned(), "v2.stream".to_owned()];
    let mut headers = header_buf();
    match parse_request(data, &mut headers) {
        Ok(None) => {}
        Ok(Some(req)) => {
            assert!(req.head_len <= data.len());
            match req.validate_upgrade() {
                Ok(up) => {
                    let protocol = up.choose_subprotocol(&supported);
                    if let Some(p) = protocol {
                        assert!(req
                            .header_tokens("sec-websocket-protocol")
                            .any(|t| t == p.as_bytes()));
                    }
                    let mut out = Vec::new();
                    up.encode_accept(&mut out, protocol, None);
                    let accept = accept_key(up.key);
                    assert!(out.windows(accept.len()).any(|w| w == accept));
                }
                Err(e) => {
                    let mut out = Vec::new();
                    e.encode_response(&mut out);
                    assert!(out.starts_with(format!("HTTP/1.1 {}", e.status()).as_bytes()));
                }
            }
        }
        Err(e) => {
            let mut out = Vec::new();
            e.encode_response(&mut out);
            assert!(matches!(e.status(), 400 | 431));
        }
    }
}

/// What a connection did with an input: its events (owned), its output
/// bytes and its final state.
type Outcome = (Vec<(u8, Vec<u8>)>, Vec<u8>, State);

fn drive(max_message: usize, data: &[u8], read_size: usize) -> Outcome {
    let mut conn = ServerConn::new(max_message);
    let mut out = Vec::new();
    let mut seen = Vec::new();
    let mut carry: Vec<u8> = Vec::new();
    'reads: for read in data.chunks(read_size.max(1)) {
        carry.extend_from_slice(read);
        let mut buf = std::mem::take(&mut carry);
        let mut pos = 0;
        loop {
            match conn.receive(&mut buf[pos..], &mut out, None) {
                Ok(step) => {
                    pos += step.consumed;
                    match step.event {
                        Some(Event::Message { opcode, payload }) => {
                            seen.push((opcode as u8, payload.to_vec()))
                        }
                        Some(Event::Ping(p)) => seen.push((9, p.to_vec())),
                        Some(Event::Pong(p)) => seen.push((10, p.to_vec())),
                        Some(Event::Close(c)) => seen.push((8, c.reason.as_bytes().to_vec())),
                        None if step.consumed == 0 => break,
                        None => {}
                    }
                }
                Err(e) => {
                    assert_eq!(conn.state(), State::Closed);
                    let close = &out[out.len().saturating_sub(127)..];
                    let code = e.close_code().0.to_be_bytes();
                    assert!(
                        close.windows(2).any(|w| w == code),
                        "close frame carries {e}'s code"
                    );
                    break 'reads;
                }
            }
        }
        carry = buf[pos..].to_vec();
        assert!(
            carry.len() <= 14 + 125,
            "only a partial header or control frame is carried"
        );
    }
    (seen, out, conn.state())
}

/// The frame decoder and close state machine: the same input in one read
/// and split into many must give the same events, output and state.
pub fn frame_decoder(data: &[u8]) {
    let (read_size, data) = read_sizes(data);
    let whole = drive(4096, data, data.len());
    let split = drive(4096, data, read_size);
    assert_eq!(whole, split, "read size {read_size}");
    for chunk in data.chunks(14) {
        if let Ok(Some((header, len))) = FrameHeader::decode(chunk) {
            let mut again = [0u8; 14];
            let n = header.encode(&mut again);
            assert_eq!(FrameHeader::decode(&again[..n]), Ok(Some((header, n))));
            assert!(len <= chunk.len());
        }
    }
}

/// Streaming UTF-8 over arbitrary splits agrees with `std::str::from_utf8`.
pub fn utf8_stream(data: &[u8]) {
    let (piece, data) = read_sizes(data);
    let mut v = Utf8Validator::new();
    let streamed = data.chunks(piece).all(|c| v.feed(c).is_ok()) && v.finish().is_ok();
    assert_eq!(streamed, std::str::from_utf8(data).is_ok());
}

/// Unmasking in arbitrary pieces, phase carried, equals the reference.
pub fn unmask_pieces(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<5>() else {
        return;
    };
    let key = [head[0], head[1], head[2], head[3]];
    let piece = usize::from(head[4]) + 1;
    let mut want = rest.to_vec();
    unmask_reference(&mut want, key, 0);
    let mut got = rest.to_vec();
    let mut offset = 0;
    for chunk in got.chunks_mut(piece) {
        unmask(chunk, key, offset);
        offset += chunk.len();
    }
    assert_eq!(got, want);
}

/// The PROXY protocol parser: never panics; a header that parses reparses
/// identically from its own bytes, and every shorter prefix asks for more.
pub fn proxy_protocol(data: &[u8]) {
    use crate::admission::proxy_protocol::parse;
    if let Ok(Some((header, len))) = parse(data) {
        assert!(len <= data.len());
        assert_eq!(parse(&data[..len]), Ok(Some((header, len))));
        for cut in 0..len {
            assert_eq!(parse(&data[..cut]), Ok(None), "prefix of {cut} bytes");
        }
    }
}
