//! The hub's topics as server-sent events (`GET /hub/events`), for
//! networks that break WebSocket: what the request asks for, and the hub's
//! messages written as a `text/event-stream`.
//!
//! Each message becomes one event whose `data` is the message's JSON, as a
//! WebSocket subscriber gets it, and whose `id` is the stream's position in
//! every one of its topics after that event: `TOPIC:EPOCH:OFFSET,...`, each
//! topic name percent-encoded as JavaScript's `encodeURIComponent` does (a
//! name may hold the list's own `,` and `:`). A browser sends the last id
//! back as `Last-Event-ID` when it reconnects by itself; a fresh client
//! sends the same list as `since=`. The stream opens with an `event:
//! subscribed` whose data is the WebSocket `subscribed` answer (positions,
//! `recovered`, `reasons`), so a client is told plainly which topics could
//! not be resumed.
//!
//! Everything here is a pure function of bytes: the shard owns the socket.

use std::borrow::Cow;

use crate::protocol::handshake::form_decode;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;

use super::protocol::{MAX_TOPICS_PER_REQUEST, MAX_TOPIC_LEN};
use super::streams::{epoch_hex, Position};
use crate::protocol::frame::{next_server_frame, OpCode};

/// What `encodeURIComponent` leaves as it is; everything else is `%XX`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// The response head of an event stream. The body ends only when the
/// connection does, so it is delimited by the close rather than chunked:
/// every byte sent is an event byte, and a turn's events go out as one
/// write with no chunk sizes between them.
pub const RESPONSE_HEAD: &str = "HTTP/1.1 200 OK\r\n\
    Content-Type: text/event-stream\r\n\
    Cache-Control: no-cache\r\n\
    X-Accel-Buffering: no\r\n\
    Connection: close\r\n";

/// A comment: what a heartbeat sends so that proxies see the stream alive.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// What a `GET /hub/events` asks for.
#[derive(Debug, PartialEq, Eq)]
pub struct EventsRequest {
    /// The topics, in the order given.
    pub topics: Vec<String>,
    /// Where some of them resume from: `Last-Event-ID` if the client sent
    /// one, else `since=`.
    pub since: Vec<(String, Position)>,
}

/// Parses the request target's query (`topics=`, `since=`; other
/// parameters, such as `token=`, are admission's) and the `Last-Event-ID`
/// header; the error is the 400's reason.
pub fn parse_request(target: &str, last_event_id: Option<&[u8]>) -> Result<EventsRequest, String> {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut topics = None;
    let mut since = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "topics" => &mut topics,
            "since" => &mut since,
            _ => continue,
        };
        let value = form_decode(value)
            .ok_or_else(|| format!("\"{key}\" is not UTF-8 once percent-decoded"))?;
        if slot.replace(value).is_some() {
            return Err(format!("\"{key}\" is given twice"));
        }
    }
    let topics = topic_list(topics.as_deref().unwrap_or(""))?;
    let resumed = match last_event_id {
        Some(id) if !id.is_empty() => {
            Some(std::str::from_utf8(id).map_err(|_| "Last-Event-ID is not UTF-8".to_owned())?)
        }
        _ => None,
    };
    let since = match resumed.or(since.as_deref()) {
        Some(list) => positions(list, &topics)?,
        None => Vec::new(),
    };
    Ok(EventsRequest { topics, since })
}

/// `topics=A,B`: 1 to [`MAX_TOPICS_PER_REQUEST`] distinct names.
fn topic_list(list: &str) -> Result<Vec<String>, String> {
    let mut topics: Vec<String> = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        if topics.len() == MAX_TOPICS_PER_REQUEST {
            return Err(format!(
                "\"topics\" must name 1 to {MAX_TOPICS_PER_REQUEST} topics"
            ));
        }
        let name = decode_name(part)?;
        if topics.contains(&name) {
            return Err(format!("\"topics\" names {name:?} twice"));
        }
        topics.push(name);
    }
    if topics.is_empty() {
        return Err(format!(
            "\"topics\" must name 1 to {MAX_TOPICS_PER_REQUEST} topics (comma-separated, \
             each percent-encoded)"
        ));
    }
    Ok(topics)
}

/// A percent-encoded topic name, decoded and checked.
fn decode_name(encoded: &str) -> Result<String, String> {
    let name = percent_decode_str(encoded)
        .decode_utf8()
        .map_err(|_| format!("topic {encoded:?} is not UTF-8 once percent-decoded"))?;
    if name.is_empty() || name.len() > MAX_TOPIC_LEN {
        return Err(format!("topic names are 1 to {MAX_TOPIC_LEN} bytes"));
    }
    Ok(name.into_owned())
}

/// `TOPIC:EPOCH:OFFSET,...` (an event id, or `since=`) for topics of
/// `topics`.
fn positions(list: &str, topics: &[String]) -> Result<Vec<(String, Position)>, String> {
    const SHAPE: &str = "positions are TOPIC:EPOCH:OFFSET,... with EPOCH 16 lowercase hex \
                         digits and the topic percent-encoded";
    let mut out: Vec<(String, Position)> = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let mut fields = part.rsplitn(3, ':');
        let (Some(offset), Some(epoch), Some(topic)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(SHAPE.into());
        };
        let hex = epoch.len() == 16
            && epoch
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let epoch = u64::from_str_radix(epoch, 16)
            .ok()
            .filter(|_| hex)
            .ok_or(SHAPE)?;
        let offset = offset
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| offset.parse::<u64>().ok())
            .flatten()
            .ok_or(SHAPE)?;
        let topic = decode_name(topic)?;
        if !topics.contains(&topic) {
            return Err(format!(
                "a position names {topic:?}, which \"topics\" does not"
            ));
        }
        if out.iter().any(|(t, _)| *t == topic) {
            return Err(format!("a position names {topic:?} twice"));
        }
        out.push((topic, Position { epoch, offset }));
    }
    Ok(out)
}

/// A topic name as an event id writes it.
fn encode_name(name: &str) -> String {
    utf8_percent_encode(name, COMPONENT).to_string()
}

/// One topic of a stream: its name, as the id writes it, and where the
/// stream's client is in it.
#[derive(Debug)]
struct Slot {
    name: Box<str>,
    encoded: Box<str>,
    at: Option<Position>,
}

/// Where an event stream's client is in each of its topics: what every
/// event's `id` says. Holds no buffer: events are written into the
/// caller's.
#[derive(Debug)]
pub struct EventCursor {
    slots: Vec<Slot>,
}

/// The head of a hub message: enough to move the cursor.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    topic: Cow<'a, str>,
    epoch: Option<&'a str>,
    offset: Option<u64>,
}

impl EventCursor {
    /// A cursor over `topics`, each where its client starts.
    pub fn new(topics: impl IntoIterator<Item = (String, Option<Position>)>) -> Self {
        let slots = topics
            .into_iter()
            .map(|(name, at)| Slot {
                encoded: encode_name(&name).into(),
                name: name.into(),
                at,
            })
            .collect();
        Self { slots }
    }

    /// The named `subscribed` event (`data` the WebSocket answer's JSON),
    /// after a `retry:` of `retry_ms`, with the starting positions as id.
    pub fn subscribed(&self, answer: &str, retry_ms: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("retry: {retry_ms}\nevent: subscribed\n").as_bytes());
        self.write_event(answer.as_bytes(), out);
    }

    /// Writes every hub message of `frames` (server frames, uncompressed,
    /// one after another) as an event; returns how many.
    pub fn encode_frames(&mut self, frames: &[u8], out: &mut Vec<u8>) -> u64 {
        let mut rest = frames;
        let mut events = 0;
        while let Some((opcode, payload, used)) = next_server_frame(rest) {
            rest = &rest[used..];
            if opcode != OpCode::Text {
                continue;
            }
            self.advance(payload);
            self.write_event(payload, out);
            events += 1;
        }
        events
    }

    /// Moves the topic a message belongs to to the message's position
    /// (messages from other nodes carry none and move nothing).
    fn advance(&mut self, message: &[u8]) {
        let Ok(head) = serde_json::from_slice::<Head<'_>>(message) else {
            return;
        };
        let (Some(epoch), Some(offset)) = (head.epoch, head.offset) else {
            return;
        };
        let Ok(epoch) = u64::from_str_radix(epoch, 16) else {
            return;
        };
        if let Some(slot) = self.slots.iter_mut().find(|s| *s.name == *head.topic) {
            slot.at = Some(Position { epoch, offset });
        }
    }

    /// `id: POSITIONS` and `data: LINE` for each line of `data`.
    fn write_event(&self, data: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(b"id: ");
        let mut first = true;
        for slot in &self.slots {
            let Some(at) = slot.at else { continue };
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            out.extend_from_slice(slot.encoded.as_bytes());
            out.push(b':');
            out.extend_from_slice(epoch_hex(at.epoch).as_bytes());
            out.push(b':');
            out.extend_from_slice(at.offset.to_string().as_bytes());
        }
        out.push(b'\n');
        // JSON holds line breaks only as whitespace between tokens; the
        // event-stream format ends a field at any of CR, LF or CRLF, so
        // each line is a `data:` field of its own (the client joins them
        // with LF, the same JSON).
        for line in data.split(|&b| b == b'\n' || b == b'\r') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::hub::Hub;
    use crate::pubsub::protocol::message_at;

    const EPOCH: &str = "00000000000000ab";

    fn at(offset: u64) -> Position {
        Position {
            epoch: 0xab,
            offset,
        }
    }

    #[test]
    fn requests_parse_from_the_query_or_last_event_id() {
        let r = parse_request("/hub/events?token=x&topics=a,b", None).unwrap();
        assert_eq!(r.topics, ["a", "b"]);
        assert!(r.since.is_empty());
        // URLSearchParams encodes the encoded names once more.
        let target = format!("/hub/events?topics=a%2Cb%252Cc&since=b%252Cc%3A{EPOCH}%3A7");
        let r = parse_request(&target, None).unwrap();
        assert_eq!(r.since, [("b,c".to_owned(), at(7))]);
        // A browser's reconnect: the header wins over the query it repeats.
        let id = format!("a:{EPOCH}:9,b%2Cc:{EPOCH}:8");
        let r = parse_request(&target, Some(id.as_bytes())).unwrap();
        assert_eq!(
            r.since,
            [("a".to_owned(), at(9)), ("b,c".to_owned(), at(8))]
        );
        let r = parse_request("/hub/events?topics=caf%C3%A9+bar", Some(b"")).unwrap();
        assert_eq!(r.topics, ["café bar"]);
    }

    #[test]
    fn every_mistake_has_a_reason() {
        let many = format!(
            "/e?topics={}",
            (0..65).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
        );
        let long = format!("/e?topics={}", "x".repeat(129));
        for (target, id, reason) in [
            ("/hub/events", None, "1 to 64 topics"),
            ("/e?topics=", None, "1 to 64 topics"),
            ("/e?topics=,", None, "1 to 64 topics"),
            (many.as_str(), None, "1 to 64 topics"),
            (long.as_str(), None, "1 to 128 bytes"),
            ("/e?topics=a,a", None, "names \"a\" twice"),
            ("/e?topics=a&topics=b", None, "\"topics\" is given twice"),
            ("/e?topics=%FF", None, "not UTF-8"),
            ("/e?topics=a&since=a:1:1", None, "16 lowercase hex"),
            (
                "/e?topics=a&since=a:00000000000000AB:1",
                None,
                "16 lowercase hex",
            ),
            (
                "/e?topics=a&since=a:00000000000000ab:-1",
                None,
                "16 lowercase hex",
            ),
            (
                "/e?topics=a&since=a:00000000000000ab:+1",
                None,
                "16 lowercase hex",
            ),
            (
                "/e?topics=a&since=00000000000000ab:1",
                None,
                "16 lowercase hex",
            ),
            (
                "/e?topics=a&since=b:00000000000000ab:1",
                None,
                "which \"topics\" does not",
            ),
            (
                "/e?topics=a",
                Some(&b"a:00000000000000ab:1,a:00000000000000ab:2"[..]),
                "names \"a\" twice",
            ),
            (
                "/e?topics=a",
                Some(&b"\xff"[..]),
                "Last-Event-ID is not UTF-8",
            ),
        ] {
            let err = parse_request(target, id).unwrap_err();
            assert!(err.contains(reason), "{target}: {err:?} lacks {reason:?}");
        }
    }

    #[test]
    fn messages_become_events_whose_id_is_every_position() {
        let mut cursor = EventCursor::new([
            ("a".to_owned(), Some(at(1))),
            ("b:c".to_owned(), Some(at(5))),
        ]);
        let mut out = Vec::new();
        cursor.subscribed(r#"{"op":"subscribed"}"#, 2000, &mut out);
        let mut frames = Vec::new();
        for (topic, offset, data) in [("a", 2, "1"), ("b:c", 6, "{\n\"x\" :\r\n2}")] {
            let message = message_at(topic, at(offset), data);
            frames.extend_from_slice(&Hub::frame(OpCode::Text, message.as_bytes()));
        }
        // A message from another node, without a position.
        frames.extend_from_slice(&Hub::frame(OpCode::Text, br#"{"topic":"a","data":0}"#));
        assert_eq!(cursor.encode_frames(&frames, &mut out), 3);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!(
                "retry: 2000\nevent: subscribed\nid: a:{EPOCH}:1,b%3Ac:{EPOCH}:5\n\
                 data: {{\"op\":\"subscribed\"}}\n\n\
                 id: a:{EPOCH}:2,b%3Ac:{EPOCH}:5\n\
                 data: {{\"topic\":\"a\",\"epoch\":\"{EPOCH}\",\"offset\":2,\"data\":1}}\n\n\
                 id: a:{EPOCH}:2,b%3Ac:{EPOCH}:6\n\
                 data: {{\"topic\":\"b:c\",\"epoch\":\"{EPOCH}\",\"offset\":6,\"data\":{{\n\
                 data: \"x\" :\ndata: \ndata: 2}}}}\n\n\
                 id: a:{EPOCH}:2,b%3Ac:{EPOCH}:6\ndata: {{\"topic\":\"a\",\"data\":0}}\n\n"
            )
        );
        // What the id says parses back as the same positions.
        let r = parse_request(
            "/e?topics=a,b%3Ac",
            Some(format!("a:{EPOCH}:2,b%3Ac:{EPOCH}:6").as_bytes()),
        )
        .unwrap();
        assert_eq!(
            r.since,
            [("a".to_owned(), at(2)), ("b:c".to_owned(), at(6))]
        );
    }

    #[test]
    fn names_are_encoded_as_encode_uri_component_does() {
        assert_eq!(encode_name("a-z_A.Z!~*'()0"), "a-z_A.Z!~*'()0");
        assert_eq!(encode_name("a b,c:d/é%"), "a%20b%2Cc%3Ad%2F%C3%A9%25");
    }
}
