//! Fuzz target bodies. The cargo-fuzz targets in `fuzz/` and the corpus
//! replay in `tests/fuzz_replay.rs` both call these, so CI checks every
//! committed seed and regression without libFuzzer. Each function must
//! never panic on any input except to report a broken invariant.

use crate::protocol::accept_key::accept_key;
use crate::protocol::deflate::{negotiate, DeflatePolicy, PerMessageDeflate};
use crate::protocol::frame::FrameHeader;
use crate::protocol::handshake::{header_buf, parse_request};
use crate::protocol::mask::{unmask, unmask_reference};
use crate::protocol::utf8::Utf8Validator;
use crate::protocol::{Event, Payload, ProtocolError, ServerConn, State};

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

/// How `frame_decoder_limits` sets up a connection, from an input's
/// first bytes.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_message: usize,
    allowance: usize,
    /// permessage-deflate negotiated, with this policy.
    deflate: Option<DeflatePolicy>,
    discard: bool,
}

impl Limits {
    /// Byte 0: read size; byte 1: flags (bit 0 deflate, bit 1 context
    /// takeover, bit 2 discarding, bits 4-5 the message limit, 1 to 8
    /// KiB); bytes 2-3: the allowance, little-endian, in bytes.
    fn from_input(data: &[u8]) -> Option<(Self, usize, &[u8])> {
        let (&[size, flags, lo, hi], rest) = data.split_first_chunk::<4>()?;
        let deflate = (flags & 1 != 0).then_some(if flags & 2 != 0 {
            DeflatePolicy::On
        } else {
            DeflatePolicy::NoContextTakeover
        });
        let limits = Self {
            max_message: 1024 << ((flags >> 4) & 3),
            allowance: usize::from(u16::from_le_bytes([lo, hi])),
            deflate,
            discard: flags & 4 != 0,
        };
        Some((limits, usize::from(size % 64) + 1, rest))
    }

    /// The most memory a message may hold: the lower limit, plus the one
    /// byte past it that inflating may reserve to detect the overrun.
    fn most_held(self) -> usize {
        self.max_message.min(self.allowance) + 1
    }
}

/// Everything a connection did with an input under [`Limits`].
#[derive(Debug)]
struct Run {
    events: Vec<(u8, Vec<u8>)>,
    /// Output before the close frame a violation wrote, if one did.
    out: Vec<u8>,
    state: State,
    error: Option<ProtocolError>,
}

/// Runs agree when they saw the same events, wrote the same output and
/// ended the same way with the same close code. A compressed text message
/// that is both corrupt and invalid UTF-8 may be reported as either
/// (both 1007), depending on how much was inflated before the UTF-8 check.
impl PartialEq for Run {
    fn eq(&self, other: &Self) -> bool {
        let code = |r: &Self| r.error.map(|e| e.close_code().0);
        (&self.events, &self.out, self.state, code(self))
            == (&other.events, &other.out, other.state, code(other))
    }
}

impl Run {
    /// The same run with data payloads left out, as a discarding
    /// connection reports them.
    fn without_data(mut self) -> Self {
        for (opcode, payload) in &mut self.events {
            if matches!(*opcode, 1 | 2) {
                payload.clear();
            }
        }
        self
    }

    /// Ended on the allowance: a run that can differ by read size, since
    /// a message whole in one read is borrowed from it and holds nothing.
    fn budget_spent(&self) -> bool {
        self.error == Some(ProtocolError::BudgetExhausted)
    }
}

fn negotiated(policy: DeflatePolicy) -> PerMessageDeflate {
    let params = negotiate([&b"permessage-deflate"[..]], policy).expect("a plain offer is taken");
    PerMessageDeflate::new(params, 0)
}

/// Feeds `data` to a connection under `limits` in `read_size` pieces,
/// checking after every step that it holds no more than the limits let it
/// and that a discarding connection holds nothing and keeps no data.
fn drive_within(limits: Limits, data: &[u8], read_size: usize) -> Run {
    let mut conn = ServerConn::new(limits.max_message);
    if limits.discard {
        conn.discard_data();
    }
    let mut pmd = limits.deflate.map(negotiated);
    let mut run = Run {
        events: Vec::new(),
        out: Vec::new(),
        state: State::Open,
        error: None,
    };
    let mut carry: Vec<u8> = Vec::new();
    'reads: for read in data.chunks(read_size.max(1)) {
        carry.extend_from_slice(read);
        let mut buf = std::mem::take(&mut carry);
        let mut pos = 0;
        loop {
            let written = run.out.len();
            let step = conn.receive_within(
                &mut buf[pos..],
                &mut run.out,
                pmd.as_mut(),
                limits.allowance,
            );
            let held = conn.held();
            if limits.discard {
                assert_eq!(held, 0, "a discarding connection holds nothing");
            } else {
                assert!(held <= limits.most_held(), "held {held} under {limits:?}");
            }
            match step {
                Ok(step) => {
                    pos += step.consumed;
                    match step.event {
                        Some(Event::Message { opcode, payload }) => {
                            if let Payload::Assembled(v) = &payload {
                                assert!(v.capacity() <= limits.most_held(), "{limits:?}");
                            }
                            if limits.discard {
                                assert!(payload.is_empty(), "a discarded message keeps no data");
                            }
                            run.events.push((opcode as u8, payload.to_vec()))
                        }
                        Some(Event::Ping(p)) => run.events.push((9, p.to_vec())),
                        Some(Event::Pong(p)) => run.events.push((10, p.to_vec())),
                        Some(Event::Close(c)) => run.events.push((8, c.reason.as_bytes().to_vec())),
                        None if step.consumed == 0 => break,
                        None => {}
                    }
                }
                Err(e) => {
                    assert_eq!(conn.state(), State::Closed);
                    assert_eq!(conn.held(), 0, "a closed connection lets its message go");
                    let close = &run.out[run.out.len().saturating_sub(127)..];
                    let code = e.close_code().0.to_be_bytes();
                    assert!(
                        close.windows(2).any(|w| w == code),
                        "close frame carries {e}'s code"
                    );
                    check_size_error(limits, e);
                    run.out.truncate(written);
                    run.error = Some(e);
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
    run.state = conn.state();
    run
}

/// A size violation closes with 1009 when the message limit is the lower
/// limit or the frame header alone passes it, and with 1013 only when the
/// allowance is lower; a discarding connection passes neither.
fn check_size_error(limits: Limits, e: ProtocolError) {
    match e {
        ProtocolError::BudgetExhausted => {
            assert_eq!(e.close_code().0, 1013);
            assert!(limits.allowance < limits.max_message, "{limits:?}");
            assert!(!limits.discard, "discarding keeps nothing to exhaust");
        }
        ProtocolError::MessageTooBig { limit } => {
            assert_eq!(e.close_code().0, 1009);
            assert_eq!(limit, limits.max_message);
            assert!(!limits.discard, "discarding keeps nothing to pass a limit");
        }
        _ => {}
    }
}

/// The frame decoder under a memory allowance, permessage-deflate and
/// discarding mode, all chosen by the input: the capacity held never
/// passes the lower limit (plus the byte inflating reserves), size
/// violations close with 1009 or 1013, one read and many reads agree
/// except where the allowance is spent, and a discarding connection holds
/// nothing, reports no data and closes exactly when an assembling one
/// with no size limits would.
pub fn frame_decoder_limits(data: &[u8]) {
    let Some((limits, read_size, data)) = Limits::from_input(data) else {
        return;
    };
    let whole = drive_within(limits, data, data.len());
    let split = drive_within(limits, data, read_size);
    if whole.budget_spent() || split.budget_spent() {
        let (short, long) = if split.budget_spent() {
            (&split, &whole)
        } else {
            (&whole, &split)
        };
        assert!(
            short.budget_spent() && long.events.starts_with(&short.events),
            "read size {read_size}: {whole:?} vs {split:?}"
        );
    } else {
        assert_eq!(whole, split, "read size {read_size}");
    }
    if limits.discard {
        let unlimited = Limits {
            max_message: 1 << 30,
            allowance: usize::MAX,
            discard: false,
            ..limits
        };
        let assembled = drive_within(unlimited, data, data.len()).without_data();
        if matches!(assembled.error, Some(ProtocolError::MessageTooBig { .. })) {
            // A header claiming over 1 GiB: past it the two cannot be told
            // apart by an input this size, but up to it they agree.
            assert!(whole.events.starts_with(&assembled.events));
            assert!(whole.out.starts_with(&assembled.out));
        } else {
            assert_eq!(whole, assembled, "discarding and assembling differ");
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

/// The /hub request parser: never panics; given text, it refuses exactly
/// what a JSON tree refuses (with a "bad JSON" reason), it accepts nothing
/// that is not UTF-8, and whatever else it refuses
/// has a non-empty reason; what it accepts agrees with the tree: a
/// publish's `data` is the raw text of the tree's `data`, a substring of
/// the input, and the message built from it carries the same topic and
/// data; topic lists hold 1 to 64 names of 1 to 128 bytes.
pub fn hub_request(data: &[u8]) {
    use crate::pubsub::protocol::{
        message_at, parse, Request, MAX_TOPICS_PER_REQUEST, MAX_TOPIC_LEN,
    };
    use serde_json::Value;
    let tree = serde_json::from_slice::<Value>(data);
    let request = match parse(data) {
        Ok(request) => request,
        Err(reason) => {
            assert!(!reason.is_empty(), "every refusal has a reason");
            if std::str::from_utf8(data).is_err() {
                // Not a text message, which is all the hub hands over:
                // serde_json skips ignored strings unchecked, so the reason
                // may name another fault than the encoding.
                return;
            }
            assert_eq!(
                reason.starts_with("bad JSON"),
                tree.is_err(),
                "{reason:?} vs {tree:?}"
            );
            return;
        }
    };
    let tree = tree.expect("an accepted request is JSON, in UTF-8");
    let op = tree["op"]
        .as_str()
        .expect("an accepted request has a string op");
    if let Request::Subscribe { topics, since } = &request {
        // Every resumed topic is one of the request's, at the position the
        // tree holds for it.
        for (topic, at) in since {
            assert!(topics.contains(topic), "{topic:?}");
            let want = &tree["since"][topic.as_str()];
            assert_eq!(want["offset"].as_u64(), Some(at.offset));
            assert_eq!(
                want["epoch"].as_str(),
                Some(crate::pubsub::streams::epoch_hex(at.epoch).as_str())
            );
        }
    }
    match request {
        Request::Subscribe { topics, .. } | Request::Unsubscribe(topics) => {
            assert!(matches!(op, "subscribe" | "unsubscribe"), "{op}");
            assert!((1..=MAX_TOPICS_PER_REQUEST).contains(&topics.len()));
            for topic in &topics {
                assert!((1..=MAX_TOPIC_LEN).contains(&topic.len()), "{topic:?}");
            }
            let names: Vec<&str> = tree["topics"]
                .as_array()
                .expect("topics is an array")
                .iter()
                .map(|t| t.as_str().expect("topic names are strings"))
                .collect();
            assert_eq!(names, topics);
        }
        Request::Refresh(token) => {
            assert_eq!(op, "refresh");
            assert_eq!(tree["token"].as_str(), Some(token.as_str()));
        }
        Request::Auth(token) => {
            assert_eq!(op, "auth");
            assert_eq!(tree["token"].as_str(), Some(token.as_str()));
        }
        Request::Publish { topic, data: raw } => {
            assert_eq!(op, "publish");
            assert!((1..=MAX_TOPIC_LEN).contains(&topic.len()), "{topic:?}");
            assert_eq!(tree["topic"].as_str(), Some(topic.as_str()));
            let start = (raw.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
            assert!(
                start <= data.len() && data.len() - start >= raw.len(),
                "data borrows from the input"
            );
            assert_eq!(&data[start..start + raw.len()], raw.as_bytes());
            let value = serde_json::from_str::<Value>(raw).expect("data is valid JSON");
            assert_eq!(value, tree["data"]);
            let at = crate::pubsub::streams::Position {
                epoch: u64::from(data.len() as u32) << 32 | 0xab,
                offset: data.len() as u64,
            };
            let sent = message_at(&topic, at, raw);
            let sent = serde_json::from_str::<Value>(&sent).expect("the message is JSON");
            assert_eq!(sent["topic"].as_str(), Some(topic.as_str()));
            assert_eq!(sent["offset"].as_u64(), Some(at.offset));
            assert_eq!(sent["data"], value);
        }
    }
}

/// An event stream's request and events: the query and `Last-Event-ID`
/// parse or are refused with a reason, never a panic; what is accepted
/// keeps the limits; the id a stream writes for those positions parses
/// back to them; and whatever frames a delivery holds, the events written
/// for it are whole fields, one per line.
pub fn event_stream(data: &[u8]) {
    use crate::pubsub::events::{parse_request, EventCursor};
    use crate::pubsub::protocol::{MAX_TOPICS_PER_REQUEST, MAX_TOPIC_LEN};
    let (split, rest) = read_sizes(data);
    let (head, frames) = rest.split_at(rest.len().min(split * 8));
    let (target, id) = head.split_at(head.len() / 2);
    let target = format!("/hub/events?{}", String::from_utf8_lossy(target));
    let request = match parse_request(&target, Some(id)) {
        Ok(request) => request,
        Err(reason) => {
            assert!(!reason.is_empty(), "every refusal has a reason");
            return;
        }
    };
    let topics = &request.topics;
    assert!((1..=MAX_TOPICS_PER_REQUEST).contains(&topics.len()));
    for (i, t) in topics.iter().enumerate() {
        assert!((1..=MAX_TOPIC_LEN).contains(&t.len()), "{t:?}");
        assert!(!topics[..i].contains(t), "{t:?} twice");
    }
    for (i, (t, _)) in request.since.iter().enumerate() {
        assert!(topics.contains(t), "{t:?} resumed but not asked for");
        assert!(
            !request.since[..i].iter().any(|(u, _)| u == t),
            "{t:?} twice"
        );
    }
    let at = |t: &String| request.since.iter().find(|(u, _)| u == t).map(|(_, p)| *p);
    let cursor = EventCursor::new(topics.iter().map(|t| (t.clone(), at(t))));
    let mut out = Vec::new();
    cursor.subscribed("{}", 1000, &mut out);
    let text = String::from_utf8(out).expect("events are UTF-8");
    let written = text
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("an id");
    // The id comes back on its own as Last-Event-ID, with the topics.
    let list: Vec<String> = topics.iter().map(|t| percent_encode_twice(t)).collect();
    let again = parse_request(
        &format!("/hub/events?topics={}", list.join(",")),
        Some(written.as_bytes()),
    )
    .expect("a written id parses");
    assert_eq!(&again.topics, topics);
    let mut resumed = again.since.clone();
    let mut asked = request.since.clone();
    resumed.sort_by(|a, b| a.0.cmp(&b.0));
    asked.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(resumed, asked, "the id says where the client is");
    let mut cursor = cursor;
    let mut out = Vec::new();
    cursor.encode_frames(frames, &mut out);
    for line in out.split(|&b| b == b'\n') {
        assert!(!line.contains(&b'\r'), "a CR inside a field: {line:?}");
        assert!(
            line.is_empty() || line.starts_with(b"id: ") || line.starts_with(b"data: "),
            "not a field: {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

/// A topic name as a query's `topics=` list holds it: encoded for the
/// list, then for the query.
fn percent_encode_twice(name: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let once = utf8_percent_encode(name, NON_ALPHANUMERIC).to_string();
    utf8_percent_encode(&once, NON_ALPHANUMERIC).to_string()
}

/// An Engine.IO packet as one WebSocket message, a session id and a
/// request's query, all from the same bytes: as a binary message the
/// bytes are a message written back as they are; as text, a packet
/// written back byte for byte or refused for its first byte alone; an id
/// parses only from its own spelling; a query parses or is refused with
/// a 400 or 403, and what parses says `EIO=` and spells the id it names.
pub fn engineio_packet(data: &[u8]) {
    use crate::engineio::{request, Frame, FrameKind, Packet, PacketError, PacketType, Sid};
    let binary = Packet::decode_frame(Frame::Binary(data)).expect("binary is always a message");
    assert_eq!(binary.kind(), PacketType::Message);
    let mut out = Vec::new();
    assert_eq!(binary.encode_frame(&mut out), FrameKind::Binary);
    assert_eq!(out, data);
    if let Ok(text) = std::str::from_utf8(data) {
        match Packet::decode_frame(Frame::Text(text)) {
            Ok(packet) => {
                out.clear();
                assert_eq!(packet.encode_frame(&mut out), FrameKind::Text);
                assert_eq!(out, data);
            }
            Err(PacketError::Empty) => assert!(data.is_empty()),
            Err(PacketError::UnknownType(b)) => {
                assert_eq!(data.first(), Some(&b));
                assert!(!(b'0'..=b'6').contains(&b));
            }
        }
    }
    if let Some(sid) = Sid::parse(data) {
        let text = sid.encode();
        assert_eq!(text.as_str().as_bytes(), data);
    }
    let query = String::from_utf8_lossy(data);
    for method in ["GET", "POST", "PUT"] {
        for upgrade in [false, true] {
            match request::parse(method, &query, upgrade) {
                Ok(request) => {
                    assert!(query.contains("EIO="), "{query:?}");
                    if let Some(sid) = request.sid() {
                        let text = sid.encode();
                        let decoded = percent_encoding::percent_decode_str(&query);
                        assert!(
                            decoded.decode_utf8_lossy().contains(text.as_str()),
                            "{query:?}"
                        );
                    }
                }
                Err(refusal) => assert!(matches!(refusal.status(), 400 | 403)),
            }
        }
    }
}

/// An Engine.IO long-polling body, with `maxPayload` from its first byte
/// (8 bytes a step): it parses only within the bound, into one packet per
/// separator and binary data no larger than the body; the packets written
/// back parse to the same packets, and text packets come back byte for
/// byte. POSTed to a polling session, it yields messages or a refusal
/// that ends the session with the matching reason, and a held poll is
/// then answered.
pub fn engineio_payload(data: &[u8]) {
    use crate::engineio::payload::{encode, SEPARATOR};
    use crate::engineio::{CloseReason, Config, Data, PacketType, Payload, PayloadError};
    use crate::engineio::{Refusal, Session, Sid, Transmit, Transport};
    use std::borrow::Cow;
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    let max = usize::from(step) * 8;
    let mut packets = Vec::new();
    match Payload::parse(body, max) {
        Ok(payload) => {
            assert!(body.len() <= max);
            packets = payload.packets().collect();
            let separators = body.iter().filter(|&&b| b == SEPARATOR).count();
            assert_eq!(packets.len(), separators + 1);
            assert!(payload.kinds().eq(packets.iter().map(|p| p.kind())));
            for packet in &packets {
                if let Data::Binary(Cow::Owned(bytes)) = packet.data() {
                    assert!(bytes.capacity() <= body.len());
                }
            }
            let mut again = Vec::new();
            encode(&packets, &mut again);
            let reparsed: Vec<_> = Payload::parse(&again, again.len())
                .expect("what is written parses")
                .packets()
                .collect();
            assert_eq!(reparsed, packets);
            let segments = |b: &[u8]| {
                b.split(|&c| c == SEPARATOR)
                    .filter(|s| s.first() != Some(&b'b'))
                    .map(<[u8]>::to_vec)
                    .collect::<Vec<_>>()
            };
            assert_eq!(segments(&again), segments(body));
        }
        Err(PayloadError::TooLarge { len, max: bound }) => {
            assert_eq!((len, bound), (body.len(), max));
            assert!(len > max);
        }
        Err(_) => {}
    }
    let config = Config {
        max_payload: u32::from(step) * 8,
        ..Config::default()
    };
    let mut session = Session::new(
        Sid::from_parts(0, 0, 0, [0; 14]),
        config,
        Transport::Polling,
        0,
    );
    session.poll().expect("the handshake poll");
    while session.transmit().is_some() {}
    session.poll().expect("a second poll, held");
    session.begin_post().expect("one POST");
    match session.post(body, 1) {
        Ok(messages) => {
            let wanted = packets.iter().filter(|p| p.kind() == PacketType::Message);
            assert!(messages.count() <= wanted.count());
        }
        Err(refusal) => {
            let reason = session.closed().expect("a refused body ends the session");
            assert_eq!(
                refusal == Refusal::PayloadTooLarge,
                reason == CloseReason::PayloadTooLarge
            );
            assert_eq!(refusal.status(), if body.len() > max { 413 } else { 400 });
        }
    }
    if session.closed().is_some() {
        assert!(matches!(session.transmit(), Some(Transmit::Poll(_))));
    }
}

/// An event's name and arguments make its data again.
fn socketio_event(p: &crate::socketio::Packet<'_>) {
    use crate::socketio::{EventName, PacketType};
    let is_event = matches!(p.kind(), PacketType::Event | PacketType::BinaryEvent);
    let Some(event) = p.as_event() else {
        assert!(!is_event || p.data().is_none());
        return;
    };
    assert!(is_event);
    let data = p.data().expect("an event with data");
    assert!(data.contains(event.args));
    let name = match &event.name {
        EventName::Str(s) => serde_json::to_string(s).expect("a string"),
        EventName::Number(n) => (*n).to_owned(),
    };
    let comma = if event.args.is_empty() { "" } else { "," };
    let again = format!("[{name}{comma}{}]", event.args);
    let again: serde_json::Value = serde_json::from_str(&again).expect("the same array");
    let data: serde_json::Value = serde_json::from_str(data).expect("JSON");
    assert_eq!(again, data);
}

/// Socket.IO packets. The whole input as one text packet: it decodes or
/// is refused, never panics; what decodes has a namespace from `/` with no
/// `,`, an ack id a JavaScript peer holds exactly, and is what building it
/// from its parts gives; written back (with as many attachments as it
/// announced) it decodes to the same parts, and writing is then stable;
/// an event reads as its name and its arguments' text, which make its
/// data again. Then the input as a session: the first byte sets the
/// decoder's limits, the rest is messages split at `\x1e`, binary if they
/// start with a 0 byte or are not UTF-8: a completed packet respects the
/// limits and comes back through encoding and a fresh decoder unchanged;
/// a refusal empties the decoder and names what happened.
pub fn socketio_packet(data: &[u8]) {
    use crate::socketio::{DecodeError, Decoder, Limits, Packet, PacketError, MAX_ACK_ID};
    use std::borrow::Cow;

    fn through_decoder(p: &Packet<'_>, limits: Limits) -> Packet<'static> {
        let mut text = String::new();
        let attachments = p.encode(&mut text);
        let mut d = Decoder::new(limits);
        let mut done = d
            .text(&text, 0)
            .expect("what is written decodes")
            .map(Packet::into_owned);
        for a in attachments {
            assert!(done.is_none());
            done = d
                .binary(Cow::Borrowed(a))
                .expect("its attachments are taken");
        }
        done.expect("complete")
    }

    if let Ok(text) = std::str::from_utf8(data) {
        match Packet::decode_text(text) {
            Ok((mut p, count)) => {
                assert!(p.namespace().starts_with('/') && !p.namespace().contains(','));
                assert!(p.id().is_none_or(|id| id <= MAX_ACK_ID));
                assert!(p.data().is_none_or(|d| !d.is_empty() && text.ends_with(d)));
                assert!(p.attachments().is_empty());
                assert!(count == 0 || p.kind().is_binary());
                socketio_event(&p);
                if count <= 64 {
                    for _ in 0..count {
                        p.push_attachment(Cow::Borrowed(b""));
                    }
                    let rebuilt = Packet::new(
                        p.kind(),
                        p.namespace(),
                        p.id(),
                        p.data().map(Cow::Borrowed),
                        p.attachments().to_vec(),
                    );
                    assert_eq!(rebuilt.as_ref(), Ok(&p));
                    let again = p.encode_text();
                    let (q, n) = Packet::decode_text(&again).expect("what is written decodes");
                    assert_eq!(n, count);
                    assert_eq!(
                        (q.kind(), q.namespace(), q.id(), q.data()),
                        (p.kind(), p.namespace(), p.id(), p.data())
                    );
                    let limits = Limits {
                        max_attachments: 64,
                        max_attachment_bytes: 0,
                    };
                    assert_eq!(through_decoder(&p, limits), p);
                }
            }
            Err(PacketError::UnknownType(c)) => assert_eq!(text.chars().next(), Some(c)),
            Err(PacketError::Empty) => assert!(text.is_empty()),
            Err(PacketError::IllegalNamespace | PacketError::UnexpectedAttachments) => {
                unreachable!("only building a packet checks these")
            }
            Err(_) => {}
        }
    }

    let Some((&knobs, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_attachments: usize::from(knobs & 0x0f),
        max_attachment_bytes: usize::from(knobs >> 4) * 4,
    };
    let mut decoder = Decoder::new(limits);
    for (now, message) in (0u64..).zip(rest.split(|&b| b == 0x1e)) {
        let before = decoder.in_progress_since();
        let text = match message.split_first() {
            Some((0, _)) => None,
            _ => std::str::from_utf8(message).ok(),
        };
        let result = match text {
            Some(text) => decoder.text(text, now).map(|p| p.map(Packet::into_owned)),
            None => decoder.binary(Cow::Borrowed(message)),
        };
        match result {
            Ok(Some(p)) => {
                assert_eq!(decoder.in_progress_since(), None);
                assert!(p.attachments().len() <= limits.max_attachments);
                let bytes: usize = p.attachments().iter().map(|a| a.len()).sum();
                assert!(bytes <= limits.max_attachment_bytes);
                assert!(text.is_some() || before.is_some());
                assert_eq!(through_decoder(&p, limits), p);
            }
            Ok(None) => {
                assert_eq!(decoder.in_progress_since(), Some(before.unwrap_or(now)));
                assert_eq!(text.is_some(), before.is_none());
            }
            Err(e) => {
                assert_eq!(decoder.in_progress_since(), None);
                match e {
                    DecodeError::UnexpectedBinary => assert!(text.is_none() && before.is_none()),
                    DecodeError::UnexpectedText => assert!(text.is_some() && before.is_some()),
                    DecodeError::TooManyAttachments { count, max } => {
                        assert!(count > max && max == limits.max_attachments);
                    }
                    DecodeError::AttachmentsTooLarge { .. } => assert!(text.is_none()),
                    DecodeError::Packet(_) => assert!(text.is_some() && before.is_none()),
                }
            }
        }
    }
}

/// A Socket.IO session's rules, and a room broadcast relayed from another
/// node. The input is messages split at `\x1e` (binary if they start with
/// a 0 byte or are not UTF-8) fed to one `Connection`, every `CONNECT`
/// accepted but on namespaces starting `/no`: the session never panics; a
/// violation ends it for good (every later message gets the same one);
/// namespaces connected are distinct, and only a `CONNECT` connects one;
/// events reach the application only on a connected namespace. Then the
/// whole input as a relayed broadcast: refused, or frames whose messages
/// give the same relay text back.
pub fn socketio_session(data: &[u8]) {
    use crate::engineio::Data;
    use crate::socketio::session::{Connection, Settings};
    use crate::socketio::{broadcast, PacketType};
    use std::borrow::Cow;

    let settings = Settings {
        connect_timeout_ms: 1000,
        ..Settings::default()
    };
    let mut conn = Connection::new(settings, 0);
    let mut ended = None;
    for (now, part) in data.split(|&b| b == 0x1e).enumerate() {
        let now = now as u64;
        let message = match std::str::from_utf8(part) {
            Ok(text) if !part.starts_with(&[0]) => Data::Text(Cow::Borrowed(text)),
            _ => Data::Binary(Cow::Borrowed(part)),
        };
        let before: Vec<String> = conn
            .sockets()
            .iter()
            .map(|s| s.namespace().to_owned())
            .collect();
        match conn.receive(message, now) {
            Err(v) => {
                if let Some(first) = ended {
                    assert_eq!(v, first, "a violation ends the session for good");
                }
                ended = Some(v);
                assert_eq!(conn.ended(), Some(v));
            }
            Ok(_) if ended.is_some() => panic!("input taken after a violation"),
            Ok(None) => {}
            Ok(Some(p)) => {
                let ns = p.namespace().to_owned();
                match p.kind() {
                    PacketType::Connect => {
                        assert!(!before.contains(&ns));
                        if !ns.starts_with("/no") {
                            conn.accept(&ns, "x".repeat(20), "");
                        }
                    }
                    PacketType::Disconnect => {
                        assert!(before.contains(&ns));
                        assert!(conn.socket(&ns).is_none());
                    }
                    _ => assert!(before.contains(&ns), "a packet for {ns} not connected"),
                }
            }
        }
        let names: Vec<&str> = conn.sockets().iter().map(|s| s.namespace()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a namespace connected twice");
        if let Some(at) = conn.next_deadline() {
            if conn.on_timer(at).is_some() {
                ended = conn.ended();
            }
        }
    }
    if let Some(frames) = broadcast::frames_from_relay(data, 1 << 16) {
        let text = broadcast::relay_text(&frames);
        assert_eq!(
            broadcast::frames_from_relay(text.as_bytes(), 1 << 20),
            Some(frames)
        );
    }
    // A relayed broadcast's topic says who it is for: a target of rooms
    // that can be named is written back the same.
    if let Ok(topic) = std::str::from_utf8(data) {
        use crate::socketio::target::{valid_room, Target};
        if let Some(target) = Target::of_topic(topic) {
            if target.to.iter().all(|r| valid_room(r)) {
                let again = target.topic();
                assert_eq!(Target::of_topic(&again), Some(target.clone()));
            }
            let member: Vec<std::sync::Arc<str>> = target
                .to
                .iter()
                .filter(|r| valid_room(r))
                .map(|r| crate::socketio::target::room_topic(&target.namespace, r).into())
                .collect();
            let _ = target.reaches_member(&target.namespace, "x", &member);
        }
    }
}

/// A signed token from a client: refused or accepted, never a panic. The
/// input is tried as a token, and as the claims of a token signed with the
/// key, so the claims' reading is reached past the signature.
pub fn jwt_token(data: &[u8]) {
    use crate::auth::Keys;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use std::sync::OnceLock;

    const SECRET: &[u8] = b"a fuzzing secret of at least 32 bytes";
    const NOW: u64 = 1_800_000_000;
    static KEYS: OnceLock<Keys> = OnceLock::new();
    let keys =
        KEYS.get_or_init(|| Keys::hs256_secret(SECRET, "fuzzing".into()).expect("long enough"));
    let check = |token: &str| match keys.verify(token, NOW) {
        Ok(claims) => assert!(!claims.sub.is_empty()),
        Err(refused) => assert_eq!(refused.status(), 401),
    };
    if let Ok(token) = std::str::from_utf8(data) {
        check(token);
        let _ = crate::auth::token_from(Some(token), Some(data));
    }
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(data));
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
    let signature = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &key,
        jsonwebtoken::Algorithm::HS256,
    )
    .expect("HS256 signs anything");
    check(&format!("{signing_input}.{signature}"));
}

/// One input as a server API request: its head, read whole and in every
/// shorter prefix, and its body as a publish, a disconnect and a query.
/// A head is complete only once all of it has arrived (every shorter
/// prefix asks for more), within the head bound; every refusal is a 4xx
/// whose encoded answer is a whole HTTP response with a JSON `error`; an
/// accepted publish names 1 to 64 topics of 1 to 128 bytes and carries
/// `data` as valid JSON borrowed from the input; an accepted disconnect
/// has a code a close frame may carry and a reason that fits one.
pub fn api_request(data: &[u8]) {
    use crate::api::body;
    use crate::api::request::{parse_head, query_param, Answer, MAX_HEAD};
    use crate::pubsub::control::{Disconnect, MAX_REASON};
    let refused = |a: &Answer| {
        assert!((400..500).contains(&a.status), "{a:?}");
        let wire = a.encode();
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = resp.parse(&wire) else {
            panic!("not a whole response: {a:?}");
        };
        assert_eq!(resp.code, Some(a.status));
        let body: serde_json::Value = serde_json::from_slice(&wire[n..]).expect("JSON");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    };
    match parse_head(data) {
        Ok(Some(head)) => {
            assert!(head.len <= data.len() && head.len <= MAX_HEAD);
            for cut in [0, head.len / 2, head.len.saturating_sub(1)] {
                if cut < head.len {
                    assert!(
                        !matches!(parse_head(&data[..cut]), Ok(Some(_))),
                        "complete before its end"
                    );
                }
            }
            if let Err(a) = query_param(head.query.as_deref(), "user") {
                refused(&a);
            }
        }
        Ok(None) => assert!(data.len() < MAX_HEAD),
        Err(a) => refused(&a),
    }
    match body::publish(data) {
        Ok(p) => {
            assert!((1..=64).contains(&p.topics.len()));
            assert!(p.topics.iter().all(|t| (1..=128).contains(&t.len())));
            assert!(serde_json::from_str::<serde_json::Value>(p.data).is_ok());
            let text = std::str::from_utf8(data).expect("accepted JSON is UTF-8");
            assert!(text.contains(p.data));
        }
        Err(a) => refused(&a),
    }
    match body::disconnect(data) {
        Ok(d) => {
            assert!(Disconnect::code_allowed(d.code) && d.reason.len() <= MAX_REASON);
            assert!(!d.user.is_empty());
            assert_eq!(Disconnect::from_relay(d.relay_text().as_bytes()), Some(d));
        }
        Err(a) => refused(&a),
    }
}
